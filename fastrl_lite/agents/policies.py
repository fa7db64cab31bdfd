"""Stochastic policies for on-policy methods (PPO): a categorical policy for `Discrete` actions and a
diagonal Gaussian with a state-independent log-std for `Box` actions, over shared or separate
actor/critic MLPs with orthogonal initialisation, and the agent that samples from them.

The log-probabilities and entropies are written out (not `torch.distributions`), the same maths
without the distribution objects' per-call checks:
  categorical  log π(a|s) = log_softmax(logits)[a]            H = −Σ_a π(a|s) log π(a|s)
  Gaussian     log π(a|s) = Σ_i −(a_i − μ_i)²/(2σ_i²) − log σ_i − ½ log 2π
               H = Σ_i ½ + ½ log 2π + log σ_i
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Type

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from ..core import register_field
from ..nets import as_float, through, watched
from ..pipes import Pipe
from .continuous import float32_bounds
from .core import AgentBase, AgentHead, StepFieldSelector

__all__ = ["ActorCriticPolicy", "PolicySampler", "ClipToBounds", "PPOAgent", "layer_init", "gaussian_log_prob",
           "gaussian_entropy"]

# an agent's extras: the log-probability of the action taken and the critic's value of the state
register_field("log_prob", nstep="first")
register_field("value", nstep="first")

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    "Orthogonal weights with `gain`, constant bias: the usual PPO initialisation."
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def _mlp(sizes: Sequence[int], activation: Type[nn.Module], ortho_init: bool) -> nn.Sequential:
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        linear = nn.Linear(a, b)
        layers += [layer_init(linear) if ortho_init else linear, activation()]
    return nn.Sequential(*layers)


def gaussian_log_prob(action: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    "log N(action; mean, exp(log_std)²), summed over the action dimensions."
    z = (action - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - _HALF_LOG_2PI).sum(-1)


def gaussian_entropy(log_std: Tensor) -> Tensor:
    "The entropy of a diagonal Gaussian, summed over the action dimensions."
    return (0.5 + _HALF_LOG_2PI + log_std).sum(-1)


class ActorCriticPolicy(nn.Module):
    """π(a|s) and V(s) for one env's observation and action spaces.

    `net_arch` are the hidden layers of the actor and of the critic (SB3's default: two of 64 with
    tanh); `shared=True` gives both heads one body instead of a body each. With `ortho_init` the
    hidden layers are orthogonal with gain √2, the action head 0.01 and the value head 1, biases 0
    (as in SB3 and CleanRL). For `Box` actions the policy is N(μ(s), diag σ²) with
    σ = exp(`log_std`), one learnt parameter per action dimension initialised to `log_std_init`;
    the sampled action is stored unclipped and `ClipToBounds` clips it where the env receives it.
    For `Discrete` actions it is a categorical over the action head's logits.

    `act(state)` samples (or, with `deterministic`, takes the mode); `evaluate(state, action)` gives
    the log-prob, entropy and value the PPO loss needs; `value(state)` the critic alone."""

    def __init__(self, observation_space: gym.spaces.Space, action_space: gym.spaces.Space,
                 net_arch: Sequence[int] = (64, 64), activation_fn: Type[nn.Module] = nn.Tanh, shared: bool = False,
                 ortho_init: bool = True, log_std_init: float = 0.0):
        super().__init__()
        if not isinstance(observation_space, gym.spaces.Box) or observation_space.shape is None:
            raise ValueError(f"ActorCriticPolicy takes Box observations (vectors), got {observation_space}.")
        if isinstance(action_space, gym.spaces.Discrete):
            self.continuous, out = False, int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            self.continuous, out = True, int(action_space.shape[0])
        else:
            raise ValueError(f"ActorCriticPolicy needs a Discrete or a one-dimensional Box action space, got "
                             f"{action_space}.")
        self.state_sz = int(np.prod(observation_space.shape))
        self.action_sz, self.shared = out, shared
        self.net_arch = tuple(int(h) for h in net_arch)
        if not self.net_arch or min(self.net_arch) < 1:
            raise ValueError(f"net_arch must list hidden layer widths >= 1, got {tuple(net_arch)}.")
        sizes = (self.state_sz, *self.net_arch)
        self.actor_body = _mlp(sizes, activation_fn, ortho_init)
        self.critic_body = self.actor_body if shared else _mlp(sizes, activation_fn, ortho_init)
        self.action_head = nn.Linear(self.net_arch[-1], out)
        self.value_head = nn.Linear(self.net_arch[-1], 1)
        if ortho_init:
            layer_init(self.action_head, 0.01)
            layer_init(self.value_head, 1.0)
        if not math.isfinite(log_std_init):
            raise ValueError(f"log_std_init must be a finite number (0.0 is σ = 1), got {log_std_init}.")
        self.log_std = nn.Parameter(torch.full((out,), float(log_std_init))) if self.continuous else None
        # plain tuples (the modules stay registered once, above) for nets.through
        self._actor, self._critic = (self.actor_body, self.action_head), (self.critic_body, self.value_head)
        self._watched = watched(self._actor + self._critic)

    def _heads(self, state: Tensor) -> Tuple[Tensor, Tensor]:
        "The action head's output (logits or means) and V(s), [B]."
        state = as_float(state).reshape(state.shape[0], -1)
        if self.shared:
            features = through(self._actor[:1], state, self._watched)
            return (through(self._actor[1:], features, self._watched),
                    through(self._critic[1:], features, self._watched).squeeze(-1))
        return through(self._actor, state, self._watched), through(self._critic, state, self._watched).squeeze(-1)

    def value(self, state: Tensor) -> Tensor:
        "V(s), [B]."
        return through(self._critic, as_float(state).reshape(state.shape[0], -1), self._watched).squeeze(-1)

    def forward(self, state: Tensor) -> Tensor:
        "The greedy action: the most likely action, or the Gaussian's mean."
        out = through(self._actor, as_float(state).reshape(state.shape[0], -1), self._watched)
        return out if self.continuous else out.argmax(-1)

    def log_prob_entropy(self, out: Tensor, action: Tensor, entropy: bool = True
                         ) -> Tuple[Tensor, Optional[Tensor]]:
        """log π(action|s) and (unless `entropy=False`) the entropy of π(·|s), both [B], from the
        action head's output `out`."""
        if self.continuous:
            log_std = self.log_std.expand_as(out)
            return gaussian_log_prob(action, out, log_std), gaussian_entropy(log_std) if entropy else None
        log_p = out.log_softmax(-1)
        log_prob = log_p.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        return log_prob, -(log_p.exp() * log_p).sum(-1) if entropy else None

    def evaluate(self, state: Tensor, action: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        "(log π(a|s), entropy of π(·|s), V(s)), each [B]: what the PPO loss differentiates."
        out, value = self._heads(state)
        log_prob, entropy = self.log_prob_entropy(out, action)
        return log_prob, entropy, value

    def act(self, state: Tensor, deterministic: bool = False) -> Dict[str, Tensor]:
        "A sampled action (the mode with `deterministic`) with its log-prob and V(s)."
        out, value = self._heads(state)
        if self.continuous:
            action = out if deterministic else out + torch.randn_like(out) * self.log_std.exp()
        else:
            action = out.argmax(-1) if deterministic else torch.multinomial(out.softmax(-1), 1).squeeze(-1)
        log_prob, _ = self.log_prob_entropy(out, action, entropy=False)
        return {"action": action, "log_prob": log_prob, "value": value}


class PolicySampler(Pipe):
    """Runs `policy` without gradients on the observations from its source: while the policy trains
    it returns {"action", "log_prob", "value"} (a sampled action and the extras the rollout keeps),
    in eval mode only the greedy action. `normalize` (an `ObservationNormalizer`'s `normalize`)
    is applied to the observations first, so the policy sees what the env pipeline stores."""

    def __init__(self, source, policy: ActorCriticPolicy, normalize=None):
        super().__init__(source)
        self.policy, self.normalize = policy, normalize
        self._probe = next(policy.parameters())

    def next(self):
        state = next(self.source).to(self._probe.device, torch.float32, non_blocking=True)
        if self.normalize is not None:
            state = self.normalize(state)
        with torch.no_grad():
            if not self.policy.training:
                return self.policy(state)
            return self.policy.act(state)


class ClipToBounds:
    """Clips a Gaussian policy's actions to a `Box`'s bounds where the env receives them
    (`AgentHead(to_env=ClipToBounds())`); the rollout keeps the unclipped action, whose
    log-probability the policy gave. Built without bounds it takes those of the env it is bound to."""

    def __init__(self, low=None, high=None):
        if (low is None) != (high is None):
            raise ValueError("Give both low and high, or neither (to take the env's bounds).")
        self.low = self.high = None
        if low is not None:  # rounded inwards, so a clipped float32 action lies within float64 bounds too
            self.low, self.high = float32_bounds(*(x.numpy(force=True) if isinstance(x, Tensor) else x
                                                   for x in (low, high)))

    def bind(self, space: gym.spaces.Space) -> "ClipToBounds":
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"The agent's policy samples continuous (Box) actions, which ClipToBounds clips to the "
                             f"env's bounds, but this env's actions are {space}: build the policy from this env's "
                             "spaces, ActorCriticPolicy(env.single_observation_space, env.single_action_space).")
        if self.low is not None:
            return self
        return ClipToBounds(space.low, space.high)

    def __call__(self, action: Tensor) -> Tensor:
        if self.low is None:
            raise RuntimeError("This ClipToBounds has no bounds yet: bind it to an env's action space first.")
        return torch.clamp(action, self.low, self.high)


def PPOAgent(policy: ActorCriticPolicy, obs_normalizer=None) -> AgentHead:
    """The agent of an on-policy learner: samples from `policy` while it trains (the steps carry
    `log_prob` and `value`), acts greedily in eval mode. Gaussian actions are clipped to the env's
    bounds at the env boundary. `obs_normalizer` (an `ObservationNormalizer`) normalises the
    observations the policy sees with the statistics the env pipeline's `NormalizeObservation`
    keeps."""
    pipe = AgentBase(policy)
    pipe = StepFieldSelector(pipe, field="state")
    pipe = PolicySampler(pipe, policy, normalize=obs_normalizer.normalize if obs_normalizer is not None else None)
    return AgentHead(pipe, model=policy, to_env=ClipToBounds() if policy.continuous else None)
