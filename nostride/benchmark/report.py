"""Benchmark results: one row per model, form and input setting; a table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils.atomic import atomic_write_text
from ..utils.numbers import plural

__all__ = ["BenchmarkReport", "BenchmarkRow"]


@dataclass
class BenchmarkRow:
    """One model in one form at one (batch, height, width); times in milliseconds."""

    model: str
    form: str
    batch: int
    height: int
    width: int
    params: int
    gflops: float  # per image, 2 FLOPs per multiply-add of convolutions and matrix products
    dtype: str = "float32"
    latency_ms: float | None = None  # median over the timed calls
    p90_ms: float | None = None
    throughput: float | None = None  # images per second, batch / median latency
    peak_mb: float | None = None  # peak activation memory of one call (see peak_activation_bytes)
    ratio: float | None = None  # latency / the first model's in the same form and setting
    error: str | None = None  # why the form is unavailable (then no timings)


@dataclass
class BenchmarkReport:
    """All rows of one benchmark run, with where and how it ran."""

    rows: list[BenchmarkRow]
    device: str
    machine: str
    threads: int
    repeats: int
    warmup: int
    torch_version: str
    date: str
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """A table in the style of the paper's Table 4, ratios against the first model."""
        width = max([len(r.model) for r in self.rows] + [5]) + 2
        fw = max([len(r.form) for r in self.rows] + [4]) + 2
        head = (
            f"{'model':<{width}}{'form':<{fw}}{'input':>14}{'params':>12}{'GFLOPs':>8}{'ms':>9}{'p90 ms':>9}"
            f"{'img/s':>9}{'peak MB':>9}{'ratio':>7}"
        )
        lines = [
            f"{self.device} ({self.machine}), torch {self.torch_version}, median and p90 of "
            f"{plural(self.repeats, 'interleaved call')} after {plural(self.warmup, 'warm-up call')}, {self.date}",
            head,
            "-" * len(head),
        ]
        previous = None
        for r in self.rows:
            setting = (r.batch, r.height, r.width)
            if previous is not None and setting != previous:
                lines.append("")
            previous = setting
            shape = f"{r.batch}x{r.height}x{r.width}"
            start = f"{r.model:<{width}}{r.form:<{fw}}{shape:>14}{r.params:>12,}{r.gflops:>8.2f}"
            if r.error:
                lines.append(f"{start}   unavailable: {r.error}")
                continue
            peak = f"{r.peak_mb:>9.1f}" if r.peak_mb is not None else f"{'-':>9}"
            ratio = f"{r.ratio:>7.2f}" if r.ratio is not None else f"{'-':>7}"
            lines.append(f"{start}{r.latency_ms:>9.2f}{r.p90_ms:>9.2f}{r.throughput:>9.1f}{peak}{ratio}")
        lines.append(
            f"ratio: median latency / {self.rows[0].model}'s in the same form and input (same run); GFLOPs per "
            "image (conv multiply-adds x 2); peak MB: activations of one call"
        )
        lines.extend(self.notes)
        return "\n".join(lines)

    def records(self) -> list[dict]:
        return [asdict(r) for r in self.rows]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The rows as CSV (written to ``path`` when given); returns the text."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(BenchmarkRow.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(self.records())
        text = buffer.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_json(self, path: str | Path | None = None) -> str:
        """The run's settings and rows as JSON (written to ``path`` when given); returns the text."""
        meta = {k: v for k, v in asdict(self).items() if k != "rows"}
        text = json.dumps({**meta, "rows": self.records()}, indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text
