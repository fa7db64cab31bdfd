"""One-call builders for the environment side of a pipeline (fastrl's `GymDataPipe` and
`GymTransformBlock`)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

from torchdata.nodes import Batcher

from ..core import check_whole
from .core import GymStepper, make_vec_env
from .nstep import NSkipper, NStepper

__all__ = ["GymDataPipe", "GymTransformBlock"]


def GymDataPipe(env_ids: Union[str, Sequence[str]], agent: Optional[Callable] = None, seed: Optional[int] = None,
                nsteps: int = 1, nskips: int = 1, firstlast: bool = False, bs: int = 1, n: Optional[int] = None,
                include_images: bool = False, num_envs: int = 1, async_envs: bool = False, gamma: float = 0.99):
    """`GymStepper` over `num_envs` copies of each id in `env_ids`, then n-step merging
    (`nsteps`, discounted by `gamma`), then `NSkipper(nskips)`; with `bs > 1` the transitions are
    grouped into lists of `bs` items (turn them into one batch with `StepBatcher`).
    `n` caps the env steps (a `Learner.fit` that reaches the cap ends early, see its docstring);
    `seed` seeds the envs once."""
    try:
        nsteps = check_whole(nsteps, "nsteps")
    except ValueError:
        raise ValueError(f"nsteps must be >= 1, a whole number of env steps (1 means plain one-step transitions), "
                         f"got {nsteps!r}.") from None
    nskips, bs, num_envs = check_whole(nskips, "nskips"), check_whole(bs, "bs"), check_whole(num_envs, "num_envs")
    if n is not None:
        n = check_whole(n, "n (the env steps to run, or None for no limit)")
    if nsteps > 1 and not firstlast:
        raise ValueError(f"nsteps={nsteps} needs firstlast=True: the learner trains on n-step transitions merged "
                         "into (first state, discounted reward, last next_state).")
    env = make_vec_env(env_ids, num_envs=num_envs, async_envs=async_envs, include_images=include_images)
    pipe = GymStepper(env, agent, seed=seed, include_images=include_images, n=n)
    if nsteps > 1:
        pipe = NStepper(pipe, n=nsteps, gamma=gamma)
    if nskips > 1:
        pipe = NSkipper(pipe, n=nskips)
    if bs > 1:
        pipe = Batcher(pipe, batch_size=bs, drop_last=False)
    return pipe


def GymTransformBlock(agent: Optional[Callable] = None, seed: Optional[int] = None, nsteps: int = 1, nskips: int = 1,
                      firstlast: bool = False, bs: int = 1, n: Optional[int] = None, include_images: bool = False,
                      num_envs: int = 1, async_envs: bool = False, gamma: float = 0.99):
    "The same settings as `GymDataPipe`, held until env ids arrive: `GymTransformBlock(...)(['CartPole-v1'])`."
    def build(env_ids):
        return GymDataPipe(env_ids, agent=agent, seed=seed, nsteps=nsteps, nskips=nskips, firstlast=firstlast,
                           bs=bs, n=n, include_images=include_images, num_envs=num_envs, async_envs=async_envs,
                           gamma=gamma)
    return build
