"""Network conversions: ``spdify`` (strided -> SPD-Conv), ``convert_downsampling`` (strided -> any
downsampling operator) and ``fuse`` (the deployment form)."""

from .downsampling import convert_downsampling, downsampling_sites
from .fuse import fuse
from .geometry import AxisGeometry
from .modules import GroupedSpaceToDepth, SPDDownsample, grouped_space_to_depth
from .report import ConversionEntry, ConversionReport
from .spdify import spd_weight_from_strided, spdify

__all__ = [
    "AxisGeometry",
    "ConversionEntry",
    "ConversionReport",
    "GroupedSpaceToDepth",
    "convert_downsampling",
    "downsampling_sites",
    "SPDDownsample",
    "fuse",
    "grouped_space_to_depth",
    "spd_weight_from_strided",
    "spdify",
]
