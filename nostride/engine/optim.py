"""Optimizers with YOLOv5-style parameter groups (norm weights / other weights / biases)."""

from __future__ import annotations

from torch import nn
import torch

__all__ = ["param_groups", "build_optimizer"]

# every normalisation layer type: its weight is a scale, and decaying it toward 0 only hurts
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float, decay_norm_bias: bool = False) -> list[dict]:
    """Split trainable parameters into three groups, in this order (as YOLOv5):

    * ``"norm"``: weights of normalisation layers (no decay unless ``decay_norm_bias``),
    * ``"decay"``: all other weights (``weight_decay``),
    * ``"bias"``: every bias (no decay unless ``decay_norm_bias``).

    Each group dict carries ``"group"`` (its name), which the LR schedule uses for the bias warm-up.
    Empty groups are kept (with no params) out: PyTorch allows them, but they clutter state dicts.
    """
    norm, decay, bias = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if pname == "bias":
                bias.append(p)
            elif isinstance(module, _NORM_TYPES):
                norm.append(p)
            else:
                decay.append(p)
    no_decay = weight_decay if decay_norm_bias else 0.0
    groups = [
        {"params": norm, "weight_decay": no_decay, "group": "norm"},
        {"params": decay, "weight_decay": weight_decay, "group": "decay"},
        {"params": bias, "weight_decay": no_decay, "group": "bias"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, name: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                    weight_decay: float = 5e-4, nesterov: bool = False,
                    decay_norm_bias: bool = False) -> torch.optim.Optimizer:
    """SGD (``momentum``, ``nesterov``) or AdamW (betas ``(momentum, 0.999)``) over :func:`param_groups`.

    AdamW's decoupled decay is applied per group too (so norm weights and biases can be excluded).
    """
    groups = param_groups(model, weight_decay, decay_norm_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(momentum, 0.999))
    raise ValueError(f"unknown optimizer {name!r} (sgd or adamw)")
