"""DQN (Mnih et al., 2015) and its family: target network, double Q (van Hasselt et al., 2016),
dueling heads (Wang et al., 2016) and n-step returns.

Per gradient round, read top to bottom:
  1. sample a batch (s, a, r, s', terminated, k) from the replay
  2. y = r + γ^k (1 - terminated) max_a' Q_target(s', a')        (double Q: Q_target(s', argmax_a' Q(s', a')))
  3. loss = Huber(Q(s, a), y); one optimizer step on Q
  4. every `target_sync` rounds: Q_target ← Q
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
from ..learner import (BasicOptStepper, Learner, LossCollector, TargetModelUpdater, bootstrap_discount,
                       get_target_model)
from ..learner.compiling import CompileArg, compile_options, maybe_compile
from ..memory import ExperienceReplay
from ..pipes import Pipe, find_pipe, pipe_to_device

__all__ = ["DQN", "DuelingHead", "QTarget", "DoubleQTarget", "QLoss", "DQNAgent", "DQNLearner", "check_discrete"]


class DuelingHead(nn.Module):
    "Q(s, a) = V(s) + A(s, a) - mean_a A(s, a), the advantage mean taken per sample."

    def __init__(self, hidden: int, action_sz: int):
        super().__init__()
        self.value = nn.Linear(hidden, 1)
        self.advantage = nn.Linear(hidden, action_sz)

    def forward(self, x: Tensor) -> Tensor:
        advantage = self.advantage(x)
        return self.value(x) + advantage - advantage.mean(dim=-1, keepdim=True)


class DQN(nn.Module):
    "An MLP from a flat state to one Q-value per action; `dueling=True` swaps in a `DuelingHead`."

    def __init__(self, state_sz: int, action_sz: int, hidden: Sequence[int] = (256, 256),
                 activation_fn: Type[nn.Module] = nn.ReLU, dueling: bool = False):
        super().__init__()
        if state_sz < 1 or action_sz < 1:
            raise ValueError(f"DQN needs state_sz >= 1 and action_sz >= 1, got {state_sz} and {action_sz}.")
        hidden = [hidden] if isinstance(hidden, int) else list(hidden)
        layers, width = [], state_sz
        for h in hidden:
            layers += [nn.Linear(width, h), activation_fn()]
            width = h
        self.body = nn.Sequential(*layers)
        self.dueling = dueling
        self.head = DuelingHead(width, action_sz) if dueling else nn.Linear(width, action_sz)

    def forward(self, state: Tensor) -> Tensor:
        x = state
        for layer in self.body:  # the layers in turn, without nn.Sequential's own call on every forward
            x = layer(x)
        return self.head(x)


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


def DQNAgent(model: nn.Module, logger_bases=None, min_epsilon: float = 0.02, max_epsilon: float = 1.0,
             max_steps: int = 1000, device=None) -> AgentHead:
    """ε-greedy agent over `model`'s Q-values; ε decays over `max_steps` env steps and exploration is
    off while `model` is in eval mode. `logger_bases` is accepted for fastrl compatibility."""
    if device is not None:
        model.to(device)
    pipe = AgentBase(model)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = SimpleModelRunner(pipe, model)
    pipe = DiscreteEpsilonRandomSelect(pipe, min_epsilon=min_epsilon, max_epsilon=max_epsilon, max_steps=max_steps)
    return AgentHead(pipe)


def check_discrete(env_or_space, algo: str = "DQN") -> int:
    "The number of actions of a `Discrete` action space, or an error that points to the right algorithm."
    space = getattr(env_or_space, "single_action_space", getattr(env_or_space, "action_space", env_or_space))
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(f"{algo} needs a discrete action space, this environment has {space}. "
                         "For continuous actions use DDPG (fastrl-lite train ddpg).")
    return int(space.n)


def DQNLearner(model: Optional[nn.Module], dls: Sequence, logger_bases=None, loss_func: Callable = F.smooth_l1_loss,
               opt: Type[torch.optim.Optimizer] = torch.optim.Adam, lr: float = 2.3e-3, bs: int = 64,
               max_sz: int = 100_000, nsteps: int = 1, device=None, batches: int = 1280, warmup: int = 1000,
               train_every: int = 256, updates: int = 128, gamma: float = 0.99, target: bool = True,
               target_sync: int = 128, double: bool = False, dueling: bool = False, hidden: Sequence[int] = (256, 256),
               clip_grad_norm: Optional[float] = 10.0, compile: CompileArg = False) -> Learner:
    """DQN on the env pipeline `dls[0]` (whose agent should run `model`). Defaults are rl-zoo's tuned
    CartPole settings. Switches: `target` (a target network synced every `target_sync` gradient
    rounds), `double` (double-Q targets), `dueling` (builds a dueling `DQN` when `model` is None),
    `nsteps` (must match the n-step merging of `dls[0]`). With `model=None` a `DQN(hidden, dueling)`
    is built from the env's spaces. `compile=True` (or a dict of `torch.compile` options) compiles
    the TD-target and loss computations; the learner, its checkpoints and the agent keep `model`."""
    compile_options(compile)
    if not dls:
        raise ValueError("DQNLearner needs dls=[train_pipe] built with GymDataPipe/GymTransformBlock.")
    stepper = find_pipe(dls[0], lambda n: hasattr(n, "env_steps") and hasattr(n, "env"))
    n_actions = check_discrete(stepper.env)
    if model is None:
        state_sz = int(torch.Size(stepper.env.single_observation_space.shape).numel())
        model = DQN(state_sz, n_actions, hidden=hidden, dueling=dueling)
    elif dueling and not getattr(model, "dueling", False):
        raise ValueError("dueling=True but the model has no dueling head: build it as DQN(..., dueling=True) "
                         "or pass model=None.")
    if nsteps < 1:
        raise ValueError(f"nsteps must be >= 1, got {nsteps}.")
    from ..envs import NStepper
    nstepper = find_pipe(dls[0], NStepper, required=False)
    if (nstepper.n if nstepper is not None else 1) != nsteps:
        raise ValueError(f"DQNLearner(nsteps={nsteps}) but the env pipeline merges "
                         f"{nstepper.n if nstepper else 1}-step transitions; build it with "
                         f"GymDataPipe(..., nsteps={nsteps}, firstlast=True).")
    if double and not target:
        raise ValueError("double=True needs a target network: keep target=True.")
    if stepper.agent is None:
        raise ValueError("dls[0] has no agent: build it with GymDataPipe(..., agent=DQNAgent(model)).")
    device = torch.device(device) if device is not None else torch.device("cpu")
    model.to(device)

    pipe = ExperienceReplay(dls[0], bs=bs, max_sz=max_sz, warmup=warmup, train_every=train_every,
                            updates=updates, device=device)
    target_model = copy.deepcopy(model).requires_grad_(False) if target else model
    if double:
        pipe = DoubleQTarget(pipe, model, target_model, gamma=gamma, compile=compile)
    else:
        pipe = QTarget(pipe, target_model, gamma=gamma, compile=compile)
    pipe = QLoss(pipe, model, loss_func, compile=compile)
    pipe = LossCollector(pipe)
    # Adam/AdamW update every parameter in one fused kernel (measured ~3x faster per step on the CPU
    # than the default per-parameter loop for the [256, 256] MLP); same update rule, last-bit rounding.
    fused = {"fused": True} if opt in (torch.optim.Adam, torch.optim.AdamW) else {}
    pipe = BasicOptStepper(pipe, model, lr=lr, opt=opt, loss_key="q", clip_grad_norm=clip_grad_norm, **fused)
    if target:
        pipe = TargetModelUpdater(pipe, model, target_sync=target_sync, target_model=target_model)
    pipe_to_device(pipe, device)
    return Learner(model, pipe, dls=dls, batches=batches, logger_bases=logger_bases, name="DQN")
