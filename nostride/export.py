"""Export a model for deployment: one function per format, and a table of the formats.

============ ===================== ============== ==========================================
format       function              suffix         needs
============ ===================== ============== ==========================================
onnx         export_onnx           .onnx          onnx, onnxscript (onnxruntime for the check)
torchscript  export_torchscript    .torchscript   -
============ ===================== ============== ==========================================

Every exporter puts the model in evaluation mode (on a copy when it fuses), can fuse it first
(:func:`nostride.fuse`: BatchNorm folded, SPD + conv as one strided conv), and by default checks
the exported file against the PyTorch model on random inputs.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .convert.fuse import fuse as fuse_model
from .utils.atomic import atomic_output, check_output_path
from .layers import fixed_size_graph
from .utils.outputs import output_tensors

__all__ = ["EXPORT_FORMATS", "ExportCheckError", "ExportFormat", "export", "export_onnx", "export_torchscript",
           "onnx_providers"]

Shape = Sequence[int]


MIN_OPSET = 18  # the oldest opset torch's (torch.export-based) ONNX exporter writes itself


class ExportCheckError(RuntimeError):
    """The exported model's outputs differ from the PyTorch model's."""


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: Shape = (1, 3, 640, 640),
    opset: int = 18,
    dynamic: bool = False,
    fuse: bool = False,
    simplify: bool = False,
    check: bool = True,
    check_shapes: Sequence[Shape] | None = None,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    dynamo: bool = True,
    verbose: bool = False,
    metadata: dict | None = None,
    half: bool = False,
) -> Path:
    """Export ``model`` to an ONNX file and (by default) check it against PyTorch.

    Args:
        model: the network; it is not modified (evaluation mode is set for the export and restored).
        path: the ``.onnx`` file to write (parent folders are created).
        input_shape: shape of the example input (N, C, H, W).
        opset: ONNX opset version.
        dynamic: make batch, height and width dynamic ("batch", "height", "width").
        fuse: export :func:`nostride.fuse` of the model (a copy) instead of the model.
        simplify: also run onnxscript's optimizer (constant folding, unused-node removal) on the
            written file. The default exporter already does this, so it mostly matters with
            ``dynamo=False``.
        check: validate the file with ``onnx.checker`` and, when onnxruntime is installed, compare
            its outputs with PyTorch's on a random input of ``input_shape`` and of each of
            ``check_shapes``; raises :class:`ExportCheckError` beyond ``atol``/``rtol``.
        check_shapes: further input shapes to check; default with ``dynamic``: batch + 1 and
            height, width + 32 (catches graphs silently specialised to the example's shape).
        atol, rtol: tolerances of the check.
        dynamo: use the torch.export-based exporter (default) or the legacy TorchScript one.
        verbose: let the exporter print its progress.
        metadata: JSON data stored in the file's ``metadata_props`` under ``"nostride"`` (``nostride
            export`` records the task, class names and input size there, see :mod:`nostride.exported`).
        half: a float16 graph (weights, input and outputs), exported from the model on its CUDA
            device (float16 convolutions need one); the check then runs ONNX Runtime's CUDA
            provider when it is installed, with float16 tolerances (at least 0.05 absolute, 1 %).

    Returns:
        The path written.

    Raises:
        ImportError: when onnx (or onnxscript for the default exporter) is not installed.
    """
    _require("onnx", "onnxscript" if dynamo or simplify else None)
    import onnx

    # torch's exporter writes opset 18 and newer; older requests go through a version converter that
    # fails on these models (and logs a traceback) and then writes opset 18 anyway
    lowest = MIN_OPSET if dynamo else 7
    if isinstance(opset, bool) or not isinstance(opset, int) or not lowest <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"ONNX opset must be a whole number from {lowest} to {onnx.defs.onnx_opset_version()} "
                         f"(the installed onnx package's newest), got {opset!r}")
    path = _prepare_path(path)
    # written aside and checked there, then renamed over ``path``: a kill, a full disk or a failed
    # check leaves the previous file (or none), never a torn or unverified one
    inputs = torch.randn(*input_shape)
    if half and _device_of(model).type != "cuda":
        raise ValueError(f"a float16 (half) export needs the model on a CUDA device, it is on {_device_of(model)} "
                         "(float16 convolutions run on GPUs)")
    with _export_mode(model if not half or fuse else copy.deepcopy(model), fuse) as net, atomic_output(path) as tmp:
        device = _device_of(net)
        if half:
            net.half()
            inputs = inputs.half()
            atol, rtol = max(atol, 0.05), max(rtol, 0.01)
        example = inputs.to(device)
        with torch.no_grad():
            output_names = [f"output{i}" for i in range(len(output_tensors(net(example))))]
        # The torch.export-based exporter is the one PyTorch maintains (the TorchScript-based one
        # is deprecated since torch 2.9 and warns that it will be removed) and writes a cleaner
        # graph (fused SPD-Conv: 14 nodes vs 48). It is slower (ResNet18: 4-9 s vs 1.5 s on the
        # 2-core dev machine), which is a one-off cost at export time.
        kwargs: dict = {}
        if dynamic:
            axes = {0: "batch", 2: "height", 3: "width"}
            if dynamo:
                kwargs["dynamic_shapes"] = (axes,)
            else:
                kwargs["dynamic_axes"] = {"images": axes, **{name: {0: "batch"} for name in output_names}}
        with warnings.catch_warnings():
            # the legacy exporter's deprecation notice is expected when asked for explicitly
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            recording = fixed_size_graph() if not dynamic else contextlib.nullcontext()
            with recording:  # a fixed-size graph pads only where the example needs it
                torch.onnx.export(
                    net,
                    (example,),
                    str(tmp),
                    input_names=["images"],
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=dynamo,
                    external_data=False,
                    verbose=verbose,
                    **kwargs,
                )
        _check_opset(tmp, opset)
        if simplify:
            import onnxscript.optimizer

            onnx.save(onnxscript.optimizer.optimize(onnx.load(str(tmp))), str(tmp))
        if metadata is not None:
            import json

            proto = onnx.load(str(tmp))
            entry = proto.metadata_props.add()
            entry.key, entry.value = "nostride", json.dumps(metadata)
            onnx.save(proto, str(tmp))
        if check:
            onnx.checker.check_model(str(tmp), full_check=True)
            shapes = [tuple(input_shape), *_check_shapes(input_shape, dynamic, check_shapes)]
            _check_onnx(net, tmp, shapes, atol, rtol, device, torch.float16 if half else torch.float32, shown=path)
    return path


def _check_opset(path: Path, opset: int) -> None:
    """Raise ``ValueError`` when the exporter wrote another opset than asked for (the caller's atomic
    writer then removes the file):
    torch's exporter writes opset 18 for older requests it cannot convert down to, and for newer ones
    than it knows, without an error."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    model = onnx.load(str(path), load_external_data=False)
    written = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ValueError(f"ONNX opset {opset} was asked for, but the exporter can only write opset {written} for "
                         f"this model; choose an opset from {MIN_OPSET} to {newest} (the installed onnx package's newest)")


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    input_shape: Shape = (1, 3, 640, 640),
    fuse: bool = False,
    check: bool = True,
    check_shapes: Sequence[Shape] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    metadata: dict | None = None,
) -> Path:
    """Trace ``model`` with ``torch.jit.trace`` and save it (loadable from C++ with libtorch).

    ``torch.jit`` is deprecated upstream (in favour of torch.export) but still the format
    libtorch loads. Tracing records one path through the Python control flow; the check runs
    the saved file on ``input_shape`` and on each of ``check_shapes``.

    Args:
        model: the network (not modified).
        path: the file to write (conventionally ``.torchscript``).
        input_shape: shape of the example input (N, C, H, W).
        fuse: trace :func:`nostride.fuse` of the model (a copy).
        check: compare the loaded file's outputs with PyTorch's; raises :class:`ExportCheckError`.
        check_shapes: further input shapes to check.
        atol, rtol: tolerances of the check.
        metadata: JSON data stored in the archive as the extra file ``nostride.json`` (see
            :mod:`nostride.exported`).

    Returns:
        The path written.
    """
    import json

    path = _prepare_path(path)
    with _export_mode(model, fuse) as net:
        device = _device_of(net)
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")
            traced = torch.jit.trace(net, torch.randn(*input_shape, device=device))
            extra = {"nostride.json": json.dumps(metadata)} if metadata is not None else {}
            buffer = io.BytesIO()  # serialised in memory: libtorch's file writer aborts the process on a full disk
            torch.jit.save(traced, buffer, _extra_files=extra)
            with atomic_output(path) as tmp:  # checked aside, then renamed: never a torn or unverified file
                tmp.write_bytes(buffer.getvalue())
                if check:
                    loaded = torch.jit.load(str(tmp), map_location=device)
                    for shape in [tuple(input_shape), *(check_shapes or [])]:
                        x = torch.randn(*shape, device=device)
                        _compare(output_tensors(net(x)), output_tensors(loaded(x)), shape, atol, rtol, "TorchScript")
    return path


