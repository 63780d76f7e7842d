"""``benchmark``: parameters, GFLOPs, latency, throughput and memory of models in several forms."""

from __future__ import annotations

import datetime
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..models import create_model, model_info
from ..utils.numbers import plural
from ..utils.profile import count_flops, count_parameters
from .forms import FORMS, FormUnavailable, build_form
from .measure import interleaved_latencies, peak_activation_bytes, percentile
from .report import BenchmarkReport, BenchmarkRow

__all__ = ["benchmark", "resolve_model"]

ModelSpec = "str | nn.Module | tuple[str, nn.Module]"


def resolve_model(spec) -> tuple[str, nn.Module, int]:
    """``(label, model, default image size)`` for a registered name, a checkpoint path, a module
    or a ``(label, module)`` pair."""
    if isinstance(spec, tuple):
        label, model = spec
        return label, model, _default_size(model)
    if isinstance(spec, nn.Module):
        return type(spec).__name__, spec, _default_size(spec)
    spec = str(spec)
    if spec.endswith((".pt", ".pth")) or Path(spec).is_file():
        from ..checkpoint import load_checkpoint, model_from_checkpoint

        ckpt = load_checkpoint(spec)
        model = model_from_checkpoint(ckpt)
        return Path(spec).stem, model, _default_size(model)
    if spec.startswith(OP_PREFIX):
        return spec, _operator_block(spec), OP_DEFAULT_SIZE
    from ..utils.specs import parse_spec

    name, options = parse_spec(spec, "model")  # NAME@key=value: builder options, e.g. down=hwd
    info = model_info(name)  # KeyError naming close names for an unknown model
    return spec, create_model(name, **options), 640 if info.task == "detect" else 224


OP_PREFIX = "op:"
OP_DEFAULT_SIZE = 80  # input of a typical mid-network downsampling (YOLOv5n's P3 step at 640 px: 64 -> 128 at 80x80)


def _operator_block(spec: str) -> nn.Module:
    """``op:NAME[@c_in=64,c_out=128,k=3]``: one downsampling block (:func:`nostride.layers.build_downsample`)."""
    from ..layers import build_downsample
    from ..utils.specs import parse_spec

    name, options = parse_spec(spec[len(OP_PREFIX):], "operator")
    unknown = set(options) - {"c_in", "c_out", "k"}
    if unknown:
        raise ValueError(f"{spec}: unknown {plural(len(unknown), 'option')} {sorted(unknown)}; an operator takes c_in, c_out and k")
    c_in, c_out = int(options.get("c_in", 64)), int(options.get("c_out", 128))
    block = build_downsample(name, c_in, c_out, kernel_size=int(options.get("k", 3)))
    block.model_kwargs = {"in_chans": c_in}  # the input's channels, for the benchmark's example input
    return block


def _default_size(model: nn.Module) -> int:
    return 640 if hasattr(model, "stride") and hasattr(model, "detect") else 224


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {plural(torch.get_num_threads(), 'torch thread')}"


