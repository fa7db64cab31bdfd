"""The stage base class and walking a pipeline graph.

Every stage is a `torchdata.nodes.BaseNode` that takes its source as the first argument, the way a
fastrl datapipe did: `pipe = SoftTargetUpdater(pipe, critic, tau=0.005)`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Type, Union

import torch
from torch import nn
from torchdata.nodes import BaseNode

__all__ = ["Pipe", "Cycler", "find_pipes", "find_pipe", "pipe_to_device", "pipe_graph"]


class Pipe(BaseNode):
    """A stage with one source. Subclasses override `next()` (pull from `self.source`, transform,
    return) and, when they keep counters, `get_state`/`reset` so the pipeline can be checkpointed.

    A loss stage names the `losses` key it fills in `fills`, so errors can point at it.

    `records` is the record bus of the `Learner` that runs this stage; it is `None` until a learner
    adopts the pipeline, so a stage used on its own records nothing.
    """

    def __init__(self, source: Optional[BaseNode] = None):
        super().__init__()
        self.source = source
        self.records = None

    # Plain attributes (counters, schedules) that make up the stage's state: `get_state` reports them
    # and `reset(initial_state)` puts them back, so a stage with only such state needs no code for it.
    state_attrs: Tuple[str, ...] = ()

    def reset(self, initial_state: Optional[Dict[str, Any]] = None):
        super().reset(initial_state)
        if self.source is not None:
            self.source.reset(initial_state.get("source") if initial_state else None)
        if initial_state:
            for name in self.state_attrs:
                setattr(self, name, initial_state[name])

    def get_state(self) -> Dict[str, Any]:
        return {"source": self.source.state_dict() if self.source is not None else None,
                **{name: getattr(self, name) for name in self.state_attrs}}

    def next(self):
        return next(self.source)

    def record(self, name: str, value):
        if self.records is not None:
            self.records.add(name, value)

    def gauge(self, name: str, value: float):
        "Report the current value of a per-step quantity (only the latest is kept)."
        if self.records is not None:
            self.records.set(name, value)

    def to(self, device):
        "Move the modules and tensors this stage owns; `pipe_to_device` calls it on every stage."
        for name, value in vars(self).items():
            if isinstance(value, nn.Module):
                value.to(device)
            elif isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self

    def cycle(self, count: Optional[int] = None) -> "Cycler":
        "Replay this pipe `count` times (forever with `None`), fastrl's `.cycle`: `pipe.cycle(count=50)`."
        return Cycler(self, count)

    def __repr__(self):
        return f"{type(self).__name__}()"


class Cycler(Pipe):
    """Restarts its source each time it runs dry, `count` passes in all (endless with `None`).
    Restarting calls `reset()` on the source, which rewinds iterables but keeps stage counters
    (an exploration schedule keeps decaying across passes)."""

    def __init__(self, source, count: Optional[int] = None):
        super().__init__(source)
        if count is not None and count < 1:
            raise ValueError(f"cycle(count=) must be >= 1 (or None to repeat forever), got {count}.")
        self.count = count
        self.passes = 1
        self._restarted = False  # restarted and nothing came since

    def reset(self, initial_state=None):
        super().reset(initial_state)
        self.passes = initial_state["passes"] if initial_state else 1
        self._restarted = False

    def get_state(self):
        return {**super().get_state(), "passes": self.passes}

    def next(self):
        while True:
            try:
                item = next(self.source)
                self._restarted = False
                return item
            except StopIteration:
                if self.count is not None and self.passes >= self.count:
                    raise
                if self._restarted:
                    raise ValueError(f"cycle(): {type(self.source).__name__} yields nothing after a restart (a "
                                     "GymStepper at its cap n stays exhausted), so cycling it would never end; "
                                     "cycle a source that rewinds, or drop the cap.") from None
                self.passes += 1
                self._restarted = True
                self.source.reset()


def _children(node) -> Iterator[BaseNode]:
    for value in vars(node).values():
        if isinstance(value, BaseNode):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, BaseNode))


def pipe_graph(pipe: BaseNode) -> List[BaseNode]:
    "Every node reachable from `pipe` through its sources (and agents), each once, `pipe` first."
    seen, order, stack = set(), [], [pipe]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        order.append(node)
        stack.extend(reversed(list(_children(node))))
    return order


def find_pipes(pipe: BaseNode, match: Union[Type, Callable[[BaseNode], bool]]) -> List[BaseNode]:
    "All nodes upstream of (and including) `pipe` that are instances of `match` or satisfy it."
    test = (lambda n: isinstance(n, match)) if isinstance(match, type) or isinstance(match, tuple) else match
    return [n for n in pipe_graph(pipe) if test(n)]


def find_pipe(pipe: BaseNode, match, required: bool = True):
    "The nearest node matching `match`; raises a `LookupError` naming what is missing if none."
    found = find_pipes(pipe, match)
    if not found:
        if required:
            what = getattr(match, "__name__", repr(match))
            raise LookupError(f"No {what} stage upstream of {type(pipe).__name__}; add one to the pipeline.")
        return None
    return found[0]


def pipe_to_device(pipe: BaseNode, device, debug: bool = False):
    "Move every model and tensor held by the stages of `pipe` to `device`."
    device = torch.device(device)
    for node in pipe_graph(pipe):
        if hasattr(node, "to"):
            if debug:
                print(f"Moving {type(node).__name__} to {device}")
            node.to(device)
    return pipe
