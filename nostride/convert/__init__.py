"""Network conversions: ``spdify`` (strided -> SPD-Conv) and ``fuse`` (the deployment form)."""

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
    "SPDDownsample",
    "fuse",
    "grouped_space_to_depth",
    "spd_weight_from_strided",
    "spdify",
]
