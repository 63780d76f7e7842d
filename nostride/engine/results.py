"""Per-epoch results: ``results.csv``, ``results.png`` curves and optional TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

from ..utils.atomic import atomic_write_text
from ..utils.figures import new_figure, save_figure

__all__ = ["ResultsWriter", "plot_results", "read_results", "inspect_results", "YOLOV5_WIDTH"]

YOLOV5_WIDTH = 20  # YOLOv5 writes every results.csv field right-aligned in 20 characters ("%20s", "%20.5g")


class ResultsWriter:
    """Keeps one row per epoch in ``run_dir/results.csv`` and redraws ``results.png`` (at most every
    ``plot_interval`` seconds, drawing takes ~0.5 s, and always on :meth:`close`).

    The file is rewritten whole for every row, atomically (written aside, then renamed over the old
    one), so a kill or a full disk leaves the previous table or the new one, never an empty or
    torn file. :attr:`rows` (the table as written) goes into every checkpoint, so that a resume can
    rebuild the table from ``last.pt`` when the file is missing, empty or damaged.

    The columns are fixed by the first row written after a start or a resume. On resume, rows after
    the checkpoint's epoch are dropped first so the file matches the state training continues from;
    a table written with other columns (an older version's names) is rewritten in the new ones, its
    columns renamed by ``rename`` (old name -> new name or ``None``), columns the new rows lack kept
    at the end.

    Args:
        run_dir: the run folder.
        tensorboard: also write TensorBoard scalars.
        resume_epoch: the epoch a resumed run continues after (``None``: a new run, which starts a
            new table).
        plot_interval: seconds between redraws of ``results.png``.
        history: the rows the resumed checkpoint recorded (its ``results`` entry), if any.
        padded: YOLOv5's layout, every field right-aligned in :data:`YOLOV5_WIDTH` characters and
            numbers as ``%.5g`` (:func:`read_results` and pandas with stripped names read it back).
        rename: maps an older table's column names to the current ones.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, resume_epoch: int | None = None,
                 plot_interval: float = 60.0, history: list[dict[str, Any]] | None = None,
                 padded: bool = False, rename: Callable[[str], str | None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.plot_interval = plot_interval
        self.padded = padded
        self.rename = rename
        self._last_plot = time.monotonic()
        self._unplotted = False
        self.csv_path = self.run_dir / "results.csv"
        self.png_path = self.run_dir / "results.png"
        self.columns: list[str] | None = None
        self._columns_settled = False
        self.rows: list[dict[str, Any]] = []
        self.note: str | None = None  # what a resume did to the table, in words (for the log)
        self.tb = None
        if resume_epoch is not None:
            self._resume(resume_epoch, history)
        elif self.csv_path.exists():
            self.csv_path.unlink()  # a fresh run in an existing folder (--exist-ok) starts a new table
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                print("tensorboard: not installed, skipping TensorBoard logging "
                      "(pip install tensorboard, or pip install 'nostride[tensorboard]')")
            else:
                self.tb = SummaryWriter(str(self.run_dir))

    def _resume(self, epoch: int, history: list[dict[str, Any]] | None) -> None:
        rows, problem = inspect_results(self.csv_path)
        rows = [r for r in rows if int(r["epoch"]) <= epoch]
        kept = [{str(k).strip(): v for k, v in r.items()} for r in history or []
                if isinstance(r, dict) and _epoch_of(r) is not None and _epoch_of(r) <= epoch]
        if problem is None and len(rows) < len(kept):
            problem = f"it has {len(rows)} of the {len(kept)} rows up to epoch {epoch}"
        if problem is not None and kept:
            self.note = f"{self.csv_path}: {problem}; rebuilt from the checkpoint's record ({len(kept)} rows)"
            rows = kept
        elif problem is not None and epoch > 0:
            self.note = (f"{self.csv_path}: {problem}, and the checkpoint records no rows (an older version): "
                         f"the table continues with {len(rows)} of the {epoch} earlier rows")
        if self.rename is not None:
            rows = [{self.rename(k) or k: v for k, v in r.items()} for r in rows]
        self.rows = rows
        self.columns = list(dict.fromkeys(k for r in rows for k in r)) if rows else None
        if rows or self.csv_path.exists():
            self._save()

    def _save(self) -> None:
        columns = self.columns or []
        buffer = io.StringIO(newline="")
        if self.padded:  # YOLOv5's layout: "%20s," fields, no quoting (no name holds a comma)
            def cells(values: Any) -> str:
                return ",".join(f"{_fmt(v, True):>{YOLOV5_WIDTH}}" for v in values)

            buffer.write(cells(columns) + "\n")
            for r in self.rows:
                buffer.write(cells(r.get(k, "") for k in columns) + "\n")
        else:
            w = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows({k: _fmt(r.get(k, "")) for k in columns} for r in self.rows)
        atomic_write_text(self.csv_path, buffer.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        """Add a row (scalars only; epoch numbered from 1, as in checkpoints), rewrite the table
        atomically and redraw the plot."""
        if not self._columns_settled:  # this row's columns first, an older table's others after them
            self.columns = list(row) + [k for k in self.columns or [] if k not in row]
            self._columns_settled = True
        self.rows.append({k: _fmt(row.get(k, ""), self.padded) for k in row})
        self._save()
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


def _epoch_of(row: dict[str, Any]) -> int | None:
    try:
        return int(str(row["epoch"]).strip())
    except (KeyError, TypeError, ValueError):
        return None


def read_results(csv_path: str | Path) -> list[dict[str, str]]:
    """The rows of a results.csv as dicts, names and values stripped of YOLOv5's padding."""
    with open(csv_path, newline="") as f:
        return [{(k or "").strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(f)]


def inspect_results(path: str | Path) -> tuple[list[dict[str, str]], str | None]:
    """The rows of a results.csv (stripped as by :func:`read_results`) and ``None``, or the rows that
    could be read and what is wrong with the file, in words (missing, empty, no ``epoch`` column, a
    damaged row)."""
    path = Path(path)
    if not path.is_file():
        return [], "the file is missing"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                return [], "the file is empty"
            names = [(k or "").strip() for k in reader.fieldnames]
            if "epoch" not in names:
                return [], "it has no header with an 'epoch' column"
            rows = []
            for i, r in enumerate(reader, 2):
                if None in r or any(v is None for v in r.values()):
                    return rows, f"line {i} is damaged"
                r = {(k or "").strip(): (v or "").strip() for k, v in r.items()}
                if _epoch_of(r) is None:
                    return rows, f"line {i} is damaged"
                rows.append(r)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [], f"cannot be read ({e})"
    epochs = [int(r["epoch"]) for r in rows]
    if any(b != a + 1 for a, b in zip(epochs, epochs[1:])):
        return [], "its epochs are not numbered one after the other"
    return rows, None


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
