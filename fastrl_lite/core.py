"""The data that flows through fastrl_lite and the small helpers every layer uses."""
from __future__ import annotations

import dataclasses
import random
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SimpleStep", "TrainBatch", "Records", "set_seed", "default_device", "evaluating"]


@dataclasses.dataclass
class SimpleStep:
    """A batch of transitions: every field is a tensor whose first dimension is the batch.

    `terminated` means the MDP ended (no bootstrapping from `next_state`); `truncated` means a time
    limit cut the episode (bootstrapping from `next_state` is still right). `nsteps` is how many env
    steps an n-step transition spans, so the bootstrap discount is `gamma ** nsteps`.
    """
    state: Optional[Tensor] = None
    action: Optional[Tensor] = None
    reward: Optional[Tensor] = None
    next_state: Optional[Tensor] = None
    terminated: Optional[Tensor] = None
    truncated: Optional[Tensor] = None
    env_id: Optional[Tensor] = None
    episode_n: Optional[Tensor] = None
    step_n: Optional[Tensor] = None
    nsteps: Optional[Tensor] = None
    image: Optional[Tensor] = None

    def fields(self) -> Dict[str, Tensor]:
        "The fields that hold a tensor, by name."
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    def __len__(self) -> int:
        for value in self.fields().values():
            return value.shape[0]
        return 0

    def __getitem__(self, index) -> "SimpleStep":
        return SimpleStep(**{k: v[index] for k, v in self.fields().items()})

    def to(self, device, non_blocking: bool = False) -> "SimpleStep":
        return SimpleStep(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.fields().items()})

    @property
    def done(self) -> Tensor:
        "Episode ended, for whichever reason."
        return self.terminated | self.truncated

    @classmethod
    def cat(cls, steps: Iterable["SimpleStep"]) -> "SimpleStep":
        "Concatenate batches along the batch dimension."
        steps = list(steps)
        if not steps:
            raise ValueError("SimpleStep.cat needs at least one step.")
        names = steps[0].fields().keys()
        return cls(**{k: torch.cat([getattr(s, k) for s in steps]) for k in names})


@dataclasses.dataclass
class TrainBatch:
    """One gradient round's item on the learner side: sampled transitions plus the losses the
    loss stages fill (`losses['critic']`) and the optimizer stages consume."""
    step: SimpleStep
    losses: Dict[str, Tensor] = dataclasses.field(default_factory=dict)
    targets: Optional[Tensor] = None
    indices: Optional[Tensor] = None


class _TensorSeries:
    "A growable 1-d tensor: appending writes in place, so no host sync and no list of tensors."

    def __init__(self, device):
        self.data = torch.empty(1024, device=device)
        self.n = 0

    def append(self, value: Tensor):
        if self.n == self.data.numel():
            self.data = torch.cat([self.data, torch.empty_like(self.data)])
        self.data.select(0, self.n).copy_(value.detach().reshape(()))
        self.n += 1

    def values(self) -> Tensor:
        return self.data[:self.n]


class Records:
    """The record bus a `Learner` owns. Stages push losses as detached tensors (kept on device,
    reduced once per epoch), host-side events such as episode returns as Python values, and
    per-step gauges such as ε with `set`, which keeps only the latest value so nothing grows with
    the number of env steps."""

    def __init__(self):
        self.series: Dict[str, _TensorSeries] = {}
        self.lists: Dict[str, List] = {}
        self.gauges: Dict[str, float] = {}
        self._marks: Dict[str, int] = {}

    def set(self, name: str, value: float):
        "The current value of a gauge (ε, a learning rate): only the latest one is kept."
        self.gauges[name] = value

    def add(self, name: str, value: Union[Tensor, float, tuple]):
        if isinstance(value, Tensor):
            if name not in self.series:
                self.series[name] = _TensorSeries(value.device)
            self.series[name].append(value)
        else:
            self.lists.setdefault(name, []).append(value)

    def values(self, name: str):
        "Every value recorded under `name`: a tensor for tensor series, a list otherwise."
        if name in self.series:
            return self.series[name].values()
        return self.lists.get(name, [])

    def names(self) -> List[str]:
        return list(self.series) + list(self.lists)

    def since_mark(self, name: str):
        "Values recorded since the last `mark()` (an epoch boundary)."
        return self.values(name)[self._marks.get(name, 0):]

    def mark(self):
        for name in self.names():
            self._marks[name] = len(self.values(name))

    def clear(self):
        self.series.clear()
        self.lists.clear()
        self.gauges.clear()
        self._marks.clear()


def set_seed(seed: int, deterministic: bool = False):
    "Seed Python, NumPy and torch; `deterministic` also asks torch for deterministic kernels."
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def default_device(use_cuda: Optional[bool] = None) -> torch.device:
    "CUDA when asked for (or, with `use_cuda=None`, when available), else CPU."
    if use_cuda is None:
        use_cuda = torch.cuda.is_available()
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("use_cuda=True but torch sees no CUDA device; pass use_cuda=False.")
    return torch.device("cuda" if use_cuda else "cpu")


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    "Put `model` in eval mode for the block (exploration switches off), then restore its mode."
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
