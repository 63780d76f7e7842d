"""Running exported models (ONNX through onnxruntime, TorchScript) where a checkpoint's model runs.

``nostride export`` writes what it knows of the checkpoint into the exported file (ONNX: a
``metadata_props`` entry ``"nostride"``; TorchScript: an extra file ``nostride.json``): the task,
class names, model, stride, training options (image size, normalisation, data) and the export's
input shape. :func:`load_exported` reads it back as a checkpoint-like dict whose model is an
:class:`ExportedModel`, so ``nostride val`` and ``nostride predict`` (and :func:`nostride.val`,
:func:`nostride.predict`) evaluate a deployment artefact with the same command and the same
pre- and post-processing as the checkpoint it came from.

A file exported with a fixed input shape runs batches of that shape only: an evaluation then
letterboxes every image into the exported square (no rectangular batches) and feeds the file
``batch`` images at a time (the last group padded). A dynamic ONNX file (``--dynamic``) takes the
rectangular batches of the PyTorch evaluation as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

__all__ = ["EXPORTED_SUFFIXES", "METADATA_KEY", "ExportedModel", "export_metadata", "export_weights",
           "is_exported_file", "load_exported", "read_metadata"]

EXPORTED_SUFFIXES = {".onnx": "onnx", ".torchscript": "torchscript"}
METADATA_KEY = "nostride"  # ONNX metadata_props key; TorchScript: the extra file "nostride.json"
_TS_EXTRA = "nostride.json"

# checkpoint entries an exported file carries (plain data only)
_CARRIED = ("task", "model_name", "model_kwargs", "names", "source", "source_model", "epoch", "img_size", "stride",
            "mean", "std", "data", "data_format", "hyp")


def is_exported_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported model by its suffix (``.onnx``, ``.torchscript``)."""
    return Path(str(path)).suffix.lower() in EXPORTED_SUFFIXES


