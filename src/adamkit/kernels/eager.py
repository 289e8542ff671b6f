"""The eager backends: ``update`` called per tensor (loop, the readable reference) or on TensorLists (foreach).

Low-precision state (``storage`` given): each state tensor is decoded to float32, ``update`` runs on the
float32 tensors exactly as it does for float32 state, and the results are encoded back with the step's
rounding streams. The loop does this one tensor at a time (one tensor's float32 copy at once); foreach
decodes and encodes per tensor and runs the math over TensorLists (the bucket's float32 copies at once).
"""
from __future__ import annotations

import torch

from ..core.state_format import decode_state, encode_state, stream_key
from ..core.tensors import HALF_DTYPES
from .backend import Backend, register
from .tensorlist import TensorList


def _real_view(t):
    return torch.view_as_real(t) if t.is_complex() else t


def run_update(update, params, grads, states, c, maximize: bool, multi_tensor: bool) -> None:
    """Run ``update`` on the real views, in float32 for half parameters: on one tensor or as TensorLists."""
    params = [_real_view(p) for p in params]
    grads = [_real_view(g) for g in grads]
    states = {name: [_real_view(s) for s in tensors] for name, tensors in states.items()}
    low = params[0].dtype in HALF_DTYPES
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


def decoded(storage, names, states, i: int) -> dict:
    """``{name: float32 values}`` of tensor ``i``'s stored state."""
    scales = storage.scales
    return {name: decode_state(storage.format, storage.kinds[k], states[name][i],
                               scales[name][i] if scales else None) for k, name in enumerate(names)}


def encode(storage, names, states, values: dict, i: int) -> None:
    """Write tensor ``i``'s float32 state ``values`` back into its stored tensors, rounding with the step's streams."""
    scales = storage.scales
    seed, step = storage.seeds[i], storage.step
    for k, name in enumerate(names):
        encode_state(storage.format, storage.kinds[k], stream_key(seed, step, storage.slots[k]), values[name],
                     states[name][i], scales[name][i] if scales else None)


class Loop(Backend):
    name = "loop"
    options = {"foreach": False}
    storage_formats = ("bfloat16", "int8")

    def step(self, opt, group, params, grads, states, names, c, *, whole_group, storage=None):
        update, maximize = type(opt).update, group["maximize"]
        if storage is None:
            for i, (p, g) in enumerate(zip(params, grads)):
                one = {name: [tensors[i]] for name, tensors in states.items()}
                run_update(update, [p], [g], one, c, maximize, multi_tensor=False)
            return True
        for i, (p, g) in enumerate(zip(params, grads)):
            work = decoded(storage, names, states, i)
            run_update(update, [p], [g], {n: [w] for n, w in work.items()}, c, maximize, multi_tensor=False)
            encode(storage, names, states, work, i)
        return True


class Foreach(Backend):
    name = "foreach"
    options = {"foreach": True}
    storage_formats = ("bfloat16", "int8")

    def step(self, opt, group, params, grads, states, names, c, *, whole_group, storage=None):
        if storage is None:
            run_update(type(opt).update, params, grads, states, c, group["maximize"], multi_tensor=True)
            return True
        work = [decoded(storage, names, states, i) for i in range(len(params))]
        lists = {n: [w[n] for w in work] for n in names}
        run_update(type(opt).update, params, grads, lists, c, group["maximize"], multi_tensor=True)
        for i, w in enumerate(work):
            encode(storage, names, states, w, i)
        return True


LOOP = register(Loop())
FOREACH = register(Foreach())
