"""Convolution + BatchNorm + activation, the block every model here is built of."""

from __future__ import annotations

from torch import nn
import torch

from .activations import ActLike, make_act

__all__ = ["ConvBnAct", "same_padding"]


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size of a stride-1 convolution with an odd kernel."""
    return dilation * (kernel_size - 1) // 2


class ConvBnAct(nn.Module):
    """``Conv2d(bias=False)`` -> ``BatchNorm2d`` -> activation.

    Children are named ``conv``, ``bn`` and ``act`` (the layout of YOLOv5's ``Conv``), so state
    dicts of models built from it follow that naming.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: convolution stride.
        padding: explicit padding; ``None`` means ``kernel_size // 2``.
        groups: convolution groups.
        act: activation (see :func:`nostride.layers.make_act`); default SiLU.
        norm: add BatchNorm (and no conv bias); ``False`` gives a biased conv and no ``bn``
            (``bn`` is then ``nn.Identity``).
        bn_eps: BatchNorm epsilon.
        bn_momentum: BatchNorm momentum.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        act: ActLike = "silu",
        norm: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=not norm
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum) if norm else nn.Identity()
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
