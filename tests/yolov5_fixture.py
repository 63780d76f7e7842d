"""Write YOLOv5-format ``.pt`` files for tests and docs, without the YOLOv5 code.

The classes below reproduce what a real ultralytics/yolov5 v6.x/v7.0 (or YOLOv5-SPD fork)
checkpoint pickles: the same class paths (``models.yolo.Model``, ``models.common.Conv``, ...), the
same attribute names and children, and a forward with the reference semantics, written
independently of nostride from the facts in shared/reference/yolov5-reference.md (sections 1, 8, 9).
They are registered as the modules ``models``, ``models.yolo`` and ``models.common`` only while a
file is written (pickle needs to find them there), then removed again, so the files really are
readable only without this code.

Typical use::

    from yolov5_fixture import build_reference_model, v6_cfg, write_yolov5_checkpoint
    ref = build_reference_model(v6_cfg(nc=3))          # float32, eval, random weights
    write_yolov5_checkpoint(tmp_path / "best.pt", ref)  # {'epoch': -1, 'model': ref.half(), ...}
"""

from __future__ import annotations

import contextlib
import copy
import math
import pathlib
import sys
import types
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

__all__ = [
    "v6_cfg",
    "v5_cfg",
    "spd_cfg",
    "build_reference_model",
    "write_yolov5_checkpoint",
    "reference_modules",
]

ANCHORS_P345 = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


