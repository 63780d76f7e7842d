"""Import checkpoints written by ultralytics/yolov5 (v6.x, v7.0) and the YOLOv5-SPD fork.

A YOLOv5 ``.pt`` pickles the whole model (``models.yolo.Model``); :mod:`._unpickle` reads it
into inert records without the YOLOv5 code and without running anything from the file. This
module turns that record tree into a nostride :class:`~nostride.models.yolo.YOLOv5`:

* the definition dict (``model.yaml``) builds the model through ``create_model("yolov5", cfg=...)``,
  so ``model_name``/``model_kwargs`` are set and a nostride checkpoint can rebuild it;
* every submodule's ``_parameters`` and ``_buffers`` give a state dict with the reference key names
  (``model.0.conv.weight``, ``model.24.anchors``), loaded strictly. The ``anchors`` buffer wins
  over the yaml's anchors (autoanchor changes the buffer, not the yaml);
* class names, Detect ``inplace`` and the training ``hyp`` are carried over; activations other than
  SiLU are refused (nostride's YOLOv5 builds SiLU, so the outputs would differ).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._unpickle import PickledObject, read_torch_pickle

__all__ = ["YOLOv5Checkpoint", "build_yolov5", "load_yolov5", "read_yolov5_checkpoint"]

_MODEL_CLASSES = ("models.yolo.Model", "models.yolo.DetectionModel")
_DETECT = "models.yolo.Detect"
_CONV_WITH_ACT = ("models.common.Conv",)
_SUPPORTED_ACTS = ("SiLU",)


@dataclass
class YOLOv5Checkpoint:
    """What :func:`read_yolov5_checkpoint` extracts from a YOLOv5 ``.pt`` (no model built yet).

    Attributes:
        path: the file.
        cfg: the model definition (``model.yaml``), plain data.
        names: class names, a list of ``nc`` strings.
        stride: strides of the detection levels, e.g. ``[8.0, 16.0, 32.0]``.
        state_dict: parameters and persistent buffers under the reference key names.
        dtype: floating dtype of the stored weights (``torch.float16`` for files YOLOv5 writes).
        weights: ``"ema"`` or ``"model"``, the entry the weights came from.
        hyp: the training hyperparameters the model carried (``model.hyp``), or ``None``.
        info: file metadata, plain data: ``layout`` ("v6"/"v7"), ``spd`` (fork layout),
            ``model_class``, ``epoch``, ``best_fitness``, ``updates``, ``date``, ``git``.
    """

    path: Path
    cfg: dict
    names: list[str]
    stride: list[float]
    state_dict: dict[str, torch.Tensor]
    dtype: torch.dtype
    weights: str
    hyp: dict | None = None
    info: dict = field(default_factory=dict)


def _plain(value: Any, where: str, path: Path) -> Any:
    """A deep copy of ``value`` with only dict/list/str/int/float/bool/None (tuples become lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, where, path) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, where, path) for k, v in value.items()}
    raise ValueError(f"{path}: {where} holds a {type(value).__name__} ({value!r}); expected plain data")


def _children(obj: PickledObject) -> dict[str, Any]:
    return obj.state.get("_modules") or {}


