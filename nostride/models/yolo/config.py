"""YOLOv5 model definitions: loading them and turning their rows into layers (``parse_model``).

A definition is a YOLOv5-style dict (see docs/yolo-config.md): ``nc``, ``depth_multiple``,
``width_multiple``, ``anchors`` and two lists of rows ``[from, number, module, args]``,
``backbone`` then ``head``. Module names and argument strings are resolved through explicit
tables; nothing is ``eval``-ed. Channel and repeat rules are YOLOv5's ``parse_model`` (v6.0):

* repeats ``n = max(round(n * depth_multiple), 1)`` when ``n > 1``;
* output channels ``make_divisible(c2 * width_multiple, 8)`` for conv-like modules (unless equal
  to the Detect output count), ``sum`` for Concat, ``4 * c1`` for space-to-depth;
* C3 receives ``n`` as an argument; other modules with ``n > 1`` are repeated in an nn.Sequential.
"""

from __future__ import annotations

import copy
import math
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml
from torch import nn

from ...layers.space_to_depth import SpaceToDepth
from ...layers.spd_conv import SPDConv
from ...utils.profile import count_parameters
from ...utils.yamlio import read_yaml
from .blocks import BN_EPS, BN_MOMENTUM, C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from .detect import Detect

__all__ = ["BUILTIN_CONFIGS", "load_cfg", "make_divisible", "parse_model"]

BUILTIN_CONFIGS = ("yolov5.yaml", "yolov5-spd.yaml", "yolov5-spd-conv.yaml", "yolov5-p2.yaml", "yolov5-spd-p2.yaml",
                   "yolov5-spd-conv-p2.yaml")
_REQUIRED_KEYS = ("nc", "depth_multiple", "width_multiple", "anchors", "backbone", "head")


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


def load_cfg(cfg: dict | str | Path) -> dict:
    """A deep copy of a model definition given as a dict, a YAML path or a built-in name.

    Built-in names: ``yolov5.yaml`` (v6.0), ``yolov5-spd.yaml`` (released YOLOv5-SPD layout,
    conv -> SPD), ``yolov5-spd-conv.yaml`` (the paper's SPD -> conv order), and each with a P2 head
    (a fourth detection level at stride 4: ``yolov5-p2.yaml``, ``yolov5-spd-p2.yaml``,
    ``yolov5-spd-conv-p2.yaml``); all at the "l" scale.

    Raises:
        FileNotFoundError: a path that does not exist (and is not a built-in name).
        ValueError: YAML that does not parse, or a definition missing required keys.
    """
    if isinstance(cfg, dict):
        return _check_keys(copy.deepcopy(cfg), "the model definition dict")
    path = Path(cfg)
    if not path.is_file():
        if str(cfg) in BUILTIN_CONFIGS:
            text = resources.files(__package__).joinpath("cfg", str(cfg)).read_text(encoding="utf-8")
            return _check_keys(yaml.safe_load(text), str(cfg))
        raise FileNotFoundError(
            f"model definition not found: {cfg} (give a YAML path, a dict, or one of {', '.join(BUILTIN_CONFIGS)})"
        )
    data = read_yaml(path)
    return _check_keys(data, str(path))


def _check_keys(data: Any, where: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a model definition must be a mapping, got {type(data).__name__}")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{where}: model definition is missing {'key' if len(missing) == 1 else 'keys'} {missing} (needs {list(_REQUIRED_KEYS)})")
    for key in ("backbone", "head"):
        if not isinstance(data[key], list):
            raise ValueError(f"{where}: '{key}' must be a list of [from, number, module, args] rows")
    return data


# name -> (constructor, kind). kind "conv": args[0] is c2 (width-scaled) and c1 is prepended;
# "repeat": like conv and n is passed as the third argument (C3).
_CONV_LIKE: dict[str, Callable[..., nn.Module]] = {
    "Conv": Conv,
    "Bottleneck": Bottleneck,
    "SPP": SPP,
    "SPPF": SPPF,
    "Focus": Focus,
    "C3": C3,
    "SPDConv": lambda c1, c2, k=3, scale=2: SPDConv(
        c1, c2, k, scale, act="silu", bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM
    ),
}
_WITH_REPEATS = {"C3"}
MODULE_NAMES = tuple(_CONV_LIKE) + ("Concat", "nn.Upsample", "Upsample", "Detect", "space_to_depth", "SpaceToDepth")


def _resolve_arg(a: Any, nc: int, anchors: Any) -> Any:
    """YOLOv5 evaluates string args; we resolve the few names that occur, explicitly."""
    if isinstance(a, str):
        if a == "nc":
            return nc
        if a == "anchors":
            return anchors
        if a in ("None", "null"):
            return None
        if a in ("True", "False"):
            return a == "True"
    return a


