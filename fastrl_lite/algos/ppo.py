"""PPO (Schulman et al., 2017): the clipped surrogate objective over a rollout's minibatches.

Read top to bottom, one rollout at a time:
  1. run the policy π_old in n_envs envs for n_steps steps, keeping        RolloutCollector
     log π_old(a|s) and V(s) with every transition
  2. advantages Â_t by GAE(γ, λ), returns R_t = Â_t + V(s_t);               GAE
     a truncation bootstraps from V of the true final observation
  3. n_epochs passes in shuffled minibatches, one gradient round each:     Minibatches
       ratio r = π(a|s) / π_old(a|s),  Â normalised per minibatch
       L = −E[min(r Â, clip(r, 1 − ε, 1 + ε) Â)]                           PPOLoss
           + vf_coef E[(V(s) − R)²] − ent_coef E[H(π(·|s))]
       stop the passes over this rollout once approx. KL > 1.5 target_kl
     one Adam step, gradient norm clipped at max_grad_norm                 Update

`PPOLearner`'s parameters carry Stable-Baselines3's names and defaults; `linear_schedule(x)` is
rl-zoo's `lin_x` for the learning rate and the clip range.
"""
from __future__ import annotations

import math
import numbers
from typing import Callable, Optional, Sequence, Union

import gymnasium as gym
import torch

from .. import distributed
from ..agents.policies import ActorCriticPolicy, PolicySampler, PPOAgent
from ..core import SimpleStep, TrainBatch, check_device, check_flag, check_whole
from ..envs import GymStepper, make_vec_env
from ..envs.normalize import NormalizeObservation, NormalizeReward, ObservationNormalizer
from ..learner import Learner, LossCollector, Update
from ..learner.wiring import check_gamma
from ..memory.rollout import GAE, Minibatches, RolloutCollector
from ..pipes import Pipe, find_pipe, pipe_to_device

__all__ = ["PPOLoss", "PPOLearner", "PPODataPipe", "linear_schedule", "Progress", "ProgressLR", "ActorCriticPolicy",
           "PPOAgent"]

Schedule = Union[float, Callable[[float], float]]


def linear_schedule(initial: float) -> Callable[[float], float]:
    "rl-zoo's `lin_<initial>`: the value falls linearly from `initial` to 0 as the progress remaining goes 1 → 0."
    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial
    schedule.initial = initial
    return schedule


class Progress:
    "The progress remaining, 1 − env steps collected / `total_timesteps` (SB3's `progress_remaining`)."

    def __init__(self, collector: RolloutCollector, total_timesteps: Optional[int]):
        self.collector, self.total_timesteps = collector, total_timesteps

    def __call__(self) -> float:
        if self.total_timesteps is None:
            return 1.0
        return max(0.0, 1.0 - self.collector.env_steps / self.total_timesteps)


def _value(schedule: Schedule, progress: Progress) -> float:
    return schedule(progress()) if callable(schedule) else schedule


