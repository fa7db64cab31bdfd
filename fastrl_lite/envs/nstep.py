"""n-step returns and step skipping, keyed by `env_id`, vectorized over the envs of a batch."""
from __future__ import annotations


import torch

from ..core import SimpleStep
from ..pipes import Pipe

__all__ = ["NStepper", "NSkipper"]

# Fields taken from the first transition of an n-step window; the rest come from its last one.
_FIRST_FIELDS = ("state", "action", "episode_n", "step_n", "image")


class NStepper(Pipe):
    """Merges each env's consecutive transitions into n-step transitions (first state and action,
    last `next_state`, `terminated` and `truncated`), with reward r0 + γ r1 + … + γ^(k-1) r_(k-1)
    and `nsteps` = k, so the learner bootstraps with γ^k.

    k is `n` except where an episode ends inside the window: then every pending window of that env
    is closed at the episode end (shorter, k < n) — a terminated one does not bootstrap, a truncated
    one still does. Windows still open when the source runs dry are dropped.
    """

    def __init__(self, source, n: int = 1, gamma: float = 0.99):
        super().__init__(source)
        if n < 1:
            raise ValueError(f"nsteps must be >= 1 (1 means plain one-step transitions), got {n}.")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}.")
        self.n, self.gamma = n, gamma
        self._t = 0
        self._window = None

    def _allocate(self, step: SimpleStep):
        n, envs = self.n, len(step)
        fields = step.fields()
        self._window = {k: torch.zeros((n, *fields[k].shape), dtype=fields[k].dtype)
                        for k in _FIRST_FIELDS if k in fields}
        self._reward = torch.zeros(n, envs)
        self._discount = torch.ones(n, envs)
        self._count = torch.zeros(n, envs, dtype=torch.long)
        self._open = torch.zeros(n, envs, dtype=torch.bool)

    def _push(self, step: SimpleStep) -> SimpleStep:
        if self._window is None:
            self._allocate(step)
        slot = self._t % self.n
        self._t += 1
        for k, buf in self._window.items():
            buf[slot] = getattr(step, k)
        self._reward[slot] = 0
        self._discount[slot] = 1
        self._count[slot] = 0
        self._open[slot] = True
        self._reward.add_(self._discount * step.reward)
        self._discount.mul_(self.gamma)
        self._count.add_(1)
        closing = self._open & ((self._count >= self.n) | step.done)
        self._open &= ~closing
        slots, envs = closing.nonzero(as_tuple=True)
        out = SimpleStep(reward=self._reward[slots, envs], nsteps=self._count[slots, envs],
                         next_state=step.next_state[envs], terminated=step.terminated[envs],
                         truncated=step.truncated[envs], env_id=step.env_id[envs])
        for k, buf in self._window.items():
            setattr(out, k, buf[slots, envs])
        return out

    def next(self) -> SimpleStep:
        while True:
            out = self._push(next(self.source))
            if len(out):
                return out

    def get_state(self):
        window = None
        if self._window is not None:
            window = {"fields": self._window, "reward": self._reward, "discount": self._discount,
                      "count": self._count, "open": self._open}
        return {**super().get_state(), "t": self._t, "window": window}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self._t = initial_state["t"]
            window = initial_state["window"]
            if window is not None:
                self._window = {k: v.clone() for k, v in window["fields"].items()}
                self._reward, self._discount = window["reward"].clone(), window["discount"].clone()
                self._count, self._open = window["count"].clone(), window["open"].clone()


class NSkipper(Pipe):
    """Keeps every `n`-th transition of each env (the first of each episode included) and always the
    one that ends an episode, dropping the rest: fewer, less correlated transitions."""

    def __init__(self, source, n: int = 1):
        super().__init__(source)
        if n < 1:
            raise ValueError(f"nskips must be >= 1 (1 keeps every transition), got {n}.")
        self.n = n
        self._seen = torch.zeros(0, dtype=torch.long)

    def get_state(self):
        return {**super().get_state(), "seen": self._seen}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self._seen = initial_state["seen"].clone()

    def next(self) -> SimpleStep:
        while True:
            step = next(self.source)
            if self.n == 1:
                return step
            env_id = step.env_id
            if env_id.numel() and int(env_id.max()) >= len(self._seen):
                grown = torch.zeros(int(env_id.max()) + 1, dtype=torch.long)
                grown[:len(self._seen)] = self._seen
                self._seen = grown
            keep = (self._seen[env_id] % self.n == 0) | step.done
            self._seen.index_add_(0, env_id, torch.ones_like(env_id))
            self._seen[env_id[step.done]] = 0
            if keep.any():
                return step[keep]
