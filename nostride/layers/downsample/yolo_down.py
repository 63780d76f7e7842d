"""ADown (YOLOv9) and SCDown (YOLOv10): the downsampling blocks of two recent YOLO generations,
written from their papers' definitions.

ADown (Wang, Yeh, Liao, "YOLOv9: Learning What You Want to Learn Using Programmable Gradient
Information", ECCV 2024), ``C -> C'`` (both even)::

    x      = avgpool(x, kernel 2, stride 1)                 # H -> H - 1
    x1, x2 = x[:, :C/2], x[:, C/2:]
    y1     = SiLU(BN(conv3x3(x1, stride 2, padding 1)))     # C/2 -> C'/2
    y2     = SiLU(BN(conv1x1(maxpool(x2, 3, stride 2, padding 1))))
    y      = cat(y1, y2)                                    # floor(H/2) for odd H, H/2 for even H

A side of one pixel, where the 2x2 pool has nothing to average, is its own average (replicated
once): the output keeps that one pixel, as a 3x3 stride-2 conv's does.

SCDown (Wang et al., "YOLOv10: Real-Time End-to-End Object Detection", NeurIPS 2024), spatial-channel
decoupled downsampling::

    y = BN(depthwise_conv_kxk(SiLU(BN(conv1x1(x))), stride 2))     # C -> C' (pointwise), then k x k / 2

Costs relative to a 3x3 stride-2 conv ``C -> C'`` (output ``H' x W'``): ADown 5/18 of its parameters and
FLOPs; SCDown ``1/9 + 1/C`` of its parameters and ``4/9 + 1/C`` of its FLOPs (the 1x1 conv runs at the
input resolution).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActLike
from ..conv import ConvBnAct

__all__ = ["ADown", "SCDown"]


class ADown(nn.Module):
    """YOLOv9's ADown (see the module docstring for the formula); ``in_channels`` and
    ``out_channels`` must be even (the two branches each take half).

    Args:
        in_channels, out_channels: channels (even).
        act: activation of both conv blocks (SiLU in YOLOv9).
    """

    def __init__(self, in_channels: int, out_channels: int, act: ActLike = "silu") -> None:
        super().__init__()
        if in_channels % 2 or out_channels % 2:
            raise ValueError(f"ADown splits channels in halves: in_channels and out_channels must be even, "
                             f"got {in_channels} -> {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        half_in, half_out = in_channels // 2, out_channels // 2
        self.cv1 = ConvBnAct(half_in, half_out, 3, 2, 1, act=act)
        self.cv2 = ConvBnAct(half_in, half_out, 1, 1, 0, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < 2 or x.shape[-1] < 2:
            # a side of one pixel (the last stage of a small image): YOLOv9's 2x2 pool needs two, so
            # that side is its own average (replicated once), and the output keeps one pixel, as a
            # 3x3 stride-2 conv's would
            x = F.pad(x, (0, int(x.shape[-1] < 2), 0, int(x.shape[-2] < 2)), mode="replicate")
        x = F.avg_pool2d(x, 2, 1, 0, False, True)
        x1, x2 = x.chunk(2, 1)
        return torch.cat((self.cv1(x1), self.cv2(F.max_pool2d(x2, 3, 2, 1))), 1)


class SCDown(nn.Module):
    """YOLOv10's SCDown: pointwise conv-BN-SiLU ``C -> C'``, then depthwise ``k x k`` stride-``s`` conv-BN.

    Args:
        in_channels, out_channels: channels.
        kernel_size: of the depthwise conv (3 in YOLOv10).
        stride: of the depthwise conv (2).
        act: activation after the pointwise conv (SiLU).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 2,
                 act: ActLike = "silu") -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.cv1 = ConvBnAct(in_channels, out_channels, 1, 1, act=act)
        self.cv2 = ConvBnAct(out_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=out_channels,
                             act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))
