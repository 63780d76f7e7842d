"""YOLOv5 building blocks: Conv, Bottleneck, C3, SPP, SPPF, Focus and Concat.

Each block keeps the child names of YOLOv5 v6.0 (``models/common.py``), so state dicts use the
same keys (``cv1.conv.weight``, ``m.0.cv2.bn.running_var``, ``conv.conv.weight`` for Focus, ...)
and YOLOv5 weights load with ``strict=True``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...convert.fuse import fold_norm, spd_conv_to_strided
from ...layers.activations import ActLike
from ...layers.conv import ConvBnAct
from ...layers.fused import spd_strided_conv2d
from ...layers.space_to_depth import space_to_depth

__all__ = ["BN_EPS", "BN_MOMENTUM", "Bottleneck", "C3", "Concat", "Conv", "Focus", "SPP", "SPPF"]

# YOLOv5's initialize_weights() sets every BatchNorm2d to these (utils/torch_utils.py).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


class Conv(ConvBnAct):
    """YOLOv5's ``Conv``: ``Conv2d(k, s, padding=k//2, bias=False)`` -> BatchNorm -> SiLU.

    Args:
        c1: input channels.
        c2: output channels.
        k: square kernel size.
        s: stride.
        p: padding; ``None`` means ``k // 2``.
        g: groups.
        act: ``True`` for SiLU (the default), ``False``/``None`` for none, or any activation
            :func:`nostride.layers.make_act` accepts.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: ActLike = True) -> None:
        if not isinstance(k, int) or isinstance(k, bool):
            raise ValueError(f"Conv: kernel size must be an integer, got {k!r}")
        super().__init__(c1, c2, k, s, padding=p, groups=g, act=act, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM)


class Bottleneck(nn.Module):
    """1x1 Conv ``c1 -> int(c2*e)`` then 3x3 Conv ``-> c2``; residual if ``shortcut and c1 == c2``."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = bool(shortcut) and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    """CSP block with 3 convs: ``cv3(cat[m(cv1(x)), cv2(x)])``, ``m`` = n Bottlenecks (e=1.0)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the Bottleneck branch comes first in the concatenation (weights depend on this order)
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    """Spatial pyramid pooling (YOLOv3/v5 before v6.0): parallel max-pools of sizes ``k``."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: three chained ``MaxPool2d(k, 1, k//2)`` (equal to SPP with k, 2k-1, 3k-2)."""

    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth (scale 2) then ``Conv(4*c1, c2, k, s)``: SPD-Conv in YOLOv5's form.

    The channel order is YOLOv5's (and the paper's): ``x[::2, ::2]``, ``x[1::2, ::2]``,
    ``x[::2, 1::2]``, ``x[1::2, 1::2]``. Unlike YOLOv5's slicing, odd input sizes are zero-padded
    at the bottom/right instead of failing.
    """

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: ActLike = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)
        self.strided = False  # the training-time strided form (nostride.models.set_spd_form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "strided", False):
            c = self.conv
            y = spd_strided_conv2d(x, c.conv.weight, c.conv.bias, 2, c.conv.padding, who="Focus")
            return c.act(c.bn(y))
        return self.conv(space_to_depth(x, 2))

    def fuse_module(self) -> nn.Module:
        """Deployment form (hook of :func:`nostride.fuse`): one ``2k x 2k`` stride-2 conv + act.

        Same parameter count as the unfused conv with BN folded (``4*c1*k*k == c1*(2k)**2``), and
        the same function in eval mode. Falls back to BN folding only when the conv is strided,
        grouped or dilated (then no single strided conv equals it).
        """
        block = self.conv
        conv = fold_norm(block.conv, block.bn)
        if conv is None:
            return self
        try:
            fused = spd_conv_to_strided(conv, 2)
        except ValueError:
            return self  # nostride.fuse still folds the BN of self.conv (a ConvBnAct)
        fused.act = block.act
        return fused


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension`` (channels by default)."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
