"""Pictures of training: the returns of one run, and learning curves across seeds."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["plot_returns", "learning_curve_stats", "plot_learning_curves"]


def _new_axes(path, figsize=(7, 4)):
    if path is None:
        import matplotlib.pyplot as plt
        fig = plt.figure(figsize=figsize)
    else:  # a bare Figure draws without touching pyplot's state or backend
        from matplotlib.figure import Figure
        fig = Figure(figsize=figsize)
    return fig.subplots()


def plot_returns(episode_returns: np.ndarray, path=None, title: str = "Episode returns", window: int = 20, ax=None):
    """Plot returns (rows of `(env_step, return)`) against env steps with a rolling mean; save to
    `path` (PNG) when given. Returns the matplotlib axes."""
    data = np.asarray(episode_returns, dtype=np.float64).reshape(-1, 2)
    ax = ax if ax is not None else _new_axes(path)
    ax.plot(data[:, 0], data[:, 1], ".", alpha=0.35, label="episode")
    if len(data) >= window:
        rolling = np.convolve(data[:, 1], np.ones(window) / window, mode="valid")
        ax.plot(data[window - 1:, 0], rolling, label=f"rolling mean ({window})")
    ax.set(title=title, xlabel="env steps", ylabel="return")
    ax.legend()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    return ax


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    "Mean of the last `window` values at each position (fewer at the start, so no episode is dropped)."
    sums = np.cumsum(np.concatenate([[0.0], values]))
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def learning_curve_stats(runs: Sequence[np.ndarray], grid: Optional[np.ndarray] = None, points: int = 200,
                         window: int = 1, spread: str = "std") -> Dict[str, np.ndarray]:
    """Mean and spread of several runs' returns on a common env-step grid.

    Each run is rows of `(env_step, return)` (`Learner.episode_returns()`); episodes end at different
    env steps in every run, so each run's (optionally `window`-episode trailing-mean) returns are
    linearly interpolated onto `grid`. By default the grid spans only the steps every run covers
    (from the latest first episode to the earliest last one), so no curve is extrapolated.
    `spread` is `'std'` (mean ± standard deviation across runs), `'sem'` (± standard error) or
    `'minmax'` (the range across runs). Returns {'grid', 'mean', 'lower', 'upper', 'curves'}.
    """
    runs = [np.asarray(run, dtype=np.float64).reshape(-1, 2) for run in runs]
    if not runs:
        raise ValueError("No runs were given: pass a list of runs, each the rows (env_step, return) of "
                         "Learner.episode_returns().")
    if any(len(run) == 0 for run in runs):
        raise ValueError("Every run needs at least one finished episode (rows of (env_step, return)).")
    if window < 1:
        raise ValueError(f"window must be >= 1 episode, got {window}.")
    if grid is None:
        start, stop = max(run[0, 0] for run in runs), min(run[-1, 0] for run in runs)
        if start > stop:
            raise ValueError("The runs cover no common env steps; pass grid= to choose the steps to compare.")
        grid = np.linspace(start, stop, points)
    grid = np.asarray(grid, dtype=np.float64)
    curves = np.stack([np.interp(grid, run[:, 0], _trailing_mean(run[:, 1], window)) for run in runs])
    mean = curves.mean(axis=0)
    if spread == "std":
        half = curves.std(axis=0)
        lower, upper = mean - half, mean + half
    elif spread == "sem":
        half = curves.std(axis=0, ddof=1) / np.sqrt(len(runs)) if len(runs) > 1 else np.zeros_like(mean)
        lower, upper = mean - half, mean + half
    elif spread == "minmax":
        lower, upper = curves.min(axis=0), curves.max(axis=0)
    else:
        raise ValueError(f"spread must be 'std', 'sem' or 'minmax', got {spread!r}.")
    return {"grid": grid, "mean": mean, "lower": lower, "upper": upper, "curves": curves}


def plot_learning_curves(runs: Dict[str, Sequence[np.ndarray]], path=None, title: str = "Learning curves",
                         points: int = 200, window: int = 10, spread: str = "std", ax=None,
                         xlabel: str = "env steps", ylabel: str = "return", grid=None):
    """One line per label: the mean over its runs (seeds) with the spread shaded, from
    `learning_curve_stats`. `runs` maps a label to a list of `(env_step, return)` arrays, one per
    seed; `grid` (optional) the x values to compare them at. Saves a PNG to `path` when given;
    returns the matplotlib axes."""
    if not runs:
        raise ValueError("plot_learning_curves needs at least one label with runs.")
    ax = ax if ax is not None else _new_axes(path)
    describe = {"std": "± std", "sem": "± s.e.m.", "minmax": "min–max"}.get(spread, spread)
    for label, label_runs in runs.items():
        stats = learning_curve_stats(label_runs, grid=grid, points=points, window=window, spread=spread)
        line, = ax.plot(stats["grid"], stats["mean"], label=f"{label} ({len(label_runs)} seed{'' if len(label_runs) == 1 else 's'})")
        ax.fill_between(stats["grid"], stats["lower"], stats["upper"], color=line.get_color(), alpha=0.2)
    smoothing = f", {window}-episode mean" if window > 1 else ""
    ax.set(title=title, xlabel=xlabel, ylabel=f"{ylabel} (mean, {describe}{smoothing})")
    ax.legend()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    return ax
