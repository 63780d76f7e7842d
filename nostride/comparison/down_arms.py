"""``compare --down``: one arm per downsampling operator from a base model, optionally widened to the
most expensive arm's FLOPs, and the report's operator section (ranks by metric and by cost, each arm
against the strided one, and the null check: SPD-Conv against conv-equal, the same function class)."""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

from .report import ModelRow
from .specs import ModelSpec
from .stats import paired_difference

__all__ = ["DEFAULT_DOWN_OPS", "down_arms", "match_down_arms", "down_section"]

# what `--down` without a list compares (any registered operator can be named)
DEFAULT_DOWN_OPS = ("strided", "spd", "conv-equal", "blurpool", "hwd", "adown", "scdown")


def parse_down(down: str | Sequence[str]) -> list[str]:
    """``"strided,hwd"`` / ``["strided", "hwd"]`` / ``"all"`` -> operator names (unknown ones list the known)."""
    from nostride.layers import downsample_op

    items = [p.strip() for p in down.split(",")] if isinstance(down, str) else [str(p).strip() for p in down]
    items = [p for p in items if p]
    if items == ["all"] or not items:
        items = list(DEFAULT_DOWN_OPS)
    ops = [downsample_op(p).name for p in items]
    if len(set(ops)) != len(ops):
        raise ValueError(f"--down lists an operator twice: {', '.join(items)}")
    return ops


def down_arms(bases: list[ModelSpec], ops: list[str]) -> list[ModelSpec]:
    """One spec per (base model, operator): ``base@...,down=OP``.

    Raises:
        ValueError: a base is itself converted (``spdify:``), already has ``down=``, or has no
            downsampling sites (an SPD model).
    """
    from nostride.convert import downsampling_sites
    from nostride.models import create_model

    arms = []
    for base in bases:
        if base.spdify or "down" in base.options:
            raise ValueError(f"compare --down: give the base model without spdify:/down= ({base.text})")
        options = {k: v for k, v in base.options.items()}
        probe = create_model(base.name, **{k: v for k, v in options.items() if k != "num_classes"})
        if not downsampling_sites(probe):
            raise ValueError(f"compare --down: model {base.text!r} has no downsampling sites (strided convolutions "
                             "or pooling layers) to put the operators in; name a strided model (e.g. resnet18, yolov5n)")
        arms += [base.with_options(down=op) for op in ops]
    return arms


def match_down_arms(arms: list[ModelSpec], metric: str, num_classes: int, img_size: int,
                    note: Callable[[str], None]) -> list[ModelSpec]:
    """Each arm widened until its ``metric`` ("flops" or "params") is closest to the most expensive arm's
    (that arm itself unchanged)."""
    from .matching import match_baseline, model_cost

    target = max(arms, key=lambda s: model_cost(s, num_classes, img_size).get(metric))
    out = []
    for arm in arms:
        if arm == target:
            out.append(arm)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            matched, _ = match_baseline(arm, target, metric, num_classes, img_size)
        for w in caught:
            note(str(w.message))
        out.append(matched)
    return out


def _op(row: ModelRow) -> str:
    return str(row.spec.options.get("down", "strided"))


def down_section(rows: list[ModelRow], metric: str, label: str, higher_is_better: bool = True) -> str:
    """Markdown: per image size, arms ranked by metric and by cost, each against the strided arm, and the
    null check (SPD against conv-equal) in words."""
    lines = ["## Downsampling operators", ""]
    for size in sorted({r.img_size for r in rows}, reverse=True):
        arms = [r for r in rows if r.img_size == size and "down" in r.spec.options]
        if not arms:
            continue
        sign = 1 if higher_is_better else -1
        by_metric = sorted(arms, key=lambda r: -sign * _mean(r, metric))
        rank_cost = {id(r): i + 1 for i, r in enumerate(sorted(arms, key=lambda r: (r.flops, r.params)))}
        strided = next((r for r in arms if _op(r) == "strided"), None)
        lines += [f"### Operators at {size} x {size} pixels, ranked by {label}", "",
                  f"| rank | operator | {label} (mean ± std) | against strided (95 % interval) | GFLOPs | params (M) "
                  "| cost rank (FLOPs) |", "|---:|---|---:|---|---:|---:|---:|"]
        for i, r in enumerate(by_metric, 1):
            vs = "—"
            if strided is not None and r is not strided:
                d = paired_difference(r.scores[metric], strided.scores[metric])
                vs = f"{d.format()} {d.verdict('higher' if higher_is_better else 'lower')}"
            lines.append(f"| {i} | {_op(r)} ({r.spec.label}) | {r.summary(metric).format()} | {vs} | "
                         f"{r.flops / 1e9:.3g} | {r.params / 1e6:.3f} | {rank_cost[id(r)]} |")
        lines += ["", _null_check(arms, metric, label, size), ""]
    return "\n".join(lines).rstrip() + "\n"


def _mean(row: ModelRow, metric: str) -> float:
    m = row.summary(metric).mean
    return -math.inf if math.isnan(m) else m


def _null_check(arms: list[ModelRow], metric: str, label: str, size: int) -> str:
    spd = next((r for r in arms if _op(r) == "spd"), None)
    eq = next((r for r in arms if _op(r) == "conv-equal"), None)
    if spd is None or eq is None:
        return ("Null check: not run (it needs both the spd and the conv-equal arms: one function class, "
                "two parametrisations).")
    d = paired_difference(spd.scores[metric], eq.scores[metric])
    head = (f"Null check at {size} px: SPD-Conv and conv-equal compute the same class of functions (conv-equal "
            f"is SPD-Conv written as one strided convolution), so a fair study should find no difference. "
            f"SPD - conv-equal = {d.format()} {label}")
    if d.n < 2:
        return head + ": one seed, no interval; run more seeds to check the study's noise."
    if d.no_spread:
        return head + ": the same difference on every seed, so no interval; add seeds."
    if d.significant:
        return (head + ": a significant difference. The two differ only in parametrisation and initial "
                "weights, so differences of this size between other operators are not evidence on their own: "
                "add seeds or epochs, or check the schedule, before reading the ranking.")
    return (head + ": no significant difference, as expected; the study passes its null check, and the "
            "intervals above can be read as its noise allows.")
