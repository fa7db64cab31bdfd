"""fastrl-lite: train an agent on a gymnasium env with per-env presets and write a run folder
(config.json, metrics.csv, returns.csv, returns.png, model.pt, eval.json, episode.gif, checkpoint.pt);
evaluate a trained run; plot the learning curves of several runs.

An algorithm is one builder function, `build_ALGO(env_id, hp, steps, seed, loggers) -> Learner`,
registered in `BUILDERS`; its hyper-parameters (rl-zoo's names and units) come from `presets.py`."""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
from gymnasium.error import DependencyNotInstalled
from torch import nn

from . import distributed
from .core import check_real, check_seed, check_whole, flushed_denormals, set_seed
from .envs import EVAL_EPISODE_CAP, GymDataPipe, check_env_id, make_vec_env
from .learner import CheckpointError
from .loggers import CSVLogger, LoggerBase, ProgressBarLogger, plot_returns, record_episode_gif
from .memory.rollout import RolloutCollector
from .presets import DEFAULTS, GSDE_ONLY, parse_overrides, resolve


# ---------------------------------------------------------------- settings in other libraries' units
def _whole(hp: Dict, key: str, low: int) -> int:
    return check_whole(hp[key], key, low)


def _positive(hp: Dict, key: str, high: Optional[float] = None) -> float:
    return check_real(hp[key], key, 0, high, low_open=True)


def collection(hp: Dict):
    """(env steps between bursts, gradient rounds per burst) from SB3's `train_freq` (per env, times
    `n_envs`) and `gradient_steps` (-1: as many rounds as env steps collected in the burst)."""
    n_envs = _whole(hp, "n_envs", 1)
    train_every = _whole(hp, "train_freq", 1) * n_envs
    gradient_steps = _whole(hp, "gradient_steps", -1)
    if gradient_steps == 0:
        raise ValueError("gradient_steps must be >= 1, or -1 for as many rounds as env steps collected; got 0.")
    return train_every, train_every if gradient_steps == -1 else gradient_steps


def target_rounds(hp: Dict, train_every: int, updates: int):
    """Gradient rounds between target updates, and a sentence saying so: `target_update_rounds` as
    given, or rl-zoo's `target_update_interval` in env steps. Weights change only during bursts, so
    an interval of N env steps is one update every max(1, round(N / train_every)) bursts."""
    if hp.get("target_update_rounds") is not None:
        rounds = _whole(hp, "target_update_rounds", 1)
        return rounds, f"every {rounds} gradient rounds (target_update_rounds)"
    interval = _whole(hp, "target_update_interval", 1)
    bursts = max(1, round(interval / train_every))
    return bursts * updates, (f"every {bursts * updates} gradient rounds = {bursts * train_every} env steps "
                              f"(target_update_interval={interval} env steps)")


def _flag(hp: Dict, key: str) -> bool:
    value = hp[key]
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}.")
    return value


def _net_arch(hp: Dict):
    arch = hp["net_arch"]
    if not isinstance(arch, (list, tuple)) or not arch or not all(isinstance(n, int) and n > 0 for n in arch):
        raise ValueError(f"net_arch must be a list of layer sizes such as [256,256], got {arch!r}.")
    return tuple(arch)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _activation(hp: Dict):
    "rl-zoo's `activation_fn`, by name ('tanh' or 'relu'; rl-zoo's `nn.Tanh`/`nn.ReLU` are taken too)."
    name = hp["activation_fn"]
    key = name.lower().removeprefix("nn.") if isinstance(name, str) else None
    if key not in ACTIVATIONS:
        raise ValueError(f"activation_fn must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[key]


def _probe(env_id: str):
    "A one-env vector env of `env_id` (observations flattened where they are not arrays) and its observation size."
    try:
        env = make_vec_env(env_id)
    except ModuleNotFoundError as error:  # an env whose module imports a package that is not installed
        if error.name is None:
            raise
        raise ValueError(f"{env_id} needs the Python module {error.name!r}, which is not installed: install it (e.g. "
                         f"`pip install {error.name.split('.')[0]}`) to run {env_id}, or choose another --env."
                         ) from error
    shape = tuple(env.single_observation_space.shape)
    if len(shape) != 1:
        env.close()
        raise ValueError(f"{env_id} observes arrays of shape {shape}, and `fastrl-lite train` builds MLPs over flat "
                         "vector observations. Train on an env with vector observations, or build a network for "
                         "these (e.g. a conv block) with the Python API.")
    return env, shape[0]


# ---------------------------------------------------------------- one builder per algorithm
def build_dqn(env_id: str, hp: Dict, steps: int, seed: int, loggers):
    "DQN (double Q with `double_q`) with ε decaying over `exploration_fraction` of `n_timesteps`."
    from .algos.dqn import DQN, DQNAgent, DQNLearner, check_discrete
    probe, state_sz = _probe(env_id)
    n_actions = check_discrete(probe)
    probe.close()
    train_every, updates = collection(hp)
    sync, _ = target_rounds(hp, train_every, updates)
    if not (0 <= hp["exploration_final_eps"] <= hp["exploration_initial_eps"] <= 1):
        raise ValueError("Need 0 <= exploration_final_eps <= exploration_initial_eps <= 1, got "
                         f"{hp['exploration_final_eps']} and {hp['exploration_initial_eps']}.")
    decay = max(1, int(_positive(hp, "exploration_fraction", 1.0) * _whole(hp, "n_timesteps", 1)))
    model = DQN(state_sz, n_actions, hidden=_net_arch(hp))
    agent = DQNAgent(model, min_epsilon=hp["exploration_final_eps"], max_epsilon=hp["exploration_initial_eps"],
                     max_steps=decay)
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps, num_envs=hp["n_envs"])
    return DQNLearner(model, [dl], logger_bases=loggers, lr=_positive(hp, "learning_rate"),
                      bs=_whole(hp, "batch_size", 1), max_sz=_whole(hp, "buffer_size", 1),
                      warmup=_whole(hp, "learning_starts", 0), train_every=train_every, updates=updates,
                      gamma=hp["gamma"], target_sync=sync, double=_flag(hp, "double_q"),
                      clip_grad_norm=None if hp["max_grad_norm"] is None else _positive(hp, "max_grad_norm"),
                      batches=1280, prioritized=_flag(hp, "prioritized"),
                      sail=_flag(hp, "sail"))


