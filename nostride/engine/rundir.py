"""Run folders (``PROJECT/NAME``, ``NAME2``, ...): :func:`nostride.utils.increment_path`, re-exported here."""

from __future__ import annotations

from ..utils.paths import increment_path

__all__ = ["increment_path"]
