"""Charts of a study (PNG, no pyplot): the compared metric against GFLOPs, and against image size."""

from __future__ import annotations

import math
from pathlib import Path

from ..utils.figures import new_figure, save_figure
from .report import ModelRow

__all__ = ["error_bar_note", "plot_metric_vs_flops", "plot_metric_vs_img_size"]


def _family(row: ModelRow) -> str:
    """One line per model across image sizes: a matched baseline's width changes with the size."""
    if row.spec.matched_to:
        return f"{row.spec.name} ({row.spec.match_metric}-matched to {row.spec.matched_to})"
    return row.spec.label


def _style(row: ModelRow) -> dict:
    return {"marker": "s" if row.spec.is_spd else "o", "linestyle": "-" if row.spec.is_spd else "--"}


def error_bar_note(rows: list[ModelRow], metric: str) -> str:
    """What the error bars are: the standard deviation over seeds (none with one seed)."""
    seeds = sorted({r.summary(metric).n for r in rows if r.summary(metric).n})
    if not seeds or seeds == [1]:
        return "one seed per model: no error bars"
    n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
    return f"mean of {n} seeds; error bars: ± 1 standard deviation over seeds"


def _gflops_label(g: float) -> str:
    return f"{g:.3g}" if g < 100 else f"{g:.0f}"


def plot_metric_vs_flops(rows: list[ModelRow], metric: str, label: str, path: str | Path) -> Path:
    """Mean metric (error bar: std over seeds, said on the chart) against GFLOPs, one panel per image
    size; SPD models drawn as squares, strided ones as circles; the x ticks are the models' GFLOPs."""
    sizes = sorted({r.img_size for r in rows}, reverse=True)
    fig = new_figure(4.6 * len(sizes), 4.1)
    axes = fig.subplots(1, len(sizes), squeeze=False)[0]
    for ax, size in zip(axes, sizes):
        ticks = set()
        for r in (r for r in rows if r.img_size == size):
            s = r.summary(metric)
            if s.n == 0:
                continue
            err = 0.0 if math.isnan(s.std) else s.std
            ax.errorbar([r.flops / 1e9], [s.mean], yerr=[err], fmt=_style(r)["marker"], capsize=3,
                        label=r.spec.label)
            ticks.add(r.flops / 1e9)
        ax.set_xscale("log")  # models differ in cost by factors: equal ratios, equal distances
        shown = _spaced(sorted(ticks))
        ax.set_xticks(shown, [_gflops_label(t) for t in shown])
        ax.set_xticks([], minor=True)  # plain numbers only, no 10^x labels between them
        if len(ticks) == 1:
            t = next(iter(ticks))
            ax.set_xlim(t / 1.5, t * 1.5)
        else:
            ax.set_xlim(min(ticks) / 1.25, max(ticks) * 1.25)
        ax.set_xlabel("GFLOPs (batch 1; log axis, ticks at the models)")
        ax.set_ylabel(label)
        ax.set_title(f"{size} x {size} px", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(error_bar_note(rows, metric), fontsize=8)
    return save_figure(fig, path)


def plot_metric_vs_img_size(rows: list[ModelRow], metric: str, label: str, path: str | Path) -> Path:
    """Mean metric (+- std) against image size, one line per model."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    families: dict[str, list[ModelRow]] = {}
    for r in rows:
        families.setdefault(_family(r), []).append(r)
    for name, fam in families.items():
        fam = sorted((r for r in fam if r.summary(metric).n), key=lambda r: r.img_size)
        if not fam:
            continue
        xs = [r.img_size for r in fam]
        ys = [r.summary(metric).mean for r in fam]
        es = [0.0 if math.isnan(r.summary(metric).std) else r.summary(metric).std for r in fam]
        ax.errorbar(xs, ys, yerr=es, capsize=3, label=name, **_style(fam[0]))
    ax.set_xscale("log", base=2)
    sizes = sorted({r.img_size for r in rows})
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("image size (pixels)")
    ax.set_ylabel(label)
    ax.set_title(error_bar_note(rows, metric), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def _spaced(ticks: list[float], min_ratio: float = 1.12) -> list[float]:
    """The sorted ``ticks`` without those closer than ``min_ratio`` to the last one kept (on a log
    axis, labels of models of nearly equal cost would print over each other)."""
    kept: list[float] = []
    for t in ticks:
        if not kept or t >= kept[-1] * min_ratio:
            kept.append(t)
    return kept
