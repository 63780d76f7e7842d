"""``fuse``: the deployment form of a network with SPD-Conv blocks.

Two exact rewrites (evaluation mode):

* BatchNorm after a convolution is folded into the convolution's weight and bias, using the
  running statistics (:func:`fold_bn`).
* Space-to-depth with block size ``s`` followed by a stride-1 ``k x k`` convolution with padding
  ``p`` is one ``s*k x s*k`` convolution with stride ``s`` and padding ``s*p``
  (:func:`spd_conv_to_strided`), with

      W_fused[o, i, s*u + r, s*v + c] = W[o, (r + s*c)*C + i, u, v]

  (``r`` row offset, ``c`` column offset inside a block, ``C`` input channels before SPD).

What gets rewritten (recursively, in any container):

* :class:`~nostride.layers.SPDConv` -> :class:`~nostride.layers.FusedSPDConv` (BN folded);
* :class:`~nostride.layers.ConvBnAct` -> the same class with BN folded and ``bn = Identity``;
* :class:`~nostride.convert.SPDDownsample` (what :func:`~nostride.convert.spdify` inserts): its
  SPD + stride-1 conv pair becomes one strided (possibly grouped, non-square) convolution, unless
  it zero-extends the space-to-depth map (``ceil_mode`` pools);
* inside an ``nn.Sequential``: ``Conv2d`` / ``SPDDownsample`` / activation-free
  ``FusedSPDConv`` -> ``BatchNorm2d`` (BN folded), and ``SpaceToDepth``
  -> stride-1 ``Conv2d`` or ``ConvBnAct`` (one ``FusedSPDConv``; the ``SpaceToDepth`` slot becomes
  ``nn.Identity`` so later indices, and their state-dict keys, do not move);
* any module with a ``fuse_module(self) -> nn.Module`` method is replaced by its result (the
  plug-in hook for blocks of model families), whose children are then fused in turn.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..layers.conv import ConvBnAct
from ..layers.fused import FusedSPDConv, SplitInputConv, spd_weight_to_strided
from ..layers.space_to_depth import SpaceToDepth
from ..layers.spd_conv import SPDConv
from .modules import GroupedSpaceToDepth, SPDDownsample

__all__ = ["fuse", "fold_bn", "fold_norm", "spd_conv_to_strided", "split_input_conv"]


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new ``Conv2d`` (with bias) equal to ``bn(conv(x))`` in evaluation mode.

    ``w' = w * g / sqrt(var + eps)`` per output channel and ``b' = (b - mean) * g / sqrt(var + eps)
    + beta``, with ``g = 1, beta = 0`` for a BatchNorm without affine parameters. Computed in
    float64 (float32 on MPS) and cast back to the convolution's dtype. The inputs are not modified.

    Raises:
        ValueError: if ``bn`` keeps no running statistics or its size does not match ``conv``.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_bn: the BatchNorm has no running statistics (track_running_stats=False)")
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"fold_bn: BatchNorm has {bn.num_features} features but the conv has {conv.out_channels} outputs"
        )
    weight = conv.weight.detach()
    dtype = weight.dtype
    # float64 keeps the folded weights as exact as the dtype allows (MPS has no float64)
    wide = torch.float32 if weight.device.type == "mps" else torch.float64
    var = bn.running_var.detach().to(wide)
    mean = bn.running_mean.detach().to(wide)
    gamma = bn.weight.detach().to(wide) if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.detach().to(wide) if bn.bias is not None else torch.zeros_like(var)
    bias = conv.bias.detach().to(wide) if conv.bias is not None else torch.zeros_like(var)

    factor = gamma / torch.sqrt(var + bn.eps)
    fused = _conv_like(conv, bias=True)
    with torch.no_grad():
        fused.weight.copy_((weight.to(wide) * factor.view(-1, 1, 1, 1)).to(dtype))
        fused.bias.copy_(((bias - mean) * factor + beta).to(dtype))
    return fused


def spd_conv_to_strided(conv: nn.Conv2d, scale: int) -> FusedSPDConv:
    """The single strided convolution equal to ``SpaceToDepth(scale)`` followed by ``conv``.

    Args:
        conv: the stride-1, dilation-1, ungrouped ``Conv2d`` (zero padding) that reads the
            space-to-depth output, so ``conv.in_channels == scale**2 * C``.
        scale: the space-to-depth block size.

    Returns:
        A :class:`FusedSPDConv` (no activation) whose conv has kernel ``scale * k``, stride
        ``scale`` and padding ``scale * p``, and which zero-pads odd-sized inputs at the
        bottom/right like :class:`SpaceToDepth` does.

    Raises:
        ValueError: if ``conv`` is not of that kind.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    return _grouped_spd_conv_to_strided(conv, (scale, scale), spd_groups=1, scale_repr=scale)


