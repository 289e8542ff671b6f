"""The Triton source of one kernel, written from an algorithm's traced ``update`` (:mod:`.trace`).

One kernel steps a whole bucket: program ``pid`` finds its tensor by a binary search over the programs'
prefix sums in the bucket's table, then steps one tile of that tensor. It loads the parameter, the gradient
and each state element, decodes the state to the math dtype, applies the traced nodes in order (one line per
node) and stores the parameter and the encoded state. The flags, the dtypes, the state format and its kinds
are fixed per kernel (:class:`KernelSpec`); the step's numbers come from the table, so a new learning rate or
step count is new data, never a new kernel.

The table (int64, one device tensor per launch; :func:`columns` names its columns)::

    [scalars: float64 bits, trace.scalars order] [count, search steps] [starts: count + 1 prefix sums]
    [one row per tensor: numel, row length, blocks per row, blocks, param, grad, states..., scales..., keys...,
     the parameter's key (stochastic rounding)]

Each node is computed as torch computes the method (:data:`EMIT`): IEEE division and square root (``div_rn``,
``sqrt_rn`` in float32), one fused multiply-add where ATen's kernels use one (``lerp``, ``addcmul``, ``add``
with ``alpha``), NaN propagation as ``torch.maximum``/``clamp_min``. GPU kernels are compiled without
floating-point contraction (``enable_fp_fusion=False``), so the interpreter and the GPU compute the same bits.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import linecache
import textwrap
from typing import Any, NamedTuple

import torch

from ...core import state_format
from . import codec
from .trace import OPS, Trace, trace

#: elements per program for float32 and bfloat16 state; int8 state: blocks of state_format.BLOCK per program
BLOCK = 1024
INT8_BLOCKS = BLOCK // state_format.BLOCK
#: int64 entries before the tensors' starts: their count and the binary search's number of steps
HEADER = 2
#: the fixed columns of a tensor's row, then its pointers
FIXED = ("numel", "row", "per_row", "blocks", "param", "grad")
PARAM_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
PARAM_ROUNDINGS = state_format.PARAM_ROUNDINGS


class KernelSpec(NamedTuple):
    """Everything one kernel is specialised on (its cache key)."""

    cls: type
    flags: NamedTuple
    names: tuple[str, ...]
    #: the real dtype of the parameters (complex ones are stepped as their real views)
    param_dtype: torch.dtype
    #: "float32" (the math dtype), "bfloat16" or "int8"
    state: str
    #: the kind of each state name (``state_format.KINDS``), for the stored formats
    kinds: tuple[str, ...]
    maximize: bool
    param_rounding: str = "nearest"

    @property
    def math(self) -> str:
        return "float64" if self.param_dtype == torch.float64 else "float32"

    @property
    def stored(self) -> bool:
        return self.state != "float32"


def columns(spec: KernelSpec) -> dict[str, int]:
    """The column of each entry of a tensor's row in the table."""
    names = list(FIXED) + [f"state:{n}" for n in spec.names]
    if spec.state == "int8":
        names += [f"scale:{n}" for n in spec.names]
    if spec.stored:
        names += [f"key:{n}" for n in spec.names]
    if spec.param_rounding == "stochastic":
        names.append("key:param")
    return {name: i for i, name in enumerate(names)}


def spec_for(cls, flags, names, param_dtype, storage=None, maximize=False, param_rounding="nearest") -> KernelSpec:
    kinds = tuple(storage.kinds) if storage is not None else tuple(cls.state_formats.get(n, "signed") for n in names)
    return KernelSpec(cls, flags, tuple(names), param_dtype, storage.format if storage is not None else "float32",
                      kinds, bool(maximize), param_rounding)


# ------------------------------------------------------------------------------------------ the node emitters
def _div(math, a, b):
    return f"tl.div_rn({a}, {b})" if math == "float32" else f"({a} / {b})"


def _sqrt(math, a):
    return f"tl.sqrt_rn({a})" if math == "float32" else f"tl.sqrt({a})"


