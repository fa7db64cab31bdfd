"""On-policy collection as pipe stages: a rollout of `n_steps` vector steps, its advantages and
returns, and epochs of shuffled minibatches over it.

    pipe = RolloutCollector(env_pipe, n_steps=128)   # [n_steps, n_envs] steps with log_prob, value
    pipe = GAE(pipe, policy.value, gamma=0.99, gae_lambda=0.95)
    pipe = Minibatches(pipe, n_epochs=10, batch_size=64)   # one TrainBatch per gradient round
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor

from ..core import SimpleStep, TrainBatch, register_field
from ..pipes import Pipe
from .buffer import MinibatchSampler, TensorStorage

__all__ = ["RolloutCollector", "GAE", "MonteCarloReturns", "Minibatches", "gae_advantages"]

register_field("advantages", nstep="first")
register_field("returns", nstep="first")


def _check_discount(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value!r}.")
    return float(value)


class RolloutCollector(Pipe):
    """Pulls `n_steps` vector steps from the env pipeline `source` and yields them as one rollout: a
    `SimpleStep` whose fields are [n_steps, n_envs, ...], time first. It owns the cadence: one
    rollout feeds `rounds_per_rollout` gradient rounds (PPO's n_epochs x minibatches). The agent's
    extras (`log_prob`, `value`) ride in the steps like any other field, and `terminated` and
    `truncated` stay apart. The rows live in one preallocated `TensorStorage` (on `device`), overwritten by
    the next rollout, so a stage downstream must have used a rollout before it pulls the next one.
    `env_steps` counts the env steps pulled (as a `Collector` does), those of a rollout the env
    pipeline ended part way (its cap `n` reached) included: that rollout's steps stay, in the stage's
    state too, and a pipeline resumed with a larger cap completes it where it stopped."""
    state_attrs = ("env_steps", "rollouts")
    required = ("state", "action", "reward", "next_state", "terminated", "truncated", "log_prob", "value")

    def __init__(self, source, n_steps: int = 2048, n_envs: Optional[int] = None, rounds_per_rollout: int = 1,
                 device=None):
        super().__init__(source)
        for name, value in (("n_steps", n_steps), ("rounds_per_rollout", rounds_per_rollout)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        self.n_steps, self.n_envs, self.device = n_steps, n_envs, device
        self.rounds_per_rollout = rounds_per_rollout
        self.storage: Optional[TensorStorage] = None
        self.env_steps = 0
        self.rollouts = 0
        self.filled = 0  # vector steps of the current rollout written so far

    def _start(self, step: SimpleStep):
        missing = [k for k in self.required if getattr(step, k, None) is None]
        if missing:
            raise ValueError(f"RolloutCollector needs steps with {missing}: the agent must return its log-prob and "
                             "value with each action (PPOAgent(policy)).")
        if self.n_envs is not None and self.n_envs != len(step):
            raise ValueError(f"RolloutCollector(n_envs={self.n_envs}) but the env pipeline steps {len(step)} envs.")
        self.n_envs = len(step)
        self.storage = TensorStorage(self.n_steps * self.n_envs, self.device, fields=self.required)

    def next(self) -> SimpleStep:
        source = self.source
        env_steps = 0
        while self.filled < self.n_steps:
            step = next(source)  # the end of the env pipeline leaves a part-filled rollout in place
            if self.storage is None:
                self._start(step)
            self.storage.write(step, self.filled * self.n_envs, self.n_envs)
            self.filled += 1
            steps = step.env_steps if step.env_steps is not None else len(step)
            self.env_steps += steps
            env_steps += steps
        self.filled = 0
        self.rollouts += 1
        shape = (self.n_steps, self.n_envs)
        rollout = SimpleStep(**{k: v.view(*shape, *v.shape[1:]) for k, v in self.storage.tensors.items()})
        rollout.env_steps = env_steps
        return rollout

    def get_state(self):
        state = {**super().get_state(), "filled": self.filled}
        if self.filled:  # a part-filled rollout: its rows so far
            state.update(n_envs=self.n_envs, partial={k: v.clone() for k, v in self.storage.state_dict(self.filled * self.n_envs).items()})
        return state

    def reset(self, initial_state=None):
        super().reset(initial_state)
        self.filled = initial_state.get("filled", 0) if initial_state else 0
        if self.filled:
            n_envs = initial_state["n_envs"]
            if self.n_envs is not None and self.n_envs != n_envs:
                raise ValueError(f"The checkpoint's rollout has {n_envs} envs, this RolloutCollector "
                                 f"{self.n_envs}.")
            self.n_envs = n_envs
            if self.storage is None:
                self.storage = TensorStorage(self.n_steps * n_envs, self.device, fields=self.required)
            self.storage.load_state_dict(initial_state["partial"])

    def rounds_within(self, env_steps: int) -> int:
        """Gradient rounds a run of `env_steps` env steps yields: `rounds_per_rollout` (what the stages
        downstream make of one rollout) per whole rollout, fewer when an early stop cuts a rollout short."""
        return (env_steps // (self.n_steps * (self.n_envs or 1))) * self.rounds_per_rollout

    def to(self, device):
        self.device = device
        if self.storage is not None:
            self.storage.to(device)
        return self


def gae_advantages(reward: Tensor, value: Tensor, next_value: Tensor, terminated: Tensor, truncated: Tensor,
                   gamma: float, gae_lambda: float) -> Tensor:
    """Generalised advantage estimates (Schulman et al., 2016) over a [T, N] rollout:
    δ_t = r_t + γ (1 − terminated_t) V'_t − V(s_t), A_t = δ_t + γλ (1 − done_t) A_{t+1}, where V'_t is
    the value of what follows step t: V(s_{t+1}) within an episode, the value of the true final
    observation after a truncation or at the rollout's end (`next_value`). Every δ is computed at
    once; the recursion runs backwards over time, one fused multiply-add per step over all envs."""
    done = terminated | truncated
    not_terminated = (~terminated).to(reward.dtype)
    # V'_t: the next step's value within an episode, else the final observation's
    following = torch.cat((value[1:], next_value[-1:]))
    following = torch.where(done, next_value, following)
    delta = reward + gamma * not_terminated * following - value
    decay = gamma * gae_lambda * (~done).to(reward.dtype)
    advantages = torch.empty_like(delta)
    last = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        last = torch.addcmul(delta[t], decay[t], last, out=advantages[t])
    return advantages


class GAE(Pipe):
    """Adds `advantages` and `returns` (= advantages + values, the critic's targets) to each rollout.
    `value_fn` (e.g. `policy.value`) gives V of the next states where a rollout needs them: after a
    truncation, whose `next_state` is the true final observation (gymnasium's SAME_STEP autoreset),
    and after the rollout's last step. A termination bootstraps from nothing."""

    def __init__(self, source, value_fn: Callable[[Tensor], Tensor], gamma: float = 0.99, gae_lambda: float = 0.95):
        super().__init__(source)
        self.value_fn = value_fn
        self.gamma = _check_discount("gamma", gamma)
        self.gae_lambda = _check_discount("gae_lambda", gae_lambda)

    def next_values(self, rollout: SimpleStep) -> Tensor:
        "V(next_state) for every step, [T, N], in one forward pass."
        T, N = rollout.reward.shape
        with torch.no_grad():
            return self.value_fn(rollout.next_state.reshape(T * N, *rollout.next_state.shape[2:])).reshape(T, N)

    def next(self) -> SimpleStep:
        rollout = next(self.source)
        advantages = gae_advantages(rollout.reward, rollout.value, self.next_values(rollout), rollout.terminated,
                                    rollout.truncated, self.gamma, self.gae_lambda)
        return rollout.replace(advantages=advantages, returns=advantages + rollout.value)


class MonteCarloReturns(GAE):
    """Advantages from discounted returns to the end of each episode (GAE with λ = 1): A_t = G_t − V(s_t),
    bootstrapped only where a rollout cuts an episode (a truncation, the rollout's end)."""

    def __init__(self, source, value_fn: Callable[[Tensor], Tensor], gamma: float = 0.99):
        super().__init__(source, value_fn, gamma=gamma, gae_lambda=1.0)


class Minibatches(Pipe):
    """`n_epochs` passes over each rollout in shuffled minibatches of `batch_size` transitions drawn
    without replacement (a `MinibatchSampler`), one `TrainBatch` per gradient round; then the next
    rollout. `fields` names the rollout fields the minibatches carry (None: all of them); each costs
    a gather per round. `stop()` ends the passes over the current rollout (an early stop on the KL
    divergence): the next round starts a new rollout. The rollout being worked through is part of the stage's
    state, so a learner saved between two rounds resumes in the middle of its passes."""
    state_attrs = ("rounds", "epochs_done", "stopped")

    def __init__(self, source, n_epochs: int = 10, batch_size: int = 64, fields: Optional[Sequence[str]] = None):
        super().__init__(source)
        for name, value in (("n_epochs", n_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}.")
        self.n_epochs, self.batch_size = n_epochs, batch_size
        self.fields = tuple(fields) if fields is not None else None
        self.sampler = MinibatchSampler()
        self.rollout: Optional[Dict[str, Tensor]] = None
        self.size = 0
        self.rounds = 0          # gradient rounds handed out
        self.epochs_done = 0     # finished passes over the current rollout
        self.stopped = False

    def stop(self):
        "End the passes over the current rollout: the next round draws from a new one."
        self.stopped = True

    def _next_rollout(self):
        rollout = next(self.source)
        T, N = rollout.reward.shape[:2]
        self.size = T * N
        if self.batch_size > self.size:
            raise ValueError(f"batch_size={self.batch_size} is larger than a rollout of {self.size} transitions "
                             f"(n_steps={T} x n_envs={N}); lower batch_size or raise n_steps.")
        # one flat [T*N, ...] copy: the collector's storage is overwritten by the next rollout
        fields = rollout.fields()
        if self.fields is not None:
            missing = [k for k in self.fields if k not in fields]
            if missing:
                raise ValueError(f"Minibatches keeps fields {list(self.fields)}, the rollout has no {missing}; put "
                                 "the stage that adds them (GAE) upstream.")
            fields = {k: fields[k] for k in self.fields}
        self.rollout = {k: v.reshape(self.size, *v.shape[2:]).clone() for k, v in fields.items()}
        self.sampler.new_epoch()
        self.epochs_done, self.stopped = 0, False
        self._epoch_at_start = self.sampler.epoch

    def next(self) -> TrainBatch:
        if self.rollout is None or self.stopped or self.epochs_done >= self.n_epochs:
            self._next_rollout()
        indices = self.sampler.sample(self.size, self.batch_size, next(iter(self.rollout.values())).device)
        self.epochs_done = self.sampler.epoch - self._epoch_at_start
        self.rounds += 1
        return TrainBatch(SimpleStep(**{k: v.index_select(0, indices) for k, v in self.rollout.items()}),
                          indices=indices)

    def get_state(self):
        return {**super().get_state(), "rollout": self.rollout, "size": self.size,
                "sampler": self.sampler.state_dict(), "epoch_at_start": getattr(self, "_epoch_at_start", 0)}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self.rollout, self.size = initial_state["rollout"], initial_state["size"]
            self.sampler.load_state_dict(initial_state["sampler"])
            self._epoch_at_start = initial_state["epoch_at_start"]

    def to(self, device):
        if self.rollout is not None:
            self.rollout = {k: v.to(device) for k, v in self.rollout.items()}
        return self