def _continuous_sizes(env_id: str, algo: str):
    from .agents import check_continuous
    probe, state_sz = _probe(env_id)
    space = check_continuous(probe, algo)
    probe.close()
    return state_sz, int(torch.Size(space.shape).numel())


def _learning_starts(hp: Dict) -> int:
    "rl-zoo's `learning_starts` (uniform random actions until then, as in SB3), at most half the run."
    return min(_whole(hp, "learning_starts", 0), max(256, _whole(hp, "n_timesteps", 1) // 2))


def build_ddpg(env_id: str, hp: Dict, steps: int, seed: int, loggers):
    """DDPG exploring with rl-zoo's `noise_type` ('normal', or 'ornstein-uhlenbeck' for temporally
    correlated noise) of scale σ = `noise_std` (of the half action range)."""
    from .agents import action_noise
    from .algos.ddpg import Actor, Critic, DDPGAgent, DDPGLearner
    state_sz, action_sz = _continuous_sizes(env_id, "DDPG")
    hidden = _net_arch(hp)
    if len(hidden) != 2:
        raise ValueError(f"DDPG's actor and critic have two hidden layers; net_arch must have two sizes, got {hidden}.")
    actor, critic = Actor(state_sz, action_sz, *hidden), Critic(state_sz, action_sz, *hidden)
    warmup = _learning_starts(hp)
    train_every, updates = collection(hp)
    noise = action_noise(hp["noise_type"], check_real(hp["noise_std"], "noise_std", 0))
    agent = DDPGAgent(actor, exploration=noise, random_steps=warmup)
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps, num_envs=hp["n_envs"])
    lr = _positive(hp, "learning_rate")
    return DDPGLearner(actor, critic, [dl], logger_bases=loggers, actor_lr=lr, critic_lr=lr, tau=hp["tau"],
                       bs=_whole(hp, "batch_size", 1), max_sz=_whole(hp, "buffer_size", 1), warmup=warmup,
                       train_every=train_every, updates=updates, gamma=hp["gamma"], batches=1000)


def build_td3(env_id: str, hp: Dict, steps: int, seed: int, loggers):
    """TD3 with SB3's names: policy delay, target policy noise clipped at `target_noise_clip`, and
    rl-zoo's exploration `noise_type` ('normal' or 'ornstein-uhlenbeck') of scale `noise_std`."""
    from .algos.td3 import TD3Agent, TD3Learner, TwinCritic
    from .nets import Actor
    state_sz, action_sz = _continuous_sizes(env_id, "TD3")
    hidden = _net_arch(hp)
    if len(hidden) != 2:
        raise ValueError(f"TD3's actor and critics have two hidden layers; net_arch must have two sizes, got {hidden}.")
    actor, critics = Actor(state_sz, action_sz, *hidden), TwinCritic.of(state_sz, action_sz, *hidden)
    warmup = _learning_starts(hp)
    train_every, updates = collection(hp)
    agent = TD3Agent(actor, noise_std=check_real(hp["noise_std"], "noise_std", 0), random_steps=warmup,
                     noise_type=hp["noise_type"])
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps, num_envs=hp["n_envs"])
    return TD3Learner(actor, critics, [dl], logger_bases=loggers, learning_rate=_positive(hp, "learning_rate"),
                      buffer_size=_whole(hp, "buffer_size", 1), learning_starts=warmup,
                      batch_size=_whole(hp, "batch_size", 1), tau=hp["tau"], gamma=hp["gamma"],
                      train_freq=train_every, gradient_steps=updates, policy_delay=_whole(hp, "policy_delay", 1),
                      target_policy_noise=hp["target_policy_noise"], target_noise_clip=hp["target_noise_clip"],
                      batches=1000)


def build_sac(env_id: str, hp: Dict, steps: int, seed: int, loggers):
    """SAC with SB3's names: `ent_coef` ('auto', 'auto_<start>' or a number), `target_entropy` ('auto'
    is -|A|) and `target_update_interval` in gradient rounds (SB3's unit for SAC)."""
    from .algos.sac import SACAgent, SACLearner, SquashedGaussianActor, SquashedGSDEActor, TwinCritic
    state_sz, action_sz = _continuous_sizes(env_id, "SAC")
    hidden = _net_arch(hp)
    if len(hidden) != 2:
        raise ValueError(f"SAC's critics have two hidden layers; net_arch must have two sizes, got {hidden}.")
    if _flag(hp, "use_sde"):
        log_std_init = hp["log_std_init"]
        if not isinstance(log_std_init, (int, float)) or isinstance(log_std_init, bool) or not math.isfinite(log_std_init):
            raise ValueError(f"log_std_init must be a finite number, got {log_std_init!r}.")
        actor = SquashedGSDEActor(state_sz, action_sz, hidden, log_std_init=float(log_std_init))
    else:
        actor = SquashedGaussianActor(state_sz, action_sz, hidden)
    critics = TwinCritic.of(state_sz, action_sz, *hidden)
    warmup = _learning_starts(hp)
    train_every, updates = collection(hp)
    agent = SACAgent(actor, random_steps=warmup, sde_sample_freq=hp["sde_sample_freq"])
    dl = GymDataPipe([env_id], agent=agent, seed=seed, n=steps, num_envs=hp["n_envs"])
    return SACLearner(actor, critics, [dl], logger_bases=loggers, learning_rate=_positive(hp, "learning_rate"),
                      buffer_size=_whole(hp, "buffer_size", 1), learning_starts=warmup,
                      batch_size=_whole(hp, "batch_size", 1), tau=hp["tau"], gamma=hp["gamma"],
                      train_freq=train_every, gradient_steps=updates, ent_coef=hp["ent_coef"],
                      target_entropy=hp["target_entropy"],
                      target_update_interval=_whole(hp, "target_update_interval", 1), batches=1000)


def _schedule(hp: Dict, key: str):
    "A number > 0, or rl-zoo's \"lin_<value>\": a linear schedule from value to 0 over the run."
    from .algos.ppo import linear_schedule
    value = start = hp[key]
    if isinstance(value, str):
        try:
            start = float(value[4:]) if value.startswith("lin_") else None
        except ValueError:
            start = None
    if start is None or isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) \
            or start <= 0:
        raise ValueError(f"{key} must be a number > 0 or lin_<number> (rl-zoo's schedule, falling linearly from "
                         f"that number to 0 over the run, e.g. {'lin_1e-3' if key == 'learning_rate' else 'lin_0.2'})"
                         f", got {value!r}.")
    return linear_schedule(start) if isinstance(value, str) else value


