"""TD3 (Fujimoto, van Hoof and Meger, 2018): DDPG with clipped double-Q learning, target policy
smoothing and delayed policy updates.

Algorithm 1, read top to bottom:
  1. initialise critics Q_θ1, Q_θ2 and actor π_φ; targets θ'_i ← θ_i, φ' ← φ; replay B      TwinCritic, Actor, TD3Learner
  2. act a = π_φ(s) + ε, ε ~ N(0, σ), clipped to the bounds; store (s, a, r, s')            TD3Agent (GaussianNoise)
     (uniform random actions for the first `learning_starts` steps)                          RandomStartRunner
  3. sample N transitions from B                                                            Collector(ReplayBuffer)
     ã = clip(π_φ'(s') + ε̃, -1, 1), ε̃ = clip(N(0, σ̃), -c, c)      target policy smoothing   TwinCriticLoss.smoothed_actions
     y = r + γ^k (1 - terminated) min_i Q_θ'i(s', ã)               clipped double Q          TwinCriticLoss.targets
     θ_i ← argmin Σ_i mean (y - Q_θi(s, a))²                                                 TwinCriticLoss, Update
  4. every d rounds:
     φ ← φ + ∇_φ mean Q_θ1(s, π_φ(s))                              delayed policy update     ActorLossProcessor(every=d), Update
     θ'_i ← τ θ_i + (1 - τ) θ'_i,  φ' ← τ φ + (1 - τ) φ'                                      SoftTargetUpdater(target_sync=d)

Actions have one unit wherever a network sees them, the actor's tanh [-1, 1], so σ, σ̃ and c are
fractions of half the action range, as in Stable-Baselines3; the agent scales actions onto the
env's bounds where the env receives them. TD3Learner's parameters carry Stable-Baselines3's and
rl-zoo's names and defaults.
"""
from __future__ import annotations

from typing import Optional, Sequence, Type, Union

import gymnasium as gym
import torch
from torch import Tensor, nn

from ..agents import AgentHead, DeterministicAgent, action_noise, check_continuous
from ..core import SimpleStep, TrainBatch, check_device, check_real, check_whole
from ..learner import Learner, target_copy, LossCollector, SoftTargetUpdater, Update, bootstrap_discount
from ..learner.actor_critic import ActorLossProcessor
from ..learner.wiring import (burst_rounds, check_actor_critic_sizes, check_actor_kind, check_agent,
                              check_bootstrap, check_bounded_actions, check_gamma, check_stage_gamma, env_pipeline,
                              make_optimizer)
from ..memory import Collector, ReplayBuffer
from ..nets import TwinCritic
from ..pipes import Pipe, pipe_to_device

__all__ = ["TwinCritic", "TwinCriticLoss", "TD3Agent", "TD3Learner"]


# 1. Twin critics: TwinCritic, in nets.py (SAC uses it too) ---------------------------------------

# 3. The critics' target and loss ------------------------------------------------------------------

def _check_smoothing(policy_noise: float, noise_clip: float):
    hint = "0 turns the smoothing off."
    check_real(policy_noise, "The target policy noise (target_policy_noise)", 0, hint=hint)
    check_real(noise_clip, "The target policy noise's clip (target_noise_clip)", 0, hint=hint)


