"""Running observation and reward normalisation as env-pipeline stages (what SB3's `VecNormalize`
does). Their statistics are stage state, so they are saved and restored with the learner's
checkpoint instead of in a separate file."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..core import SimpleStep
from ..pipes import Pipe

__all__ = ["RunningMeanStd", "ObservationNormalizer", "NormalizeObservation", "NormalizeReward"]


class RunningMeanStd:
    """Mean and variance of everything `update` has seen, merged batch by batch (Chan et al.'s
    parallel algorithm), in float64. `count` starts at `epsilon` as in SB3, so the first batch
    nearly sets the statistics by itself."""

    def __init__(self, shape=(), epsilon: float = 1e-4):
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.var = torch.ones(shape, dtype=torch.float64)
        self.count = epsilon

    def update(self, x: Tensor):
        "Merge a batch x of shape [B, *shape]."
        x = x.to(torch.float64)
        batch_count = x.shape[0]
        batch_mean = x.mean(0)
        batch_var = x.var(0, unbiased=False)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * (batch_count / total)
        m2 = self.var * self.count + batch_var * batch_count + delta.pow(2) * (self.count * batch_count / total)
        self.var = m2 / total
        self.count = total

    def state_dict(self):
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count}

    def load_state_dict(self, state):
        if state["mean"].shape != self.mean.shape:
            raise ValueError(f"running statistics of shape {tuple(state['mean'].shape)} do not fit these of shape "
                             f"{tuple(self.mean.shape)}.")
        self.mean, self.var, self.count = state["mean"].clone(), state["var"].clone(), state["count"]


class ObservationNormalizer:
    """(obs − mean) / √(var + epsilon), clipped to ±`clip_obs`, with the running statistics `rms`.
    One normaliser serves both the env pipeline's `NormalizeObservation` (which updates it) and the
    agent (which only reads it), so the policy acts on exactly what the rollout stores."""

    def __init__(self, shape, clip_obs: float = 10.0, epsilon: float = 1e-8):
        if not clip_obs > 0:
            raise ValueError(f"clip_obs must be > 0, got {clip_obs}.")
        self.rms = RunningMeanStd(shape)
        self.clip_obs, self.epsilon = clip_obs, epsilon
        self._refresh()

    def _refresh(self):
        self._mean = self.rms.mean.float()
        self._inv_std = torch.rsqrt(self.rms.var + self.epsilon).float()

    def update(self, obs: Tensor):
        self.rms.update(obs)
        self._refresh()

    def normalize(self, obs: Tensor) -> Tensor:
        if self._mean.device != obs.device:
            self._mean, self._inv_std = self._mean.to(obs.device), self._inv_std.to(obs.device)
        return ((obs - self._mean) * self._inv_std).clamp_(-self.clip_obs, self.clip_obs)

    def state_dict(self):
        return self.rms.state_dict()

    def load_state_dict(self, state):
        self.rms.load_state_dict(state)
        self._refresh()


class NormalizeObservation(Pipe):
    """Rewrites each step's `state` and `next_state` with `normalizer`, then merges the step's new
    observations into its statistics. The agent (`PPOAgent(policy, obs_normalizer=normalizer)`)
    normalised the `state` it acted on with the same statistics, before this update, so the stored
    state is bit for bit what the policy saw. Put it right after the `GymStepper`."""

    def __init__(self, source, normalizer: ObservationNormalizer):
        super().__init__(source)
        self.normalizer = normalizer

    def next(self) -> SimpleStep:
        step = next(self.source)
        normalize = self.normalizer.normalize
        out = step.replace(state=normalize(step.state), next_state=normalize(step.next_state))
        self.normalizer.update(step.next_state)
        return out

    def get_state(self):
        return {**super().get_state(), "normalizer": self.normalizer.state_dict()}

    def reset(self, initial_state=None):
        if initial_state:
            self._check(initial_state["normalizer"])
        super().reset(initial_state)
        if initial_state:
            self.normalizer.load_state_dict(initial_state["normalizer"])

    def _check(self, state):
        if state["mean"].shape != self.normalizer.rms.mean.shape:
            raise ValueError(f"the checkpoint normalises observations of shape {tuple(state['mean'].shape)}, this "
                             f"pipeline {tuple(self.normalizer.rms.mean.shape)}.")


class NormalizeReward(Pipe):
    """Divides each reward by the running standard deviation of the discounted return
    R ← γ R + r (kept per env, restarted when an episode ends), clipped to ±`clip_reward`: SB3's
    `VecNormalize(norm_reward=True)`. The episode returns the stepper records stay unscaled."""

    def __init__(self, source, gamma: float = 0.99, clip_reward: float = 10.0, epsilon: float = 1e-8):
        super().__init__(source)
        if not 0 <= gamma <= 1:
            raise ValueError(f"NormalizeReward(gamma={gamma}): the discount must lie in [0, 1].")
        if not clip_reward > 0:
            raise ValueError(f"clip_reward must be > 0, got {clip_reward}.")
        self.gamma, self.clip_reward, self.epsilon = gamma, clip_reward, epsilon
        self.rms = RunningMeanStd(())
        self.returns: Optional[Tensor] = None

    def next(self) -> SimpleStep:
        step = next(self.source)
        reward = step.reward.to(torch.float64)
        if self.returns is None:
            self.returns = torch.zeros_like(reward)
        self.returns = self.returns * self.gamma + reward
        self.rms.update(self.returns)
        scaled = (reward / torch.sqrt(self.rms.var + self.epsilon)).clamp(-self.clip_reward, self.clip_reward)
        self.returns = torch.where(step.terminated | step.truncated, 0.0, self.returns)
        return step.replace(reward=scaled.to(step.reward.dtype))

    def get_state(self):
        return {**super().get_state(), "rms": self.rms.state_dict(), "returns": self.returns}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self.rms.load_state_dict(initial_state["rms"])
            self.returns = initial_state["returns"]