def build_ppo(env_id: str, hp: Dict, steps: int, seed: int, loggers):
    "PPO with SB3's names; `normalize` normalises observations and rewards as rl-zoo's VecNormalize."
    from .algos.ppo import ActorCriticPolicy, PPODataPipe, PPOLearner
    probe, _ = _probe(env_id)
    policy = ActorCriticPolicy(probe.single_observation_space, probe.single_action_space, net_arch=_net_arch(hp),
                               log_std_init=hp["log_std_init"], activation_fn=_activation(hp),
                               ortho_init=_flag(hp, "ortho_init"))
    probe.close()
    n_envs = _whole(hp, "n_envs", 1)
    dl = PPODataPipe(env_id, policy, n_envs=n_envs, seed=seed, normalize_obs=_flag(hp, "normalize"),
                     normalize_reward=_flag(hp, "normalize"), gamma=hp["gamma"], n=steps)
    return PPOLearner(policy, [dl], logger_bases=loggers, learning_rate=_schedule(hp, "learning_rate"),
                      n_steps=_whole(hp, "n_steps", 1), batch_size=_whole(hp, "batch_size", 1),
                      n_epochs=_whole(hp, "n_epochs", 1), gamma=hp["gamma"], gae_lambda=hp["gae_lambda"],
                      clip_range=_schedule(hp, "clip_range"),
                      clip_range_vf=None if hp["clip_range_vf"] is None else _schedule(hp, "clip_range_vf"),
                      normalize_advantage=_flag(hp, "normalize_advantage"), ent_coef=hp["ent_coef"],
                      vf_coef=hp["vf_coef"], max_grad_norm=hp["max_grad_norm"], target_kl=hp["target_kl"],
                      total_timesteps=steps)


BUILDERS: Dict[str, Callable] = {"dqn": build_dqn, "ddpg": build_ddpg, "td3": build_td3, "ppo": build_ppo,
                                 "sac": build_sac}
DEFAULT_ENVS = {"dqn": "CartPole-v1", "ddpg": "Pendulum-v1", "td3": "Pendulum-v1", "ppo": "CartPole-v1",
                "sac": "Pendulum-v1"}
# torch threads per algorithm, measured on 2 cores: DQN's small MLP updates run fastest on one thread,
# DDPG's and TD3's 400x300 networks with batch 256 gain from two; SAC's 256x256 ones take TD3's setting.
DEFAULT_THREADS = {"dqn": 1, "ddpg": 2, "td3": 2, "ppo": 1, "sac": 2}


# ---------------------------------------------------------------- epochs
def plan_epochs(learner, steps: int, batches: Optional[int] = None):
    """(epochs, gradient rounds per epoch, rounds in the last epoch) for a run of `steps` env steps.
    Without `batches`, the learner's epoch size is adjusted so that the rounds split into epochs
    of nearly equal size (the last one at most `epochs - 1` rounds short)."""
    c = learner.collector
    if c is None:
        rounds = learner.batches
    elif learner.batch and hasattr(c, "rounds_left"):  # a resumed run: its bursts keep their own phase
        rounds = learner.batch + c.rounds_left(steps)
    else:
        rounds = c.rounds_within(steps)
    if rounds < 1:
        if isinstance(c, RolloutCollector):
            raise ValueError(f"--steps {steps} ends before the first rollout is complete (a rollout is n_steps x "
                             f"n_envs = {c.n_steps} x {c.n_envs or 1} = {c.n_steps * (c.n_envs or 1)} env steps): "
                             "raise --steps, or lower n_steps or n_envs with --hp.")
        raise ValueError(f"--steps {steps} ends before the first gradient round (it needs max(learning_starts, "
                         f"batch_size) = {max(c.warmup, c.bs)} stored transitions, and rounds come in bursts every "
                         f"{c.train_every} env steps): raise --steps, or lower learning_starts, batch_size or train_freq "
                         "with --hp.")
    if batches is None:
        epochs = max(1, round(rounds / learner.batches))
        batches = math.ceil(rounds / epochs)
    epochs = max(1, math.ceil(rounds / batches))
    return epochs, batches, rounds - (epochs - 1) * batches


class EpochPlan(LoggerBase):
    """Gives each epoch its planned number of gradient rounds: `batches`, the rest of an epoch a
    resumed run stopped in, and `last` in the final one, plus one more pull that runs the budget's
    remaining env steps (fewer than a training burst) and ends the data. Adds the epoch's rounds to
    its row as `rounds`."""

    every_rank = True  # every rank of a data-parallel run must take the same rounds

    def __init__(self, epochs: int, batches: int, last: int):
        self.epochs, self.batches, self.last = epochs, batches, last

    def wrap_batches(self, batches, learner):
        size = self.last + 1 if learner.epoch >= self.epochs - 1 else self.batches
        return range(max(1, size - (learner.batch - learner.epoch * self.batches)))

    def after_epoch(self, learner, row):
        "The epoch's own gradient rounds, as a column of the table (the last epoch may have fewer)."
        row["rounds"] = row["batch"] - (learner.history[-2]["batch"] if len(learner.history) > 1 else 0)


def _metrics_to_keep(path: Path, epoch: int) -> Optional[List[List[str]]]:
    """The header and the rows of epochs up to `epoch` of metrics.csv (a crash may have logged rows
    after the checkpoint), or None where there is no file; a row that does not start with its epoch
    number is refused, naming the file."""
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1]
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            row_epoch = int(row[0])
        except ValueError:
            raise ValueError(f"{path} has a row fastrl-lite did not write (line {line}: {','.join(row)!r}): each row "
                             "starts with its epoch number. Remove that line (or restore the file) and resume again."
                             ) from None
        if row_epoch <= epoch:
            kept.append(row)
    return kept


# what a run writes into its folder before its first checkpoint: config.json (with these keys),
# metrics.csv, tb/, best_model.pt and a checkpoint being written (.checkpoint.pt.tmp-PID)
CONFIG_KEYS = {"algo", "env", "steps", "seed", "threads", "nproc", "preset", "hp", "batches", "eval_every",
               "eval_episodes", "tensorboard", "effective"}
