"""BlurPool: anti-aliased downsampling (Zhang, "Making Convolutional Networks Shift-Invariant Again",
ICML 2019).

A strided layer is split into its dense (stride-1) evaluation and a fixed low-pass filter applied with
the stride:

* strided conv  ->  conv (stride 1) -> [norm] -> activation -> ``Blur(stride 2)``  (:class:`BlurConv`)
* max-pool      ->  max (stride 1) -> ``Blur(stride 2)``                            (:class:`MaxBlurPool`)
* avg-pool      ->  ``Blur(stride 2)``

``Blur`` is a depthwise convolution with the normalised binomial filter ``b b^T / sum(b)^2``,
``b = [1, 2, 1]`` (size 3) or ``[1, 4, 6, 4, 1]`` (size 5), after reflect padding of ``size // 2``
(replicate padding on maps too small to reflect), so its output is ``ceil(H/2) x ceil(W/2)``.
Written from the paper (the authors' code is under a non-commercial licence; timm's and kornia's
Apache-licensed versions use the same filter and padding).
"""

from __future__ import annotations

from math import comb

import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActLike, make_act
from ._fold import fold_norm

__all__ = ["BlurPool2d", "BlurConv", "MaxBlurPool", "binomial_filter"]

BLUR_SIZES = (1, 3, 5, 7)


def binomial_filter(size: int) -> torch.Tensor:
    """The normalised 2-D binomial filter of ``size`` (odd): outer product of row ``size - 1`` of
    Pascal's triangle with itself, divided by its sum (``[[1,2,1],[2,4,2],[1,2,1]] / 16`` for 3)."""
    if size not in BLUR_SIZES:
        raise ValueError(f"blur filter size must be one of {BLUR_SIZES}, got {size!r}")
    row = torch.tensor([comb(size - 1, i) for i in range(size)], dtype=torch.float64)
    filt = row[:, None] * row[None, :]
    return (filt / filt.sum()).float()


class BlurPool2d(nn.Module):
    """Fixed binomial low-pass filter with a stride, per channel: ``y = depthwise_conv(pad(x), f, stride)``.

    Paper: Zhang, "Making Convolutional Networks Shift-Invariant Again", ICML 2019 (``BlurPool``).
    Cost: no parameters; ``size**2 * C`` multiply-adds per output pixel.

    Args:
        channels: input (= output) channels.
        filt_size: 3 or 5 (1 and 7 also accepted).
        stride: downsampling factor.
    """

    def __init__(self, channels: int, filt_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.filt_size, self.stride = channels, filt_size, stride
        self.pad = filt_size // 2
        self.register_buffer("filt", binomial_filter(filt_size)[None, None].repeat(channels, 1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        if p:
            small = x.shape[-2] <= p or x.shape[-1] <= p
            x = F.pad(x, (p, p, p, p), mode="replicate" if small else "reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=self.stride, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, filt_size={self.filt_size}, stride={self.stride}"


class BlurConv(nn.Module):
    """Anti-aliased strided conv: ``Blur_s(act(BN(conv_k(x, stride=1))))`` (Zhang 2019, "ConvBlurPool").

    Cost relative to the ``k x k`` stride-2 conv: the same parameters, ``4x`` the conv FLOPs (the conv
    runs at full resolution) plus the blur.

    Args:
        in_channels, out_channels, kernel_size: of the stride-1 convolution ("same" padding).
        filt_size: blur filter size (3 or 5).
        stride: downsampling factor of the blur.
        groups, norm, act, bias: of the convolution block.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, filt_size: int = 3,
                 stride: int = 2, groups: int = 1, norm: bool = True, act: ActLike = "relu",
                 bias: bool | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, groups=groups,
                              bias=(not norm) if bias is None else bias)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.act = make_act(act)
        self.blur = BlurPool2d(out_channels, filt_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.act(self.bn(self.conv(x))))

    def fuse_module(self) -> nn.Module:
        """Hook of :func:`nostride.fuse`: BN folded into the stride-1 conv (the blur stays)."""
        conv = fold_norm(self.conv, self.bn)
        if conv is not None:
            self.conv, self.bn = conv, nn.Identity()
        return self


class MaxBlurPool(nn.Module):
    """Anti-aliased max-pool: ``Blur_s(maxpool(x, k, stride=1, padding=p))`` (Zhang 2019, "MaxBlurPool").

    Cost: no parameters; the max runs at full resolution, then the blur.

    Args:
        channels: channels.
        kernel_size, padding: of the max (stride 1); 2 and 0 in the paper, the replaced pool's otherwise.
        filt_size: blur filter size (3 or 5).
        stride: downsampling factor.
    """

    def __init__(self, channels: int, kernel_size: int = 2, padding: int = 0, filt_size: int = 3,
                 stride: int = 2) -> None:
        super().__init__()
        self.max = nn.MaxPool2d(kernel_size, stride=1, padding=padding)
        self.blur = BlurPool2d(channels, filt_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.max(x))
