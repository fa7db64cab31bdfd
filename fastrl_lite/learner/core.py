"""The `Learner`: runs a learner pipeline for `epochs` × `batches` gradient rounds, owns the record
bus, reports each epoch to its loggers, and evaluates the greedy policy."""
from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core import Records, evaluating
from ..pipes import Pipe, find_pipe, pipe_graph

__all__ = ["Learner", "CheckpointError"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    "A checkpoint that is unreadable, or was written for a different learner, env or network."


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
                 logger_bases: Optional[Sequence] = None, rolling: int = 100, name: Optional[str] = None,
                 check_finite: bool = True):
        if batches is None or batches < 1:
            raise ValueError(f"batches (gradient rounds per epoch) must be >= 1, got {batches}.")
        self.models = model if isinstance(model, dict) else {"model": model}
        self.model = next(iter(self.models.values()))
        self.pipe, self.dls, self.batches = pipe, list(dls), batches
        self.loggers = list(logger_bases or [])
        self.rolling, self.name, self.check_finite = rolling, name or type(self).__name__, check_finite
        self.records = Records()
        for node in pipe_graph(pipe):
            if isinstance(node, Pipe):
                node.records = self.records
        self.stepper = find_pipe(pipe, _is_stepper, required=False)
        self.epoch = 0
        self.batch = 0
        self.history: List[Dict[str, float]] = []
        self.interrupted = False

    @property
    def env_steps(self) -> int:
        return self.stepper.env_steps if self.stepper is not None else 0

    @property
    def episodes(self) -> int:
        return self.stepper.episodes if self.stepper is not None else 0

    def episode_returns(self) -> np.ndarray:
        "(env step at the episode's end, return) for every finished training episode."
        return np.array(self.records.values("episode_return"), dtype=np.float64).reshape(-1, 2)

    def fit(self, epochs: int, checkpoint_every: Optional[int] = None, checkpoint_path=None):
        """Train for `epochs` epochs of `batches` gradient rounds each; returns the per-epoch rows.

        With `checkpoint_every=k` the whole learner is saved to `checkpoint_path` every k epochs.
        Ctrl-C (SIGINT) lets the current gradient round finish, saves a checkpoint when checkpointing
        is on, and returns: the learner stays usable and `fit` can be called again."""
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"fit needs a positive whole number of epochs, got {epochs!r}.")
        if checkpoint_every is not None and (checkpoint_every < 1 or checkpoint_path is None):
            raise ValueError("checkpoint_every needs to be >= 1 and to come with a checkpoint_path.")
        for logger in self.loggers:
            logger.before_fit(self, epochs)
        rows = []
        self.interrupted = False
        previous_handler = self._catch_interrupt()
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
                    if self.interrupted:
                        break
                if not self.interrupted:
                    self.epoch += 1
                row = self._epoch_row(time.perf_counter() - start_time, self.env_steps - start_steps)
                rows.append(row)
                for logger in self.loggers:
                    logger.after_epoch(self, row)
                due = checkpoint_every is not None and (self.interrupted or self.epoch % checkpoint_every == 0)
                if due:
                    self.save(checkpoint_path)
                if exhausted or self.interrupted:
                    break
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            for logger in self.loggers:
                logger.after_fit(self)
        if self.interrupted:
            print(f"Interrupted after gradient round {self.batch}"
                  + (f"; checkpoint saved to {checkpoint_path}" if checkpoint_every is not None else "") + ".")
        return rows

    def _catch_interrupt(self):
        "Turn SIGINT into a flag checked between gradient rounds (main thread only)."
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self.interrupted = True
        return signal.signal(signal.SIGINT, handler)

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
                if self.check_finite and not bool(finite.all()):
                    first = int(self.batch - len(values) + int((~finite).nonzero()[0]) + 1)
                    key = name[:-len("_loss")] if name.endswith("_loss") else name
                    stages = [type(n).__name__ for n in pipe_graph(self.pipe) if getattr(n, "fills", None) == key]
                    stage = " or ".join(stages) or "the stage that fills losses[" + repr(key) + "]"
                    raise FloatingPointError(
                        f"{name} became NaN/inf at gradient round {first} (epoch {self.epoch}), computed by {stage}. "
                        "Lower the learning rate, clip gradients (clip_grad_norm=) "
                        "or check the rewards and observations; Learner(check_finite=False) turns this check off.")
                row[name] = float(values.mean())
        for name, values in self.records.lists.items():
            if name != "episode_return" and values:
                row[name] = float(values[-1])
        row.update(self.records.gauges)
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

    # ------------------------------------------------------------------ checkpoints
    def _meta(self) -> Dict:
        env_ids = None
        if self.stepper is not None:
            env_ids = [spec.id if spec is not None else None for spec in self.stepper.env.get_attr("spec")]
        return {"learner": self.name, "env_ids": env_ids,
                "shapes": {name: {k: tuple(v.shape) for k, v in m.state_dict().items()}
                           for name, m in self.models.items()}}

    def state_dict(self) -> Dict:
        "Everything needed to continue exactly: models, every stage's state, RNGs, position, records."
        return {"format": CHECKPOINT_FORMAT, "meta": self._meta(),
                "models": {name: m.state_dict() for name, m in self.models.items()},
                "pipe": self.pipe.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                "epoch": self.epoch, "batch": self.batch, "history": self.history,
                "records": {"series": {k: v.values().cpu() for k, v in self.records.series.items()},
                            "lists": self.records.lists, "marks": self.records._marks}}

    def save(self, path) -> Path:
        """Write a checkpoint atomically: to a temporary file in the same folder, flushed to disk,
        then renamed over `path`, so a crash mid-save leaves the previous checkpoint intact.
        Checkpoints are pickles: load only files you trust."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(self.state_dict(), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def load(self, path) -> "Learner":
        """Restore a checkpoint written by `save` into this learner, built the same way (same
        algorithm, env and network shapes; anything else is refused before anything is changed)."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"No checkpoint at {path}.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as error:
            raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {error}") from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a fastrl_lite checkpoint of format {CHECKPOINT_FORMAT}.")
        self._check_meta(state["meta"], path)
        for name, model in self.models.items():
            model.load_state_dict(state["models"][name])
        self.pipe.reset(state["pipe"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.epoch, self.batch, self.history = state["epoch"], state["batch"], list(state["history"])
        self.records.clear()
        for name, values in state["records"]["series"].items():
            for value in values:
                self.records.add(name, value)
        for name, values in state["records"]["lists"].items():
            self.records.lists[name] = list(values)
        self.records._marks = dict(state["records"]["marks"])
        return self

    def _check_meta(self, saved: Dict, path):
        mine = self._meta()
        if saved["learner"] != mine["learner"]:
            raise CheckpointError(f"{path} was written by a {saved['learner']} learner; this one is {mine['learner']}.")
        if saved["env_ids"] != mine["env_ids"]:
            raise CheckpointError(f"{path} was written for envs {saved['env_ids']}; this learner steps {mine['env_ids']}.")
        for name, shapes in mine["shapes"].items():
            theirs = saved["shapes"].get(name)
            if theirs != shapes:
                diff = sorted(set(theirs or {}) ^ set(shapes)) or \
                    [k for k in shapes if tuple(theirs[k]) != tuple(shapes[k])]
                raise CheckpointError(f"{path} holds a {name!r} network of another shape (differs at {diff[:3]}); "
                                      "build the learner with the network the checkpoint was trained with.")