def _collect_state_dict(root: PickledObject, path: Path) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers of every record, keyed like ``nn.Module.state_dict``."""
    out: dict[str, torch.Tensor] = {}

    def walk(obj: PickledObject, prefix: str) -> None:
        st = obj.state
        skip = set(st.get("_non_persistent_buffers_set") or ())
        for kind in ("_parameters", "_buffers"):
            for name, t in (st.get(kind) or {}).items():
                if t is None or (kind == "_buffers" and name in skip):
                    continue
                if not isinstance(t, torch.Tensor):
                    raise ValueError(f"{path}: {prefix}{name} is a {type(t).__name__}, expected a tensor")
                out[prefix + name] = t.detach()
        for name, child in _children(obj).items():
            if child is None:
                continue
            if not isinstance(child, PickledObject):
                raise ValueError(f"{path}: submodule {prefix}{name} is a {type(child).__name__}, expected a layer")
            walk(child, f"{prefix}{name}.")

    walk(root, "")
    return out


def _activations(root: PickledObject) -> dict[str, list[str]]:
    """Activation description -> where it occurs (``Conv`` layers only, where YOLOv5 puts them)."""
    found: dict[str, list[str]] = {}

    def walk(obj: PickledObject, prefix: str) -> None:
        if obj.qualname in _CONV_WITH_ACT:
            act = _children(obj).get("act")
            if isinstance(act, PickledObject):
                desc = act.short_name
                if desc == "LeakyReLU":
                    desc = f"LeakyReLU(negative_slope={act.state.get('negative_slope', 0.01)})"
            else:
                desc = type(act).__name__
            found.setdefault(desc, []).append(prefix.rstrip("."))
        for name, child in _children(obj).items():
            if isinstance(child, PickledObject):
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    return found


def _drop_legacy_anchor_grid(state_dict: dict[str, torch.Tensor], prefix: str, stride: torch.Tensor, path: Path) -> None:
    """YOLOv5 v5.x registered Detect's pixel anchors as a buffer ``anchor_grid``; v6.0 derives them.

    The buffer is redundant (``anchors * stride``); it is dropped after checking that it agrees,
    since the outputs would otherwise differ from the original model's.
    """
    grid = state_dict.pop(prefix + "anchor_grid", None)
    anchors = state_dict.get(prefix + "anchors")
    if grid is None or anchors is None:
        return
    expected = anchors.float() * stride.float().view(-1, 1, 1)
    if grid.numel() != expected.numel() or not torch.allclose(grid.float().reshape(expected.shape), expected, rtol=2e-3, atol=1e-2):
        raise ValueError(
            f"{path}: Detect's anchor_grid buffer (v5.x) disagrees with anchors * stride; "
            "the file's anchors are inconsistent and cannot be imported faithfully"
        )


def _names(value: Any, nc: int, path: Path) -> list[str]:
    if value is None:
        return [f"class{i}" for i in range(nc)]
    if isinstance(value, dict):  # v7.0: {index: name}
        try:
            value = [value[k] for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            raise ValueError(f"{path}: class names dict has non-integer keys: {list(value)[:5]}") from None
    if not isinstance(value, (list, tuple)) or len(value) != nc:
        raise ValueError(f"{path}: expected {nc} class names, got {value!r}")
    return [str(n) for n in value]


def _some_keys(d: dict, limit: int = 8) -> str:
    keys = sorted(map(str, d))
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _refuse_other_kinds(ckpt: dict, path: Path) -> None:
    """One line for files that are not YOLOv5 checkpoints but are often given to import by mistake."""
    if ckpt.get("format") == "nostride":
        model = ckpt.get("model_name") or ckpt.get("source_model") or "a model"
        raise ValueError(f"{path} is already a nostride checkpoint ({model}, task {ckpt.get('task')}): nothing to "
                         "import; use it directly (--weights with val, predict, export or train)")
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise ValueError(f"{path} is a state dict ({len(ckpt)} tensors: {', '.join(sorted(map(str, ckpt))[:3])}, ...), not a YOLOv5 "
                         "checkpoint: a torchvision/timm state dict is used with `nostride convert MODEL --weights "
                         "FILE` or `nostride train --model MODEL --weights FILE`")


def _pick_model(ckpt: Any, use_ema: bool | str, path: Path) -> tuple[PickledObject, str]:
    if isinstance(ckpt, PickledObject):  # torch.save(model) of a whole model
        return ckpt, "model"
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: expected a YOLOv5 checkpoint dict, got {type(ckpt).__name__}")
    if use_ema not in ("auto", True, False):
        raise ValueError(f"use_ema must be 'auto', True or False, got {use_ema!r}")
    _refuse_other_kinds(ckpt, path)
    ema = ckpt.get("ema")
    if use_ema is True and ema is None:
        raise ValueError(f"{path}: use_ema=True but the checkpoint has no EMA weights ('ema' is missing or None)")
    key = "ema" if (use_ema is True or (use_ema == "auto" and ema is not None)) else "model"
    obj = ckpt.get(key)
    if obj is None:
        raise ValueError(f"{path}: no '{key}' entry in the checkpoint (keys: {_some_keys(ckpt)})")
    if isinstance(obj, dict):
        raise ValueError(
            f"{path}: '{key}' is a bare state dict without the model definition; build the model with "
            "nostride.create_model('yolov5', cfg=<its yaml>) and call load_state_dict instead"
        )
    if not isinstance(obj, PickledObject) or obj.qualname not in _MODEL_CLASSES:
        what = obj.qualname if isinstance(obj, PickledObject) else type(obj).__name__
        raise ValueError(f"{path}: '{key}' is a {what}, expected a YOLOv5 detection model ({' or '.join(_MODEL_CLASSES)})")
    return obj, key


def _file_info(ckpt: Any, root: PickledObject, layers: list[PickledObject], path: Path) -> dict:
    info: dict[str, Any] = {"model_class": root.qualname}
    meta = ckpt if isinstance(ckpt, dict) else {}
    info["layout"] = "v7" if ("date" in meta or "git" in meta or root.qualname.endswith("DetectionModel")) else "v6"
    info["spd"] = any(layer.qualname == "models.common.space_to_depth" for layer in layers)
    for key in ("epoch", "updates", "date"):
        value = meta.get(key)
        if value is None or isinstance(value, (int, float, str)):
            info[key] = value
    fitness = meta.get("best_fitness")
    if fitness is not None:
        try:
            info["best_fitness"] = float(np.asarray(fitness, dtype=np.float64).reshape(-1)[0])
        except (TypeError, ValueError, IndexError):
            info["best_fitness"] = None
    git = meta.get("git")
    if isinstance(git, dict):
        info["git"] = {str(k): str(v) for k, v in git.items()}
    return info


def read_yolov5_checkpoint(path: str | os.PathLike, *, use_ema: bool | str = "auto") -> YOLOv5Checkpoint:
    """Read a YOLOv5 ``.pt`` safely (see :mod:`._unpickle`) and extract definition, weights, names.

    Args:
        path: the checkpoint file.
        use_ema: ``"auto"`` takes the EMA weights when the file has them (a ``last.pt`` mid-training)
            and the ``model`` entry otherwise (released/stripped files, where ``model`` already *is*
            the EMA); ``True`` requires the EMA; ``False`` takes ``model``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a torch.save archive, a refused class (see
            :class:`~nostride.models.yolo._unpickle.UnsafePickleError`), no model or definition,
            unsupported layers or activations; the message names the file.
    """
    path = Path(path)
    try:
        return _read_yolov5_checkpoint(path, use_ema)
    except RecursionError:  # a crafted file whose modules contain themselves
        raise ValueError(f"{path}: its module tree contains itself or nests too deeply (a crafted or corrupt file)") from None


def _read_yolov5_checkpoint(path: Path, use_ema: bool | str) -> YOLOv5Checkpoint:
    ckpt = read_torch_pickle(path)
    root, weights = _pick_model(ckpt, use_ema, path)
    st = root.state

    cfg = st.get("yaml")
    if not isinstance(cfg, dict):
        hint = f" (yaml_file: {st['yaml_file']})" if st.get("yaml_file") else ""
        raise ValueError(f"{path}: the model has no definition dict ('yaml' attribute){hint}; cannot rebuild it")
    cfg = _plain(cfg, "the model definition (model.yaml)", path)
    missing = [k for k in ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head") if k not in cfg]
    if missing:
        raise ValueError(f"{path}: the model definition (model.yaml) lacks {missing}")
    if not isinstance(cfg["backbone"], list) or not isinstance(cfg["head"], list):
        raise ValueError(f"{path}: the model definition's 'backbone' and 'head' must be lists of rows")

    seq = _children(root).get("model")
    layers = list(_children(seq).values()) if isinstance(seq, PickledObject) else []
    if not layers or not all(isinstance(layer, PickledObject) for layer in layers):
        raise ValueError(f"{path}: the model has no layer list ('model' child)")
    detect = layers[-1]
    if detect.qualname != _DETECT:
        raise ValueError(f"{path}: the last layer is {detect.qualname}, expected {_DETECT}")
    n_rows = len(cfg["backbone"]) + len(cfg["head"])
    if n_rows != len(layers):
        raise ValueError(f"{path}: the definition has {n_rows} rows but the model {len(layers)} layers")

    acts = _activations(root)
    unsupported = {a: where for a, where in acts.items() if a not in _SUPPORTED_ACTS}
    if unsupported:
        desc = "; ".join(f"{a} in {len(w)} Conv{'' if len(w) == 1 else 's'}, e.g. {w[0]}" for a, w in unsupported.items())
        raise ValueError(
            f"{path}: the model uses activations nostride's YOLOv5 does not build ({desc}); only "
            f"{', '.join(_SUPPORTED_ACTS)} (the YOLOv5 v6.x/v7.0 default) is supported, other ones would change the outputs"
        )

    nc = detect.state.get("nc")
    if not isinstance(nc, int) or nc < 1:
        raise ValueError(f"{path}: Detect has no valid 'nc' ({nc!r})")
    cfg["nc"] = nc  # the weights decide (Model.__init__ writes an overriding nc into yaml too)
    if detect.state.get("inplace") is False:
        cfg["inplace"] = False
    names = _names(st.get("names"), nc, path)

    stride = st.get("stride", detect.state.get("stride"))
    if not isinstance(stride, torch.Tensor):
        raise ValueError(f"{path}: the model has no 'stride' tensor")
    state_dict = _collect_state_dict(root, path)
    _drop_legacy_anchor_grid(state_dict, f"model.{len(layers) - 1}.", stride, path)
    floats = [t.dtype for t in state_dict.values() if t.is_floating_point()]
    hyp = st.get("hyp")
    hyp = _plain(hyp, "model.hyp", path) if isinstance(hyp, dict) else None
    return YOLOv5Checkpoint(
        path=path,
        cfg=cfg,
        names=names,
        stride=[float(s) for s in stride.reshape(-1).tolist()],
        state_dict=state_dict,
        dtype=floats[0] if floats else torch.float32,
        weights=weights,
        hyp=hyp,
        info=_file_info(ckpt, root, layers, path),
    )


def _load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    _check_fit(model.state_dict(), state_dict, path)
    model.load_state_dict(state_dict, strict=True)


def _check_fit(expected: dict[str, torch.Tensor], state_dict: dict[str, torch.Tensor], path: Path) -> None:
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f" (+{len(items) - 8} more)" if len(items) > 8 else ""
                parts.append(f"{label}: {', '.join(items[:8])}{more}")
        raise ValueError(f"{path}: weights do not match the model its definition builds; " + "; ".join(parts))


def load_yolov5(path: str | os.PathLike, *, use_ema: bool | str = "auto", fp32: bool = True) -> nn.Module:
    """Build a nostride YOLOv5 from a checkpoint written by YOLOv5 v6.x/v7.0 or the YOLOv5-SPD fork.

    The file is read without the YOLOv5 code and without executing anything it contains (see
    docs/import.md). The model is rebuilt from its own definition (``model.yaml``) with
    ``create_model("yolov5", cfg=...)`` and its weights are loaded strictly, so its outputs are
    the original model's.

    Args:
        path: a YOLOv5 ``.pt`` (``yolov5s.pt``, ``best.pt``, ``last.pt``, an SPD-fork file).
        use_ema: which weights to take, see :func:`read_yolov5_checkpoint`.
        fp32: return a float32 model (default); ``False`` keeps the file's dtype (float16).

    Returns:
        The model in eval mode, with ``names`` set (and ``hyp`` when the file has it).

    Raises:
        FileNotFoundError, ValueError: see :func:`read_yolov5_checkpoint`; also weights that do
            not fit the definition (missing/unexpected keys, shapes) and stride mismatches.
    """
    return build_yolov5(read_yolov5_checkpoint(path, use_ema=use_ema), fp32=fp32)


def build_yolov5(ck: YOLOv5Checkpoint, *, fp32: bool = True) -> nn.Module:
    """The nostride YOLOv5 for what :func:`read_yolov5_checkpoint` read (see :func:`load_yolov5`)."""
    from nostride.utils.meta import shapes_only
    from nostride.models import create_model

    try:
        # shapes first, on the "meta" device (no memory): a small file declaring a huge model
        # (width_multiple 60) is refused before anything is allocated
        with shapes_only():
            probe = create_model("yolov5", cfg=ck.cfg)
        _check_fit(probe.state_dict(), ck.state_dict, ck.path)
        model = create_model("yolov5", cfg=ck.cfg)
    except ValueError as e:
        if str(e).startswith(str(ck.path)):
            raise
        raise ValueError(f"{ck.path}: cannot build its model definition: {e}") from None
    except (RuntimeError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{ck.path}: cannot build its model definition: {type(e).__name__}: {e}") from None
    built_stride = [float(s) for s in model.stride.tolist()]
    if built_stride != ck.stride:
        raise ValueError(f"{ck.path}: the definition gives strides {built_stride} but the file says {ck.stride}")
    _load_strict(model, ck.state_dict, ck.path)
    model.names = list(ck.names)
    if ck.hyp is not None:
        model.hyp = dict(ck.hyp)
    if not fp32:
        model.to(ck.dtype)
    return model.eval()
