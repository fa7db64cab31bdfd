"""Replay buffers, in TorchRL's three parts: a storage holds the transitions, a writer chooses the
rows new transitions go to, a sampler chooses the rows a batch is drawn from. Writing returns the
indices written, a sample carries the indices it drew, and `update_priority(indices, priorities)`
feeds priorities back to a sampler that keeps them."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..core import SimpleStep, TrainBatch, check_whole, replay_fields

__all__ = ["TensorStorage", "RoundRobinWriter", "Sampler", "UniformSampler", "MinibatchSampler", "ReplayBuffer"]


def _numpy_view(tensor: Tensor):
    "A NumPy array sharing `tensor`'s memory, or None where there is none (GPU storage, no NumPy dtype)."
    if tensor.device.type != "cpu":
        return None
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError):
        return None


def available_memory(device: torch.device) -> Optional[int]:
    "Bytes that can still be allocated on `device`: Linux's MemAvailable on the CPU, the free memory on CUDA."
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return None


def check_memory(shapes: Dict[str, Tuple[Tuple[int, ...], torch.dtype]], device: torch.device, what: str):
    """Refuse, before allocating, tensors of `shapes` that need more memory than `device` has free,
    rather than failing in the allocator or being killed once the rows fill up."""
    need = sum(torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
               for shape, dtype in shapes.values())
    free = available_memory(device)
    if free is not None and need > free:
        rows = ", ".join(f"{k} {tuple(shape[1:])} {str(dtype).replace('torch.', '')}" for k, (shape, dtype) in shapes.items())
        raise MemoryError(f"{what} needs {need / 2**30:.1f} GiB on {device} for its rows ({rows}), but only "
                          f"{free / 2**30:.1f} GiB are available. Give it fewer rows (e.g. a smaller buffer_size).")


class TensorStorage:
    """`max_sz` rows per field in preallocated tensors on `device`, allocated on the first write from
    that step's shapes and dtypes. `fields` names the fields kept; None keeps every field the first
    step has that `register_field` marks for replay (the core learning fields and any extras)."""

    def __init__(self, max_sz: int, device: Optional[Union[str, torch.device]] = None,
                 fields: Optional[Sequence[str]] = None):
        self.max_sz = check_whole(max_sz, "max_sz")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.fields = tuple(fields) if fields is not None else None
        self.tensors: Dict[str, Tensor] = {}
        self._bytes: Tuple[str, ...] = ()  # the uint8 fields, sampled as float32
        self._plan = None

    def __len__(self) -> int:
        return self.max_sz

    def _kept(self, step: SimpleStep) -> Dict[str, Tensor]:
        names = self.fields if self.fields is not None else replay_fields(step.fields())
        return {k: v for k in names if (v := getattr(step, k, None)) is not None}

    def _allocate(self, step: SimpleStep):
        kept = self._kept(step)
        if getattr(step, "nsteps", None) is not None and "nsteps" not in kept:
            raise ValueError(f"The steps are n-step transitions (they carry nsteps), but this buffer keeps fields "
                             f"{list(self.fields)} without 'nsteps': the TD targets would discount their summed "
                             "rewards' bootstrap by γ instead of γ^k. Add 'nsteps' to fields.")
        if not kept:
            raise ValueError(f"None of the step's fields {sorted(step.fields())} is stored by this buffer "
                             f"(fields={self.fields}).")
        shapes = {k: ((self.max_sz, *v.shape[1:]), v.dtype) for k, v in kept.items()}
        check_memory(shapes, self.device, f"{type(self).__name__}(max_sz={self.max_sz})")
        self._hold({k: torch.empty(shape, dtype=dtype, device=self.device) for k, (shape, dtype) in shapes.items()})

    def _hold(self, tensors: Dict[str, Tensor]):
        "Take `tensors` as the storage, noting its uint8 fields; a write works out its plan anew."
        self.tensors = tensors
        self._bytes = tuple(k for k, v in tensors.items() if v.dtype == torch.uint8)
        self._plan = None

    def _make_plan(self):
        "What a write needs per field, worked out once instead of on every env step."
        slots = [(k, v, v.shape[1:], _numpy_view(v)) for k, v in self.tensors.items()]
        numpy_writes = all(view is not None for *_, view in slots)
        self._plan = (slots, numpy_writes)
        self._names = None  # the field names of the last step checked

    def write(self, step: SimpleStep, start: int, n: int):
        """Write the last `n` rows of `step` to rows `start, start + 1, …` (wrapping round to row 0)."""
        if not self.tensors:
            self._allocate(step)
        if self._plan is None:
            self._make_plan()
        slots, numpy_writes = self._plan
        values = [getattr(step, k) for k, _, _, _ in slots]
        names = step.__dict__.keys()
        if names != self._names:  # the fields differ from the last step's: check they still fit
            kept = list(self._kept(step))
            if sorted(kept) != sorted(self.tensors):
                raise ValueError(f"Steps changed fields: the buffer holds {sorted(self.tensors)}, got {sorted(kept)}.")
            self._names = set(names)
        arrived = values[0].shape[0]
        for (k, _, row_shape, _), value in zip(slots, values):
            if value.shape[1:] != row_shape or value.shape[0] != arrived:
                raise ValueError(f"Field {k!r} has shape {tuple(value.shape)}, the buffer stores rows of "
                                 f"{tuple(row_shape)} and this step has {arrived} transitions.")
        if n < arrived:
            values = [v[arrived - n:] for v in values]
        first = min(n, self.max_sz - start)
        if numpy_writes:
            try:
                # CPU storage is written through NumPy views of the same memory: a slice assignment
                # of a few values costs a fraction of a torch slice + copy_
                for (_, _, _, dest), value in zip(slots, values):
                    self._write(dest, value.numpy(), start, first, n)
            except (TypeError, RuntimeError):  # a value on a GPU or needing grad: torch copies below
                pass
            else:
                return
        with torch.no_grad():
            for (_, dest, _, _), value in zip(slots, values):
                self._write(dest, value, start, first, n)

    @staticmethod
    def _write(dest, value, start: int, first: int, n: int):
        "dest[start:start + n] = value, wrapping round to the front after `first` rows."
        if first == n:
            dest[start:start + n] = value
        else:
            dest[start:start + first] = value[:first]
            dest[:n - first] = value[first:]

    def get(self, indices: Tensor) -> SimpleStep:
        """The transitions at `indices`, one gather per field. uint8 fields (pixel observations, kept
        as uint8 for 4x less memory) come out as float32, as the agent feeds them to its network."""
        step = SimpleStep(**{k: v.index_select(0, indices) for k, v in self.tensors.items()})
        for k in self._bytes:
            setattr(step, k, getattr(step, k).float())
        return step

    def state_dict(self, size: int) -> Dict[str, Tensor]:
        "The first `size` rows of every field (the filled part)."
        return {k: v[:size] for k, v in self.tensors.items()}

    def check_state(self, state: Dict[str, Tensor]):
        "Raise a ValueError when `state` cannot be loaded into this storage (checked before anything changes)."
        for k, v in state.items():
            if len(v) > self.max_sz:
                raise ValueError(f"the checkpoint's buffer holds {len(v)} transitions, more than this buffer's "
                                 f"max_sz={self.max_sz}; build it with max_sz >= {len(v)}.")
            if self.tensors and (k not in self.tensors or self.tensors[k].shape[1:] != v.shape[1:]
                                 or self.tensors[k].dtype != v.dtype):
                raise ValueError(f"the checkpoint's buffer field {k!r} (rows of {tuple(v.shape[1:])}, {v.dtype}) "
                                 "does not fit this buffer.")
        if self.tensors and state and set(state) != set(self.tensors):
            raise ValueError(f"the checkpoint's buffer holds fields {sorted(state)}, this one {sorted(self.tensors)}.")
        if self.fields is not None and state and not set(state) <= set(self.fields):
            raise ValueError(f"the checkpoint's buffer holds fields {sorted(state)}, this one keeps {list(self.fields)}.")

    def load_state_dict(self, state: Dict[str, Tensor]):
        self.check_state(state)
        if state and not self.tensors:
            self._hold({k: torch.empty((self.max_sz, *v.shape[1:]), dtype=v.dtype, device=self.device)
                        for k, v in state.items()})
        for k, v in state.items():
            self.tensors[k][:len(v)] = v.to(self.device)

    def to(self, device):
        self.device = torch.device(device)
        self._hold({k: v.to(self.device) for k, v in self.tensors.items()})
        return self


class RoundRobinWriter:
    "Writes new transitions after the last ones, overwriting the oldest once the storage is full (a ring)."

    def __init__(self, max_sz: int):
        self.max_sz = max_sz
        self.pointer = 0
        self.size = 0

    def claim(self, n: int) -> Tuple[int, int]:
        """Where `n` new transitions go: (first row, how many are kept). Of more than `max_sz` only the
        newest `max_sz` are kept. Nothing moves until `advance`, once they are written."""
        return self.pointer, min(n, self.max_sz)

    def advance(self, start: int, kept: int) -> Tensor:
        "Mark `kept` rows from `start` written; returns their indices."
        self.pointer = (start + kept) % self.max_sz
        self.size = min(self.size + kept, self.max_sz)
        if start + kept <= self.max_sz:
            return torch.arange(start, start + kept)
        return torch.arange(start, start + kept) % self.max_sz

    def state_dict(self):
        return {"pointer": self.pointer, "size": self.size}

    def load_state_dict(self, state):
        self.pointer, self.size = state["pointer"], state["size"]


class Sampler(ABC):
    """Chooses the rows of each batch. `sample(size, bs)` returns the indices (into the first `size`
    rows), or the indices and per-row importance weights as a pair; `on_write(indices)` hears of
    newly written rows; `update_priority` takes per-row priorities where the sampler keeps them;
    `set_capacity(max_sz)` is told the buffer's size once, when the buffer is built."""

    @abstractmethod
    def sample(self, size: int, bs: int, device) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        "Indices of `bs` rows among the first `size` (and their importance weights, for a weighted sampler)."

    def set_capacity(self, max_sz: int):
        pass

    def on_write(self, indices: Tensor):
        pass

    def update_priority(self, indices: Tensor, priorities: Tensor):
        raise TypeError(f"{type(self).__name__} keeps no priorities; use a prioritized sampler to feed "
                        "priorities back.")

    def state_dict(self):
        return {}

    def check_state(self, state):
        "Raise a ValueError when `state` cannot be loaded into this sampler (checked before anything changes)."
        if state and state.get("prioritized"):
            raise ValueError(f"the checkpoint's buffer was sampled by priority, this one by a {type(self).__name__}; "
                             "build the learner with prioritized replay, as the checkpoint's run was.")

    def load_state_dict(self, state):
        pass

    def to(self, device):
        return self


