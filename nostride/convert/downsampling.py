"""``convert_downsampling``: put any downsampling operator of :mod:`nostride.layers.downsample` in
place of every strided convolution and pooling layer of a CNN (torchvision, timm, ultralytics, yours).

``to="spd"`` is :func:`nostride.spdify`; ``to="conv-equal"`` writes each SPD-Conv as the one strided
convolution it equals, so with ``init="preserve"`` both keep the model's function exactly. Every other
operator is new: its layers start from PyTorch's default initialisation. Where an operator cannot
serve a layer (a stride other than 2, a grouped convolution HWD/ADown/SCDown are not defined for,
ADown on an odd channel count...), the layer is left as it was and the report says why.
:mod:`nostride.convert.downsample_sites` has what each operator builds at each kind of site.
"""

from __future__ import annotations

import copy
import sys
import warnings
from typing import Sequence

import torch
from torch import nn

from ..layers.downsample import BlurConv, downsample_op
from ..utils.profile import count_parameters
from .downsample_sites import SITE_BUILDERS, ConvSite, PoolSite
from .report import ConversionEntry, ConversionReport
from .spdify import _excluded, _pool_input_specs, _strided_kind, _warn_unused_patterns, spdify

__all__ = ["convert_downsampling", "downsampling_sites"]

_INITS = ("preserve", "random")
# attributes model families route by (YOLOv5, ultralytics): carried over to a replaced block
_ROUTING = ("i", "f", "type", "np")


def downsampling_sites(model: nn.Module) -> list[str]:
    """Qualified names of ``model``'s strided convolutions and pooling layers (its downsampling sites)."""
    return [name for name, m in model.named_modules() if _strided_kind(m) in ("conv", "maxpool", "avgpool")]


def convert_downsampling(
    model: nn.Module,
    to: str,
    *,
    init: str = "preserve",
    exclude: str | Sequence[str] = (),
    example_input: torch.Tensor | Sequence[int] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, ConversionReport]:
    """Replace every strided conv / pool of ``model`` by the downsampling operator ``to``.

    Args:
        model: any network built from ``torch.nn`` modules.
        to: an operator of :func:`nostride.layers.list_downsample_ops` (``"hwd"``, ``"blurpool"``...).
        init: ``"preserve"`` (default): operators that can keep a layer's function (``spd``,
            ``conv-equal``) do; ``"random"``: PyTorch's default initialisation everywhere.
        exclude: ``fnmatch`` patterns of module names to leave alone.
        example_input: an input (or its shape) to learn pooling layers' channel counts (default: as
            :func:`nostride.spdify`).
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        ``(converted_model, report)``: one entry per strided layer: ``converted`` (``exact`` says
        whether the function was kept), ``unsupported`` (the operator cannot serve it; ``note`` says
        why; the layer is unchanged), ``excluded``, or ``other`` strided kinds left alone.

    Raises:
        ValueError: an unknown operator (the message lists the known ones) or option.
    """
    op = downsample_op(to).name
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)
    if op == "spd":
        model, report = spdify(model, init=init, exclude=patterns, example_input=example_input, inplace=inplace)
        _record(model, op, init, patterns, example_input)
        return model, report
    params_before = count_parameters(model)
    if not inplace:
        model = copy.deepcopy(model)
    named = list(model.named_modules(remove_duplicate=False))
    _warn_unused_patterns(patterns, [n for n, _ in named])
    parents = {id(child): (name, parent) for name, parent in named for child in parent.children()}

    plan: dict[int, tuple[str, str, nn.Module]] = {}
    for name, module in named:
        kind = _strided_kind(module)
        if kind is not None and id(module) not in plan:
            plan[id(module)] = (name, kind, module)
    pools = [m for name, kind, m in plan.values()
             if kind in ("maxpool", "avgpool") and op != "strided" and not _excluded(name, patterns)]
    pool_inputs = _pool_input_specs(model, pools, example_input, plan) if pools else {}

    entries: list[ConversionEntry] = []
    swaps: list[tuple[nn.Module, nn.Module]] = []  # (module to replace, replacement)
    for name, kind, module in plan.values():
        old = repr(module)
        before = count_parameters(module)
        unchanged = lambda action, note="": ConversionEntry(name, kind, action, old, old, before, before, True, note)  # noqa: E731
        if _excluded(name, patterns):
            entries.append(unchanged("excluded"))
            continue
        if op == "strided":
            entries.append(unchanged("kept"))
            continue
        target, new = _build(op, name, kind, module, parents, pool_inputs, init)
        if isinstance(new, str):
            entries.append(unchanged("unsupported", f"{op} cannot serve this layer: {new}"))
            continue
        new.train(module.training)
        where = "the conv-norm-act block" if target is not module else "the layer"
        after = _resnet_norm_relu(name, module, parents) if isinstance(new, BlurConv) and target is module else None
        if after is not None:
            # the paper's order in a ResNet block: conv (stride 1) -> BN -> ReLU -> blur; the block's own
            # ReLU that follows is then a no-op (the blur of non-negative values is non-negative)
            bn_name, bn = after
            swaps.append((bn, nn.Sequential(bn, nn.ReLU(inplace=False), new.blur)))
            new = new.conv
            where = f"the layer, the blur after {bn_name} and its ReLU"
        swaps.append((target, new))
        exact = op == "conv-equal" and init == "preserve" and kind != "maxpool"
        entries.append(ConversionEntry(name if target is module else parents[id(module)][0], kind, "converted",
                                       old if target is module else _describe(target),
                                       _describe(new), count_parameters(target), count_parameters(new), exact,
                                       f"{where} replaced ({'exact' if exact else 'new layer'})"))
    _apply(model, named, swaps)
    unsupported = [e.name for e in entries if e.action == "unsupported"]
    if unsupported:
        warnings.warn(f"convert_downsampling: {op} cannot serve {len(unsupported)} layers, left as they were: "
                      f"{', '.join(unsupported)}", stacklevel=2)
    if swaps and op != "strided" and _has_ultralytics(model):
        warnings.warn("convert_downsampling: ultralytics' trainer rebuilds a model from its YAML, which does not "
                      f"name {op} layers; train the converted model with nostride or through its nn.Module",
                      stacklevel=2)
    if len(swaps) == 1 and swaps[0][0] is model:
        model = swaps[0][1]
    _record(model, op, init, patterns, example_input)
    return model, ConversionReport(entries, params_before, count_parameters(model))


