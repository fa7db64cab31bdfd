"""Pictures of training: learning curves."""
from __future__ import annotations


import numpy as np

__all__ = ["plot_returns"]


def plot_returns(episode_returns: np.ndarray, path=None, title: str = "Episode returns", window: int = 20, ax=None):
    """Plot returns (rows of `(env_step, return)`) against env steps with a rolling mean; save to
    `path` (PNG) when given. Returns the matplotlib axes."""
    data = np.asarray(episode_returns, dtype=np.float64).reshape(-1, 2)
    fig = None
    if ax is None:
        if path is None:
            import matplotlib.pyplot as plt
            fig = plt.figure(figsize=(7, 4))
        else:  # a bare Figure draws without touching pyplot's state or backend
            from matplotlib.figure import Figure
            fig = Figure(figsize=(7, 4))
        ax = fig.subplots()
    ax.plot(data[:, 0], data[:, 1], ".", alpha=0.35, label="episode")
    if len(data) >= window:
        rolling = np.convolve(data[:, 1], np.ones(window) / window, mode="valid")
        ax.plot(data[window - 1:, 0], rolling, label=f"rolling mean ({window})")
    ax.set(title=title, xlabel="env steps", ylabel="return")
    ax.legend()
    if path is not None:
        ax.figure.savefig(path, dpi=100, bbox_inches="tight")
    return ax