#: op -> the Triton expression of a node from its operands' names, torch's formula for the method
EMIT = {
    "add": lambda m, a, b: f"{a} + {b}",
    "sub": lambda m, a, b: f"{a} - {b}",
    "mul": lambda m, a, b: f"{a} * {b}",
    "div": _div,
    "neg": lambda m, a: f"-{a}",
    "sqrt": _sqrt,
    # torch.sign: (0 < x) - (x < 0), NaN -> 0
    "sign": lambda m, a: f"(tl.where({a} > 0.0, 1.0, 0.0) - tl.where({a} < 0.0, 1.0, 0.0)).to(tl.{m})",
    "fma": lambda m, a, b, c: f"tl.fma({a}, {b}, {c})",
    # ATen's lerp: |w| < 0.5 ? fma(w, end - self, self) : fma(w - 1, end - self, end)
    "lerp": lambda m, s, e, w: (f"tl.where(({w} < 0.5) & ({w} > -0.5), tl.fma({w}, {e} - {s}, {s}), "
                                f"tl.fma({w} - 1.0, {e} - {s}, {e}))"),
    "addcdiv": lambda m, s, a, b: f"{s} + {_div(m, a, b)}",
    # torch.maximum: NaN if either is; max_ps's order otherwise
    "maximum": lambda m, a, b: f"tl.where(({a} != {a}) | ({b} != {b}), {a} + {b}, tl.where({a} > {b}, {a}, {b}))",
    # clamp_min / clamp_max (max_ps(lo, x) / min_ps(hi, x)): NaN stays NaN
    "clamp_min": lambda m, a, lo: f"tl.where({lo} > {a}, {lo}, {a})",
    "clamp_max": lambda m, a, hi: f"tl.where({hi} < {a}, {hi}, {a})",
}
assert set(EMIT) | {"load"} == set(OPS), "every traced op has exactly one emitter"


def _param_store(spec: KernelSpec, value: str) -> str:
    """The one line that writes the parameter back: where a rounding mode of half parameters plugs in."""
    if spec.param_rounding not in PARAM_ROUNDINGS:
        raise ValueError(f"param_rounding must be one of {PARAM_ROUNDINGS}, got {spec.param_rounding!r}")
    stochastic = spec.param_rounding == "stochastic" and spec.param_dtype in state_format.ROUNDED_PARAM_DTYPES
    bits = f"random_bits(offs, tl.load(row + {columns(spec).get('key:param')}))"  # the element's memory position
    if stochastic and spec.param_dtype == torch.bfloat16:
        stored = f"bfloat16_stochastic({value}, {bits}, UPPER=False)"
    elif stochastic:
        stored = f"float16_stochastic({value}, {bits}).to(tl.float16, bitcast=True)"
    elif spec.param_dtype == torch.bfloat16:
        stored = f"bfloat16_nearest({value})"
    elif spec.param_dtype == torch.float16:
        stored = f"{value}.to(tl.float16)"  # round to nearest even, as torch's copy_
    else:
        stored = value
    return f"tl.store(param_ptr + offs, {stored}, mask=mask)"


# ------------------------------------------------------------------------------------------ the kernel's text
def _kernel_name(spec: KernelSpec) -> str:
    return f"{spec.cls.name}_step"


def kernel_source(spec: KernelSpec, tr: Trace | None = None) -> str:
    """The complete Triton module of one kernel: header, the codec functions it uses, the kernel."""
    tr = tr or trace(spec.cls, spec.flags, spec.names)
    body = _kernel_body(spec, tr)
    functions = _needed_functions(body)
    header = [f"# adamkit: the Triton kernel of {spec.cls.__name__}.update, generated by adamkit.kernels.gpu.source",
              f"# flags: {spec.flags}",
              f"# state tensors: {', '.join(spec.names)} ({spec.state}"
              + (f"; kinds {', '.join(spec.kinds)})" if spec.stored else ")"),
              f"# parameters: {spec.param_dtype} (math in {spec.math}); maximize={spec.maximize}; "
              f"param_rounding={spec.param_rounding}", ""]
    header += [f"{name} = tl.constexpr({value!r})" for name, value in codec.CONSTANTS.items()]
    parts = ["\n".join(header)] + ["@device\n" + _codec_sources()[name] for name in functions] + [body]
    return "\n\n".join(parts) + "\n"


@functools.cache
def _codec_sources() -> dict[str, str]:
    """The source of each codec function, in dependency order."""
    return {f.__name__: textwrap.dedent(inspect.getsource(f)) for f in codec.FUNCTIONS}


