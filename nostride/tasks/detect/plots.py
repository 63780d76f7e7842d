"""Plots of a detection evaluation: PR curve, F1 curve, confusion matrix, AP by object size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...utils.figures import new_figure, save_figure

__all__ = ["plot_pr_curve", "plot_f1_curve", "plot_confusion_matrix", "plot_ap_by_size", "plot_all"]

_MAX_LEGEND = 21  # per-class curves get a legend entry up to this many classes


def _names(classes: np.ndarray, names: Sequence[str]) -> list[str]:
    return [names[int(c)] if int(c) < len(names) else str(int(c)) for c in classes]


def plot_pr_curve(curves: dict[str, Any], names: Sequence[str], path: str | os.PathLike) -> Path:
    """Precision against recall at IoU 0.5: one grey/coloured line per class, the class mean in blue."""
    fig = new_figure(9, 6)
    ax = fig.add_subplot(1, 1, 1)
    px, pr, ap50 = curves["px"], curves["pr"], curves["ap50"]
    labels = _names(curves["classes"], names)
    for i in range(len(pr)):
        kw = {"label": f"{labels[i]} {ap50[i]:.3f}"} if len(pr) < _MAX_LEGEND else {"color": "grey"}
        ax.plot(px, pr[i], linewidth=1, **kw)
    if len(pr):
        ax.plot(px, pr.mean(0), linewidth=3, color="blue", label=f"all classes {ap50.mean():.3f} mAP@0.5")
    ax.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1), title="Precision-recall (IoU 0.5)")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=7)
    return save_figure(fig, path)


def plot_f1_curve(curves: dict[str, Any], names: Sequence[str], path: str | os.PathLike) -> Path:
    """F1 against confidence, per class and the class mean (its maximum picks the reported P and R)."""
    fig = new_figure(9, 6)
    ax = fig.add_subplot(1, 1, 1)
    px, f1 = curves["px"], curves["f1_curve"]
    labels = _names(curves["classes"], names)
    for i in range(len(f1)):
        kw = {"label": labels[i]} if len(f1) < _MAX_LEGEND else {"color": "grey"}
        ax.plot(px, f1[i], linewidth=1, **kw)
    if len(f1):
        y = f1.mean(0)
        ax.plot(px, y, linewidth=3, color="blue", label=f"all classes {y.max():.2f} at {px[y.argmax()]:.3f}")
    ax.set(xlabel="Confidence", ylabel="F1", xlim=(0, 1), ylim=(0, 1), title="F1 against confidence")
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left", fontsize=7)
    return save_figure(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> Path:
    """Column-normalised confusion matrix ``[predicted, true]`` with the background row and column."""
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / (m.sum(0, keepdims=True) + 1e-9)
    norm[norm < 0.005] = np.nan
    n = m.shape[0]
    size = min(16, 4 + 0.25 * n)
    fig = new_figure(size + 2, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046)
    labels = list(names)[: n - 1] + ["background"]
    if n <= 31:
        ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels, fontsize=7)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if not np.isnan(norm[i, j]):
                        ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="True", ylabel="Predicted", title=confusion_title(m))
    ax.title.set_fontsize(9)
    return save_figure(fig, path)


def confusion_title(matrix: np.ndarray) -> str:
    """The confusion matrix's title; says so when no detection reached it (every count in the
    background row: each object missed), which a blue background row alone does not tell."""
    m = np.asarray(matrix)
    if not m.sum():
        return "Confusion matrix: empty (no objects and no detections)"
    if not m[:-1].sum():
        return ("Confusion matrix: no detections above its\nconfidence threshold (0.25): every object\n"
                "counts as missed (background row)")
    return "Confusion matrix (columns sum to 1)"


# the rule as docs/evaluation.md states it (pycocotools' areaRng, bounds inclusive)
AREA_RULE = "box area in original-image pixels: small ≤ 32², medium 32²-96², large ≥ 96²"


def plot_ap_by_size(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """mAP50-95 and mAP50 for small / medium / large objects next to the overall figures."""
    groups = ["small", "medium", "large", "all"]
    ap = [metrics.get(f"AP_{g}") for g in groups[:3]] + [metrics.get("mAP50-95")]
    ap50 = [metrics.get(f"AP50_{g}") for g in groups[:3]] + [metrics.get("mAP50")]
    counts = [metrics.get(f"instances_{g}", 0) for g in groups[:3]] + [metrics.get("instances", 0)]
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(groups))
    for off, vals, label in ((-0.2, ap, "mAP50-95"), (0.2, ap50, "mAP50")):
        bars = ax.bar(x + off, [v if v is not None else 0 for v in vals], width=0.4, label=label)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, b.get_height(), "n/a" if v is None else f"{v:.3f}",
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{g}\n({c} objects)" for g, c in zip(groups, counts)])
    ax.set(ylabel="AP", ylim=(0, 1), title=f"AP by object size, COCO's rule:\n{AREA_RULE}")
    ax.title.set_fontsize(9)
    ax.legend()
    return save_figure(fig, path)


def plot_all(metrics: dict[str, Any], curves: dict[str, Any] | None, matrix: np.ndarray | None,
             names: Sequence[str], save_dir: str | os.PathLike) -> list[Path]:
    """Write every plot of an evaluation into ``save_dir``; returns the files."""
    save_dir = Path(save_dir)
    out = []
    if curves and "px" in curves:
        out.append(plot_pr_curve(curves, names, save_dir / "PR_curve.png"))
        out.append(plot_f1_curve(curves, names, save_dir / "F1_curve.png"))
    if matrix is not None:
        out.append(plot_confusion_matrix(matrix, names, save_dir / "confusion_matrix.png"))
    out.append(plot_ap_by_size(metrics, save_dir / "AP_by_size.png"))
    return out
