"""Building modules on the "meta" device: shapes only, no memory, no initialisation."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["shapes_only"]

# in-place ops that change a tensor's shape or flags: still run on the meta device
_SHAPE_CHANGING = {"resize_", "resize_as_", "set_", "as_strided_", "squeeze_", "unsqueeze_", "transpose_", "t_",
                   "swapdims_", "swapaxes_", "requires_grad_", "share_memory_"}


class _SkipMetaInit(TorchFunctionMode):
    """Skips in-place value ops (weight initialisation: normal_, uniform_, ...) on meta tensors.

    They are meaningless there, and on meta tensors they run through PyTorch's Python reference
    kernels, whose first use imports torch._dynamo (seconds). Thread-local, like every mode.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if (name.endswith("_") and not name.endswith("__") and name not in _SHAPE_CHANGING
                and args and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build modules on the "meta" device (no memory, no initialisation): to check shapes first."""
    with torch.device("meta"), _SkipMetaInit():
        yield
