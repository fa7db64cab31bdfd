"""Generic learner stages: each receives a `TrainBatch` per gradient round and passes it on."""
from __future__ import annotations

import copy
from typing import Optional, Tuple, Type

import torch
from torch import nn
from torch.optim import optimizer as _optimizer_module

from ..core import Records, TrainBatch
from ..pipes import Pipe, find_pipes

__all__ = ["bootstrap_discount", "LossCollector", "BasicOptStepper", "TargetModelUpdater", "SoftTargetUpdater", "get_target_model"]


def bootstrap_discount(step, gamma: float) -> torch.Tensor:
    """γ^k for k-step transitions (`step.nsteps`, 1 when absent), zero where the episode terminated:
    a time-limit truncation still bootstraps from `next_state`."""
    # one `where` instead of negate, cast and multiply: the same values (γ^k · 1 or 0), fewer ops
    discount = gamma if step.nsteps is None else gamma ** step.nsteps.to(step.reward.dtype)
    discount = torch.where(step.terminated, 0.0, discount)
    return discount if discount.dtype == step.reward.dtype else discount.to(step.reward.dtype)


class LossCollector(Pipe):
    """Sends every loss of each round to the record bus as a detached tensor (reduced at epoch end).
    Used on its own, outside a learner, it keeps the history itself so `show()` can plot it.
    `main_buffers` is accepted for fastrl compatibility and unused."""

    def __init__(self, source, main_buffers=None):
        super().__init__(source)
        self.history = Records()
        self._keys = {}

    def next(self) -> TrainBatch:
        batch = next(self.source)
        records = self.records if self.records is not None else self.history
        for name, loss in batch.losses.items():
            key = self._keys.get(name) or self._keys.setdefault(name, f"{name}_loss")
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


