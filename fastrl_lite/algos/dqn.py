"""DQN (Mnih et al., 2015) and its family: target network, double Q (van Hasselt et al., 2016),
dueling heads (Wang et al., 2016) and n-step returns.

Per gradient round, read top to bottom:
  1. sample a batch (s, a, r, s', terminated, k) from the replay   Collector(ReplayBuffer)
  2. y = r + γ^k (1 - terminated) max_a' Q_target(s', a')          QTarget
     (double Q: Q_target(s', argmax_a' Q(s', a')))                  DoubleQTarget
  3. loss = Huber(Q(s, a), y)                                       QLoss
     (prioritized replay: weighted per sample, priorities ← |δ|)    QLoss, PriorityUpdater
     one optimizer step on Q                                        Update
  4. every `target_sync` rounds: Q_target ← Q                       TargetModelUpdater

SAIL-DQN adds the return-to-go G of each transition, computed when its episode ends
(EpisodeReturns), and a bonus α·clip(max(Q̄(s, a), G) − max_b Q̄(s, b), 0, c) in y (SAILTarget).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Type

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..agents import AgentBase, AgentHead, DiscreteEpsilonRandomSelect, SimpleModelRunner, StepFieldSelector
from ..core import SimpleStep, TrainBatch, check_device, check_flag, check_real, check_whole
from ..envs.returns import EpisodeReturns
from ..learner import Learner, target_copy, LossCollector, TargetModelUpdater, Update, bootstrap_discount, get_target_model
from ..learner.compiling import CompileArg, compile_options, maybe_compile
from ..learner.wiring import (check_agent, check_bootstrap, check_gamma, check_stage_gamma, env_pipeline,
                              make_optimizer)
from ..memory import Collector, PrioritizedSampler, PriorityUpdater, ReplayBuffer
from ..nets import DQN, DuelingHead, flat_only
from ..pipes import Pipe, pipe_to_device

__all__ = ["DQN", "DuelingHead", "QTarget", "DoubleQTarget", "SAILTarget", "QLoss", "DQNAgent", "DQNLearner",
           "check_discrete", "check_q_network"]


class QTarget(Pipe):
    """TD targets y = r + γ^k (1 - terminated) max_a' Q'(s', a') from `target_model`. Pass the online
    network itself for plain DQN without a target network; leave it out to use the target model of
    a `TargetModelUpdater` upstream. `compile=True` (or a dict of `torch.compile` options) runs
    `targets` through `torch.compile`."""

    def __init__(self, source, target_model: Optional[nn.Module] = None, gamma: float = 0.99,
                 compile: CompileArg = False):
        super().__init__(source)
        self.target_model = get_target_model(target_model, source)
        self.gamma = check_stage_gamma(source, gamma, type(self).__name__)
        self._targets = maybe_compile(self.targets, compile)

    def targets(self, step: SimpleStep) -> Tensor:
        next_q = self.target_model(step.next_state).amax(dim=-1)
        return step.reward + bootstrap_discount(step, self.gamma) * next_q

    def next(self) -> TrainBatch:
        batch = next(self.source)
        with torch.no_grad():
            batch.targets = self._targets(batch.step)
        return batch


class DoubleQTarget(QTarget):
    "Double Q: the online `model` picks a' = argmax Q(s', ·), the target network values it."

    def __init__(self, source, model: nn.Module, target_model: Optional[nn.Module] = None, gamma: float = 0.99,
                 compile: CompileArg = False):
        super().__init__(source, target_model, gamma, compile)
        self.model = model

    def targets(self, step: SimpleStep) -> Tensor:
        next_action = self.model(step.next_state).argmax(dim=-1, keepdim=True)
        next_q = self.target_model(step.next_state).gather(-1, next_action).squeeze(-1)
        return step.reward + bootstrap_discount(step, self.gamma) * next_q


class SAILTarget(QTarget):
    """SAIL-DQN's target (Ferret, Pietquin and Geist, 2021: self-imitation advantage learning):

        y = r + γ^k (1 − terminated) max_b Q̄(s', b) + α · clip(max(Q̄(s, a), G) − max_b Q̄(s, b), 0, c)

    with Q̄ the target network and G the transition's discounted return-to-go (`step.mc_return`,
    from an `EpisodeReturns` stage in the env pipeline). The bonus pushes Q(s, a) up towards a
    return the agent has actually obtained when it beats the current greedy value, by at most α·c.
    With `model`, the bootstrap is double Q's (the online network picks b, Q̄ values it)."""

    def __init__(self, source, target_model: Optional[nn.Module] = None, gamma: float = 0.99, alpha: float = 0.9,
                 clip: float = 1.0, model: Optional[nn.Module] = None, compile: CompileArg = False):
        check_sail(alpha, clip)
        super().__init__(source, target_model, gamma, compile)
        self.alpha, self.clip, self.model = float(alpha), float(clip), model

    def targets(self, step: SimpleStep) -> Tensor:
        next_q = self.target_model(step.next_state)
        if self.model is None:
            next_v = next_q.amax(dim=-1)
        else:
            next_v = next_q.gather(-1, self.model(step.next_state).argmax(dim=-1, keepdim=True)).squeeze(-1)
        y = step.reward + bootstrap_discount(step, self.gamma) * next_v
        q = self.target_model(step.state)
        q_taken = q.gather(-1, step.action.long().unsqueeze(-1)).squeeze(-1)
        bonus = (torch.maximum(q_taken, step.mc_return) - q.amax(dim=-1)).clamp(0.0, self.clip)
        return y + self.alpha * bonus

    def next(self) -> TrainBatch:
        batch = next(self.source)
        if batch.step.mc_return is None:
            raise RuntimeError("SAILTarget found no returns (mc_return) on the batch: put EpisodeReturns in the env "
                               "pipeline, upstream of the replay (DQNLearner(..., sail=True) does).")
        with torch.no_grad():
            batch.targets = self._targets(batch.step)
        return batch


