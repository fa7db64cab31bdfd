"""Discounted returns-to-go, computed once each episode ends, as SAIL-DQN's replay needs them."""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import torch
from torch import Tensor

from ..core import SimpleStep, check_whole, env_steps_of, register_field
from ..pipes import Pipe

__all__ = ["EpisodeReturns", "discounted_returns"]

# G_t of an n-step transition is the return from its first step, so merging keeps the first one's
register_field("mc_return", nstep="first")


def discounted_returns(rewards: Tensor, discounts: Tensor, successors: Tensor) -> Tensor:
    """G_j = rewards_j + discounts_j · G_{successors_j} for every row j at once, where
    `successors_j` is the row that follows j in its episode (len(rewards) where none does, G = 0
    there). Pointer jumping: each pass folds every row's successor into it, so episodes of length
    T take about log2(T) vectorised passes; float64 throughout."""
    n = len(rewards)
    x = torch.cat((rewards.double(), rewards.new_zeros(1, dtype=torch.float64)))
    m = torch.cat((discounts.double(), discounts.new_zeros(1, dtype=torch.float64)))
    s = torch.cat((successors.long(), torch.tensor([n])))
    while bool((s[:n] != n).any()):
        x = x + m * x[s]
        m = m * m[s]
        s = s[s]
    return x[:n]


