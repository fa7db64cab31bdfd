"""Pieces every continuous-control algorithm (DDPG, TD3, SAC) shares: exploration noise, a random
start, the action bounds check, scaling the policy's [-1, 1] actions onto the env's bounds at the
env boundary, and the deterministic policy's agent."""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from ..pipes import Pipe
from .core import (ActionClip, AgentBase, AgentHead, EpsilonSchedule, SimpleModelRunner, StepFieldSelector)

__all__ = ["OrnsteinUhlenbeck", "GaussianNoise", "action_noise", "ExplorationComparisonLogger", "RandomStartRunner",
           "ActionScaler", "check_continuous", "DeterministicAgent"]


# Exploration: a_t = μ(s_t) + ε N_t, in the policy's units ---------------------------------------

class _EpsilonNoise(EpsilonSchedule):
    """Adds ε-scaled noise to the actions from its source: a = μ(s) + ε N, N drawn by the subclass's
    `noise(action)`, with ε on the schedule of `EpsilonSchedule`. While the agent's model is in eval
    mode (`model`, the network the agent runs) the actions pass through untouched and ε holds, unless `explore_on_val` / `decrement_on_val`.
    With `ret_original` it yields (noisy action, original action) pairs, for
    `ExplorationComparisonLogger`."""

    def __init__(self, source, action_sz: Optional[int] = None, min_epsilon: float = 0.2, max_epsilon: float = 1.0,
                 max_steps: int = 100, decrement_on_val: bool = False, explore_on_val: bool = False,
                 ret_original: bool = False, model: Optional[nn.Module] = None):
        super().__init__(source, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val, model)
        self.action_sz, self.ret_original = action_sz, ret_original

    def next(self):
        action = next(self.source)
        if self.action_sz is not None and action.shape[-1] != self.action_sz:
            raise ValueError(f"{type(self).__name__}(action_sz={self.action_sz}) got actions of size "
                             f"{action.shape[-1]}; make action_sz match the actor's output.")
        epsilon = self.advance(action.shape[0] if action.dim() > 1 else 1)
        explored = action if epsilon is None else action + epsilon * self.noise(action)
        return (explored, action) if self.ret_original else explored


class OrnsteinUhlenbeck(_EpsilonNoise):
    """Used for exploration in continuous action domains via temporally correlated noise, the
    paper's choice for "physical control problems with inertia":

        x ← x + θ (μ - x) dt + σ √dt 𝒩(0, 1),   a = μ(s) + ε x

    One process runs per row of the action batch (per env), and a row starts afresh at μ when its
    env's episode ends (`episode_ended`, called by the stepper through the agent), as the paper
    initialises a new random process for each episode. θ=0.15, σ=0.2 are the paper's values."""

    def __init__(self, source, action_sz: Optional[int] = None, mu: float = 0.0, theta: float = 0.15,
                 sigma: float = 0.2, dt: float = 1e-2, min_epsilon: float = 0.2, max_epsilon: float = 1.0,
                 max_steps: int = 100, decrement_on_val: bool = False, explore_on_val: bool = False,
                 ret_original: bool = False, model: Optional[nn.Module] = None):
        super().__init__(source, action_sz, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val,
                         ret_original, model)
        if not all(math.isfinite(v) for v in (mu, theta, sigma, dt)) or theta < 0 or sigma < 0 or dt <= 0:
            raise ValueError(f"Need finite numbers with theta >= 0, sigma >= 0 and dt > 0; got mu={mu}, theta={theta}, "
                             f"sigma={sigma}, dt={dt}.")
        self.mu, self.theta, self.sigma, self.dt = mu, theta, sigma, dt
        self.x: Optional[Tensor] = None

    def noise(self, action: Tensor) -> Tensor:
        if self.x is None or self.x.shape != action.shape or self.x.device != action.device:
            self.x = torch.full_like(action, self.mu)
        self.x += self.theta * (self.mu - self.x) * self.dt + self.sigma * self.dt ** 0.5 * torch.randn_like(action)
        return self.x

    def episode_ended(self, done: Tensor):
        "Restart the processes of the envs in `done` (a [num_envs] bool mask) at μ."
        if self.x is not None and self.x.dim() > 1 and self.x.shape[0] == done.shape[0]:
            # masked_fill_, not boolean indexing: no host sync when x lives on a GPU
            self.x.masked_fill_(done.to(self.x.device).view(-1, *[1] * (self.x.dim() - 1)), self.mu)

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self.x = initial_state["x"]

    def get_state(self):
        "The process value x is part of the state: resuming continues the same correlated noise."
        return {**super().get_state(), "x": self.x}


