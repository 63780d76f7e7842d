"""Geometry of a strided window (convolution or pooling) along one spatial axis.

A strided window op with kernel ``k``, stride ``s``, padding ``p`` and dilation ``d`` computes
output ``i`` from the input rows ``s*i - p + d*u`` for the taps ``u = 0 .. k-1``. Writing

    d*u - p = s*a + r,   a = floor((d*u - p) / s),   r = (d*u - p) mod s

shows that tap ``u`` reads row ``s*(i + a) + r``: after space-to-depth with block size ``s``
that is row ``i + a`` of the sub-map with offset ``r``. So a stride-1 convolution over the
space-to-depth map that looks at the offsets ``a`` in ``[floor(-p/s), floor((d*(k-1) - p)/s)]``
sees every input the strided op saw, at the same output position ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["AxisGeometry"]


@dataclass(frozen=True)
class AxisGeometry:
    """One spatial axis of a strided convolution or pooling window.

    Attributes:
        kernel: kernel size ``k``.
        stride: stride ``s`` (the space-to-depth block size along this axis).
        padding: zero padding ``p`` on each side.
        dilation: kernel dilation ``d``.
        ceil_mode: pooling's ``ceil_mode`` (output size rounded up; the last window must start
            inside the input or its left padding).
    """

    kernel: int
    stride: int
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    def output_size(self, size):  # int or SymInt in, same out (no type hints: SymInt-friendly)
        """Output length of the strided op for an input of length ``size`` (PyTorch's formula)."""
        s, p = self.stride, self.padding
        span = size + 2 * p - self.dilation * (self.kernel - 1) - 1
        if not self.ceil_mode:
            return span // s + 1
        # ceil division written without negative operands: exported graphs (ONNX) may
        # truncate integer division toward zero instead of flooring it
        out = (span + s - 1) // s + 1
        # PyTorch: the last window must start inside the input or the left padding, i.e.
        # (out - 1) * s < size + p. Written as a min (it removes at most one, as PyTorch's
        # "if ...: out -= 1" does, since p <= k/2) so a symbolic size needs no branch.
        return torch.sym_min(out, (size + p - 1) // s + 1)

    def same_size(self) -> bool:
        """True when the output size is ``ceil(size / stride)`` for every size (padding 2p == d*(k-1))."""
        return not self.ceil_mode and 2 * self.padding == self.dilation * (self.kernel - 1)

    def taps(self) -> list[tuple[int, int, int]]:
        """``(u, a, r)`` for each tap ``u``: it reads row ``i + a`` of space-to-depth sub-map ``r``."""
        return [(u, *divmod(self.dilation * u - self.padding, self.stride)) for u in range(self.kernel)]

    def offset_range(self) -> tuple[int, int]:
        """Smallest and largest offset ``a`` a tap reads on the space-to-depth map."""
        offsets = [a for _, a, _ in self.taps()]
        return min(offsets), max(offsets)

    def min_odd_kernel(self) -> int:
        """Smallest odd kernel whose centred window (offsets ``-K//2 .. K//2``) holds every tap."""
        lo, hi = self.offset_range()
        return 2 * max(-lo, hi) + 1
