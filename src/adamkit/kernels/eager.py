"""The eager backends: ``update`` called per tensor (loop, the readable reference) or on TensorLists (foreach).

Low-precision state (``bucket.storage``): :func:`with_storage` decodes the state of a few tensors at a time
to float32, runs ``update`` on those float32 tensors exactly as for float32 state, and encodes the results
back with the step's rounding streams. The loop does this one tensor at a time; foreach a chunk of whole
tensors of about :data:`CHUNK_ELEMENTS` elements at a time (one tensor where it is larger), so the step's
extra memory is that of one chunk's float32 state, not the bucket's. The compiled path uses the same
wrapper, one tensor at a time (:mod:`.compiled`).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from ..core.state_format import decode_state, encode_state, round_param, stream_key
from ..core.tensors import HALF_DTYPES
from .backend import Backend, Bucket, register
from .tensorlist import TensorList

#: foreach with low-precision state decodes whole tensors adding up to about this many elements at a time
CHUNK_ELEMENTS = 1 << 20


def _real_view(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def real_views(bucket: Bucket) -> Bucket:
    """The bucket with complex tensors as their real views (every update rule is element-wise on the real and
    imaginary parts, as torch.optim treats them)."""
    if not bucket.params[0].is_complex():
        return bucket
    return bucket._replace(params=[_real_view(p) for p in bucket.params], grads=[_real_view(g) for g in bucket.grads],
                           states={n: [_real_view(s) for s in col] for n, col in bucket.states.items()})


def run_update(update, params, grads, states, c, maximize: bool, multi_tensor: bool,
               keys: list[int] | None = None) -> None:
    """Run ``update`` on real tensors, in float32 for half parameters: on one tensor or as TensorLists.
    Half parameters are stepped on float32 copies written back after, rounded to nearest, or stochastically
    with the streams ``keys`` (one per tensor: ``state_format.round_param``); the gradient is negated under
    ``maximize`` on a copy (the user's ``p.grad`` is never written to)."""
    low = params[0].dtype in HALF_DTYPES
    work = [p.float() for p in params] if low else params
    if low:
        grads = [g.to(torch.float32, copy=True) for g in grads]
        if maximize:
            torch._foreach_neg_(grads)
    elif maximize:
        grads = torch._foreach_neg(grads)
    if multi_tensor:
        update(TensorList(work), TensorList(grads), {n: TensorList(s) for n, s in states.items()}, c)
    else:  # one tensor at a time, every tensor given (a chunk of the loop may hold empty tensors beside one)
        for i, (w, g) in enumerate(zip(work, grads)):
            update(w, g, {n: s[i] for n, s in states.items()}, c)
    if low and keys is not None:
        for p, w, key in zip(params, work, keys):
            round_param(w, p, key)
    elif low:
        torch._foreach_copy_(params, work)


def chunks(params: list[Tensor], elements: int) -> Iterator[list[int]]:
    """Consecutive indices of ``params`` in chunks of about ``elements`` elements (a larger tensor alone)."""
    chunk, size = [], 0
    for i, p in enumerate(params):
        if chunk and size + p.numel() > elements:
            yield chunk
            chunk, size = [], 0
        chunk.append(i)
        size += p.numel()
    if chunk:
        yield chunk


def with_storage(bucket: Bucket, run: Callable[[list[int], dict[str, list[Tensor]]], None], elements: int) -> None:
    """``run(indices, float32 states)`` over chunks of a bucket of low-precision state (:func:`chunks`): each
    chunk's state decoded to float32 before, encoded back with the step's rounding streams after."""
    storage, names, states = bucket.storage, bucket.names, bucket.states
    scales = storage.scales
    for indices in chunks(bucket.params, elements):
        work = {name: [decode_state(storage.format, storage.kinds[k], states[name][i],
                                    scales[name][i] if scales else None) for i in indices]
                for k, name in enumerate(names)}
        run(indices, work)
        for k, name in enumerate(names):
            for i, values in zip(indices, work[name]):
                encode_state(storage.format, storage.kinds[k], stream_key(storage.seeds[i], storage.step,
                             storage.slots[k]), values, states[name][i], scales[name][i] if scales else None)


class _Eager(Backend):
    storage_formats = ("bfloat16", "int8")
    #: tensors per ``update`` call: one (loop) or the whole bucket (foreach)
    multi_tensor = False
    #: with low-precision state: elements decoded at a time (1: one tensor at a time)
    chunk_elements = 1

    def step(self, cls, bucket, c, *, explicit):
        bucket = real_views(bucket)
        params, grads = bucket.params, bucket.grads
        keys = None if bucket.rounding is None else bucket.rounding.keys()

        def update(indices, states):
            run_update(cls.update, [params[i] for i in indices], [grads[i] for i in indices], states, c,
                       bucket.maximize, self.multi_tensor, None if keys is None else [keys[i] for i in indices])

        if bucket.storage is not None:
            with_storage(bucket, update, self.chunk_elements)
        elif self.multi_tensor:
            update(range(len(params)), bucket.states)
        else:
            for i in range(len(params)):
                update([i], {name: [col[i]] for name, col in bucket.states.items()})
        return True


class Loop(_Eager):
    name = "loop"
    options = {"foreach": False}


class Foreach(_Eager):
    name = "foreach"
    options = {"foreach": True}
    multi_tensor = True
    chunk_elements = CHUNK_ELEMENTS


LOOP = register(Loop())
FOREACH = register(Foreach())
