"""The opt-in `torch.compile` switch of the loss stages (`compile=` of QTarget, QLoss, the DDPG loss
processors and the learners that build them)."""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch

__all__ = ["compile_options", "maybe_compile"]

CompileArg = Union[bool, dict]


def compile_options(compile: CompileArg) -> Optional[dict]:
    """The `torch.compile` keyword arguments `compile` asks for: None for False (run eagerly), {} for
    True, the dict itself for a dict (e.g. `{"mode": "max-autotune-no-cudagraphs"}`)."""
    if isinstance(compile, bool):
        return {} if compile else None
    if isinstance(compile, dict):
        return dict(compile)
    raise TypeError(f"compile= takes True/False or a dict of torch.compile keyword arguments "
                    f"(e.g. {{'mode': 'max-autotune-no-cudagraphs'}}), got {compile!r}.")


def maybe_compile(fn: Callable, compile: CompileArg) -> Callable:
    """`fn` itself when `compile` is False, else `torch.compile(fn, **options)`. The modules `fn`
    reaches stay the caller's: the compiled function reads their parameters, it copies nothing, so
    state dicts, checkpoints and the agent see the original modules. Compilation happens on the
    first call."""
    options = compile_options(compile)
    if options is None:
        return fn
    try:
        return torch.compile(fn, **options)
    except TypeError as error:
        raise TypeError(f"compile={compile!r}: {error}") from error
