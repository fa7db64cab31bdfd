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
from collections.abc import Iterable
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from .. import distributed
from ..core import Records, check_flag, evaluating, flushed_denormals, set_seed
from ..envs import GymStepper, cap_episode_length, make_vec_env
from ..envs.normalize import NormalizeObservation
from ..memory import Collector
from ..pipes import Pipe, find_pipe, pipe_graph

__all__ = ["Learner", "CheckpointError"]

CHECKPOINT_FORMAT = 2
# in a data-parallel checkpoint, what ranks other than 0 leave out of their file because rank 0's holds it
SHARED = "<saved once, in rank 0's file>"


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
    `records`. `fit` trains with subnormal floats flushed to zero, which on most Intel CPUs saves a
    large share of the time and changes no number above 1.2e-38 (`flush_denormal=False` keeps them).

    In a data-parallel run (`fastrl_lite.distributed`) every rank builds the same learner and calls
    `fit`, `save` and `load`: `fit` checks that the ranks start from the same weights, reseeds the
    RNGs of ranks other than 0 from the run seed and their rank before their first round, reduces
    each epoch's figures across the ranks and runs only rank 0's loggers (and, on every rank, those
    marked `every_rank`, which shape the loop rather than report it); a Ctrl-C on any rank stops
    every rank after the same round, and a rank that raises ends every rank's `fit` with its error;
    `eval_every` evaluates on rank 0 only.
    `save` has rank 0 write every rank's state (one file per rank, the shared models and optimizers
    once), and `load` gives each rank its own back, refusing a checkpoint of another number of ranks.
    """

    def __init__(self, model: Union[nn.Module, Dict[str, nn.Module]], pipe, dls: Sequence = (), batches: int = 1000,
                 logger_bases: Optional[Sequence] = None, rolling: int = 100, name: Optional[str] = None,
                 check_finite: bool = True, collector: Optional[Collector] = None,
                 stepper: Optional[GymStepper] = None, flush_denormal: bool = True):
        if not _whole(batches) or batches < 1:
            raise ValueError(f"batches (gradient rounds per epoch) must be a whole number >= 1, got {batches!r}.")
        self.models = model if isinstance(model, dict) else {"model": model}
        self.model = next(iter(self.models.values()))
        self.pipe, self.dls, self.batches = pipe, list(dls), batches
        if isinstance(logger_bases, (str, bytes)) or (logger_bases is not None
                                                       and not isinstance(logger_bases, Iterable)):
            raise ValueError(f"logger_bases must be a list of loggers (e.g. [CSVLogger('metrics.csv')]), got "
                             f"{logger_bases!r}.")
        self.loggers = list(logger_bases or [])
        for logger in self.loggers:
            if not all(callable(getattr(logger, hook, None)) for hook in ("before_fit", "after_epoch", "after_fit")):
                raise ValueError(f"{logger!r} is not a logger: a logger is a LoggerBase (CSVLogger(...), "
                                 "ProgressBarLogger(), ...), or has its before_fit, after_epoch and after_fit methods.")
        self.rolling, self.name, self.check_finite = rolling, name or type(self).__name__, check_finite
        self.flush_denormal = check_flag(flush_denormal, "flush_denormal")
        self.records = Records()
        self._adopt()
        self._check_models_hold_what_is_trained()
        self.collector = collector if collector is not None else find_pipe(pipe, Collector, required=False)
        self.stepper = stepper if stepper is not None else find_pipe(pipe, GymStepper, required=False)
        self.epoch = 0
        self.batch = 0
        self.history: List[Dict[str, float]] = []
        self.interrupted = False
        self.exhausted = False  # whether the last `fit` ended because the pipeline ran out of data
        self._ranks_seeded = False
        # an interrupted epoch's env step at its start and its seconds so far, for the row that ends it
        self._unfinished: Optional[Dict[str, float]] = None
        # during-training evaluation: latest mean and std, best mean, env step of the next one
        self.evaluation: Dict[str, float] = {}

    def _check_models_hold_what_is_trained(self):
        """Every parameter an `Update` in the pipeline steps must belong to one of the learner's models,
        which are what `save`, `load` and `weights` keep."""
        from .update import Update
        held = {id(p) for m in self.models.values() for p in m.parameters()}
        for node in pipe_graph(self.pipe):
            if isinstance(node, Update):
                for key, opt in node.optimizers.items():
                    if any(id(p) not in held for g in opt.param_groups for p in g["params"]):
                        raise ValueError(
                            f"The optimizer of loss {key!r} steps parameters that none of the learner's models "
                            f"({', '.join(self.models)}) holds, so save, load and weights would leave them out: give "
                            "the learner every module it trains, e.g. Learner({'actor': actor, 'critic': critic}, "
                            "pipe).")

    def _adopt(self):
        "Point every stage at this learner's record bus (again at each fit: a pipeline may serve several)."
        for node in pipe_graph(self.pipe):
            if isinstance(node, Pipe):
                node.records = self.records

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

    def fit(self, epochs: int, checkpoint_every: Optional[int] = None, checkpoint_path=None,
            eval_every: Optional[int] = None, eval_episodes: int = 5, best_model_path=None):
        """Train for `epochs` epochs of `batches` gradient rounds each; returns the per-epoch rows.

        With `checkpoint_every=k` the whole learner is saved to `checkpoint_path` every k epochs.
        With `eval_every=n`, every n env steps the greedy policy runs `eval_episodes` episodes on a
        separate env (`validate`); the latest result is in each row as `eval_mean` and `eval_std`,
        and, with `best_model_path`, the models' weights are saved there whenever the mean beats
        every earlier one (rl-zoo's EvalCallback).
        Ctrl-C (SIGINT) lets the current gradient round finish, saves a checkpoint when checkpointing
        is on, and returns: the learner stays usable and `fit` can be called again. An interrupted
        epoch gives no row: its rounds count towards the next row, as if it had not been stopped.
        A finite pipeline (`GymDataPipe(..., n=...)`) that runs out ends `fit` and sets `exhausted`
        (an evaluation due by then still runs); when that leaves fewer epochs than asked for, `fit`
        prints where the data ended. An epoch it cut short still gives its row, of the rounds it ran;
        an epoch without a round or an env step gives none. A `fit` after one that ran out is refused
        (until a checkpoint is loaded): `while not learner.exhausted: learner.fit(1)` trains to the end.
        An epoch whose losses hold a NaN/inf raises FloatingPointError (see `check_finite`) without
        counting the epoch; its records are left out of the next row, so once the cause is fixed
        (weights and optimizer state restored, say) `fit` trains on.
        Subnormal floats are flushed to zero while it trains (`fastrl_lite.core.flushed_denormals`),
        unless `flush_denormal` is False."""
        with flushed_denormals(check_flag(self.flush_denormal, "flush_denormal")):
            return self._fit(epochs, checkpoint_every, checkpoint_path, eval_every, eval_episodes, best_model_path)

    def _fit(self, epochs, checkpoint_every, checkpoint_path, eval_every, eval_episodes, best_model_path):
        if not _whole(epochs) or epochs < 1:
            raise ValueError(f"fit needs a positive whole number of epochs, got {epochs!r}.")
        if checkpoint_every is not None and (not _whole(checkpoint_every) or checkpoint_every < 1
                                             or checkpoint_path is None):
            raise ValueError("checkpoint_every needs to be a whole number >= 1 and to come with a checkpoint_path.")
        if eval_every is not None and (not _whole(eval_every) or eval_every < 1):
            raise ValueError(f"eval_every must be a whole number of env steps >= 1, got {eval_every!r}.")
        if eval_every is not None and (not _whole(eval_episodes) or eval_episodes < 1):
            raise ValueError(f"eval_episodes must be a whole number >= 1, got {eval_episodes!r}.")
        if self.exhausted:  # a fit before this one ran out of data
            raise ValueError(self._exhausted_message())
        if eval_every is not None:
            self.evaluation.setdefault("mean", math.nan)
            self.evaluation.setdefault("std", math.nan)
        epochs = int(epochs)
        ranks = distributed.is_distributed()
        if ranks:
            self._start_ranks()
            if not distributed.is_main():
                eval_every = None  # rank 0 evaluates, and alone writes best_model_path
        self._adopt()
        loggers = self.loggers if not ranks or distributed.is_main() else \
            [logger for logger in self.loggers if getattr(logger, "every_rank", False)]
        for logger in loggers:
            logger.before_fit(self, epochs)
        rows, cut_short = [], False  # cut_short: the data ended inside the last epoch
        self.interrupted = False
        previous_handler = self._catch_interrupt(ranks)
        try:
            for _ in self._iterate(range(epochs), "wrap_epochs", loggers):
                start_time, start_steps, start_batch, spent = time.perf_counter(), self.env_steps, self.batch, 0.0
                continued = self._unfinished is not None
                if continued:  # the rest of an interrupted epoch: its row covers the whole epoch
                    start_steps, spent = self._unfinished["env_steps"], self._unfinished["seconds"]
                    self._unfinished = None
                for _ in self._iterate(range(self.batches), "wrap_batches", loggers):
                    try:
                        next(self.pipe)
                    except StopIteration:  # its last pull may have run env steps: an evaluation may be due
                        self.exhausted = True
                        if eval_every is not None and self.env_steps >= self.evaluation.get("next", eval_every):
                            self._evaluate(eval_every, eval_episodes, best_model_path)
                        break
                    self.batch += 1
                    if eval_every is not None and self.env_steps >= self.evaluation.get("next", eval_every):
                        self._evaluate(eval_every, eval_episodes, best_model_path)
                    if self.interrupted or (ranks and distributed.stop_agreed()):
                        self.interrupted = True
                        break
                seconds = spent + time.perf_counter() - start_time
                ran = continued or self.batch > start_batch or self.env_steps > start_steps
                if self.exhausted and not ran:
                    break  # the data ended with the epoch before: no epoch without a round or an env step
                cut_short = self.exhausted
                if self.interrupted:
                    self._unfinished = {"env_steps": start_steps, "seconds": seconds}
                else:
                    row = self._epoch_row(seconds, self.env_steps - start_steps)
                    rows.append(row)
                    for logger in loggers:
                        logger.after_epoch(self, row)
                due = checkpoint_every is not None and (self.interrupted or self.epoch % checkpoint_every == 0)
                if due:
                    self.save(checkpoint_path)
                if self.exhausted or self.interrupted:
                    break
        except Exception as error:
            if ranks:
                distributed.on_failure(error)
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            for logger in loggers:
                logger.after_fit(self)
        if self.interrupted and (not ranks or distributed.is_main()):
            print(f"Interrupted after gradient round {self.batch}"
                  + (f"; checkpoint saved to {checkpoint_path}" if checkpoint_every is not None else "") + ".")
        elif self.exhausted and len(rows) < epochs and (not ranks or distributed.is_main()):
            rounds = self.history[-1]["batch"] - (self.history[-2]["batch"] if len(self.history) > 1 else 0)
            where = f"in epoch {self.epoch}, after {rounds} of its {self.batches} gradient rounds " + (
                "(its row covers those)" if rounds else "(its row counts env steps only)") \
                if cut_short and rounds < self.batches else f"at the end of epoch {self.epoch}"
            print(f"The training pipeline ran out of data at env step {self.env_steps}, {where}; fit({epochs}) "
                  f"gave {len(rows)} epoch row{'s' if len(rows) != 1 else ''}.")
        return rows

    def _exhausted_message(self) -> str:
        stepper = self.stepper
        capped = stepper is not None and stepper.n is not None and stepper.env_steps >= stepper.n
        ended, more = (f"its env step cap n={stepper.n} is reached", "a larger n (GymDataPipe(..., n=...))") \
            if capped else ("it raised StopIteration", "more data")
        return (f"The training pipeline is exhausted: {ended} (after {self.env_steps} env steps and {self.batch} "
                "gradient rounds), so fit has nothing to train on; nothing was changed. To train further, save "
                f"this learner (learner.save(path)), build the same learner on a pipeline with {more} and load the "
                "checkpoint into it (learner.load(path)); on the command line, --resume the run with a larger --steps.")

    def _catch_interrupt(self, ranks: bool = False):
        """Turn SIGINT into a flag checked between gradient rounds (main thread only); across ranks,
        into a request the ranks learn of together, from the next gradient all-reduce."""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if ranks:
                distributed.request_stop()
            else:
                self.interrupted = True
        return signal.signal(signal.SIGINT, handler)

    def _evaluate(self, eval_every: int, episodes: int, best_model_path):
        result = self.validate(episodes)
        self.evaluation.update(mean=result["mean"], std=result["std"],
                               next=(self.env_steps // eval_every + 1) * eval_every)
        if best_model_path is not None and result["mean"] > self.evaluation.get("best", -math.inf):
            self.evaluation["best"] = result["mean"]
            Path(best_model_path).parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.weights(), best_model_path)

    def _iterate(self, iterable, hook: str, loggers):
        for logger in loggers:
            iterable = getattr(logger, hook)(iterable, self)
        return iterable

    def _start_ranks(self):
        """Before a data-parallel `fit`: check that every rank holds the same weights, and before the
        first round of a fresh run reseed the RNGs of ranks other than 0 from the run seed
        (`torch.initial_seed()`, which `set_seed` sets) and their rank, so they explore and sample apart."""
        distributed.clear_stop()
        distributed.check_same_weights(self.models)
        if not self._ranks_seeded:
            if not distributed.is_main():
                set_seed(distributed.rank_seed(torch.initial_seed()))
            self._ranks_seeded = True

    def _epoch_row(self, seconds: float, steps: int) -> Dict[str, float]:
        """The row of the epoch that just ended, which counts it (`epoch` + 1). A loss that is
        NaN/inf refuses the row and leaves the epoch uncounted; the refused epoch's records are
        marked, so the row of the next epoch, once the cause is fixed, is of that epoch alone."""
        epoch = self.epoch + 1
        returns = self.episode_returns()
        row = {"epoch": epoch, "batch": self.batch, "env_steps": self.env_steps, "episodes": self.episodes,
               "rolling_reward": float(returns[-self.rolling:, 1].mean()) if len(returns) else math.nan}
        # losses and what loss stages report are checked; another stage's own figures may be NaN (a mean over none)
        reported = {name for n in pipe_graph(self.pipe) for name in getattr(n, "reports", ())}
        for name in self.records.series:
            values = self.records.since_mark(name)
            if len(values):
                checked = self.check_finite and (name.endswith("_loss") or name in reported)
                finite = torch.isfinite(values) if checked else None
                if checked and not bool(finite.all()):
                    first = int(self.batch - len(values) + int((~finite).nonzero()[0]) + 1)
                    key = name[:-len("_loss")] if name.endswith("_loss") else name
                    stages = [type(n).__name__ for n in pipe_graph(self.pipe)
                              if getattr(n, "fills", None) == key or name in getattr(n, "reports", ())]
                    stage = " or ".join(stages) or "the stage that fills losses[" + repr(key) + "]"
                    self.records.mark()
                    raise FloatingPointError(
                        f"{name} became NaN/inf at gradient round {first} (epoch {epoch}), computed by {stage}. "
                        "Lower the learning rate, clip gradients (clip_grad_norm=; max_grad_norm on the command "
                        "line) or check the rewards and observations; Learner(check_finite=False) turns this check "
                        "off.")
                row[name] = float(values.mean())
        for name, values in self.records.lists.items():
            if name != "episode_return" and values:
                row[name] = float(values[-1])
        row.update(self.records.gauges)
        if "mean" in self.evaluation:
            row["eval_mean"], row["eval_std"] = self.evaluation["mean"], self.evaluation["std"]
        row["steps_per_s"] = steps / seconds if seconds > 0 else math.nan
        if distributed.is_distributed():
            row, stop = distributed.reduce_row(row)
            self.interrupted = self.interrupted or stop
        self.epoch = epoch
        self.records.mark()
        self.history.append(row)
        return row

    def validate(self, episodes: int = 10, seed: int = 10_000, env_ids=None) -> Dict:
        """Run the greedy policy (model in eval mode, so exploration is off) for `episodes` episodes;
        returns {'mean', 'std', 'returns'}. Uses the validation pipeline `dls[1]` when the learner has
        one (its envs restarted from a reset seeded with its seed, else `seed`, at every call), else a
        fresh single env seeded with `seed`, made the way the training envs are (the same
        id, arguments and wrappers), or of `env_ids`. An env whose observation or action space is not
        the training env's is refused before it steps. A validation pipeline capped at `n` env steps
        runs at most `n` env steps per call, and says so if its episodes do not finish within them.
        With several envs each gives its share of the episodes, (episodes + i) // n_envs for env i
        (as SB3's `evaluate_policy`), so short episodes, which finish first, do not crowd out long ones.
        The agent's state (its noise process, its step counts) is the same afterwards as before."""
        if not _whole(episodes) or episodes < 1:
            raise ValueError(f"validate needs a whole number of episodes >= 1, got {episodes!r}.")
        if len(self.dls) > 1 and env_ids is None:
            stepper = find_pipe(self.dls[1], GymStepper)
            if stepper is self.stepper:
                raise ValueError("dls[1], the validation pipeline, steps the training envs: validating would play "
                                 "their episodes and move their counts. Build a separate one (its own GymDataPipe), "
                                 "or give no dls[1] and validate makes a fresh env.")
            self._check_validation_env(stepper.env, "The validation pipeline's env")
            stepper.restart(stepper.seed if stepper.seed is not None else seed)  # whole episodes, the same starts
        else:
            if self.stepper is None or self.stepper.agent is None:
                raise RuntimeError("validate needs a pipeline whose GymStepper has an agent.")
            # an env without a time limit of its own gets one, so a greedy policy that never ends an episode
            # cannot hang the evaluation
            fns = getattr(self.stepper.env, "env_fns", None)
            if env_ids is None and not fns:
                spec = self.stepper.env.get_attr("spec")[0]
                if spec is None:
                    raise ValueError("validate makes its env the way the training env was made, but this vector env "
                                     "has neither env_fns nor a registered id; pass env_ids=[...], or give the "
                                     "learner a validation pipeline as dls[1].")
                env_ids = [spec.id]
            if env_ids is not None:
                env = make_vec_env(env_ids, num_envs=1, wrappers=[cap_episode_length])
            else:
                env = gym.vector.SyncVectorEnv([lambda: cap_episode_length(fns[0]())],
                                               autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
            try:
                self._check_validation_env(env, "The validation env")
            except ValueError:
                env.close()
                raise
            stepper = GymStepper(env, self.stepper.agent, seed=seed)
        if stepper.agent is None:
            raise RuntimeError("The validation pipeline has no agent: build it with GymDataPipe(..., agent=...).")
        records, stepper.records = stepper.records, Records()
        budget, ran = stepper.n, 0
        agent = stepper.agent
        agent_state = copy.deepcopy(agent.state_dict()) if hasattr(agent, "state_dict") else None
        # each env gives its share of the episodes, (episodes + i) // n_envs (SB3's evaluate_policy), so the
        # result does not lean towards the short episodes that several envs finish first
        wanted = np.array([(episodes + i) // stepper.num_envs for i in range(stepper.num_envs)])
        kept, counted = [], np.zeros(stepper.num_envs, dtype=np.int64)
        try:
            with evaluating(stepper.agent.model):
                while len(kept) < episodes:
                    if budget is not None and ran >= budget:
                        raise ValueError(f"The validation pipeline is capped at n={budget} env steps, in which "
                                         f"{len(kept)} of {episodes} episodes finished; build it with a larger n (or "
                                         "none), or validate fewer episodes.")
                    before, seen = stepper.finished_per_env(), len(stepper.records.values("episode_return"))
                    stepper.step()
                    ran += stepper.num_envs
                    ended = np.nonzero(stepper.finished_per_env() != before)[0]  # in env order, as recorded
                    for env, (_, ret) in zip(ended, stepper.records.values("episode_return")[seen:]):
                        if counted[env] < wanted[env]:
                            counted[env] += 1
                            kept.append(ret)
            returns = np.array(kept)
        finally:
            stepper.records = records
            if agent_state is not None:
                agent.reset(agent_state)
        return {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist()}

    def _check_validation_env(self, env, what: str):
        "Refuse an env of other observation or action spaces than the training env's: the policy acts on those."
        if self.stepper is None:
            return
        mine = self.stepper.env
        if env.single_observation_space == mine.single_observation_space and \
                env.single_action_space == mine.single_action_space:
            return
        raise ValueError(f"{what} {_env_ids(env)} observes {env.single_observation_space} and acts in "
                         f"{env.single_action_space}; the training env {_env_ids(mine)} observes "
                         f"{mine.single_observation_space} and acts in {mine.single_action_space}, the only ones "
                         "the policy knows. Validate on an env of the training env's spaces (or without env_ids, on "
                         "one made like the training env).")

    # ------------------------------------------------------------------ weights
    def _obs_normalizer(self):
        stage = find_pipe(self.dls[0] if self.dls else self.pipe, NormalizeObservation, required=False)
        return stage.normalizer if stage is not None else None

    def weights(self) -> Dict:
        """What acting needs (model.pt, best_model.pt): each model's state_dict and, when the env
        pipeline normalises observations, the normaliser's statistics under 'obs_normalizer': the
        policy acts on normalised observations, so its weights alone would act on other inputs."""
        weights = {name: m.state_dict() for name, m in self.models.items()}
        normalizer = self._obs_normalizer()
        if normalizer is not None:
            weights["obs_normalizer"] = normalizer.state_dict()
        return weights

    def load_weights(self, weights: Dict) -> "Learner":
        """Load what `weights()` gave into this learner, built the same way; a file of other
        networks, or one without the observation statistics this learner acts on, is refused."""
        if not isinstance(weights, dict):
            raise CheckpointError(f"These are not a learner's weights (a dict of state_dicts), but a "
                                  f"{type(weights).__name__}.")
        missing = [name for name in self.models if name not in weights]
        normalizer = self._obs_normalizer()
        if missing or (normalizer is not None and "obs_normalizer" not in weights):
            raise CheckpointError(f"These weights lack {missing or ['obs_normalizer']} (they hold "
                                  f"{sorted(weights)}): they were written by another algorithm or settings.")
        try:
            for name, model in self.models.items():
                model.load_state_dict(weights[name])
            if normalizer is not None:
                normalizer.load_state_dict(weights["obs_normalizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:
            raise CheckpointError(f"These weights do not fit this learner's networks: {error}") from error
        return self

    # ------------------------------------------------------------------ checkpoints
    def _meta(self) -> Dict:
        env_ids = _env_ids(self.stepper.env) if self.stepper is not None else None
        spaces = None
        if self.stepper is not None:
            spaces = [repr(self.stepper.env.single_observation_space), repr(self.stepper.env.single_action_space)]
        return {"learner": self.name, "env_ids": env_ids, "spaces": spaces, "world_size": distributed.world_size(),
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
                "epoch": self.epoch, "batch": self.batch, "history": self.history, "evaluation": self.evaluation,
                "unfinished_epoch": self._unfinished,
                "records": {"series": {k: v.values().cpu() for k, v in self.records.series.items()},
                            "lists": self.records.lists, "marks": self.records._marks,
                            "gauges": dict(self.records.gauges)}}

    def save(self, path) -> Path:
        """Write a checkpoint atomically: to a temporary file in the same folder, flushed to disk,
        then renamed over `path`, so a crash mid-save leaves the previous checkpoint intact.
        Checkpoints are pickles: load only files you trust. In a data-parallel run every rank calls
        `save`; rank 0 writes `path` and one `rank_checkpoint_path(path, r)` for each other rank."""
        path = Path(path)
        if distributed.is_distributed():
            return self._save_ranks(path)
        return self._write(path, self.state_dict())

    def _save_ranks(self, path: Path) -> Path:
        state = self.state_dict()
        if not distributed.is_main():
            state = _leave_shared_out(state, self.pipe)
        states, error = distributed.gather_to_main(state), None
        if distributed.is_main():
            try:
                for r, rank_state in enumerate(states):
                    self._write(rank_checkpoint_path(path, r), rank_state)
            except Exception as failure:
                error = failure
        distributed.raise_if_any(error)
        return path

    @staticmethod
    def _write(path: Path, state: Dict) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    def load(self, path) -> "Learner":
        """Restore a checkpoint written by `save` into this learner, built the same way (same
        algorithm, env and network shapes, same number of ranks; anything else is refused before
        anything is changed). In a data-parallel run every rank calls `load` with rank 0's `path`."""
        path = Path(path)
        if distributed.is_distributed():
            return self._load_ranks(path)
        state = _read_checkpoint(path)
        _check_world(state["meta"], path)
        self._check_meta(state["meta"], path)
        backup = copy.deepcopy(self.state_dict())
        try:
            self._load_state(state)
        except Exception as error:
            self._load_state(backup)  # all or nothing: put back what was loaded before the failure
            raise CheckpointError(f"{path} does not fit this learner: {error} Nothing was changed.") from error
        return self

    def _load_ranks(self, path: Path) -> "Learner":
        "Rank 0 reads every rank's file and hands each rank its state; all ranks load, or none does."
        states, error = None, None
        if distributed.is_main():
            try:
                main = _read_checkpoint(path)
                _check_world(main["meta"], path)
                states = [main] + [_fill_shared(_read_checkpoint(rank_checkpoint_path(path, r)), main)
                                   for r in range(1, distributed.world_size())]
            except CheckpointError as failure:
                error = failure
        distributed.raise_if_any(error, CheckpointError)
        state = distributed.scatter_from_main(states)
        backup, error = None, None
        try:
            self._check_meta(state["meta"], path)
            backup = copy.deepcopy(self.state_dict())
            self._load_state(state)
        except CheckpointError as failure:
            error = failure
        except Exception as failure:
            error = CheckpointError(f"{path} does not fit this learner on rank {distributed.rank()}: {failure}")
        try:
            distributed.raise_if_any(error, CheckpointError)
        except CheckpointError:
            if backup is not None:
                self._load_state(backup)  # all or nothing, on every rank
            raise
        self._ranks_seeded = True
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
        self.exhausted = False  # the pipeline is back where the checkpoint was taken
        self.evaluation = dict(state.get("evaluation", {}))
        self._unfinished = state.get("unfinished_epoch")
        self.records.clear()
        for name, values in state["records"]["series"].items():
            for value in values:
                self.records.add(name, value)
        for name, values in state["records"]["lists"].items():
            self.records.lists[name] = list(values)
        self.records._marks = dict(state["records"]["marks"])
        self.records.gauges.update(state["records"].get("gauges", {}))

    def _check_meta(self, saved: Dict, path):
        mine = self._meta()
        if saved["learner"] != mine["learner"]:
            raise CheckpointError(f"{path} was written by a {saved['learner']} learner; this one is {mine['learner']}.")
        if saved["env_ids"] != mine["env_ids"]:
            raise CheckpointError(f"{path} was written for envs {saved['env_ids']}; this learner steps {mine['env_ids']}.")
        if saved.get("spaces") is not None and saved["spaces"] != mine["spaces"]:
            (obs, act), (my_obs, my_act) = saved["spaces"], mine["spaces"]
            raise CheckpointError(f"{path} was written for an env that observes {obs} and acts in {act}; this "
                                  f"learner's env observes {my_obs} and acts in {my_act}. Build the learner on the env the "
                                  "checkpoint's run trained on.")
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


def _env_ids(env) -> List[Optional[str]]:
    "The registered id of each env of a vector env (None for an env made without one)."
    return [spec.id if spec is not None else None for spec in env.get_attr("spec")]


def rank_checkpoint_path(path, rank: int) -> Path:
    "Where rank `rank`'s state of a data-parallel checkpoint at `path` lives (rank 0's is `path` itself)."
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def _read_checkpoint(path: Path) -> Dict:
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {error}") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a fastrl_lite checkpoint of format {CHECKPOINT_FORMAT}.")
    return state


def _check_world(saved: Dict, path):
    theirs, mine = saved.get("world_size", 1), distributed.world_size()
    if theirs != mine:
        raise CheckpointError(
            f"{path} was written by a run of {theirs} rank(s) and this run has {mine}: each rank's buffer, envs "
            f"and RNGs are in the checkpoint and cannot be split or merged. Load it into the same learner on "
            f"{theirs} rank(s) (torchrun --nproc-per-node {theirs}; a command-line run: `--resume` it with "
            f"--nproc {theirs}).")


def _leave_shared_out(state: Dict, pipe) -> Dict:
    "A rank's state without what rank 0's file holds: the models and each stage's `shared_state`."
    state = {**state, "models": SHARED}
    node, stage_state = pipe, state["pipe"]
    while isinstance(node, Pipe) and isinstance(stage_state, dict):
        for key in getattr(node, "shared_state", ()):
            stage_state[key] = SHARED
        node, stage_state = node.source, stage_state.get("source")
    return state


def _fill_shared(state, main):
    "`state` with what it left out (`SHARED`) taken from rank 0's state `main`, at the same place."
    if isinstance(state, str) and state == SHARED:
        return main
    if isinstance(state, dict) and isinstance(main, dict):
        return {k: _fill_shared(v, main.get(k)) for k, v in state.items()}
    return state
