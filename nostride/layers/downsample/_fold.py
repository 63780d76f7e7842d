"""BatchNorm folding for the ``fuse_module`` hooks of the downsampling layers (evaluation mode)."""

from __future__ import annotations

import torch
from torch import nn


def fold_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d | None:
    """A new ``Conv2d`` equal to ``norm(conv(x))`` in evaluation mode: ``conv`` itself after
    ``nn.Identity``, BatchNorm folded with its running statistics, ``None`` for anything else."""
    if isinstance(norm, nn.Identity):
        return conv
    if not isinstance(norm, nn.BatchNorm2d) or norm.running_var is None:
        return None
    wide = torch.float64
    factor = (norm.weight.detach().to(wide) if norm.weight is not None else 1.0) / torch.sqrt(
        norm.running_var.detach().to(wide) + norm.eps)
    beta = norm.bias.detach().to(wide) if norm.bias is not None else 0.0
    bias = conv.bias.detach().to(wide) if conv.bias is not None else torch.zeros_like(factor)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach().to(wide) * factor.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - norm.running_mean.detach().to(wide)) * factor + beta)
    return fused