# ------------------------------------------------------------------ the definition dicts (yaml)
def v6_cfg(nc: int = 3, depth_multiple: float = 0.33, width_multiple: float = 0.125) -> dict[str, Any]:
    """The v6.0 yolov5 layout (yolov5s.yaml with other multiples), as ``yaml.safe_load`` returns it."""
    return {
        "nc": nc,
        "depth_multiple": depth_multiple,
        "width_multiple": width_multiple,
        "anchors": copy.deepcopy(ANCHORS_P345),
        "backbone": [
            [-1, 1, "Conv", [64, 6, 2, 2]],
            [-1, 1, "Conv", [128, 3, 2]],
            [-1, 3, "C3", [128]],
            [-1, 1, "Conv", [256, 3, 2]],
            [-1, 6, "C3", [256]],
            [-1, 1, "Conv", [512, 3, 2]],
            [-1, 9, "C3", [512]],
            [-1, 1, "Conv", [1024, 3, 2]],
            [-1, 3, "C3", [1024]],
            [-1, 1, "SPPF", [1024, 5]],
        ],
        "head": [
            [-1, 1, "Conv", [512, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],
            [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [256, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]],
            [-1, 3, "C3", [256, False]],
            [-1, 1, "Conv", [256, 3, 2]],
            [[-1, 14], 1, "Concat", [1]],
            [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [512, 3, 2]],
            [[-1, 10], 1, "Concat", [1]],
            [-1, 3, "C3", [1024, False]],
            [[17, 20, 23], 1, "Detect", ["nc", "anchors"]],
        ],
    }


def v5_cfg(nc: int = 3, depth_multiple: float = 0.33, width_multiple: float = 0.125) -> dict[str, Any]:
    """The v5.0 yolov5s.yaml layout (Focus stem, SPP before the last backbone C3)."""
    cfg = v6_cfg(nc, depth_multiple, width_multiple)
    cfg["backbone"] = [
        [-1, 1, "Focus", [64, 3]],
        [-1, 1, "Conv", [128, 3, 2]],
        [-1, 3, "C3", [128]],
        [-1, 1, "Conv", [256, 3, 2]],
        [-1, 9, "C3", [256]],
        [-1, 1, "Conv", [512, 3, 2]],
        [-1, 9, "C3", [512]],
        [-1, 1, "Conv", [1024, 3, 2]],
        [-1, 1, "SPP", [1024, [5, 9, 13]]],
        [-1, 3, "C3", [1024, False]],
    ]
    return cfg


def spd_cfg(nc: int = 3, depth_multiple: float = 0.33, width_multiple: float = 0.125) -> dict[str, Any]:
    """The YOLOv5-SPD fork layout (models/space_depth_*.yaml): Focus stem, stride-1 Conv + SPD."""
    return {
        "nc": nc,
        "depth_multiple": depth_multiple,
        "width_multiple": width_multiple,
        "anchors": copy.deepcopy(ANCHORS_P345),
        "backbone": [
            [-1, 1, "Focus", [64, 3]],
            [-1, 1, "Conv", [128, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 3, "C3", [128]],
            [-1, 1, "Conv", [256, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 6, "C3", [256]],
            [-1, 1, "Conv", [512, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 9, "C3", [512]],
            [-1, 1, "Conv", [1024, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [-1, 3, "C3", [1024]],
            [-1, 1, "SPPF", [1024, 5]],
        ],
        "head": [
            [-1, 1, "Conv", [512, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 9], 1, "Concat", [1]],
            [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [256, 1, 1]],
            [-1, 1, "nn.Upsample", ["None", 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]],
            [-1, 3, "C3", [256, False]],
            [-1, 1, "Conv", [256, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [[-1, 18], 1, "Concat", [1]],
            [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [512, 3, 1]],
            [-1, 1, "space_to_depth", [1]],
            [[-1, 14], 1, "Concat", [1]],
            [-1, 3, "C3", [1024, False]],
            [[21, 25, 29], 1, "Detect", ["nc", "anchors"]],
        ],
    }


# ------------------------------------------------------------------ reference layer classes
def _parity_cat(x: torch.Tensor) -> torch.Tensor:
    # (row, col) parity blocks (0,0), (1,0), (0,1), (1,1) on channels
    return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class Conv(nn.Module):
    """Conv2d(bias=False) + BatchNorm2d + act; ``default_act`` shared (v7) or None (v6: new SiLU)."""

    __module__ = "models.common"
    default_act: nn.Module | None = None

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2 if p is None else p, groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        if act is True:
            act = Conv.default_act if Conv.default_act is not None else nn.SiLU()
        self.act = act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    __module__ = "models.common"

    def __init__(self, c1, c2, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    __module__ = "models.common"

    def __init__(self, c1, c2, n=1, shortcut=True, g=1, e=0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPPF(nn.Module):
    __module__ = "models.common"

    def __init__(self, c1, c2, k=5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class SPP(nn.Module):
    __module__ = "models.common"

    def __init__(self, c1, c2, k=(5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k])

    def forward(self, x):
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Focus(nn.Module):
    __module__ = "models.common"

    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x):
        return self.conv(_parity_cat(x))


class space_to_depth(nn.Module):  # noqa: N801 - the fork's class name
    __module__ = "models.common"

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return _parity_cat(x)


class Concat(nn.Module):
    __module__ = "models.common"

    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Detect(nn.Module):
    __module__ = "models.yolo"
    stride = None
    onnx_dynamic = False

    def __init__(self, nc=80, anchors=(), ch=(), inplace=True):
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.zeros(1)] * self.nl
        self.anchor_grid = [torch.zeros(1)] * self.nl
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x):
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
                grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
                anchor_px = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2)
                y = x[i].sigmoid()
                xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.stride[i]
                wh = (y[..., 2:4] * 2) ** 2 * anchor_px
                z.append(torch.cat((xy, wh, y[..., 4:]), -1).view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)


_LAYERS = {
    "Conv": Conv, "C3": C3, "Bottleneck": Bottleneck, "SPPF": SPPF, "SPP": SPP, "Focus": Focus,
    "Concat": Concat, "space_to_depth": space_to_depth, "Detect": Detect, "nn.Upsample": nn.Upsample,
}
_CHANNEL_SCALED = (Conv, Bottleneck, SPP, SPPF, Focus, C3)


def _parse_model(d: dict, ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = len(anchors[0]) // 2 if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    names = {"None": None, "nc": nc, "anchors": anchors}
    layers, save, c2 = [], [], ch[-1]
    for i, (f, n, m_name, args) in enumerate(d["backbone"] + d["head"]):
        m = _LAYERS[m_name]
        args = [names.get(a, a) if isinstance(a, str) else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in _CHANNEL_SCALED:
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = math.ceil(c2 * gw / 8) * 8
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Detect:
            args.append([ch[x] for x in f])
            if isinstance(args[1], int):  # anchors given as a count: placeholders until autoanchor
                args[1] = [list(range(args[1] * 2))] * len(f)
        elif m is space_to_depth:
            c2 = 4 * ch[f]
        else:
            c2 = ch[f]
        m_ = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        m_.i, m_.f, m_.type = i, f, f"{m.__module__}.{m.__qualname__}"
        m_.np = sum(p.numel() for p in m_.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(m_)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


class Model(nn.Module):
    __module__ = "models.yolo"

    def __init__(self, cfg: dict, ch: int = 3):
        super().__init__()
        self.yaml = copy.deepcopy(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        self.model, self.save = _parse_model(copy.deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)
        m = self.model[-1]
        m.inplace = self.inplace
        s = 64  # YOLOv5 probes at 256; any multiple of 32 gives the same strides, 64 is faster
        m.stride = torch.tensor([s / x.shape[-2] for x in self.forward(torch.zeros(1, ch, s, s))])
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        for mi, st in zip(m.m, m.stride):  # bias init (reference section 1)
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / st) ** 2)
            b.data[:, 5:] += math.log(0.6 / (m.nc - 0.99))
            mi.bias = nn.Parameter(b.view(-1), requires_grad=True)
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.eps, mod.momentum = 1e-3, 0.03
            elif isinstance(mod, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6)):
                mod.inplace = True

    def forward(self, x):
        y = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x if m.i in self.save else None)
        return x


class DetectionModel(Model):  # v7.0 name (Model is an alias of it there)
    __module__ = "models.yolo"


# ------------------------------------------------------------------ building and writing
@torch.no_grad()
def build_reference_model(
    cfg: dict,
    *,
    act: nn.Module | None = None,
    v7: bool = False,
    names: list[str] | None = None,
    seed: int = 0,
    image_size: int = 96,
    anchor_grid_buffer: bool = False,
) -> Model:
    """A reference model with random weights and realistic BN statistics, rounded to float16.

    Args:
        cfg: a definition dict (:func:`v6_cfg`, :func:`spd_cfg`).
        act: activation module shared by every Conv (as v7's ``Conv.default_act``); default SiLU.
        v7: build a ``DetectionModel`` (v7.0 class name) instead of ``Model``.
        names: class names (default ``["class0", ...]``).
        seed: RNG seed for the weights.
        image_size: size of the random batch that calibrates BatchNorm running statistics.
        anchor_grid_buffer: register Detect's ``anchor_grid`` (pixel anchors) as a buffer, as
            YOLOv5 v5.x did (v6.0 made it a plain list).

    Returns:
        A float32 model in eval mode whose weights are exactly representable in float16, so the
        ``.half()`` copy a checkpoint stores holds the same numbers.
    """
    gen = torch.Generator().manual_seed(seed)
    Conv.default_act = act
    try:
        model = (DetectionModel if v7 else Model)(cfg)
    finally:
        Conv.default_act = None
    names = list(names) if names is not None else [f"class{i}" for i in range(cfg["nc"])]
    model.names = dict(enumerate(names)) if v7 else names  # v7.0 stores names as {index: name}
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            fan_in = mod.weight[0].numel()
            if mod.bias is None:  # a Conv's conv
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (1.5 / math.sqrt(fan_in)))
            else:  # a Detect output conv: logits of order 1, so sigmoids do not saturate
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) * (0.3 / math.sqrt(fan_in)))
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.5)
        elif isinstance(mod, nn.BatchNorm2d):
            mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) + 0.5)
            mod.bias.copy_(torch.rand(mod.bias.shape, generator=gen) - 0.5)
            mod.reset_running_stats()
            mod.momentum = None  # cumulative average: running stats = this batch's stats
    if anchor_grid_buffer:
        det = model.model[-1]
        del det.anchor_grid
        det.register_buffer("anchor_grid", (det.anchors * det.stride.view(-1, 1, 1)).view(det.nl, 1, -1, 1, 1, 2))
    model.train()
    model(torch.randn(4, cfg.get("ch", 3), image_size, image_size, generator=gen))
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = 0.03
            mod.running_mean.add_(torch.randn(mod.running_mean.shape, generator=gen) * 0.05)
    return model.half().float().eval()


@contextlib.contextmanager
def reference_modules() -> Iterator[None]:
    """Register ``models``, ``models.yolo``, ``models.common`` (pickle looks classes up there)."""
    names = ("models", "models.yolo", "models.common")
    clash = [n for n in names if n in sys.modules]
    if clash:
        raise RuntimeError(f"modules {clash} already imported; cannot stand in for the YOLOv5 code")
    pkg = types.ModuleType("models")
    pkg.__path__ = []
    yolo = types.ModuleType("models.yolo")
    common = types.ModuleType("models.common")
    yolo.Model, yolo.DetectionModel, yolo.Detect = Model, DetectionModel, Detect
    for cls in (Conv, C3, Bottleneck, SPPF, SPP, Focus, Concat, space_to_depth):
        setattr(common, cls.__name__, cls)
    pkg.yolo, pkg.common = yolo, common
    sys.modules.update({"models": pkg, "models.yolo": yolo, "models.common": common})
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)