class EpisodeReturns(Pipe):
    """Holds each env's transitions until its episode ends, then passes them on with their
    discounted return-to-go G_t = r_t + γ r_{t+1} + γ² r_{t+2} + … as the field `mc_return`.

    n-step transitions (from an `NStepper` upstream) work too: a window from step t with k-step
    reward R_t gets G_t = R_t + γ^k G_{t+k}. Every transition of an episode must arrive (no
    `NSkipper` upstream): a missing one is an error, not a silent wrong return.

    Episodes cut by a time limit (`truncated`) get a bootstrapped tail: G_t adds γ^(T−t) V(s_T),
    with V = `bootstrap(final next_state)` evaluated when the episode ends (SAIL-DQN passes the
    target network's max_b Q̄(s_T, b)). Without `bootstrap`, a truncated episode's G_t counts only
    the rewards seen: a lower bound of the return where rewards are >= 0, an upper bound where
    they are <= 0 (Acrobot), so give one for such envs.

    Each output carries the env steps pulled since the last one (`env_steps`), so a `Collector`
    downstream counts what the env ran; transitions wait here until their episode ends. More than
    `max_held` of them waiting (episodes that never end) is an error, not a run that never trains.
    """

    def __init__(self, source, gamma: float = 0.99, bootstrap: Optional[Callable[[Tensor], Tensor]] = None,
                 max_held: int = 1_000_000):
        super().__init__(source)
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}.")
        self.gamma, self.bootstrap = gamma, bootstrap
        self.max_held = check_whole(max_held, "max_held")
        self._held: Dict[str, np.ndarray] = {}  # the waiting transitions, field by field (rows [0, _n))
        self._n = 0
        self._pending = 0  # env steps pulled since the last output

    # -- holding ------------------------------------------------------------------------------------
    def _hold(self, step: SimpleStep) -> bool:
        "Append `step`'s transitions to those held; True when one of them ends an episode."
        fields = step.fields()
        if not self._held:
            for k in ("env_id", "episode_n", "step_n"):
                if k not in fields:
                    raise ValueError(f"EpisodeReturns needs the stepper's {k!r} field to tell episodes apart; feed it "
                                     "the steps of a GymStepper (GymDataPipe).")
            self._held = {k: np.empty((64, *v.shape[1:]), dtype=v.numpy().dtype) for k, v in fields.items()}
        elif fields.keys() != self._held.keys():
            raise ValueError(f"EpisodeReturns: the steps changed fields, from {sorted(self._held)} to "
                             f"{sorted(fields)}.")
        n, m = self._n, len(step)
        if n + m > self.max_held:
            raise ValueError(f"EpisodeReturns holds {n + m} transitions of episodes that have not ended, more than "
                             f"max_held={self.max_held} (with SAIL, the replay's size): returns-to-go need episodes "
                             "that end. Give the env a time limit (gymnasium.wrappers.TimeLimit(env, "
                             "max_episode_steps=...)), or a larger replay.")
        if n + m > len(self._held["env_id"]):
            size = max(2 * len(self._held["env_id"]), n + m)
            for k, v in self._held.items():
                grown = np.empty((size, *v.shape[1:]), dtype=v.dtype)
                grown[:n] = v[:n]
                self._held[k] = grown
        for k, v in fields.items():
            self._held[k][n:n + m] = v.numpy()
        self._n = n + m
        return bool(self._held["terminated"][n:n + m].any() or self._held["truncated"][n:n + m].any())

    def next(self) -> SimpleStep:
        while True:
            item = next(self.source)
            step = item if isinstance(item, SimpleStep) else SimpleStep.cat(item)
            self._pending += env_steps_of(item)
            if self._hold(step):
                out = self._release()
                if len(out):
                    out.env_steps, self._pending = self._pending, 0
                    return out

    # -- releasing finished episodes ----------------------------------------------------------------
    def _release(self) -> SimpleStep:
        held = {k: v[:self._n] for k, v in self._held.items()}
        episode = held["env_id"].astype(np.int64) * (1 << 32) + held["episode_n"].astype(np.int64)
        done = held["terminated"] | held["truncated"]
        finished = np.isin(episode, np.unique(episode[done]))
        rows = {k: torch.from_numpy(v[finished]) for k, v in held.items()}
        keep = ~finished
        for k, v in self._held.items():
            kept = v[:self._n][keep]
            v[:len(kept)] = kept
        self._n = int(keep.sum())
        out = SimpleStep(**rows)
        return out.replace(mc_return=self.returns(out).to(out.reward.dtype))

    def returns(self, step: SimpleStep) -> Tensor:
        "G_t of every transition of `step`, which holds whole episodes (in any order)."
        n = len(step)
        k = step.nsteps.long() if step.nsteps is not None else torch.ones(n, dtype=torch.long)
        # rows sorted by (episode, step within it): a transition's successor starts k steps later
        episode = step.env_id.long() * (1 << 32) + step.episode_n.long()
        _, group = torch.unique(episode, return_inverse=True)
        key = group * (1 << 32) + step.step_n.long()
        order = torch.argsort(key)
        sorted_key = key[order]
        wanted = key + k
        at = torch.searchsorted(sorted_key, wanted).clamp(max=max(n - 1, 0))
        found = sorted_key[at] == wanted
        done = step.done
        if bool((~done & ~found).any()):
            raise ValueError("EpisodeReturns is missing transitions inside an episode (each transition needs the one "
                             "that starts where it ends); do not skip steps (nskips) upstream of it.")
        successors = torch.where(done, n, order[at])
        rewards = step.reward.double()
        discounts = self.gamma ** k.double()
        truncated = step.truncated & ~step.terminated
        if self.bootstrap is not None and bool(truncated.any()):
            cut = truncated.nonzero(as_tuple=True)[0]
            with torch.no_grad():
                tail = self.bootstrap(step.next_state[cut]).double().to(rewards.device)
            rewards = rewards.index_add(0, cut, discounts[cut] * tail)
        return discounted_returns(rewards, torch.where(done, 0.0, discounts), successors)

    # -- state --------------------------------------------------------------------------------------
    def get_state(self):
        return {**super().get_state(), "pending": self._pending,
                "held": {k: torch.from_numpy(v[:self._n].copy()) for k, v in self._held.items()}}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self._pending = initial_state["pending"]
            held = initial_state["held"]
            self._held = {k: v.numpy().copy() for k, v in held.items()}
            self._n = len(next(iter(held.values()))) if held else 0