EARLY_FILES = {"config.json", "metrics.csv", "tb", "best_model.pt"}


def _holds_run(out: Path) -> bool:
    "Whether `out` holds a run to keep: one that wrote a checkpoint or its weights."
    return any((out / name).exists() for name in ("checkpoint.pt", "model.pt"))


def _foreign_files(out: Path) -> List[str]:
    """The entries of the folder `out` that are not those of a fastrl-lite run that failed before its
    first checkpoint: an empty folder, or such a leftover, may be trained into; anything else in it
    would be overwritten or mixed into the run."""
    names = sorted(p.name for p in out.iterdir())
    foreign = [n for n in names if n not in EARLY_FILES and not (n.startswith(".checkpoint.") and ".tmp-" in n)]
    if names and not foreign:
        try:
            config = json.loads((out / "config.json").read_text())
            ours = isinstance(config, dict) and set(config) <= CONFIG_KEYS
        except (OSError, ValueError):
            ours = False
        if not ours:
            foreign.append("config.json")
        metrics = out / "metrics.csv"
        if metrics.exists() and not (metrics.is_file() and metrics.read_text(errors="replace").startswith("epoch,")):
            foreign.append("metrics.csv")
    return foreign


def _check_out(out: Path, algo: str):
    "Refuse an --out that is a file, holds a run, or holds files that are not a fastrl-lite run's."
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; name a folder for the run.")
    if not out.exists():
        return
    if _holds_run(out):
        raise ValueError(f"{out} already holds a run; continue it with `fastrl-lite train {algo} --resume {out}` "
                         "or choose another --out.")
    foreign = _foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(f"--out {out} already holds files that no fastrl-lite run wrote ({shown}); training there "
                         "would overwrite them or mix with them. Name a new or empty folder for the run.")


def _default_out(algo: str, env_id: str, seed: int) -> Path:
    "runs/ALGO-ENV-seedSEED, or the first of ...-2, ...-3 that a new run may be written to."
    base = Path(f"runs/{algo}-{env_id}-seed{seed}")
    out, n = base, 1
    while out.exists() and (not out.is_dir() or _holds_run(out) or _foreign_files(out)):
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


# ---------------------------------------------------------------- train
def _usable_cores() -> int:
    "The CPU cores this process may run on (fewer than the machine's under a CPU affinity mask)."
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --threads beyond this many per core only adds threads waiting for one another (and thousands crash
# or hang torch's thread pool)
THREADS_PER_CORE = 4


def _check_threads(threads: int):
    cores = _usable_cores()
    most = THREADS_PER_CORE * cores
    if threads > most:
        raise ValueError(f"--threads {threads} is more than {THREADS_PER_CORE} per core of the {cores} this "
                         f"process may use ({most}): torch threads beyond the cores only wait for one another, and "
                         f"thousands crash or hang torch. Give --threads {most} or less (leave it out for the "
                         "fastest measured setting).")


def _check_settings_apply(algo: str, env_id: str, hp: Dict, given):
    """Refuse a setting given with --hp that the run would not use, rather than ignore it: SAC's gSDE
    settings without use_sde=true, and PPO's log_std_init (the initial log σ of its Gaussian policy)
    on an env with discrete actions."""
    if algo == "sac" and not _flag(hp, "use_sde"):
        unused = [f"{k}={hp[k]}" for k in GSDE_ONLY if k in given]
        if unused:
            raise ValueError(f"{', '.join(unused)} only apply with use_sde=true (gSDE); add --hp use_sde=true, or "
                             "leave them out.")
    if algo == "ppo" and "log_std_init" in given:
        import gymnasium as gym
        probe, _ = _probe(env_id)
        space = probe.single_action_space
        probe.close()
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"log_std_init={hp['log_std_init']} sets the initial log σ of PPO's Gaussian policy, for "
                             f"continuous (Box) actions; {env_id} has {space} actions, so it would be ignored. Leave "
                             "it out.")


def _training_note(algo: str, hp: Dict) -> Optional[str]:
    "What a training run says of its settings beyond the preset line: DQN's target updates in both units."
    if algo == "dqn":
        return "Target network: hard update " + target_rounds(hp, *collection(hp))[1]
    return None


def _nothing_left(out: Path, done: int, steps: int, steps_given: bool) -> str:
    "What a resumed run with no gradient round and no env step left to run says: it changes nothing."
    if steps_given:
        return (f"{out} has already run {done} env steps, so --steps {steps} adds nothing to it; nothing was changed. "
                "Give a larger --steps to extend the run.")
    return (f"{out} is finished: it has run {done} env steps (it was planned for {steps}); nothing was changed. "
            f"Extend it with a larger --steps, or evaluate it with `fastrl-lite eval {out}`.")