def split_input_conv(conv: nn.Conv2d, parts: Sequence[tuple[int, int]]) -> SplitInputConv:
    """``conv`` applied to ``cat([SPD_s0(x0), SPD_s1(x1), ...])`` as a sum of one conv per part.

    Splits the weight along input channels; a part with ``scale > 1`` (read through space-to-depth)
    becomes the strided convolution of :func:`spd_conv_to_strided` applied to the tensor *before*
    space-to-depth, a part with ``scale == 1`` keeps ``conv``'s geometry. SPD followed by a 1x1
    conv is thus a 2x2 stride-2 conv; a concatenation before it splits into a 2x2 stride-2 part
    and a 1x1 part whose outputs add. The tensors given to the result must already be padded to a
    multiple of their scale (:class:`~nostride.layers.SPDPad`).

    Args:
        conv: a stride-1, ungrouped, undilated ``Conv2d`` with zero padding.
        parts: ``(channels, scale)`` per concatenated part, in order, with ``channels`` counted
            before space-to-depth, so ``sum(c * s * s) == conv.in_channels``.

    Returns:
        A :class:`~nostride.layers.SplitInputConv` (no activation); the bias goes to the first part.

    Raises:
        ValueError: for a conv of another kind or parts that do not add up to its input channels.
    """
    if not parts:
        raise ValueError("split_input_conv: no parts given")
    total = sum(c * s * s for c, s in parts)
    problems = []
    if total != conv.in_channels:
        problems.append(f"parts {list(parts)} give {total} input channels, the conv has {conv.in_channels}")
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        problems.append(f"stride {tuple(conv.stride)}, dilation {tuple(conv.dilation)}, groups {conv.groups} (needs 1, 1, 1)")
    if conv.padding_mode != "zeros":
        problems.append(f"padding_mode={conv.padding_mode!r} (needs 'zeros')")
    padding = _numeric_padding(conv)
    if padding is None:
        problems.append(f"padding={conv.padding!r} with an even kernel")
    if problems:
        raise ValueError(f"split_input_conv: cannot split {conv}: " + "; ".join(problems))
    weight = conv.weight.detach()
    convs, start = [], 0
    for index, (channels, scale) in enumerate(parts):
        width = channels * scale * scale
        part = nn.Conv2d(
            width, conv.out_channels, conv.kernel_size, padding=padding,
            bias=index == 0 and conv.bias is not None, device=weight.device, dtype=weight.dtype,
        )
        with torch.no_grad():
            part.weight.copy_(weight[:, start : start + width])
            if part.bias is not None:
                part.bias.copy_(conv.bias.detach())
        convs.append(spd_conv_to_strided(part, scale).conv if scale > 1 else part)
        start += width
    return SplitInputConv(convs)


