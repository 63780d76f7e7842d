"""HWD: Haar wavelet downsampling (Xu et al., "Haar wavelet downsampling: A simple but effective
downsampling module for semantic segmentation", Pattern Recognition 143, 2023).

One level of the orthonormal 2-D Haar transform splits each channel into four half-resolution
sub-bands; they are concatenated and mixed by a 1x1 conv-BN-ReLU. For the 2x2 block
``[[a, b], [c, d]]`` (rows 2i, 2i+1; columns 2j, 2j+1):

    LL = (a + b + c + d) / 2      LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2      HH = (a - b - c + d) / 2

(the detail bands' order and signs vary between wavelet libraries; the 1x1 conv absorbs both).
Inputs of odd size are zero-padded at the bottom/right, like space-to-depth, so the output is
``ceil(H/2) x ceil(W/2)``. Written with additions only, so it runs in any dtype (half, bfloat16,
AMP): the public implementation calls a wavelet library whose filters are float32 and fails in half.

The transform is space-to-depth followed by a fixed orthogonal 4x4 mixing ``M`` of the four blocks
(``M = H (x) H``, ``H = [[1, 1], [1, -1]] / sqrt 2``; ``M = M^T = M^-1``), so HWD + 1x1 conv equals
SPD + 1x1 conv with weight ``W_spd = W_hwd (M (x) I_C)`` — and both are one 2x2 stride-2 conv
(:func:`nostride.fuse` folds HWD into it).
"""

from __future__ import annotations

import torch
from torch import nn

from ..activations import ActLike, make_act
from ..fused import FusedSPDConv, spd_weight_to_strided
from ..space_to_depth import space_to_depth
from ._fold import fold_norm

__all__ = ["HaarDownsample", "HWD", "haar_mixing", "haar_weight_to_spd", "spd_weight_to_haar"]


def haar_mixing(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``M[band, block]``: band (LL, LH, HL, HH) as a combination of the space-to-depth blocks in the
    paper's order (f(0,0)=a, f(1,0)=c, f(0,1)=b, f(1,1)=d). Orthogonal and symmetric."""
    #                      a     c     b     d
    m = torch.tensor([[1.0, 1.0, 1.0, 1.0],     # LL
                      [1.0, -1.0, 1.0, -1.0],   # LH = a + b - c - d
                      [1.0, 1.0, -1.0, -1.0],   # HL = a - b + c - d
                      [1.0, -1.0, -1.0, 1.0]])  # HH
    return (m / 2).to(dtype)


def haar_weight_to_spd(weight: torch.Tensor) -> torch.Tensor:
    """``(O, 4C, 1, 1)`` weight of a 1x1 conv over Haar bands -> the equal one over space-to-depth blocks."""
    o, c4 = weight.shape[:2]
    w = weight.reshape(o, 4, c4 // 4, *weight.shape[2:])
    return torch.einsum("okc...,kb->obc...", w, haar_mixing(weight.dtype).to(weight.device)).reshape(weight.shape)


def spd_weight_to_haar(weight: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_weight_to_spd` (``M`` is its own inverse)."""
    return haar_weight_to_spd(weight)


class HaarDownsample(nn.Module):
    """One level of the 2-D Haar transform: (N, C, H, W) -> (N, 4C, ceil(H/2), ceil(W/2)), bands
    LL, LH, HL, HH as channel blocks (each block holds the C channels). No parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # space-to-depth pads odd sizes (also in a recorded graph: ONNX, tracing) and orders the blocks
        # f(0,0)=a, f(1,0)=c, f(0,1)=b, f(1,1)=d
        a, c, b, d = space_to_depth(x, 2).chunk(4, dim=1)
        s_ab, s_cd, d_ab, d_cd = a + b, c + d, a - b, c - d
        return torch.cat([s_ab + s_cd, s_ab - s_cd, d_ab + d_cd, d_ab - d_cd], dim=1) * 0.5


class HWD(nn.Module):
    """Haar wavelet downsampling: ``act(BN(conv1x1(cat(LL, LH, HL, HH))))``.

    Paper: Xu, Zhang, Chen, Liu, Yang, "Haar wavelet downsampling: A simple but effective
    downsampling module for semantic segmentation", Pattern Recognition, 2023.

    Cost relative to a 3x3 stride-2 conv ``C -> C'``: a 1x1 conv ``4C -> C'`` at the output
    resolution, 4/9 of its parameters and FLOPs (plus the additions of the transform).

    Args:
        in_channels, out_channels: channels.
        norm: BatchNorm after the 1x1 conv (the paper's); ``False`` gives a biased conv.
        act: activation (ReLU in the paper).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: bool = True, act: ActLike = "relu",
                 bias: bool | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.haar = HaarDownsample()
        self.conv = nn.Conv2d(4 * in_channels, out_channels, 1, bias=(not norm) if bias is None else bias)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(self.haar(x))))

    def fuse_module(self) -> nn.Module:
        """Hook of :func:`nostride.fuse`: the equal 2x2 stride-2 conv (BN folded) -> act."""
        conv = self.conv
        strided = nn.Conv2d(conv.in_channels // 4, conv.out_channels, 2, stride=2, bias=conv.bias is not None,
                            device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            strided.weight.copy_(spd_weight_to_strided(haar_weight_to_spd(conv.weight), (2, 2)))
            if conv.bias is not None:
                strided.bias.copy_(conv.bias)
        folded = fold_norm(strided, self.bn)
        if folded is None:
            return self
        return FusedSPDConv(folded, 2, self.act)

