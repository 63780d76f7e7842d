"""Downsampling operators and their registry: every way of halving a feature map that nostride trains,
converts to and compares.

``downsample_op(name)`` gives an operator's :class:`DownsampleOp` (formula, paper, cost relative to
the ``k x k`` stride-2 convolution it replaces, whether it can keep that layer's function) and
``build_downsample(name, in_channels, out_channels)`` a standalone block (norm and activation
included). ``list_downsample_ops()`` names them all. docs/downsampling.md has the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..conv import ConvBnAct
from ..spd_conv import SPDConv
from .blur import BlurConv, BlurPool2d, MaxBlurPool, binomial_filter
from .conv_equal import ConvEqual, strided_weight_to_spd
from .haar import HWD, HaarDownsample, haar_mixing, haar_weight_to_spd, spd_weight_to_haar
from .pool_conv import PoolConv, SpaceToDepthConvAfter
from .yolo_down import ADown, SCDown

__all__ = [
    "ADown", "BlurConv", "BlurPool2d", "ConvEqual", "DownsampleOp", "HWD", "HaarDownsample", "MaxBlurPool",
    "PoolConv", "SCDown", "SpaceToDepthConvAfter", "binomial_filter", "build_downsample", "downsample_op",
    "haar_mixing", "haar_weight_to_spd", "list_downsample_ops", "register_downsample_op", "spd_weight_to_haar",
    "strided_weight_to_spd",
]

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class DownsampleOp:
    """What the registry knows about one downsampling operator.

    Attributes:
        name: registry name (``"hwd"``).
        formula: what it computes, in one line.
        source: the paper (title, venue, year) or origin.
        params: parameters relative to the 3x3 stride-2 conv ``C -> C'`` it replaces (for large C).
        flops: FLOPs relative to that conv (convolutions and matrix products only).
        exact: it can keep a strided conv's function exactly (conversion with ``init="preserve"``).
        build: ``build(in_channels, out_channels, kernel_size=3, act="relu") -> nn.Module``.
    """

    name: str
    formula: str
    source: str
    params: str
    flops: str
    exact: bool
    build: Builder


_OPS: dict[str, DownsampleOp] = {}


def register_downsample_op(op: DownsampleOp) -> DownsampleOp:
    """Add ``op`` to the registry (a duplicate name raises ``ValueError``)."""
    if op.name in _OPS:
        raise ValueError(f"downsampling operator {op.name!r} is already registered")
    _OPS[op.name] = op
    return op


def list_downsample_ops() -> list[str]:
    """Registered operator names, in the order of the docs' table."""
    return list(_OPS)


def downsample_op(name: str) -> DownsampleOp:
    """The registry entry of ``name``; ``ValueError`` listing the known operators otherwise."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in _OPS:
        raise ValueError(f"unknown downsampling operator {name!r}; known: {', '.join(_OPS)}")
    return _OPS[key]


def build_downsample(name: str, in_channels: int, out_channels: int, kernel_size: int = 3,
                     act: object = "relu") -> nn.Module:
    """A standalone stride-2 block of operator ``name`` (norm and activation included)."""
    return downsample_op(name).build(in_channels, out_channels, kernel_size=kernel_size, act=act)


def _op(name: str, formula: str, source: str, params: str, flops: str, exact: bool, build: Builder) -> None:
    register_downsample_op(DownsampleOp(name, formula, source, params, flops, exact, build))


_SPD_PAPER = "Sunkara & Luo, \"No More Strided Convolutions or Pooling\", ECML PKDD 2022"
_BLUR_PAPER = "Zhang, \"Making Convolutional Networks Shift-Invariant Again\", ICML 2019"
_op("strided", "act(BN(conv_kxk(x, stride 2)))", "the baseline", "1", "1", True,
    lambda i, o, kernel_size=3, act="relu": ConvBnAct(i, o, kernel_size, 2, act=act))
_op("spd", "act(BN(conv_kxk(SPD(x))))", _SPD_PAPER, "4", "4", True,
    lambda i, o, kernel_size=3, act="relu": SPDConv(i, o, kernel_size, 2, act=act))
_op("conv-spd", "SPD(act(BN(conv_kxk(x) -> C'/4)))", "YOLOv5-SPD's released order (" + _SPD_PAPER + ")",
    "1/4", "1", False,
    lambda i, o, kernel_size=3, act="relu": SpaceToDepthConvAfter(i, o, kernel_size, act=act))
_op("conv-equal", "act(BN(conv_2kx2k(pad(x), stride 2)))  (= SPD + k x k conv)",
    "SPD-Conv as one strided conv (YOLOv5 v6.0's 6x6/2 stem)", "4", "4", True,
    lambda i, o, kernel_size=3, act="relu": ConvEqual(i, o, kernel_size, 2, act=act))
_op("blurpool", "Blur3_2(act(BN(conv_kxk(x, stride 1))))", _BLUR_PAPER, "1", "4", False,
    lambda i, o, kernel_size=3, act="relu": BlurConv(i, o, kernel_size, 3, act=act))
_op("blurpool5", "Blur5_2(act(BN(conv_kxk(x, stride 1))))", _BLUR_PAPER, "1", "4", False,
    lambda i, o, kernel_size=3, act="relu": BlurConv(i, o, kernel_size, 5, act=act))
_op("hwd", "act(BN(conv_1x1(Haar(x))))",
    "Xu et al., \"Haar wavelet downsampling\", Pattern Recognition 2023", "4/9", "4/9", False,
    lambda i, o, kernel_size=3, act="relu": HWD(i, o, act=act))
_op("adown", "cat(CBS_3x3/2(a1), CBS_1x1(maxpool_3/2(a2))), a = avgpool_2/1(x)",
    "Wang et al., \"YOLOv9: Learning What You Want to Learn Using Programmable Gradient Information\", "
    "ECCV 2024", "5/18", "5/18", False,
    lambda i, o, kernel_size=3, act="silu": ADown(i, o))
_op("scdown", "BN(dwconv_3x3/2(CBS_1x1(x)))",
    "Wang et al., \"YOLOv10: Real-Time End-to-End Object Detection\", NeurIPS 2024", "1/9 + 1/C", "4/9 + 1/C",
    False, lambda i, o, kernel_size=3, act="silu": SCDown(i, o, kernel_size))
_op("avgpool-conv", "act(BN(conv_kxk(avgpool_2x2/2(x))))", "ResNet-D's shortcut (He et al., CVPR 2019)",
    "1", "1", False,
    lambda i, o, kernel_size=3, act="relu": PoolConv(i, o, kernel_size, "avg", act=act))
_op("maxpool-conv", "act(BN(conv_kxk(maxpool_2x2/2(x))))", "VGG-style pooling (Simonyan & Zisserman, ICLR 2015)",
    "1", "1", False,
    lambda i, o, kernel_size=3, act="relu": PoolConv(i, o, kernel_size, "max", act=act))