class ProgressLR:
    """A learning-rate schedule over env steps for `Update(schedulers=…)`: after each optimizer step
    the rate becomes `schedule(progress remaining)`. Within a rollout the rate is that of the env
    steps collected so far, as in SB3 (whose rate for a rollout is set once, after collecting it);
    only a rollout's first round still runs at the previous rollout's rate."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Callable[[float], float], progress: Progress):
        self.optimizer, self.schedule, self.progress = optimizer, schedule, progress
        self._set()

    def _set(self):
        lr = self.schedule(self.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self):
        self._set()

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass  # the rate is in the optimizer's own state


class PPOLoss(Pipe):
    """losses['ppo'] = policy loss + vf_coef · value loss + ent_coef · entropy loss on each minibatch.

    policy loss: −mean(min(r Â, clip(r, 1 − clip_range, 1 + clip_range) Â)), r = exp(log π − log π_old),
    Â normalised within the minibatch when `normalize_advantage`;
    value loss: mean((R − V)²), with V clipped to V_old ± `clip_range_vf` when given (SB3's form);
    entropy loss: −mean(H(π(·|s))).
    `clip_range` (and `clip_range_vf`) may be a schedule of the progress remaining, read from
    `progress`. The clip fraction, approximate KL (mean((r − 1) − log r)) and the three losses go to
    the record bus. With `target_kl`, a minibatch whose approximate KL exceeds 1.5 · target_kl is not
    stepped on: `minibatches.stop()` ends the passes over its rollout and this round runs on the
    next rollout's first minibatch instead (reading the KL costs a host sync per round; without
    `target_kl` there is none)."""
    fills = "ppo"
    reads = ("state", "action", "log_prob", "value", "advantages", "returns")  # the rollout fields it uses
    reports = ("approx_kl", "clip_fraction", "policy_loss", "value_loss", "entropy_loss")  # its records
    state_attrs = ("kl_stops",)

    def __init__(self, source, policy: ActorCriticPolicy, clip_range: Schedule = 0.2,
                 clip_range_vf: Optional[Schedule] = None, ent_coef: float = 0.0, vf_coef: float = 0.5,
                 normalize_advantage: bool = True, target_kl: Optional[float] = None,
                 minibatches: Optional[Minibatches] = None, progress: Optional[Callable[[], float]] = None):
        super().__init__(source)
        _check_loss_settings(clip_range, clip_range_vf, ent_coef, vf_coef, normalize_advantage, target_kl)
        if target_kl is not None and minibatches is None:
            raise ValueError("target_kl needs the Minibatches stage whose passes it stops: PPOLoss(..., "
                             "minibatches=the_minibatches_stage).")
        self.policy, self.clip_range, self.clip_range_vf = policy, clip_range, clip_range_vf
        self.ent_coef, self.vf_coef, self.normalize_advantage = ent_coef, vf_coef, normalize_advantage
        self.target_kl, self.minibatches = target_kl, minibatches
        self.progress = progress if progress is not None else (lambda: 1.0)
        self.kl_stops = 0

    def compute(self, step: SimpleStep, clip_range: float, clip_range_vf: Optional[float]):
        "(loss, approx KL, clip fraction, policy loss, value loss, entropy loss) for one minibatch."
        log_prob, entropy, value = self.policy.evaluate(step.state, step.action)
        advantages = step.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        log_ratio = log_prob - step.log_prob
        ratio = log_ratio.exp()
        policy_loss = -torch.min(advantages * ratio, advantages * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
        if clip_range_vf is not None:
            value = step.value + (value - step.value).clamp(-clip_range_vf, clip_range_vf)
        value_loss = (step.returns - value).pow(2).mean()
        entropy_loss = -entropy.mean()
        if self.ent_coef:
            loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss
        else:  # the same loss and gradients (its entropy term is 0), but backward skips the entropy's graph
            loss = policy_loss + self.vf_coef * value_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clip_fraction = ((ratio - 1).abs() > clip_range).float().mean()
        return loss, approx_kl, clip_fraction, policy_loss, value_loss, entropy_loss

    def next(self) -> TrainBatch:
        while True:
            batch = next(self.source)  # a new rollout is collected here: read the progress after it
            clip_range = _value(self.clip_range, self.progress)
            clip_range_vf = None if self.clip_range_vf is None else _value(self.clip_range_vf, self.progress)
            loss, approx_kl, clip_fraction, policy_loss, value_loss, entropy_loss = self.compute(
                batch.step, clip_range, clip_range_vf)
            self.record("approx_kl", approx_kl)
            # data-parallel ranks stop alike, on their mean KL (one rank: the KL itself)
            if self.target_kl is None or not float(distributed.mean_across_ranks(approx_kl)) > 1.5 * self.target_kl:
                break
            self.kl_stops += 1
            self.gauge("kl_stops", self.kl_stops)
            self.minibatches.stop()
        self.record("clip_fraction", clip_fraction)
        self.record("policy_loss", policy_loss.detach())
        self.record("value_loss", value_loss.detach())
        self.record("entropy_loss", entropy_loss.detach())
        self.gauge("clip_range", clip_range)
        batch.losses[self.fills] = loss
        return batch


def _check_schedule(name: str, value):
    if callable(value):
        value = getattr(value, "initial", value(1.0))
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a number > 0 or a schedule (linear_schedule(0.2)), got {value!r}.")


def _check_loss_settings(clip_range, clip_range_vf, ent_coef, vf_coef, normalize_advantage, target_kl):
    _check_schedule("clip_range", clip_range)
    if clip_range_vf is not None:
        _check_schedule("clip_range_vf", clip_range_vf)
    for name, value in (("ent_coef", ent_coef), ("vf_coef", vf_coef)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    check_flag(normalize_advantage, "normalize_advantage")
    if target_kl is not None and (isinstance(target_kl, bool) or not isinstance(target_kl, numbers.Real)
                                  or not target_kl > 0 or not math.isfinite(target_kl)):
        raise ValueError(f"target_kl must be a number > 0, or None for no early stop; got {target_kl!r}.")


def PPODataPipe(env_ids: Union[str, Sequence[str]], policy: ActorCriticPolicy, n_envs: int = 1,
                seed: Optional[int] = None, normalize_obs: bool = False, normalize_reward: bool = False,
                gamma: float = 0.99, n: Optional[int] = None, async_envs: bool = False):
    """The env side of PPO: `GymStepper` over `n_envs` copies of each id with `PPOAgent(policy)`, then
    (optionally) `NormalizeObservation` with the normaliser the agent reads and `NormalizeReward`
    (discounted with `gamma`), as rl-zoo's `normalize: true`. `n` caps the env steps."""
    env = make_vec_env(env_ids, num_envs=n_envs, async_envs=async_envs)
    _check_policy(policy, env)
    normalizer = ObservationNormalizer(env.single_observation_space.shape) if normalize_obs else None
    pipe = GymStepper(env, PPOAgent(policy, obs_normalizer=normalizer), seed=seed, n=n)
    if normalize_obs:
        pipe = NormalizeObservation(pipe, normalizer)
    if normalize_reward:
        pipe = NormalizeReward(pipe, gamma=gamma)
    return pipe


