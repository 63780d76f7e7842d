"""Detection training options: the YOLOv5 hyperparameter files and the detection defaults.

A hyperparameter ("hyp") file is YAML with YOLOv5's keys. Shipped files (pick by name with
``--hyp NAME``): ``scratch`` (YOLOv5 v6.0's default, also the SPD-Conv fork's), ``scratch-low``,
``scratch-med`` and ``scratch-high``; any other value is a path to a user's file, whose keys
override the ``scratch`` values. Its optimizer keys become the engine options ``lr`` (``lr0``),
``lrf``, ``momentum``, ``weight_decay``, ``warmup_epochs``, ``warmup_momentum`` and
``warmup_bias_lr``; the others (loss gains and augmentation) are detection task options. Any of
them can be overridden on the command line (``--lr 0.02``, ``--mosaic 0.5``) or in a config file.

This module only reads YAML (no torch): the option parser and config loader use it.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from ...utils.bounds import check_float, check_int
from ...utils.yamlio import read_yaml

__all__ = ["HYP_DIR", "HYP_NAMES", "ENGINE_KEYS", "HYP_KEYS", "OPTION_KEYS", "load_hyp", "default_options",
           "check_task_options"]

TASK = "detect"
HYP_DIR = Path(__file__).with_name("hyps")
HYP_NAMES = ("scratch", "scratch-low", "scratch-med", "scratch-high")

#: hyp key -> engine option
ENGINE_KEYS: dict[str, str] = {"lr0": "lr", "lrf": "lrf", "momentum": "momentum", "weight_decay": "weight_decay",
                               "warmup_epochs": "warmup_epochs", "warmup_momentum": "warmup_momentum",
                               "warmup_bias_lr": "warmup_bias_lr"}

#: hyp keys that are detection task options (loss gains, augmentation), all numbers
HYP_KEYS: tuple[str, ...] = (
    "box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
    "flipud", "fliplr", "mosaic", "mixup", "copy_paste",
)

#: the other detection options and their defaults (the reference's behaviour)
PIPELINE_DEFAULTS: dict[str, Any] = {
    "rect": False,  # rectangular training batches (no mosaic, no shuffle)
    "multi_scale": False,  # image size drawn from [0.5, 1.5] x img_size (multiples of 32) per batch
    "close_mosaic": 0,  # turn mosaic off for the last N epochs (0 = never, as YOLOv5 v6.0)
    "freeze": 0,  # freeze the first N layers (model.0 .. model.N-1)
    "autoanchor": True,  # check anchors (best possible recall) before training, evolve when < 0.98
    "plots": True,  # labels.jpg and train_batch*.jpg in the run folder
}

OPTION_KEYS: tuple[str, ...] = HYP_KEYS + tuple(PIPELINE_DEFAULTS)

#: what a detection run uses unless told otherwise (YOLOv5 v6.0 train.py), in a YAML file that
#: ``nostride train --help`` reads without importing this package
ENGINE_DEFAULTS_FILE = Path(__file__).with_name("train_defaults.yaml")
ENGINE_DEFAULTS: dict[str, Any] = dict(read_yaml(ENGINE_DEFAULTS_FILE))


def hyp_path(name: str) -> Path:
    """The file a ``--hyp`` value names (a shipped name or a path)."""
    if name in HYP_NAMES:
        return HYP_DIR / f"{name}.yaml"
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"hyp file not found: {name} (shipped: {', '.join(HYP_NAMES)}, or a YAML path)")
    return path


def load_hyp(name: str | os.PathLike = "scratch") -> dict[str, float]:
    """A hyperparameter file as a dict: the ``scratch`` values overridden by the file's (checked)."""
    base = _read(HYP_DIR / "scratch.yaml")
    if str(name) in ("", "scratch"):
        return base
    path = hyp_path(str(name))
    data = _read(path)
    for k, v in data.items():
        if k not in base:
            close = difflib.get_close_matches(k, list(base), n=2)
            raise ValueError(f"{path}: unknown hyperparameter {k!r}"
                             f"{f' (did you mean {close[0]}?)' if close else ''}")
    base.update(data)
    return base


