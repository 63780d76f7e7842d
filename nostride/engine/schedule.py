"""Learning-rate (and momentum) schedule with linear warm-up, as a pure function of the iteration.

The schedule sets ``lr`` (and, during warm-up, ``momentum`` / Adam ``beta1``) of every optimizer
parameter group before each batch. Because the values depend only on the global batch index, the
schedule's state is that index alone, which makes resuming exact.

Decay factor ``f(x)`` of the base lr, with ``x`` in epochs and ``E`` the number of epochs:

* ``step``: ``gamma ** (number of milestones <= x)`` (ResNet-style multi-step decay).
* ``cosine``: ``lrf + (1 - lrf) * (1 + cos(pi * x / E)) / 2`` (YOLOv5's ``one_cycle``).
* ``linear``: ``lrf + (1 - lrf) * (1 - x / E)`` (YOLOv5 >= 6.1's default).

``unit="epoch"`` uses ``x = floor(epoch)`` (lr constant within an epoch, as YOLOv5 and torchvision's
ResNet recipe do); ``unit="iter"`` uses the fractional epoch ``x = iteration / iters_per_epoch``.

Warm-up (YOLOv5 semantics) over the first ``warmup_iters`` batches, interpolating linearly in the
batch index from 0 to ``warmup_iters``: lr of the weight groups rises from 0 to ``lr * f(x)``; the
bias group's from ``warmup_bias_lr`` (when set) to ``lr * f(x)``; momentum from ``warmup_momentum``
(when set) to ``momentum``.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Sequence

import torch

__all__ = ["LRSchedule", "lr_factor", "schedule_departure", "milestones_beyond"]


def lr_factor(kind: str, x: float, epochs: int, lrf: float = 0.0, milestones: Sequence[float] = (),
              gamma: float = 0.1) -> float:
    """The decay factor ``f(x)`` of the base learning rate at epoch ``x`` (see module doc)."""
    if kind == "step":
        return gamma ** bisect.bisect_right(sorted(milestones), x)
    if kind == "cosine":
        return lrf + (1.0 - lrf) * (1.0 + math.cos(math.pi * x / epochs)) / 2.0
    if kind == "linear":
        return lrf + (1.0 - lrf) * (1.0 - x / epochs)
    raise ValueError(f"unknown schedule {kind!r} (step, cosine or linear)")


def _planned(options: dict[str, Any], epochs: int):
    milestones = list(options.get("milestones") or []) or [0.5 * epochs, 0.75 * epochs]
    kind, lrf, gamma = options.get("schedule", "cosine"), options.get("lrf", 0.0), options.get("gamma", 0.1)
    floor = options.get("schedule_unit", "iter") == "epoch"
    return lambda x: lr_factor(kind, math.floor(x) if floor else x, epochs, lrf, milestones, gamma)


def schedule_departure(options: dict[str, Any], old_epochs: int, new_epochs: int,
                       done: int) -> tuple[float, float, float] | None:
    """Whether re-planning a run's schedule from ``old_epochs`` to ``new_epochs`` changes its learning rates.

    ``options``: the run's schedule options (``schedule``, ``schedule_unit``, ``lrf``, ``milestones``,
    ``gamma``); ``done``: epochs finished. Returns ``(epoch, lr factor as planned, lr factor re-planned)``
    at the first point (in steps of 1/8 epoch, up to the next epoch) where they differ, or ``None``
    when the longer or shorter run has the same schedule so far (e.g. ``step`` with explicit milestones).
    """
    old, new = _planned(options, old_epochs), _planned(options, new_epochs)
    for k in range(8 * min(done, old_epochs) + 1):
        x = k / 8
        a, b = old(x), new(x)
        if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            return x, a, b
    return None


def milestones_beyond(milestones: Sequence[float], epochs: int) -> list[float]:
    """The step milestones at or after the last epoch: the lr never decays there."""
    return [m for m in milestones if m >= epochs]


def _interp(t: float, start: float, end: float) -> float:
    return start + (end - start) * t


class LRSchedule:
    """Sets each group's lr/momentum for a global batch index.

    Args:
        optimizer: its param groups may carry ``"group"``: ``"bias"`` (gets ``warmup_bias_lr``).
        lr: base learning rate; ``momentum``: target momentum (SGD momentum or Adam beta1).
        iters_per_epoch: batches per epoch (on one rank).
        epochs, kind, unit, lrf, milestones, gamma: see module doc. Empty ``milestones`` for
            ``step`` means 50 % and 75 % of ``epochs``.
        warmup_iters: batches of warm-up (0 = none).
        warmup_momentum, warmup_bias_lr: warm-up start values; ``None`` = not warmed up
            separately (momentum stays constant; bias lr starts from 0 like the others).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, lr: float, momentum: float, iters_per_epoch: int,
                 epochs: int, kind: str = "cosine", unit: str = "iter", lrf: float = 0.0,
                 milestones: Sequence[float] = (), gamma: float = 0.1, warmup_iters: int = 0,
                 warmup_momentum: float | None = None, warmup_bias_lr: float | None = None) -> None:
        if unit not in ("iter", "epoch"):
            raise ValueError(f"schedule unit must be 'iter' or 'epoch', got {unit!r}")
        lr_factor(kind, 0.0, epochs)  # validates kind
        self.optimizer = optimizer
        self.lr, self.momentum = lr, momentum
        self.iters_per_epoch = max(int(iters_per_epoch), 1)
        self.epochs, self.kind, self.unit, self.lrf, self.gamma = epochs, kind, unit, lrf, gamma
        self.milestones = list(milestones) if milestones else [0.5 * epochs, 0.75 * epochs]
        self.warmup_iters = max(int(warmup_iters), 0)
        self.warmup_momentum, self.warmup_bias_lr = warmup_momentum, warmup_bias_lr
        self.last_iter = -1

    def factor(self, iteration: int) -> float:
        """Decay factor (without warm-up) at a global batch index."""
        x = iteration / self.iters_per_epoch
        if self.unit == "epoch":
            x = float(math.floor(x))
        return lr_factor(self.kind, x, self.epochs, self.lrf, self.milestones, self.gamma)

    def values(self, iteration: int) -> list[tuple[float, float]]:
        """``(lr, momentum)`` of every param group at ``iteration``."""
        target = self.lr * self.factor(iteration)
        out = []
        warm = iteration < self.warmup_iters
        t = iteration / self.warmup_iters if warm else 1.0
        for group in self.optimizer.param_groups:
            lr, mom = target, self.momentum
            if warm:
                start = self.warmup_bias_lr if group.get("group") == "bias" and self.warmup_bias_lr is not None else 0.0
                lr = _interp(t, start, target)
                if self.warmup_momentum is not None:
                    mom = _interp(t, self.warmup_momentum, self.momentum)
            out.append((lr, mom))
        return out

    def step(self, iteration: int) -> None:
        """Apply the values for ``iteration`` to the optimizer (call before each batch)."""
        for group, (lr, mom) in zip(self.optimizer.param_groups, self.values(iteration)):
            group["lr"] = lr
            if "betas" in group:
                group["betas"] = (mom, group["betas"][1])
            elif "momentum" in group:
                group["momentum"] = mom
        self.last_iter = iteration

    def state_dict(self) -> dict[str, Any]:
        return {"last_iter": self.last_iter, "kind": self.kind, "epochs": self.epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_iter = int(state["last_iter"])
