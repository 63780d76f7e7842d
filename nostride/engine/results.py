"""Per-epoch results: ``results.csv``, ``results.png`` curves and optional TensorBoard scalars."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from ..utils.figures import new_figure, save_figure

__all__ = ["ResultsWriter", "plot_results"]


class ResultsWriter:
    """Appends one row per epoch to ``run_dir/results.csv`` and redraws ``results.png`` (at most every
    ``plot_interval`` seconds, drawing takes ~0.5 s, and always on :meth:`close`).

    The columns are fixed by the first row written (or by the header of an existing file when
    resuming). On resume, rows after the checkpoint's epoch are dropped first so the file matches
    the state training continues from.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = False, resume_epoch: int | None = None,
                 plot_interval: float = 60.0) -> None:
        self.run_dir = Path(run_dir)
        self.plot_interval = plot_interval
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
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
            self.columns = list(rows[0].keys()) if rows else None
        if self.columns is None:
            return
        rows = [r for r in rows if int(r["epoch"]) <= epoch]
        with open(self.csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict[str, Any]) -> None:
        """Append a row (scalars only; epoch numbered from 1, as in checkpoints) and redraw the plot."""
        if self.columns is None:
            self.columns = list(row)
        new_file = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
            if new_file:
                w.writeheader()
            w.writerow({k: _fmt(row.get(k, "")) for k in self.columns})
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