@flushed_denormals()  # from the start, so that torch's worker threads, which it starts later, flush too
def train(algo: str, env_id: str = None, steps: int = None, seed: int = None, out=None, eval_episodes: int = None,
          progress=None, threads: int = None, resume=None, hp: Optional[Dict] = None, preset: Optional[str] = None,
          eval_every: Optional[int] = None, tensorboard: bool = False) -> dict:
    """Train `algo` on `env_id` for `steps` env steps and write the run folder; returns the evaluation.

    Hyper-parameters come from `env_id`'s preset (`preset`, else its "default"), overridden by `hp`;
    config.json records the values used. A checkpoint is written after every epoch;
    `resume=RUN_DIR` continues that run where it stopped, and a larger `steps` extends it.
    `eval_every` env steps, the greedy policy is evaluated on a separate env and the best weights
    kept in best_model.pt. Everything is checked before the run folder is made or changed.

    Under torchrun (see `fastrl_lite.distributed`) every rank calls `train`: `steps` counts the env
    steps of all ranks together, each rank runs its share with the preset's per-env settings, and
    rank 0 alone decides the run folder, writes it and evaluates; the other ranks return None."""
    if algo not in BUILDERS:
        raise ValueError(f"Unknown algorithm {algo!r}; choose one of {sorted(BUILDERS)}.")
    for name, value in (("steps", steps), ("threads", threads), ("eval_every", eval_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}.")
    if threads is not None:
        _check_threads(threads)
    if eval_episodes is not None and (isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int)
                                      or eval_episodes < 1):
        raise ValueError(f"--eval-episodes must be a whole number >= 1, got {eval_episodes!r}.")
    for flag, folder in (("--out", out), ("--resume", resume)):
        if folder is not None and not str(folder).strip():
            raise ValueError(f"{flag} is empty; name the run folder (e.g. {flag} runs/NAME).")
    distributed.init(backend="gloo")  # the command line trains on the CPU, which NCCL does not serve
    world, main_rank = distributed.world_size(), distributed.is_main()
    config, steps_given = None, steps is not None
    if resume is not None and out is not None and Path(out) != Path(resume):
        raise ValueError(f"--resume {resume} continues that run in its own folder; drop --out {out} (or copy the "
                         "folder there first and resume the copy).")
    if resume is not None:
        config = distributed.on_main(_resume_config, algo, resume, env_id, steps, seed, hp, preset, eval_every,
                                     eval_episodes, world)
        env_id, seed, out, used = config["env"], config["seed"], Path(resume), _recorded_hp(config)
        steps = steps or config["steps"]
        threads = threads or config["threads"]
        eval_every = config.get("eval_every")
        eval_episodes = config.get("eval_episodes") or eval_episodes or 10
        tensorboard = tensorboard or config.get("tensorboard", False)
        said = f"Hyper-parameters: those recorded in {out / 'config.json'}"
    else:
        env_id = env_id or DEFAULT_ENVS[algo]
        seed = check_seed(0 if seed is None else seed)
        eval_episodes = eval_episodes or 10
        check_env_id(env_id)
        used, said = resolve(algo, env_id, preset, hp)
        _check_settings_apply(algo, env_id, used, set(hp or {}))
        steps = steps or _whole(used, "n_timesteps", 1)
        used["n_timesteps"] = steps
        if out is not None:
            distributed.on_main(_check_out, Path(out), algo)
        out = Path(out) if out is not None else distributed.on_main(_default_out, algo, env_id, seed)
    if eval_every is not None and eval_every > steps:
        raise ValueError(f"--eval-every {eval_every} is more than the run's {steps} env steps, so no evaluation would "
                         f"run and no best_model.pt be kept; give --eval-every {steps} or less.")
    threads = threads or DEFAULT_THREADS.get(algo, 1)
    torch.set_num_threads(threads)
    print(said)
    set_seed(seed)
    loggers = [ProgressBarLogger(show_bars=progress), CSVLogger(out / "metrics.csv", append=resume is not None)]
    if tensorboard and main_rank:
        from .loggers.tensorboard import TensorBoardLogger
        try:
            loggers.append(TensorBoardLogger(out / "tb"))
        except ImportError as error:
            raise ValueError(str(error)) from error
    rank_steps = math.ceil(steps / world)  # each rank's share of the env steps
    rank_hp = {**used, "n_timesteps": rank_steps} if world > 1 else used
    learner = _build(algo, env_id, rank_hp, rank_steps, seed, loggers)
    note = _training_note(algo, rank_hp)
    if note:
        print(note)
    checkpoint = out / "checkpoint.pt"
    done, kept_metrics, finishing = 0, None, False
    if resume is not None:
        learner.load(checkpoint)
        done = learner.history[-1]["env_steps"] if world > 1 and learner.history else learner.env_steps
    epochs, batches, last = plan_epochs(learner, rank_steps, config["batches"] if config else None)
    learner.batches = batches
    effective = {}
    warmup = getattr(learner.collector, "warmup", None)
    if "learning_starts" in used and warmup is not None and warmup != used["learning_starts"]:
        effective["learning_starts"] = warmup
        print(f"learning_starts={used['learning_starts']} is more than half of this {rank_steps}-step run, so it "
              f"starts learning after {warmup} env steps (recorded in config.json as effective.learning_starts).")
    # the stepper's count: the env steps a collector holds back (an n-step window's tail) ran too
    stepped = learner.stepper.env_steps if learner.stepper is not None else learner.env_steps
    # no gradient round is left (vector envs step together, so a run may also end a few env steps past its budget)
    if resume is not None and (learner.epoch >= epochs or stepped > rank_steps):
        if stepped < rank_steps:
            epochs, last = learner.epoch + 1, 0  # env steps are: one pull runs them (into PPO's kept rollout)
        elif distributed.on_main(lambda: (out / "model.pt").is_file() and (out / "eval.json").is_file()):
            # already where it was asked to be: say so and change nothing (a resume loop can run it again)
            if main_rank:
                print(_nothing_left(out, done, steps, steps_given))
            result = distributed.on_main(lambda: json.loads((out / "eval.json").read_text()))
            distributed.shutdown()
            return result if main_rank else None
        else:  # stopped after its training but before its weights or evaluation were written: write them
            finishing = True
    if resume is not None:
        kept_metrics = distributed.on_main(_metrics_to_keep, out / "metrics.csv", learner.epoch)
    # everything is checked: the run folder is made or changed from here on, by rank 0 alone
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(
            {"algo": algo, "env": env_id, "steps": steps, "seed": seed, "threads": threads, "nproc": world,
             "preset": config["preset"] if config else (preset or "default"), "hp": used, "batches": batches,
             "eval_every": eval_every, "eval_episodes": eval_episodes, "tensorboard": tensorboard,
             **({"effective": effective} if effective else {})}, indent=2))
        if kept_metrics is not None:
            with open(out / "metrics.csv", "w", newline="") as f:
                csv.writer(f).writerows(kept_metrics)
    if resume is not None:
        print(f"Resuming {out} at epoch {learner.epoch}, env step {done}"
              + (": its training is done, so only its weights and evaluation are written" if finishing else ""))
    print(f"{epochs} epoch{'s' if epochs > 1 else ''} of {batches} gradient rounds"
          + (f" (the last one {last})" if last != batches else "") + f" over {steps} env steps")
    # rank 0 evaluates during training, for every rank: every eval_every env steps of all ranks together
    evaluating = math.ceil(eval_every / world) if main_rank and eval_every is not None else None
    fit = dict(checkpoint_every=1, checkpoint_path=checkpoint, eval_every=evaluating,
               eval_episodes=eval_episodes, best_model_path=out / "best_model.pt" if evaluating else None)
    learner.loggers.insert(0, EpochPlan(epochs, batches, last))
    if learner.epoch < epochs and not finishing:
        learner.fit(epochs - learner.epoch, **fit)
    for logger in loggers:
        if hasattr(logger, "close"):
            logger.close()
    if not main_rank:
        distributed.shutdown()
        return None
    if learner.interrupted:
        print(f"Stopped early; continue with `fastrl-lite train {algo} --resume {out}"
              + (f" --nproc {world}`" if world > 1 else "`"))
    torch.save(learner.weights(), out / "model.pt")
    returns = learner.episode_returns()
    with open(out / "returns.csv", "w", newline="") as f:
        csv.writer(f).writerows([("env_step", "return"), *returns.tolist()])
    plot_returns(returns, out / "returns.png", title=f"{algo.upper()} on {env_id}")
    evaluation = learner.validate(eval_episodes)
    env_steps = learner.history[-1]["env_steps"] if world > 1 and learner.history else learner.env_steps
    result = {"algo": algo, "env": env_id, "seed": seed, "env_steps": env_steps,
              "episodes": learner.episodes, "eval_mean": evaluation["mean"], "eval_std": evaluation["std"],
              "eval_returns": evaluation["returns"]}
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    print(f"Greedy evaluation over {eval_episodes} episodes: {evaluation['mean']:.1f} ± {evaluation['std']:.1f}"
          f"{_capped(env_id)}")
    try:  # the picture needs Pillow and the env's renderer (pygame for classic control: the dev extra)
        record_episode_gif(learner, env_id, out / "episode.gif", seed=seed)
    except (ImportError, DependencyNotInstalled, ValueError) as error:
        print(f"No episode.gif: {error}")
    print(f"Run written to {out}/ ({', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))})")
    distributed.shutdown()
    return result