def check_sail(alpha, clip):
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 <= alpha <= 1:
        raise ValueError(f"SAIL's alpha must lie in [0, 1] (0.9 in the paper), got {alpha!r}.")
    if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not 0 < clip < float("inf"):
        raise ValueError(f"SAIL's clip must be a finite number > 0 (1 in the paper), got {clip!r}.")


class QLoss(Pipe):
    """losses['q'] = loss_func(Q(s, a), y) with y from the target stage upstream; `compile` as in
    `QTarget`, for `compute_loss`.

    A batch with importance weights w (prioritized replay) gets the weighted mean
    mean_i w_i · loss_func(Q(s_i, a_i), y_i) instead (`loss_func` must take `reduction="none"`, as
    torch's losses do), and its TD errors δ = y − Q(s, a) go to `batch.td_error`."""
    fills = "q"

    def __init__(self, source, model: nn.Module, loss_func: Callable = F.smooth_l1_loss, compile: CompileArg = False):
        super().__init__(source)
        self.model, self.loss_func = model, loss_func
        self._loss = maybe_compile(self.compute_loss, compile)
        self._weighted_loss = maybe_compile(self.weighted_loss, compile)

    def q_taken(self, step: SimpleStep) -> Tensor:
        return self.model(step.state).gather(-1, step.action.long().unsqueeze(-1)).squeeze(-1)

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        return self.loss_func(self.q_taken(step), targets)

    def weighted_loss(self, step: SimpleStep, targets: Tensor, weights: Tensor) -> Tuple[Tensor, Tensor]:
        q = self.q_taken(step)
        return (weights * self.loss_func(q, targets, reduction="none")).mean(), (targets - q).detach()

    def next(self) -> TrainBatch:
        batch = next(self.source)
        if batch.targets is None:
            raise RuntimeError("QLoss found no TD targets: put QTarget or DoubleQTarget upstream of it.")
        if batch.weights is None:
            batch.losses[self.fills] = self._loss(batch.step, batch.targets)
        else:
            batch.losses[self.fills], batch.td_error = self._weighted_loss(batch.step, batch.targets, batch.weights)
        return batch


def DQNAgent(model: nn.Module, min_epsilon: float = 0.02, max_epsilon: float = 1.0, max_steps: int = 1000,
             device=None) -> AgentHead:
    """ε-greedy agent over `model`'s Q-values; ε decays over `max_steps` env steps and exploration is
    off while `model` is in eval mode."""
    if device is not None:
        model.to(device)
    pipe = AgentBase(model)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = SimpleModelRunner(pipe, model)
    pipe = DiscreteEpsilonRandomSelect(pipe, min_epsilon=min_epsilon, max_epsilon=max_epsilon, max_steps=max_steps,
                                       model=model)
    return AgentHead(pipe, model=model)


