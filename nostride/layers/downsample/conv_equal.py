"""Conv-equal: the one strided convolution that computes SPD-Conv's function class (the null arm).

Space-to-depth (block ``s``) followed by a stride-1 ``k x k`` convolution with "same" padding ``k//2``
is one ``s*k x s*k`` convolution with stride ``s`` and padding ``s*(k//2)`` of the input zero-padded
at the bottom/right to a multiple of ``s``:

    W_eq[o, i, s*u + r, s*v + c] = W_spd[o, (r + s*c)*C + i, u, v]

(``r``/``c`` the row/column offset inside a block). For ``k = 3, s = 2`` this is the 6x6 stride-2
convolution with padding 2 that YOLOv5 v6.0 put in place of its Focus layer. Same parameter count
as SPD-Conv and the same fan-in (``s*s*k*k*C``), so PyTorch's default initialisation draws both from
the same distribution; the two parametrisations map onto each other exactly
(:func:`spd_weight_to_strided`, :func:`strided_weight_to_spd`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActLike, make_act
from ..fused import FusedSPDConv, spd_pad, spd_weight_to_strided
from ._fold import fold_norm

__all__ = ["ConvEqual", "strided_weight_to_spd", "spd_weight_to_strided"]


def strided_weight_to_spd(weight: torch.Tensor, block: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """Inverse of :func:`~nostride.layers.spd_weight_to_strided`: ``(O, Cg, sh*kh, sw*kw)`` ->
    ``(O, sh*sw*Cg, kh, kw)``, ``W_spd[o, (r + sh*c)*Cg + i, u, v] = W_eq[o, i, sh*u + r, sw*v + c]``."""
    sh, sw = block
    out_ch, cg, kh_full, kw_full = weight.shape
    if kh_full % sh or kw_full % sw:
        raise ValueError(f"strided_weight_to_spd: kernel {kh_full}x{kw_full} is not a multiple of the block {block}")
    kh, kw = kh_full // sh, kw_full // sw
    # (O, Cg, kh, r, kw, c) -> (O, c, r, Cg, kh, kw)
    w = weight.reshape(out_ch, cg, kh, sh, kw, sw).permute(0, 5, 3, 1, 2, 4)
    return w.reshape(out_ch, sh * sw * cg, kh, kw)


class ConvEqual(nn.Module):
    """Zero-pad bottom/right to a multiple of ``scale`` -> ``scale*k x scale*k`` conv, stride ``scale``
    -> BatchNorm -> activation. The exact strided form of :class:`~nostride.layers.SPDConv`.

    Formula: ``y = act(BN(conv2d(pad(x), W, stride=s, padding=s*(k//2))))``, ``W`` of shape
    ``(C_out, C_in, s*k, s*k)``; output ``ceil(H/s) x ceil(W/s)`` like SPD-Conv.

    Paper: the SPD-Conv function class of Sunkara & Luo, "No More Strided Convolutions or Pooling",
    ECML PKDD 2022, written as one convolution (YOLOv5 v6.0's 6x6/2 stem, Jocher et al. 2021).

    Cost relative to the ``k x k`` stride-``s`` conv it replaces: ``s*s`` times the parameters and
    FLOPs (4x for ``s = 2``), exactly SPD-Conv's.

    Args:
        in_channels, out_channels: channels.
        kernel_size: ``k``, the kernel of the SPD-Conv this equals (odd); the conv has ``s*k``.
        scale: the stride ``s``.
        norm, act, bias: as :class:`~nostride.layers.SPDConv`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, scale: int = 2,
                 norm: bool = True, act: ActLike = "relu", bias: bool | None = None) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"ConvEqual needs the odd kernel_size of the SPD-Conv it equals, got {kernel_size}")
        self.scale = scale
        self.kernel_size = kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, scale * kernel_size, stride=scale,
                              padding=scale * (kernel_size // 2), bias=(not norm) if bias is None else bias)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = spd_pad(x, (self.scale, self.scale), True, "ConvEqual")
        return self.act(self.bn(self.conv(x)))

    def fuse_module(self) -> nn.Module:
        """Hook of :func:`nostride.fuse`: BN folded into the strided conv (already the deployment form)."""
        conv = fold_norm(self.conv, self.bn)
        return self if conv is None else FusedSPDConv(conv, self.scale, self.act)

    @classmethod
    def from_spd(cls, spd: nn.Module) -> "ConvEqual":
        """The ConvEqual computing exactly what ``spd`` (an :class:`~nostride.layers.SPDConv`) computes."""
        conv = spd.conv
        new = cls(spd.in_channels, spd.out_channels, spd.kernel_size, spd.scale, norm=False, act=None,
                  bias=conv.bias is not None)
        new.bn, new.act = spd.bn, spd.act
        with torch.no_grad():
            new.conv.weight.copy_(spd_weight_to_strided(conv.weight, (spd.scale, spd.scale)))
            if conv.bias is not None:
                new.conv.bias.copy_(conv.bias)
        return new.to(conv.weight.device)

    def to_spd(self) -> nn.Module:
        """The :class:`~nostride.layers.SPDConv` computing exactly what this layer computes."""
        from ..spd_conv import SPDConv

        conv = self.conv
        spd = SPDConv(conv.in_channels, conv.out_channels, self.kernel_size, self.scale, norm=False, act=None,
                      bias=conv.bias is not None)
        spd.bn, spd.act = self.bn, self.act
        with torch.no_grad():
            spd.conv.weight.copy_(strided_weight_to_spd(conv.weight, (self.scale, self.scale)))
            if conv.bias is not None:
                spd.conv.bias.copy_(conv.bias)
        return spd.to(conv.weight.device)


def conv_equal2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: int,
                 padding: int) -> torch.Tensor:
    """Functional :class:`ConvEqual` (no norm/act): pad to a multiple of ``scale``, then the strided conv."""
    return F.conv2d(spd_pad(x, (scale, scale)), weight, bias, stride=scale, padding=padding)
