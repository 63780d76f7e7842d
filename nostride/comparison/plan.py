"""``nostride compare --dry-run``: what a study would train, and what each arm costs, before any training.

Planning a study (on a laptop or a cluster) starts with its size: the arms at each image size
(``--match`` and ``--down`` add arms of their own), their parameters and FLOPs, how many runs are
already finished in the study folder, and the training compute still to spend, in arm-epochs
weighted by FLOPs, so the expensive arms stand out before an hour is spent on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .matching import ModelCost
from .study import Run, epochs_done

__all__ = ["StudyPlan", "plan_markdown"]


@dataclass
class StudyPlan:
    """What :func:`~nostride.comparison.compare` would do with ``dry_run=True``.

    Attributes:
        dir: the study folder (existing: the same study continues there; else the one it would create).
        exists: whether that folder holds this study already.
        runs: every run of the study, in training order.
        finished: for each run, whether its folder holds its final metrics.
        costs: parameters and FLOPs per (model, image size).
        markdown: the plan as printed.
    """

    dir: Path
    exists: bool
    runs: list[Run]
    finished: list[bool]
    costs: dict[tuple[str, int], ModelCost]
    markdown: str


def plan_markdown(runs: list[Run], finished: list[bool], costs: dict[tuple[str, int], ModelCost], epochs: int,
                  folder: Path, exists: bool) -> str:
    """The plan as a table per image size: each arm's parameters, GFLOPs, seeds finished and its share
    of the training still to do (FLOPs x epochs its runs have not trained yet; interrupted runs resume)."""
    arms: dict[tuple[int, str], list[int]] = {}
    for i, run in enumerate(runs):
        arms.setdefault((run.img_size, run.model.label), []).append(i)
    left = {key: sum(costs[(runs[i].model.text, runs[i].img_size)].flops * max(epochs - epochs_done(runs[i].folder), 0)
                     for i in idx if not finished[i]) for key, idx in arms.items()}
    total_left = sum(left.values())
    lines = []
    for size in dict.fromkeys(r.img_size for r in runs):
        lines += [f"### {size} x {size} pixels", "",
                  "| model | params (M) | GFLOPs | seeds finished | share of the training left |",
                  "|---|---:|---:|---:|---:|"]
        for (s, title), idx in arms.items():
            if s != size:
                continue
            cost = costs[(runs[idx[0]].model.text, size)]
            share = f"{100 * left[(s, title)] / total_left:.0f} %" if total_left else "-"
            lines.append(f"| {title} | {cost.params / 1e6:.3f} | {cost.flops / 1e9:.3g} | "
                         f"{sum(finished[i] for i in idx)} / {len(idx)} | {share} |")
        lines.append("")
    done = sum(finished)
    where = f"{folder} ({'continuing: ' + str(done) + ' finished' if exists else 'new'})"
    plural = (lambda k, noun: f"{k} {noun}{'' if k == 1 else 's'}")
    lines.append(f"{plural(len(runs), 'run')} of {plural(epochs, 'epoch')}, {len(runs) - done} to train; study folder {where}. "
                 "Nothing was trained (--dry-run).")
    return "\n".join(lines)
