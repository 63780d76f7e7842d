"""Small utilities shared across the package (profiling, device selection)."""

from .device import select_device
from .profile import count_flops, count_parameters

__all__ = ["count_flops", "count_parameters", "select_device"]
