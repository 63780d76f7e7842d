"""SPD-Conv: space-to-depth followed by a non-strided convolution (the paper's section 3)."""

from __future__ import annotations

import torch
from torch import nn

from .activations import ActLike, make_act
from .fused import spd_strided_conv2d
from .space_to_depth import SpaceToDepth

__all__ = ["SPDConv"]


def _channels(name: str, value: object) -> int:
    """A channel count: a whole number >= 1 (``TypeError`` for other types, ``ValueError`` below 1)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"SPDConv {name} must be a whole number of channels, got {value!r}")
    value = int(value.__index__())
    if value < 1:
        raise ValueError(f"SPDConv {name} must be at least 1, got {value}")
    return value


class SPDConv(nn.Module):
    """SPD(scale) -> stride-1 ``Conv2d`` with "same" padding -> BatchNorm -> activation.

    Downsamples by ``scale`` like a strided convolution, but every input pixel reaches the
    convolution: (N, C_in, H, W) -> (N, C_out, ceil(H/scale), ceil(W/scale)).

    Args:
        in_channels: channels of the input *before* space-to-depth (the convolution sees
            ``scale**2 * in_channels``).
        out_channels: output channels.
        kernel_size: odd kernel size of the non-strided convolution.
        scale: space-to-depth block size (the downsampling factor).
        norm: add ``BatchNorm2d`` after the convolution (the conv then has no bias).
        act: activation (name, module, module class, or ``None`` for none); default ReLU.
        pad: zero-pad inputs whose size is not divisible by ``scale`` (default) or raise.
        bias: force a conv bias on or off; default ``not norm``.
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum.

    Children: ``spd`` (:class:`SpaceToDepth`), ``conv``, ``bn`` (``nn.Identity`` without norm),
    ``act``. :func:`nostride.fuse` turns it into one ``scale*k x scale*k`` strided convolution.

    ``strided`` (attribute, default ``False``; :func:`nostride.models.set_spd_form` sets it): compute
    the same function as that strided convolution, the weight rearranged from ``conv.weight`` on
    every call (so parameters, state dict and gradients stay those of this block), without the
    space-to-depth copy of the input. Training-time speed option; results agree to float rounding.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale: int = 2,
        norm: bool = True,
        act: ActLike = "relu",
        pad: bool = True,
        bias: bool | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        in_channels, out_channels = _channels("in_channels", in_channels), _channels("out_channels", out_channels)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SPDConv needs an odd kernel_size for 'same' padding, got {kernel_size!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.scale = scale
        self.spd = SpaceToDepth(scale, pad=pad)
        self.conv = nn.Conv2d(
            in_channels * scale * scale,
            out_channels,
            kernel_size,
            stride=1,
            padding=kernel_size // 2,
            bias=(not norm) if bias is None else bias,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum) if norm else nn.Identity()
        self.act = make_act(act)
        self.strided = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            # before space-to-depth multiplies the channels, which would make the conv's message misleading
            raise ValueError(f"SPDConv({self.in_channels}, {self.out_channels}) expects input (N, {self.in_channels}, H, W), "
                             f"got shape {tuple(x.shape)}")
        if self.strided:
            c = self.conv
            y = spd_strided_conv2d(x, c.weight, c.bias, self.scale, c.padding, self.spd.pad, "SPDConv")
            return self.act(self.bn(y))
        return self.act(self.bn(self.conv(self.spd(x))))