class GaussianNoise(_EpsilonNoise):
    """Uncorrelated exploration a = μ(s) + ε σ 𝒩(0, 1), the choice of TD3 and of rl-zoo's tuned DDPG.
    The actor's actions live in [-1, 1], so σ is a fraction of half the action range. ε stays at 1
    unless a decay is asked for."""

    def __init__(self, source, action_sz: Optional[int] = None, sigma: float = 0.1, min_epsilon: float = 1.0,
                 max_epsilon: float = 1.0, max_steps: int = 100, decrement_on_val: bool = False,
                 explore_on_val: bool = False, ret_original: bool = False, model: Optional[nn.Module] = None):
        super().__init__(source, action_sz, min_epsilon, max_epsilon, max_steps, decrement_on_val, explore_on_val,
                         ret_original, model)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite number >= 0, got {sigma}.")
        self.sigma = sigma

    def noise(self, action: Tensor) -> Tensor:
        return self.sigma * torch.randn_like(action)


NOISE_TYPES = ("normal", "ornstein-uhlenbeck")


def action_noise(noise_type: str = "normal", sigma: float = 0.1) -> Callable:
    """The exploration stage named as Stable-Baselines3 and rl-zoo name it (`noise_type`, `noise_std`):
    'normal' is `GaussianNoise`, 'ornstein-uhlenbeck' `OrnsteinUhlenbeck` (θ 0.15, dt 0.01), both of
    constant scale σ. Returns the builder `DeterministicAgent(exploration=...)` takes."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type={noise_type!r}: use one of {', '.join(map(repr, NOISE_TYPES))}.")
    noise = GaussianNoise if noise_type == "normal" else OrnsteinUhlenbeck
    noise(None, sigma=sigma)  # refuses a bad σ now, not at the first env step
    return partial(noise, sigma=sigma, min_epsilon=1.0, max_epsilon=1.0)


class _Rows:
    "A growable 2-d tensor: rows are written in place, so no Python list of tensors piles up."

    def __init__(self):
        self.data: Optional[Tensor] = None
        self.n = 0

    def append(self, rows: Tensor):
        rows = rows.detach().reshape(-1, rows.shape[-1] if rows.dim() else 1)
        if self.data is None:
            self.data = torch.empty(max(1024, len(rows)), rows.shape[1], dtype=rows.dtype, device=rows.device)
        while self.n + len(rows) > len(self.data):
            self.data = torch.cat([self.data, torch.empty_like(self.data)])
        self.data[self.n:self.n + len(rows)] = rows
        self.n += len(rows)

    def values(self) -> Tensor:
        return self.data[:self.n] if self.data is not None else torch.empty(0, 1)


class ExplorationComparisonLogger(Pipe):
    """Allows for quickly doing a "what if" on exploration methods by comparing the actions selected
    via exploration with the ones chosen by the model. Its source must yield (explored, original)
    pairs (an exploration stage with `ret_original=True`); it passes the explored action on and
    `show()` plots both against the step."""

    def __init__(self, source):
        super().__init__(source)
        self.explored, self.original = _Rows(), _Rows()

    def next(self) -> Tensor:
        item = next(self.source)
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError("ExplorationComparisonLogger needs (explored, original) action pairs: build the "
                            "exploration stage with ret_original=True.")
        explored, original = item
        self.explored.append(explored)
        self.original.append(original)
        return explored

    def show(self, title: str = "Explored vs original actions", ax=None):
        "One line per action dimension for the explored actions, dashed for the model's originals."
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        explored, original = self.explored.values().float().cpu(), self.original.values().float().cpu()
        for d in range(explored.shape[1]):
            line, = ax.plot(explored[:, d].numpy(), label=f"explored[{d}]")
            ax.plot(original[:, d].numpy(), "--", color=line.get_color(), label=f"original[{d}]")
        ax.set(title=title, xlabel="step", ylabel="action")
        ax.legend()
        return ax


# Bounds -------------------------------------------------------------------------------------------

def check_continuous(env_or_space, algo: str = "DDPG") -> gym.spaces.Box:
    "The `Box` action space of an env, or an error that says what to use instead."
    space = getattr(env_or_space, "single_action_space", getattr(env_or_space, "action_space", env_or_space))
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"{algo} needs a continuous (Box) action space, this environment has {space}. "
                         "For discrete actions use DQN (fastrl-lite train dqn) or PPO (fastrl-lite train ppo).")
    if not (torch.isfinite(torch.as_tensor(space.low)).all() and torch.isfinite(torch.as_tensor(space.high)).all()):
        raise ValueError(f"{algo}'s actor is tanh-bounded, so it needs finite action bounds; this environment has "
                         f"low={space.low}, high={space.high}. Wrap it to give it the bounds its actions should "
                         "keep to: gymnasium.wrappers.TransformAction(env, lambda a: a, gymnasium.spaces.Box(low, "
                         "high)) (ClipAction keeps an infinite bound infinite, RescaleAction refuses one).")
    if len(space.shape) != 1:
        raise ValueError(f"{algo}'s actor outputs one vector of actions, but this environment's actions have shape "
                         f"{space.shape}. Wrap it so that it takes a vector: gymnasium.wrappers.TransformAction(env, "
                         "lambda a: a.reshape(shape), gymnasium.spaces.Box(low.ravel(), high.ravel())).")
    return space


def float32_bounds(low, high) -> Tuple[Tensor, Tensor]:
    """A `Box`'s bounds as float32 tensors rounded inwards: every float32 action within them lies
    within the space's own bounds, whatever their dtype (0.3 as a float32 is 0.30000001 > 0.3)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    low32, high32 = low.astype(np.float32), high.astype(np.float32)
    low32 = np.where(low32 < low, np.nextafter(low32, np.float32(np.inf)), low32).astype(np.float32)
    high32 = np.where(high32 > high, np.nextafter(high32, np.float32(-np.inf)), high32).astype(np.float32)
    return torch.from_numpy(low32), torch.from_numpy(high32)


