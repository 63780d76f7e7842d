"""Classification plots: a row-normalised confusion matrix and per-class accuracy bars (PNG).

Figures are drawn with matplotlib's object API on the Agg canvas (:mod:`nostride.utils.figures`:
no pyplot global state, no display needed), so plotting is safe in worker threads and on headless
machines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ...utils.figures import new_figure, save_figure

__all__ = ["plot_confusion_matrix", "plot_per_class_accuracy"]

# Above these class counts the text would overlap: cell values and then tick labels are dropped.
_MAX_CELL_TEXT = 30
_MAX_TICK_LABELS = 60


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_confusion_matrix(
    confusion: torch.Tensor,
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Save the confusion matrix, each row normalised to sum to 1, as a PNG heat map.

    Rows are true classes, columns predicted classes; the diagonal is per-class recall. Up to 30
    classes the cells carry their value and the axes the class names; up to 60 only the names;
    beyond that (e.g. Tiny ImageNet's 200) just the heat map.

    Args:
        confusion: ``(C, C)`` counts (rows = true class).
        path: output ``.png`` file (parent folders are created).
        class_names: optional names for the axes.
        title: figure title (default: "Confusion matrix (row-normalised)").

    Returns:
        ``path``.
    """
    cm = torch.as_tensor(confusion).double()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square matrix, got shape {tuple(cm.shape)}")
    c = cm.shape[0]
    rows = cm.sum(1, keepdim=True)
    norm = (cm / rows.clamp(min=1)).numpy()  # classes without samples stay 0

    # grows with the class count while names/values are drawn; a plain heat map needs no more
    size = min(max(6.0, 0.45 * c + 2.5), 20.0 if c <= _MAX_TICK_LABELS else 10.0)
    fig = new_figure(size, size * 0.9)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "Confusion matrix (row-normalised)")
    if c <= _MAX_TICK_LABELS:
        labels = [_short(str(n)) for n in class_names] if class_names is not None else [str(i) for i in range(c)]
        ax.set_xticks(range(c), labels, rotation=90 if c > 10 or max(map(len, labels)) > 6 else 0,
                      fontsize=8 if c > 15 else 10)
        ax.set_yticks(range(c), labels, fontsize=8 if c > 15 else 10)
    if c <= _MAX_CELL_TEXT:
        fontsize = 9 if c <= 12 else 6
        for i in range(c):
            for j in range(c):
                value = norm[i, j]
                if value >= 0.005 or i == j:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize,
                            color="white" if value > 0.5 else "black")
    return save_figure(fig, path)


def plot_per_class_accuracy(
    per_class: Sequence[float | None],
    path: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Save per-class top-1 accuracy (percent) as a bar chart PNG.

    Up to 60 classes the bars are in class order and named; with more classes they are sorted
    (best first) without names, which shows the spread. Classes without samples are left out.

    Args:
        per_class: accuracy per class in percent (``None`` = no samples), as
            :meth:`ClassificationEvaluator.evaluate` returns it.
        path: output ``.png`` file.
        class_names: optional names.
        title: figure title.

    Returns:
        ``path``.
    """
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(per_class))]
    pairs = [(n, a) for n, a in zip(names, per_class) if a is not None]
    many = len(pairs) > _MAX_TICK_LABELS
    if many:
        pairs.sort(key=lambda p: -p[1])
    width = min(max(6.0, 0.35 * len(pairs) + 2.0), 10.0 if many else 16.0)
    fig = new_figure(width, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    values = [a for _, a in pairs]
    ax.bar(range(len(pairs)), values, color="tab:blue", width=1.0 if many else 0.8)
    mean = sum(values) / len(values) if values else float("nan")
    if values:
        ax.axhline(mean, color="tab:red", linestyle="--", linewidth=1)
    ax.set_ylim(0, 100)
    ax.set_ylabel("top-1 accuracy (%)")
    if many:
        ax.set_xlabel(f"classes, sorted by accuracy ({len(pairs)})")
        ax.set_xlim(-0.5, len(pairs) - 0.5)
    else:
        labels = [_short(n) for n, _ in pairs]
        long_names = len(pairs) * max(map(len, labels), default=0) > 50
        ax.set_xticks(range(len(pairs)), labels, rotation=90 if long_names else 0,
                      fontsize=8 if len(pairs) > 15 else 10)
    ax.set_title(title or f"Per-class accuracy (dashed: mean of classes, {mean:.1f}%)")
    return save_figure(fig, path)
