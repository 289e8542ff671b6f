"""The compiled path: ``torch.compile`` of each algorithm's own ``update``, with its scalars as tensors
(``fused="compiled"`` on any device; ``fused=True`` on CUDA and other non-CPU devices).

``coefficients()`` splits a step into **flags** (static choices: which operations
run) and **scalars** (numbers). Here the scalars travel as one tensor on the
parameters' device (unpacked into 0-dim tensors inside the graph) and the flags
stay Python values, so the graph is specialised on the flags only: a
learning-rate schedule or a new bias correction never recompiles, and a flag
that changes with the step (ADOPT's and AGD's first step, AdaBelief's
rectification) is one more graph, once per run. ``update`` is written against
tensor methods that take a number or a 0-dim tensor alike, so no algorithm has a
rule here: the same function the loop path calls is the one compiled.

Each algorithm and bucket layout (shapes, dtype, device) gets its own compiled
function (its own code object, so its own recompile budget: only its flags
recompile it, a handful of times per run at most). Inductor fuses each tensor's update into one loop (C++/OpenMP
on CPU, Triton on CUDA) without temporaries. Compiling costs seconds to tens of
seconds per process and bucket layout; on CPU the fused C kernel is faster and the
default, so this is mainly the GPU path.

Low-precision state (``bucket.storage``): the **update is compiled, the decoding and encoding around it run
eagerly** (:func:`adamkit.kernels.eager.with_storage`, the loop's own wrapper), one tensor at a time: its
state is decoded to float32, the tensors are flattened, and one graph with dynamic sizes steps every tensor
(so no tensor shape compiles a graph of its own); the step's extra memory is one tensor's float32 state. The
rounding streams' keys (which change every step) stay Python integers of the eager code, never constants of
a graph, so no step recompiles. The codec is not compiled because every path must round a given float32
value to the same bits, and inductor's code for the 8-bit rounding did not reproduce the reference codes
bit for bit (``tests/optim/test_state_format.py`` holds the reference).

Stochastic parameter rounding (``param_rounding="stochastic"``, ``bucket.rounding``): the compiled update
steps float32 copies of the bfloat16/float16 parameters and ``state_format.round_param`` writes them back
eagerly, for the same reasons.
"""
from __future__ import annotations

import types

import torch

from ..core.declaration import Coefficients
from ..core.state_format import memory_flat, round_param
from ..core.tensors import HALF_DTYPES
from .backend import Backend, register
from .eager import real_views, with_storage


#: the torch.compile backend (tests use "eager" / "aot_eager" to count graphs without code generation)
BACKEND = "inductor"


def _body(update, flags, scalars_type, params, grads, states, vec, maximize: bool, low: bool):
    c = Coefficients(flags, scalars_type(*vec.unbind(0)))
    for i, p in enumerate(params):
        work = p.float() if low else p
        g = grads[i].float() if low else grads[i]
        if maximize:
            g = -g
        update(work, g, {k: v[i] for k, v in states.items()}, c)
        if low:
            p.copy_(work)


_compiled: dict[tuple, object] = {}


def compiled_body(layout: tuple, dynamic: bool = False):
    """The compiled step of ``layout`` (the optimizer class, then the bucket's device, dtype, shapes and state
    names), built on first use: ``_body`` under a code object of its own; ``dynamic``: one graph for every
    size of one-dimensional tensors (the layout then holds no shapes)."""
    key = (layout, dynamic, BACKEND)
    if key not in _compiled:
        code = _body.__code__.replace(co_name=f"_step_{layout[0].__name__}")
        body = types.FunctionType(code, _body.__globals__, code.co_name, _body.__defaults__)
        _compiled[key] = torch.compile(body, fullgraph=True, dynamic=dynamic, backend=BACKEND)
    return _compiled[key]


def step(cls, params, grads, states, c, maximize: bool, flat: bool = False) -> None:
    """Step real tensors of one device / dtype / step with the compiled update; ``flat``: one-dimensional
    tensors of any size, under one dynamic graph."""
    low = params[0].dtype in HALF_DTYPES
    math = torch.float32 if low else params[0].dtype
    vec = torch.tensor([float(x) for x in c.scalars], dtype=torch.float64).to(device=params[0].device, dtype=math)
    args = (cls.update, c.flags, type(c.scalars), params, grads, states, vec, bool(maximize), low)
    shapes = None if flat else tuple(p.shape for p in params)
    layout = (cls, params[0].device, params[0].dtype, shapes, tuple(states))
    try:
        compiled_body(layout, dynamic=flat)(*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before the graph runs: nothing written yet
        _body(*args)  # the same update, eagerly, with the same tensor scalars


class Compiled(Backend):
    name = "compiled"
    options = {"fused": "compiled"}
    storage_formats = ("bfloat16", "int8")

    def step(self, cls, bucket, c, *, explicit):
        bucket = real_views(bucket)
        params, grads = bucket.params, bucket.grads
        keys = None if bucket.rounding is None else bucket.rounding.keys()
        if bucket.storage is None:
            if keys is None:
                step(cls, params, grads, bucket.states, c, bucket.maximize)
                return True
            # stochastic parameter rounding: the compiled update steps float32 copies of the parameters, which
            # are then rounded eagerly (the streams' keys change every step: never constants of a graph)
            work = [p.float() for p in params]
            step(cls, work, [g.float() for g in grads], bucket.states, c, bucket.maximize)
            for p, w, key in zip(params, work, keys):
                round_param(w, p, key)
            return True
        # low-precision state: one tensor at a time (its float32 state decoded, stepped, encoded), flattened so
        # that one dynamic graph serves every tensor size

        def update(indices, states):
            for j, i in enumerate(indices):  # one tensor (and the empty ones a chunk adds to it)
                p, g = params[i], grads[i]
                if not p.numel():
                    continue
                like = next(iter(states.values()))[j]  # every tensor is flattened in the memory order of the state
                rounded = keys is not None  # stepped in float32, rounded eagerly after
                work = p
                if rounded or p.stride() != like.stride():
                    work = torch.empty_like(like, dtype=torch.float32 if rounded else p.dtype).copy_(p)
                if rounded or g.stride() != like.stride():
                    g = torch.empty_like(like, dtype=work.dtype).copy_(g)
                step(cls, [memory_flat(work)], [memory_flat(g)], {n: [memory_flat(s[j])] for n, s in states.items()},
                     c, bucket.maximize, flat=True)
                if rounded:
                    round_param(work, p, keys[i])
                elif work is not p:
                    p.copy_(work)

        with_storage(bucket, update, 1)
        return True


COMPILED = register(Compiled())
