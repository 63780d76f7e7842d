"""Strided layers of other libraries that :func:`nostride.spdify` converts (timm).

Some libraries downsample inside modules that are not plain ``nn.Conv2d`` / pooling layers, or
that subclass them with a forward of their own. spdify converts those whose function it knows:

- timm ``Conv2dSame`` (and ``Conv2dSameExport``): a strided conv after TensorFlow-style "SAME"
  padding, computed from the input size at run time (``pad = max((ceil(H/s) - 1)*s + d*(k-1) + 1 - H, 0)``,
  the smaller half on top/left). The replacement pads the same way, then converts the unpadded conv.
- timm ``BlurPool2d`` (anti-aliased downsampling, e.g. TResNet, ``aa_layer``): a fixed binomial
  depthwise filter with stride, after reflect padding. It is a depthwise strided convolution, so
  it becomes SPD + a depthwise convolution initialised to the filter (exact, and trainable).

After conversion, :func:`after_spdify` runs the finishing step an integration registered for the
library whose modules the model holds (:func:`register_after_spdify`): for ultralytics,
:mod:`nostride.integrations.ultralytics` turns converted ``Conv`` layers into its ``SPDConv`` (so
ultralytics' own ``fuse()`` and its YAML-rebuilding trainer keep working). An integration that is
not imported yet is imported by name (:data:`INTEGRATIONS`) the first time a model needs it.

Everything here is looked up lazily from ``sys.modules``: a model holding timm modules has
imported timm, and nostride never imports it itself.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = ["INTEGRATIONS", "StridedEquivalent", "after_spdify", "register_after_spdify", "strided_equivalent"]

#: a library's module prefix -> the nostride module that registers its finishing step when imported
INTEGRATIONS: dict[str, str] = {"ultralytics.": "nostride.integrations.ultralytics"}
_FINISHERS: dict[str, Callable[[nn.Module], None]] = {}


def register_after_spdify(library: str, finish: Callable[[nn.Module], None]) -> None:
    """Run ``finish(model)`` after :func:`nostride.spdify` converts a model holding modules whose
    ``__module__`` starts with ``library`` (e.g. ``"ultralytics."``); registering again replaces it."""
    _FINISHERS[library] = finish


@dataclass
class StridedEquivalent:
    """A foreign strided layer described as a plain ``nn.Conv2d`` (sharing its weights).

    Attributes:
        conv: plain convolution computing what the layer computes (after ``tf_same`` padding).
        tf_same: the input is first padded TensorFlow-"SAME"-style, from its size at run time.
    """

    conv: nn.Conv2d
    tf_same: bool = False


def _timm_classes(*names: str) -> tuple[type, ...]:
    layers = sys.modules.get("timm.layers")
    if layers is None:
        return ()
    return tuple(c for c in (getattr(layers, n, None) for n in names) if isinstance(c, type))


def strided_equivalent(module: nn.Module) -> StridedEquivalent | str | None:
    """The plain-conv description of a known foreign strided layer.

    Returns:
        a :class:`StridedEquivalent`; a string saying why a known layer cannot be converted; or
        ``None`` when ``module`` is not a foreign strided layer spdify knows.
    """
    same_convs = _timm_classes("Conv2dSame", "Conv2dSameExport")
    if same_convs and type(module) in same_convs:
        if not any(s > 1 for s in module.stride):
            return None
        plain = _plain_conv_like(module, padding=0)
        return StridedEquivalent(plain, tf_same=True)
    blur = _timm_classes("BlurPool2d")
    if blur and type(module) in blur:
        if module.stride < 2:
            return None
        if module.channels is None:
            return "BlurPool2d(channels=None) learns its channel count at run time; build it with channels="
        if module.pad_mode not in ("reflect", "replicate", "circular", "constant"):
            return f"BlurPool2d with pad_mode={module.pad_mode!r}"
        filt = module.filt.detach()
        k, c = module.filt_size, module.channels
        plain = nn.Conv2d(
            c,
            c,
            k,
            module.stride,
            padding=module.padding[0],
            groups=c,
            bias=False,
            padding_mode="zeros" if module.pad_mode == "constant" else module.pad_mode,
            device=filt.device,
            dtype=filt.dtype,
        )
        with torch.no_grad():
            plain.weight.copy_(filt.expand(c, 1, k, k))
        return StridedEquivalent(plain)
    return None


def _plain_conv_like(conv: nn.Conv2d, padding) -> nn.Conv2d:
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        padding,
        conv.dilation,
        conv.groups,
        bias=conv.bias is not None,
        device="meta",
    )
    # share the parameters (no copy): replace_conv reads weights, bias and requires_grad from them
    plain.weight = conv.weight
    plain.bias = conv.bias
    return plain


def after_spdify(model: nn.Module) -> None:
    """Library-specific finishing of a converted model: the step registered for each library whose
    modules it holds (the library already imported: the model's modules come from it)."""
    held = {type(m).__module__ for m in model.modules()}
    for library in sorted(set(INTEGRATIONS) | set(_FINISHERS)):
        if not any(name.startswith(library) for name in held):
            continue
        if library not in _FINISHERS and library in INTEGRATIONS:
            importlib.import_module(INTEGRATIONS[library])  # the integration registers itself
        finish = _FINISHERS.get(library)
        if finish is not None:
            finish(model)