def benchmark(
    models: Sequence,
    img_size: int | Sequence[int] | None = None,
    batch_size: int | Sequence[int] = 1,
    forms: Sequence[str] = ("eager", "fused"),
    device: str | torch.device = "cpu",
    half: bool = False,
    threads: int | None = None,
    repeats: int = 30,
    warmup: int = 3,
    memory: bool = True,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkReport:
    """Benchmark ``models`` in each of ``forms`` at each image size and batch size.

    For each input setting all (model, form) pairs are timed round-robin, one call each per round
    (see :func:`~nostride.benchmark.measure.interleaved_latencies`), so the ratios against the
    first model hold on a shared, noisy machine even when the absolute times drift.

    Args:
        models: registered names (``"yolov5n"``, ``"resnet18@down=hwd"`` with builder options),
            downsampling operators alone (``"op:hwd"``, ``"op:blurpool@c_in=32,c_out=64"``; default
            64 -> 128 channels at 80 x 80), checkpoint paths, modules, or ``(label, module)``.
        img_size: square input size(s); default 640 for detectors and 224 for classifiers.
        batch_size: batch size(s).
        forms: any of ``eager``, ``fused``, ``compile``, ``torchscript``, ``onnxruntime``,
            ``openvino`` (see :mod:`nostride.benchmark.forms`); a form that cannot run here gets a
            row saying why instead of timings.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        half: float16 models and inputs (CUDA only; the ONNX forms stay float32 and are skipped).
        threads: ``torch.set_num_threads`` (and ONNX Runtime / OpenVINO threads); default torch's.
        repeats: timed calls per (model, form, setting); median and 90th percentile are reported.
        warmup: untimed calls first (compilation, caches, cuDNN autotuning).
        memory: measure the peak activation memory of one call (torch forms; CUDA: all torch forms).
        workdir: where ONNX files are written (default: a temporary folder, removed afterwards).
        progress: called with a short line as each setting starts.

    Returns:
        A :class:`~nostride.benchmark.report.BenchmarkReport` (``.table()``, ``.to_csv()``, ``.to_json()``).
    """
    from ..utils.device import select_device

    device = select_device(device or "cpu")  # one rule for device names: unknown or absent ones in one line
    if half and device.type != "cuda":
        raise ValueError("half precision is benchmarked on CUDA only (CPU float16 kernels are not a deployment path)")
    unknown = [f for f in forms if f not in FORMS]
    if unknown:
        raise ValueError(f"unknown {'form' if len(unknown) == 1 else 'forms'} {unknown}; choose from {', '.join(FORMS)}")
    if not models:
        raise ValueError("no models to benchmark")
    if threads:
        torch.set_num_threads(threads)
    threads = threads or torch.get_num_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if half else torch.float32
    resolved = [resolve_model(spec) for spec in models]
    sizes = [img_size] if isinstance(img_size, int) else list(img_size) if img_size else [None]
    batches = [batch_size] if isinstance(batch_size, int) else list(batch_size)
    params = {label: count_parameters(model) for label, model, _ in resolved}

    rows: list[BenchmarkRow] = []
    with tempfile.TemporaryDirectory(prefix="nostride-benchmark-") as tmp:
        folder = Path(workdir) if workdir else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for size in sizes:
            for batch in batches:
                rows.extend(
                    _run_setting(resolved, size, batch, forms, device, dtype, threads, repeats, warmup, memory,
                                 folder, params, progress)
                )
    notes = []
    if any(r.form in ("onnxruntime", "openvino") and not r.error for r in rows):
        notes.append("onnxruntime/openvino: the fused model's ONNX export, numpy input and outputs included")
    return BenchmarkReport(
        rows=rows,
        device=str(device),
        machine=_machine(device),
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        torch_version=torch.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        notes=notes,
    )


def _run_setting(resolved, size, batch, forms, device, dtype, threads, repeats, warmup, memory, folder, params, progress):
    rows: dict[tuple[str, str], BenchmarkRow] = {}
    runners = {}
    for label, model, default_size in resolved:
        s = size or default_size
        channels = _input_channels(model)
        model = model.to(device=device, dtype=dtype).eval()
        example = torch.rand(batch, channels, s, s, device=device, dtype=dtype)
        gflops = count_flops(model, (1, channels, s, s)) / 1e9
        for form in forms:
            row = BenchmarkRow(label, form, batch, s, s, params[label], round(gflops, 3), str(dtype).replace("torch.", ""))
            rows[(label, form)] = row
            try:
                runners[(label, form)] = build_form(form, model, example, folder, threads, tag=_safe(label))
            except FormUnavailable as err:
                row.error = str(err)
    if progress is not None:
        sizes = sorted({(r.height, r.width) for r in rows.values()})
        progress(f"batch {batch}, {' / '.join(f'{h}x{w}' for h, w in sizes)}: timing {len(runners)} model forms, "
                 f"{repeats} interleaved calls each")
    times = interleaved_latencies({k: r.call for k, r in runners.items()}, device, repeats, warmup)
    for key, samples in times.items():
        row = rows[key]
        median = statistics.median(samples)
        row.latency_ms = round(median * 1e3, 3)
        row.p90_ms = round(percentile(samples, 90) * 1e3, 3)
        row.throughput = round(batch / median, 2)
        runner = runners[key]
        if memory and (runner.module is not None or device.type == "cuda" and key[1] in ("compile",)):
            row.peak_mb = round(peak_activation_bytes(runner.call, device) / 2**20, 2)
    first = resolved[0][0]
    for (label, form), row in rows.items():
        base = rows.get((first, form))
        if row.latency_ms is not None and base is not None and base.latency_ms:
            row.ratio = round(row.latency_ms / base.latency_ms, 3)
    order = {form: i for i, form in enumerate(forms)}
    return sorted(rows.values(), key=lambda r: (order[r.form], [m[0] for m in resolved].index(r.model)))


def _input_channels(model: nn.Module) -> int:
    kwargs = getattr(model, "model_kwargs", None) or {}
    definition = getattr(model, "yaml", None)
    if kwargs.get("in_chans"):
        return int(kwargs["in_chans"])
    if isinstance(definition, dict) and definition.get("ch"):
        return int(definition["ch"])
    return 3


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