def _build(op: str, name: str, kind: str, module: nn.Module, parents, pool_inputs, init: str):
    """(module to replace, replacement or reason it cannot be served)."""
    builders = SITE_BUILDERS[op]
    if kind == "other":
        return module, "a strided layer of a kind no operator converts (1-D/3-D conv or pool, LPPool)"
    if kind in ("maxpool", "avgpool"):
        channels, device, dtype = pool_inputs[id(module)]
        return module, builders.pool(PoolSite(name, module, kind, channels, init, device, dtype))
    parent_name, parent = parents.get(id(module), ("", None))
    if _is_conv_block(parent, module):
        return parent, builders.conv(ConvSite(parent_name, module, init, parent.bn, parent.act))
    if type(module) is not nn.Conv2d and op != "conv-equal":
        return module, f"{type(module).__name__} computes more than a plain strided Conv2d"
    return module, builders.conv(ConvSite(name, module, init))


_RESNET_BLOCKS = {("torchvision.models.resnet", "BasicBlock"), ("torchvision.models.resnet", "Bottleneck"),
                  ("torchvision.models.resnet", "ResNet"), ("nostride.models.resnet", "BasicBlock"),
                  ("nostride.models.resnet", "Bottleneck"), ("nostride.models.resnet", "ResNet")}


def _resnet_norm_relu(name: str, conv: nn.Module, parents) -> tuple[str, nn.Module] | None:
    """``(name, bn)`` when ``conv`` is the ``convN`` of a torchvision / nostride ResNet block or stem whose
    forward runs ``relu(bnN(convN(x)))`` (the strided 3x3 of a block, the stem), else None."""
    parent_name, parent = parents.get(id(conv), ("", None))
    if parent is None or (type(parent).__module__, type(parent).__name__) not in _RESNET_BLOCKS:
        return None
    attr = name.rpartition(".")[2]
    if not attr.startswith("conv") or not isinstance(getattr(parent, "relu", None), nn.ReLU):
        return None
    bn = getattr(parent, "bn" + attr[len("conv"):], None)
    # conv2 of a BasicBlock (and conv3 of a Bottleneck) is followed by the shortcut addition, not a ReLU
    last = {"BasicBlock": "conv2", "Bottleneck": "conv3"}.get(type(parent).__name__)
    if not isinstance(bn, nn.BatchNorm2d) or attr == last:
        return None
    return (f"{parent_name}." if parent_name else "") + "bn" + attr[len("conv"):], bn


def _is_conv_block(parent: nn.Module | None, conv: nn.Module) -> bool:
    """A conv-norm-act block: exactly the children ``conv`` (this strided conv), ``bn``, ``act``."""
    if parent is None or getattr(parent, "conv", None) is not conv or type(conv) is not nn.Conv2d:
        return False
    names = {n for n, _ in parent.named_children()}
    return names == {"conv", "bn", "act"} and isinstance(parent.bn, (nn.BatchNorm2d, nn.Identity))


def _apply(model: nn.Module, named: list[tuple[str, nn.Module]], swaps: list[tuple[nn.Module, nn.Module]]) -> None:
    replacement = {id(old): new for old, new in swaps}
    for name, module in named:
        new = replacement.get(id(module))
        if new is None or name == "":
            continue
        for attr in _ROUTING:
            if hasattr(module, attr) and not hasattr(new, attr):
                setattr(new, attr, getattr(module, attr))
        if hasattr(new, "np"):
            new.np = count_parameters(new)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, new)


def _describe(module: nn.Module) -> str:
    """One line: the block's class and the layers that compute (convs, pools, blur, Haar, SPD)."""
    from ..layers.downsample import BlurPool2d, HaarDownsample
    from ..layers.space_to_depth import SpaceToDepth

    parts = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            parts.append(repr(m).replace("kernel_size=", "k=").replace("stride=", "s=").replace("padding=", "p="))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, BlurPool2d)):
            parts.append(repr(m))
        elif isinstance(m, (HaarDownsample, SpaceToDepth)):
            parts.append(type(m).__name__)
    return f"{type(module).__name__}[{'; '.join(parts)}]"


def _has_ultralytics(model: nn.Module) -> bool:
    return "ultralytics" in sys.modules and any(type(m).__module__.startswith("ultralytics.") for m in model.modules())


def _record(model: nn.Module, op: str, init: str, patterns: list[str], example_input) -> None:
    """Record the conversion (plain data) so that a checkpoint of the model can rebuild it."""
    if isinstance(example_input, torch.Tensor):
        shape = list(example_input.shape)
    else:
        shape = list(example_input) if example_input is not None else None
    if op == "spd":
        return  # spdify records its own options
    options = {"to": op, "exclude": patterns, "example_input": shape}
    model.downsample_options = [*getattr(model, "downsample_options", []), options]