@dataclass(frozen=True)
class ExportFormat:
    """One row of the export table."""

    name: str
    suffix: str
    function: Callable[..., Path]
    requires: tuple[str, ...]


EXPORT_FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("ONNX", ".onnx", export_onnx, ("onnx", "onnxscript")),
    "torchscript": ExportFormat("TorchScript", ".torchscript", export_torchscript, ()),
}


def export(model: nn.Module, path: str | Path, format: str | None = None, **kwargs) -> Path:
    """Export ``model`` to ``path`` in ``format`` (default: from the file suffix).

    ``kwargs`` go to the format's function (:func:`export_onnx`, :func:`export_torchscript`).
    """
    if format is None:
        suffix = Path(path).suffix.lower()
        matches = [key for key, fmt in EXPORT_FORMATS.items() if fmt.suffix == suffix]
        if not matches:
            raise ValueError(f"cannot tell the export format from {str(path)!r}; pass format= one of {sorted(EXPORT_FORMATS)}")
        format = matches[0]
    key = format.lower()
    if key not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {sorted(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[key].function(model, path, **kwargs)


# --------------------------------------------------------------------------------------- helpers


def _require(*modules: str | None) -> None:
    missing = [m for m in modules if m and importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: install the extra with `pip install nostride[onnx]`"
        )


def _prepare_path(path: str | Path) -> Path:
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _export_mode(model: nn.Module, fuse: bool) -> Iterator[nn.Module]:
    """The module to export, in eval mode; the caller's model gets its train/eval flags back."""
    if fuse:
        yield fuse_model(model)  # a copy, already in eval mode
        return
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags.items():
            m.training = training


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _check_shapes(input_shape: Shape, dynamic: bool, check_shapes: Sequence[Shape] | None) -> list[tuple]:
    if check_shapes is not None:
        return [tuple(s) for s in check_shapes]
    if not dynamic:
        return []
    n, c, h, w = input_shape
    return [(n + 1, c, h + 32, w + 32)]


def onnx_providers(device: torch.device) -> list[str]:
    """ONNX Runtime providers for a model on ``device``: CUDA's first when the model is on a GPU
    and the installed onnxruntime has it (onnxruntime-gpu), then the CPU's."""
    import onnxruntime

    cuda = device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    return (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]


def _check_onnx(net: nn.Module, path: Path, shapes: list[tuple], atol: float, rtol: float, device,
                dtype: torch.dtype = torch.float32, shown: Path | None = None) -> None:
    if importlib.util.find_spec("onnxruntime") is None:
        warnings.warn("onnxruntime is not installed: the exported ONNX file was validated but not run")
        return
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=onnx_providers(torch.device(device)))
    name = session.get_inputs()[0].name
    for shape in shapes:
        x = torch.randn(*shape).to(dtype)
        with torch.no_grad():
            expected = output_tensors(net(x.to(device)))
        try:
            got = [torch.from_numpy(a) for a in session.run(None, {name: x.numpy()})]
        except Exception as err:  # onnxruntime raises its own exception types
            raise ExportCheckError(f"ONNX Runtime failed on input {shape} ({shown or path}): {err}") from err
        _compare(expected, got, shape, atol, rtol, "ONNX Runtime")


def _compare(expected: list[torch.Tensor], got: list[torch.Tensor], shape, atol: float, rtol: float, what: str) -> None:
    if len(expected) != len(got):
        raise ExportCheckError(f"{what} returned {len(got)} outputs for input {shape}, PyTorch {len(expected)}")
    for i, (e, g) in enumerate(zip(expected, got)):
        e, g = e.detach().float().cpu(), g.detach().float().cpu()
        if e.shape != g.shape:
            raise ExportCheckError(
                f"{what} output {i} has shape {tuple(g.shape)} for input {shape}, PyTorch {tuple(e.shape)}"
            )
        if not torch.allclose(e, g, atol=atol, rtol=rtol):
            diff = (e - g).abs().max().item()
            raise ExportCheckError(
                f"{what} output {i} differs from PyTorch for input {shape}: max abs diff {diff:.3g} "
                f"(atol={atol}, rtol={rtol})"
            )