class UniformSampler(Sampler):
    "Uniform over the stored rows, with replacement: one `randint` per batch."

    def sample(self, size: int, bs: int, device) -> Tensor:
        return torch.randint(size, (bs,), device=device)


class MinibatchSampler(Sampler):
    """Epochs over the stored rows without replacement: each epoch is one random permutation, handed
    out `bs` rows at a time (the last minibatch of an epoch may be smaller), so every row is drawn
    exactly once per epoch, as PPO's passes over a rollout need. `epoch` counts finished epochs."""

    def __init__(self):
        self._order: Optional[Tensor] = None
        self._pos = 0
        self.epoch = 0

    def sample(self, size: int, bs: int, device) -> Tensor:
        if self._order is None or len(self._order) != size:
            self._order, self._pos = torch.randperm(size, device=device), 0
        batch = self._order[self._pos:self._pos + bs]
        self._pos += len(batch)
        if self._pos >= size:
            self._order, self.epoch = None, self.epoch + 1
        return batch

    def new_epoch(self):
        "Drop the rest of the current epoch (new data arrived): the next sample starts a fresh permutation."
        self._order, self._pos = None, 0

    def state_dict(self):
        return {"order": self._order, "pos": self._pos, "epoch": self.epoch}

    def load_state_dict(self, state):
        self._order, self._pos, self.epoch = state["order"], state["pos"], state["epoch"]


