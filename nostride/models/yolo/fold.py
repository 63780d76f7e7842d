"""Fold YOLOv5-SPD's space-to-depth layers into the layers that read them (deployment form).

The released YOLOv5-SPD layout puts space-to-depth *after* a stride-1 conv, as a layer of its
own: ``Conv -> space_to_depth -> C3`` or ``Conv -> space_to_depth -> Concat -> C3``. Fused layer
by layer, that SPD stays a reshape/transpose (data movement on every inference, and the
SpaceToDepth-like ops some runtimes handle badly). Here each such SPD is folded into what reads
it, exactly (:func:`~nostride.convert.fuse.split_input_conv`):

* the C3's two 1x1 input convs (``cv1``, ``cv2``) become 2x2 stride-2 convs of the tensor before
  SPD; after a ``Concat`` each becomes a 2x2 stride-2 part plus a 1x1 part whose outputs add;
* a ``Conv`` (stride 1) reading it becomes one strided conv of the tensor before SPD;
* the SPD layer becomes :class:`~nostride.layers.SPDPad` (padding, if any, happens once there)
  and the ``Concat`` passes its inputs on as a list.

Where the model's input rule (height and width multiples of the largest stride) guarantees sizes
divisible by the scale, nothing is padded (``pad=False``), so exported graphs hold no ``Pad``,
fixed-size or dynamic.

Layer indices, ``from`` links and the Detect head are unchanged. An SPD whose output is read by
anything else (several layers, Detect, a residual) is left as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...convert.fuse import split_input_conv
from ...layers.conv import ConvBnAct
from ...layers.fused import FusedSPDConv, SPDPad
from ...layers.space_to_depth import SpaceToDepth
from ...utils.profile import count_parameters
from .blocks import C3, Concat
from .config import parse_model

__all__ = ["fold_space_to_depth"]


def _sources(layer: nn.Module) -> list[int]:
    """Absolute indices of the layers ``layer`` reads (``-1``: the input image for layer 0)."""
    f, i = layer.f, layer.i
    return [x + i if x < 0 else x for x in ([f] if isinstance(f, int) else f)]


def _layer_shapes(cfg: dict) -> list[Any]:
    """Output shape of every layer for a 256x256 input, from a shapes-only pass on "meta"."""
    shapes: list[Any] = []
    with torch.device("meta"):
        layers, _ = parse_model(cfg, cfg["ch"])
        layers.train()  # Detect returns its raw maps (no decoding on meta tensors)
        x = torch.zeros(1, cfg["ch"], 256, 256)
        y: list[Any] = []
        for m in layers:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            x = m(x)
            y.append(x)
            shapes.append(tuple(x.shape) if isinstance(x, torch.Tensor) else None)
    return shapes


def _foldable_conv(conv: nn.Module) -> bool:
    """A fused ``ConvBnAct`` (BN folded) whose conv is stride-1 and ungrouped."""
    return (
        isinstance(conv, ConvBnAct)
        and isinstance(conv.bn, nn.Identity)
        and type(conv.conv) is nn.Conv2d
        and tuple(conv.conv.stride) == (1, 1)
        and tuple(conv.conv.dilation) == (1, 1)
        and conv.conv.groups == 1
        and conv.conv.padding_mode == "zeros"
    )


def _replace(layers: nn.ModuleList, index: int, new: nn.Module) -> None:
    old = layers[index]
    new.i, new.f = old.i, old.f
    new.type = f"{type(new).__module__}.{type(new).__qualname__}"
    new.np = count_parameters(new)
    layers[index] = new


@torch.no_grad()
def fold_space_to_depth(model: nn.Module) -> int:
    """Fold every standalone space-to-depth layer of a fused YOLOv5 into its reader, in place.

    Call after BatchNorm folding (``YOLOv5.fuse`` does). Exact in evaluation mode for every input
    the model accepts (height and width multiples of its largest stride).

    Returns:
        The number of space-to-depth layers folded.
    """
    layers: nn.ModuleList = model.model
    readers: dict[int, list[int]] = {}
    for layer in layers:
        for src in _sources(layer):
            readers.setdefault(src, []).append(layer.i)
    shapes = _layer_shapes(model.yaml)
    max_stride = int(model.stride.max())
    image_size = 256

    def spd_part(index: int) -> tuple[int, int] | None:
        """(channels before SPD, scale) when layer ``index`` is an SPD layer that can be folded."""
        layer = layers[index]
        if type(layer) is not SpaceToDepth or shapes[index] is None:
            return None
        return shapes[index][1] // layer.scale**2, layer.scale

    def divisible(index: int, scale: int) -> bool:
        """Whether inputs the model accepts give layer ``index`` sizes divisible by ``scale``."""
        src = _sources(layers[index])[0]
        size = image_size if src < 0 else shapes[src][2]
        return max_stride % (image_size // size * scale) == 0

    # SPD-Conv layers fused on their own (Focus, SPDConv) pad nothing where sizes always divide
    for layer in layers:
        if isinstance(layer, FusedSPDConv) and isinstance(layer.scale, int) and divisible(layer.i, layer.scale):
            layer.pad = False

    folded = 0
    for layer in list(layers):
        if type(layer) is not SpaceToDepth or len(readers.get(layer.i, [])) != 1:
            continue
        reader = layers[readers[layer.i][0]]
        spds = [layer.i]
        if isinstance(reader, Concat):
            if reader.d != 1 or len(readers.get(reader.i, [])) != 1:
                continue
            concat, reader = reader, layers[readers[reader.i][0]]
            sources = _sources(concat)
            parts = []
            for src in sources:
                part = spd_part(src) if readers.get(src) == [concat.i] else None
                parts.append(part if part is not None else (shapes[src][1], 1))
            spds = [src for src, (_, scale) in zip(sources, parts) if scale > 1]
        else:
            concat, parts = None, [spd_part(layer.i)]
        if isinstance(reader, C3) and _foldable_conv(reader.cv1) and _foldable_conv(reader.cv2):
            targets = [reader.cv1, reader.cv2]
        elif type(reader) is not C3 and _foldable_conv(reader):
            targets = [reader]
        else:
            continue
        for target in targets:
            target.conv = split_input_conv(target.conv, parts)
        reader.np = count_parameters(reader)
        for index in spds:
            scale = layers[index].scale
            _replace(layers, index, SPDPad(scale, pad=not divisible(index, scale)))
            folded += 1
        if concat is not None:
            _replace(layers, concat.i, nn.Identity())  # hands the parts on as a list
    return folded
