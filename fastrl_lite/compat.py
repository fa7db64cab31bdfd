"""fastrl's names and the parameters fastrl_lite accepts only to keep them, so a fastrl notebook's
cells run here with only the imports changed: `from fastrl_lite.compat import *`.

Each name does real work in fastrl_lite's terms; where fastrl needed a separate object (an epoch or
batch counter pipe) and fastrl_lite keeps the job in the `Learner`, the docstring says so. Nothing
else in fastrl_lite defines a fastrl alias or an ignored parameter.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Iterable, Optional, Sequence, Type

import torch
from torch import tensor

from .learner import Learner, Update
from .learner import LossCollector as _LossCollector
from .loggers import ProgressBarLogger as _ProgressBarLogger
from .loggers.video import FrameRecorder
from .pipes import Pipe

__all__ = ["dp", "IterableWrapper", "DataBlock", "L", "test_eq", "tensor", "EpocherCollector", "BatchCollector",
           "VSCodeTransformBlock", "FrameRecorder", "BasicOptStepper", "LossCollector", "ProgressBarLogger",
           "DQNAgent", "DDPGAgent"]


class IterableWrapper(Pipe):
    """A pipe over any iterable (a tensor yields its rows), restarted by `reset()`; with `Pipe`'s
    `.cycle(count=)` and `.to(device=)` it stands in for torchdata's old `dp.iter.IterableWrapper`."""

    def __init__(self, iterable: Iterable):
        super().__init__(None)
        self.iterable = iterable
        self._iterator = None

    def reset(self, initial_state=None):
        super().reset(initial_state)
        self._iterator = iter(self.iterable)

    def next(self):
        return next(self._iterator)

    def to(self, device):
        if isinstance(self.iterable, torch.Tensor):
            self.iterable = self.iterable.to(device)
        return self


# torchdata's deleted DataPipes namespace, as far as notebooks reach into it: `dp.iter.IterableWrapper`.
dp = SimpleNamespace(iter=SimpleNamespace(IterableWrapper=IterableWrapper))


class L(list):
    "fastcore's `L` where a notebook only needs a list: `L(block.dataloaders([...]))`."

    def __init__(self, items=None):
        super().__init__([] if items is None else items if isinstance(items, Iterable) else [items])


def test_eq(a, b):
    "fastcore's `test_eq`: `a == b` (element-wise for tensors) or an AssertionError showing both."
    equal = torch.equal(a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b
    if not equal:
        raise AssertionError(f"test_eq: {a!r} != {b!r}")


test_eq.__test__ = False  # a helper for notebooks and tests, not a test pytest should collect


class DataBlock:
    """Holds one block per dataloader (the first for training, the next for validation). A block is a
    callable `env_ids -> pipe` such as `GymTransformBlock(...)`, or a tuple whose first item builds the
    pipe and whose other items each wrap it (`(GymTransformBlock(...), VSCodeTransformBlock())`)."""

    def __init__(self, *blocks):
        if not blocks:
            raise ValueError("DataBlock needs at least one block, e.g. DataBlock(GymTransformBlock(agent=agent)).")
        self.blocks = [block if isinstance(block, tuple) else (block,) for block in blocks]

    def dataloaders(self, source: Sequence) -> list:
        "One pipe per block, each built from `source` (e.g. `['Pendulum-v1']`)."
        pipes = []
        for build, *wrappers in self.blocks:
            pipe = build(source)
            for wrap in wrappers:
                pipe = wrap(pipe)
            pipes.append(pipe)
        return pipes


# fastrl counted epochs and batches in pipes named here and told ProgressBarLogger where to find
# them; fastrl_lite's Learner counts both itself, so these names point at it.
EpocherCollector = Learner
BatchCollector = Learner


def VSCodeTransformBlock(max_frames: int = 1000) -> Callable:
    """fastrl's block for watching an env in VS Code: wraps a pipe built with `include_images=True`
    in a `FrameRecorder`, whose `show()` animates and `save_gif()` saves what it recorded."""
    return lambda pipe: FrameRecorder(pipe, max_frames=max_frames)


class BasicOptStepper(Update):
    """fastrl's optimizer stage: an `opt` over `model`'s parameters minimising one loss of the batch
    (`loss_key`, which may be left out when the batch carries exactly one), the gradient norm clipped
    at `clip_grad_norm` when set. It is an `Update` with one optimizer; `.opt` is the optimizer."""

    def __init__(self, source, model: torch.nn.Module, lr: float = 1e-3,
                 opt: Type[torch.optim.Optimizer] = torch.optim.Adam, loss_key: Optional[str] = None,
                 clip_grad_norm: Optional[float] = None, **opt_kwargs):
        if not lr > 0:
            raise ValueError(f"The learning rate must be > 0, got {lr}.")
        optimizer = opt(model.parameters(), lr=lr, **opt_kwargs)
        super().__init__(source, {loss_key: optimizer} if loss_key is not None else optimizer,
                         clip_grad_norm=clip_grad_norm)
        self.model, self.opt, self.loss_key = model, optimizer, loss_key


class LossCollector(_LossCollector):
    "fastrl's `LossCollector`; `main_buffers` is accepted and unused (the learner's record bus keeps the losses)."

    def __init__(self, source, main_buffers=None):
        super().__init__(source)


class ProgressBarLogger(_ProgressBarLogger):
    "fastrl's `ProgressBarLogger`; `epoch_on_pipe`/`batch_on_pipe` are accepted and unused (the learner counts both)."

    def __init__(self, epoch_on_pipe=None, batch_on_pipe=None, show_bars: Optional[bool] = None):
        super().__init__(show_bars=show_bars)


def DQNAgent(model, logger_bases=None, *args, **kwargs):
    "fastrl's `DQNAgent`; `logger_bases` is accepted and unused (records go to the learner that runs the agent)."
    from .algos.dqn import DQNAgent as _DQNAgent
    return _DQNAgent(model, *args, **kwargs)


def DDPGAgent(model, logger_bases=None, *args, **kwargs):
    "fastrl's `DDPGAgent`; `logger_bases` is accepted and unused (records go to the learner that runs the agent)."
    from .algos.ddpg import DDPGAgent as _DDPGAgent
    return _DDPGAgent(model, *args, **kwargs)
