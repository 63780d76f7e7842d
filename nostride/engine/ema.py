"""Exponential moving average of model weights (YOLOv5's ``ModelEMA`` formula)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * model`` over every floating-point ``state_dict`` entry
    (weights and BatchNorm running statistics), with the ramped decay
    ``d = decay * (1 - exp(-updates / tau))`` so early averages are not dominated by the random init.

    Args:
        model: the (unwrapped) model to average; a deep copy is kept in eval mode, without grads.
        decay: the asymptotic decay (0.9999).
        tau: ramp length in updates (2000).
        updates: number of updates already done (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def decay_at(self, updates: int) -> float:
        """The decay used for update number ``updates`` (1-based)."""
        return self.decay * (1.0 - math.exp(-updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step toward ``model``'s current state (call after each optimizer step)."""
        self.updates += 1
        d = self.decay_at(self.updates)
        msd = model.state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach().to(v.dtype), alpha=1.0 - d)
            else:  # integer buffers (num_batches_tracked) follow the model
                v.copy_(msd[k])

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = int(updates)
