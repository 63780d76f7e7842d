"""The SPD replacement of one strided layer, and its weights.

:func:`replace_conv` builds the :class:`~nostride.convert.SPDDownsample` (space-to-depth + stride-1
convolution) that takes the place of a strided ``nn.Conv2d``, :func:`replace_pool` the one for a
strided max- or average-pool; with ``init="preserve"`` their weights come from
:func:`spd_weight_from_strided`, so the new layer computes what the old one did (a max-pool starts
as the average of its window). :func:`~nostride.convert.spdify` decides which layers to replace.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.utils import _pair
from torch.nn.utils import parametrize

from .geometry import AxisGeometry
from .modules import SPDDownsample
from .thirdparty import StridedEquivalent, strided_equivalent

__all__ = ["replace_conv", "replace_pool", "spd_weight_from_strided"]


def replace_conv(name: str, conv: nn.Conv2d, kernel: tuple[int, int] | None, init: str) -> SPDDownsample:
    """SPD + stride-1 conv in place of the strided ``conv``; exact with ``init="preserve"``.

    ``conv`` may also be a foreign strided layer that :mod:`nostride.convert.thirdparty` knows
    (timm ``Conv2dSame``, ``BlurPool2d``): its plain-conv equivalent is converted.
    """
    where = f"spdify: layer {name!r} ({conv!r})"
    replaces = repr(conv)
    tf_same = False
    foreign = strided_equivalent(conv)
    if isinstance(foreign, str):
        raise ValueError(f"{where}: {foreign}; exclude it (exclude=[...])")
    if isinstance(foreign, StridedEquivalent):
        conv, tf_same = foreign.conv, foreign.tf_same
    elif type(conv).forward is not nn.Conv2d.forward or type(conv)._conv_forward is not nn.Conv2d._conv_forward:
        raise ValueError(
            f"{where}: {type(conv).__name__} overrides Conv2d's forward, so what it computes is unknown; "
            "exclude it (exclude=[...])"
        )
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"{where}: lazy convolution not initialised yet; run the model once before spdify")
    if parametrize.is_parametrized(conv):
        raise ValueError(f"{where}: parametrized weight (e.g. weight norm); remove the parametrization first")
    if isinstance(conv.padding, str):
        if conv.padding != "valid":
            raise ValueError(f"{where}: padding={conv.padding!r} with a stride is not supported")
        padding = (0, 0)
    else:
        padding = tuple(int(p) for p in conv.padding)
    mode = conv.padding_mode
    # a non-zero padding mode is applied to the input first; the geometry then has no padding
    pre_pad: tuple[int, int] | str | None = padding if mode != "zeros" and any(padding) else None
    if tf_same:
        pre_pad, padding = "same", (0, 0)
    geo_padding = (0, 0) if pre_pad else padding
    geometry = tuple(
        AxisGeometry(conv.kernel_size[i], conv.stride[i], geo_padding[i], conv.dilation[i]) for i in (0, 1)
    )
    new_kernel = _choose_kernel(where, geometry, kernel, init)
    weight = conv.weight
    new = SPDDownsample(
        conv.in_channels,
        conv.out_channels,
        geometry,  # type: ignore[arg-type]
        new_kernel,
        groups=conv.groups,
        bias=conv.bias is not None,
        input_padding=pre_pad,
        padding_mode=mode if isinstance(pre_pad, tuple) else "zeros",
        replaces=replaces,
        device=weight.device,
        dtype=weight.dtype,
    )
    if init == "preserve":
        with torch.no_grad():
            new.conv.weight.copy_(spd_weight_from_strided(weight.detach(), geometry, new_kernel))  # type: ignore[arg-type]
            if conv.bias is not None:
                new.conv.bias.copy_(conv.bias.detach())
    new.conv.weight.requires_grad_(weight.requires_grad)
    if conv.bias is not None:
        new.conv.bias.requires_grad_(conv.bias.requires_grad)
    return new


def _choose_kernel(
    where: str, geometry: tuple[AxisGeometry, AxisGeometry], kernel: tuple[int, int] | None, init: str
) -> tuple[int, int]:
    need = (geometry[0].min_odd_kernel(), geometry[1].min_odd_kernel())
    if kernel is None:
        return need
    if init == "preserve" and (kernel[0] < need[0] or kernel[1] < need[1]):
        raise ValueError(
            f"{where}: after space-to-depth a kernel of at least {need[0]}x{need[1]} is needed to compute "
            f"exactly what the strided layer computed, but kernel_size={kernel[0]}x{kernel[1]} was asked "
            "for; use kernel_size=None (automatic per layer), a larger kernel, init='random', or exclude it"
        )
    return kernel


def spd_weight_from_strided(
    weight: torch.Tensor, geometry: tuple[AxisGeometry, AxisGeometry], kernel: tuple[int, int]
) -> torch.Tensor:
    """Weight of the stride-1 conv over space-to-depth that equals a strided conv.

    Args:
        weight: (O, Cg, kh, kw) weight of the strided convolution (Cg = input channels per group).
        geometry: its (height, width) geometry.
        kernel: odd (Kh, Kw) kernel of the new convolution (large enough for every tap).

    Returns:
        (O, sh*sw*Cg, Kh, Kw) weight: tap (u, v) of the strided conv, which reads space-to-depth
        offset (a, b) of block (r, c), lands at [:, (r + sh*c)*Cg : ..., Kh//2 + a, Kw//2 + b];
        everything else is zero.
    """
    gh, gw = geometry
    out_ch, cg = weight.shape[:2]
    kh, kw = kernel
    new = weight.new_zeros(out_ch, gh.stride * gw.stride * cg, kh, kw)
    for u, a, r in gh.taps():
        for v, b, c in gw.taps():
            block = r + gh.stride * c
            new[:, block * cg : (block + 1) * cg, kh // 2 + a, kw // 2 + b] = weight[:, :, u, v]
    return new


def replace_pool(
    name: str,
    pool: nn.Module,
    kind: str,
    channels: int,
    kernel: tuple[int, int] | None,
    init: str,
    pool_conv: str,
    device: torch.device,
    dtype: torch.dtype,
) -> SPDDownsample:
    """SPD + channel-preserving conv in place of a strided max- or average-pool."""
    where = f"spdify: layer {name!r} ({pool!r})"
    if type(pool).forward not in (nn.MaxPool2d.forward, nn.AvgPool2d.forward):
        raise ValueError(
            f"{where}: {type(pool).__name__} overrides the pooling layer's forward, so what it computes is "
            "unknown; exclude it (exclude=[...]) or keep pools (pool='keep')"
        )
    if getattr(pool, "return_indices", False):
        raise ValueError(f"{where}: returns indices (for MaxUnpool); exclude it or keep pools (pool='keep')")
    ks = _pair(pool.kernel_size)
    stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    padding = _pair(pool.padding)
    dilation = _pair(pool.dilation) if kind == "maxpool" else (1, 1)
    geometry = tuple(AxisGeometry(ks[i], stride[i], padding[i], dilation[i], bool(pool.ceil_mode)) for i in (0, 1))
    new_kernel = _choose_kernel(where, geometry, kernel, init)  # type: ignore[arg-type]

    divisor = float(ks[0] * ks[1])
    avg_divisor = None
    if kind == "avgpool" and init == "preserve":
        if pool.divisor_override:
            divisor = float(pool.divisor_override)
        elif pool.ceil_mode or (not pool.count_include_pad and any(padding)):
            # the divisor changes at the border: keep PyTorch's per-position divisor exactly
            avg_divisor = "include_pad" if pool.count_include_pad else "exclude_pad"
    groups = channels if pool_conv == "depthwise" else 1
    new = SPDDownsample(
        channels,
        channels,
        geometry,  # type: ignore[arg-type]
        new_kernel,
        groups=groups,
        bias=False,
        avg_divisor=avg_divisor,
        replaces=repr(pool),
        device=device,
        dtype=dtype,
    )
    if init == "preserve":
        # average of the window (max-pool: the mean of what it took the max of, padding as zeros)
        depthwise = torch.full((channels, 1, *ks), 1.0 / divisor, device=device, dtype=dtype)
        w = spd_weight_from_strided(depthwise, geometry, new_kernel)  # type: ignore[arg-type]
        if groups == 1:  # channel c of the output reads only channel c of each SPD block
            blocks = w.shape[1]
            full = w.new_zeros(channels, blocks, channels, *new_kernel)
            idx = torch.arange(channels, device=device)
            full[idx, :, idx] = w
            w = full.reshape(channels, blocks * channels, *new_kernel)
        with torch.no_grad():
            new.conv.weight.copy_(w)
    return new
