"""The `Learner`: runs a learner pipeline for `epochs` × `batches` gradient rounds, owns the record
bus, reports each epoch to its loggers, and evaluates the greedy policy."""
from __future__ import annotations

import copy
import math
import numbers
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
from ..envs import GymStepper, make_vec_env
from ..memory import Collector
from ..pipes import Pipe, find_pipe, pipe_graph

__all__ = ["Learner", "CheckpointError"]

CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    "A checkpoint that is unreadable, or was written for a different learner, env or network."


def _whole(value) -> bool:
    "A whole number (a Python or NumPy integer), not a bool."
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class Learner:
    """`pipe` is the end of the learner pipeline (env stepper → … → collector → loss → update →
    target updater); pulling one item from it is one gradient round. An epoch is `batches` rounds.

    `model` is the module (or a dict of named modules) the pipeline trains; `dls[0]` is the training
    env pipeline and `dls[1]`, when given, the validation one. `collector` (which counts the env
    steps trained on) and `stepper` (which counts episodes and lends its agent and env to
    `validate`) are what the learner reports from; the factories pass them, and for a pipeline built
    by hand they are looked up in it by type. Every stage in the graph records to this learner's
    `records`.
    """

    def __init__(self, model: Union[nn.Module, Dict[str, nn.Module]], pipe, dls: Sequence = (), batches: int = 1000,
                 logger_bases: Optional[Sequence] = None, rolling: int = 100, name: Optional[str] = None,
                 check_finite: bool = True, collector: Optional[Collector] = None,
                 stepper: Optional[GymStepper] = None):
        if not _whole(batches) or batches < 1:
            raise ValueError(f"batches (gradient rounds per epoch) must be a whole number >= 1, got {batches!r}.")
        self.models = model if isinstance(model, dict) else {"model": model}
        self.model = next(iter(self.models.values()))
        self.pipe, self.dls, self.batches = pipe, list(dls), batches
        self.loggers = list(logger_bases or [])
        self.rolling, self.name, self.check_finite = rolling, name or type(self).__name__, check_finite
        self.records = Records()
        for node in pipe_graph(pipe):
            if isinstance(node, Pipe):
                node.records = self.records
        self.collector = collector if collector is not None else find_pipe(pipe, Collector, required=False)
        self.stepper = stepper if stepper is not None else find_pipe(pipe, GymStepper, required=False)
        self.epoch = 0
        self.batch = 0
        self.history: List[Dict[str, float]] = []
        self.interrupted = False

    @property
    def env_steps(self) -> int:
        "Env steps trained on: the collector's count, else the stepper's."
        if self.collector is not None:
            return self.collector.env_steps
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
        if not _whole(epochs) or epochs < 1:
            raise ValueError(f"fit needs a positive whole number of epochs, got {epochs!r}.")
        if checkpoint_every is not None and (not _whole(checkpoint_every) or checkpoint_every < 1
                                             or checkpoint_path is None):
            raise ValueError("checkpoint_every needs to be a whole number >= 1 and to come with a checkpoint_path.")
        epochs = int(epochs)
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
        one, else a fresh single env of the training env id seeded with `seed`. A validation pipeline
        capped at `n` env steps runs at most `n` env steps per call, and says so if its episodes do
        not finish within them."""
        if not _whole(episodes) or episodes < 1:
            raise ValueError(f"validate needs a whole number of episodes >= 1, got {episodes!r}.")
        if len(self.dls) > 1 and env_ids is None:
            stepper = find_pipe(self.dls[1], GymStepper)
        else:
            if self.stepper is None or self.stepper.agent is None:
                raise RuntimeError("validate needs a pipeline whose GymStepper has an agent.")
            env_ids = env_ids or [self.stepper.env.get_attr("spec")[0].id]
            stepper = GymStepper(make_vec_env(env_ids, num_envs=1), self.stepper.agent, seed=seed)
        if stepper.agent is None:
            raise RuntimeError("The validation pipeline has no agent: build it with GymDataPipe(..., agent=...).")
        records, stepper.records = stepper.records, Records()
        budget, ran = stepper.n, 0
        try:
            with evaluating(stepper.agent.model):
                while len(stepper.records.values("episode_return")) < episodes:
                    if budget is not None and ran >= budget:
                        done = len(stepper.records.values("episode_return"))
                        raise ValueError(f"The validation pipeline is capped at n={budget} env steps, in which "
                                         f"{done} of {episodes} episodes finished; build it with a larger n (or "
                                         "none), or validate fewer episodes.")
                    stepper.step()
                    ran += stepper.num_envs
            returns = np.array([r for _, r in stepper.records.values("episode_return")[:episodes]])
        finally:
            stepper.records = records
        return {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist()}

    # ------------------------------------------------------------------ checkpoints
    def _meta(self) -> Dict:
        env_ids = None
        if self.stepper is not None:
            env_ids = [spec.id if spec is not None else None for spec in self.stepper.env.get_attr("spec")]
        return {"learner": self.name, "env_ids": env_ids,
                "stages": [type(node).__name__ for node in pipe_graph(self.pipe)],
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
        backup = copy.deepcopy(self.state_dict())
        try:
            self._load_state(state)
        except Exception as error:
            self._load_state(backup)  # all or nothing: put back what was loaded before the failure
            raise CheckpointError(f"{path} does not fit this learner: {error} Nothing was changed.") from error
        return self

    def _load_state(self, state: Dict):
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

    def _check_meta(self, saved: Dict, path):
        mine = self._meta()
        if saved["learner"] != mine["learner"]:
            raise CheckpointError(f"{path} was written by a {saved['learner']} learner; this one is {mine['learner']}.")
        if saved["env_ids"] != mine["env_ids"]:
            raise CheckpointError(f"{path} was written for envs {saved['env_ids']}; this learner steps {mine['env_ids']}.")
        if saved["stages"] != mine["stages"]:
            theirs, ours = saved["stages"], mine["stages"]
            at = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
            raise CheckpointError(f"{path} was written by another pipeline: its stage {at} is "
                                  f"{theirs[at] if at < len(theirs) else 'missing'}, this learner's is "
                                  f"{ours[at] if at < len(ours) else 'missing'} (stages {theirs} against {ours}); "
                                  "build the learner the way the checkpoint's run was built.")
        for name, shapes in mine["shapes"].items():
            theirs = saved["shapes"].get(name)
            if theirs != shapes:
                diff = sorted(set(theirs or {}) ^ set(shapes)) or \
                    [k for k in shapes if tuple(theirs[k]) != tuple(shapes[k])]
                raise CheckpointError(f"{path} holds a {name!r} network of another shape (differs at {diff[:3]}); "
                                      "build the learner with the network the checkpoint was trained with.")
