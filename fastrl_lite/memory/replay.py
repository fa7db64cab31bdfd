"""Experience replay as a pipe stage: env steps in, one sampled batch per gradient round out."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from ..core import SimpleStep, TrainBatch
from ..pipes import Pipe, find_pipe

__all__ = ["ExperienceReplay", "StepBatcher", "LEARNING_FIELDS"]

# What the loss stages read; counters such as env_id or step_n and rendered frames are not stored
# unless asked for, since each stored field costs a copy per env step and a gather per batch.
LEARNING_FIELDS = ("state", "action", "reward", "next_state", "terminated", "truncated", "nsteps")


def _numpy_view(tensor: Tensor):
    "A NumPy array sharing `tensor`'s memory, or None where there is none (GPU storage, no NumPy dtype)."
    if tensor.device.type != "cpu":
        return None
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError):
        return None


def _as_step(item: Union[SimpleStep, List[SimpleStep]]) -> SimpleStep:
    return item if isinstance(item, SimpleStep) else SimpleStep.cat(item)


class StepBatcher(Pipe):
    "Turns a step, or a list of steps, into one learner item (`TrainBatch`) without replay."

    def next(self) -> TrainBatch:
        return TrainBatch(_as_step(next(self.source)))


class ExperienceReplay(Pipe):
    """A ring buffer of transitions held in preallocated tensors on `device`, sampled uniformly.

    Each call yields one `TrainBatch` of `bs` transitions. The update-to-data ratio is explicit:
    after `warmup` transitions are stored, it pulls `train_every` env steps from its source, then
    yields `updates` batches, and so on. Env steps are read from the `GymStepper` upstream when
    there is one (so n-step merging or skipping does not change the count), else counted as the
    transitions added. Storage is allocated on the first add, from that step's shapes and dtypes.
    `fields` names the `SimpleStep` fields kept (those present in the steps); `None` keeps all.

    The batches of one burst of `updates` rounds are drawn together: one `randint` and one gather
    per field for all of them (up to `prefetch_bytes` of samples at a time), each round then takes
    its slice. Nothing is stored between the rounds of a burst, so this draws exactly the batches
    (and the same random numbers) that sampling round by round would, for less per-round overhead.
    """
    prefetch_bytes = 64 * 2 ** 20

    def __init__(self, source, bs: int = 64, max_sz: int = 10_000, warmup: int = 0, train_every: int = 1,
                 updates: int = 1, device: Optional[Union[str, torch.device]] = None,
                 fields: Optional[Sequence[str]] = LEARNING_FIELDS):
        super().__init__(source)
        if bs < 1 or max_sz < 1:
            raise ValueError(f"bs ({bs}) and max_sz ({max_sz}) must be >= 1.")
        if bs > max_sz:
            raise ValueError(f"bs={bs} is larger than the replay capacity max_sz={max_sz}: "
                             "raise max_sz or lower bs.")
        if warmup < 0 or train_every < 1 or updates < 1:
            raise ValueError(f"Need warmup >= 0, train_every >= 1 and updates >= 1; got warmup={warmup}, "
                             f"train_every={train_every}, updates={updates}.")
        if warmup > max_sz:
            raise ValueError(f"warmup={warmup} transitions can never be reached with max_sz={max_sz}.")
        self.bs, self.max_sz, self.warmup = bs, max_sz, warmup
        self.train_every, self.updates = train_every, updates
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fields = tuple(fields) if fields is not None else None
        self.storage: Dict[str, Tensor] = {}
        self._slots = None
        self.size = 0
        self.pointer = 0
        self.added = 0
        self._owed = 0
        self._stepper = None
        self._ahead, self._ahead_indices, self._ahead_pos = None, None, 0

    def __len__(self) -> int:
        return self.size

    def _kept(self, step: SimpleStep) -> Dict[str, Tensor]:
        if self.fields is None:
            return step.fields()
        return {k: v for k in self.fields if (v := getattr(step, k, None)) is not None}

    def _allocate(self, step: SimpleStep):
        self.storage = {k: torch.empty((self.max_sz, *v.shape[1:]), dtype=v.dtype, device=self.device)
                        for k, v in self._kept(step).items()}

    def add(self, step: SimpleStep):
        "Store a batch of transitions, overwriting the oldest once full: O(batch) tensor copies."
        if self._slots is None:
            if not self.storage:
                self._allocate(step)
            # what add() needs per field, worked out once instead of on every env step
            self._slots = [(k, v, v.shape[1:], _numpy_view(v)) for k, v in self.storage.items()]
            self._numpy_writes = all(view is not None for *_, view in self._slots)
            self._absent = [k for k in (self.fields or ()) if k not in self.storage]
        values = [getattr(step, k) for k, _, _, _ in self._slots]
        if (any(v is None for v in values) or any(getattr(step, k, None) is not None for k in self._absent)
                or (self.fields is None and len(step.fields()) != len(values))):
            raise ValueError(f"Steps changed fields: replay holds {sorted(self.storage)}, got "
                             f"{sorted(k for k in step.fields() if self.fields is None or k in self.fields)}.")
        n = arrived = values[0].shape[0]
        if n > self.max_sz:  # only the newest max_sz can survive; the env steps still all count
            values, n = [v[n - self.max_sz:] for v in values], self.max_sz
        start = self.pointer
        first = min(n, self.max_sz - start)
        for (k, _, row_shape, _), value in zip(self._slots, values):
            if value.shape[1:] != row_shape:
                raise ValueError(f"Field {k!r} has shape {tuple(value.shape[1:])} per transition, "
                                 f"the replay stores {tuple(row_shape)}.")
        if self._numpy_writes:
            try:
                # CPU storage is written through NumPy views of the same memory: a slice assignment
                # of a few values costs a fraction of a torch slice + copy_
                for (_, _, _, dest), value in zip(self._slots, values):
                    self._write(dest, value.numpy(), start, first, n)
            except (TypeError, RuntimeError):  # a value on a GPU or needing grad: torch copies below
                pass
            else:
                values = ()
        with torch.no_grad():
            for (_, dest, _, _), value in zip(self._slots, values):
                self._write(dest, value, start, first, n)
        self.pointer = (self.pointer + n) % self.max_sz
        self.size = min(self.size + n, self.max_sz)
        self.added += arrived

    @staticmethod
    def _write(dest, value, start: int, first: int, n: int):
        "dest[start:start + n] = value, wrapping round to the front after `first` rows."
        if first == n:
            dest[start:start + n] = value
        else:
            dest[start:start + first] = value[:first]
            dest[:n - first] = value[first:]

    def sample(self, bs: Optional[int] = None) -> TrainBatch:
        "A uniform sample (with replacement) of `bs` stored transitions."
        if self.size == 0:
            raise RuntimeError("The replay buffer is empty; add transitions before sampling.")
        indices = torch.randint(self.size, (bs or self.bs,), device=self.device)
        step = SimpleStep(**{k: v.index_select(0, indices) for k, v in self.storage.items()})
        return TrainBatch(step, indices=indices)

    def _prefetch(self, batches: int):
        "Draw the next `batches` rounds' samples at once; `next` hands them out one `bs` slice at a time."
        row_bytes = sum(v[0].numel() * v.element_size() for v in self.storage.values())
        batches = max(1, min(batches, self.prefetch_bytes // max(1, row_bytes * self.bs)))
        indices = torch.randint(self.size, (self.bs * batches,), device=self.device)
        self._gather(indices)

    def _gather(self, indices: Tensor):
        # one gather per field, split into each round's batch up front (views, no copies)
        fields = {k: v.index_select(0, indices).split(self.bs) for k, v in self.storage.items()}
        self._ahead = [dict(zip(fields, batch)) for batch in zip(*fields.values())]
        self._ahead_index_parts = indices.split(self.bs)
        self._ahead_indices, self._ahead_pos = indices, 0

    def _env_steps(self) -> int:
        return self._stepper.env_steps if self._stepper is not None else self.added

    def _collect(self, until: int):
        while self._env_steps() < until:
            self.add(_as_step(next(self.source)))

    def next(self) -> TrainBatch:
        if self._owed == 0:
            if self._stepper is None:
                self._stepper = find_pipe(self, lambda node: hasattr(node, "env_steps"), required=False)
            self._collect(self._env_steps() + self.train_every)
            while self.size < max(self.warmup, self.bs):
                self._collect(self._env_steps() + 1)
            self._owed = self.updates
            self._ahead = None
        if self._ahead is None or self._ahead_pos >= len(self._ahead_indices):
            self._prefetch(self._owed)
        self._owed -= 1
        i = self._ahead_pos // self.bs
        self._ahead_pos += self.bs
        return TrainBatch(SimpleStep(**self._ahead[i]), indices=self._ahead_index_parts[i])

    def get_state(self):
        "The stored transitions (only the filled part) and the counters."
        return {**super().get_state(), "size": self.size, "pointer": self.pointer, "added": self.added,
                "owed": self._owed, "storage": {k: v[:self.size] for k, v in self.storage.items()},
                # the rest of the burst's draw, so a restored buffer hands out the very same batches
                "ahead": None if self._ahead is None else self._ahead_indices[self._ahead_pos:].clone()}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            if initial_state["storage"] and not self.storage:
                self._slots = None
                self.storage = {k: torch.empty((self.max_sz, *v.shape[1:]), dtype=v.dtype, device=self.device)
                                for k, v in initial_state["storage"].items()}
            for k, v in initial_state["storage"].items():
                if k not in self.storage or self.storage[k].shape[1:] != v.shape[1:]:
                    raise ValueError(f"The checkpoint's replay field {k!r} does not fit this buffer.")
                self.storage[k][:len(v)] = v.to(self.device)
            self.size, self.pointer = initial_state["size"], initial_state["pointer"]
            self.added, self._owed = initial_state["added"], initial_state["owed"]
            ahead = initial_state.get("ahead")
            if ahead is not None and len(ahead):
                self._gather(ahead.to(self.device))
            else:
                self._ahead = None

    def to(self, device):
        self.device = torch.device(device)
        self.storage = {k: v.to(self.device) for k, v in self.storage.items()}
        self._slots, self._ahead = None, None
        return self