def write_yolov5_checkpoint(
    path: str | pathlib.Path,
    model: Model,
    *,
    ema: Model | None = None,
    v7: bool = False,
    hyp: dict | None = None,
    extra: dict | None = None,
) -> pathlib.Path:
    """Write ``model`` the way YOLOv5 ``train.py`` does (float16 whole-module pickle).

    v6 layout: ``{epoch, best_fitness, model, ema, updates, optimizer, wandb_id}``; with ``v7`` the
    ``opt``, ``git`` and ``date`` entries are added. With ``ema`` the file looks like a ``last.pt``
    mid-training (ema set, an optimizer state dict), otherwise like a released/stripped file.
    ``extra`` entries are added to the dict as given (for crafted files).
    """
    path = pathlib.Path(path)
    m = copy.deepcopy(model).half()
    m.nc = len(model.names)
    if hyp is not None:
        m.hyp = dict(hyp)
        m.class_weights = torch.ones(m.nc)
    ckpt: dict[str, Any] = {
        "epoch": -1,
        "best_fitness": np.array([0.4242]),
        "model": m,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "wandb_id": None,
    }
    if ema is not None:
        e = copy.deepcopy(ema).half()
        e.nc, e.hyp = m.nc, getattr(m, "hyp", None)
        params = [p for p in model.parameters()]
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.937, nesterov=True)
        ckpt.update(epoch=7, ema=e, updates=1234, optimizer=opt.state_dict())
    if v7:
        ckpt["opt"] = {
            "weights": "yolov5s.pt",
            "cfg": "models/yolov5s.yaml",
            "hyp": dict(hyp or {}),
            "epochs": 100,
            "save_dir": pathlib.PosixPath("runs/train/exp"),
            "noautoanchor": False,
        }
        ckpt["git"] = {"remote": "https://github.com/ultralytics/yolov5", "branch": "master", "commit": "915bbf29"}
        ckpt["date"] = "2026-11-26T12:00:00.000000"
    ckpt.update(extra or {})
    with reference_modules():
        torch.save(ckpt, path)
    return path
