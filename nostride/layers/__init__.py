"""Building blocks: space-to-depth, SPD-Conv, the other downsampling operators, conv blocks, activations."""

from .activations import ActLike, make_act
from .conv import ConvBnAct, same_padding
from .fused import FusedSPDConv, SPDPad, SplitInputConv, spd_strided_conv2d, spd_weight_to_strided
from .space_to_depth import DepthToSpace, SpaceToDepth, depth_to_space, fixed_size_graph, space_to_depth
from .spd_conv import SPDConv
from .downsample import (
    ADown, BlurConv, BlurPool2d, ConvEqual, DownsampleOp, HWD, HaarDownsample, MaxBlurPool, PoolConv, SCDown,
    SpaceToDepthConvAfter, build_downsample, downsample_op, list_downsample_ops,
)

__all__ = [
    "ADown", "BlurConv", "BlurPool2d", "ConvEqual", "DownsampleOp", "HWD", "HaarDownsample", "MaxBlurPool",
    "PoolConv", "SCDown", "SpaceToDepthConvAfter", "build_downsample", "downsample_op", "list_downsample_ops",
    "ActLike",
    "ConvBnAct",
    "DepthToSpace",
    "FusedSPDConv",
    "SPDConv",
    "SPDPad",
    "SplitInputConv",
    "SpaceToDepth",
    "depth_to_space",
    "fixed_size_graph",
    "make_act",
    "same_padding",
    "space_to_depth",
    "spd_strided_conv2d",
    "spd_weight_to_strided",
]