def _needed_functions(text: str) -> list[str]:
    """The codec functions ``text`` calls, directly or through another one, in dependency order."""
    sources = _codec_sources()
    seen, stack = set(), [text]
    while stack:
        t = stack.pop()
        for name, body in sources.items():
            if name not in seen and f"{name}(" in t:
                seen.add(name)
                stack.append(body.split(":", 1)[1])
    return [name for name in sources if name in seen]


def _kernel_body(spec: KernelSpec, tr: Trace) -> str:
    m = spec.math
    cols = columns(spec)
    int8 = spec.state == "int8"
    lines: list[str] = []
    emit = lines.append

    def col(name):
        return f"tl.load(row + {cols[name]})"

    def pointer(name, dtype):
        return f"{col(name)}.to(tl.pointer_type(tl.{dtype}))"

    emit(f'"""One step of {spec.cls.__name__} over every tensor of a bucket (see adamkit.kernels.gpu.source)."""')
    emit("# the tensor and the tile of it that this program steps")
    emit("pid = tl.program_id(0).to(tl.int64)")
    emit(f"table = args + {len(tr.scalars)}")
    emit("count = tl.load(table)")
    emit(f"starts = table + {HEADER}")
    emit("lo = count * 0")
    emit("hi = count - 1")
    emit("for _ in range(tl.load(table + 1)):  # the last tensor whose first program is <= pid")
    emit("    mid = (lo + hi + 1) // 2")
    emit("    up = tl.load(starts + mid) <= pid")
    emit("    lo = tl.where(up, mid, lo)")
    emit("    hi = tl.where(up, hi, mid - 1)")
    emit(f"row = starts + count + 1 + lo * {len(cols)}")
    emit("tile = pid - tl.load(starts + lo)")
    if int8:  # whole blocks of state_format.BLOCK elements within the rows of the state
        emit("block = tile * BLOCKS + tl.arange(0, BLOCKS)")
        emit(f"block_mask = block < {col('blocks')}")
        emit(f"per_row = {col('per_row')}")
        emit("lane = (block % per_row)[:, None] * INT8_BLOCK + tl.arange(0, INT8_BLOCK)[None, :]")
        emit(f"row_length = {col('row')}")
        emit("offs = (block // per_row)[:, None] * row_length + lane")
        emit("mask = block_mask[:, None] & (lane < row_length)")
    else:
        emit("offs = tile * BLOCK + tl.arange(0, BLOCK)")
        emit(f"mask = offs < {col('numel')}")

    emit("# the step's numbers (float64, rounded to the math dtype as torch rounds a Python scalar)")
    scalar_names = {}
    for k, s in enumerate(tr.scalars):
        scalar_names[id(s)] = f"s{k}"
        emit(f"s{k} = tl.load(scalars + {k}).to(tl.{m})  # {s.describe(tr.fields)}")

    emit("# loads, decoded to the math dtype")
    needed = {id(a) for node in tr.nodes for a in node.args} | {id(n) for n in tr.outputs.values()}
    names = {}
    param_dtype = str(spec.param_dtype).split(".")[1]
    for which in ("param", "grad"):
        node = tr.inputs[which]
        names[id(node)] = which
        writes = which == "param" and tr.outputs["param"] is not node
        if id(node) not in needed and not writes:
            continue
        if spec.param_dtype == torch.bfloat16:
            emit(f"{which}_ptr = {pointer(which, 'uint16')}")
            emit(f"{which} = bfloat16_value(tl.load({which}_ptr + offs, mask=mask, other=0))")
        else:
            emit(f"{which}_ptr = {pointer(which, param_dtype)}")
            emit(f"{which} = tl.load({which}_ptr + offs, mask=mask, other=0.0).to(tl.{m})")
    if spec.maximize:
        emit("grad = -grad")
    for k, name in enumerate(spec.names):
        node = tr.inputs[name]
        var = f"state_{k}"
        names[id(node)] = var
        if spec.state == "float32":
            if id(node) in needed or tr.outputs[name] is not node:
                emit(f"{var}_ptr = {pointer('state:' + name, m)}")
                emit(f"{var} = tl.load({var}_ptr + offs, mask=mask, other=0.0)  # {name}")
        elif spec.state == "bfloat16":
            emit(f"{var}_ptr = {pointer('state:' + name, 'uint16')}")
            emit(f"{var} = bfloat16_value(tl.load({var}_ptr + offs, mask=mask, other=0))  # {name}")
        else:
            kind = codec.kind_constants(spec.kinds[k])
            emit(f"{var}_ptr = {pointer('state:' + name, 'uint8')}")
            emit(f"{var}_scales = {pointer('scale:' + name, 'float32')}")
            emit(f"{var} = decode_int8(tl.load({var}_ptr + offs, mask=mask, other={kind['ZERO']}), "
                 f"tl.load({var}_scales + block, mask=block_mask, other=1.0)[:, None], ZERO={kind['ZERO']}, "
                 f"OFFSET={kind['OFFSET']}, SIGNED={kind['SIGNED']})  # {name}, {spec.kinds[k]}")

    emit(f"# {spec.cls.__name__}.update")
    for i, node in enumerate(tr.nodes):
        operands = [scalar_names[id(a)] if id(a) in scalar_names else names[id(a)] for a in node.args]
        names[id(node)] = f"v{i}"
        emit(f"v{i} = {EMIT[node.op](m, *operands)}")

    emit("# stores")
    out = tr.outputs["param"]
    if out is not tr.inputs["param"]:
        emit(_param_store(spec, names[id(out)]))
    for k, name in enumerate(spec.names):
        value, var = names[id(tr.outputs[name])], f"state_{k}"
        if spec.state == "float32":
            if tr.outputs[name] is not tr.inputs[name]:
                emit(f"tl.store({var}_ptr + offs, {value}, mask=mask)  # {name}")
            continue
        kind = codec.kind_constants(spec.kinds[k])
        bits = "0" if kind["UPPER"] else f"random_bits(offs, {col('key:' + name)})"
        if spec.state == "bfloat16":
            emit(f"tl.store({var}_ptr + offs, bfloat16_stochastic({value}, {bits}, UPPER={kind['UPPER']}), "
                 f"mask=mask)  # {name}")
        else:
            emit(f"{var}_codes, {var}_scale = encode_int8({value}, mask, {bits}, "
                 + ", ".join(f"{k_}={v!r}" for k_, v in kind.items()) + ")")
            emit(f"tl.store({var}_ptr + offs, {var}_codes, mask=mask)  # {name}")
            emit(f"tl.store({var}_scales + block, {var}_scale, mask=block_mask)")

    tile = "BLOCKS" if int8 else "BLOCK"
    return (f"@jit\ndef {_kernel_name(spec)}(args, scalars, {tile}: tl.constexpr):\n"
            + textwrap.indent("\n".join(lines), "    "))


