"""DDPG (Lillicrap et al., 2016): deterministic policy gradients (Silver et al., 2014) with deep
networks, a replay buffer and slowly tracking target networks.

Algorithm 1, read top to bottom:
  1. initialise the critic Q(s, a|θ^Q) and the actor μ(s|θ^μ)               Critic, Actor (+ initialisers)
  2. initialise the targets Q' ← Q, μ' ← μ and the replay buffer R           DDPGLearner, ReplayBuffer
  3. act with a_t = μ(s_t) + N_t, N a random process, store (s, a, r, s')    OrnsteinUhlenbeck / GaussianNoise, DDPGAgent
     (optionally uniform random actions for the first steps)                 RandomStartRunner
  4. sample N transitions from R;  y_i = r_i + γ^k (1 - terminated) Q'(s'_i, μ'(s'_i))
     and minimise L = 1/N Σ (y_i - Q(s_i, a_i))²                             Collector, CriticLossProcessor, Update
  5. update the actor along ∇_a Q(s, a)|_{a=μ(s)} ∇_θ μ(s): minimise -Q(s, μ(s))   ActorLossProcessor, Update
  6. θ' ← τ θ + (1 - τ) θ' for both targets                                 SoftTargetUpdater
DDPGLearner assembles them; each piece is a stage that can be used, or swapped, on its own.

Actions have one unit everywhere a network sees them: the actor's tanh [-1, 1]. The replay stores
them so, and the agent's `ActionScaler` maps them onto the env's bounds at the env boundary.
"""
from __future__ import annotations

import warnings
from functools import partial
from typing import Callable, Optional, Sequence, Type

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..agents import (ActionClip, ActionUnbatcher, AgentHead, DeterministicAgent, GaussianNoise,
                      ExplorationComparisonLogger, OrnsteinUhlenbeck, RandomStartRunner, check_continuous)
from ..compat import BasicOptStepper, LossCollector
from ..core import SimpleStep, TrainBatch, check_device, check_real, check_whole
from ..learner import Learner, target_copy, SoftTargetUpdater, Update, bootstrap_discount, get_target_model
from ..learner import LossCollector as _LossCollector
from ..learner.actor_critic import ActorLossProcessor
from ..learner.compiling import CompileArg, compile_options, maybe_compile
from ..learner.wiring import (check_actor_critic_sizes, check_actor_kind, check_agent, check_bootstrap,
                              check_bounded_actions, check_gamma, check_stage_gamma, env_pipeline,
                              make_optimizer)
from ..memory import Collector, ReplayBuffer
from ..nets import (Actor, Critic, ddpg_conv2d_block, init_kaiming_normal_weights,
                    init_uniform_weights, init_xavier_uniform_weights)
from ..pipes import Pipe, pipe_to_device

__all__ = ["init_xavier_uniform_weights", "init_uniform_weights", "init_kaiming_normal_weights", "ddpg_conv2d_block",
           "Critic", "Actor", "pipe_to_device", "OrnsteinUhlenbeck", "GaussianNoise",
           "ExplorationComparisonLogger", "ActionClip", "ActionUnbatcher", "RandomStartRunner", "DDPGAgent",
           "check_continuous", "BasicOptStepper", "LossCollector", "SoftTargetUpdater", "get_target_model",
           "CriticLossProcessor", "ActorLossProcessor", "DDPGLearner"]


# 3. The agent: state -> μ(s) -> + noise -> clip to [-1, 1]; scaled onto the env's bounds at the env boundary

