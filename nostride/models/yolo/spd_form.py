"""The training-time strided form of YOLOv5-SPD's standalone space-to-depth layers.

The released YOLOv5-SPD layout reads each space-to-depth output with a C3 (``Conv -> space_to_depth
-> C3``, or ``... -> Concat -> C3`` in the head). The C3's two 1x1 input convs of the SPD output are
the same function as 2x2 stride-2 convs of the tensor *before* space-to-depth (after a ``Concat``:
a 2x2 stride-2 part plus a 1x1 part whose outputs add; see
:func:`~nostride.convert.fuse.split_input_conv`). Unlike :func:`~nostride.models.yolo.fold.fold_space_to_depth`
(deployment: new strided conv modules, BatchNorm folded), this keeps every parameter where it is:
the strided weights are rearranged from the C3's own ``cv1``/``cv2`` weights on every forward, so
training, gradients, the state dict and checkpoints are those of the model as built. Both 1x1
convs run as one convolution (their weights concatenated), then each gets its BatchNorm and
activation.

Modules change class in place (a subclass with only ``forward`` overridden, no new parameters or
buffers) and change back with ``strided=False``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...layers.fused import spd_pad, spd_weight_to_strided
from ...layers.space_to_depth import SpaceToDepth
from .blocks import C3, Concat

__all__ = ["set_yolo_spd_form"]


class DeferredSpaceToDepth(SpaceToDepth):
    """A space-to-depth layer whose reader computes through it: passes its input on, padded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spd_pad(x, (self.scale, self.scale), self.pad, "SpaceToDepth")


class PartsConcat(Concat):
    """A ``Concat`` whose reader takes the parts as a list (it convolves each part on its own)."""

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[override]
        return list(x)


class SPDInputC3(C3):
    """A :class:`C3` whose input is space-to-depth of a tensor (or a concatenation with such parts),
    given before space-to-depth: ``cv1`` and ``cv2`` run as one strided convolution per part.

    ``spd_parts``: ``(channels before space-to-depth, scale)`` per part, in concatenation order.
    """

    spd_parts: list[tuple[int, int]]

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        parts = [x] if isinstance(x, torch.Tensor) else list(x)
        c1, c2 = self.cv1.conv, self.cv2.conv
        weight = torch.cat((c1.weight, c2.weight), 0)
        pad_h, pad_w = c1.padding
        y = None
        start = 0
        for (channels, scale), part in zip(self.spd_parts, parts):
            width = channels * scale * scale
            w = weight[:, start:start + width]
            if scale > 1:
                out = F.conv2d(part, spd_weight_to_strided(w, (scale, scale)), None, scale,
                               (scale * pad_h, scale * pad_w))
            else:
                out = F.conv2d(part, w, None, 1, (pad_h, pad_w))
            y = out if y is None else y + out
            start += width
        if c1.bias is not None or c2.bias is not None:
            zeros = weight.new_zeros(c1.out_channels)
            bias = torch.cat((c1.bias if c1.bias is not None else zeros, c2.bias if c2.bias is not None else zeros))
            y = y + bias.view(1, -1, 1, 1)
        a, b = y.split((c1.out_channels, c2.out_channels), 1)
        a = self.cv1.act(self.cv1.bn(a))
        b = self.cv2.act(self.cv2.bn(b))
        return self.cv3(torch.cat((self.m(a), b), 1))


def _sources(layer: nn.Module) -> list[int]:
    f, i = layer.f, layer.i
    return [x + i if x < 0 else x for x in ([f] if isinstance(f, int) else f)]


def _plain_1x1_pair(c3: nn.Module) -> bool:
    """cv1 and cv2 are ungrouped, undilated, stride-1 zero-padded convs of one geometry."""
    convs = [getattr(getattr(c3, n, None), "conv", None) for n in ("cv1", "cv2")]
    if not all(type(c) is nn.Conv2d for c in convs):
        return False
    a, b = convs
    return all(tuple(c.stride) == (1, 1) and tuple(c.dilation) == (1, 1) and c.groups == 1
               and c.padding_mode == "zeros" and not isinstance(c.padding, str) for c in convs) \
        and a.kernel_size == b.kernel_size and a.padding == b.padding and a.in_channels == b.in_channels


def set_yolo_spd_form(model: nn.Module, strided: bool) -> int:
    """Switch the standalone space-to-depth layers of a :class:`~nostride.models.yolo.YOLOv5` (and their
    reading C3, and a Concat between them) to the strided form, or back; in place.

    Only an SPD layer read by exactly one C3 (directly, or through one channel ``Concat`` read by
    that C3 only) is switched; any other is left as it is.

    Returns:
        The number of space-to-depth layers in the strided form after the call (0 with ``strided=False``).
    """
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.ModuleList):
        return 0
    # back to the plain classes first (a second call re-plans from scratch)
    for layer in layers:
        if type(layer) is DeferredSpaceToDepth:
            layer.__class__ = SpaceToDepth
        elif type(layer) is PartsConcat:
            layer.__class__ = Concat
        elif type(layer) is SPDInputC3:
            layer.__class__ = C3
            del layer.spd_parts
    if not strided:
        return 0
    readers: dict[int, list[int]] = {}
    for layer in layers:
        for src in _sources(layer):
            readers.setdefault(src, []).append(layer.i)
    shapes: list[Any] | None = None
    switched = 0
    for layer in list(layers):
        if type(layer) is not SpaceToDepth or len(readers.get(layer.i, [])) != 1:
            continue
        reader = layers[readers[layer.i][0]]
        if type(reader) is SPDInputC3:
            continue  # planned already, through its Concat
        concat = None
        sources = [layer.i]
        if type(reader) is Concat:
            if reader.d != 1 or len(readers.get(reader.i, [])) != 1:
                continue
            concat, reader = reader, layers[readers[reader.i][0]]
            sources = _sources(concat)
        if type(reader) is not C3 or not _plain_1x1_pair(reader):
            continue
        if shapes is None:
            from .fold import _layer_shapes

            shapes = _layer_shapes(model.yaml)
        parts, spds = [], []
        for src in sources:
            spd = layers[src]
            if type(spd) is SpaceToDepth and readers.get(src) == [concat.i if concat is not None else reader.i]:
                parts.append((shapes[src][1] // spd.scale ** 2, spd.scale))
                spds.append(spd)
            else:
                parts.append((shapes[src][1], 1))
        if sum(c * s * s for c, s in parts) != reader.cv1.conv.in_channels:
            continue
        for spd in spds:
            spd.__class__ = DeferredSpaceToDepth
        if concat is not None:
            concat.__class__ = PartsConcat
        reader.__class__ = SPDInputC3
        reader.spd_parts = parts
        switched += len(spds)
    return switched
