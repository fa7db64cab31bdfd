"""n-step returns and step skipping, keyed by `env_id`, vectorized over the envs of a batch."""
from __future__ import annotations

import torch

from ..core import SimpleStep, env_steps_of, field_spec
from ..pipes import Pipe

__all__ = ["NStepper", "NSkipper"]

class NStepper(Pipe):
    """Merges each env's consecutive transitions into n-step transitions, field by field as
    `register_field` declares: `"first"` fields (state, action, an agent's extras) from the window's
    first transition, `"last"` ones (next_state, terminated, truncated) from its last, and
    `"discounted_sum"` ones (the reward) as r0 + γ r1 + … + γ^(k-1) r_(k-1); `nsteps` = k, so the
    learner bootstraps with γ^k.

    k is `n` except where an episode ends inside the window: then every pending window of that env
    is closed at the episode end (shorter, k < n) — a terminated one does not bootstrap, a truncated
    one still does. Windows still open when the source runs dry are dropped. Each output carries the
    env steps pulled to make it (`env_steps`).
    """

    def __init__(self, source, n: int = 1, gamma: float = 0.99):
        super().__init__(source)
        if n < 1:
            raise ValueError(f"nsteps must be >= 1 (1 means plain one-step transitions), got {n}.")
        if not 0 <= gamma <= 1:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}.")
        self.n, self.gamma = n, gamma
        self._t = 0
        self._pending = 0  # env steps pulled since the last output
        self._window = None

    def _allocate(self, step: SimpleStep):
        n, envs = self.n, len(step)
        fields = step.fields()
        rules = {k: field_spec(k).nstep for k in fields if k != "nsteps"}
        self._last = tuple(k for k, rule in rules.items() if rule == "last")
        self._window = {k: torch.zeros((n, *fields[k].shape), dtype=fields[k].dtype)
                        for k, rule in rules.items() if rule == "first"}
        self._sums = {k: torch.zeros((n, *fields[k].shape), dtype=torch.promote_types(fields[k].dtype, torch.float32))
                      for k, rule in rules.items() if rule == "discounted_sum"}
        self._discount = torch.ones(n, envs)
        self._count = torch.zeros(n, envs, dtype=torch.long)
        self._open = torch.zeros(n, envs, dtype=torch.bool)

    def _push(self, step: SimpleStep) -> SimpleStep:
        if self._window is None:
            self._allocate(step)
        expected = set(self._window) | set(self._sums) | set(self._last)
        if set(step.fields()) - {"nsteps"} != expected:
            raise ValueError(f"NStepper: the steps changed fields, from {sorted(expected)} to "
                             f"{sorted(set(step.fields()) - {'nsteps'})}.")
        slot = self._t % self.n
        self._t += 1
        for k, buf in self._window.items():
            buf[slot] = getattr(step, k)
        self._discount[slot] = 1
        self._count[slot] = 0
        self._open[slot] = True
        for k, total in self._sums.items():
            total[slot] = 0
            value = getattr(step, k)
            total.add_(self._discount.view(*self._discount.shape, *[1] * (value.dim() - 1)) * value)
        self._discount.mul_(self.gamma)
        self._count.add_(1)
        closing = self._open & ((self._count >= self.n) | step.done)
        self._open &= ~closing
        slots, envs = closing.nonzero(as_tuple=True)
        out = SimpleStep(nsteps=self._count[slots, envs],
                         **{k: getattr(step, k)[envs] for k in self._last},
                         **{k: buf[slots, envs] for k, buf in self._window.items()},
                         **{k: total[slots, envs] for k, total in self._sums.items()})
        return out

    def next(self) -> SimpleStep:
        while True:
            step = next(self.source)
            self._pending += env_steps_of(step)
            out = self._push(step)
            if len(out):
                out.env_steps, self._pending = self._pending, 0
                return out

    def get_state(self):
        window = None
        if self._window is not None:
            window = {"fields": self._window, "sums": self._sums, "last": self._last, "discount": self._discount,
                      "count": self._count, "open": self._open}
        return {**super().get_state(), "n": self.n, "t": self._t, "pending": self._pending, "window": window}

    def reset(self, initial_state=None):
        if initial_state and initial_state["n"] != self.n:
            raise ValueError(f"the checkpoint merges {initial_state['n']}-step transitions, this NStepper "
                             f"{self.n}-step ones; build the pipeline with nsteps={initial_state['n']}.")
        super().reset(initial_state)
        if initial_state:
            self._t, self._pending = initial_state["t"], initial_state["pending"]
            window = initial_state["window"]
            if window is not None:
                self._window = {k: v.clone() for k, v in window["fields"].items()}
                self._sums = {k: v.clone() for k, v in window["sums"].items()}
                self._last = tuple(window["last"])
                self._discount = window["discount"].clone()
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
        self._pending = 0  # env steps pulled since the last output

    def get_state(self):
        return {**super().get_state(), "seen": self._seen, "pending": self._pending}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self._seen, self._pending = initial_state["seen"].clone(), initial_state["pending"]

    def next(self) -> SimpleStep:
        while True:
            step = next(self.source)
            if self.n == 1:
                return step
            self._pending += env_steps_of(step)
            env_id = step.env_id
            if env_id.numel() and int(env_id.max()) >= len(self._seen):
                grown = torch.zeros(int(env_id.max()) + 1, dtype=torch.long)
                grown[:len(self._seen)] = self._seen
                self._seen = grown
            keep = (self._seen[env_id] % self.n == 0) | step.done
            self._seen.index_add_(0, env_id, torch.ones_like(env_id))
            self._seen[env_id[step.done]] = 0
            if keep.any():
                out = step[keep]
                out.env_steps, self._pending = self._pending, 0
                return out
