"""What each downsampling operator puts in place of one strided layer (used by
:func:`nostride.convert_downsampling`).

Three kinds of site:

* a **block**: a strided ``Conv2d`` that is the ``conv`` of a conv-norm-activation block (children
  ``conv``, ``bn``, ``act``: nostride's ``ConvBnAct`` and YOLOv5 ``Conv``, ultralytics ``Conv``). The
  whole block is replaced by the operator's block, so its norm and activation sit where its paper
  puts them (BlurPool blurs after the activation; ADown and SCDown bring their own conv-BN-SiLU).
* a **bare** strided ``Conv2d`` (torchvision, timm: the norm and activation that follow are other
  modules): it is replaced by the operator's linear core, and the model's own norm/activation follow.
* a strided **pool** (max or average): replaced by the operator's channel-preserving form.

A builder returns the new module, or a string saying why the operator cannot serve the layer (the
layer is then left as it was and the reason reported).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Union

from torch import nn
from torch.nn.modules.utils import _pair

from ..layers.downsample import (
    ADown, BlurConv, BlurPool2d, HWD, MaxBlurPool, PoolConv, SCDown, SpaceToDepthConvAfter,
)
from .fuse import _fuse_spd_downsample
from .replace import replace_conv, replace_pool

__all__ = ["ConvSite", "PoolSite", "SITE_BUILDERS", "DownsampleBlock"]

Built = Union[nn.Module, str]


class DownsampleBlock(nn.Module):
    """``act(bn(conv(x)))`` around a downsampling core (a block site converted to conv-equal).

    Children ``conv``, ``bn``, ``act`` as the block it replaced; :func:`nostride.fuse` folds ``bn``.
    """

    def __init__(self, conv: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.conv, self.bn, self.act = conv, bn, act

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def fuse_module(self) -> nn.Module:
        """Hook of :func:`nostride.fuse`: a Sequential, whose (conv, BatchNorm) pair fuse folds."""
        return nn.Sequential(self.conv, self.bn, self.act)


@dataclass
class ConvSite:
    """A strided ``Conv2d`` to replace; ``bn``/``act`` are set for a block site."""

    name: str
    conv: nn.Conv2d
    init: str
    bn: nn.Module | None = None
    act: nn.Module | None = None

    @property
    def block(self) -> bool:
        return self.bn is not None


@dataclass
class PoolSite:
    """A strided max- or average-pool over ``channels`` channels."""

    name: str
    pool: nn.Module
    kind: str  # "maxpool" or "avgpool"
    channels: int
    init: str
    device: object = None
    dtype: object = None


@dataclass(frozen=True)
class SiteBuilders:
    conv: Callable[[ConvSite], Built]
    pool: Callable[[PoolSite], Built]


def _fresh_bn(bn: nn.Module | None, channels: int) -> nn.Module:
    """A new BatchNorm with the replaced block's eps and momentum (YOLO's differ from PyTorch's)."""
    if isinstance(bn, nn.BatchNorm2d):
        return nn.BatchNorm2d(channels, eps=bn.eps, momentum=bn.momentum)
    return nn.BatchNorm2d(channels)


def _dense_kernel(conv: nn.Conv2d) -> int | str:
    """The odd kernel of the stride-1 conv that takes a strided conv's place (k, or k - 1 for even k)."""
    k = _pair(conv.kernel_size)
    if k[0] != k[1]:
        return f"non-square kernel {k[0]}x{k[1]}"
    if any(d != 1 for d in _pair(conv.dilation)):
        return "dilated convolution"
    return k[0] if k[0] % 2 else max(k[0] - 1, 1)


def _check_stride_2(stride) -> str | None:
    s = _pair(stride)
    if s != (2, 2):
        return f"stride {s[0]}x{s[1]}: the operator halves height and width (stride 2 only)"
    return None


def _check_conv(site: ConvSite, dense_groups: bool) -> str | None:
    conv = site.conv
    if type(conv) is not nn.Conv2d:
        return f"{type(conv).__name__} is not a plain Conv2d"
    reason = _check_stride_2(conv.stride)
    if reason:
        return reason
    if isinstance(conv.padding, str):
        return f"padding={conv.padding!r}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if dense_groups and conv.groups != 1:
        return f"grouped convolution (groups={conv.groups}): the operator is defined for dense convolutions"
    return None


def _act(site: ConvSite) -> nn.Module:
    return copy.deepcopy(site.act) if site.act is not None else nn.Identity()


# --- conv-equal (exact): SPD + stride-1 conv, then written as the one strided conv ---------------


def _conv_equal_core(make: Callable[[], nn.Module]) -> Built:
    try:
        spd = make()
    except ValueError as e:
        return str(e).split(": ", 2)[-1]
    # a pool whose SPD map needs zero rows appended (ceil_mode) stays in the SPD form: the same function
    return _fuse_spd_downsample(spd)


def _conv_equal_conv(site: ConvSite) -> Built:
    core = _conv_equal_core(lambda: replace_conv(site.name, site.conv, None, site.init))
    if isinstance(core, str) or not site.block:
        return core
    return DownsampleBlock(core, site.bn, site.act)


def _conv_equal_pool(site: PoolSite) -> Built:
    return _conv_equal_core(lambda: replace_pool(
        site.name, site.pool, site.kind, site.channels, None, site.init, "full", site.device, site.dtype))


# --- new operators ------------------------------------------------------------------------------


