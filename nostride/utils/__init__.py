"""Small utilities shared across the package (profiling)."""

from .profile import count_flops, count_parameters

__all__ = ["count_flops", "count_parameters"]
