"""Per-epoch results: ``results.csv``, ``results.png`` curves and optional TensorBoard scalars."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..utils.figures import new_figure, save_figure

__all__ = ["ResultsWriter", "plot_results", "read_results", "YOLOV5_WIDTH"]

YOLOV5_WIDTH = 20  # YOLOv5 writes every results.csv field right-aligned in 20 characters ("%20s", "%20.5g")


class ResultsWriter:
    """Appends one row per epoch to ``run_dir/results.csv`` and redraws ``results.png`` (at most every
    ``plot_interval`` seconds, drawing takes ~0.5 s, and always on :meth:`close`).

    The columns are fixed by the first row written. On resume, rows after the checkpoint's epoch are
    dropped first so the file matches the state training continues from; a file written with other
    columns (an older version's names) is rewritten in the new ones, its columns renamed by
    ``rename`` (old name -> new name or ``None``), columns the new rows lack kept at the end.

    ``padded``: YOLOv5's layout, every field right-aligned in :data:`YOLOV5_WIDTH` characters and
    numbers as ``%.5g`` (:func:`read_results` and pandas with stripped names read it back).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, resume_epoch: int | None = None,
                 plot_interval: float = 60.0, padded: bool = False,
                 rename: Callable[[str], str | None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.plot_interval = plot_interval
        self.padded = padded
        self.rename = rename
        self._last_plot = time.monotonic()
        self._unplotted = False
        self.csv_path = self.run_dir / "results.csv"
        self.png_path = self.run_dir / "results.png"
        self.columns: list[str] | None = None
        self.tb = None
        if resume_epoch is not None and self.csv_path.is_file():
            self._truncate_after(resume_epoch)
        elif self.csv_path.exists() and resume_epoch is None:
            self.csv_path.unlink()  # a fresh run in an existing folder (--exist-ok) starts a new table
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard: not installed, skipping TensorBoard logging "
                      "(pip install tensorboard, or pip install 'nostride[tensorboard]')")
            else:
                self.tb = SummaryWriter(str(self.run_dir))

    def _truncate_after(self, epoch: int) -> None:
        rows = read_results(self.csv_path)
        self._kept = [r for r in rows if int(float(r["epoch"])) <= epoch]
        self._rewrite = True  # at the first row: in that row's columns (older files had other names)

    def _write_rows(self, rows: list[dict[str, Any]], mode: str, header: bool) -> None:
        with open(self.csv_path, mode, newline="") as f:
            if self.padded:  # YOLOv5's layout: "%20s," fields, no quoting (no name holds a comma)
                cells = lambda values: ",".join(f"{_fmt(v, True):>{YOLOV5_WIDTH}}" for v in values)  # noqa: E731
                if header:
                    f.write(cells(self.columns) + "\n")
                for r in rows:
                    f.write(cells(r.get(k, "") for k in self.columns) + "\n")
                return
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if header:
                w.writeheader()
            w.writerows({k: _fmt(r.get(k, "")) for k in self.columns} for r in rows)

    def write(self, row: dict[str, Any]) -> None:
        """Append a row (scalars only; epoch numbered from 1, as in checkpoints) and redraw the plot."""
        if self.columns is None:
            self.columns = list(row)
        if getattr(self, "_rewrite", False):  # resuming: the kept rows, renamed into this row's columns
            kept = [{(self.rename(k) if self.rename else k) or k: v for k, v in r.items()} for r in self._kept]
            extra = [k for r in kept for k in r if k not in self.columns]
            self.columns += list(dict.fromkeys(extra))
            self._write_rows(kept, "w", header=True)
            self._rewrite = False
        new_file = not self.csv_path.exists()
        self._write_rows([row], "a", header=new_file)
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, int(row["epoch"]))
            self.tb.flush()
        self._unplotted = True
        if time.monotonic() - self._last_plot >= self.plot_interval:
            self.plot()

    def plot(self) -> None:
        """Redraw results.png from results.csv."""
        if self.csv_path.is_file():
            plot_results(self.csv_path, self.png_path)
        self._last_plot, self._unplotted = time.monotonic(), False

    def close(self) -> None:
        """Final plot; close TensorBoard. Safe to call twice."""
        if self._unplotted:
            self.plot()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _fmt(v: Any, padded: bool = False) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.5g}" if padded else f"{v:.6g}"
    return v


def read_results(csv_path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv as dicts, names and values stripped of YOLOv5's padding."""
    with open(csv_path, newline="") as f:
        return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(f)]


# YOLOv5's results.png panels, in its order (2 x 5): the losses above the metrics they lead to
_YOLOV5_PANELS = ("train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
                  "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95")
_NOT_PLOTTED = ("epoch", "time", "time/train", "time/val")


def _is_count(key: str) -> bool:
    """Sample counts (``val/count``, ``metrics/images``, ``metrics/instances_small``): no curve to read."""
    name = key.rsplit("/", 1)[-1]
    return name in ("count", "images") or name.startswith("instances")


def _values(rows: list[dict[str, str]], key: str) -> list[float]:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key) or "nan"))
        except ValueError:
            out.append(math.nan)
    return out


def plot_results(csv_path: str | Path, png_path: str | Path | None = None) -> Path | None:
    """One small panel per results.csv column with data (against the epoch, numbered from 1); returns the PNG path.

    Left out: the epoch and times, sample counts, columns without a number and columns that are 0
    throughout (e.g. a one-class run's class loss). YOLOv5's ten panels come first in its order;
    its three learning rates share one panel.
    """
    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    rows = read_results(csv_path)
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    def has_data(key: str) -> bool:
        ys = [y for y in _values(rows, key) if math.isfinite(y)]
        return bool(ys) and any(y != 0 for y in ys)

    columns = [k for k in rows[0] if k not in _NOT_PLOTTED and not _is_count(k)]
    lrs = [k for k in columns if k.startswith("x/lr")]
    keys = [k for k in _YOLOV5_PANELS if k in columns] + [k for k in columns if k not in _YOLOV5_PANELS and k not in lrs]
    panels: list[tuple[str, list[str]]] = [(k, [k]) for k in keys if has_data(k)]
    if any(has_data(k) for k in lrs):
        panels.append(("learning rate" if len(lrs) > 1 else lrs[0], lrs))
    epochs = [int(float(r["epoch"])) for r in rows]
    ncol = min(5, max(len(panels), 1))
    nrow = math.ceil(len(panels) / ncol) or 1
    fig = new_figure(3.2 * ncol, 2.6 * nrow)  # no pyplot: the user's matplotlib backend is left alone
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, (title, group) in zip(axes.flat, panels):
        for key in group:
            ys = _values(rows, key)
            ax.plot(epochs, ys, marker=".", linewidth=1.5, label=key if len(group) > 1 else None)
            finite = [y for y in ys if math.isfinite(y)]
            if finite and max(finite) == min(finite) and len(group) == 1:  # a flat line: an axis around it
                v = finite[0]
                ax.set_ylim(v - 0.1 * abs(v), v + 0.1 * abs(v))
        if len(group) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False)  # 0.0827 on the axis, not "1e-6 + 8.268e-2"
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return save_figure(fig, png_path)