def DDPGAgent(model: Actor, min_epsilon: float = 0.2, max_epsilon: float = 1.0, max_steps: int = 100,
              dp_augmentation_fns: Optional[Sequence[Callable]] = None,
              action_space: Optional[gym.spaces.Box] = None, exploration: Optional[Callable] = None,
              random_steps: int = 0) -> AgentHead:
    """Produces continuous action outputs: μ(s), plus exploration noise while `model` trains, clipped
    to [-1, 1], the unit the replay and the networks use; the env receives them scaled onto its
    action bounds (those of `action_space` when given, else those of the env the agent steps).

    `exploration` builds the noise stage from its source (default: `OrnsteinUhlenbeck` with this ε
    schedule; e.g. `partial(GaussianNoise, sigma=0.1)`). For the first `random_steps` env steps the
    actor is replaced by uniform random actions (`RandomStartRunner`), the noise still added. Each of
    `dp_augmentation_fns` receives the agent pipeline before its head and returns the pipeline to
    use. It is a `DeterministicAgent` with fastrl's parameters."""
    if exploration is None:
        exploration = partial(OrnsteinUhlenbeck, action_sz=getattr(model, "action_sz", None), min_epsilon=min_epsilon,
                              max_epsilon=max_epsilon, max_steps=max_steps, model=model)
    return DeterministicAgent(model, exploration, random_steps=random_steps, action_space=action_space,
                              augmentations=dp_augmentation_fns)


# 4. The critic's target and loss -----------------------------------------------------------------

def _target_of(model: nn.Module, pipe, given: Optional[nn.Module]) -> nn.Module:
    """`given`, else the target network of the target updater upstream that tracks `model` (fastrl's
    page builds its pipelines so), else `model` itself, with a warning saying how to add one."""
    target = get_target_model(given, pipe, tracking=model, required=False)
    if target is not None:
        return target
    warnings.warn(f"CriticLossProcessor: no target network for the {type(model).__name__} upstream, so it bootstraps "
                  f"from the online network. Put SoftTargetUpdater(pipe, {type(model).__name__.lower()}) before "
                  "CriticLossProcessor, or pass t_critic=/t_actor=, to use one.", stacklevel=3)
    return model


class CriticLossProcessor(Pipe):
    """losses['critic'] = loss(Q(s, a), y) with y = r + γ^k (1 - terminated) Q'(s', μ'(s')).

    Q' and μ' are `t_critic` and `t_actor` (as `DDPGLearner` passes them); left out, they are the
    target networks of the `SoftTargetUpdater`s upstream that track `critic` and `actor`, as on
    fastrl's page, or, with none, the online networks themselves (with a warning); k is each transition's `nsteps` (1 when the batch has
    none), so n-step transitions bootstrap with γ^k. `loss` is nn.MSELoss's functional form.
    `compile=True` (or a dict of `torch.compile` options) runs `targets` and `compute_loss` through
    `torch.compile`."""
    fills = "critic"

    def __init__(self, source, critic: nn.Module, actor: nn.Module, t_critic: Optional[nn.Module] = None,
                 t_actor: Optional[nn.Module] = None, loss: Callable = F.mse_loss, gamma: float = 0.99,
                 compile: CompileArg = False):
        super().__init__(source)
        gamma = check_stage_gamma(source, gamma, "CriticLossProcessor")
        self.critic, self.actor, self.loss, self.gamma = critic, actor, loss, gamma
        self.t_critic = _target_of(critic, source, t_critic)
        self.t_actor = _target_of(actor, source, t_actor)
        self._targets = maybe_compile(self.targets, compile)
        self._loss = maybe_compile(self.compute_loss, compile)

    def targets(self, step: SimpleStep) -> Tensor:
        next_q = self.t_critic(step.next_state, self.t_actor(step.next_state)).squeeze(-1)
        return step.reward + bootstrap_discount(step, self.gamma) * next_q

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        q = self.critic(step.state, step.action.reshape(len(step), -1).to(step.reward.dtype)).squeeze(-1)
        return self.loss(q, targets)

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            batch.targets = self._targets(batch.step)
        batch.losses[self.fills] = self._loss(batch.step, batch.targets)
        return batch


# 5. The actor's loss: ActorLossProcessor (learner/actor_critic.py, shared with TD3) -----------------

# 6. DDPG assembled ---------------------------------------------------------------------------------