def _build(algo: str, env_id: str, hp: Dict, steps: int, seed: int, loggers):
    "`BUILDERS[algo](...)`, with a setting of the wrong type (`--hp tau=[1]`) said as such."
    try:
        return BUILDERS[algo](env_id, hp, steps, seed, loggers)
    except TypeError as error:
        raise ValueError(f"A hyper-parameter of {algo} has the wrong type ({error}); check the --hp values: numbers, "
                         "true/false, null or lists such as [64,64], as the presets write them.") from error


def _recorded_hp(config: Dict) -> Dict:
    """A run folder's hyper-parameters, with the defaults of settings added since it was written
    (each default is the behaviour the run was trained with)."""
    return {**DEFAULTS[config["algo"]], **config["hp"]}


def _read_config(run_dir, what: str = "run folder") -> Dict:
    "A run folder's config.json, checked to hold what rebuilding the run needs."
    config_path = Path(run_dir) / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{run_dir} is not a {what}: it has no config.json.")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}); fastrl-lite writes it, so a hand edit "
                         "broke it.") from error
    if not isinstance(config, dict) or config.get("algo") not in BUILDERS or not isinstance(config.get("hp"), dict):
        raise ValueError(f"{config_path} is not a run this fastrl-lite can rebuild: it needs an algo (one of "
                         f"{sorted(BUILDERS)}) and its hyper-parameters (hp).")
    for key, kind in (("env", str), ("steps", int), ("seed", int)):
        if isinstance(config.get(key), bool) or not isinstance(config.get(key), kind):
            raise ValueError(f"{config_path} records {key}={config.get(key)!r}, not a {kind.__name__}; fastrl-lite "
                             "writes it, so a hand edit broke it.")
    if "batches" in config and (isinstance(config["batches"], bool) or not isinstance(config["batches"], int)
                                or config["batches"] < 1):
        raise ValueError(f"{config_path} records batches={config['batches']!r}, not a whole number >= 1.")
    return config


def _resume_config(algo, resume, env_id, steps, seed, hp, preset, eval_every, eval_episodes=None, world: int = 1
                   ) -> Dict:
    """The recorded settings of the run in `resume`, or an error if the command asks for other ones
    (or runs on another number of ranks, `world`, than the run was trained on)."""
    config_path = Path(resume) / "config.json"
    config = _read_config(resume, "run folder to resume")
    if not (Path(resume) / "checkpoint.pt").is_file():
        raise ValueError(f"{resume} has no checkpoint.pt: its run stopped before its first epoch ended, so there is "
                         f"nothing to continue; start it again with `fastrl-lite train {config['algo']} --out "
                         f"{resume} ...`.")
    if config["algo"] != algo:
        raise ValueError(f"{resume} is a {config['algo']} run; resume it with `fastrl-lite train {config['algo']} "
                         f"--resume {resume}`.")
    if "hp" not in config or "batches" not in config:
        raise ValueError(f"{config_path} was written by an older fastrl-lite without its hyper-parameters; "
                         "start a new run instead.")
    ranks = config.get("nproc", 1)
    if ranks != world:
        command = f"fastrl-lite train {algo} --resume {resume}" + (f" --nproc {ranks}" if ranks > 1 else "")
        raise ValueError(f"{resume} was trained by a run of {ranks} rank(s) and this run has {world}: each rank's "
                         "buffer, envs and RNGs are in its checkpoint and cannot be split or merged. Resume it with "
                         f"{ranks} rank(s): `{command}`" + ("." if ranks > 1 else " (no --nproc, no torchrun)."))
    for flag, given, recorded in (("--env", env_id, config["env"]), ("--seed", seed, config["seed"]),
                                  ("--eval-every", eval_every, config.get("eval_every")),
                                  ("--eval-episodes", eval_episodes, config.get("eval_episodes", eval_episodes))):
        if given is not None and given != recorded:
            trained = f"with {flag} {recorded}" if recorded is not None else f"without {flag}"
            raise ValueError(f"{resume} was trained {trained}; a resumed run keeps its settings (drop {flag}, "
                             f"or start a new run with --out).")
    if hp or preset is not None:
        raise ValueError(f"{resume} keeps the hyper-parameters recorded in its config.json; --hp and --preset "
                         "only apply to a new run (so do --num-envs and --sail, which set hyper-parameters).")
    if steps is not None and steps < config["steps"]:
        raise ValueError(f"{resume} was planned for {config['steps']} env steps; --steps {steps} would shorten it. "
                         "A resumed run can only be extended.")
    return config


