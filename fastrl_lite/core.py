"""The data that flows through fastrl_lite and the small helpers every layer uses."""
from __future__ import annotations

import dataclasses
import math
import numbers
import random
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["SimpleStep", "FieldSpec", "register_field", "field_spec", "replay_fields", "env_steps_of", "TrainBatch",
           "Records", "check_seed", "set_seed", "default_device", "evaluating", "denormals_flushed",
           "flushed_denormals"]


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How a `SimpleStep` field is treated downstream of the stepper.

    `nstep` says what an n-step transition keeps of the steps it merges: `"first"` (the first step's
    value: the state acted on, the action taken, an agent's log-prob), `"last"` (the last step's
    value: `next_state`, `terminated`), or `"discounted_sum"` (r0 + γ r1 + … + γ^(k-1) r_(k-1)).
    `replay` says whether a replay buffer stores it by default (counters and rendered frames cost a
    copy per env step and are not read by the losses)."""
    nstep: str = "first"
    replay: bool = True


_NSTEP_RULES = ("first", "last", "discounted_sum")

# The fields every transition has; an agent or an algorithm adds its own with `register_field`.
FIELD_SPECS: Dict[str, FieldSpec] = {
    "state": FieldSpec("first"), "action": FieldSpec("first"), "reward": FieldSpec("discounted_sum"),
    "next_state": FieldSpec("last"), "terminated": FieldSpec("last"), "truncated": FieldSpec("last"),
    "env_id": FieldSpec("last", replay=False), "episode_n": FieldSpec("first", replay=False),
    "step_n": FieldSpec("first", replay=False), "nsteps": FieldSpec("last"),
    "image": FieldSpec("first", replay=False),
}
CORE_FIELDS = tuple(FIELD_SPECS)


def register_field(name: str, nstep: str = "first", replay: bool = True) -> FieldSpec:
    """Declare how a new `SimpleStep` field is merged into n-step transitions and whether replay
    buffers store it. Fields nobody declared are taken as `FieldSpec("first", replay=True)`."""
    if nstep not in _NSTEP_RULES:
        raise ValueError(f"nstep must be one of {_NSTEP_RULES}, got {nstep!r}.")
    if name in CORE_FIELDS:
        raise ValueError(f"{name!r} is a core SimpleStep field; its rules are fixed.")
    if not name.isidentifier() or name.startswith("_") or name in _RESERVED:
        raise ValueError(f"{name!r} cannot be a SimpleStep field: use a plain identifier that is not a method name.")
    FIELD_SPECS[name] = spec = FieldSpec(nstep, replay)
    return spec


def field_spec(name: str) -> FieldSpec:
    "The rules of field `name` (the defaults for fields nobody registered)."
    return FIELD_SPECS.get(name) or _DEFAULT_SPEC


_DEFAULT_SPEC = FieldSpec()


def replay_fields(names: Iterable[str]) -> Tuple[str, ...]:
    "The fields among `names` a replay buffer stores by default."
    return tuple(k for k in names if field_spec(k).replay)


class SimpleStep:
    """A batch of transitions: every field is a tensor whose first dimension is the batch.

    The core fields are `state, action, reward, next_state, terminated, truncated, env_id,
    episode_n, step_n` (and `nsteps` after n-step merging, `image` when frames are rendered); a
    field that is absent reads as None. The record is open: an agent's extras (a log-prob, a value)
    and an algorithm's fields (returns, advantages) are set like any other, `SimpleStep(log_prob=…)`
    or `step.log_prob = …`, and `register_field` says how n-step merging and replay treat them.

    `terminated` means the MDP ended (no bootstrapping from `next_state`); `truncated` means a time
    limit cut the episode (bootstrapping from `next_state` is still right). `nsteps` is how many env
    steps an n-step transition spans, so the bootstrap discount is `gamma ** nsteps`.

    `env_steps`, not a field, is how many env steps produced this item (the stepper sets it, stages
    that merge or drop transitions carry it on), so a collector counts env steps from the data.
    """
    state = action = reward = next_state = terminated = truncated = None
    env_id = episode_n = step_n = nsteps = image = None
    env_steps: Optional[int] = None

    def __init__(self, *args: Optional[Tensor], **fields: Optional[Tensor]):
        if args:
            if len(args) > len(CORE_FIELDS):
                raise TypeError(f"SimpleStep takes at most {len(CORE_FIELDS)} positional fields "
                                f"({', '.join(CORE_FIELDS)}).")
            for name, value in zip(CORE_FIELDS, args):
                if name in fields:
                    raise TypeError(f"SimpleStep got field {name!r} twice.")
                fields[name] = value
        if not fields.keys() <= _KNOWN:  # a new name: check it once, then it is known
            for name in fields.keys() - _KNOWN:
                if name in _RESERVED or name.startswith("_") or not name.isidentifier():
                    raise TypeError(f"{name!r} cannot be a SimpleStep field: it names a SimpleStep method or is "
                                    "private.")
                _KNOWN.add(name)
        self.__dict__.update(fields)  # a None stays an absent field: fields() lists tensors only

    def fields(self) -> Dict[str, Tensor]:
        "The fields that hold a tensor, by name."
        return {k: v for k, v in self.__dict__.items() if isinstance(v, Tensor)}

    def replace(self, **changes) -> "SimpleStep":
        "A new step with some fields changed (None removes one); the others are shared, not copied."
        out = SimpleStep(**{**self.fields(), **changes})
        out.env_steps = self.env_steps
        return out

    def __len__(self) -> int:
        for value in self.__dict__.values():
            if isinstance(value, Tensor):
                return value.shape[0]
        return 0

    def __getitem__(self, index) -> "SimpleStep":
        return SimpleStep(**{k: v[index] for k, v in self.fields().items()})

    def __eq__(self, other) -> bool:
        if not isinstance(other, SimpleStep):
            return NotImplemented
        a, b = self.fields(), other.fields()
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    __hash__ = None

    def __repr__(self) -> str:
        body = ",\n".join(f"  {k}={v!r}".replace("\n", "\n  ") for k, v in self.fields().items())
        return f"SimpleStep(\n{body})" if body else "SimpleStep()"

    def to(self, device, non_blocking: bool = False) -> "SimpleStep":
        out = SimpleStep(**{k: v.to(device, non_blocking=non_blocking) for k, v in self.fields().items()})
        out.env_steps = self.env_steps
        return out

    @property
    def done(self) -> Tensor:
        "Episode ended, for whichever reason."
        return self.terminated | self.truncated

    @classmethod
    def cat(cls, steps: Iterable["SimpleStep"]) -> "SimpleStep":
        "Concatenate batches along the batch dimension (their `env_steps` add up)."
        steps = list(steps)
        if not steps:
            raise ValueError("SimpleStep.cat needs at least one step.")
        names = steps[0].fields().keys()
        for s in steps[1:]:
            if s.fields().keys() != names:
                raise ValueError(f"SimpleStep.cat needs steps with the same fields, got {sorted(names)} "
                                 f"and {sorted(s.fields())}.")
        out = cls(**{k: torch.cat([getattr(s, k) for s in steps]) for k in names})
        counts = [s.env_steps for s in steps]
        out.env_steps = None if None in counts else sum(counts)
        return out


# names a field cannot take: SimpleStep's methods and properties
_RESERVED = frozenset(n for n in dir(SimpleStep) if not n.startswith("_")) - set(CORE_FIELDS)
_KNOWN = set(CORE_FIELDS)  # field names already checked


def env_steps_of(item) -> int:
    """How many env steps an item from an env pipeline stands for: its `env_steps` when a stepper set
    it, else one per transition; a list of steps (a `Batcher`'s) counts each."""
    if isinstance(item, SimpleStep):
        return item.env_steps if item.env_steps is not None else len(item)
    return sum(env_steps_of(s) for s in item)


@dataclasses.dataclass
class TrainBatch:
    """One gradient round's item on the learner side: sampled transitions plus the losses the
    loss stages fill (`losses['critic']`) and the optimizer stages consume. A prioritized sampler
    adds per-sample importance `weights`; a loss stage given weights fills `td_error`, which a
    `PriorityUpdater` feeds back at `indices`."""
    step: SimpleStep
    losses: Dict[str, Tensor] = dataclasses.field(default_factory=dict)
    targets: Optional[Tensor] = None
    indices: Optional[Tensor] = None
    weights: Optional[Tensor] = None
    td_error: Optional[Tensor] = None


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


def check_seed(seed) -> int:
    "A seed is a whole number in [0, 2**32 - 1], the range NumPy and gymnasium take."
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"A seed must be a whole number in [0, 2**32 - 1], got {seed!r}.")
    return int(seed)


