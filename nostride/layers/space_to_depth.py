"""Space-to-depth (SPD) and its inverse, in the channel order of the SPD-Conv paper.

For scale ``s`` the sub-map ``f(r, c) = X[..., r::s, c::s]`` (``r`` the row offset, ``c`` the
column offset inside each ``s x s`` block) becomes channel block ``r + s * c``:

    out[:, (r + s * c) * C + k, i, j] == x[:, k, i * s + r, j * s + c]

For ``s = 2`` the blocks are f(0,0), f(1,0), f(0,1), f(1,1): the paper's slicing, the authors'
``space_to_depth`` and YOLOv5's Focus layer. This is *not* the order of ``nn.PixelUnshuffle``
(channel-major) nor of ONNX/timm SpaceToDepth (column offset first), so weights trained with one
order do not transfer to another without re-ordering.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["space_to_depth", "depth_to_space", "SpaceToDepth", "DepthToSpace", "fixed_size_graph"]


_FIXED_SIZE_GRAPH = [False]


@contextlib.contextmanager
def fixed_size_graph() -> Iterator[None]:
    """While a graph is recorded inside this context, its input sizes are the example's for good.

    A fixed-size export (``export_onnx(dynamic=False)``, also with the TorchScript-based exporter,
    whose trace otherwise has to serve every size) then pads only where the example needs it, so
    an SPD network of even sizes records no ``Pad`` and no pad-size arithmetic at all.
    """
    old = _FIXED_SIZE_GRAPH[0]
    _FIXED_SIZE_GRAPH[0] = True
    try:
        yield
    finally:
        _FIXED_SIZE_GRAPH[0] = old


def _generic_trace() -> bool:
    """A torch.jit trace that must run on every input size (outside :func:`fixed_size_graph`)."""
    return torch.jit.is_tracing() and not _FIXED_SIZE_GRAPH[0]


def _fixed_sizes(x: torch.Tensor) -> tuple:
    """``x``'s (height, width); plain ints inside :func:`fixed_size_graph` (a TorchScript trace
    records sizes as tensors, which would make every size look symbolic)."""
    h, w = x.shape[-2], x.shape[-1]
    if _FIXED_SIZE_GRAPH[0] and torch.jit.is_tracing():
        with warnings.catch_warnings():  # the tracer's "might not generalize": fixed sizes are the point
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return int(h), int(w)
    return h, w


def _tracing() -> bool:
    """True while torch.compile / torch.export / the ONNX exporter / torch.jit.trace records a graph.

    A recorded graph must not bake in the example input's parity, so padding is then always emitted
    (a zero-width pad is a no-op).
    """
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    return scale


def space_to_depth(x: torch.Tensor, scale: int = 2, pad: bool = True) -> torch.Tensor:
    """Move every ``scale x scale`` block of pixels into channels.

    Args:
        x: input of shape (N, C, H, W).
        scale: block size ``s`` (an integer >= 2).
        pad: if H or W is not divisible by ``scale``, zero-pad at the bottom/right so the output
            is ``ceil(H / s) x ceil(W / s)`` (the size a strided convolution with "same" padding
            gives). With ``pad=False`` such an input raises ``ValueError``.

    Returns:
        Tensor of shape (N, s*s*C, ceil(H/s), ceil(W/s)), channel ``(r + s*c)*C + k``.
    """
    _check_scale(scale)
    if x.dim() != 4:
        raise ValueError(f"space_to_depth expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    n, ch = x.shape[:2]
    h, w = _fixed_sizes(x)
    pad_h, pad_w = (-h) % scale, (-w) % scale
    if pad and _tracing() and (_generic_trace() or not (type(h) is int and type(w) is int)):
        # symbolic sizes: always pad (a zero pad keeps the graph generic in H/W parity); known
        # sizes (a fixed-size export) take the eager path and emit no Pad when none is needed
        x = F.pad(x, (0, pad_w, 0, pad_h))
        h, w = h + pad_h, w + pad_w
    elif pad_h or pad_w:
        if not pad:
            raise ValueError(
                f"space_to_depth: input of shape {tuple(x.shape)} has a height or width not divisible "
                f"by scale={scale}; pass pad=True to zero-pad at the bottom/right"
            )
        x = F.pad(x, (0, pad_w, 0, pad_h))
        h, w = h + pad_h, w + pad_w
    ho, wo = h // scale, w // scale
    # (N, C, Ho, r, Wo, c): split each spatial axis into (cell, offset inside the block)
    x = x.reshape(n, ch, ho, scale, wo, scale)
    # (N, c, r, C, Ho, Wo): block index r + s*c is the slowest-varying channel index
    x = x.permute(0, 5, 3, 1, 2, 4)
    return x.reshape(n, scale * scale * ch, ho, wo)


def depth_to_space(x: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Inverse of :func:`space_to_depth` (without removing any padding it added).

    Args:
        x: input of shape (N, s*s*C, H, W) in the paper's channel order.
        scale: block size ``s``.

    Returns:
        Tensor of shape (N, C, H*s, W*s).
    """
    _check_scale(scale)
    if x.dim() != 4:
        raise ValueError(f"depth_to_space expects a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
    n, ch, h, w = x.shape
    if ch % (scale * scale):
        raise ValueError(
            f"depth_to_space: {ch} channels (input shape {tuple(x.shape)}) is not divisible by "
            f"scale**2 = {scale * scale}"
        )
    c_out = ch // (scale * scale)
    # (N, c, r, C, H, W) -> (N, C, H, r, W, c)
    x = x.reshape(n, scale, scale, c_out, h, w).permute(0, 3, 4, 2, 5, 1)
    return x.reshape(n, c_out, h * scale, w * scale)


class SpaceToDepth(nn.Module):
    """Space-to-depth layer: (N, C, H, W) -> (N, s*s*C, ceil(H/s), ceil(W/s)).

    Parameter-free and lossless. See :func:`space_to_depth` for the channel order and padding.

    Args:
        scale: block size (an integer >= 2).
        pad: zero-pad inputs whose size is not divisible by ``scale`` (default) or raise.
    """

    def __init__(self, scale: int = 2, pad: bool = True) -> None:
        super().__init__()
        self.scale = _check_scale(scale)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.scale, self.pad)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, pad={self.pad}"


class DepthToSpace(nn.Module):
    """Inverse of :class:`SpaceToDepth`: (N, s*s*C, H, W) -> (N, C, H*s, W*s).

    Args:
        scale: block size (an integer >= 2).
    """

    def __init__(self, scale: int = 2) -> None:
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, self.scale)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