def _conv_then_down(site: ConvSite, make: Callable[..., nn.Module],
                    bn_owner: Callable[[nn.Module], nn.Module]) -> Built:
    """A strided conv replaced by ``make(conv, kernel, **options)`` (a stride-1 conv and its
    downsampling): in a conv-norm-act block with a fresh norm (on ``bn_owner(new)``) and the block's
    activation, a bare conv with neither; a reason in words when the operator cannot serve it."""
    reason = _check_conv(site, dense_groups=False)
    k = _dense_kernel(site.conv)
    if reason or isinstance(k, str):
        return reason or k
    c = site.conv
    if site.block:
        m = make(c, k, act=_act(site))
        bn_owner(m).bn = _fresh_bn(site.bn, c.out_channels)
        return m
    return make(c, k, norm=False, act=None, bias=c.bias is not None)


def _blur_conv(filt: int) -> Callable[[ConvSite], Built]:
    def build(site: ConvSite) -> Built:
        return _conv_then_down(site, lambda c, k, **kw: BlurConv(c.in_channels, c.out_channels, k, filt,
                                                                  groups=c.groups, **kw), lambda m: m)
    return build


def _blur_pool(filt: int) -> Callable[[PoolSite], Built]:
    def build(site: PoolSite) -> Built:
        p = site.pool
        reason = _check_stride_2(p.stride if p.stride is not None else p.kernel_size)
        if reason:
            return reason
        if site.kind == "avgpool":  # the paper: an average pool becomes the blur itself
            return BlurPool2d(site.channels, filt)
        k, pad = _pair(p.kernel_size), _pair(p.padding)
        if k[0] != k[1] or pad[0] != pad[1] or any(d != 1 for d in _pair(p.dilation)):
            return "non-square or dilated max-pool"
        return MaxBlurPool(site.channels, k[0], pad[0], filt)
    return build


def _hwd_conv(site: ConvSite) -> Built:
    reason = _check_conv(site, dense_groups=True)
    if reason:
        return reason
    c = site.conv
    if site.block:
        m = HWD(c.in_channels, c.out_channels, act=_act(site))
        m.bn = _fresh_bn(site.bn, c.out_channels)
        return m
    return HWD(c.in_channels, c.out_channels, norm=False, act=None, bias=c.bias is not None)


def _hwd_pool(site: PoolSite) -> Built:
    p = site.pool
    return _check_stride_2(p.stride if p.stride is not None else p.kernel_size) or HWD(site.channels, site.channels)


def _yolo_op(cls) -> tuple[Callable[[ConvSite], Built], Callable[[PoolSite], Built]]:
    def check(i: int, o: int) -> str | None:
        if cls is ADown and (i % 2 or o % 2):
            return f"ADown splits channels in halves; {i} -> {o} channels are not both even"
        return None

    def conv(site: ConvSite) -> Built:
        reason = _check_conv(site, dense_groups=True)
        c = site.conv
        return reason or check(c.in_channels, c.out_channels) or cls(c.in_channels, c.out_channels)

    def pool(site: PoolSite) -> Built:
        p = site.pool
        reason = _check_stride_2(p.stride if p.stride is not None else p.kernel_size)
        return reason or check(site.channels, site.channels) or cls(site.channels, site.channels)
    return conv, pool


def _pool_conv(kind: str) -> tuple[Callable[[ConvSite], Built], Callable[[PoolSite], Built]]:
    def conv(site: ConvSite) -> Built:
        return _conv_then_down(site, lambda c, k, **kw: PoolConv(c.in_channels, c.out_channels, k, kind,
                                                                  groups=c.groups, **kw), lambda m: m.conv)

    def pool(site: PoolSite) -> Built:
        p = site.pool
        reason = _check_stride_2(p.stride if p.stride is not None else p.kernel_size)
        return reason or PoolConv(site.channels, site.channels, 3, kind)
    return conv, pool


def _conv_spd_conv(site: ConvSite) -> Built:
    reason = _check_conv(site, dense_groups=True)
    k = _dense_kernel(site.conv)
    if reason or isinstance(k, str):
        return reason or k
    c = site.conv
    if c.out_channels % 4:
        return f"{c.out_channels} output channels: conv-spd needs a multiple of 4"
    if site.block:
        return SpaceToDepthConvAfter(c.in_channels, c.out_channels, k, act=_act(site))
    return SpaceToDepthConvAfter(c.in_channels, c.out_channels, k, norm=False, act=None)


def _conv_spd_pool(site: PoolSite) -> Built:
    p = site.pool
    reason = _check_stride_2(p.stride if p.stride is not None else p.kernel_size)
    if reason:
        return reason
    if site.channels % 4:
        return f"{site.channels} channels: conv-spd needs a multiple of 4"
    return SpaceToDepthConvAfter(site.channels, site.channels, 3)


_adown = _yolo_op(ADown)
_scdown = _yolo_op(SCDown)
_avg = _pool_conv("avg")
_max = _pool_conv("max")

# "strided" and "spd" are not here: convert_downsampling keeps the model / calls spdify for them
SITE_BUILDERS: dict[str, SiteBuilders] = {
    "conv-equal": SiteBuilders(_conv_equal_conv, _conv_equal_pool),
    "conv-spd": SiteBuilders(_conv_spd_conv, _conv_spd_pool),
    "blurpool": SiteBuilders(_blur_conv(3), _blur_pool(3)),
    "blurpool5": SiteBuilders(_blur_conv(5), _blur_pool(5)),
    "hwd": SiteBuilders(_hwd_conv, _hwd_pool),
    "adown": SiteBuilders(*_adown),
    "scdown": SiteBuilders(*_scdown),
    "avgpool-conv": SiteBuilders(*_avg),
    "maxpool-conv": SiteBuilders(*_max),
}