# ---------------------------------------------------------------- eval
def _load_run(run_dir, weights: str = "model.pt", threads: Optional[int] = None):
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    config = _read_config(run_dir)
    path = run_dir / weights
    if not path.is_file():
        hint = " (it is written when training runs with --eval-every)" if weights == "best_model.pt" else \
            " (it is written when training ends)"
        raise ValueError(f"{run_dir} has no {weights}{hint}.")
    torch.set_num_threads(threads or config.get("threads", 1))
    learner = _build(config["algo"], config["env"], _recorded_hp(config), config["steps"], config["seed"], [])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not readable weights (corrupt or truncated, or not a file torch wrote): "
                         f"{error}. Train the run again, or evaluate another file.") from error
    try:
        learner.load_weights(state)
    except CheckpointError as error:
        raise ValueError(f"{path} does not fit the {config['algo']} run that {config_path} describes: {error}") \
            from error
    return config, learner


def _capped(env_id: str) -> str:
    "What to add to an evaluation's line when the env has no time limit of its own (see `cap_episode_length`)."
    import gymnasium as gym
    if gym.spec(env_id).max_episode_steps is not None:
        return ""
    return f" ({env_id} has no time limit of its own: each episode ended after at most {EVAL_EPISODE_CAP} steps)"


def show_episode(learner, env_id: str, seed: int) -> float:
    "Play one greedy episode in a window (the env's `human` rendering); returns its return."
    import numpy as np
    from .core import evaluating
    from .loggers.video import _greedy_policy, _to_env_action, rendering_env
    env = rendering_env(env_id, "human")
    policy, model = _greedy_policy(learner, env.action_space)
    try:
        obs, _ = env.reset(seed=seed)
        done, episode_return = False, 0.0
        with evaluating(model), torch.no_grad():
            while not done:
                action = policy(torch.as_tensor(np.asarray(obs)).unsqueeze(0))
                obs, reward, terminated, truncated, _ = env.step(_to_env_action(action, env.action_space))
                episode_return += float(reward)
                done = terminated or truncated
    finally:
        env.close()
    return episode_return


def _check_file_to_write(path: Path, flag: str):
    "Refuse a file to write whose folder cannot be one: a file where the path needs a folder, or `path` a folder."
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; name a file in it.")
    for folder in path.parents:
        if folder.exists():
            if not folder.is_dir():
                raise ValueError(f"{flag} {path}: {folder} is a file, not a folder; name a file in a folder.")
            return