def export_metadata(ckpt: dict[str, Any], model: nn.Module, input_shape: tuple[int, ...], format: str,
                    dynamic: bool = False, fused: bool = True, nms: bool = False) -> dict[str, Any]:
    """What an exported file records of its checkpoint: the entries of :data:`_CARRIED`, the training
    options (with ``img_size`` set to the exported size when the shape is fixed) and the export's own."""
    meta: dict[str, Any] = {k: ckpt.get(k) for k in _CARRIED if ckpt.get(k) is not None}
    stride = getattr(model, "stride", None)
    if stride is not None and "stride" not in meta:
        meta["stride"] = [int(s) for s in torch.as_tensor(stride).flatten().tolist()]
    config = dict(ckpt.get("config") or {})
    h, w = int(input_shape[2]), int(input_shape[3])
    if not dynamic and h == w:
        config["img_size"] = meta["img_size"] = h  # what the file takes is what val and predict feed it
    meta["config"] = config
    meta["export"] = {"format": format, "input_shape": [int(s) for s in input_shape], "dynamic": bool(dynamic),
                      "fused": bool(fused), "nms": bool(nms), "weights": str(ckpt.get("_path") or "")}
    return json.loads(json.dumps(meta, default=str))  # plain JSON data


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata ``nostride export`` wrote into ``path`` (``ValueError`` when there is none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"exported model not found: {path}")
    kind = EXPORTED_SUFFIXES.get(path.suffix.lower())
    text = None
    if kind == "onnx":
        try:
            import onnx
        except ImportError:
            raise ImportError("reading an ONNX file needs onnx and onnxruntime: pip install 'nostride[onnx]'") from None
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # onnx raises its own decode errors
            raise ValueError(f"{path}: not a readable ONNX file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        text = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
    elif kind == "torchscript":
        extra = {_TS_EXTRA: ""}
        try:
            _jit_load(path, "cpu", extra)
        except Exception as e:  # torch.jit raises RuntimeError and others on a bad archive
            raise ValueError(f"{path}: not a readable TorchScript file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        text = extra[_TS_EXTRA] or None
    else:
        raise ValueError(f"{path}: not an exported model (expected {' or '.join(EXPORTED_SUFFIXES)})")
    if not text:
        raise ValueError(f"{path}: this {kind} file carries no nostride metadata (task, class names, input "
                         "size); export it with `nostride export` to run it with val and predict")
    meta = json.loads(text)
    if meta.get("export", {}).get("nms"):
        raise ValueError(f"{path}: exported with --nms (its output is final boxes); val and predict run the "
                         "file exported without --nms")
    return meta


def _jit_load(path: Path, device: Any, extra: dict[str, str] | None = None):
    """``torch.jit.load`` without its deprecation notice (TorchScript is the format libtorch loads)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        return torch.jit.load(str(path), map_location=device, _extra_files=extra or {})


class ExportedModel(nn.Module):
    """An exported file as a module: ``forward(images)`` returns the first output of the exported
    model (a detector's decoded ``(N, anchors, 5 + classes)`` predictions, a classifier's logits).

    Attributes the evaluation and prediction code reads as from a model: ``names``, ``nc`` /
    ``num_classes``, ``stride``, and ``fixed_input_hw`` (``(H, W)`` of a fixed-shape file, else ``None``).
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]) -> None:
        super().__init__()
        self.path = Path(path)
        self.meta = meta
        export = meta.get("export", {})
        self.format = export.get("format") or EXPORTED_SUFFIXES[self.path.suffix.lower()]
        shape = export.get("input_shape") or [1, 3, 640, 640]
        self.dynamic = bool(export.get("dynamic"))
        self.fixed_batch = None if self.dynamic else int(shape[0])
        self.fixed_input_hw = None if self.dynamic else (int(shape[2]), int(shape[3]))
        self.names = list(meta.get("names") or [])
        self.nc = self.num_classes = len(self.names) or None
        if meta.get("stride"):
            self.register_buffer("stride", torch.tensor(meta["stride"], dtype=torch.float32), persistent=False)
        self.model_name = f"{meta.get('model_name') or meta.get('source_model') or 'model'} ({self.format})"
        self._session = None
        self._script = None

    def _runner(self, device: torch.device):
        if self.format == "onnx":
            if self._session is None:
                import onnxruntime

                self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            return self._run_onnx
        if self._script is None or self._script_device != device:
            self._script = _jit_load(self.path, device)
            self._script_device = device
        return self._run_script

    def _run_onnx(self, x: torch.Tensor) -> torch.Tensor:
        name = self._session.get_inputs()[0].name
        out = self._session.run(None, {name: x.detach().float().cpu().numpy()})
        return torch.from_numpy(out[0]).to(x.device)

    def _run_script(self, x: torch.Tensor) -> torch.Tensor:
        from nostride.utils.outputs import output_tensors

        with torch.no_grad():
            return output_tensors(self._script(x.float()), strict=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._runner(x.device)
        if self.fixed_input_hw is not None and tuple(x.shape[2:]) != self.fixed_input_hw:
            raise ValueError(f"{self.path} takes {self.fixed_input_hw[0]}x{self.fixed_input_hw[1]} images (a fixed "
                             f"shape), got {x.shape[2]}x{x.shape[3]}; export with --dynamic for other sizes")
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return run(x)
        outs = []
        for chunk in x.split(self.fixed_batch):
            n = chunk.shape[0]
            if n < self.fixed_batch:  # pad the last group with copies of its first image
                chunk = torch.cat([chunk, chunk[:1].expand(self.fixed_batch - n, *chunk.shape[1:])])
            outs.append(run(chunk)[:n])
        return torch.cat(outs)


def load_exported(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint-like dict of an exported file: its metadata, ``"_model"`` (the :class:`ExportedModel`,
    which :func:`nostride.checkpoint.model_from_checkpoint` returns as is) and ``"_path"``."""
    from nostride.checkpoint import RUNTIME_MODEL_KEY, SOURCE_KEY

    meta = read_metadata(path)
    ckpt = dict(meta)
    ckpt[RUNTIME_MODEL_KEY] = ExportedModel(path, meta)
    ckpt[SOURCE_KEY] = str(path)
    ckpt.setdefault("epoch", 0)
    return ckpt


def _default_size(ckpt: dict) -> int:
    from nostride.checkpoint import recorded_option

    size = recorded_option(ckpt, "img_size")
    if size:
        return int(size)
    return 640 if ckpt.get("task") == "detect" else 224


def _input_channels(model: nn.Module) -> int:
    kwargs = getattr(model, "model_kwargs", None) or {}
    definition = getattr(model, "yaml", None)
    return int(kwargs.get("in_chans") or (definition.get("ch") if isinstance(definition, dict) else None) or 3)


def _fit_stride(model: nn.Module, h: int, w: int) -> tuple[int, int]:
    """A detector's input rounded up to a multiple of its largest stride, with a warning (as val and predict do)."""
    stride = getattr(model, "stride", None)
    if stride is None:
        return h, w
    import sys

    s = int(torch.as_tensor(stride).max().item())
    fit = (-(-h // s) * s, -(-w // s) * s)
    if fit != (h, w):
        given, used = (f"{h}" if h == w else f"{h} {w}"), (f"{fit[0]}" if fit[0] == fit[1] else f"{fit[0]} {fit[1]}")
        print(f"warning: image size {given} is not a multiple of the model stride {s}; using {used}", file=sys.stderr)
    return fit


def export_weights(
    weights: str | os.PathLike | dict[str, Any],
    output: str | os.PathLike | None = None,
    format: str = "onnx",
    img_size: int | Sequence[int] | None = None,
    batch_size: int = 1,
    dynamic: bool = False,
    fuse: bool = True,
    opset: int = 18,
    check: bool = True,
    nms: bool = False,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    verbose: bool = True,
    half: bool = False,
    device: str | None = "cpu",
) -> Path:
    """Export a checkpoint (or a YOLOv5 ``.pt``) as ``nostride export`` does; returns the file written.

    Args:
        weights: a checkpoint path or dict (:func:`nostride.checkpoint.open_weights`).
        output: the file (default: ``weights`` with the format's suffix).
        format: ``"onnx"`` or ``"torchscript"``.
        img_size: ``S`` or ``(H, W)``, rounded up to a multiple of a detector's stride with a warning
            (default: the training size the checkpoint records).
        batch_size: batch of the example input (a fixed-shape file takes batches of this size).
        dynamic: ONNX only: dynamic batch, height and width.
        fuse: export :func:`nostride.fuse` of the model.
        opset: ONNX opset.
        check: compare the file's outputs with PyTorch's.
        nms, conf, iou, max_det: detectors, ONNX: NMS in the graph (output ``(n, 7)``).
        verbose: print the one-line summary.
        half: ONNX only: a float16 graph, exported from the model on a CUDA ``device``.
        device: where the model runs for the export and its check (``cpu``, ``cuda``, ``cuda:N``).

    The file records the task, class names, training options and input shape (:func:`export_metadata`),
    so ``nostride val`` and ``nostride predict`` run it.
    """
    from nostride.checkpoint import model_from_checkpoint, open_weights
    from nostride.export import EXPORT_FORMATS, export

    from nostride.utils.atomic import check_output_path

    if output is not None:
        check_output_path(output)  # before the work: a folder, device or FIFO is never replaced by a file
    from nostride.utils.device import select_device

    if half and format != "onnx":
        raise ValueError("--half applies to ONNX only")
    dev = select_device(device)
    if half and dev.type != "cuda":
        raise ValueError(f"--half needs a CUDA device (--device cuda), got {dev}: float16 convolutions run on GPUs")
    ckpt = weights if isinstance(weights, dict) else open_weights(weights)
    source = ckpt.get("_path") or "checkpoint"
    model = model_from_checkpoint(ckpt)
    if isinstance(model, ExportedModel):
        raise ValueError(f"{source} is already an exported model; export the checkpoint it came from")
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {sorted(EXPORT_FORMATS)}")
    size = [img_size] if isinstance(img_size, int) else list(img_size or [_default_size(ckpt)])
    if len(size) not in (1, 2):
        raise ValueError(f"img_size takes one or two numbers, got {size}")
    h, w = (size[0], size[0]) if len(size) == 1 else size
    h, w = _fit_stride(model, int(h), int(w))
    shape = (int(batch_size), _input_channels(model), h, w)
    fmt = EXPORT_FORMATS[format]
    if output is None:
        if not isinstance(weights, (str, os.PathLike)):
            raise ValueError("give output= (the file to write) when exporting a checkpoint dict")
        output = Path(weights).with_suffix(fmt.suffix)
    if nms:
        if ckpt.get("task") != "detect":
            raise ValueError(f"--nms applies to detectors; {source} holds a {ckpt.get('task')} model")
        if format != "onnx":
            raise ValueError("--nms applies to ONNX only")
        from nostride.convert.fuse import fuse as fuse_model
        from nostride.tasks.detect.graph_nms import DetectorWithNMS

        # fused before wrapping; the check compares the file with the same wrapped model
        model = DetectorWithNMS(fuse_model(model) if fuse else model, conf, iou, max_det)
    kwargs: dict[str, Any] = dict(input_shape=shape, fuse=fuse and not nms, check=check,
                                  metadata=export_metadata(ckpt, model, shape, format, dynamic=dynamic, fused=fuse,
                                                           nms=nms))
    if format == "onnx":
        kwargs.update(dynamic=dynamic, opset=opset, half=half)
    elif dynamic:
        raise ValueError("--dynamic applies to ONNX only")
    if nms:
        # boxes after NMS are not compared with PyTorch's: boxes of equal score (common for
        # untrained or flat-image outputs) may be resolved differently by two runtimes
        kwargs["check"] = False
    path = export(model.to(dev), output, format=format, **kwargs)
    checked = "checked against PyTorch" if check else "not checked"
    if nms and check:
        _check_runs(path, shape)
        checked = "checked: valid ONNX, runs in ONNX Runtime"
    if verbose:
        print(f"{ckpt.get('model_name') or ckpt.get('source_model')}: {format} export of input {tuple(shape)}"
              f"{' (dynamic)' if dynamic else ''}{', float16' if half else ''}, {'fused' if fuse else 'unfused'}"
              f"{', NMS in the graph' if nms else ''}, {checked} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return path


def _check_runs(path: Path, shape: tuple) -> None:
    """A graph with NMS: valid ONNX, and ONNX Runtime (when installed) returns (n, 7) detections."""
    import importlib.util

    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    if importlib.util.find_spec("onnxruntime") is None:
        return
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.random.rand(*shape).astype(np.float32)})
    if out.ndim != 2 or out.shape[1] != 7:
        raise ValueError(f"{path}: the exported NMS graph returned shape {out.shape}, expected (n, 7)")
