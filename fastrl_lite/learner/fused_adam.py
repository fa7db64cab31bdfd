"""One optimizer step, with a measured fast path for fused Adam/AdamW on the CPU.

`Optimizer.step` spends ~40 µs a call in Python (hooks, profiling labels, grouping the tensors by
device and dtype) around a kernel that takes ~45 µs for a [256, 256] MLP, every gradient round. With
one param group on one device the grouping never changes, so `step` makes the lists the kernel takes
once, from the optimizer's own state, and calls torch's fused kernel (`torch._fused_adam_` /
`torch._fused_adamw_`, private API) directly, after the same gradient-norm clip as
`clip_grad_norm_`, op for op: the results are bit-identical to `clip_grad_norm_` + `opt.step()`.
The optimizer's state stays the state: `opt.state_dict()`, schedulers changing `lr`, and checkpoints
see no difference. Anything else (other optimizers, several groups, hooks, a tensor lr, a parameter
without a gradient, a torch without these kernels) takes the public `opt.step()`.
"""
from __future__ import annotations

import weakref
from typing import List, Optional

import torch
from torch import nn
from torch.optim import optimizer as _optimizer_module

__all__ = ["step", "uses_fast_path", "KERNELS"]

KERNELS = {torch.optim.Adam: "_fused_adam_", torch.optim.AdamW: "_fused_adamw_"}

# per optimizer: its plan, or False where it always takes opt.step(); a missing entry means not planned yet
_plans: "weakref.WeakKeyDictionary[torch.optim.Optimizer, object]" = weakref.WeakKeyDictionary()


def step(opt: torch.optim.Optimizer, params: List[torch.Tensor], clip_grad_norm: Optional[float] = None) -> bool:
    """Clip the gradient norm of `params` to `clip_grad_norm` (when given) and step `opt`; returns
    True when the direct fused-kernel call did it, False when `opt.step()` did."""
    plan = _usable_plan(opt)
    if plan and _fused_step(plan, clip_grad_norm):
        return True
    if clip_grad_norm is not None:
        nn.utils.clip_grad_norm_(params, clip_grad_norm, foreach=True)
    opt.step()
    return False


def uses_fast_path(opt: torch.optim.Optimizer) -> bool:
    "Whether `opt`'s steps go through the direct kernel call (known after its first step)."
    return bool(_plans.get(opt))


def _plan(opt):
    kernel = KERNELS.get(type(opt))
    group = opt.param_groups[0] if len(opt.param_groups) == 1 else {}
    if (kernel is None or not group.get("fused") or group.get("differentiable") or group.get("capturable")
            or not hasattr(torch, kernel) or len({(p.device, p.dtype) for p in group["params"]}) != 1):
        return False
    state = [opt.state.get(p, {}) for p in group["params"]]
    if not all("step" in s for s in state):
        return None  # the first opt.step() creates the state; plan on the next round
    if type(opt) is torch.optim.AdamW or group.get("decoupled_weight_decay"):
        kernel = "_fused_adamw_"
    steps = [s["step"] for s in state]
    if len({(t.dtype, t.device, t.dim()) for t in steps}) != 1 or steps[0].dim() != 0:
        return False
    # every parameter's step count becomes a view of one tensor, so one add counts them all
    # (opt.step() still adds 1 to each view, once, should it run instead)
    counter = torch.stack(steps)
    for i, s in enumerate(state):
        s["step"] = counter[i]
    return (getattr(torch, kernel), group, list(group["params"]), [s["exp_avg"] for s in state],
            [s["exp_avg_sq"] for s in state], [s["max_exp_avg_sq"] for s in state] if group["amsgrad"] else [],
            [s["step"] for s in state], counter)


def _usable_plan(opt):
    "The fast path's plan for this step, or a falsy value where this step must go through `opt.step()`."
    plan = _plans.get(opt)
    if plan and opt.state.get(plan[2][0], {}).get("exp_avg") is not plan[3][0]:
        plan = None  # the optimizer's state was replaced (opt.load_state_dict): plan from the new one
    if plan is None:
        plan = _plan(opt)
        if plan is not None:
            _plans[opt] = plan
    if not plan or len(opt.param_groups) != 1 or isinstance(plan[1]["lr"], torch.Tensor):
        return False
    hooks = (opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks
             or _optimizer_module._global_optimizer_pre_hooks or _optimizer_module._global_optimizer_post_hooks)
    return False if hooks else plan


def _fused_step(plan, clip_grad_norm: Optional[float]) -> bool:
    kernel, group, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, counter = plan
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        return False
    if clip_grad_norm is not None:  # clip_grad_norm_'s arithmetic, op for op, minus its Python
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_mul_(grads, torch.clamp(clip_grad_norm / (norm + 1e-6), max=1.0))
    beta1, beta2 = group["betas"]
    counter.add_(1)
    kernel(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, amsgrad=group["amsgrad"],
           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
           maximize=group["maximize"], grad_scale=None, found_inf=None)
    return True
