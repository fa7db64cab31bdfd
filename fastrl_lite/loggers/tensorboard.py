"""TensorBoard beside the progress table and the CSV: every column of the epoch table, and every
finished episode's return, as scalars by env step (`torch.utils.tensorboard`, which needs the
`tensorboard` package: `pip install "fastrl_lite[tensorboard]"`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict

from .core import LoggerBase

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger(LoggerBase):
    """Writes to `log_dir` (look with `tensorboard --logdir log_dir`): after each epoch, each column
    of its row (`rolling_reward`, `q_loss`, `epsilon`, `eval_mean`, ...) as a scalar at the row's
    env step, and `episode_return` at the env step where each episode ended.

    A learner restored from a checkpoint continues the same folder: events logged after its last
    epoch row (by a run that crashed later) are dropped and the episodes since that row are written
    with the next one, so the curves read like those of an uninterrupted run."""

    def __init__(self, log_dir):
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it, and says so only on use)
        except ImportError as error:
            raise ImportError('TensorBoardLogger needs the tensorboard package: pip install tensorboard '
                              '(or pip install "fastrl_lite[tensorboard]").') from error
        self.log_dir = Path(log_dir)
        self.writer = None
        self._episodes = 0  # episode returns written so far

    def before_fit(self, learner, epochs: int):
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter
            # a restored learner: its last row and the episodes up to it were logged before
            logged = int(learner.history[-1]["env_steps"]) if learner.history else 0
            resumed = learner.batch > 0
            self.writer = SummaryWriter(str(self.log_dir), purge_step=logged + 1 if resumed else None)
            self._episodes = sum(1 for env_step, _ in learner.records.values("episode_return") if env_step <= logged)

    def after_epoch(self, learner, row: Dict[str, float]):
        step = int(row["env_steps"])
        for name, value in row.items():
            if name != "env_steps" and isinstance(value, (int, float)) and not math.isnan(value):
                self.writer.add_scalar(name, value, step)
        returns = learner.records.values("episode_return")
        for env_step, episode_return in returns[self._episodes:]:
            self.writer.add_scalar("episode_return", episode_return, int(env_step))
        self._episodes = len(returns)
        self.writer.flush()

    def after_fit(self, learner):
        if self.writer is not None:
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
