"""Generic learner stages: each receives a `TrainBatch` per gradient round and passes it on."""
from __future__ import annotations

import copy
from typing import Optional, Tuple, Type

import torch
from torch import nn

from ..core import Records, TrainBatch, check_whole
from ..pipes import Pipe, find_pipes

__all__ = ["bootstrap_discount", "LossCollector", "TargetModelUpdater", "SoftTargetUpdater", "get_target_model"]


def bootstrap_discount(step, gamma: float) -> torch.Tensor:
    """γ^k for k-step transitions (`step.nsteps`, 1 when absent), zero where the episode terminated:
    a time-limit truncation still bootstraps from `next_state`."""
    # one `where` instead of negate, cast and multiply: the same values (γ^k · 1 or 0), fewer ops
    discount = gamma if step.nsteps is None else gamma ** step.nsteps.to(step.reward.dtype)
    discount = torch.where(step.terminated, 0.0, discount)
    return discount if discount.dtype == step.reward.dtype else discount.to(step.reward.dtype)


class LossCollector(Pipe):
    """Sends every loss of each round to the record bus as a detached tensor (reduced at epoch end).
    Used on its own, outside a learner, it keeps the history itself so `show()` can plot it."""

    def __init__(self, source):
        super().__init__(source)
        self.history = Records()
        self._keys = {}

    def next(self) -> TrainBatch:
        batch = next(self.source)
        records = self.records if self.records is not None else self.history
        for name, loss in batch.losses.items():
            key = self._keys.get(name) or self._keys.setdefault(name, f"{name}_loss")
            if loss.dim():
                raise ValueError(f"losses[{name!r}] has shape {list(loss.shape)}; a loss is one number per round: "
                                 "reduce it in its stage (.mean(), or the loss function's reduction='mean').")
            records.add(key, loss.detach())
        return batch

    def show(self, title: str = "Losses", ax=None):
        "Plot each loss against the gradient round."
        import matplotlib.pyplot as plt
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        records = self.records if self.records is not None else self.history
        for name in records.series:
            if name.endswith("_loss"):
                ax.plot(records.values(name).cpu().numpy(), label=name[:-len("_loss")])
        ax.set(title=title, xlabel="gradient round", ylabel="loss")
        ax.legend()
        return ax


def target_copy(model: nn.Module) -> nn.Module:
    """A target network: a copy of `model` without gradients, in eval mode, so batch-norm layers use
    the running statistics the updates copy over and dropout is off (as SB3 runs its targets)."""
    return copy.deepcopy(model).requires_grad_(False).eval()


class TargetModelUpdater(Pipe):
    """Keeps a target copy of `model` (`self.target_model`) and hard-copies the weights into it
    every `target_sync` gradient rounds, counted after each round passes through."""
    state_attrs = ("rounds",)
    shared_state = ("target_model",)  # the same on every rank: a data-parallel checkpoint keeps rank 0's

    def __init__(self, source, model: nn.Module, target_sync: int = 300, target_model: Optional[nn.Module] = None):
        super().__init__(source)
        self.model, self.target_sync = model, check_whole(target_sync, "target_sync")
        self.target_model = target_model if target_model is not None else target_copy(model)
        self.rounds = 0

    def update_target(self):
        with torch.no_grad():
            torch._foreach_copy_(list(self.target_model.parameters()), list(self.model.parameters()))
            for t, b in zip(self.target_model.buffers(), self.model.buffers()):
                t.copy_(b)

    def next(self) -> TrainBatch:
        batch = next(self.source)
        self.rounds += 1
        if self.rounds % self.target_sync == 0:
            self.update_target()
        return batch

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state:
            self.target_model.load_state_dict(initial_state["target_model"])

    def get_state(self):
        return {**super().get_state(), "target_model": self.target_model.state_dict()}


class SoftTargetUpdater(TargetModelUpdater):
    """Polyak averaging every `target_sync` rounds: θ' ← τ θ + (1 − τ) θ', one fused
    `torch._foreach_lerp_` over all parameters."""

    def __init__(self, source, model: nn.Module, tau: float = 0.001, target_sync: int = 1,
                 target_model: Optional[nn.Module] = None):
        if not 0 < tau <= 1:
            raise ValueError(f"tau must lie in (0, 1] (1 is a hard copy), got {tau}.")
        super().__init__(source, model, target_sync=target_sync, target_model=target_model)
        self.tau = tau
        self._params = None

    def update_target(self):
        if self._params is None:
            self._params = (list(self.target_model.parameters()), list(self.model.parameters()),
                            list(self.target_model.buffers()), list(self.model.buffers()))
        targets, sources, target_buffers, buffers = self._params
        with torch.no_grad():
            torch._foreach_lerp_(targets, sources, self.tau)
            for t, b in zip(target_buffers, buffers):
                t.copy_(b)


def get_target_model(model: Optional[nn.Module], pipe, model_cls: Optional[Type[nn.Module]] = None,
                     target_updater_cls: Tuple[Type[Pipe], ...] = (TargetModelUpdater,), debug: bool = False, *,
                     tracking: Optional[nn.Module] = None, required: bool = True) -> Optional[nn.Module]:
    """`model` itself when given; otherwise the target network of the nearest target updater upstream
    of `pipe` whose online model is `tracking` (when given) or an instance of `model_cls` (any model
    when both are None). Raises `LookupError` when there is none, or returns None if not `required`.

    This graph search serves pipelines built by hand, as on fastrl's page (a `SoftTargetUpdater`
    upstream of `CriticLossProcessor`); the learner factories hand every stage its target networks."""
    if model is not None:
        return model
    for updater in find_pipes(pipe, target_updater_cls):
        if (updater.model is tracking) if tracking is not None else (model_cls is None or isinstance(updater.model, model_cls)):
            if debug:
                print(f"Using the target model of {type(updater).__name__} for {getattr(model_cls, '__name__', 'model')}")
            return updater.target_model
    if not required:
        return None
    what = type(tracking).__name__ if tracking is not None else getattr(model_cls, "__name__", "the model")
    raise LookupError(f"No target updater for {what} upstream; put a TargetModelUpdater or SoftTargetUpdater "
                      "before the loss stage, or pass the target model.")
