"""Agents are pipes too: `AgentBase` -> field selector -> model runner -> exploration -> converters
-> `AgentHead`. Calling the head with steps pushes them in at the base and pulls actions out."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..core import SimpleStep, check_real, check_whole
from ..pipes import Pipe, find_pipe, find_pipes

__all__ = ["AgentBase", "AgentHead", "StepFieldSelector", "SimpleModelRunner", "ArgMaxFeed", "EpsilonSchedule",
           "DiscreteEpsilonRandomSelect", "ActionClip", "ActionUnbatcher"]


class AgentBase(Pipe):
    "The root of an agent pipeline: yields whatever steps the `AgentHead` was last called with."

    def __init__(self, model: Optional[nn.Module] = None):
        super().__init__(None)
        self.model = model
        self._steps = None

    def feed(self, steps):
        self._steps = steps

    def next(self):
        if self._steps is None:
            raise StopIteration
        steps, self._steps = self._steps, None
        return steps


class StepFieldSelector(Pipe):
    """Takes one field out of the steps. A `SimpleStep` is already a batch; a list of unbatched
    steps (fastrl's convention, `agent([step])`) is stacked into one.

    The field is `state`: the environment stepper hands the agent the observation it must act on,
    which after an automatic reset is the new episode's first observation, not the old `next_state`.
    """

    def __init__(self, source, field: str = "state"):
        super().__init__(source)
        self.field = field

    def next(self) -> Tensor:
        steps = next(self.source)
        if isinstance(steps, SimpleStep):
            return getattr(steps, self.field)
        return torch.stack([getattr(s, self.field) for s in steps])


class SimpleModelRunner(Pipe):
    """Runs the model without gradients on whatever arrives, as float32 on the model's device.
    Batch-norm layers act on their running statistics (as in eval mode) while the model trains:
    a step of one env has no batch to normalise over, and acting leaves the statistics to training."""

    def __init__(self, source, model: nn.Module):
        super().__init__(source)
        self.model = model if model is not None else getattr(source, "model", None) if isinstance(
            source, SimpleModelRunner) else None
        # Module.to() moves parameters in place, so one parameter tells the model's device for good;
        # walking model.parameters() on every env step would cost more than the forward of a small MLP
        self._probe = next(model.parameters(), None)
        self._norms = tuple(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))

    def next(self) -> Tensor:
        x = next(self.source)
        device = self._probe.device if self._probe is not None else x.device
        x = x.to(device, torch.float32, non_blocking=True)
        with torch.no_grad():
            if self._norms:
                return self._run_on_running_stats(x)
            return self.model(x)

    def _run_on_running_stats(self, x: Tensor) -> Tensor:
        training = [m.training for m in self._norms]
        try:
            for m in self._norms:
                m.train(False)
            return self.model(x)
        finally:
            for m, was in zip(self._norms, training):
                m.train(was)


class ArgMaxFeed(Pipe):
    "Greedy discrete actions: the argmax over the last dimension (Q-values in, actions out)."

    def next(self) -> Tensor:
        return next(self.source).argmax(dim=-1)


class EpsilonSchedule(Pipe):
    """The base of exploration stages: ε falls linearly from `max_epsilon` to `min_epsilon` over
    `max_steps` **env steps** (each row of a batch is one env step), counted only while `model` (the
    network the agent runs) trains unless `decrement_on_val`. While `model` is in eval mode a
    subclass acts greedily unless `explore_on_val`. `model` defaults to the model of the stage's
    source when that is a model runner (`SimpleModelRunner`); with none the stage always explores."""
    state_attrs = ("steps",)

    def __init__(self, source, min_epsilon: float = 0.2, max_epsilon: float = 1.0, max_steps: int = 100,
                 decrement_on_val: bool = False, explore_on_val: bool = False, model: Optional[nn.Module] = None):
        super().__init__(source)
        self.model = model if model is not None else getattr(source, "model", None) if isinstance(
            source, SimpleModelRunner) else None
        min_epsilon, max_epsilon = (check_real(e, name, 0) for e, name in ((min_epsilon, "min_epsilon"),
                                                                           (max_epsilon, "max_epsilon")))
        if not min_epsilon <= max_epsilon:
            raise ValueError(f"Need 0 <= min_epsilon ({min_epsilon}) <= max_epsilon ({max_epsilon}) < inf.")
        max_steps = check_whole(max_steps, "max_steps")
        self.min_epsilon, self.max_epsilon, self.max_steps = min_epsilon, max_epsilon, max_steps
        self.decrement_on_val, self.explore_on_val = decrement_on_val, explore_on_val
        self.steps = 0

    @property
    def epsilon(self) -> float:
        if self.steps >= self.max_steps:
            return self.min_epsilon
        return self.max_epsilon - (self.max_epsilon - self.min_epsilon) * self.steps / self.max_steps

    def advance(self, env_steps: int) -> Optional[float]:
        """Count `env_steps` on the schedule; returns the ε to explore with, or None to act greedily."""
        training = self.model is None or self.model.training
        epsilon = self.epsilon if training or self.explore_on_val else None
        if training or self.decrement_on_val:
            self.steps += env_steps
        if epsilon is not None:
            self.gauge("epsilon", epsilon)
        return epsilon


class DiscreteEpsilonRandomSelect(EpsilonSchedule):
    "ε-greedy on Q-values: with probability ε a uniformly random action, else the argmax."

    def __init__(self, source, min_epsilon: float = 0.2, max_epsilon: float = 1.0, max_steps: int = 100,
                 decrement_on_val: bool = False, explore_on_val: bool = False, model: Optional[nn.Module] = None):
        if max_epsilon > 1:
            raise ValueError(f"ε is a probability: need max_epsilon <= 1, got {max_epsilon}.")
        super().__init__(source, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val, model)

    def next(self) -> Tensor:
        q = next(self.source)
        greedy = q.argmax(dim=-1)
        epsilon = self.advance(greedy.shape[0])
        if epsilon is None:
            return greedy
        explore = torch.rand(greedy.shape, device=q.device) < epsilon
        random_actions = torch.randint(q.shape[-1], greedy.shape, device=q.device)
        return torch.where(explore, random_actions, greedy)


class ActionClip(Pipe):
    "Restricts actions to [clip_min, clip_max] with `torch.clip`."

    def __init__(self, source, clip_min=-1, clip_max=1):
        super().__init__(source)
        self.clip_min, self.clip_max = clip_min, clip_max

    def next(self) -> Tensor:
        return torch.clip(next(self.source), self.clip_min, self.clip_max)


class ActionUnbatcher(Pipe):
    "Removes the batch dim from a batch of one action."

    def next(self) -> Tensor:
        a = next(self.source)
        return a.squeeze(0) if a.dim() > 0 and a.shape[0] == 1 else a


class AgentHead(Pipe):
    """The callable end of an agent pipeline: `agent(steps)` returns the actions for those steps, or
    a dict with an `"action"` entry and the agent's extras (a log-prob, a value), which the stepper
    carries into the step as fields of the same names.

    `model` is the network the agent runs (put it in eval mode for greedy actions); by default the
    `AgentBase`'s. `to_env` maps actions onto what the env takes, once, at the env boundary (e.g. an
    `ActionScaler` from a tanh policy's [-1, 1] onto the env's bounds); the steps keep the agent's
    own actions, so every network sees actions in one unit.

    The stepper calls `episode_ended(done)` with a [num_envs] bool mask when episodes end; it is
    passed on to the stages of the agent's pipeline that have an `episode_ended` method (e.g.
    `OrnsteinUhlenbeck`, which starts a fresh noise process for each new episode)."""

    def __init__(self, source, model: Optional[nn.Module] = None, to_env: Optional[Callable] = None):
        super().__init__(source)
        self.base = find_pipe(source, AgentBase)
        self.model = model if model is not None else self.base.model
        self.to_env = to_env
        self._episode_listeners = [n for n in find_pipes(source, lambda n: callable(getattr(n, "episode_ended", None)))
                                   if n is not self]

    def episode_ended(self, done: Tensor):
        "Tell the pipeline's stages which envs (a [num_envs] bool mask) just finished an episode."
        for stage in self._episode_listeners:
            stage.episode_ended(done)

    def __call__(self, steps: Union[SimpleStep, Sequence[SimpleStep]]):
        self.base.feed(steps)
        return next(self)