def DDPGLearner(actor: Actor, critic: Critic, dls: Sequence, logger_bases=None, actor_lr: float = 1e-3,
                actor_opt: Type[torch.optim.Optimizer] = torch.optim.Adam, critic_lr: float = 1e-2,
                critic_opt: Type[torch.optim.Optimizer] = torch.optim.Adam, critic_target_copy_freq: int = 1,
                actor_target_copy_freq: int = 1, tau: float = 1e-3, bs: int = 128, max_sz: int = 10_000,
                nsteps: int = 1, device=None, batches: Optional[int] = None,
                dp_augmentation_fns: Optional[Sequence[Callable]] = None, debug: bool = False,
                warmup: int = 1000, train_every: int = 1, updates: int = 1, gamma: float = 0.99,
                compile: CompileArg = False) -> Learner:
    """DDPG on the env pipeline `dls[0]`, whose agent must run `actor` (`DDPGAgent(actor)`).

    Per gradient round, in the paper's order: the `Collector` samples `bs` transitions from a replay
    of `max_sz` (after `warmup` transitions; `updates` rounds every `train_every` env steps); one
    critic step (lr `critic_lr`), then one actor step (lr `actor_lr`) through the updated critic;
    then both targets are Polyak-averaged (τ, every `*_target_copy_freq` rounds). `nsteps` and
    `gamma` must match the n-step merging of `dls[0]`. An epoch is `batches` rounds (1000 when
    None). Each of `dp_augmentation_fns` receives the learner pipeline and returns the one to run;
    `debug` prints the device moves. `compile=True` (or a dict of `torch.compile` options) compiles
    the critic's target and the two losses; the learner, its checkpoints and the agent keep `actor`
    and `critic`."""
    compile_options(compile)
    gamma = check_gamma(gamma, "DDPGLearner")
    bs, max_sz = check_whole(bs, "bs"), check_whole(max_sz, "max_sz")
    batches = 1000 if batches is None else check_whole(batches, "batches")
    warmup = check_whole(warmup, "warmup", 0)
    train_every, updates = check_whole(train_every, "train_every"), check_whole(updates, "updates")
    critic_target_copy_freq = check_whole(critic_target_copy_freq, "critic_target_copy_freq")
    actor_target_copy_freq = check_whole(actor_target_copy_freq, "actor_target_copy_freq")
    tau = check_real(tau, "tau", 0, 1, low_open=True, hint="1 is a hard copy; 1e-3 is DDPG's.")
    device = check_device(device)
    stepper, nstepper = env_pipeline(dls, "DDPGLearner", "DDPGAgent(actor)")
    space = check_continuous(stepper.env)
    check_actor_kind(actor, "DDPGLearner", stochastic=False)
    check_agent(stepper, actor, "DDPGLearner", "actor", "DDPGAgent(actor)")
    check_bounded_actions(stepper, "DDPGLearner", "DDPGAgent(actor)")
    check_actor_critic_sizes(stepper, space, actor, [critic])
    check_bootstrap(nstepper, nsteps, gamma, "DDPGLearner")
    critic_optimizer = make_optimizer(critic_opt, critic.parameters(), critic_lr, "critic_lr")
    actor_optimizer = make_optimizer(actor_opt, actor.parameters(), actor_lr, "actor_lr")
    collector = Collector(dls[0], ReplayBuffer(max_sz, device=device), bs=bs, warmup=warmup, train_every=train_every,
                          updates=updates)
    actor.to(device)
    critic.to(device)

    t_critic, t_actor = (target_copy(m) for m in (critic, actor))
    pipe = CriticLossProcessor(collector, critic, actor, t_critic=t_critic, t_actor=t_actor, gamma=gamma,
                               compile=compile)
    pipe = Update(pipe, {"critic": critic_optimizer})
    pipe = ActorLossProcessor(pipe, critic, actor, compile=compile)
    pipe = Update(pipe, {"actor": actor_optimizer})
    pipe = SoftTargetUpdater(pipe, critic, tau=tau, target_sync=critic_target_copy_freq, target_model=t_critic)
    pipe = SoftTargetUpdater(pipe, actor, tau=tau, target_sync=actor_target_copy_freq, target_model=t_actor)
    pipe = _LossCollector(pipe)
    for fn in dp_augmentation_fns or ():
        pipe = fn(pipe)
    pipe_to_device(pipe, device, debug=debug)
    return Learner({"actor": actor, "critic": critic}, pipe, dls=dls, batches=batches,
                   logger_bases=logger_bases, name="DDPG", collector=collector, stepper=stepper)