def _read(path: Path) -> dict[str, float]:
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of hyperparameter: value, got {type(data).__name__}")
    for k, v in data.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{path}: hyperparameter {k!r} must be a number, got {v!r}")
    return {str(k): float(v) for k, v in data.items()}


def default_options(options: dict[str, Any]) -> dict[str, Any]:
    """The detection defaults under ``options`` (engine defaults, then the hyp file it names)."""
    name = options.get("hyp") or "scratch"
    hyp = load_hyp(name)
    out: dict[str, Any] = dict(ENGINE_DEFAULTS)
    out["hyp"] = str(name)
    out.update({ENGINE_KEYS[k]: v for k, v in hyp.items() if k in ENGINE_KEYS})
    out["task_options"] = {**{k: hyp[k] for k in HYP_KEYS}, **PIPELINE_DEFAULTS}
    return out


def check_task_options(options: dict[str, Any]) -> dict[str, Any]:
    """Every detection option with its default filled in; unknown keys and wrong types raise ``ValueError``."""
    scratch = load_hyp()  # read once (not once per key)
    out = {**{k: scratch[k] for k in HYP_KEYS}, **PIPELINE_DEFAULTS}
    for k, v in options.items():
        if k not in out:
            close = difflib.get_close_matches(k, list(out), n=2)
            raise ValueError(f"unknown detection option {k!r}{f' (did you mean {close[0]}?)' if close else ''}")
        want = type(PIPELINE_DEFAULTS.get(k, 0.0))
        if want is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            v = float(v)
        elif want is int and isinstance(v, int) and not isinstance(v, bool):
            pass
        elif want is bool and isinstance(v, bool) or want is str and isinstance(v, str):
            pass
        else:
            raise ValueError(f"detection option {k!r} must be {want.__name__}, got {v!r}")
        out[k] = v
    for k, (low, high, low_open, high_open, what) in HYP_BOUNDS.items():
        check_float(f"detection option {k!r}", out[k], low, high, low_open=low_open, high_open=high_open, what=what)
    for k in ("close_mosaic", "freeze"):
        check_int(f"detection option {k!r}", out[k], 0, None)
    return out


_PROBABILITY = (0.0, 1.0, False, False, " (a probability)")
#: the range of each hyperparameter a run can use: (low, high, low end open, high end open, why)
HYP_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool, str]] = {
    "box": (0.0, 1000.0, False, False, " (a loss gain)"),
    "cls": (0.0, 1000.0, False, False, " (a loss gain)"),
    "obj": (0.0, 1000.0, False, False, " (a loss gain)"),
    "cls_pw": (0.0, 1000.0, True, False, " (a BCE positive weight)"),
    "obj_pw": (0.0, 1000.0, True, False, " (a BCE positive weight)"),
    "iou_t": (0.0, 1.0, False, False, " (an IoU)"),
    # a target matches an anchor when max(w/a, a/w) < anchor_t, a ratio >= 1: at 1 or below nothing matches
    "anchor_t": (1.0, 100.0, True, False, " (an anchor-to-box size ratio)"),
    "fl_gamma": (0.0, 100.0, False, False, " (a focal-loss exponent)"),
    "hsv_h": (0.0, 1.0, False, False, " (a fraction)"),
    "hsv_s": (0.0, 1.0, False, False, " (a fraction)"),
    "hsv_v": (0.0, 1.0, False, False, " (a fraction)"),
    "degrees": (0.0, 180.0, False, False, " (degrees)"),
    "translate": (0.0, 1.0, False, False, " (a fraction of the image)"),
    "scale": (0.0, 1.0, False, True, " (images are scaled by 1 +/- scale)"),
    "shear": (0.0, 90.0, False, True, " (degrees)"),
    "perspective": (0.0, 0.01, False, False, " (YOLOv5 uses 0 to 0.001)"),
    "mosaic": _PROBABILITY, "mixup": _PROBABILITY, "fliplr": _PROBABILITY, "flipud": _PROBABILITY,
    "copy_paste": _PROBABILITY,
}