def check_whole(value, name: str, least: int = 1) -> int:
    """`value` as an int, if it is a whole number >= `least`; an integral float such as 1e6 counts.
    Anything else raises a ValueError that names the setting."""
    whole = isinstance(value, (numbers.Integral, np.integer)) or (
        isinstance(value, (float, np.floating)) and float(value).is_integer())
    if isinstance(value, bool) or not whole or value < least:
        raise ValueError(f"{name} must be a whole number >= {least}, got {value!r}.")
    return int(value)


def check_flag(value, name: str) -> bool:
    "`value` as a bool, if it is True or False; anything else (a string such as 'no', a number) raises."
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}.")
    return bool(value)


def check_real(value, name: str, low: Optional[float] = None, high: Optional[float] = None,
               low_open: bool = False, high_open: bool = False, hint: str = "") -> float:
    """`value` as a float, if it is a finite number within [low, high] (an open end where
    `low_open`/`high_open`); anything else raises a ValueError that names the setting."""
    ok = isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        where = "" if low is None and high is None else " in " + (
            f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
            f"{'inf' if high is None else high}{')' if high_open else ']'}")
        raise ValueError(f"{name} must be a finite number{where}, got {value!r}.{' ' + hint if hint else ''}")
    return float(value)


def check_device(device) -> torch.device:
    "`device` as a torch.device (None is the CPU), if this machine has it."
    if device is None:
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a device torch knows ('cpu', 'cuda', 'cuda:1', ...): {error}") \
            from error
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA"
        raise ValueError(f"device={str(device)!r} but this machine has {have} (a CPU build of torch, or no GPU "
                         "visible); use device='cpu'.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device='mps' but this machine has no MPS device; use device='cpu'.")
    return device


