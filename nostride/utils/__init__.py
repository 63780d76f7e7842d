"""Small utilities shared across the package (profiling, device selection, output folders)."""

from .device import select_device
from .paths import increment_path
from .profile import count_flops, count_parameters

__all__ = ["count_flops", "count_parameters", "increment_path", "select_device"]
