"""Starting a detector from another's weights: which registry model a YOLOv5 ``.pt`` holds, reading
a weights file without running its code, copying tensors across class counts, freezing layers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["yolov5_model_of", "load_source_weights", "transfer_weights", "freeze_layers"]


def yolov5_model_of(path: str | os.PathLike) -> tuple[str, dict[str, Any]] | None:
    """The registry model a YOLOv5 / YOLOv5-SPD ``.pt`` holds (``("yolov5n_spd", {})``; a custom
    definition gives ``("yolov5", {"cfg": ...})``), or ``None`` when the file is not one."""
    from nostride.models.yolo.factory import SCALES, yolov5_cfg
    from nostride.models.yolo.import_yolov5 import read_yolov5_checkpoint

    try:
        ck = read_yolov5_checkpoint(path)
    except (ValueError, OSError, RuntimeError, KeyError):
        return None
    keys = ("backbone", "head", "depth_multiple", "width_multiple")
    for scale in SCALES:
        for order, suffix in ((None, ""), ("conv-spd", "_spd")):
            built = yolov5_cfg(scale, order)
            if all(built.get(k) == ck.cfg.get(k) for k in keys):
                return f"yolov5{scale}{suffix}", {}
    return "yolov5", {"cfg": ck.cfg}


def load_source_weights(path: str | os.PathLike) -> nn.Module:
    """The model in a weights file: a nostride checkpoint (its EMA weights when present) or a
    YOLOv5 / YOLOv5-SPD ``.pt`` (read without running its code)."""
    from nostride.checkpoint import load_checkpoint, model_from_checkpoint

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights: file not found: {path}")
    try:
        ckpt = load_checkpoint(path)
    except ValueError:
        from nostride.models.yolo.import_yolov5 import load_yolov5

        return load_yolov5(path)
    return model_from_checkpoint(ckpt)


@torch.no_grad()
def transfer_weights(model: nn.Module, source: nn.Module) -> str:
    """Copy ``source``'s tensors into ``model`` where name and shape agree; a Detect head with another
    class count keeps its fresh class outputs and gets the source's box and objectness outputs.
    Returns a one-line report."""
    src, dst = source.state_dict(), model.state_dict()
    det = getattr(model, "detect", None)
    copied, partial = 0, 0
    head_prefix = None
    if det is not None:
        head_prefix = next(n for n, m in model.named_modules() if m is det) + ".m."
    for k, v in dst.items():
        s = src.get(k)
        if s is None:
            continue
        if s.shape == v.shape:
            v.copy_(s.to(v.dtype))
            copied += 1
        elif head_prefix and k.startswith(head_prefix) and s.shape[1:] == v.shape[1:]:
            na = det.na
            old_no, new_no = s.shape[0] // na, v.shape[0] // na
            if s.shape[0] % na == 0 and old_no >= 5:
                v.view(na, new_no, *v.shape[1:])[:, :5] = s.view(na, old_no, *s.shape[1:])[:, :5].to(v.dtype)
                partial += 1
    note = f"weights: transferred {copied}/{len(dst)} tensors"
    if partial:
        note += f" (+{partial} head tensors: box and objectness outputs kept, class outputs re-initialised)"
    return note


def freeze_layers(model: nn.Module, n: int) -> int:
    """Stop training the parameters of layers ``0 .. n-1`` (``model.0.`` ...); returns how many tensors."""
    if n <= 0:
        return 0
    prefixes = tuple(f"model.{i}." for i in range(n))
    count = 0
    for name, p in model.named_parameters():
        if name.startswith(prefixes):
            p.requires_grad_(False)
            count += 1
    return count