class ActionScaler:
    """Maps actions from a tanh policy's [-1, 1] onto a `Box`'s bounds, a = low + (u + 1)(high - low)/2,
    at the env boundary (`AgentHead(to_env=ActionScaler())`): the env receives scaled actions while
    the steps, the replay and every network keep the policy's [-1, 1].

    Built without bounds it takes those of the env that `GymStepper` binds it to (`bind(space)`);
    built with `low`/`high` (or from a space with `ActionScaler.of(space)`) it keeps them."""

    def __init__(self, low=None, high=None):
        if (low is None) != (high is None):
            raise ValueError("Give both low and high, or neither (to take the env's bounds).")
        self.low = self.high = None
        if low is not None:
            low, high = (x.numpy(force=True) if isinstance(x, Tensor) else x for x in (low, high))
            if not (np.isfinite(low).all() and np.isfinite(high).all()):
                raise ValueError(f"Action bounds must be finite to scale a bounded actor, got low={low}, high={high}; "
                                 "give the env finite bounds first: gymnasium.wrappers.TransformAction(env, lambda a: "
                                 "a, gymnasium.spaces.Box(low, high)).")
            if not (np.asarray(low) < np.asarray(high)).all():
                raise ValueError(f"Need low < high in every action dimension, got low={low}, high={high}.")
            self.low, self.high = float32_bounds(low, high)
            if not (self.low < self.high).all():
                raise ValueError(f"The action bounds low={low}, high={high} are too close to tell apart in float32, "
                                 "the precision actions are computed in; wrap the env with "
                                 "gymnasium.wrappers.RescaleAction(env, -1, 1) so the agent acts in [-1, 1].")
            self._half = (self.high - self.low) * 0.5  # exact: low + (u + 1) * half rounds as SB3's unscaling does

    @classmethod
    def of(cls, space: gym.spaces.Box, algo: str = "This agent") -> "ActionScaler":
        "A scaler onto the bounds of `space` (checked to be a `Box` with finite bounds)."
        space = check_continuous(space, algo)
        return cls(space.low, space.high)

    def bind(self, space: gym.spaces.Space) -> "ActionScaler":
        """The scaler to use for an env with action space `space`: this one when its bounds are set
        and fit the space's shape, else one onto the space's bounds."""
        if self.low is None:
            return ActionScaler.of(space)
        shape = tuple(getattr(space, "shape", ()) or ())
        if torch.broadcast_shapes(self.low.shape, shape) != shape:
            raise ValueError(f"The agent scales actions onto bounds of shape {tuple(self.low.shape)}, but the env's "
                             f"actions have shape {shape}.")
        return self

    def __call__(self, action: Tensor) -> Tensor:
        if self.low is None:
            raise RuntimeError("This ActionScaler has no bounds yet: bind it to an env's action space first.")
        if self._half.device != action.device:
            self.low, self.high, self._half = (t.to(action.device) for t in (self.low, self.high, self._half))
        # the clamp keeps the rounding of the last bit from taking an action past a bound
        return torch.clamp(self.low + (action + 1) * self._half, self.low, self.high)

    def __repr__(self):
        if self.low is None:
            return "ActionScaler(the env's bounds)"
        return f"ActionScaler(low={self.low.tolist()}, high={self.high.tolist()})"


