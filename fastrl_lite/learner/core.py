"""The `Learner`: runs a learner pipeline for `epochs` × `batches` gradient rounds, owns the record
bus, reports each epoch to its loggers, and evaluates the greedy policy."""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core import Records, evaluating
from ..pipes import Pipe, find_pipe, pipe_graph

__all__ = ["Learner"]


def _is_stepper(node) -> bool:
    return hasattr(node, "env_steps") and hasattr(node, "agent")


class Learner:
    """`pipe` is the end of the learner pipeline (env stepper → … → replay → loss → optimizer →
    target updater); pulling one item from it is one gradient round. An epoch is `batches` rounds.

    `model` is the module (or a dict of named modules) the pipeline trains; `dls[0]` is the training
    env pipeline and `dls[1]`, when given, the validation one. Every stage in the graph records to
    this learner's `records`.
    """

    def __init__(self, model: Union[nn.Module, Dict[str, nn.Module]], pipe, dls: Sequence = (), batches: int = 1000,
                 logger_bases: Optional[Sequence] = None, rolling: int = 100):
        if batches is None or batches < 1:
            raise ValueError(f"batches (gradient rounds per epoch) must be >= 1, got {batches}.")
        self.models = model if isinstance(model, dict) else {"model": model}
        self.model = next(iter(self.models.values()))
        self.pipe, self.dls, self.batches = pipe, list(dls), batches
        self.loggers = list(logger_bases or [])
        self.rolling = rolling
        self.records = Records()
        for node in pipe_graph(pipe):
            if isinstance(node, Pipe):
                node.records = self.records
        self.stepper = find_pipe(pipe, _is_stepper, required=False)
        self.epoch = 0
        self.batch = 0
        self.history: List[Dict[str, float]] = []

    @property
    def env_steps(self) -> int:
        return self.stepper.env_steps if self.stepper is not None else 0

    @property
    def episodes(self) -> int:
        return self.stepper.episodes if self.stepper is not None else 0

    def episode_returns(self) -> np.ndarray:
        "(env step at the episode's end, return) for every finished training episode."
        return np.array(self.records.values("episode_return"), dtype=np.float64).reshape(-1, 2)

    def fit(self, epochs: int):
        "Train for `epochs` epochs of `batches` gradient rounds each; returns the per-epoch rows."
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"fit needs a positive whole number of epochs, got {epochs!r}.")
        for logger in self.loggers:
            logger.before_fit(self, epochs)
        rows = []
        try:
            for _ in self._iterate(range(epochs), "wrap_epochs"):
                start_time, start_steps = time.perf_counter(), self.env_steps
                exhausted = False
                for _ in self._iterate(range(self.batches), "wrap_batches"):
                    try:
                        next(self.pipe)
                    except StopIteration:
                        exhausted = True
                        break
                    self.batch += 1
                self.epoch += 1
                row = self._epoch_row(time.perf_counter() - start_time, self.env_steps - start_steps)
                rows.append(row)
                for logger in self.loggers:
                    logger.after_epoch(self, row)
                if exhausted:
                    break
        finally:
            for logger in self.loggers:
                logger.after_fit(self)
        return rows

    def _iterate(self, iterable, hook: str):
        for logger in self.loggers:
            iterable = getattr(logger, hook)(iterable, self)
        return iterable

    def _epoch_row(self, seconds: float, steps: int) -> Dict[str, float]:
        returns = self.episode_returns()
        row = {"epoch": self.epoch, "batch": self.batch, "env_steps": self.env_steps, "episodes": self.episodes,
               "rolling_reward": float(returns[-self.rolling:, 1].mean()) if len(returns) else math.nan}
        for name in self.records.series:
            values = self.records.since_mark(name)
            if len(values):
                finite = torch.isfinite(values)
                if not bool(finite.all()):
                    first = int(self.batch - len(values) + int((~finite).nonzero()[0]) + 1)
                    raise FloatingPointError(
                        f"{name} became NaN/inf at gradient round {first} (epoch {self.epoch}). Lower the "
                        "learning rate, clip gradients (clip_grad_norm=) or check the rewards and observations.")
                row[name] = float(values.mean())
        for name, values in self.records.lists.items():
            if name != "episode_return" and values:
                row[name] = float(values[-1])
        row["steps_per_s"] = steps / seconds if seconds > 0 else math.nan
        self.records.mark()
        self.history.append(row)
        return row

    def validate(self, episodes: int = 10, seed: int = 10_000, env_ids=None) -> Dict:
        """Run the greedy policy (model in eval mode, so exploration is off) for `episodes` episodes;
        returns {'mean', 'std', 'returns'}. Uses the validation pipeline `dls[1]` when the learner has
        one, else a fresh single env of the training env id seeded with `seed`."""
        from ..envs import GymStepper, make_vec_env
        if episodes < 1:
            raise ValueError(f"validate needs episodes >= 1, got {episodes}.")
        if len(self.dls) > 1 and env_ids is None:
            stepper = find_pipe(self.dls[1], _is_stepper)
        else:
            if self.stepper is None or self.stepper.agent is None:
                raise RuntimeError("validate needs a pipeline whose GymStepper has an agent.")
            env_ids = env_ids or [self.stepper.env.get_attr("spec")[0].id]
            stepper = GymStepper(make_vec_env(env_ids, num_envs=1), self.stepper.agent, seed=seed)
        if stepper.agent is None:
            raise RuntimeError("The validation pipeline has no agent: build it with GymDataPipe(..., agent=...).")
        stepper.records = Records()
        with evaluating(stepper.agent.model):
            while len(stepper.records.values("episode_return")) < episodes:
                next(stepper)
        returns = np.array([r for _, r in stepper.records.values("episode_return")[:episodes]])
        return {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist()}
