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

Low-precision state (``storage`` given): the **update is compiled, the decoding and encoding around it run
eagerly** (:func:`adamkit.kernels.eager.decoded` / :func:`~adamkit.kernels.eager.encode`, the loop's own
functions): the compiled graph sees float32 state tensors, the same graph as for float32 state, and the
rounding streams' keys (which change every step) stay Python integers of the eager code, never constants
of a graph, so no step recompiles. The codec is therefore not fused into the update's loop here (the fused C
kernel fuses it on CPU). Why not compile it too: dynamo traces the codec whole (one graph, the keys as an
int64 tensor input), but inductor's code for the 8-bit rounding did not reproduce the reference codes bit for
bit (measured with torch 2.13 on CPU: bfloat16 codes and int8 scales identical, some int8 codes not), every
path must round a given float32 value identically, and that compile cost 95 s for one layout here.
"""
from __future__ import annotations

import types

import torch

from ..core.declaration import Coefficients
from ..core.tensors import HALF_DTYPES
from .backend import Backend, register
from .eager import decoded, encode


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


def compiled_body(layout: tuple):
    """The compiled step of ``layout`` (the optimizer class, then the bucket's device, dtype, shapes and state
    names), built on first use: ``_body`` under a code object of its own."""
    key = (layout, BACKEND)
    if key not in _compiled:
        code = _body.__code__.replace(co_name=f"_step_{layout[0].__name__}")
        body = types.FunctionType(code, _body.__globals__, code.co_name, _body.__defaults__)
        _compiled[key] = torch.compile(body, fullgraph=True, dynamic=False, backend=BACKEND)
    return _compiled[key]


def step(opt, group, params, grads, states, c) -> None:
    """Step one bucket (lists of local tensors of one device / dtype / step) with the compiled update."""
    real = (lambda t: torch.view_as_real(t)) if params[0].is_complex() else (lambda t: t)
    params = [real(p) for p in params]
    grads = [real(g) for g in grads]
    states = {k: [real(s) for s in v] for k, v in states.items()}
    low = params[0].dtype in HALF_DTYPES
    math = torch.float32 if low else params[0].dtype
    vec = torch.tensor([float(x) for x in c.scalars], dtype=torch.float64).to(device=params[0].device, dtype=math)
    cls = type(opt)
    args = (cls.update, c.flags, type(c.scalars), params, grads, states, vec, bool(group["maximize"]), low)
    layout = (cls, params[0].device, params[0].dtype, tuple(p.shape for p in params), tuple(states))
    try:
        compiled_body(layout)(*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before the graph runs: nothing written yet
        _body(*args)  # the same update, eagerly, with the same tensor scalars


class Compiled(Backend):
    name = "compiled"
    options = {"fused": "compiled"}
    storage_formats = ("bfloat16", "int8")

    def step(self, opt, group, params, grads, states, names, c, *, whole_group, storage=None):
        if storage is None:
            step(opt, group, params, grads, states, c)
            return True
        work = [decoded(storage, names, states, i) for i in range(len(params))]
        step(opt, group, params, grads, {n: [w[n] for w in work] for n in names}, c)
        for i, w in enumerate(work):
            encode(storage, names, states, w, i)
        return True


COMPILED = register(Compiled())
