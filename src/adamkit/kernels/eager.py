"""The eager backends: ``update`` called per tensor (loop, the readable reference) or on TensorLists (foreach)."""
from __future__ import annotations

import torch

from .backend import Backend, register
from .tensorlist import TensorList

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _real_view(t):
    return torch.view_as_real(t) if t.is_complex() else t


def run_update(update, params, grads, states, c, maximize: bool, multi_tensor: bool) -> None:
    """Run ``update`` on the real views, in float32 for half parameters: on one tensor or as TensorLists."""
    params = [_real_view(p) for p in params]
    grads = [_real_view(g) for g in grads]
    states = {name: [_real_view(s) for s in tensors] for name, tensors in states.items()}
    low = params[0].dtype in _LOW_PRECISION
    work = [p.float() for p in params] if low else params
    if low:  # float32 copies; the user's gradient is never written to
        grads = [g.to(torch.float32, copy=True) for g in grads]
    if maximize:
        grads = [g.neg_() for g in grads] if low else [torch.neg(g) for g in grads]
    if multi_tensor:
        update(TensorList(work), TensorList(grads), {n: TensorList(s) for n, s in states.items()}, c)
    else:
        update(work[0], grads[0], {n: s[0] for n, s in states.items()}, c)
    if low:
        torch._foreach_copy_(params, work)


class Loop(Backend):
    name = "loop"
    options = {"foreach": False}

    def step(self, opt, group, params, grads, states, names, c, *, whole_group):
        for i, (p, g) in enumerate(zip(params, grads)):
            one = {name: [tensors[i]] for name, tensors in states.items()}
            run_update(type(opt).update, [p], [g], one, c, group["maximize"], multi_tensor=False)
        return True


class Foreach(Backend):
    name = "foreach"
    options = {"foreach": True}

    def step(self, opt, group, params, grads, states, names, c, *, whole_group):
        run_update(type(opt).update, params, grads, states, c, group["maximize"], multi_tensor=True)
        return True


LOOP = register(Loop())
FOREACH = register(Foreach())
