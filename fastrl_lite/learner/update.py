"""The update stage: losses → backward → (clip) → optimizer step, once per gradient round."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch

from .. import distributed
from ..core import TrainBatch
from ..pipes import Pipe
from . import fused_adam

__all__ = ["Update"]

PerLoss = Union[float, int, None, Mapping[str, Union[float, int, None]]]


def _per_loss(value, keys, name: str, default=None) -> Dict:
    "A setting given once for every loss, or per loss key (a key left out takes `default`)."
    if isinstance(value, Mapping):
        unknown = set(value) - set(keys)
        if unknown and keys == [None]:
            raise ValueError(f"{name} names losses {sorted(unknown, key=str)}, but Update(pipe, opt) steps one "
                             "optimizer for the batch's only loss: give the setting as a plain value, or the optimizer "
                             f"by loss key, Update(pipe, {{{next(iter(unknown))!r}: opt}}).")
        if unknown:
            raise ValueError(f"{name} names losses {sorted(unknown, key=str)} this Update does not step; it steps "
                             f"{list(keys)}.")
        return {k: value.get(k, default) for k in keys}
    return {k: value for k in keys}


class Update(Pipe):
    """Minimises the losses the stages upstream put in `batch.losses`, one optimizer per loss:
    `Update(pipe, {"critic": critic_opt})`, or `Update(pipe, opt)` for a batch that carries exactly
    one loss.

    Per gradient round, for the losses that are due: their optimizers' gradients are cleared, the
    losses are summed and backpropagated once, each optimizer's gradient norm is clipped to
    `clip_grad_norm` (a number for all, or per loss key) and the optimizer steps. `every` (a number,
    or per loss key) steps a loss only every k-th round, as TD3's delayed actor does; `schedulers`
    (per loss key) are stepped after their optimizer and their learning rate reported as
    `{key}_lr`. `scaler` (a `torch.amp.GradScaler`) scales the loss for mixed precision and skips
    steps whose gradients overflowed. Fused Adam/AdamW steps take a measured fast path
    (`fused_adam.step`), bit-identical to `opt.step()`.

    In a data-parallel run (`fastrl_lite.distributed`, more than one rank) the gradients of the
    due losses' parameters are averaged across the ranks between backward and clip/step, one
    flattened all-reduce per round; with one rank nothing is added to the round.
    """
    state_attrs = ("rounds",)
    # what is the same on every rank, so a data-parallel checkpoint keeps it once (rank 0's)
    shared_state = ("optimizers", "schedulers", "scaler")

    def __init__(self, source, optimizers: Union[torch.optim.Optimizer, Mapping[str, torch.optim.Optimizer]],
                 clip_grad_norm: PerLoss = None, every: PerLoss = 1,
                 schedulers: Optional[Mapping[str, object]] = None, scaler: Optional[torch.amp.GradScaler] = None):
        super().__init__(source)
        if isinstance(optimizers, torch.optim.Optimizer):
            optimizers = {None: optimizers}
        if not isinstance(optimizers, Mapping) or not optimizers:
            raise TypeError("Update takes an optimizer, or a dict from loss key to optimizer, "
                            "e.g. Update(pipe, {'critic': critic_opt}).")
        owner = {}  # parameter -> the loss key whose optimizer steps it
        for key, opt in optimizers.items():
            if not isinstance(opt, torch.optim.Optimizer):
                raise TypeError(f"Update's optimizer for {key!r} is a {type(opt).__name__}, not a torch optimizer.")
            for p in (p for g in opt.param_groups for p in g["params"]):
                if owner.setdefault(p, key) != key:
                    raise ValueError(f"The optimizers of losses {owner[p]!r} and {key!r} step the same parameters, so "
                                     "each round would step them twice. Give one optimizer one loss key (sum the two "
                                     "losses in one stage), or build the optimizers on separate parameters.")
        keys = list(optimizers)
        clip = _per_loss(clip_grad_norm, keys, "clip_grad_norm")
        every = _per_loss(every, keys, "every", default=1)
        schedulers = _per_loss(schedulers or {}, keys, "schedulers")
        for key, scheduler in schedulers.items():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise ValueError(f"The scheduler for {key!r} is a ReduceLROnPlateau, which steps on a metric; Update "
                                 "steps its schedulers once per optimizer step, without one. Step it yourself from a "
                                 "logger's after_epoch, or use a schedule of the step count (StepLR, LambdaLR, ...).")
        for key in keys:
            if clip[key] is not None and not clip[key] > 0:
                raise ValueError(f"clip_grad_norm must be > 0 (or None to not clip), got {clip[key]} for {key!r}.")
            if every[key] is None or int(every[key]) != every[key] or every[key] < 1:
                raise ValueError(f"every must be a whole number of rounds >= 1, got {every[key]} for {key!r}.")
        self.optimizers, self.clip_grad_norm, self.every = dict(optimizers), clip, every
        self.schedulers, self.scaler = schedulers, scaler
        self._make_entries()
        self._lr_keys = {key: "lr" if key is None else f"{key}_lr" for key in keys}
        self.rounds = 0

    def _make_entries(self):
        "Per loss: (key, optimizer, its parameters, clip, every, scheduler), the lists made once per set of groups."
        self._entries = [(key, opt, [p for g in opt.param_groups for p in g["params"]], self.clip_grad_norm[key],
                          int(self.every[key]), self.schedulers[key]) for key, opt in self.optimizers.items()]
        self._groups = [(opt, len(opt.param_groups)) for opt in self.optimizers.values()]
        self._reducers = None  # decided on the first round: {due keys: GradientAllReduce}, or False with one rank

    def _loss(self, batch: TrainBatch, key):
        if key is None:
            if len(batch.losses) != 1:
                raise ValueError(f"The batch carries losses {list(batch.losses)}; give Update a dict from loss key "
                                 "to optimizer to say which optimizer minimises which.")
            return next(iter(batch.losses.values()))
        loss = batch.losses.get(key)
        if loss is None:
            raise KeyError(f"Update wants loss {key!r}, the batch has {list(batch.losses)}; put the loss stage "
                           "that makes it upstream (for a stage that makes it only every k-th round, give Update "
                           f"every={{{key!r}: k}}).")
        return loss

    def next(self) -> TrainBatch:
        batch = next(self.source)
        for opt, groups in self._groups:
            if len(opt.param_groups) != groups:  # opt.add_param_group since the last round: step those too
                self._make_entries()
                break
        rounds = self.rounds + 1
        due = [e for e in self._entries if rounds % e[4] == 0] if len(self._entries) > 1 or \
            self._entries[0][4] > 1 else self._entries
        if not due:
            self.rounds = rounds
            return batch
        loss = self._loss(batch, due[0][0])
        for entry in due[1:]:
            loss = loss + self._loss(batch, entry[0])
        self.rounds = rounds
        for entry in due:
            for p in entry[2]:  # zero_grad(set_to_none=True) without the optimizer's per-call hooks
                p.grad = None
        reducers = self._reducers
        if reducers is None:
            reducers = self._reducers = {} if distributed.is_distributed() else False
        scaler = self.scaler
        if scaler is None:
            loss.backward()
            if reducers is not False:
                self._all_reduce(reducers, due)
            for key, opt, params, clip, _, scheduler in due:
                fused_adam.step(opt, params, clip)
                if scheduler is not None:
                    self._schedule(key, opt, scheduler)
            return batch
        scaler.scale(loss).backward()
        if reducers is not False:
            self._all_reduce(reducers, due)  # the scale is the same on every rank, so scaled gradients average alike
        for key, opt, params, clip, _, scheduler in due:
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
            scaler.step(opt)
        scaler.update()
        for key, opt, _, _, _, scheduler in due:
            if scheduler is not None:
                self._schedule(key, opt, scheduler)
        return batch

    @staticmethod
    def _all_reduce(reducers, due):
        "Average the due parameters' gradients across the ranks (one buffer per set of due losses)."
        keys = tuple(entry[0] for entry in due)
        reducer = reducers.get(keys)
        if reducer is None:
            reducer = reducers[keys] = distributed.GradientAllReduce(p for entry in due for p in entry[2])
        reducer()

    def _schedule(self, key, opt, scheduler):
        scheduler.step()
        self.gauge(self._lr_keys[key], opt.param_groups[0]["lr"])

    def get_state(self):
        return {**super().get_state(), "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items() if s is not None},
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            for k, state in initial_state["optimizers"].items():
                self.optimizers[k].load_state_dict(state)
            for k, state in initial_state["schedulers"].items():
                self.schedulers[k].load_state_dict(state)
            if initial_state["scaler"] is not None and self.scaler is not None:
                self.scaler.load_state_dict(initial_state["scaler"])
