"""Data-parallel training on `torch.distributed`: each rank (process) steps its own vector env into
its own buffer, and the ranks average their gradients once per gradient round so the models stay
identical.

Launch with `torchrun --nproc-per-node N -m fastrl_lite train ALGO ...` (several machines: torchrun's
`--nnodes`, `--node-rank`, `--rdzv-endpoint`) or `fastrl-lite train ALGO --nproc N`; a script of
one's own calls `init()` once, before building its learner. Started without torchrun, `init()` does
nothing and every run is the single-process run, bit for bit: nothing below acts while
`world_size() == 1`.

What is reduced, and when:
- every gradient round, in the `Update` stage between backward and clip/step: the gradients of the
  parameters being stepped, flattened into one buffer, summed by one `all_reduce` and divided by
  the world size (`GradientAllReduce`). The same buffer carries one more number, the ranks' Ctrl-C
  requests, so every rank learns of a stop in the same round at no extra cost;
- once per epoch, in the `Learner`: the epoch's figures (env steps, episodes and env steps per
  second summed; losses, rolling reward and other figures averaged), which rank 0 alone reports;
- at `fit`'s start: a check that every rank starts from the same weights;
- at a checkpoint: every rank's pipeline state gathered to rank 0, which writes it (one file per
  rank; the models, optimizers and target networks once, in rank 0's), and scattered back on resume.

Under `torch.compile` the reduction stays out of the compiled unit by design: the compiled units are
the loss computations, while backward, the all-reduce and the optimizer step run eagerly in
`Update`, so a collective never becomes a graph break or a recompilation inside the compiled code.

Failures: the process group has a timeout (`init(timeout=)`, default 300 s, or the
`FASTRL_LITE_DIST_TIMEOUT` environment variable), so a collective that waits for a rank that died
or hangs raises instead of blocking; a rank that raises leaves its error in the process group's
store, and the other ranks end with that error (`RankFailedError`) when their next collective fails.
torchrun, seeing one worker fail, stops the others and reports the first failure.
"""
from __future__ import annotations