def check_discrete(env_or_space, algo: str = "DQN") -> int:
    "The number of actions of a `Discrete` action space, or an error that points to the right algorithm."
    space = getattr(env_or_space, "single_action_space", getattr(env_or_space, "action_space", env_or_space))
    if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)):
        raise ValueError(f"{algo} needs a single discrete action (Discrete(n)), this environment has {space}, several "
                         "discrete choices per step, which no algorithm here takes. Wrap the env so that one "
                         "Discrete index stands for each combination (gymnasium.wrappers.TransformAction with "
                         "gymnasium.spaces.Discrete(number of combinations)).")
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(f"{algo} needs a discrete action space, this environment has {space}. "
                         "For continuous actions use TD3, SAC, DDPG or PPO (fastrl-lite train td3|sac|ddpg|ppo).")
    return int(space.n)


def check_q_network(model: nn.Module, env, n_actions: int):
    """`model` must take the env's observations and return one Q-value per action: checked on its
    sizes when it declares them (`DQN`), else on one forward pass of a zero observation."""
    shape = tuple(env.single_observation_space.shape)
    size = int(torch.Size(shape).numel())
    state_sz, action_sz = getattr(model, "state_sz", None), getattr(model, "action_sz", None)
    if state_sz is not None and action_sz is not None:
        if (state_sz, action_sz) != (size, n_actions):
            raise ValueError(f"{type(model).__name__}(state_sz={state_sz}, action_sz={action_sz}) does not fit this env: "
                             f"its observations have {size} values and it has {n_actions} actions; build it as "
                             f"{type(model).__name__}({size}, {n_actions}).")
        if len(shape) != 1:
            raise ValueError(flat_only(type(model).__name__, shape))
        return
    probe = next(model.parameters(), None)
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, *shape, device=probe.device if probe is not None else None))
    except RuntimeError as error:
        raise ValueError(f"The Q-network does not take this env's observations (shape {shape}): {error}") from error
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, n_actions):
        raise ValueError(f"The Q-network returns {tuple(out.shape[1:])} values per observation; this env has "
                         f"{n_actions} actions, so it must return {n_actions}.")


