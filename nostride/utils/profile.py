"""Parameter and FLOP counts.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (no extra dependency). It counts
2 FLOPs per multiply-add of convolutions and matrix products; element-wise ops (BN, activations,
additions) are not counted, as in thop/fvcore, so GFLOPs here are comparable to YOLOv5's
"2 x thop MACs" figures.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_flops"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (each shared parameter counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224)) -> int:
    """FLOPs of one forward pass (2 per multiply-add) on a zero input of ``input_shape``.

    The model is run in eval mode on the device of its first parameter and restored to its
    previous mode afterwards.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            model(torch.zeros(*input_shape, device=device, dtype=dtype))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