class TwinCriticLoss(Pipe):
    """losses['critic'] = Σ_i mean (Q_i(s, a) − y)² with the clipped double-Q target
    y = r + γ^k (1 − terminated) min_i Q'_i(s', ã) and the smoothed target action
    ã = clip(μ'(s') + clip(N(0, policy_noise), −noise_clip, noise_clip), −1, 1).

    `critics`/`t_critics` are `TwinCritic`s (online and target), `t_actor` the target actor; k is
    each transition's `nsteps` (1 when absent). `policy_noise=0` turns the smoothing off.

    A batch with importance weights w (prioritized replay) gets Σ_i mean w (Q_i(s, a) − y)², and
    the mean of the two critics' |y − Q_i(s, a)| goes to `batch.td_error`."""
    fills = "critic"

    def __init__(self, source, critics: TwinCritic, t_critics: TwinCritic, t_actor: nn.Module, gamma: float = 0.99,
                 policy_noise: float = 0.2, noise_clip: float = 0.5):
        super().__init__(source)
        _check_smoothing(policy_noise, noise_clip)
        self.critics, self.t_critics, self.t_actor = critics, t_critics, t_actor
        self.gamma = check_stage_gamma(source, gamma, "TwinCriticLoss")
        self.policy_noise, self.noise_clip = policy_noise, noise_clip

    def smoothed_actions(self, next_state: Tensor) -> Tensor:
        "ã: the target actor's action plus clipped Gaussian noise, kept within [-1, 1]."
        action = self.t_actor(next_state)
        if self.policy_noise == 0:
            return action
        noise = (torch.randn_like(action) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        return (action + noise).clamp(-1, 1)

    def targets(self, step: SimpleStep) -> Tensor:
        next_q = self.t_critics(step.next_state, self.smoothed_actions(step.next_state)).amin(dim=-1)
        return step.reward + bootstrap_discount(step, self.gamma) * next_q

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        q = self.critics(step.state, step.action.reshape(len(step), -1).to(step.reward.dtype))
        return (q - targets.unsqueeze(-1)).pow(2).mean(dim=0).sum()

    def weighted_loss(self, step: SimpleStep, targets: Tensor, weights: Tensor):
        q = self.critics(step.state, step.action.reshape(len(step), -1).to(step.reward.dtype))
        errors = q - targets.unsqueeze(-1)
        return (weights.unsqueeze(-1) * errors.pow(2)).mean(dim=0).sum(), errors.detach().abs().mean(dim=-1)

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            batch.targets = self.targets(batch.step)
        if batch.weights is None:
            batch.losses[self.fills] = self.compute_loss(batch.step, batch.targets)
        else:
            batch.losses[self.fills], batch.td_error = self.weighted_loss(batch.step, batch.targets, batch.weights)
        return batch


# 2. The agent ----------------------------------------------------------------------------------------

def TD3Agent(actor: nn.Module, noise_std: float = 0.1, random_steps: int = 0,
             action_space: Optional[gym.spaces.Box] = None, noise_type: str = "normal") -> AgentHead:
    """TD3's exploration: μ(s) + N(0, noise_std) (a fraction of half the action range) while `actor`
    trains, the greedy μ(s) in eval mode, uniform random actions for the first `random_steps` env
    steps; clipped to [-1, 1] and scaled onto the env's bounds where the env receives them.
    `noise_type='ornstein-uhlenbeck'` explores with temporally correlated noise of scale `noise_std`
    instead (rl-zoo's choice for MountainCarContinuous)."""
    return DeterministicAgent(actor, action_noise(noise_type, noise_std), random_steps=random_steps,
                              action_space=action_space)


# TD3 assembled ----------------------------------------------------------------------------------------

def TD3Learner(actor: nn.Module, critics: Union[TwinCritic, Sequence[nn.Module]], dls: Sequence, logger_bases=None,
               learning_rate: float = 1e-3, buffer_size: int = 1_000_000, learning_starts: int = 100,
               batch_size: int = 256, tau: float = 0.005, gamma: float = 0.99, train_freq: int = 1,
               gradient_steps: int = 1, policy_delay: int = 2, target_policy_noise: float = 0.2,
               target_noise_clip: float = 0.5, optimizer_class: Type[torch.optim.Optimizer] = torch.optim.Adam,
               nsteps: int = 1, device=None, batches: int = 1000) -> Learner:
    """TD3 on the env pipeline `dls[0]`, whose agent runs `actor` (`TD3Agent(actor)`); `critics` is a
    `TwinCritic` or a pair of critics. The names and defaults are Stable-Baselines3's
    (`learning_rate` for both optimizers, `buffer_size`, `learning_starts` transitions before the
    first round, `train_freq` env steps → `gradient_steps` rounds (-1: `train_freq` rounds), `policy_delay`,
    `target_policy_noise`, `target_noise_clip`). `nsteps` and `gamma` must match the n-step merging
    of `dls[0]`; an epoch is `batches` gradient rounds."""
    if not isinstance(critics, TwinCritic):
        if isinstance(critics, nn.Module) or len(critics) != 2:
            raise ValueError("TD3 needs two critics: a TwinCritic (TwinCritic.of(state_sz, action_sz)) or a pair of "
                             f"critics, got {type(critics).__name__}.")
        critics = TwinCritic(*critics)
    gamma = check_gamma(gamma, "TD3Learner")
    policy_delay = check_whole(policy_delay, "policy_delay")
    buffer_size, batch_size = check_whole(buffer_size, "buffer_size"), check_whole(batch_size, "batch_size")
    learning_starts, batches = check_whole(learning_starts, "learning_starts", 0), check_whole(batches, "batches")
    train_freq, gradient_steps = burst_rounds(train_freq, gradient_steps)
    tau = check_real(tau, "tau", 0, 1, low_open=True, hint="1 is a hard copy; 0.005 is TD3's.")
    device = check_device(device)
    stepper, nstepper = env_pipeline(dls, "TD3Learner", "TD3Agent(actor)")
    space = check_continuous(stepper.env, "TD3")
    check_actor_kind(actor, "TD3Learner", stochastic=False)
    check_agent(stepper, actor, "TD3Learner", "actor", "TD3Agent(actor)")
    check_bounded_actions(stepper, "TD3Learner", "TD3Agent(actor)")
    check_actor_critic_sizes(stepper, space, actor, [critics.q1, critics.q2])
    check_bootstrap(nstepper, nsteps, gamma, "TD3Learner")
    _check_smoothing(target_policy_noise, target_noise_clip)
    critic_optimizer = make_optimizer(optimizer_class, critics.parameters(), learning_rate, "learning_rate")
    actor_optimizer = make_optimizer(optimizer_class, actor.parameters(), learning_rate, "learning_rate")
    collector = Collector(dls[0], ReplayBuffer(buffer_size, device=device), bs=batch_size, warmup=learning_starts,
                          train_every=train_freq, updates=gradient_steps)
    actor.to(device)
    critics.to(device)

    t_critics, t_actor = (target_copy(m) for m in (critics, actor))
    pipe = TwinCriticLoss(collector, critics, t_critics, t_actor, gamma, target_policy_noise, target_noise_clip)
    pipe = Update(pipe, {"critic": critic_optimizer})
    pipe = ActorLossProcessor(pipe, critics.q1, actor, every=policy_delay)
    pipe = Update(pipe, {"actor": actor_optimizer}, every=policy_delay)
    pipe = SoftTargetUpdater(pipe, critics, tau=tau, target_sync=policy_delay, target_model=t_critics)
    pipe = SoftTargetUpdater(pipe, actor, tau=tau, target_sync=policy_delay, target_model=t_actor)
    pipe = LossCollector(pipe)
    pipe_to_device(pipe, device)
    return Learner({"actor": actor, "critics": critics}, pipe, dls=dls, batches=batches, logger_bases=logger_bases,
                   name="TD3", collector=collector, stepper=stepper)