def evaluate(run_dir, episodes: int = 10, seed: int = 0, weights: str = "model.pt", gif=None,
             progress: Optional[bool] = None, show: bool = False) -> Dict:
    """Load the weights of the run in `run_dir`, run `episodes` greedy episodes (seeds `seed`,
    `seed + 1`, ...) and print mean ± std; with `gif`, write one episode to that file; with `show`,
    play one in a window."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"--episodes must be a whole number >= 1, got {episodes!r}.")
    seed = check_seed(seed)
    if seed + episodes - 1 > 2 ** 32 - 1:
        raise ValueError(f"--seed {seed} with --episodes {episodes} would seed the episodes up to "
                         f"{seed + episodes - 1} (each the next number), past the largest seed 2**32 - 1; give "
                         f"--seed {2 ** 32 - episodes} or less.")
    if gif is not None and Path(gif).suffix.lower() != ".gif":
        raise ValueError(f"--gif must name a .gif file, got {gif}.")
    if gif is not None:
        _check_file_to_write(Path(gif), "--gif")
    if show and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ValueError("--show needs a display and none is set (no DISPLAY or WAYLAND_DISPLAY); write the episode "
                         "to a file with --gif FILE.gif instead.")
    config, learner = _load_run(run_dir, weights)
    from fastprogress.fastprogress import progress_bar
    bars = progress if progress is not None else sys.stdout.isatty()
    returns = []
    for i in (progress_bar(range(episodes)) if bars else range(episodes)):  # fastprogress draws even with display=False
        returns.append(learner.validate(1, seed=seed + i)["returns"][0])
        if not bars:
            print(f"episode {i + 1}/{episodes}: return {returns[-1]:.1f}", flush=True)
    mean, std = float(torch.tensor(returns).mean()), float(torch.tensor(returns).std(unbiased=False))
    print(f"{config['algo']} on {config['env']} ({Path(run_dir) / weights}): {mean:.1f} ± {std:.1f} over {episodes} "
          f"greedy episodes{_capped(config['env'])}")
    if gif is not None:
        print(f"Writing one episode to {gif} ...", flush=True)
        path, episode_return = record_episode_gif(learner, config["env"], gif, seed=seed, max_frames=None)
        print(f"Wrote {path} (return {episode_return:.1f})")
    if show:
        print(f"Showing one episode of {config['env']} ...", flush=True)
        print(f"Return {show_episode(learner, config['env'], seed):.1f}")
    return {"mean": mean, "std": std, "returns": returns}


# ---------------------------------------------------------------- plot
def _read_curve(run_dir: Path, metric: str):
    import numpy as np
    path = run_dir / ("returns.csv" if metric == "return" else "metrics.csv")
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {path.name}" + (" (written when training ends)." if metric == "return"
                                                          else "."))

    def broken(error):
        return ValueError(f"{path} holds something other than the numbers fastrl-lite writes "
                          f"({str(error).rstrip('.')}); restore the file, or leave the run out of the plot.")
    if metric == "return":
        try:
            with warnings.catch_warnings():  # a run without a finished episode has a header only
                warnings.simplefilter("ignore", UserWarning)
                data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        except ValueError as error:
            raise broken(error) from None
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and metric not in rows[0]:
            raise ValueError(f"{path} has no column {metric!r}; its columns: {', '.join(rows[0])}.")
        try:
            data = np.array([(float(r["env_steps"]), float(r[metric])) for r in rows if r[metric] not in ("", "nan")],
                            dtype=np.float64).reshape(-1, 2)
        except (ValueError, TypeError, KeyError) as error:  # a value that is not a number, a row short of columns
            raise broken(error) from None
    if len(data) == 0:
        raise ValueError(f"{run_dir} has no {metric} values to plot yet.")
    return data


def plot(run_dirs: List, out, metric: str = "return", window: int = 10, spread: str = "std") -> Dict[str, int]:
    """Learning curves of the runs in `run_dirs` against env steps, in one PNG at `out`: runs of the
    same algorithm and env are one line, the mean across their seeds with the spread shaded.
    `metric` is "return" (episode returns) or a column of metrics.csv such as eval_mean. A run
    given twice counts once; a run with nothing to plot yet is left out with a note, unless no
    run has anything."""
    from .loggers import plot_learning_curves
    if not run_dirs:
        raise ValueError("plot needs at least one RUN_DIR.")
    groups: Dict[str, list] = {}
    empty = []
    for run_dir in dict.fromkeys(Path(d).resolve() for d in run_dirs):
        config = _read_config(run_dir)
        try:
            curve = _read_curve(run_dir, metric)
        except ValueError as error:
            if "to plot yet" not in str(error):
                raise
            empty.append(str(error))
            continue
        groups.setdefault(f"{config['algo']} {config['env']}", []).append(curve)
    if not groups:
        raise ValueError(" ".join(empty))
    for note in empty:
        print(f"Left out: {note}")
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out must name a .png file, got {out}.")
    _check_file_to_write(out, "--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(groups, out, title="Learning curves", window=window if metric == "return" else 1,
                         spread=spread, ylabel=metric)
    print(f"Wrote {out}: " + ", ".join(f"{label} ({len(runs)} run{'s' if len(runs) > 1 else ''})"
                                       for label, runs in groups.items()))
    return {label: len(runs) for label, runs in groups.items()}


# ---------------------------------------------------------------- command line
def _launch_ranks(parser, nproc: int, argv: List[str]):
    """`--nproc N`: replace this process by torchrun running the same command (without `--nproc`)
    on N ranks of this machine; with N = 1, or already under torchrun with N ranks, carry on here."""
    if nproc < 1:
        parser.exit(2, f"fastrl-lite: error: --nproc must be >= 1, got {nproc}.\n")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "WORLD_SIZE" in os.environ:
        if nproc != world:
            parser.exit(2, f"fastrl-lite: error: --nproc {nproc} under torchrun, which runs {world} ranks; "
                           "leave out --nproc when launching with torchrun.\n")
        return
    if nproc == 1:
        return
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                              f"--nproc-per-node={nproc}", "-m", "fastrl_lite", *rest])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastrl-lite", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train an agent and write a run folder")
    t.add_argument("algo", choices=sorted(BUILDERS))
    t.add_argument("--env", default=None, help="gymnasium env id (default: the algorithm's classic env)")
    t.add_argument("--steps", type=int, default=None, help="env steps to train for (default: the preset's n_timesteps)")
    t.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    t.add_argument("--out", default=None, help="run folder (default runs/ALGO-ENV-seedSEED)")
    t.add_argument("--preset", default=None, help="named preset for the env (e.g. zoo; default: the env's default)")
    t.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyper-parameter (rl-zoo names and units), e.g. --hp learning_rate=1e-3; repeatable")
    t.add_argument("--num-envs", type=int, default=None, help="envs stepped side by side (same as --hp n_envs=N)")
    t.add_argument("--sail", action="store_true", help="dqn: SAIL-DQN's self-imitation bonus (same as --hp sail=true)")
    t.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                   help="evaluate greedily every STEPS env steps (of all ranks) on a separate env; keep best_model.pt")
    t.add_argument("--eval-episodes", type=int, default=None,
                   help="greedy episodes per evaluation (default 10; a resumed run keeps its own)")
    t.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tb for TensorBoard")
    t.add_argument("--threads", type=int, default=None, help="torch threads (default: the fastest measured)")
    t.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel on N processes of this machine (runs this command under torchrun)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last checkpoint (its settings are reused; "
                        "a larger --steps extends it)")
    e = commands.add_parser("eval", help="run a trained agent greedily and print mean ± std")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--seed", type=int, default=0, help="seed of the first episode (the next ones count up)")
    e.add_argument("--best", action="store_true", help="use best_model.pt (from --eval-every) instead of model.pt")
    e.add_argument("--gif", default=None, metavar="FILE.gif", help="write one episode to this GIF")
    e.add_argument("--show", action="store_true", help="play one episode in a window (needs a display)")
    p = commands.add_parser("plot", help="learning curves of runs, grouped by algorithm and env")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--metric", default="return", help="'return' (episode returns) or a metrics.csv column")
    p.add_argument("--window", type=int, default=10, help="episodes in the trailing mean of the returns")
    p.add_argument("--spread", choices=["std", "sem", "minmax"], default="std")
    args = parser.parse_args(argv)
    if args.command == "train" and args.nproc is not None:
        _launch_ranks(parser, args.nproc, sys.argv[1:] if argv is None else list(argv))
    # under torchrun, ranks other than 0 keep quiet: rank 0 prints the run's table and messages
    quiet = int(os.environ.get("RANK", "0")) > 0 and int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        if args.command == "train":
            hp = parse_overrides(args.hp)
            if args.num_envs is not None:
                if "n_envs" in hp and hp["n_envs"] != args.num_envs:
                    raise ValueError(f"--num-envs {args.num_envs} and --hp n_envs={hp['n_envs']} set the same setting "
                                     "to different values; give one of them.")
                hp["n_envs"] = args.num_envs
            if args.sail:
                if args.algo != "dqn":
                    raise ValueError(f"--sail is SAIL-DQN's switch; {args.algo} has none.")
                if "sail" in hp and hp["sail"] is not True:
                    raise ValueError(f"--sail and --hp sail={hp['sail']} set the same setting to different values; "
                                     "give one of them.")
                hp["sail"] = True
            with contextlib.redirect_stdout(open(os.devnull, "w")) if quiet else contextlib.nullcontext():
                train(args.algo, args.env, args.steps, args.seed, args.out, args.eval_episodes, progress=None,
                      threads=args.threads, resume=args.resume, hp=hp, preset=args.preset,
                      eval_every=args.eval_every, tensorboard=args.tensorboard)
        elif args.command == "eval":
            evaluate(args.run_dir, args.episodes, args.seed, "best_model.pt" if args.best else "model.pt", args.gif,
                     show=args.show)
        else:
            plot(args.run_dirs, args.out, args.metric, args.window, args.spread)
    except (ValueError, OSError, ImportError) as error:  # a folder or file that cannot be written or read; an
        # env whose package is missing
        parser.exit(2, f"fastrl-lite: error: {error}\n")


if __name__ == "__main__":
    main()