# ------------------------------------------------------------------------------------------ loading a kernel
class Kernel(NamedTuple):
    spec: KernelSpec
    trace: Trace
    source: str
    function: Any  # the @triton.jit function (an InterpretedFunction under TRITON_INTERPRET=1)
    columns: dict[str, int]


#: every kernel built in this process, by spec (tests count them: a new step or learning rate builds none)
KERNELS: dict[KernelSpec, Kernel] = {}


def kernel(spec: KernelSpec) -> Kernel:
    """The kernel of ``spec``, generated and loaded on first use."""
    found = KERNELS.get(spec)
    if found is None:
        import triton
        import triton.language as tl

        tr = trace(spec.cls, spec.flags, spec.names)
        text = kernel_source(spec, tr)
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        filename = f"<adamkit triton kernel {spec.cls.__name__} {digest}>"
        linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)  # Triton reads the source
        # device functions are inlined into the kernel either way; the interpreter calls them as plain Python
        # (its @jit wrapper would re-patch the whole language at every call)
        device = (lambda f: f) if triton.knobs.runtime.interpret else triton.jit
        namespace = {"__name__": f"adamkit_triton_{digest}", "tl": tl, "jit": triton.jit, "device": device}
        exec(compile(text, filename, "exec"), namespace)
        found = Kernel(spec, tr, text, namespace[_kernel_name(spec)], columns(spec))
        KERNELS[spec] = found
    return found
