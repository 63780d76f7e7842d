"""Network conversions: ``spdify`` (strided -> SPD-Conv) and ``fuse`` (the deployment form)."""

from .fuse import fuse

__all__ = ["fuse"]
