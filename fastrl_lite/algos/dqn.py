"""DQN (Mnih et al., 2015) and its family: target network, double Q (van Hasselt et al., 2016),
dueling heads (Wang et al., 2016) and n-step returns.

Per gradient round, read top to bottom:
  1. sample a batch (s, a, r, s', terminated, k) from the replay   Collector(ReplayBuffer)
  2. y = r + γ^k (1 - terminated) max_a' Q_target(s', a')          QTarget
     (double Q: Q_target(s', argmax_a' Q(s', a')))                  DoubleQTarget
  3. loss = Huber(Q(s, a), y)                                       QLoss
     one optimizer step on Q                                        Update
  4. every `target_sync` rounds: Q_target ← Q                       TargetModelUpdater
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence, Type

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..agents import AgentBase, AgentHead, DiscreteEpsilonRandomSelect, SimpleModelRunner, StepFieldSelector
from ..core import SimpleStep, TrainBatch
from ..learner import Learner, LossCollector, TargetModelUpdater, Update, bootstrap_discount, get_target_model
from ..learner.compiling import CompileArg, compile_options, maybe_compile
from ..learner.wiring import check_agent, check_bootstrap, check_gamma, env_pipeline, make_optimizer
from ..memory import Collector, ReplayBuffer
from ..nets import DQN, DuelingHead
from ..pipes import Pipe, pipe_to_device

__all__ = ["DQN", "DuelingHead", "QTarget", "DoubleQTarget", "QLoss", "DQNAgent", "DQNLearner", "check_discrete",
           "check_q_network"]


class QTarget(Pipe):
    """TD targets y = r + γ^k (1 - terminated) max_a' Q'(s', a') from `target_model`. Pass the online
    network itself for plain DQN without a target network; leave it out to use the target model of
    a `TargetModelUpdater` upstream. `compile=True` (or a dict of `torch.compile` options) runs
    `targets` through `torch.compile`."""

    def __init__(self, source, target_model: Optional[nn.Module] = None, gamma: float = 0.99,
                 compile: CompileArg = False):
        super().__init__(source)
        self.target_model = get_target_model(target_model, source)
        self.gamma = gamma
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


class QLoss(Pipe):
    """losses['q'] = loss_func(Q(s, a), y) with y from the target stage upstream; `compile` as in
    `QTarget`, for `compute_loss`."""
    fills = "q"

    def __init__(self, source, model: nn.Module, loss_func: Callable = F.smooth_l1_loss, compile: CompileArg = False):
        super().__init__(source)
        self.model, self.loss_func = model, loss_func
        self._loss = maybe_compile(self.compute_loss, compile)

    def compute_loss(self, step: SimpleStep, targets: Tensor) -> Tensor:
        q = self.model(step.state).gather(-1, step.action.long().unsqueeze(-1)).squeeze(-1)
        return self.loss_func(q, targets)

    def next(self) -> TrainBatch:
        batch = next(self.source)
        if batch.targets is None:
            raise RuntimeError("QLoss found no TD targets: put QTarget or DoubleQTarget upstream of it.")
        batch.losses[self.fills] = self._loss(batch.step, batch.targets)
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
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(f"{algo} needs a discrete action space, this environment has {space}. "
                         "For continuous actions use DDPG (fastrl-lite train ddpg).")
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
               clip_grad_norm: Optional[float] = 10.0, compile: CompileArg = False) -> Learner:
    """DQN on the env pipeline `dls[0]`, whose agent runs `model` (`DQNAgent(model)`; with
    `model=None`, the network the agent runs). Defaults are rl-zoo's tuned CartPole settings.

    Per gradient round, the pipeline reads like the algorithm: the `Collector` samples a batch from
    a replay of `max_sz` (after `warmup` transitions; `updates` rounds every `train_every` env
    steps), `QTarget` (or `DoubleQTarget` with `double`) computes y, `QLoss` the Huber loss, `Update`
    one optimizer step (gradient norm clipped at `clip_grad_norm`), and, with `target`, the target
    network is synced every `target_sync` rounds. `dueling` asks for a model with a dueling head.
    `nsteps` and `gamma` must match the n-step merging of `dls[0]`. `compile=True` (or a dict of
    `torch.compile` options) compiles the TD-target and loss computations; the learner, its
    checkpoints and the agent keep `model`."""
    compile_options(compile)
    gamma = check_gamma(gamma, "DQNLearner")
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
    device = torch.device(device) if device is not None else torch.device("cpu")
    optimizer = make_optimizer(opt, model.parameters(), lr)
    collector = Collector(dls[0], ReplayBuffer(max_sz, device=device), bs=bs, warmup=warmup, train_every=train_every,
                          updates=updates)
    if target and (not isinstance(target_sync, int) or target_sync < 1):
        raise ValueError(f"target_sync must be >= 1 gradient round, got {target_sync!r}.")
    model.to(device)

    target_model = copy.deepcopy(model).requires_grad_(False) if target else model
    if double:
        pipe = DoubleQTarget(collector, model, target_model, gamma=gamma, compile=compile)
    else:
        pipe = QTarget(collector, target_model, gamma=gamma, compile=compile)
    pipe = QLoss(pipe, model, loss_func, compile=compile)
    pipe = LossCollector(pipe)
    pipe = Update(pipe, {"q": optimizer}, clip_grad_norm=clip_grad_norm)
    if target:
        pipe = TargetModelUpdater(pipe, model, target_sync=target_sync, target_model=target_model)
    pipe_to_device(pipe, device)
    return Learner(model, pipe, dls=dls, batches=batches, logger_bases=logger_bases, name="DQN",
                   collector=collector, stepper=stepper)
