"""A study's results as tables: per model mean +- std, cost, latency, training time; paired differences
of every SPD model against every strided model; markdown for people, CSV for programs."""

from __future__ import annotations

import contextlib
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..utils.atomic import atomic_write_text
from .specs import ModelSpec
from .stats import PairedDifference, Summary, paired_difference, summarize

__all__ = ["ModelRow", "DifferenceRow", "build_rows", "build_differences", "markdown_report", "write_csvs",
           "failures_markdown"]


@dataclass
class ModelRow:
    """One model at one image size, over its seeds."""

    img_size: int
    spec: ModelSpec
    scores: dict[str, dict[int, float]]  # metric -> seed -> value
    params: int
    flops: int
    latency_ms: float
    train_time: Summary
    failed: list[int] = field(default_factory=list)  # seeds whose run failed

    def summary(self, metric: str) -> Summary:
        return summarize(list(self.scores.get(metric, {}).values()))


@dataclass
class DifferenceRow:
    """An SPD model against a strided model at one image size (paired over seeds)."""

    img_size: int
    spd: ModelRow
    baseline: ModelRow
    metric: str
    diff: PairedDifference

    @property
    def flops_ratio(self) -> float:
        return self.spd.flops / self.baseline.flops if self.baseline.flops else math.nan

    @property
    def params_ratio(self) -> float:
        return self.spd.params / self.baseline.params if self.baseline.params else math.nan


def build_rows(results: list[Any], costs: dict[tuple[str, int], Any], latencies: dict[tuple[str, int], float],
               metrics: list[str]) -> list[ModelRow]:
    """Group run results into one row per (image size, model), in the order the runs were planned."""
    rows: dict[tuple[int, str], ModelRow] = {}
    times: dict[tuple[int, str], list[float]] = {}
    for r in results:
        key = (r.run.img_size, r.run.model.text)
        if key not in rows:
            cost = costs[(r.run.model.text, r.run.img_size)]
            rows[key] = ModelRow(r.run.img_size, r.run.model, {m: {} for m in metrics}, cost.params, cost.flops,
                                 latencies.get((r.run.model.text, r.run.img_size), math.nan), Summary(math.nan, math.nan, 0))
            times[key] = []
        row = rows[key]
        if r.error:
            row.failed.append(r.run.seed)
            continue
        for m, v in r.scores.items():
            row.scores[m][r.run.seed] = v
        times[key].append(r.train_time)
    for key, row in rows.items():
        row.train_time = summarize(times[key])
    return list(rows.values())


def build_differences(rows: list[ModelRow], metrics: list[str]) -> list[DifferenceRow]:
    """Every SPD model against every strided model of the same image size, for every metric."""
    out = []
    for spd in rows:
        if not spd.spec.is_spd:
            continue
        for base in rows:
            if base.img_size != spd.img_size or base.spec.is_spd:
                continue
            for m in metrics:
                out.append(DifferenceRow(spd.img_size, spd, base, m, paired_difference(spd.scores[m], base.scores[m])))
    return out


def _fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _gflops(flops: int) -> str:
    g = flops / 1e9
    return f"{g:.3g}" if g < 100 else f"{g:.0f}"