import datetime
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["init", "shutdown", "is_distributed", "rank", "world_size", "is_main", "rank_seed", "GradientAllReduce",
           "mean_across_ranks", "on_main", "RankFailedError", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = 300.0
_ERROR_KEY = "fastrl_lite/error"
_timeout = DEFAULT_TIMEOUT


class RankFailedError(RuntimeError):
    "Another rank of the run raised; the message is that rank's error."


def init(timeout: Optional[float] = None, backend: Optional[str] = None) -> bool:
    """Join the process group torchrun describes in the environment (`RANK`, `WORLD_SIZE`,
    `MASTER_ADDR`, `MASTER_PORT`); returns whether this run is data-parallel. Without those
    variables, or with `WORLD_SIZE=1`, nothing happens. `backend` defaults to NCCL when CUDA is
    available, else gloo: NCCL reduces CUDA tensors only, so a run whose models stay on the CPU
    asks for "gloo" (as `fastrl-lite train` does). Collectives that wait longer than `timeout`
    seconds raise."""
    if dist.is_initialized():
        return dist.get_world_size() > 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed.")
    if timeout is None:
        timeout = float(os.environ.get("FASTRL_LITE_DIST_TIMEOUT", DEFAULT_TIMEOUT))
    if not timeout > 0:
        raise ValueError(f"The process-group timeout must be > 0 seconds, got {timeout}.")
    global _timeout
    _timeout = timeout
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    return True


def shutdown():
    """Leave the process group (a no-op when there is none), once every rank has come here.

    The ranks meet in the process group's store, not in a collective: rank 0 may spend longer than
    the collective timeout on its evaluation and pictures while the others wait, and a gloo
    collective that times out, or whose peer tears its group down first, aborts the process
    instead of raising. No collective is pending when a group is torn down this way."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            _store_barrier("fastrl_lite/shutdown")
        dist.destroy_process_group()


_barriers = 0


def _store_barrier(name: str, poll: float = 0.01):
    """Wait, without a time limit, until every rank has arrived here. Rank 0 leaves last, after
    every rank has seen that all arrived: without torchrun the store lives in rank 0's process."""
    global _barriers
    _barriers += 1
    store, world = _store(), dist.get_world_size()
    if store is None:  # (a torch whose private accessor moved: the collective barrier, with its time limit)
        dist.barrier()
        return
    arrived, left = f"{name}/{_barriers}/arrived", f"{name}/{_barriers}/left"
    store.add(arrived, 1)
    while store.add(arrived, 0) < world:
        time.sleep(poll)
    store.add(left, 1)
    if dist.get_rank() == 0:
        while store.add(left, 0) < world:
            time.sleep(poll)


def is_distributed() -> bool:
    "Whether a process group of more than one rank is running."
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    "Rank 0, the one that prints and writes the run folder (every process of a single-process run)."
    return rank() == 0


def rank_seed(seed: Optional[int], of_rank: Optional[int] = None) -> Optional[int]:
    """The seed rank `of_rank` (default: this process's rank) uses for what must differ between
    ranks (its envs, its exploration, its sampling): `seed` itself on rank 0, so a one-rank run is
    the single-process run, and a number drawn by NumPy's `SeedSequence` from (seed, rank) on the
    others, so no rank's seed is another run's seed + 1."""
    of_rank = rank() if of_rank is None else of_rank
    if seed is None or of_rank == 0:
        return seed
    return int(np.random.SeedSequence(int(seed), spawn_key=(of_rank,)).generate_state(1, np.uint32)[0])


# Ctrl-C requests travel in the gradient buffer: `_stop` is this rank's request, `_agreed` the
# reduced request of the latest round (the same number on every rank).
_stop = torch.zeros(1)
_agreed: Optional[torch.Tensor] = None
_checks = 0
# reading a flag on a GPU waits for the device, so there it is read every this many rounds
GPU_STOP_CHECK_EVERY = 16


def request_stop():
    "Ask every rank to stop after the current gradient round (safe to call from a signal handler)."
    _stop.fill_(1.0)


def clear_stop():
    global _agreed, _checks
    _stop.zero_()
    _agreed, _checks = None, 0


def stop_requested() -> bool:
    "Whether this rank was asked to stop."
    return bool(_stop[0] > 0)


def stop_agreed() -> bool:
    """Whether any rank had asked to stop by the latest gradient round's all-reduce (the same answer
    on every rank, which calls this once per round; on a GPU the answer comes every
    `GPU_STOP_CHECK_EVERY` rounds)."""
    global _checks
    if _agreed is None:
        return False
    if _agreed.device.type != "cpu":
        _checks += 1
        if _checks % GPU_STOP_CHECK_EVERY:
            return False
    return bool(_agreed[0] > 0)


class GradientAllReduce:
    """Averages the gradients of `params` across the ranks: the gradients are flattened into one
    preallocated buffer (plus one slot for the Ctrl-C flag), summed with one `all_reduce` and
    divided by the world size, then copied back. A parameter without a gradient on this rank takes
    part with zeros, so every rank steps every parameter the same way."""

    def __init__(self, params: Iterable[torch.Tensor], group=None):
        seen, unique = set(), []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        if not unique:
            raise ValueError("GradientAllReduce needs at least one parameter.")
        kinds = {(p.device, p.dtype) for p in unique}
        if len(kinds) != 1:
            raise ValueError(f"GradientAllReduce reduces parameters of one device and dtype, got "
                             f"{sorted(map(str, kinds))}; give each optimizer parameters of one kind.")
        if unique[0].device.type != "cuda" and dist.get_backend(group) == "nccl":
            raise ValueError(f"The process group runs NCCL, which reduces CUDA tensors only, and these parameters are "
                             f"on {unique[0].device}: build the learner with device='cuda', or call "
                             "fastrl_lite.distributed.init(backend='gloo') to train on the CPU.")
        self.params, self.group = unique, group
        self.world = dist.get_world_size(group)
        numels = [p.numel() for p in unique]
        self.buffer = torch.empty(sum(numels) + 1, device=unique[0].device, dtype=unique[0].dtype)
        self._grads_part, self._flag = self.buffer[:-1], self.buffer[-1:]
        self._views = [v.view_as(p) for v, p in zip(self._grads_part.split(numels), unique)]

    def __call__(self):
        global _agreed
        grads = []
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        torch.cat([g.reshape(-1) for g in grads], out=self._grads_part)
        self._flag.copy_(_stop)
        dist.all_reduce(self.buffer, group=self.group)
        self.buffer.div_(self.world)
        torch._foreach_copy_(grads, self._views)
        _agreed = self._flag


def check_same_weights(modules: Dict[str, nn.Module]):
    "Raise on every rank when any rank's weights differ from rank 0's (one broadcast, one small all-gather)."
    flat = torch.cat([t.detach().reshape(-1).double().cpu() for m in modules.values() for t in m.state_dict().values()
                      if t.is_floating_point()] or [torch.zeros(1, dtype=torch.float64)])
    device = _device()
    mine = flat.to(device)
    theirs = mine.clone()
    dist.broadcast(theirs, src=0)
    differs = torch.tensor([0.0 if torch.equal(mine, theirs) else 1.0], device=device)
    flags = [torch.zeros_like(differs) for _ in range(world_size())]
    dist.all_gather(flags, differs)
    bad = [r for r, f in enumerate(flags) if f.item() > 0]
    if bad:
        raise ValueError(f"Ranks {bad} start from other weights than rank 0. Build the models after "
                         "set_seed(run seed) with the same seed on every rank (as `fastrl-lite train` does); "
                         "each rank's envs and exploration are then seeded apart from the run seed and its rank.")


def _device() -> torch.device:
    "Where this backend's collectives want their tensors."
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


SUMMED = ("env_steps", "episodes", "steps_per_s")
SAME = ("epoch", "batch")


def reduce_row(row: Dict[str, float]) -> Tuple[Dict[str, float], bool]:
    """The epoch's figures across the ranks, and whether any rank asked to stop: `SUMMED` figures
    added up, `SAME` ones rank 0's, every other number averaged over the ranks that report it
    (NaN, e.g. a rolling reward before any episode ended, counts as not reported)."""
    rows: List[Optional[dict]] = [None] * world_size()
    dist.all_gather_object(rows, (row, stop_requested()))
    stop = any(s for _, s in rows)
    rows = [r for r, _ in rows]
    out = {}
    for key, value in rows[0].items():
        values = [r[key] for r in rows if key in r]
        if key in SAME or not isinstance(value, (int, float)) or isinstance(value, bool) or \
                all(v == value for v in values) and key not in SUMMED:
            out[key] = value  # (a figure every rank shares, such as ε, keeps its value and type)
        elif key in SUMMED:
            out[key] = type(value)(sum(values))
        else:
            finite = [v for v in values if v == v]
            out[key] = float(np.mean(finite)) if finite else value
    return out, stop


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the ranks (`value` itself with one rank): for a decision every rank
    must take alike, such as an early stop on PPO's approximate KL."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def on_main(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` computed on rank 0 and handed to every rank, or its exception raised on
    every rank: for a decision that reads the run folder, which only rank 0 may see."""
    if not is_distributed():
        return fn(*args, **kwargs)
    box = [None]
    if is_main():
        try:
            box = [(True, fn(*args, **kwargs))]
        except Exception as error:
            box = [(False, error)]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def gather_to_main(obj) -> Optional[list]:
    "Every rank's `obj`, as a list on rank 0 (None on the others)."
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


def scatter_from_main(objs: Optional[Sequence]):
    "Rank r receives `objs[r]` from rank 0 (the others pass None)."
    out = [None]
    dist.scatter_object_list(out, list(objs) if is_main() else None, src=0)
    return out[0]


def raise_if_any(error: Optional[BaseException], exc_type=RuntimeError):
    """Agree across the ranks on whether any of them failed; on every rank, raise `exc_type` with
    the failed ranks' messages (or the local error itself on a rank that failed)."""
    errors = [None] * world_size()
    dist.all_gather_object(errors, None if error is None else str(error))
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if not failed:
        return
    if error is not None and len(failed) == 1:
        raise error
    raise exc_type("; ".join(f"rank {r}: {e}" for r, e in failed))


def _store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # no process group, or a torch whose private accessor moved
        return None


def report_failure(error: BaseException):
    "Leave this rank's error in the process group's store for the ranks whose collectives it breaks."
    store = _store()
    if store is None:
        return
    try:
        store.set(_ERROR_KEY, f"rank {rank()}: {type(error).__name__}: {error}")
    except Exception:
        pass  # the store went with a rank that died: torchrun reports the root cause


def peer_failure(wait: float = 2.0) -> Optional[str]:
    "The error another rank reported, if one did within `wait` seconds."
    store = _store()
    if store is None:
        return None
    try:
        store.wait([_ERROR_KEY], datetime.timedelta(seconds=wait))
        return store.get(_ERROR_KEY).decode()
    except Exception:
        return None


def is_collective_error(error: BaseException) -> bool:
    "Whether `error` is a collective that failed (a peer gone, a timeout) rather than this rank's own error."
    return isinstance(error, getattr(dist, "DistError", ())) or (
        isinstance(error, RuntimeError) and any(word in str(error) for word in (
            "Connection closed by peer", "Connection reset", "Timed out", "timed out", "Gloo", "NCCL")))


def on_failure(error: BaseException):
    """Called with the exception that ends `fit` on this rank: re-raised as the failing rank's
    `RankFailedError` when it is a broken collective that another rank's error explains, else
    reported for the other ranks and left to propagate."""
    if isinstance(error, RankFailedError):
        return
    if is_collective_error(error):
        cause = peer_failure()
        if cause is not None and not cause.startswith(f"rank {rank()}:"):
            raise RankFailedError(f"The run stopped because {cause}") from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RankFailedError(f"A collective failed on rank {rank()} ({first_line}): another rank died, or did "
                              f"not answer within the process-group timeout of {_timeout:g} s; its log says why."
                              ) from error
    report_failure(error)