class ReplayBuffer:
    """A buffer of `max_sz` transitions on `device`: a `TensorStorage`, a `RoundRobinWriter` and a
    sampler (`UniformSampler` by default; `MinibatchSampler` for epochs without replacement;
    `PrioritizedSampler` for prioritized replay, whose batches also carry importance `weights`).

    `extend(step)` stores a batch of transitions and returns the indices written; `sample(bs)`
    returns a `TrainBatch` whose `indices` are the rows drawn; `update_priority(indices, p)` passes
    priorities to the sampler. A buffer only stores and samples: when to collect and how many
    gradient rounds to run is a `Collector`'s job."""

    def __init__(self, max_sz: int = 10_000, sampler: Optional[Sampler] = None,
                 device: Optional[Union[str, torch.device]] = None, fields: Optional[Sequence[str]] = None):
        self.storage = TensorStorage(max_sz, device, fields)
        self.writer = RoundRobinWriter(max_sz)
        self.sampler = sampler if sampler is not None else UniformSampler()
        self.sampler.set_capacity(max_sz)
        self._hears_writes = type(self.sampler).on_write is not Sampler.on_write
        self.added = 0

    @property
    def max_sz(self) -> int:
        return self.storage.max_sz

    @property
    def device(self) -> torch.device:
        return self.storage.device

    def __len__(self) -> int:
        return self.writer.size

    def extend(self, step: SimpleStep) -> Tensor:
        "Store a batch of transitions, overwriting the oldest once full; returns the rows written."
        n = len(step)
        start, kept = self.writer.claim(n)
        self.storage.write(step, start, kept)  # a refused step raises here, before anything moved
        indices = self.writer.advance(start, kept)
        self.added += n
        if self._hears_writes:
            self.sampler.on_write(indices)
        return indices

    def sample(self, bs: int) -> TrainBatch:
        "A batch of `bs` stored transitions chosen by the sampler, with the indices drawn."
        if len(self) == 0:
            raise RuntimeError("The replay buffer is empty; add transitions before sampling.")
        indices = self.sampler.sample(len(self), bs, self.storage.device)
        if type(indices) is tuple:  # a weighted sampler: the importance weights travel with the batch
            indices, weights = indices
            return TrainBatch(self.storage.get(indices), indices=indices, weights=weights)
        return TrainBatch(self.storage.get(indices), indices=indices)

    def update_priority(self, indices: Tensor, priorities: Tensor):
        "Give the rows at `indices` new priorities (for samplers that keep them)."
        self.sampler.update_priority(indices, priorities)

    def state_dict(self):
        return {"storage": self.storage.state_dict(len(self)), "writer": self.writer.state_dict(),
                "sampler": self.sampler.state_dict(), "added": self.added}

    def check_state(self, state):
        "Raise a ValueError when `state` cannot be loaded into this buffer (nothing is changed)."
        self.storage.check_state(state["storage"])
        self.sampler.check_state(state["sampler"])

    def load_state_dict(self, state):
        self.check_state(state)
        self.storage.load_state_dict(state["storage"])
        self.writer.load_state_dict(state["writer"])
        self.sampler.load_state_dict(state["sampler"])
        self.added = state["added"]

    def to(self, device):
        self.storage.to(device)
        self.sampler.to(device)
        return self