def markdown_report(rows: list[ModelRow], diffs: list[DifferenceRow], metric_labels: dict[str, str],
                    device: str, header: str = "", digits: int = 2) -> str:
    """The tables as markdown: one results and one differences table per image size (scores with
    ``digits`` decimals)."""
    lines = [header] if header else []
    metrics = list(metric_labels)
    for size in sorted({r.img_size for r in rows}, reverse=True):
        size_rows = [r for r in rows if r.img_size == size]
        seeds = max((r.summary(metrics[0]).n for r in size_rows), default=0)
        lines += [f"### {size} x {size} pixels", ""]
        cols = ["model"] + [f"{metric_labels[m]} (mean ± std)" for m in metrics] + \
            ["params (M)", "GFLOPs", f"latency (ms, batch 1, {device})", "train time (s)", "seeds"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|"]
        for r in size_rows:
            n = r.summary(metrics[0]).n
            seeds_cell = str(n) + (f" ({len(r.failed)} failed)" if r.failed else "")
            cells = [r.spec.label] + [r.summary(m).format(digits) for m in metrics] + [
                f"{r.params / 1e6:.3f}", _gflops(r.flops), _fmt(r.latency_ms), _fmt(r.train_time.mean, 0), seeds_cell]
            lines.append("| " + " | ".join(cells) + " |")
        size_diffs = [d for d in diffs if d.img_size == size]
        if size_diffs:
            lines += ["", f"SPD against strided at {size} px: paired difference over {seeds} seeds, "
                      "95 % interval in brackets", ""]
            cols = ["SPD model", "against", "metric", "difference", "verdict", "FLOPs ratio", "params ratio"]
            lines += ["| " + " | ".join(cols) + " |", "|---|---|---|---:|---|---:|---:|"]
            for d in size_diffs:
                pairs = f" ({d.diff.n} {'pair' if d.diff.n == 1 else 'pairs'})" if d.diff.n != seeds else ""
                lines.append("| " + " | ".join([
                    d.spd.spec.label, d.baseline.spec.label, metric_labels[d.metric], d.diff.format(digits) + pairs,
                    d.diff.verdict(), f"{d.flops_ratio:.2f}x", f"{d.params_ratio:.2f}x"]) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def failures_markdown(results: list[Any]) -> str:
    """The failed runs, each with its error and its log's last lines ("" when none failed)."""
    failed = [r for r in results if r.error]
    if not failed:
        return ""
    lines = ["", f"### Failed runs ({len(failed)}, left out of the statistics)", ""]
    for r in failed:
        lines.append(f"- {r.run.title}: {r.error}")
        if getattr(r, "details", None):
            lines += ["", "  ```text", *[f"  {line}" for line in r.details], "  ```", ""]
    return "\n".join(lines).rstrip() + "\n"


@contextlib.contextmanager
def _atomic_csv(path: Path) -> Iterator[Any]:
    """A ``csv.writer`` whose rows replace ``path`` atomically when the block ends."""
    buffer = io.StringIO(newline="")
    yield csv.writer(buffer)
    atomic_write_text(path, buffer.getvalue())


def write_csvs(folder: Path, results: list[Any], rows: list[ModelRow], diffs: list[DifferenceRow],
               metrics: list[str]) -> list[Path]:
    """``runs.csv`` (one row per run), ``summary.csv`` (per model and size), ``differences.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "runs.csv", folder / "summary.csv", folder / "differences.csv"]
    with _atomic_csv(paths[0]) as w:
        w.writerow(["img_size", "model", "spd", "seed", *metrics, "train_time_s", "run_dir", "error"])
        for r in results:
            w.writerow([r.run.img_size, r.run.model.text, int(r.run.model.is_spd), r.run.seed,
                        *[_csv(r.scores.get(m)) for m in metrics], _csv(r.train_time), str(r.run.folder),
                        r.error or ""])
    with _atomic_csv(paths[1]) as w:
        w.writerow(["img_size", "model", "spd", "matched_to", "n_seeds",
                    *[c for m in metrics for c in (f"{m}_mean", f"{m}_std")],
                    "params", "flops", "latency_ms", "train_time_s_mean"])
        for r in rows:
            w.writerow([r.img_size, r.spec.text, int(r.spec.is_spd), r.spec.matched_to or "",
                        r.summary(metrics[0]).n,
                        *[_csv(v) for m in metrics for v in (r.summary(m).mean, r.summary(m).std)],
                        r.params, r.flops, _csv(r.latency_ms), _csv(r.train_time.mean)])
    with _atomic_csv(paths[2]) as w:
        w.writerow(["img_size", "spd_model", "baseline", "metric", "n_pairs", "difference", "ci95_low",
                    "ci95_high", "significant", "flops_ratio", "params_ratio"])
        for d in diffs:
            w.writerow([d.img_size, d.spd.spec.text, d.baseline.spec.text, d.metric, d.diff.n, _csv(d.diff.mean),
                        _csv(d.diff.low), _csv(d.diff.high), int(d.diff.significant), _csv(d.flops_ratio),
                        _csv(d.params_ratio)])
    return paths


def _csv(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)
