"""The deployment form of SPD-Conv: strided convolutions, no space-to-depth data movement.

Space-to-depth with block size ``s`` followed by a stride-1 ``k x k`` convolution (padding ``p``)
is exactly one ``s*k x s*k`` convolution with stride ``s`` and padding ``s*p``, once the input has
been zero-padded at the bottom/right to a multiple of ``s`` (what :class:`SpaceToDepth` does for
odd sizes). :func:`nostride.fuse` builds :class:`FusedSPDConv` modules; the weight mapping lives
in :func:`nostride.convert.fuse.spd_conv_to_strided`.

When several convolutions read one space-to-depth output (YOLOv5-SPD's ``conv -> SPD -> C3``,
whose C3 reads it with two 1x1 convs, possibly after a concatenation), each becomes a strided
convolution of the tensor *before* space-to-depth: :class:`SPDPad` takes the SPD's place (padding,
if any, happens once) and :class:`SplitInputConv` computes a convolution of a channel
concatenation as a sum of one convolution per concatenated part.

Padding while a graph is recorded (ONNX, torch.export, torch.compile, TorchScript tracing):

* sizes known (a fixed-size export): pad exactly when needed, so an even-sized export holds no
  ``Pad`` and no shape arithmetic;
* sizes symbolic (a dynamic export, TorchScript tracing): pad by a constant ``s - 1`` rows and
  columns. A stride-``s`` convolution fused from SPD + a "same"-style convolution then gives
  ``ceil(H / s)`` outputs for every ``H`` and never reads the extra rows when ``H`` is a multiple
  of ``s`` (its last window ends at row ``H + s*p - 1``), so one ``Pad`` with constant amounts
  replaces the shape arithmetic an exact pad needs.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FusedSPDConv", "SPDPad", "SplitInputConv", "spd_pad", "spd_strided_conv2d", "spd_weight_to_strided"]


from .space_to_depth import _fixed_sizes, _generic_trace, _tracing  # noqa: E402  (_tracing re-exported for nostride.convert)


def _symbolic_sizes(x: torch.Tensor) -> bool:
    """True when the spatial sizes are not plain integers (dynamic shapes, TorchScript tracing)."""
    if _generic_trace():
        return True  # a trace must run on every size, whatever the example's parity
    return not all(type(d) is int for d in _fixed_sizes(x))


def spd_pad(x: torch.Tensor, block: tuple[int, int], pad: bool = True, who: str = "FusedSPDConv") -> torch.Tensor:
    """Pad ``x`` for convolutions fused from space-to-depth with block ``(sh, sw)``.

    Eager mode and fixed sizes: zero-pad at the bottom/right to a multiple of the block, only if
    needed (``pad=False`` raises ``ValueError`` on such an input). Symbolic sizes: a constant
    ``(sh - 1, sw - 1)`` pad (see the module docstring), or none with ``pad=False`` (the graph
    then assumes divisible sizes, as the eager module demands).
    """
    sh, sw = block
    if _symbolic_sizes(x):
        if not pad or (sh == 1 and sw == 1):
            return x
        return F.pad(x, (0, sw - 1, 0, sh - 1))
    h, w = _fixed_sizes(x)
    pad_h, pad_w = (-h) % sh, (-w) % sw
    if pad_h or pad_w:
        if not pad:
            raise ValueError(
                f"{who}: input of shape {tuple(x.shape)} has a height or width not divisible by "
                f"scale={sh if sh == sw else block}; it was fused from SpaceToDepth(pad=False)"
            )
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def spd_weight_to_strided(weight: torch.Tensor, block: tuple[int, int] = (2, 2)) -> torch.Tensor:
    """The weight of the strided convolution equal to space-to-depth (``block``) then a conv of ``weight``.

    ``W_strided[o, i, sh*u + r, sw*v + c] = W[o, (r + sh*c)*Cg + i, u, v]`` (``r``/``c`` the row/column
    offset inside a block, ``Cg`` the input channels per group before space-to-depth; group-major
    space-to-depth for a grouped conv). Differentiable (a reshape and a permute), so a training
    forward can rearrange the space-to-depth weights on every step.

    Args:
        weight: ``(O, sh*sw*Cg, kh, kw)``, the weight of the conv that reads the space-to-depth output.
        block: ``(sh, sw)``, the space-to-depth block.

    Returns:
        ``(O, Cg, sh*kh, sw*kw)``.
    """
    sh, sw = block
    out_ch, in_spd, kh, kw = weight.shape
    if in_spd % (sh * sw):
        raise ValueError(f"spd_weight_to_strided: {in_spd} input channels not divisible by {sh * sw}")
    cg = in_spd // (sh * sw)
    # in-group SPD channel (r + sh*c)*Cg + i splits as (c, r, i): (O, c, r, Cg, kh, kw)
    w = weight.reshape(out_ch, sw, sh, cg, kh, kw)
    # -> (O, Cg, kh, r, kw, c) so that row = sh*u + r and column = sw*v + c
    return w.permute(0, 3, 4, 2, 5, 1).reshape(out_ch, cg, sh * kh, sw * kw)


def spd_strided_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: int,
                       padding: tuple[int, int], pad: bool = True, who: str = "SPD-Conv") -> torch.Tensor:
    """``conv2d(space_to_depth(x, scale), weight, bias, stride=1, padding)`` as one strided convolution.

    Pads ``x`` like :class:`~nostride.layers.SpaceToDepth` (:func:`spd_pad`), rearranges ``weight``
    (:func:`spd_weight_to_strided`) and runs a stride-``scale`` conv with padding ``scale * padding``:
    the same function (and gradients) without the space-to-depth copy of ``x``. Exact for any
    kernel size (odd or even) with this symmetric zero padding.
    """
    x = spd_pad(x, (scale, scale), pad, who)
    w = spd_weight_to_strided(weight, (scale, scale))
    return F.conv2d(x, w, bias, stride=scale, padding=(scale * padding[0], scale * padding[1]))


class FusedSPDConv(nn.Module):
    """Zero-pad bottom/right to a multiple of ``scale`` (only if needed) -> strided conv -> act.

    Computes the same function as ``SpaceToDepth(scale, pad)`` followed by the stride-1
    convolution it was fused from (and that convolution's BatchNorm and activation).

    Args:
        conv: the strided ``nn.Conv2d`` (stride ``scale``).
        scale: the space-to-depth block size it replaces (an int, or (height, width)).
        act: activation applied after the convolution; ``None`` for none.
        pad: like ``SpaceToDepth(pad=...)``: ``False`` raises ``ValueError`` on inputs whose
            height or width is not divisible by ``scale`` instead of padding them. ``None``: no
            padding and no check; the convolution drops a trailing partial block (for a layer that
            crops the output row the padding would add, see ``nostride.convert.fuse``).
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
        if self.pad is None:
            return self.act(self.conv(x))
        if self.pad and _generic_trace() and self._block != (1, 1):
            return self.act(self._padding_in_kernel(x))
        return self.act(self.conv(spd_pad(x, self._block, self.pad, "FusedSPDConv")))

    def _padding_in_kernel(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with the bottom/right pad to a multiple of the block folded into it, for a
        TorchScript trace that must run on every size (the TorchScript-based ONNX exporter turns a
        ``Pad`` into Reshape/Transpose/Slice arithmetic on the pad amounts; this records one Conv).

        With ``sh - 1`` zero rows added at the top of the kernel and ``sh - 1`` more rows of padding
        on each side, output ``i`` still reads input rows ``sh*i - P .. sh*i - P + kh - 1`` (``P``,
        ``kh``: the conv's own padding and kernel) through the non-zero taps, and the output count
        becomes ``floor((H + 2P - kh + sh - 1) / sh) + 1``, the count for ``H`` padded up to a
        multiple of ``sh`` (``kh`` and ``P`` are multiples of ``sh``); columns alike. Exact for
        every size, at the cost of a kernel ``sh - 1`` larger.
        """
        sh, sw = self._block
        conv = self.conv
        weight = _untraced(lambda: F.pad(conv.weight.detach(), (sw - 1, 0, sh - 1, 0)))
        ph, pw = conv.padding
        return F.conv2d(x, weight, conv.bias, stride=conv.stride, padding=(ph + sh - 1, pw + sw - 1),
                        groups=conv.groups)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, pad={self.pad}"


def _untraced(fn):
    """``fn()`` computed outside the running TorchScript trace: its result enters the graph as a
    constant of known shape (an exporter needs a convolution kernel's shape)."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        return fn()
    finally:
        torch._C._set_tracing_state(state)


class SPDPad(nn.Module):
    """What is left of a space-to-depth layer whose readers were fused into strided convolutions.

    Passes its input on, padded as :func:`spd_pad` describes (in eager mode: only inputs whose
    size is not a multiple of ``scale``), so that every reader pads once, here.

    Args:
        scale: the space-to-depth block size.
        pad: ``False`` when the network guarantees divisible sizes (nothing is then emitted in an
            exported graph; eager inputs that break the guarantee raise ``ValueError``).
    """

    def __init__(self, scale: int, pad: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spd_pad(x, (self.scale, self.scale), self.pad, "SPDPad")

    def extra_repr(self) -> str:
        return f"scale={self.scale}, pad={self.pad}"


class SplitInputConv(nn.Module):
    """A convolution of a channel concatenation, as a sum of one convolution per part, then ``act``.

    ``conv(cat([x0, x1, ...]))`` equals ``conv0(x0) + conv1(x1) + ...`` with the weight split along
    input channels; a part that was space-to-depth of a tensor becomes a strided convolution of
    that tensor, so nothing is concatenated or rearranged. Called with one tensor (one part) or a
    list/tuple of tensors (the parts, in concatenation order).

    Args:
        convs: one ``nn.Conv2d`` per part; all give the same output shape (only the first needs a
            bias).
        act: activation after the sum; ``None`` for none.
    """

    def __init__(self, convs: Sequence[nn.Conv2d], act: nn.Module | None = None) -> None:
        super().__init__()
        if not convs:
            raise ValueError("SplitInputConv needs at least one convolution")
        self.convs = nn.ModuleList(convs)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        parts = [x] if isinstance(x, torch.Tensor) else list(x)
        if len(parts) != len(self.convs):
            raise ValueError(f"SplitInputConv: {len(self.convs)} convolutions but {len(parts)} inputs")
        y = self.convs[0](parts[0])
        for conv, part in zip(self.convs[1:], parts[1:]):
            y = y + conv(part)
        return self.act(y)
