"""Loggers receive one row per epoch from the `Learner` (epoch, batch, env steps, episodes, rolling
reward, each loss, steps/s) and may wrap the epoch and batch loops (for progress bars)."""
from __future__ import annotations

import csv
import math
import os
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


def _widened(columns: Optional[List[str]], row: Dict) -> Optional[List[str]]:
    "`columns` with the keys of `row` they lack added at the end, or None when they lack none."
    if columns is None:
        return list(row)
    new = [key for key in row if key not in columns]
    return columns + new if new else None


class ProgressBarLogger(LoggerBase):
    """A fastprogress bar over the batches of each epoch and a table row per epoch. In a notebook
    the table is HTML; in a terminal it is printed; `show_bars` forces the bars on or off. A row
    that brings new columns (PPO's `kl_stops` once its KL early stop first fires) is preceded by a
    header line with them added at the end."""

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
        from fastprogress.fastprogress import NBMasterBar
        # fastprogress's console table cuts every line to the columns of its first: only a notebook's goes through it
        write = (lambda cells: self._mb.write(cells, table=True)) if isinstance(self._mb, NBMasterBar) \
            else self._print
        columns = _widened(self._columns, row)
        if columns is not None:
            self._columns = columns
            write(columns)
        write([_format(row.get(c, math.nan)) for c in self._columns])

    def _print(self, cells):
        print("  ".join(f"{c:>14}" for c in cells), flush=True)


class CSVLogger(LoggerBase):
    """Writes each epoch's row to a CSV file. With `append=True` an existing file is continued (a
    resumed run) instead of started afresh. A row that brings new columns (PPO's `kl_stops` once
    its KL early stop first fires, `eval_mean` from a later `fit(eval_every=...)`) widens the
    file: it is rewritten with them added at the end, empty in the earlier rows."""

    def __init__(self, path, append: bool = False):
        self.path = Path(path)
        self._columns = None
        if append and self.path.is_file():
            with open(self.path, newline="") as f:
                self._columns = next(csv.reader(f), None)

    def before_fit(self, learner, epochs):
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def after_epoch(self, learner, row):
        columns = _widened(self._columns, row)
        if columns is not None:
            self._rewrite(columns)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._columns).writerow(row)

    def _rewrite(self, columns: List[str]):
        """The file with the header `columns` over the rows written so far (none for a new file),
        replaced at once, so a crash mid-write leaves the previous file."""
        rows = []
        if self._columns is not None and self.path.is_file():
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._columns = columns
