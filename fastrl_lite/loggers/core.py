"""Loggers receive one row per epoch from the `Learner` (epoch, batch, env steps, episodes, rolling
reward, each loss, steps/s) and may wrap the epoch and batch loops (for progress bars)."""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

__all__ = ["LoggerBase", "ProgressBarLogger", "CSVLogger"]


class LoggerBase:
    """Hooks a `Learner` calls; each does nothing unless a logger overrides it. In a data-parallel run
    only rank 0 calls them, except on a logger with `every_rank = True` (one that shapes the loop,
    e.g. sets each epoch's rounds, which every rank must do alike)."""
    every_rank = False

    def before_fit(self, learner, epochs: int): pass

    def wrap_epochs(self, epochs, learner): return epochs

    def wrap_batches(self, batches, learner): return batches

    def after_epoch(self, learner, row: Dict[str, float]): pass

    def after_fit(self, learner): pass


def _format(value) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


class ProgressBarLogger(LoggerBase):
    """A fastprogress bar over the batches of each epoch and a table row per epoch. In a notebook
    the table is HTML; in a terminal it is printed; `show_bars` forces the bars on or off."""

    def __init__(self, show_bars: Optional[bool] = None):
        from fastprogress.fastprogress import IN_NOTEBOOK
        self.show_bars = show_bars if show_bars is not None else (IN_NOTEBOOK or sys.stdout.isatty())
        self._mb = None
        self._columns: Optional[List[str]] = None

    def wrap_epochs(self, epochs, learner):
        from fastprogress.fastprogress import master_bar
        self._columns = None
        self._mb = master_bar(epochs) if self.show_bars else None
        return self._mb if self._mb is not None else epochs

    def wrap_batches(self, batches, learner):
        from fastprogress.fastprogress import progress_bar
        if not self.show_bars:  # a bar redrawn with carriage returns only clutters a log file
            return batches
        return progress_bar(batches, parent=self._mb, leave=False)

    def after_epoch(self, learner, row):
        write = (lambda cells: self._mb.write(cells, table=True)) if self._mb is not None else self._print
        if self._columns is None:
            self._columns = list(row)
            write(self._columns)
        write([_format(row.get(c, math.nan)) for c in self._columns])

    def _print(self, cells):
        print("  ".join(f"{c:>14}" for c in cells), flush=True)


class CSVLogger(LoggerBase):
    """Writes each epoch's row to a CSV file (columns from the first row). With `append=True` an
    existing file is continued (a resumed run) instead of started afresh."""

    def __init__(self, path, append: bool = False):
        self.path = Path(path)
        self._columns = None
        if append and self.path.is_file():
            with open(self.path, newline="") as f:
                self._columns = next(csv.reader(f), None)

    def before_fit(self, learner, epochs):
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def after_epoch(self, learner, row):
        new = self._columns is None
        if new:
            self._columns = list(row)
        with open(self.path, "w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
