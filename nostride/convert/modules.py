"""The modules :func:`nostride.spdify` puts in place of strided convolutions and pooling layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.fused import _tracing
from .geometry import AxisGeometry

__all__ = ["GroupedSpaceToDepth", "SPDDownsample", "grouped_space_to_depth"]


def grouped_space_to_depth(x: torch.Tensor, scale: tuple[int, int], groups: int = 1) -> torch.Tensor:
    """Space-to-depth with a (row, column) block size, channels ordered group-major.

    Input channels are split into ``groups`` equal groups; output channel

        g * (sh*sw*Cg) + (r + sh*c) * Cg + k   ==   x[:, g*Cg + k, i*sh + r, j*sw + c]

    with ``Cg = C / groups``. Each group's block is in the paper's order (``r`` row offset,
    ``c`` column offset), so ``groups=1`` with a square block is exactly
    :func:`nostride.space_to_depth`; with ``groups > 1`` a grouped convolution that follows sees,
    in group ``g``, exactly the values derived from input group ``g``. Height and width that are
    not multiples of the block are zero-padded at the bottom/right.

    Args:
        x: (N, C, H, W) input, C divisible by ``groups``.
        scale: block size (sh, sw); one of them may be 1.
        groups: channel groups to keep together.

    Returns:
        (N, sh*sw*C, ceil(H/sh), ceil(W/sw)).
    """
    sh, sw = scale
    h, w = x.shape[-2], x.shape[-1]
    # padded size written as sh * ceil(h / sh): a symbolic H (torch.export, ONNX) is then known to
    # give sub-maps of equal size (h + (-h % sh) is not simplified that far)
    pad_h, pad_w = sh * ((h + sh - 1) // sh) - h, sw * ((w + sw - 1) // sw) - w
    # while a graph is recorded always pad (a zero pad keeps H/W symbolic), else only when needed
    if _tracing() or pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    if not _tracing():
        # one reshape/permute copy: (N, G, Cg, Ho, r, Wo, c) -> (N, G, c, r, Cg, Ho, Wo)
        n, ch, hp, wp = x.shape
        x = x.reshape(n, groups, ch // groups, hp // sh, sh, wp // sw, sw).permute(0, 1, 6, 4, 2, 3, 5)
        return x.reshape(n, ch * sh * sw, hp // sh, wp // sw)
    # while tracing: strided slices, block index r + sh*c (column offset c slowest). Slicing,
    # unlike reshaping H into (H/sh, sh), needs no divisibility facts about a symbolic H
    blocks = [x[:, :, r::sh, c::sw] for c in range(sw) for r in range(sh)]
    if groups == 1:
        return torch.cat(blocks, 1)
    # (N, B, C, Ho, Wo) -> (N, B, G, Cg, Ho, Wo) -> (N, G, B, Cg, Ho, Wo): group-major
    y = torch.stack(blocks, 1).unflatten(2, (groups, x.shape[1] // groups)).transpose(1, 2)
    return y.flatten(1, 3)


class GroupedSpaceToDepth(nn.Module):
    """:func:`grouped_space_to_depth` as a layer (used before grouped or non-square-stride convs).

    Args:
        scale: block size (sh, sw).
        groups: channel groups kept together (the groups of the convolution that follows).
    """

    def __init__(self, scale: tuple[int, int], groups: int = 1) -> None:
        super().__init__()
        sh, sw = int(scale[0]), int(scale[1])
        if sh < 1 or sw < 1 or sh * sw < 2:
            raise ValueError(f"scale must be positive with at least one side >= 2, got {scale!r}")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.scale = (sh, sw)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_space_to_depth(x, self.scale, self.groups)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, groups={self.groups}"


class SPDDownsample(nn.Module):
    """Space-to-depth, then a stride-1 convolution: the stand-in for one strided layer.

    It has the output size of the layer it replaces for every input size (the strided op's
    formula, including ``ceil_mode``): the stride-1 convolution (odd kernel, "same" padding) yields
    ``ceil(H/s)`` rows, which are cropped at the bottom/right, or zero-extended when the strided
    op's padding reaches further than that.

    Args:
        in_channels: channels before space-to-depth.
        out_channels: output channels.
        geometry: (height, width) :class:`AxisGeometry` of the replaced op; their strides are the
            space-to-depth block size and they define the output size. Their padding must be 0
            when ``input_padding`` is given (the input is then padded beforehand).
        kernel_size: odd (height, width) kernel of the stride-1 convolution.
        groups: groups of the convolution; space-to-depth then orders channels group-major.
        bias: give the convolution a bias.
        input_padding: (height, width) padding applied with ``padding_mode`` before space-to-depth
            (for convolutions with ``padding_mode`` other than ``"zeros"``), or ``"same"``: zero
            padding computed from the input size as TensorFlow's "SAME" does (total
            ``max((ceil(H/s) - 1)*s + d*(k-1) + 1 - H, 0)``, the smaller half on top/left; timm's
            ``Conv2dSame``), so the output is ``ceil(H/s)`` for every ``H``.
        padding_mode: ``F.pad`` mode for ``input_padding``: reflect, replicate or circular.
        avg_divisor: for an average pool whose divisor varies at the border (``ceil_mode``, or
            ``count_include_pad=False`` with padding): ``"include_pad"`` or ``"exclude_pad"``
            rescales each output by ``kh*kw / (taps counted in its window)``, a fixed,
            parameter-free factor that is 1 away from the border; ``None`` for none.
        replaces: description of the replaced layer, shown in the repr.
        device: device of the convolution.
        dtype: dtype of the convolution.

    Children: ``spd`` (:class:`GroupedSpaceToDepth`, the paper's channel order, group-major for
    grouped convolutions) and ``conv`` (stride-1 ``nn.Conv2d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        geometry: tuple[AxisGeometry, AxisGeometry],
        kernel_size: tuple[int, int],
        groups: int = 1,
        bias: bool = True,
        input_padding: tuple[int, int] | str | None = None,
        padding_mode: str = "zeros",
        avg_divisor: str | None = None,
        replaces: str = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        gh, gw = geometry
        kh, kw = kernel_size
        if kh % 2 == 0 or kw % 2 == 0 or kh < 1 or kw < 1:
            raise ValueError(f"SPDDownsample needs an odd kernel_size, got {kernel_size}")
        if avg_divisor not in (None, "include_pad", "exclude_pad"):
            raise ValueError(f"avg_divisor must be None, 'include_pad' or 'exclude_pad', got {avg_divisor!r}")
        if input_padding is not None and (gh.padding or gw.padding):
            raise ValueError("with input_padding the geometry's own padding must be 0")
        if isinstance(input_padding, str) and input_padding != "same":
            raise ValueError(f"input_padding must be a (height, width) pair, 'same' or None, got {input_padding!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.geometry = (gh, gw)
        self.scale = (gh.stride, gw.stride)
        self.input_padding = (
            tuple(input_padding) if input_padding is not None and not isinstance(input_padding, str) else input_padding
        )
        self.padding_mode = padding_mode
        self.avg_divisor = avg_divisor
        self.replaces = replaces
        # The stride-1 conv yields ceil(H/s) rows: exactly the strided op's output size when its
        # padding is "same" (2p == d*(k-1)). Otherwise rows are cropped or zero rows appended.
        # Decided here, once, so "same" layers carry no shape logic into compiled/exported graphs.
        self._exact_size = gh.same_size() and gw.same_size()
        # per axis: zero rows may be appended below the SPD map (more padding than "same", or
        # ceil_mode); nostride.fuse leaves such blocks unfused
        self._extend = tuple(g.ceil_mode or 2 * g.padding > g.dilation * (g.kernel - 1) for g in (gh, gw))
        # the generalised SPD (equal to nostride.SpaceToDepth for groups=1 and a square block)
        # also pads while a graph is recorded, so an ONNX export stays valid for odd H/W
        self.spd = GroupedSpaceToDepth(self.scale, groups)
        self.conv = nn.Conv2d(
            in_channels * gh.stride * gw.stride,
            out_channels,
            (kh, kw),
            stride=1,
            padding=(kh // 2, kw // 2),
            groups=groups,
            bias=bias,
            device=device,
            dtype=dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_padding == "same":
            x = F.pad(x, _tf_same_padding(x.shape[-2], x.shape[-1], self.geometry))
        elif self.input_padding is not None:
            ph, pw = self.input_padding
            x = F.pad(x, (pw, pw, ph, ph), mode=self.padding_mode)
        gh, gw = self.geometry
        h, w = x.shape[-2], x.shape[-1]
        out_h, out_w = gh.output_size(h), gw.output_size(w)
        if not _tracing() and (out_h < 1 or out_w < 1):
            # the replaced layer would have refused this input too
            raise ValueError(
                f"SPDDownsample (replacing {self.replaces or 'a strided layer'}): input of size {h}x{w} "
                f"is too small, the output would be {out_h}x{out_w}"
            )
        y = self.spd(x)
        if self._exact_size:
            z = self.conv(y)
        else:
            # zero rows when the strided op's padding reaches past the last SPD cell
            if self._extend[0] or self._extend[1]:
                extra_h = torch.sym_max(out_h - y.shape[-2], 0)
                extra_w = torch.sym_max(out_w - y.shape[-1], 0)
                if _tracing() or extra_h or extra_w:
                    y = F.pad(y, (0, extra_w, 0, extra_h))
            # "same" conv: output row i reads SPD rows i - K//2 .. i + K//2, i.e. the strided op's
            # output i; rows past the strided op's output size are cropped
            z = _crop(self.conv(y), out_h, out_w)
        if self.avg_divisor is not None:
            z = z * self._border_scale(h, w, out_h, out_w, z)
        return z

    def _border_scale(self, h, w, out_h, out_w, like: torch.Tensor) -> torch.Tensor:
        """``kh*kw / count`` per output position (count = taps the average pool divides by)."""
        include_pad = self.avg_divisor == "include_pad"
        gh, gw = self.geometry
        counts = [
            _window_counts(g, size, out, include_pad, like.device) for g, size, out in ((gh, h, out_h), (gw, w, out_w))
        ]
        area = gh.kernel * gw.kernel
        return (area / (counts[0][:, None] * counts[1][None, :])).to(like.dtype)

    def describe(self) -> str:
        """One-line summary: ``SPD(s) -> Conv2d(...)`` plus what is not visible there."""
        s = self.scale[0] if self.scale[0] == self.scale[1] else self.scale
        groups = f", groups={self.conv.groups}" if self.conv.groups > 1 else ""
        extra = ""
        if self.input_padding == "same":
            extra += ", TF-SAME pad"
        elif self.input_padding is not None:
            extra += f", {self.padding_mode} pad {self.input_padding}"
        if self.avg_divisor is not None:
            extra += f", border divisor {self.avg_divisor}"
        return f"SPD({s}{groups}) -> {self.conv!r}{extra}"

    def extra_repr(self) -> str:
        s = self.scale[0] if self.scale[0] == self.scale[1] else self.scale
        parts = [f"scale={s}"]
        if self.input_padding == "same":
            parts.append("input_padding='same'")
        elif self.input_padding is not None:
            parts.append(f"input_padding={self.input_padding}, padding_mode={self.padding_mode!r}")
        if self.avg_divisor is not None:
            parts.append(f"avg_divisor={self.avg_divisor!r}")
        if self.replaces:
            parts.append(f"replaces={self.replaces}")
        return ", ".join(parts)


def _tf_same_padding(h, w, geometry: tuple[AxisGeometry, AxisGeometry]) -> tuple:
    """(left, right, top, bottom) zero padding of TensorFlow's "SAME" for an input of size h x w."""
    pads = []
    for size, g in ((w, geometry[1]), (h, geometry[0])):
        s = g.stride
        total = torch.sym_max(((size + s - 1) // s - 1) * s + g.dilation * (g.kernel - 1) + 1 - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


def _window_counts(g: AxisGeometry, size, out_size, include_pad: bool, device: torch.device) -> torch.Tensor:
    """Number of taps of each output's window inside [0, size) (or [-p, size + p))."""
    lo, hi = (-g.padding, size + g.padding) if include_pad else (0, size)
    rows = g.stride * torch.arange(out_size, device=device)[:, None] - g.padding
    rows = rows + g.dilation * torch.arange(g.kernel, device=device)[None, :]
    return ((rows >= lo) & (rows < hi)).sum(1)


def _crop(z: torch.Tensor, out_h, out_w) -> torch.Tensor:
    """``z[..., :out_h, :out_w]``; while a graph is recorded an index_select, which (unlike a
    slice) needs no proof that ``out_h <= z.shape[-2]`` for a symbolic size (torch.export, ONNX)."""
    if not _tracing():
        return z[..., :out_h, :out_w]
    z = z.index_select(-2, torch.arange(out_h, device=z.device))
    return z.index_select(-1, torch.arange(out_w, device=z.device))
