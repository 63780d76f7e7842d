"""Activation lookup shared by every block that takes an ``act=`` argument."""

from __future__ import annotations

from typing import Callable, Union

from torch import nn

__all__ = ["ActLike", "make_act"]

ActLike = Union[str, nn.Module, Callable[[], nn.Module], None, bool]

_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "leaky_relu": lambda: nn.LeakyReLU(0.1, inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "gelu": nn.GELU,
    "mish": lambda: nn.Mish(inplace=True),
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "none": nn.Identity,
}


def make_act(act: ActLike) -> nn.Module:
    """Build an activation module.

    Args:
        act: a name (``"relu"``, ``"silu"``, ``"leaky_relu"``, ``"hardswish"``, ``"gelu"``,
            ``"mish"``, ``"sigmoid"``, ``"identity"``), an ``nn.Module`` instance (used as is),
            an ``nn.Module`` class or factory (called with no arguments), or ``None``/``False``
            for no activation (``nn.Identity``). ``True`` means SiLU, as in YOLOv5.
    """
    if act is None or act is False:
        return nn.Identity()
    if act is True:
        return nn.SiLU(inplace=True)
    if isinstance(act, nn.Module):
        return act
    if isinstance(act, str):
        key = act.lower()
        if key not in _ACTS:
            raise ValueError(f"unknown activation {act!r}; choose one of {sorted(_ACTS)} or pass a module")
        return _ACTS[key]()
    if callable(act):
        module = act()
        if not isinstance(module, nn.Module):
            raise TypeError(f"activation factory {act!r} returned {type(module).__name__}, not an nn.Module")
        return module
    raise TypeError(f"act must be a name, an nn.Module, a module class or None, got {type(act).__name__}")
