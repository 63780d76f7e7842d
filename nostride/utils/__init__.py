"""Small utilities shared across the package (profiling, devices, output folders and figures, model outputs)."""

from .device import select_device
from .outputs import output_tensors
from .paths import increment_path
from .profile import count_flops, count_parameters

__all__ = ["count_flops", "count_parameters", "increment_path", "output_tensors", "select_device"]