def _grouped_spd_conv_to_strided(
    conv: nn.Conv2d, block: tuple[int, int], spd_groups: int, scale_repr: int | tuple[int, int]
) -> FusedSPDConv:
    """:func:`spd_conv_to_strided` for a (row, column) block and group-major space-to-depth
    (:class:`~nostride.convert.GroupedSpaceToDepth` with ``spd_groups == conv.groups``)."""
    sh, sw = block
    problems = []
    if tuple(conv.stride) != (1, 1):
        problems.append(f"stride {tuple(conv.stride)} (needs 1)")
    if tuple(conv.dilation) != (1, 1):
        problems.append(f"dilation {tuple(conv.dilation)} (needs 1)")
    if conv.groups != spd_groups:
        problems.append(f"groups={conv.groups} (needs {spd_groups}, the space-to-depth's channel grouping)")
    if conv.padding_mode != "zeros":
        problems.append(f"padding_mode={conv.padding_mode!r} (needs 'zeros')")
    if conv.in_channels % (sh * sw):
        problems.append(f"in_channels={conv.in_channels} not divisible by scale**2={sh * sw}")
    padding = _numeric_padding(conv)
    if padding is None:
        problems.append(f"padding={conv.padding!r} with an even kernel")
    if problems:
        raise ValueError(f"spd_conv_to_strided(scale={scale_repr}): cannot fuse {conv}: " + "; ".join(problems))

    out_ch, kh, kw = conv.out_channels, *conv.kernel_size
    in_ch = conv.in_channels // (sh * sw)
    strided = nn.Conv2d(
        in_ch,
        out_ch,
        (sh * kh, sw * kw),
        stride=(sh, sw),
        padding=(sh * padding[0], sw * padding[1]),
        groups=conv.groups,
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        strided.weight.copy_(spd_weight_to_strided(conv.weight.detach(), (sh, sw)))
        if conv.bias is not None:
            strided.bias.copy_(conv.bias.detach())
    return FusedSPDConv(strided, scale_repr)


def fuse(module: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deployment form of ``module``: same function in eval mode, fewer layers.

    See the module docstring for what is rewritten. Modules that are not recognised are kept
    as they are (and their children visited).

    Args:
        module: any network (or a single block).
        inplace: rewrite ``module`` itself instead of a deep copy.

    Returns:
        The fused module, in evaluation mode (BatchNorm was folded with its running statistics,
        so training the result is not the same as training the original). When ``module`` is
        itself a fusable block the result may be a different object even with ``inplace=True``.
    """
    _require_python_module(module, "fuse")
    if not inplace:
        module = copy.deepcopy(module)
    return _fuse(module).eval()


def _require_python_module(model: object, what: str) -> None:
    """``TypeError`` unless ``model`` is an ``nn.Module`` this function can rewrite (not TorchScript)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{what} takes a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"{what} cannot rewrite a TorchScript model (scripted or traced: its layers are compiled "
                        f"code, not Python modules); apply {what} to the original model, then script or trace the result")


def _fuse(module: nn.Module, use_hook: bool = True) -> nn.Module:
    hook = getattr(module, "fuse_module", None) if use_hook else None
    if callable(hook):
        fused = hook()
        if not isinstance(fused, nn.Module):
            raise TypeError(f"{type(module).__name__}.fuse_module() returned {type(fused).__name__}, not an nn.Module")
        # the result's own hook is not called again (it may well be the same class)
        return _fuse(fused, use_hook=False)
    if isinstance(module, SPDConv):
        return _fuse_spd_conv(module)
    if isinstance(module, ConvBnAct):
        return _fuse_conv_bn_act(module)
    if isinstance(module, SPDDownsample):
        return _fuse_spd_downsample(module)
    for name, child in module.named_children():
        fused = _fuse(child)
        if fused is not child:
            setattr(module, name, fused)
    if isinstance(module, nn.Sequential):
        _fuse_sequential_pairs(module)
    return module


def fold_norm(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d | None:
    """``conv`` followed by a conv block's ``norm`` as one conv: BatchNorm folded (:func:`fold_bn`),
    ``conv`` itself after ``nn.Identity``, ``None`` for a norm that cannot be folded (other norm
    layers, BatchNorm without running statistics)."""
    if isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
        return fold_bn(conv, norm)
    return conv if isinstance(norm, nn.Identity) else None


def _fuse_spd_conv(block: SPDConv) -> nn.Module:
    conv = fold_norm(block.conv, block.bn)
    if conv is None:
        return block  # an unusual norm we cannot fold: keep the block as it is
    fused = spd_conv_to_strided(conv, block.spd.scale)
    fused.act = block.act
    fused.pad = block.spd.pad
    return fused


def _fuse_conv_bn_act(block: ConvBnAct) -> nn.Module:
    if type(block.conv) is not nn.Conv2d:  # e.g. spdify put an SPDDownsample in a YOLOv5 Conv
        block.conv = _fuse(block.conv)
        if isinstance(block.bn, nn.BatchNorm2d):
            folded = _fold_bn_into(block.conv, block.bn)
            if folded is not None:
                block.conv, block.bn = folded, nn.Identity()
        return block
    conv = fold_norm(block.conv, block.bn)
    if conv is not None:
        block.conv, block.bn = conv, nn.Identity()
    return block


def _fuse_spd_downsample(block: SPDDownsample) -> SPDDownsample:
    """spdify's SPD + stride-1 conv: the conv becomes strided and ``spd`` an ``nn.Identity``.

    SPDDownsample.forward runs ``conv(spd(x))`` between its own input padding, output cropping
    and border rescaling, which stay as they are. When it zero-extends the space-to-depth map
    (ceil_mode pooling, or more padding than "same") the pair is left unfused.
    """
    if any(block._extend):
        return block
    spd = block.spd
    if isinstance(spd, GroupedSpaceToDepth):
        spd_block, groups = spd.scale, spd.groups
    elif isinstance(spd, SpaceToDepth):
        spd_block, groups = (spd.scale, spd.scale), 1
    else:
        return block
    if type(block.conv) is not nn.Conv2d or block.conv.groups != groups:
        return block
    sh, sw = spd_block
    block.conv = _grouped_spd_conv_to_strided(block.conv, (sh, sw), groups, sh if sh == sw else (sh, sw))
    block.spd = nn.Identity()
    if _crop_is_the_alignment_pad(block):
        block.conv.pad = None
        block._exact_size = True
    return block


def _crop_is_the_alignment_pad(block: SPDDownsample) -> bool:
    """True when the output row the block crops is always the one that padding to a multiple of the
    block adds: a TensorFlow-"SAME" layer (padded to ``H' = (ceil(H/s) - 1) s + e``, ``e`` its
    dilated kernel) with ``s < e < 2s``, e.g. 3x3 stride 2. The strided conv over the unaligned
    ``H'`` rows gives ``floor(H'/s) = ceil(H/s)`` rows, the layer's output, reading the same values:
    no Pad, no crop, and a BatchNorm after it folds like the strided original's."""
    if block.input_padding != "same" or block.avg_divisor is not None:
        return False
    return all(g.stride < g.dilation * (g.kernel - 1) + 1 < 2 * g.stride for g in block.geometry)


def _fold_bn_into(module: nn.Module, bn: nn.BatchNorm2d) -> nn.Module | None:
    """``module`` with the BatchNorm that follows it folded in, or None if that is not exact."""
    if not bn.track_running_stats:
        return None
    if type(module) is nn.Conv2d and bn.num_features == module.out_channels:
        return fold_bn(module, bn)
    if isinstance(module, FusedSPDConv) and isinstance(module.act, nn.Identity):
        if bn.num_features == module.conv.out_channels:
            module.conv = fold_bn(module.conv, bn)
            return module
    # per-channel affine maps commute with SPDDownsample's crop, not with its border rescaling
    if isinstance(module, SPDDownsample) and module.avg_divisor is None:
        inner = _fold_bn_into(module.conv, bn)
        if inner is not None:
            module.conv = inner
            return module
    return None


def _fuse_sequential_pairs(seq: nn.Sequential) -> None:
    """Fuse adjacent (conv, BatchNorm2d) and (SpaceToDepth, stride-1 conv) pairs in place."""
    keys = list(seq._modules)
    for a, b in zip(keys, keys[1:]):
        first, second = seq._modules[a], seq._modules[b]
        if isinstance(second, nn.BatchNorm2d):
            folded = _fold_bn_into(first, second)
            if folded is not None:
                seq._modules[a] = folded
                seq._modules[b] = nn.Identity()
    for a, b in zip(keys, keys[1:]):
        first, second = seq._modules[a], seq._modules[b]
        if not isinstance(first, SpaceToDepth):
            continue
        fused = _spd_then(first, second)
        if fused is not None:
            seq._modules[a] = nn.Identity()
            seq._modules[b] = fused


def _spd_then(spd: SpaceToDepth, nxt: nn.Module) -> FusedSPDConv | None:
    """Fuse ``spd`` with the module after it when that is a fusable stride-1 conv, else None."""
    act: nn.Module = nn.Identity()
    conv = nxt
    if isinstance(nxt, ConvBnAct):
        if not isinstance(nxt.bn, nn.Identity):
            return None  # BN that could not be folded above
        conv, act = nxt.conv, nxt.act
    if type(conv) is not nn.Conv2d or not _spd_fusable(conv, spd.scale):
        return None
    fused = spd_conv_to_strided(conv, spd.scale)
    fused.act = act
    fused.pad = spd.pad
    return fused


def _spd_fusable(conv: nn.Conv2d, scale: int) -> bool:
    return (
        tuple(conv.stride) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and conv.in_channels % (scale * scale) == 0
        and _numeric_padding(conv) is not None
    )


def _numeric_padding(conv: nn.Conv2d) -> tuple[int, int] | None:
    """The (height, width) padding of a stride-1 conv; None for 'same' with an even kernel."""
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        if any(k % 2 == 0 for k in conv.kernel_size):
            return None  # PyTorch pads such kernels asymmetrically
        return (conv.kernel_size[0] // 2, conv.kernel_size[1] // 2)
    return (int(conv.padding[0]), int(conv.padding[1]))


def _conv_like(conv: nn.Conv2d, bias: bool) -> nn.Conv2d:
    """A fresh Conv2d with ``conv``'s geometry (weights to be filled in)."""
    return nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias,
        padding_mode=conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
