"""Collection as a pipe stage: env steps in, one sampled batch per gradient round out. The
`Collector` owns the cadence (warm-up, `train_every` env steps → `updates` gradient rounds) and
counts env steps from the data it pulls; the buffer it is handed only stores and samples."""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch

from ..core import CORE_FIELDS, SimpleStep, TrainBatch, check_whole, replay_fields
from ..pipes import Pipe
from .buffer import ReplayBuffer, UniformSampler

__all__ = ["Collector", "ExperienceReplay", "StepBatcher", "LEARNING_FIELDS"]

# The core fields a replay stores by default (what the loss stages read); counters such as env_id
# or step_n and rendered frames are left out, since each stored field costs a copy per env step and
# a gather per batch. Fields an agent or algorithm adds are stored unless `register_field` says not.
LEARNING_FIELDS = replay_fields(CORE_FIELDS)


def _as_step(item: Union[SimpleStep, List[SimpleStep]]) -> SimpleStep:
    return item if isinstance(item, SimpleStep) else SimpleStep.cat(item)


class StepBatcher(Pipe):
    "Turns a step, or a list of steps, into one learner item (`TrainBatch`) without replay."

    def next(self) -> TrainBatch:
        return TrainBatch(_as_step(next(self.source)))


class Collector(Pipe):
    """Feeds `buffer` from the env pipeline `source` and yields one sampled `TrainBatch` of `bs`
    transitions per gradient round.

    The update-to-data ratio is explicit: it pulls `train_every` env steps, then yields `updates`
    batches, and so on; the first batches wait until `warmup` transitions (and at least `bs`) are
    stored. Env steps are counted from the items pulled (`SimpleStep.env_steps`, set by the stepper
    and carried through n-step merging and skipping), so `env_steps` is what the env really ran.

    An item may hold more env steps than `train_every` (an `EpisodeReturns` stage passes whole
    episodes on). By default the env steps pulled past each `train_every` are not counted towards
    the next rounds; `carry_over=True` counts them, so the rounds keep to `updates` per
    `train_every` env steps on average however the env steps arrive (after warm-up, which yields no
    extra rounds either way).
    """
    state_attrs = ("env_steps", "owed")

    def __init__(self, source, buffer: ReplayBuffer, bs: int = 64, warmup: int = 0, train_every: int = 1,
                 updates: int = 1, carry_over: bool = False):
        super().__init__(source)
        bs, warmup = check_whole(bs, "bs"), check_whole(warmup, "warmup", 0)
        train_every, updates = check_whole(train_every, "train_every"), check_whole(updates, "updates")
        if bs > buffer.max_sz:
            raise ValueError(f"The batch size bs={bs} is larger than the replay capacity max_sz={buffer.max_sz}: raise "
                             "the capacity (max_sz; buffer_size on the command line) or lower the batch size "
                             "(bs; batch_size).")
        if warmup > buffer.max_sz:
            raise ValueError(f"warmup={warmup} transitions can never be reached with max_sz={buffer.max_sz}: raise the "
                             "capacity (max_sz; buffer_size on the command line) or lower the warm-up "
                             "(warmup; learning_starts).")
        self.buffer, self.bs, self.warmup = buffer, bs, warmup
        self.train_every, self.updates, self.carry_over = train_every, updates, carry_over
        self.env_steps = 0
        self.owed = 0
        self.due = 0  # with carry_over: the env-step count the last rounds were earned at

    def rounds_within(self, env_steps: int) -> int:
        """How many gradient rounds a run of `env_steps` env steps yields, when every env step stores
        one transition (n-step merging holds back the last few, so it may yield a burst less)."""
        first = max(self.train_every, self.warmup, self.bs)
        if env_steps < first:
            return 0
        return ((env_steps - first) // self.train_every + 1) * self.updates

    def rounds_left(self, env_steps: int) -> int:
        """How many more gradient rounds a run that ends at `env_steps` env steps yields from where
        this collector stands: `rounds_within` for a fresh one; for a resumed one, the rounds it
        still owes, then a burst every `train_every` env steps counted from its own position (as
        the bursts before it stopped were), once `warmup` transitions are stored."""
        if self.env_steps == 0:
            return self.rounds_within(env_steps)
        first = (self.due if self.carry_over else self.env_steps) + self.train_every
        first = max(first, self.env_steps + max(self.warmup, self.bs) - len(self.buffer))
        if env_steps < first:
            return self.owed
        return self.owed + ((env_steps - first) // self.train_every + 1) * self.updates

    def _collect(self, until: int):
        source, extend = self.source, self.buffer.extend
        while self.env_steps < until:
            item = next(source)
            if type(item) is not SimpleStep:
                item = _as_step(item)  # a list of steps (a Batcher's): one step, their env steps added up
            extend(item)
            self.env_steps += item.env_steps if item.env_steps is not None else len(item)

    def next(self) -> TrainBatch:
        if self.owed == 0:
            due = (self.due if self.carry_over else self.env_steps) + self.train_every
            self._collect(due)  # a source that runs out leaves `due` as it was, for the data that may follow
            self.due = due
            if len(self.buffer) < max(self.warmup, self.bs):
                while len(self.buffer) < max(self.warmup, self.bs):
                    self._collect(self.env_steps + 1)
                self.due = self.env_steps
            self.owed = self.updates
        self.owed -= 1
        return self.buffer.sample(self.bs)

    def get_state(self):
        return {**super().get_state(), "due": self.due, "buffer": self.buffer.state_dict()}

    def reset(self, initial_state=None):
        if initial_state:
            self.buffer.check_state(initial_state["buffer"])
        super().reset(initial_state)
        if initial_state:
            self.due = initial_state.get("due", self.env_steps)
            self.buffer.load_state_dict(initial_state["buffer"])

    def to(self, device):
        self.buffer.to(device)
        return self


class ExperienceReplay(Collector):
    """fastrl's replay stage: a `Collector` over its own `ReplayBuffer` of `max_sz` transitions on
    `device`, sampled uniformly. `fields` names the `SimpleStep` fields kept (None: every field
    marked for replay, see `register_field`)."""

    def __init__(self, source, bs: int = 64, max_sz: int = 10_000, warmup: int = 0, train_every: int = 1,
                 updates: int = 1, device: Optional[Union[str, torch.device]] = None,
                 fields: Optional[Sequence[str]] = None):
        if bs < 1 or max_sz < 1:
            raise ValueError(f"bs ({bs}) and max_sz ({max_sz}) must be >= 1.")
        super().__init__(source, ReplayBuffer(max_sz, UniformSampler(), device, fields), bs=bs, warmup=warmup,
                         train_every=train_every, updates=updates)

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def storage(self):
        "The stored fields, by name: tensors of `max_sz` rows (the first `len(self)` filled)."
        return self.buffer.storage.tensors

    @property
    def max_sz(self) -> int:
        return self.buffer.max_sz

    @property
    def device(self) -> torch.device:
        return self.buffer.device

    @property
    def size(self) -> int:
        return len(self.buffer)

    @property
    def pointer(self) -> int:
        return self.buffer.writer.pointer

    @property
    def added(self) -> int:
        return self.buffer.added

    def add(self, step: SimpleStep):
        "Store a batch of transitions, overwriting the oldest once full; returns the rows written."
        return self.buffer.extend(step)

    def sample(self, bs: Optional[int] = None) -> TrainBatch:
        "A uniform sample (with replacement) of `bs` stored transitions, with their indices."
        return self.buffer.sample(bs or self.bs)