def set_seed(seed: int, deterministic: bool = False):
    "Seed Python, NumPy and torch; `deterministic` also asks torch for deterministic kernels."
    check_seed(seed)
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


def denormals_flushed() -> bool:
    "Whether this thread's float arithmetic flushes subnormal numbers to zero (see `flushed_denormals`)."
    smallest = torch.ones(1, dtype=torch.int32, device="cpu").view(torch.float32)  # 1.4e-45, made from its bits
    return bool((smallest * 1.0)[0] == 0)


@contextmanager
def flushed_denormals(on: bool = True) -> Iterator[bool]:
    """Run the block with subnormal floats (below 1.2e-38 in float32) flushed to zero on the CPU,
    then restore this thread's previous mode; yields whether they are flushed.

    Training drives values into that range as a matter of course: Adam's moment estimates of a
    dead ReLU unit decay geometrically towards zero. Where the CPU handles subnormals in microcode
    (most Intel cores), each such operation costs tens of times a normal one, and a DQN run on
    CartPole spent a third of its time there. TensorFlow and XLA flush them on the CPU by default;
    so does `Learner.fit` unless `Learner.flush_denormal` is False, and so does the command line.
    Numbers that would have been subnormal become 0; nothing larger changes.

    The mode belongs to each thread (`torch.set_flush_denormal`): torch's intra-op worker threads
    take the mode of the thread that starts them, so a process whose first parallel torch op runs
    inside the block flushes there too, and keeps doing so after it."""
    on = check_flag(on, "flushed_denormals(on=...)")
    already = denormals_flushed()
    if already or not on:
        yield already
        return
    flushed = torch.set_flush_denormal(True)  # False where the CPU cannot flush them: nothing changed
    try:
        yield flushed
    finally:
        if flushed:
            torch.set_flush_denormal(False)
