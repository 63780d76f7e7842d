"""Figures for result files (PNG), drawn without pyplot.

matplotlib's object API on an Agg canvas keeps no global state and never switches the user's
backend (``matplotlib.use("Agg")`` would, e.g. inside a notebook), needs no display, and is safe
in worker threads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["new_figure", "save_figure"]


def new_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches with its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Lay out ``fig`` tightly and write it to ``path`` (parent folders created); returns the path."""
    import io

    from .atomic import atomic_write_bytes

    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()  # drawn in memory, then written atomically: never a torn image
    fig.savefig(buffer, format=path.suffix[1:].lower() or "png")
    return atomic_write_bytes(path, buffer.getvalue())
