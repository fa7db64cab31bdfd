"""Names a fastrl notebook uses around its pipelines, so its cells run here with only the imports
changed: `from fastrl_lite.compat import *`.

Each name does real work in fastrl_lite's terms; where fastrl needed a separate object (an epoch or
batch counter pipe) and fastrl_lite keeps the job in the `Learner`, the docstring says so.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import tensor

from .learner import Learner
from .pipes import Pipe

__all__ = ["dp", "IterableWrapper", "DataBlock", "L", "test_eq", "tensor", "EpocherCollector", "BatchCollector",
           "VSCodeTransformBlock", "FrameRecorder"]


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


class FrameRecorder(Pipe):
    """Keeps the rendered frames (`step.image`, from a pipe built with `include_images=True`) of the
    last `max_frames` steps of env 0, and shows them as an animation or writes them to a GIF."""

    def __init__(self, source, max_frames: int = 1000):
        super().__init__(source)
        self.max_frames = max_frames
        self.frames: Optional[torch.Tensor] = None
        self.count = 0

    def next(self):
        step = next(self.source)
        batch = step if not isinstance(step, list) else step[-1]
        image = getattr(batch, "image", None)
        if image is None:
            raise ValueError("FrameRecorder needs rendered frames: build the pipe with include_images=True.")
        frame = image[0]
        if self.frames is None:
            self.frames = torch.empty((self.max_frames, *frame.shape), dtype=frame.dtype)
        self.frames[self.count % self.max_frames] = frame
        self.count += 1
        return step

    def recorded(self) -> torch.Tensor:
        "The kept frames, oldest first: [n, height, width, 3] uint8."
        if self.frames is None:
            return torch.empty(0, dtype=torch.uint8)
        n = min(self.count, self.max_frames)
        start = self.count % self.max_frames if self.count > self.max_frames else 0
        return torch.roll(self.frames, -start, dims=0)[:n]

    def save_gif(self, path, fps: int = 30):
        "Write the kept frames to an animated GIF at `path`."
        from PIL import Image
        frames = [Image.fromarray(f) for f in self.recorded().numpy()]
        if not frames:
            raise ValueError("No frames recorded yet: iterate the pipe first.")
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
        return path

    def show(self, fps: int = 30):
        "An HTML animation of the kept frames for a notebook (VS Code's or Jupyter's)."
        from IPython.display import HTML
        from matplotlib import animation
        from matplotlib.figure import Figure
        frames = self.recorded().numpy()
        if not len(frames):
            raise ValueError("No frames recorded yet: iterate the pipe first.")
        fig = Figure(figsize=(4, 4))
        ax = fig.subplots()
        ax.axis("off")
        shown = ax.imshow(frames[0])
        anim = animation.FuncAnimation(fig, lambda i: shown.set_data(frames[i]), frames=len(frames),
                                       interval=1000 / fps)
        return HTML(anim.to_jshtml())


def VSCodeTransformBlock(max_frames: int = 1000) -> Callable:
    """fastrl's block for watching an env in VS Code: wraps a pipe built with `include_images=True`
    in a `FrameRecorder`, whose `show()` animates and `save_gif()` saves what it recorded."""
    return lambda pipe: FrameRecorder(pipe, max_frames=max_frames)
