"""Pool-then-conv downsampling: 2x2 average- or max-pool with stride 2, then a stride-1 conv.

    y = act(BN(conv_k(pool_2x2/2(x))))          (ceil mode: the output is ceil(H/2) x ceil(W/2))

The classic alternatives to a strided convolution (average pooling as in ResNet-D's shortcut,
He et al., "Bag of Tricks for Image Classification with Convolutional Neural Networks", CVPR 2019;
max pooling as in VGG, Simonyan & Zisserman, ICLR 2015). Cost relative to the ``k x k`` stride-2 conv:
the same parameters and conv FLOPs (the conv runs at the output resolution); the pool adds none.
Also :class:`SpaceToDepthConvAfter` ("conv-spd"): the released YOLOv5-SPD order, a stride-1 conv then
space-to-depth.
"""

from __future__ import annotations

import torch
from torch import nn

from ..activations import ActLike
from ..conv import ConvBnAct
from ..space_to_depth import SpaceToDepth

__all__ = ["PoolConv", "SpaceToDepthConvAfter"]

_POOLS = ("avg", "max")


class PoolConv(nn.Module):
    """``pool 2x2/2`` (``"avg"`` or ``"max"``, ceil mode) -> ``k x k`` stride-1 conv -> BN -> act.

    Args:
        in_channels, out_channels, kernel_size: of the conv ("same" padding).
        pool: ``"avg"`` or ``"max"``.
        groups, norm, act, bias: of the conv block (``norm=False`` gives a biased conv by default).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, pool: str = "avg",
                 groups: int = 1, norm: bool = True, act: ActLike = "relu", bias: bool | None = None) -> None:
        super().__init__()
        if pool not in _POOLS:
            raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
        self.pool = (nn.AvgPool2d(2, 2, ceil_mode=True) if pool == "avg" else nn.MaxPool2d(2, 2, ceil_mode=True))
        self.conv = ConvBnAct(in_channels, out_channels, kernel_size, 1, groups=groups, norm=norm, act=act)
        if bias is not None and (self.conv.conv.bias is not None) != bias:
            self.conv.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, groups=groups,
                                       bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class SpaceToDepthConvAfter(nn.Module):
    """The released YOLOv5-SPD order: ``k x k`` stride-1 conv ``C -> C'/4`` -> BN -> act -> SPD(2) (``C'``
    channels, ``out_channels`` a multiple of 4). Cost relative to the ``k x k`` stride-2 conv ``C -> C'``:
    1/4 of its parameters and the same FLOPs (the conv runs at the input resolution).
    (YOLOv5-SPD's own models keep ``4 C'`` channels and widen the next block instead:
    ``create_model("yolov5n_spd")``.)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, norm: bool = True,
                 act: ActLike = "relu", groups: int = 1) -> None:
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"conv-spd needs out_channels divisible by 4 (space-to-depth quadruples them), "
                             f"got {out_channels}")
        self.conv = ConvBnAct(in_channels, out_channels // 4, kernel_size, 1, groups=groups, norm=norm, act=act)
        self.spd = SpaceToDepth(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spd(self.conv(x))
