"""``set_spd_form``: train SPD-Conv layers as space-to-depth + conv, or as the equal strided conv.

Space-to-depth (block ``s``) followed by a stride-1 ``k x k`` conv is one ``s*k x s*k`` conv with
stride ``s`` of the input before space-to-depth, its weight a rearrangement of the SPD conv's
(:func:`~nostride.layers.spd_weight_to_strided`). In the ``"strided"`` form the SPD layers keep
their parameters, state-dict keys and function class and rearrange the weight differentiably on
every forward, so only the computation changes (no space-to-depth copy of the activations):
results and gradients agree with the ``"spd"`` form to float rounding, and checkpoints are
interchangeable. :func:`nostride.fuse` is the deployment counterpart (new modules, BatchNorm folded).
"""

from __future__ import annotations

from torch import nn

from ..layers.spd_conv import SPDConv
from .yolo.blocks import Focus
from .yolo.spd_form import set_yolo_spd_form

__all__ = ["SPD_FORMS", "set_spd_form"]

SPD_FORMS = ("spd", "strided")


def _plain_conv(conv: nn.Module) -> bool:
    """A stride-1, undilated, ungrouped, zero-padded conv with numeric padding (exactly foldable)."""
    return (type(conv) is nn.Conv2d and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
            and conv.groups == 1 and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))


def set_spd_form(model: nn.Module, form: str) -> int:
    """Compute ``model``'s SPD-Conv layers in ``form`` (``"spd"`` or ``"strided"``), in place.

    Covers :class:`~nostride.layers.SPDConv` (ResNet-SPD, YOLOv5 with SPDConv layers), YOLOv5's
    ``Focus`` and YOLOv5-SPD's standalone space-to-depth layers read by a C3 (directly or through
    a ``Concat``). Layers of another geometry (a strided, grouped or dilated conv after the
    space-to-depth) and anything else keep computing as they are.

    Returns:
        The number of space-to-depth layers computing in the strided form (0 for ``"spd"``).

    Raises:
        ValueError: for an unknown ``form``.
    """
    if form not in SPD_FORMS:
        raise ValueError(f"spd_form must be one of {SPD_FORMS}, got {form!r}")
    strided = form == "strided"
    count = 0
    for module in model.modules():
        if isinstance(module, SPDConv):
            module.strided = strided and _plain_conv(module.conv)
            count += module.strided
        elif isinstance(module, Focus):
            module.strided = strided and _plain_conv(module.conv.conv)
            count += module.strided
        elif hasattr(module, "yaml") and isinstance(getattr(module, "model", None), nn.ModuleList):
            count += set_yolo_spd_form(module, strided)
    return count