def parse_model(cfg: dict, ch: int) -> tuple[nn.ModuleList, list[int]]:
    """Build the layers of a definition.

    Args:
        cfg: the definition (see :func:`load_cfg`).
        ch: input image channels.

    Returns:
        ``(layers, save)``: an ``nn.ModuleList`` (not a Sequential: layers are routed by ``f``, not
        chained, so generic Sequential rewrites such as :func:`nostride.fuse`'s must not apply;
        state-dict keys ``model.<i>...`` are the same) whose layers carry ``i`` (index), ``f`` (from),
        ``type`` (class path) and ``np`` (parameter count), and the sorted indices of layers whose
        outputs later layers read.

    Raises:
        ValueError: naming the section, row and layer index of a malformed row.
    """
    nc, gd, gw, anchors = cfg["nc"], cfg["depth_multiple"], cfg["width_multiple"], cfg["anchors"]
    if not isinstance(nc, int) or isinstance(nc, bool) or nc < 1:
        raise ValueError(f"model definition: nc must be a positive integer, got {nc!r}")
    for key, v in (("depth_multiple", gd), ("width_multiple", gw)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"model definition: {key} must be a positive number, got {v!r}")
    if isinstance(anchors, int) and not isinstance(anchors, bool):
        na = anchors  # anchors given as a count per level (values to come from autoanchor)
    elif isinstance(anchors, list) and anchors and isinstance(anchors[0], list):
        na = len(anchors[0]) // 2
    else:
        raise ValueError(f"model definition: anchors must be a list of [w, h, w, h, ...] per level, got {anchors!r}")
    no = na * (nc + 5)  # conv outputs of this size are Detect-like and not width-scaled (as in YOLOv5)

    rows = [("backbone", j, r) for j, r in enumerate(cfg["backbone"])] + [("head", j, r) for j, r in enumerate(cfg["head"])]
    if not rows:
        raise ValueError("model definition: backbone and head are both empty")
    layers, save, chs = [], [], [ch]  # chs[i] = output channels of layer i-1 (chs[0]: the image)
    for i, (section, j, row) in enumerate(rows):
        where = f"model definition, {section} row {j} (layer {i}) {row!r}"
        try:
            module, c2, f = _build_layer(i, row, chs, nc, gd, gw, anchors, no)
        except (TypeError, ValueError, IndexError, KeyError) as e:
            raise ValueError(f"{where}: {e}") from None
        layers.append(module)
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        chs.append(c2)
    if not isinstance(layers[-1], Detect):
        raise ValueError(f"model definition: the last head row must be Detect, got {rows[-1][2]!r}")
    return nn.ModuleList(layers), sorted(set(save))


def _build_layer(i: int, row: Any, chs: list[int], nc: int, gd: float, gw: float, anchors: Any, no: int):
    if not isinstance(row, list) or len(row) != 4:
        raise ValueError("a row must be [from, number, module, args]")
    f, n, name, args = row
    froms = [f] if isinstance(f, int) and not isinstance(f, bool) else f
    if not isinstance(froms, list) or not froms or not all(isinstance(x, int) and not isinstance(x, bool) for x in froms):
        raise ValueError(f"'from' must be an int or a list of ints, got {f!r}")
    for x in froms:
        if i == 0 and x != -1:
            raise ValueError(f"layer 0 can only read the input (from = -1), got from = {x}")
        if not -i <= x < i and not (i == 0 and x == -1):
            raise ValueError(f"'from' index {x} does not name an earlier layer (valid: -{i}..{i - 1})")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"'number' must be a positive integer, got {n!r}")
    if not isinstance(name, str) or name not in MODULE_NAMES:
        raise ValueError(f"unknown module {name!r}; known modules: {', '.join(MODULE_NAMES)}")
    if not isinstance(args, list):
        raise ValueError(f"'args' must be a list, got {args!r}")
    args = [_resolve_arg(a, nc, anchors) for a in args]
    n = max(round(n * gd), 1) if n > 1 else n
    # chs has the image channels first, so layer x's output is chs[x + 1] and -1 is the previous layer
    ch_of = lambda x: chs[x] if x < 0 else chs[x + 1]  # noqa: E731
    c1 = ch_of(froms[0])
    if name in _CONV_LIKE:
        if isinstance(f, list) and len(f) != 1:
            raise ValueError(f"{name} takes one input, got from = {f!r}")
        if not args or isinstance(args[0], bool) or not isinstance(args[0], int) or args[0] < 1:
            raise ValueError(f"{name} needs the output channels as its first argument, got args {args!r}")
        c2 = args[0] if args[0] == no else make_divisible(args[0] * gw, 8)
        ctor_args = [c1, c2, *args[1:]]
        if name in _WITH_REPEATS:
            ctor_args.insert(2, n)
            n = 1
        ctor = _CONV_LIKE[name]
    elif name == "Concat":
        c2 = sum(ch_of(x) for x in froms)
        ctor, ctor_args = Concat, args
    elif name in ("nn.Upsample", "Upsample"):
        c2 = c1
        ctor, ctor_args = nn.Upsample, args
    elif name == "Detect":
        if len(args) < 2:
            raise ValueError(f"Detect needs [nc, anchors], got args {args!r}")
        det_anchors = args[1]
        if isinstance(det_anchors, int) and not isinstance(det_anchors, bool):
            det_anchors = [list(range(2 * det_anchors))] * len(froms)
        ctor, ctor_args = Detect, [args[0], det_anchors, [ch_of(x) for x in froms], *args[2:]]
        c2 = 0
    elif name == "space_to_depth":  # the YOLOv5-SPD fork's module; its one argument is the cat dimension
        if args not in ([], [1]):
            raise ValueError(f"space_to_depth takes [1] (concatenation on channels), got {args!r}")
        c2 = 4 * c1
        ctor, ctor_args = SpaceToDepth, [2]
    else:  # SpaceToDepth: [scale]
        scale = args[0] if args else 2
        c2 = scale * scale * c1 if isinstance(scale, int) else c1
        ctor, ctor_args = SpaceToDepth, [scale]

    module = nn.Sequential(*(ctor(*ctor_args) for _ in range(n))) if n > 1 else ctor(*ctor_args)
    cls = type(module[0] if n > 1 else module)
    module.i, module.f = i, f
    module.type = f"{cls.__module__}.{cls.__qualname__}"
    module.np = count_parameters(module)
    return module, c2, f
