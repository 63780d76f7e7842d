"""The deployment form of SPD-Conv: one strided convolution.

Space-to-depth with block size ``s`` followed by a stride-1 ``k x k`` convolution (padding ``p``)
is exactly one ``s*k x s*k`` convolution with stride ``s`` and padding ``s*p``, once the input has
been zero-padded at the bottom/right to a multiple of ``s`` (what :class:`SpaceToDepth` does for
odd sizes). :func:`nostride.fuse` builds :class:`FusedSPDConv` modules; the weight mapping lives
in :func:`nostride.convert.fuse.spd_conv_to_strided`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedSPDConv"]


from .space_to_depth import _tracing  # noqa: E402  (re-exported for nostride.convert)


class FusedSPDConv(nn.Module):
    """Zero-pad bottom/right to a multiple of ``scale`` (only if needed) -> strided conv -> act.

    Computes the same function as ``SpaceToDepth(scale, pad)`` followed by the stride-1
    convolution it was fused from (and that convolution's BatchNorm and activation).

    Args:
        conv: the strided ``nn.Conv2d`` (stride ``scale``).
        scale: the space-to-depth block size it replaces (an int, or (height, width)).
        act: activation applied after the convolution; ``None`` for none.
        pad: like ``SpaceToDepth(pad=...)``: ``False`` raises ``ValueError`` on inputs whose
            height or width is not divisible by ``scale`` instead of padding them.
    """

    def __init__(
        self, conv: nn.Conv2d, scale: int | tuple[int, int], act: nn.Module | None = None, pad: bool = True
    ) -> None:
        super().__init__()
        block = (scale, scale) if isinstance(scale, int) else (int(scale[0]), int(scale[1]))
        if tuple(conv.stride) != block:
            raise ValueError(f"FusedSPDConv needs a convolution with stride {block}, got stride {conv.stride}")
        self.scale = scale
        self._block = block
        self.pad = pad
        self.conv = conv
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sh, sw = self._block
        pad_h, pad_w = (-x.shape[-2]) % sh, (-x.shape[-1]) % sw
        # Eager mode pads only odd-sized inputs (no copy otherwise). While a graph is recorded the
        # amounts may be symbolic, so always pad: a zero-amount Pad keeps the graph shape-generic
        # (dynamic H/W in ONNX) instead of specialising it to one parity.
        if _tracing():
            x = F.pad(x, (0, pad_w, 0, pad_h))
        elif pad_h or pad_w:
            if not self.pad:
                raise ValueError(
                    f"FusedSPDConv: input of shape {tuple(x.shape)} has a height or width not divisible "
                    f"by scale={self.scale}; it was fused from SpaceToDepth(pad=False)"
                )
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.act(self.conv(x))

    def extra_repr(self) -> str:
        return f"scale={self.scale}, pad={self.pad}"