class BasicOptStepper(Pipe):
    """Backpropagates one loss from `batch.losses` and steps an optimizer over `model`'s parameters.

    `loss_key` names the loss (it may be left out when the batch carries exactly one). `opt` is any
    torch optimizer class; `clip_grad_norm` clips the gradient norm first when set."""

    def __init__(self, source, model: nn.Module, lr: float = 1e-3, opt: Type[torch.optim.Optimizer] = torch.optim.Adam,
                 loss_key: Optional[str] = None, clip_grad_norm: Optional[float] = None, **opt_kwargs):
        super().__init__(source)
        if lr <= 0:
            raise ValueError(f"The learning rate must be > 0, got {lr}.")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"clip_grad_norm must be > 0 (or None to not clip), got {clip_grad_norm}.")
        self.model, self.loss_key, self.clip_grad_norm = model, loss_key, clip_grad_norm
        self.opt = opt(model.parameters(), lr=lr, **opt_kwargs)
        # the list, not model.parameters(): walking the module tree for every clip costs ~12 µs a round
        self._params = list(model.parameters())
        self._fused_plan = None  # None: not worked out yet; False: this optimizer takes opt.step()

    def _loss(self, batch: TrainBatch):
        if self.loss_key is not None:
            if self.loss_key not in batch.losses:
                raise KeyError(f"BasicOptStepper wants loss {self.loss_key!r}, the batch has {list(batch.losses)}; "
                               "put the loss stage that makes it upstream.")
            return batch.losses[self.loss_key]
        if len(batch.losses) != 1:
            raise ValueError(f"The batch carries losses {list(batch.losses)}; tell BasicOptStepper which one "
                             "to minimise with loss_key=.")
        return next(iter(batch.losses.values()))

    def next(self) -> TrainBatch:
        batch = next(self.source)
        for p in self._params:  # zero_grad(set_to_none=True) without the optimizer's per-call hooks
            p.grad = None
        self._loss(batch).backward()
        plan = self._usable_plan()
        if not (plan and self._fused_step(plan)):
            if self.clip_grad_norm is not None:
                nn.utils.clip_grad_norm_(self._params, self.clip_grad_norm, foreach=True)
            self.opt.step()
        return batch

    # The fused Adam/AdamW fast path. `Optimizer.step` spends ~40 µs a call in Python (hooks,
    # profiling labels, grouping the tensors by device and dtype) around a kernel that takes ~45 µs
    # for a [256, 256] MLP, every gradient round. With one param group on one device, the grouping
    # never changes, so the lists the kernel takes are made once from the optimizer's own state and
    # the kernel is called directly, after the same gradient-norm clip as `clip_grad_norm_` (op for
    # op, so results are bit-identical to `clip_grad_norm_` + `opt.step()`). The optimizer's state
    # stays the state: `opt.state_dict()`, schedulers changing `lr`, and checkpoints see no
    # difference. Anything else (other optimizers, several groups, hooks, a tensor lr, a parameter
    # without a gradient) takes `opt.step()`.
    def _plan_fused_step(self):
        opt = self.opt
        kernel = {torch.optim.Adam: "_fused_adam_", torch.optim.AdamW: "_fused_adamw_"}.get(type(opt))
        group = opt.param_groups[0] if len(opt.param_groups) == 1 else {}
        if (kernel is None or not group.get("fused") or group.get("differentiable") or group.get("capturable")
                or not hasattr(torch, kernel) or len({(p.device, p.dtype) for p in group["params"]}) != 1):
            self._fused_plan = False
            return False
        state = [opt.state.get(p, {}) for p in group["params"]]
        if not all("step" in s for s in state):
            return False  # the first opt.step() creates the state; plan on the next round
        if type(opt) is torch.optim.AdamW or group.get("decoupled_weight_decay"):
            kernel = "_fused_adamw_"
        steps = [s["step"] for s in state]
        if len({(t.dtype, t.device, t.dim()) for t in steps}) != 1 or steps[0].dim() != 0:
            self._fused_plan = False
            return False
        # every parameter's step count becomes a view of one tensor, so one add counts them all
        # (opt.step() still adds 1 to each view, once, should it run instead)
        counter = torch.stack(steps)
        for i, s in enumerate(state):
            s["step"] = counter[i]
        params = list(group["params"])
        self._fused_plan = (getattr(torch, kernel), group, params, [s["exp_avg"] for s in state],
                            [s["exp_avg_sq"] for s in state],
                            [s["max_exp_avg_sq"] for s in state] if group["amsgrad"] else [],
                            [s["step"] for s in state], counter)
        return self._fused_plan

    def _usable_plan(self):
        "The fast path's plan for this round, or False where this round must go through `opt.step()`."
        opt, plan = self.opt, self._fused_plan
        if plan and opt.state.get(plan[2][0], {}).get("exp_avg") is not plan[3][0]:
            plan = None  # the optimizer's state was replaced (opt.load_state_dict): plan from the new one
        if plan is None:
            plan = self._plan_fused_step()
        if not plan or len(opt.param_groups) != 1 or isinstance(plan[1]["lr"], torch.Tensor):
            return False
        hooks = (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
                 or _optimizer_module._global_optimizer_pre_hooks or _optimizer_module._global_optimizer_post_hooks)
        return False if hooks else plan

    def _fused_step(self, plan):
        kernel, group, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, counter = plan
        grads = [p.grad for p in params]
        if any(g is None for g in grads):
            return False
        if self.clip_grad_norm is not None:  # clip_grad_norm_'s arithmetic, op for op, minus its Python
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            torch._foreach_mul_(grads, torch.clamp(self.clip_grad_norm / (norm + 1e-6), max=1.0))
        beta1, beta2 = group["betas"]
        counter.add_(1)
        kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad=group["amsgrad"],
               lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
               maximize=group["maximize"], grad_scale=None, found_inf=None)
        return True

    def reset(self, initial_state=None):
        super().reset(initial_state)
        if initial_state and "opt" in initial_state:
            self.opt.load_state_dict(initial_state["opt"])
            self._fused_plan = None  # load_state_dict replaces the state tensors

    def get_state(self):
        return {**super().get_state(), "opt": self.opt.state_dict()}


def _make_target(model: nn.Module) -> nn.Module:
    target = copy.deepcopy(model)
    target.requires_grad_(False)
    return target


class TargetModelUpdater(Pipe):
    """Keeps a target copy of `model` (`self.target_model`) and hard-copies the weights into it
    every `target_sync` gradient rounds, counted after each round passes through."""
    state_attrs = ("rounds",)

    def __init__(self, source, model: nn.Module, target_sync: int = 300, target_model: Optional[nn.Module] = None):
        super().__init__(source)
        if target_sync < 1:
            raise ValueError(f"target_sync must be >= 1 gradient round, got {target_sync}.")
        self.model, self.target_sync = model, target_sync
        self.target_model = target_model if target_model is not None else _make_target(model)
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
                     target_updater_cls: Tuple[Type[Pipe], ...] = (TargetModelUpdater,), debug: bool = False):
    """`model` itself when given; otherwise the target network of the updater in `pipe` whose source
    model is an instance of `model_cls` (any model when `model_cls` is None). Raises `LookupError`
    when the pipeline has none."""
    if model is not None:
        return model
    for updater in find_pipes(pipe, target_updater_cls):
        if model_cls is None or isinstance(updater.model, model_cls):
            if debug:
                print(f"Using the target model of {type(updater).__name__} for {getattr(model_cls, '__name__', 'model')}")
            return updater.target_model
    raise LookupError(f"No target updater for {getattr(model_cls, '__name__', 'the model')} upstream; put a "
                      "TargetModelUpdater or SoftTargetUpdater before the loss stage, or pass the target model.")