# A random start -------------------------------------------------------------------------------------

class RandomStartRunner(SimpleModelRunner):
    """Runs the actor, except for the first `random_steps` env steps while it trains: then it returns
    uniform random actions in [-1, 1] without running the network, so the replay starts out covering
    the whole action space instead of the untrained actor's near-zero outputs (SB3's and rl-zoo's
    `learning_starts`, the `start_timesteps` of Fujimoto et al.'s TD3)."""
    state_attrs = ("steps",)

    def __init__(self, source, model: nn.Module, random_steps: int = 0, action_sz: Optional[int] = None):
        super().__init__(source, model)
        action_sz = action_sz if action_sz is not None else getattr(model, "action_sz", None)
        if random_steps < 0 or (random_steps > 0 and action_sz is None):
            raise ValueError(f"random_steps must be >= 0 and needs the action size (model.action_sz or action_sz=); "
                             f"got random_steps={random_steps}, action_sz={action_sz}.")
        self.random_steps, self.action_sz = random_steps, action_sz
        self.steps = 0

    def next(self) -> Tensor:
        if self.steps >= self.random_steps or not self.model.training:
            return super().next()
        n = next(self.source).shape[0]
        self.steps += n
        return torch.rand(n, self.action_sz, device=next(self.model.parameters()).device) * 2 - 1


# The agent ----------------------------------------------------------------------------------------

def DeterministicAgent(model: nn.Module, exploration: Optional[Callable] = None, random_steps: int = 0,
                       action_space: Optional[gym.spaces.Box] = None,
                       augmentations: Optional[Sequence[Callable]] = None) -> AgentHead:
    """A deterministic policy's agent (DDPG, TD3): μ(s), plus the noise stage `exploration` builds
    from its source while `model` trains, clipped to [-1, 1], the unit the replay and the networks
    use. The env receives the actions scaled onto its bounds by the agent's `to_env` (an
    `ActionScaler`): those of `action_space` when given, else those of the env the agent steps.

    The noise stage is handed `model`, so it stops exploring in eval mode. For the first
    `random_steps` env steps the policy is replaced by uniform random actions (`RandomStartRunner`),
    the noise still added. Each of `augmentations` receives the agent pipeline before its head and
    returns the pipeline to use."""
    to_env = ActionScaler.of(action_space, "A deterministic-policy agent") if action_space is not None \
        else ActionScaler()
    pipe = AgentBase(model)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = RandomStartRunner(pipe, model, random_steps=random_steps) if random_steps else SimpleModelRunner(pipe, model)
    if exploration is not None:
        pipe = exploration(pipe)
        if isinstance(pipe, EpsilonSchedule) and pipe.model is None:
            pipe.model = model  # the factory hands the noise stage the network whose mode it follows
    pipe = ActionClip(pipe, -1, 1)
    for fn in augmentations or ():
        pipe = fn(pipe)
    return AgentHead(pipe, model=model, to_env=to_env)
