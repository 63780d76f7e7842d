"""ResNet-18/50 baselines and the paper's ResNet18-SPD / ResNet50-SPD (section 4.2, Table 3).

Three stems/layouts share one :class:`ResNet` class:

``"imagenet"`` (``resnet18``, ``resnet50``)
    torchvision's ResNet: 7x7 stride-2 conv, 3x3 stride-2 max-pool, four stages whose stages 2-4
    start with a stride-2 block (v1.5: the stride sits on the 3x3 conv). Module names and
    parameter shapes equal torchvision's, so its weights load with ``strict=True``.
``"cifar"`` (``resnet18_cifar``, ``resnet50_cifar``)
    the usual small-image baseline: 3x3 stride-1 stem conv, no max-pool, stages 2-4 strided as
    above (total downsampling 8).
``"spd"`` (``resnet18_spd``, ``resnet50_spd``)
    Table 3: ``spd1`` = SPD-Conv (3x3, ``width`` channels) replaces the stem conv, the max-pool is
    removed, and ``spd2``/``spd3``/``spd4`` = channel-preserving SPD-Conv layers (3x3) sit in
    front of ``layer2``/``layer3``/``layer4``, feeding both the residual branch and the shortcut of
    the stage's first block. Every block is stride 1, so no strided convolution or pooling remains
    (the shortcut projections become stride-1 1x1 convs). Total downsampling 16 (spd1-spd4).

docs/models.md has the per-layer tables and parameter/FLOP counts (builder docstrings: at 1000 classes).
"""

from __future__ import annotations

from typing import Type, Union

import torch
from torch import nn

from ..layers import SPDConv
from ._registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet50", "resnet18_spd", "resnet50_spd",
           "resnet18_cifar", "resnet50_cifar"]

_STEMS = ("imagenet", "cifar", "spd")


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (ResNet-18/34). Child names follow torchvision."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) bottleneck, ResNet v1.5: the stride is on the 3x3 conv."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = _conv1x1(in_ch, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_ch)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


class ResNet(nn.Module):
    """ResNet with a choice of stem/downsampling layout (see the module docstring).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: classifier outputs; ``0`` gives a model without a classifier (features only).
        in_chans: input image channels.
        width: channels of the stem and of stage 1 (stages use width x 1, 2, 4, 8); 64 is standard.
        stem: ``"imagenet"``, ``"cifar"`` or ``"spd"``.
        zero_init_residual: zero the last BN of every block so each starts as an identity
            (Goyal et al. 2017); torchvision's option of the same name.

    Attributes:
        num_features: channels entering the classifier.
        reduction: total downsampling factor of the feature map (32, 8 or 16).
    """

    def __init__(
        self,
        block: Block,
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_chans: int = 3,
        width: int = 64,
        stem: str = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if stem not in _STEMS:
            raise ValueError(f"stem must be one of {_STEMS}, got {stem!r}")
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        for name, value in (("num_classes", num_classes), ("in_chans", in_chans), ("width", width)):
            lowest = 0 if name == "num_classes" else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
                raise ValueError(f"{name} must be an int >= {lowest}, got {value!r}")
        self.stem_type = stem
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.width = width

        if stem == "spd":
            # Table 3 "spd1": SPD-Conv, 3x3 kernel, `width` output channels; no max-pool after it.
            self.spd1 = SPDConv(in_chans, width, kernel_size=3, scale=2)
        else:
            if stem == "imagenet":
                self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
            else:  # cifar: keep full resolution for 32x32 inputs
                self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()

        in_ch = width
        block_stride = 1 if stem == "spd" else 2
        for i, (n_blocks, mult) in enumerate(zip(layers, (1, 2, 4, 8)), start=1):
            if i > 1 and stem == "spd":
                # Table 3 "spd2".."spd4": the stage's downsampling, channel-preserving, in front of it.
                setattr(self, f"spd{i}", SPDConv(in_ch, in_ch, kernel_size=3, scale=2))
            stride = 1 if i == 1 else block_stride
            stage, in_ch = self._make_stage(block, in_ch, width * mult, n_blocks, stride)
            setattr(self, f"layer{i}", stage)

        self.num_features = in_ch
        self.reduction = {"imagenet": 32, "cifar": 8, "spd": 16}[stem]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(block: Block, in_ch: int, planes: int, n_blocks: int, stride: int) -> tuple[nn.Sequential, int]:
        out_ch = planes * block.expansion
        downsample = None
        if stride != 1 or in_ch != out_ch:
            downsample = nn.Sequential(_conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))
        blocks = [block(in_ch, planes, stride, downsample)]
        blocks += [block(out_ch, planes) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks), out_ch

    def _init_weights(self, zero_init_residual: bool) -> None:
        # torchvision's initialisation: He (fan_out) for convs, BN scale 1 / shift 0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    m.zero_init_last()

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one with ``num_classes`` outputs."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch (N, in_chans, H, W) -> last feature map (N, num_features, H/r, W/r)."""
        # hasattr (not self.stem_type) keeps the baselines scriptable: TorchScript resolves it while compiling
        if hasattr(self, "spd1"):
            x = self.layer1(self.spd1(x))
            x = self.layer2(self.spd2(x))
            x = self.layer3(self.spd3(x))
            x = self.layer4(self.spd4(x))
        else:
            x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
            x = self.layer4(self.layer3(self.layer2(x)))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> global average pool -> classifier logits (no softmax)."""
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_R18 = (BasicBlock, (2, 2, 2, 2))
_R50 = (Bottleneck, (3, 4, 6, 3))


def _build(arch: tuple[Block, tuple[int, int, int, int]], stem: str, num_classes: int, in_chans: int,
           width: int, zero_init_residual: bool) -> ResNet:
    block, layers = arch
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, width=width, stem=stem,
                  zero_init_residual=zero_init_residual)


@register_model(task="classify")
def resnet18(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 (torchvision layout and state-dict keys), 7x7/2 conv + 3x3/2 max-pool stem, 11.69 M params."""
    return _build(_R18, "imagenet", num_classes, in_chans, width, zero_init_residual)


@register_model(task="classify")
def resnet50(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 v1.5 (torchvision layout and state-dict keys), 7x7/2 conv + 3x3/2 max-pool stem, 25.56 M params."""
    return _build(_R50, "imagenet", num_classes, in_chans, width, zero_init_residual)


@register_model(task="classify")
def resnet18_spd(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet18-SPD (paper Table 3): SPD-Conv stem and stage downsampling, no strides/pooling, 14.78 M params."""
    return _build(_R18, "spd", num_classes, in_chans, width, zero_init_residual)


@register_model(task="classify")
def resnet50_spd(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet50-SPD (paper Table 3): SPD-Conv stem and stage downsampling, no strides/pooling, 75.10 M params."""
    return _build(_R50, "spd", num_classes, in_chans, width, zero_init_residual)


@register_model(task="classify")
def resnet18_cifar(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet-18 for small images: 3x3 stride-1 stem conv, no max-pool (downsampling 8), 11.68 M params."""
    return _build(_R18, "cifar", num_classes, in_chans, width, zero_init_residual)


@register_model(task="classify")
def resnet50_cifar(*, num_classes: int = 1000, in_chans: int = 3, width: int = 64,
        zero_init_residual: bool = False) -> ResNet:
    """ResNet-50 v1.5 for small images: 3x3 stride-1 stem conv, no max-pool (downsampling 8), 25.55 M params."""
    return _build(_R50, "cifar", num_classes, in_chans, width, zero_init_residual)