def DQNLearner(model: Optional[nn.Module], dls: Sequence, logger_bases=None, loss_func: Callable = F.smooth_l1_loss,
               opt: Type[torch.optim.Optimizer] = torch.optim.Adam, lr: float = 2.3e-3, bs: int = 64,
               max_sz: int = 100_000, nsteps: int = 1, device=None, batches: int = 1280, warmup: int = 1000,
               train_every: int = 256, updates: int = 128, gamma: float = 0.99, target: bool = True,
               target_sync: int = 128, double: bool = False, dueling: bool = False,
               clip_grad_norm: Optional[float] = 10.0, compile: CompileArg = False, prioritized: bool = False,
               per_alpha: float = 0.6, per_beta0: float = 0.4, per_eps: float = 1e-6,
               per_beta_rounds: int = 25_000, sail: bool = False, sail_alpha: float = 0.9,
               sail_clip: float = 1.0) -> Learner:
    """DQN on the env pipeline `dls[0]`, whose agent runs `model` (`DQNAgent(model)`; with
    `model=None`, the network the agent runs). Defaults are rl-zoo's tuned CartPole settings.

    Per gradient round, the pipeline reads like the algorithm: the `Collector` samples a batch from
    a replay of `max_sz` (after `warmup` transitions; `updates` rounds every `train_every` env
    steps), `QTarget` (or `DoubleQTarget` with `double`) computes y, `QLoss` the Huber loss, `Update`
    one optimizer step (gradient norm clipped at `clip_grad_norm`), and, with `target`, the target
    network is synced every `target_sync` rounds. `dueling` asks for a model with a dueling head.
    `nsteps` and `gamma` must match the n-step merging of `dls[0]`. `compile=True` (or a dict of
    `torch.compile` options) compiles the TD-target and loss computations; the learner, its
    checkpoints and the agent keep `model`.

    `prioritized` samples by priority (Schaul et al., 2016: `PrioritizedSampler(per_alpha,
    per_beta0, per_eps)`, β annealed to 1 over `per_beta_rounds` gradient rounds — the default is
    about the rounds of the tuned 50k-step CartPole run), weights the loss per sample and feeds the
    TD errors back as priorities (`PriorityUpdater`). Schaul et al. divide the step size by 4 with
    prioritized replay; on CartPole the tuned `lr` learns better divided too.

    `sail` trains SAIL-DQN (Ferret et al., 2021): `EpisodeReturns` gives every transition its
    discounted return-to-go G once its episode ends (truncated episodes bootstrapped from the
    target network), the replay stores it, and `SAILTarget` adds the bonus
    `sail_alpha` · clip(max(Q̄(s, a), G) − max_b Q̄(s, b), 0, `sail_clip`) to the TD target."""
    compile_options(compile)
    target, double, dueling, prioritized, sail = (check_flag(v, k) for k, v in dict(
        target=target, double=double, dueling=dueling, prioritized=prioritized, sail=sail).items())
    if not callable(loss_func):
        raise ValueError(f"loss_func must be a function of (prediction, target) such as F.smooth_l1_loss (DQN's "
                         f"Huber) or F.mse_loss, got {loss_func!r}.")
    gamma = check_gamma(gamma, "DQNLearner")
    bs, max_sz, batches = check_whole(bs, "bs"), check_whole(max_sz, "max_sz"), check_whole(batches, "batches")
    warmup = check_whole(warmup, "warmup", 0)
    train_every, updates = check_whole(train_every, "train_every"), check_whole(updates, "updates")
    if target:
        target_sync = check_whole(target_sync, "target_sync")
    if clip_grad_norm is not None:
        clip_grad_norm = check_real(clip_grad_norm, "clip_grad_norm", 0, low_open=True, hint="None does not clip.")
    stepper, nstepper = env_pipeline(dls, "DQNLearner", "DQNAgent(model)")
    n_actions = check_discrete(stepper.env)
    if model is None:
        model = stepper.agent.model
    if dueling and not getattr(model, "dueling", False):
        raise ValueError("dueling=True but the model has no dueling head: build it as DQN(..., dueling=True).")
    check_q_network(model, stepper.env, n_actions)
    check_agent(stepper, model, "DQNLearner", "model", "DQNAgent(model)")
    check_bootstrap(nstepper, nsteps, gamma, "DQNLearner")
    if double and not target:
        raise ValueError("double=True needs a target network: keep target=True.")
    device = check_device(device)
    if prioritized:
        try:
            loss_func(torch.zeros(2), torch.zeros(2), reduction="none")
        except TypeError as error:
            raise ValueError(f"prioritized=True weights the loss per sample, so loss_func must take reduction='none' "
                             f"and return one loss per sample, as torch's losses do (F.smooth_l1_loss, F.mse_loss); "
                             f"{getattr(loss_func, '__name__', loss_func)!r} does not ({error}).") from error
    sampler = PrioritizedSampler(per_alpha, per_beta0, per_eps, per_beta_rounds) if prioritized else None
    if sail:
        check_sail(sail_alpha, sail_clip)
    optimizer = make_optimizer(opt, model.parameters(), lr)
    buffer = ReplayBuffer(max_sz, sampler=sampler, device=device)
    source = dls[0]
    if sail:
        def tail_value(final_state: Tensor) -> Tensor:
            "V(s_T) = max_b Q̄(s_T, b) for episodes cut by a time limit (`target_model` is bound below)."
            return target_model(final_state.to(device)).amax(dim=-1).cpu()
        source = EpisodeReturns(source, gamma, bootstrap=tail_value, max_held=max_sz)
    # SAIL's transitions arrive an episode at a time: the rounds still follow the env steps (carry_over)
    collector = Collector(source, buffer, bs=bs, warmup=warmup, train_every=train_every, updates=updates,
                          carry_over=sail)
    model.to(device)

    target_model = target_copy(model) if target else model
    if sail:
        pipe = SAILTarget(collector, target_model, gamma=gamma, alpha=sail_alpha, clip=sail_clip,
                          model=model if double else None, compile=compile)
    elif double:
        pipe = DoubleQTarget(collector, model, target_model, gamma=gamma, compile=compile)
    else:
        pipe = QTarget(collector, target_model, gamma=gamma, compile=compile)
    pipe = QLoss(pipe, model, loss_func, compile=compile)
    if prioritized:
        pipe = PriorityUpdater(pipe, buffer)
    pipe = LossCollector(pipe)
    pipe = Update(pipe, {"q": optimizer}, clip_grad_norm=clip_grad_norm)
    if target:
        pipe = TargetModelUpdater(pipe, model, target_sync=target_sync, target_model=target_model)
    pipe_to_device(pipe, device)
    return Learner(model, pipe, dls=dls, batches=batches, logger_bases=logger_bases, name="DQN",
                   collector=collector, stepper=stepper)