def _check_policy(policy: ActorCriticPolicy, env: gym.vector.VectorEnv):
    space, obs = env.single_action_space, env.single_observation_space
    if not isinstance(space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ValueError(f"PPO takes Discrete or Box action spaces; this env has {space}.")
    n_obs = int(torch.Size(obs.shape).numel())
    if getattr(policy, "state_sz", n_obs) != n_obs:
        raise ValueError(f"The policy takes {policy.state_sz} observation values, this env's observations have "
                         f"{n_obs}; build it as ActorCriticPolicy(env.single_observation_space, "
                         "env.single_action_space).")
    continuous = isinstance(space, gym.spaces.Box)
    n_act = int(torch.Size(space.shape).numel()) if continuous else int(space.n)
    if getattr(policy, "continuous", continuous) != continuous or getattr(policy, "action_sz", n_act) != n_act:
        raise ValueError(f"The policy was built for {'Box' if policy.continuous else 'Discrete'} actions of size "
                         f"{policy.action_sz}, this env has {space}; build it as "
                         "ActorCriticPolicy(env.single_observation_space, env.single_action_space).")


def PPOLearner(policy: ActorCriticPolicy, dls: Sequence, logger_bases=None, learning_rate: Schedule = 3e-4,
               n_steps: int = 2048, batch_size: int = 64, n_epochs: int = 10, gamma: float = 0.99,
               gae_lambda: float = 0.95, clip_range: Schedule = 0.2, clip_range_vf: Optional[Schedule] = None,
               normalize_advantage: bool = True, ent_coef: float = 0.0, vf_coef: float = 0.5,
               max_grad_norm: Optional[float] = 0.5, target_kl: Optional[float] = None,
               total_timesteps: Optional[int] = None, device=None, batches: Optional[int] = None) -> Learner:
    """PPO on the env pipeline `dls[0]` (`PPODataPipe(env_id, policy, n_envs)`), whose agent runs
    `policy`. Names and defaults are Stable-Baselines3's: a rollout is `n_steps` steps of each of the
    pipeline's n_envs envs; `n_epochs` passes over it in minibatches of `batch_size`, which must
    divide n_steps · n_envs. `learning_rate` and `clip_range` (and `clip_range_vf`) are numbers or
    schedules of the progress remaining (`linear_schedule(1e-3)`, rl-zoo's `lin_1e-3`), which runs
    from 1 to 0 over `total_timesteps` env steps. Adam (ε = 1e-5, as SB3) steps the policy and
    value networks together. An epoch is `batches` gradient rounds: by default one rollout's,
    n_epochs · n_steps · n_envs / batch_size."""
    stepper = find_pipe(dls[0], GymStepper, required=False) if dls else None
    if stepper is None or stepper.agent is None:
        raise ValueError("PPOLearner needs dls=[env_pipe] whose GymStepper has an agent: build it with "
                         "PPODataPipe(env_id, policy, n_envs=...).")
    if getattr(stepper.agent, "model", None) is not policy:
        raise ValueError("dls[0]'s agent runs a different network than the policy given to PPOLearner, so training "
                         "would never change how it acts; build the env pipeline with PPODataPipe(env_id, policy).")
    sampler = find_pipe(stepper.agent, PolicySampler, required=False)
    if sampler is None:
        raise ValueError("dls[0]'s agent does not sample from the policy: PPO trains on each step's log-probability "
                         "and value, which PPOAgent(policy) records. Build the env pipeline with "
                         "PPODataPipe(env_id, policy).")
    normalizing = find_pipe(dls[0], NormalizeObservation, required=False)
    if normalizing is not None and getattr(sampler.normalize, "__self__", None) is not normalizing.normalizer:
        raise ValueError("dls[0] normalises observations (NormalizeObservation), but its agent does not act on "
                         "them with the same normaliser, so it would act on other numbers than it learns from. "
                         "Build the env pipeline with PPODataPipe(env_id, policy, normalize_obs=True), which shares "
                         "one normaliser between the two.")
    _check_policy(policy, stepper.env)
    gamma = check_gamma(gamma, "PPOLearner")
    if isinstance(gae_lambda, bool) or not isinstance(gae_lambda, numbers.Real) or not 0 <= gae_lambda <= 1:
        raise ValueError(f"PPOLearner(gae_lambda={gae_lambda!r}): λ must lie in [0, 1] (0.95 is usual).")
    n_steps, batch_size = check_whole(n_steps, "n_steps"), check_whole(batch_size, "batch_size")
    n_epochs = check_whole(n_epochs, "n_epochs")
    rollout_size = n_steps * stepper.num_envs
    if batch_size > rollout_size or rollout_size % batch_size:
        raise ValueError(f"batch_size={batch_size} must divide a rollout of n_steps x n_envs = {n_steps} x "
                         f"{stepper.num_envs} = {rollout_size} transitions; pick a divisor of {rollout_size} "
                         f"(e.g. {math.gcd(rollout_size, 64)}), or change n_steps.")
    if total_timesteps is not None:
        total_timesteps = check_whole(total_timesteps, "total_timesteps")
    if (callable(learning_rate) or callable(clip_range) or callable(clip_range_vf)) and total_timesteps is None:
        raise ValueError("A schedule (linear_schedule) runs over total_timesteps env steps: give total_timesteps.")
    _check_schedule("learning_rate", learning_rate)
    _check_loss_settings(clip_range, clip_range_vf, ent_coef, vf_coef, normalize_advantage, target_kl)
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, numbers.Real)
                                      or not 0 < max_grad_norm < math.inf):
        raise ValueError(f"max_grad_norm must be > 0 and finite, or None not to clip; got {max_grad_norm!r}.")
    rounds_per_rollout = n_epochs * rollout_size // batch_size
    batches = rounds_per_rollout if batches is None else check_whole(batches, "batches")
    device = check_device(device)
    policy.to(device)
    initial_lr = learning_rate(1.0) if callable(learning_rate) else learning_rate
    optimizer = torch.optim.Adam(policy.parameters(), lr=initial_lr, eps=1e-5, fused=device.type in ("cpu", "cuda"))

    collector = RolloutCollector(dls[0], n_steps=n_steps, n_envs=stepper.num_envs,
                                 rounds_per_rollout=rounds_per_rollout, device=device)
    progress = Progress(collector, total_timesteps)
    pipe = GAE(collector, policy.value, gamma=gamma, gae_lambda=gae_lambda)
    pipe = minibatches = Minibatches(pipe, n_epochs=n_epochs, batch_size=batch_size, fields=PPOLoss.reads)
    pipe = PPOLoss(pipe, policy, clip_range=clip_range, clip_range_vf=clip_range_vf, ent_coef=ent_coef,
                   vf_coef=vf_coef, normalize_advantage=normalize_advantage, target_kl=target_kl,
                   minibatches=minibatches, progress=progress)
    pipe = LossCollector(pipe)
    schedulers = {"ppo": ProgressLR(optimizer, learning_rate, progress)} if callable(learning_rate) else None
    pipe = Update(pipe, {"ppo": optimizer}, clip_grad_norm=max_grad_norm, schedulers=schedulers)
    pipe_to_device(pipe, device)
    return Learner({"policy": policy}, pipe, dls=dls, batches=batches, logger_bases=logger_bases, name="PPO",
                   collector=collector, stepper=stepper)
