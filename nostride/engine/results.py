"""Per-epoch results: ``results.csv``, ``results.png`` curves and optional TensorBoard scalars."""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write_text
from ..utils.figures import new_figure, save_figure

__all__ = ["ResultsWriter", "plot_results", "read_results"]


class ResultsWriter:
    """Keeps one row per epoch in ``run_dir/results.csv`` and redraws ``results.png`` (at most every
    ``plot_interval`` seconds, drawing takes ~0.5 s, and always on :meth:`close`).

    The file is rewritten whole for every row, atomically (written aside, then renamed over the old
    one), so a kill or a full disk leaves the previous table or the new one, never an empty or
    torn file. :attr:`rows` (the table as written) goes into every checkpoint, so that a resume can
    rebuild the table from ``last.pt`` when the file is missing, empty or damaged.

    The columns are fixed by the first row written (or by the header of the table resumed). On
    resume, rows after the checkpoint's epoch are dropped first so the file matches the state
    training continues from.

    Args:
        run_dir: the run folder.
        tensorboard: also write TensorBoard scalars.
        resume_epoch: the epoch a resumed run continues after (``None``: a new run, which starts a
            new table).
        history: the rows the resumed checkpoint recorded (its ``results`` entry), if any.
        plot_interval: seconds between redraws of ``results.png``.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, resume_epoch: int | None = None,
                 plot_interval: float = 60.0, history: list[dict[str, Any]] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.plot_interval = plot_interval
        self._last_plot = time.monotonic()
        self._unplotted = False
        self.csv_path = self.run_dir / "results.csv"
        self.png_path = self.run_dir / "results.png"
        self.columns: list[str] | None = None
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
        rows, problem = read_results(self.csv_path)
        rows = [r for r in rows if int(r["epoch"]) <= epoch]
        kept = [dict(r) for r in history or [] if isinstance(r, dict) and _epoch_of(r) is not None
                and _epoch_of(r) <= epoch]
        if problem is None and len(rows) < len(kept):
            problem = f"it has {len(rows)} of the {len(kept)} rows up to epoch {epoch}"
        if problem is not None and kept:
            self.note = f"{self.csv_path}: {problem}; rebuilt from the checkpoint's record ({len(kept)} rows)"
            rows = kept
        elif problem is not None and epoch > 0:
            self.note = (f"{self.csv_path}: {problem}, and the checkpoint records no rows (an older version): "
                         f"the table continues with {len(rows)} of the {epoch} earlier rows")
        self.rows = rows
        self.columns = list(rows[0]) if rows else None
        if rows or self.csv_path.exists():
            self._save()

    def _save(self) -> None:
        buffer = io.StringIO(newline="")
        w = csv.DictWriter(buffer, fieldnames=self.columns or [], extrasaction="ignore")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write_text(self.csv_path, buffer.getvalue())

    def write(self, row: dict[str, Any]) -> None:
        """Add a row (scalars only; epoch numbered from 1, as in checkpoints), rewrite the table
        atomically and redraw the plot."""
        if self.columns is None:
            self.columns = list(row)
        self.rows.append({k: _fmt(row.get(k, "")) for k in self.columns})
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


def _epoch_of(row: dict[str, Any]) -> int | None:
    try:
        return int(row["epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def read_results(path: str | Path) -> tuple[list[dict[str, str]], str | None]:
    """The rows of a results.csv and ``None``, or the rows that could be read and what is wrong
    with the file, in words (missing, empty, no ``epoch`` column, a damaged row)."""
    path = Path(path)
    if not path.is_file():
        return [], "the file is missing"
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                return [], "the file is empty"
            if "epoch" not in reader.fieldnames:
                return [], "it has no header with an 'epoch' column"
            rows = []
            for i, r in enumerate(reader, 2):
                if _epoch_of(r) is None or None in r or any(v is None for v in r.values()):
                    return rows, f"line {i} is damaged"
                rows.append(r)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return [], f"cannot be read ({e})"
    epochs = [int(r["epoch"]) for r in rows]
    if any(b != a + 1 for a, b in zip(epochs, epochs[1:])):
        return [], "its epochs are not numbered one after the other"
    return rows, None


def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def plot_results(csv_path: str | Path, png_path: str | Path | None = None) -> Path | None:
    """One small panel per results.csv column (against the epoch, numbered from 1; sample counts and time are
    left out); returns the PNG path."""
    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in rows[0] if k not in ("epoch", "time") and not k.endswith("/count")]
    epochs = [int(r["epoch"]) for r in rows]
    ncol = min(5, max(len(keys), 1))
    nrow = math.ceil(len(keys) / ncol) or 1
    fig = new_figure(3.2 * ncol, 2.6 * nrow)  # no pyplot: the user's matplotlib backend is left alone
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ys = [float(r[key]) if r[key] not in ("", None) else math.nan for r in rows]
        ax.plot(epochs, ys, marker=".", linewidth=1.5)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    return save_figure(fig, png_path)
