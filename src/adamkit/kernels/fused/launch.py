"""Calling the fused C kernel: its arguments checked and packed for one call over a bucket.

``kernel.c`` (plain C, no torch or Python headers) holds one kernel per
algorithm: one pass over memory, vectorised, and parallel over the elements of
all the tensors of a bucket on ``torch.get_num_threads()`` threads of its own
pool (pthreads: no OpenMP runtime beside torch's). It is loaded with
``ctypes`` (:mod:`.build`); one call steps every tensor of a bucket, so many small tensors
cost one dispatch. :func:`launch` is the general path (float32 state, or with ``storage``
:func:`launch_low_precision`); a group stepped again with the same tensors goes through its
kept pointer table instead (:mod:`.kept`).

Memory layout: each parameter, its gradient and its state tensors are stepped
as flat arrays. Contiguous tensors (the usual case) are used in place; tensors
that share one dense layout (e.g. channels_last parameters with state created
by ``zeros_like``) are too, and any other layout is copied to a contiguous
buffer and back.
"""
from __future__ import annotations

import ctypes
from typing import Sequence

import torch
from torch import Tensor

from ...core import state_format
from ...core.tensors import HALF_DTYPES, math_dtype
from .build import load
from .spec import ALGORITHMS, KernelCall

#: the kernel's numbers of the storage formats and kinds
FORMATS = {"bfloat16": 0, "int8": 1}
KINDS = {kind: i for i, kind in enumerate(state_format.KINDS)}

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
#: the state dtype of each parameter dtype: its math dtype
STATE_DTYPE = {dtype: math_dtype(dtype) for dtype in DTYPES}

#: below this many elements per thread a call runs on one thread
GRAIN = 32768


class Unsupported(TypeError):
    """Tensors the fused kernel does not step (raised before any tensor is written)."""



def supports(tensors: Sequence[Tensor]) -> bool:
    """Whether the fused kernel steps parameters like these (CPU, a supported real or complex dtype)."""
    t = tensors[0]
    dtype = t.dtype
    if dtype.is_complex:
        dtype = torch.view_as_real(t).dtype
    return t.device.type == "cpu" and dtype in DTYPES


# ---------------------------------------------------------------- layout
def _dense_strides(t: Tensor) -> bool:
    """True when ``t`` covers its memory densely without overlap (any dimension order)."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _check_column(name, col, shapes, dtype):
    if any(t.dtype != dtype for t in col):
        bad = next(t.dtype for t in col if t.dtype != dtype)
        raise Unsupported(
            f"fused kernel: {name} is {bad} but {dtype} is needed here (the parameter's math dtype; "
            "load_state_dict casts a checkpoint's state to it, a state set by hand must be cast too)"
        )
    if [t.shape for t in col] != shapes:  # the kernel trusts the sizes, and the reference path the shapes
        k = next(i for i, (t, s) in enumerate(zip(col, shapes)) if t.shape != s)
        raise RuntimeError(f"fused kernel: {name} has shape {tuple(col[k].shape)}, its parameter {tuple(shapes[k])}")


def _param_seeds(rounding: "state_format.ParamRounding | None", param_dtype: torch.dtype, count: int):
    """The kernel's ``param_seeds`` argument: None (round to nearest), or the bucket's rounding seeds (uint32)
    for stochastic rounding of bfloat16 or float16 parameters."""
    if rounding is None:
        return None
    if param_dtype not in state_format.ROUNDED_PARAM_DTYPES:
        raise Unsupported(f"fused kernel: stochastic rounding writes bfloat16 or float16 parameters, not {param_dtype}")
    if len(rounding.seeds) != count:
        raise Unsupported(f"fused kernel: {len(rounding.seeds)} rounding seeds for {count} parameters")
    return (ctypes.c_uint32 * count)(*(int(x) & 0xFFFFFFFF for x in rounding.seeds))


def _same_order(a: tuple, b: tuple, shape) -> bool:
    """Whether two dense layouts of ``shape`` (strides ``a`` and ``b``) put the elements in one memory order."""
    return all(x == y for x, y, n in zip(a, b, shape) if n != 1)


def _flat(p: Tensor, g: Tensor, ss: list, writeback: list, memory_order: bool = True):
    """Same-layout dense versions of one parameter's tensors (copies where needed, noted in writeback);
    ``memory_order`` False: row-major copies of a dense parameter too."""
    if memory_order and _dense_strides(p):  # e.g. channels_last: step the memory as it lies, if the others share the layout
        stride = p.stride()
        if g.stride() != stride:
            g = torch.empty_like(p, dtype=g.dtype).copy_(g)  # a same-layout read-only copy
        fixed = []
        for s in ss:
            if s is not None and s.stride() != stride:
                work = torch.empty_like(p, dtype=s.dtype).copy_(s)
                writeback.append((s, work))
                s = work
            fixed.append(s)
        return p, g, fixed
    # overlapping or gapped parameter: step contiguous copies and write them back
    work = p.contiguous()
    writeback.append((p, work))
    fixed = []
    for s in ss:
        if s is not None and not s.is_contiguous():
            copy = s.contiguous()
            writeback.append((s, copy))
            s = copy
        fixed.append(s)
    return work, g.contiguous(), fixed


def launch(call: "KernelCall", params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
           storage: "state_format.Storage | None" = None, storage_names: tuple | None = None,
           rounding: "state_format.ParamRounding | None" = None):
    """Step ``params`` in place with one kernel call (see the module docstring); with ``storage``, returns the
    kernel arguments it used (:func:`launch_low_precision`).

    ``call.names`` are the state slots the kernel reads, in order; None marks an unused slot.
    ``storage`` (with ``storage_names``, the state names its ``kinds`` and ``slots`` follow) says how the state
    tensors are stored when they are not float32 (:func:`launch_low_precision`). ``rounding``: bfloat16 or
    float16 parameters are written with ``state_format.round_param``'s stochastic rounding (:func:`_param_seeds`).
    Every check happens before any tensor is written (:class:`Unsupported` otherwise).
    """
    if storage is not None:
        return launch_low_precision(call, params, grads, states, storage, storage_names, rounding)
    algorithm, names, scalars, flags = call
    lib = load()
    if not params:
        return
    first = params[0]
    if first.device.type != "cpu":
        raise Unsupported(f"the fused CPU kernel got a tensor on {first.device}")
    columns = [states[n] if n is not None else None for n in names]
    if first.is_complex():
        params = [torch.view_as_real(p) for p in params]
        grads = [torch.view_as_real(g) for g in grads]
        columns = [None if col is None else [torch.view_as_real(s) for s in col] for col in columns]
    param_dtype = params[0].dtype
    if param_dtype not in DTYPES:
        raise Unsupported(f"the fused CPU kernel supports float32/float64/float16/bfloat16, got {first.dtype}")
    state_dtype = STATE_DTYPE[param_dtype]
    count = len(params)
    numels = [p.numel() for p in params]
    shapes = [p.shape for p in params]
    _check_column("a parameter", params, shapes, param_dtype)
    _check_column("a gradient", grads, shapes, param_dtype)
    for name, col in zip(names, columns):
        if col is not None:
            _check_column(f"state '{name}'", col, shapes, state_dtype)
    param_seeds = _param_seeds(rounding, param_dtype, count)
    writeback: list = []
    used = [col for col in columns if col is not None]
    if not (all(p.is_contiguous() for p in params) and all(g.is_contiguous() for g in grads)
            and all(s.is_contiguous() for col in used for s in col)):
        params, grads, columns = list(params), list(grads), [None if c is None else list(c) for c in columns]
        for i in range(count):
            ss = [None if col is None else col[i] for col in columns]
            if params[i].is_contiguous() and grads[i].is_contiguous() and all(
                s is None or s.is_contiguous() for s in ss
            ):
                continue
            # stochastic rounding numbers a parameter's elements in its memory order only where its state is
            # laid out alike (state_format.in_memory_order): otherwise a row-major copy is stepped
            memory_order = param_seeds is None or state_format.in_memory_order(params[i])
            params[i], grads[i], ss = _flat(params[i], grads[i], ss, writeback, memory_order)
            for col, s in zip(columns, ss):
                if col is not None:
                    col[i] = s
    n_states = len(names)
    ptrs = (ctypes.c_void_p * (count * (2 + n_states)))()
    ptrs[0:count] = [p.data_ptr() for p in params]
    ptrs[count:2 * count] = [g.data_ptr() for g in grads]
    for k, col in enumerate(columns):
        if col is not None:
            ptrs[(2 + k) * count:(3 + k) * count] = [s.data_ptr() for s in col]
    numel = (ctypes.c_int64 * count)(*numels)
    sc = (ctypes.c_double * 16)(*scalars)
    base = ctypes.addressof(ptrs)
    size = ctypes.sizeof(ctypes.c_void_p)
    rc = lib.adamkit_step(
        ALGORITHMS[algorithm], DTYPES[param_dtype], count, numel, base, base + count * size,
        base + 2 * count * size, n_states, sc, flags, torch.get_num_threads(), GRAIN,
        param_seeds, 0 if rounding is None else int(rounding.step),
    )
    if rc != 0:  # pragma: no cover - the checks above make this unreachable
        raise RuntimeError(f"adamkit fused kernel failed with code {rc}")
    for dst, src in writeback:
        dst.copy_(src)


#: parameter dtypes whose state a low-precision format can hold (float32 math)
LOW_PRECISION_PARAMS = (torch.float32, *HALF_DTYPES)


def _state_dtype_error(message: str) -> Unsupported:
    return Unsupported(f"fused kernel, state_dtype: {message}")


def launch_low_precision(call: "KernelCall", params: list[Tensor], grads: list[Tensor],
                         states: dict[str, list[Tensor]], storage: "state_format.Storage",
                         storage_names: tuple | None = None,
                         rounding: "state_format.ParamRounding | None" = None) -> "_LowPrecisionArgs | None":
    """One kernel call for a bucket whose state is stored in bfloat16 or as 8-bit codes (``storage.format``);
    returns its arguments (for :meth:`StoredLaunch.build`), None for an empty bucket.

    The kernel decodes each block of a state tensor (an int8 block of at most ``state_format.BLOCK``
    elements within a row, or 256 elements of bfloat16) into a small buffer, runs the float32 update on it
    and encodes it back, rounding as :mod:`adamkit.core.state_format` does with the bits of
    ``stream_key(storage.seeds[i], storage.step, storage.slots[k])`` at each element's position in the memory
    of its state tensor: no float32 copy of a state tensor is made. In a bucket of format "int8", tensors
    whose state is bfloat16 (vectors) are stepped in the same call. Parameters and gradients are stepped in
    the layout of their state tensors (copies where theirs differs); state tensors must cover their memory
    densely, all of one parameter in one layout, and int8 codes keep dim 0 outermost (as the engine creates
    them). ``rounding``: as :func:`launch`'s (a parameter's elements are numbered in its state's layout, which
    must then be the one the engine gives it, ``state_format.layout_like``). Every check happens before any
    tensor is written (:class:`Unsupported` otherwise).
    """
    if not params:
        return None
    args = _low_precision_args(call, params, grads, states, storage, storage_names, rounding)
    args.launch(call.scalars, call.flags, storage.step)
    for dst, src in args.writeback:
        dst.copy_(src)
    return args


class _LowPrecisionArgs:
    """The kernel's arguments for one bucket of low-precision state, but the step's scalars: its pointer
    table (parameters, gradients, state tensors, scales), element counts, row lengths, kinds, slots and
    rounding seeds, with the copies to write back (tensors stepped in another layout)."""

    __slots__ = ("algorithm", "dtype", "count", "n_states", "ptrs", "scale_ptrs", "numel", "row", "kinds",
                 "slots", "seeds", "writeback", "tensors", "param_seeds")

    def launch(self, scalars, flags: int, step: int) -> None:
        sc = (ctypes.c_double * 16)(*scalars)
        base = ctypes.addressof(self.ptrs)
        size = ctypes.sizeof(ctypes.c_void_p)
        count = self.count
        rc = load().adamkit_step_lowp(
            ALGORITHMS[self.algorithm], self.dtype, count, self.numel, base, base + count * size,
            base + 2 * count * size, self.n_states, sc, flags, torch.get_num_threads(), GRAIN,
            self.row, self.scale_ptrs, self.kinds, self.slots, self.seeds, int(step), self.param_seeds,
        )
        if rc != 0:  # pragma: no cover - the checks of _low_precision_args make this unreachable
            raise RuntimeError(f"adamkit fused kernel failed with code {rc}")


def _low_precision_args(call: "KernelCall", params: list[Tensor], grads: list[Tensor],
                        states: dict[str, list[Tensor]], storage: "state_format.Storage",
                        storage_names: tuple | None,
                        rounding: "state_format.ParamRounding | None" = None) -> _LowPrecisionArgs:
    """The checked arguments of :func:`launch_low_precision` (writes nothing; :class:`Unsupported` otherwise)."""
    algorithm, names, scalars, flags = call
    load()
    if storage.format not in FORMATS:
        raise _state_dtype_error(f"the kernel steps bfloat16 and int8 state, not {storage.format!r}")
    first = params[0]
    if first.device.type != "cpu":
        raise Unsupported(f"the fused CPU kernel got a tensor on {first.device}")
    param_dtype = first.dtype
    if param_dtype not in LOW_PRECISION_PARAMS:
        raise _state_dtype_error(f"low-precision state is for float32-math parameters "
                                 f"(float32, float16, bfloat16), got {param_dtype}")
    given = tuple(storage_names) if storage_names is not None else tuple(states)
    count = len(params)
    shapes = [p.shape for p in params]
    _check_column("a parameter", params, shapes, param_dtype)
    _check_column("a gradient", grads, shapes, param_dtype)
    param_seeds = _param_seeds(rounding, param_dtype, count)
    n_states = len(names)
    kinds = (ctypes.c_int32 * max(1, n_states))()
    slots = (ctypes.c_int32 * max(1, n_states))()
    used = []
    for k, name in enumerate(names):
        if name is None:
            kinds[k] = -1
            continue
        if name not in given:
            raise _state_dtype_error(f"no storage kind given for state '{name}'")
        j = given.index(name)
        kind = storage.kinds[j]
        if kind not in KINDS:
            raise _state_dtype_error(f"state '{name}' has kind {kind!r}; the kernel rounds {tuple(KINDS)}")
        kinds[k], slots[k] = KINDS[kind], storage.slots[j]
        used.append((k, name, states[name]))
    rows = [0] * count
    scale_cols = {k: [None] * count for k, _, _ in used}
    params, grads = list(params), list(grads)
    columns = {k: list(col) for k, _, col in used}
    writeback: list = []
    for i in range(count):
        p = params[i]
        layout = None
        fmt = None
        for k, name, col in used:
            s = col[i]
            if s.shape != shapes[i]:
                raise RuntimeError(f"fused kernel: state '{name}' has shape {tuple(s.shape)}, "
                                   f"its parameter {tuple(shapes[i])}")
            this = {torch.bfloat16: "bfloat16", torch.uint8: "int8"}.get(s.dtype)
            if this is None or (this == "int8" and storage.format != "int8"):
                raise _state_dtype_error(f"state '{name}' is {s.dtype}, not the storage of a "
                                         f"{storage.format} state (load_state_dict or the conversion call "
                                         "keeps it so; a state set by hand must be too)")
            if fmt is not None and this != fmt:
                raise _state_dtype_error("the states of one parameter are stored in different formats")
            fmt = this
            if not _dense_strides(s) or (layout is not None and s.stride() != layout):
                raise _state_dtype_error(f"state '{name}' does not cover its memory densely in the layout "
                                         "of the parameter's other state tensors")
            layout = s.stride()
            if this == "int8":
                numel = s.numel()
                if s.dim() < 2:
                    raise _state_dtype_error(f"int8 state '{name}' needs two or more dimensions")
                if numel and s.shape[0] > 1 and s.stride(0) != numel // s.shape[0]:
                    raise _state_dtype_error(f"int8 state '{name}' must keep dim 0 outermost in memory")
                rows[i] = numel // s.shape[0] if numel else 0
                try:
                    scales = storage.scales[name][i]
                except (KeyError, IndexError, TypeError):
                    raise _state_dtype_error(f"no scales given for int8 state '{name}'") from None
                expected = state_format.scale_shape(s.shape)
                if scales.dtype != torch.float32 or tuple(scales.shape) != expected:
                    raise _state_dtype_error(f"the scales of int8 state '{name}' are {scales.dtype} "
                                             f"{tuple(scales.shape)}, expected float32 {expected}")
                if not scales.is_contiguous():
                    work = scales.contiguous()
                    writeback.append((scales, work))
                    scales = work
                scale_cols[k][i] = scales
        if layout is None:
            continue
        if param_seeds is not None and not _same_order(layout, torch.empty_like(
                p, device="meta", **state_format.layout_like(p)).stride(), p.shape):
            raise _state_dtype_error("stochastic parameter rounding numbers the elements in the layout the "
                                     "engine gives the state (state_format.layout_like); this state has another")
        if p.stride() != layout or not _dense_strides(p):
            work = torch.empty_like(columns[used[0][0]][i], dtype=p.dtype).copy_(p)
            writeback.append((p, work))
            params[i] = work
        if grads[i].stride() != layout:
            grads[i] = torch.empty_like(columns[used[0][0]][i], dtype=grads[i].dtype).copy_(grads[i])
    seeds = storage.seeds
    if len(seeds) != count:
        raise _state_dtype_error(f"{len(seeds)} rounding seeds for {count} tensors")
    args = _LowPrecisionArgs()
    args.algorithm, args.dtype, args.count, args.n_states = algorithm, DTYPES[param_dtype], count, n_states
    args.ptrs = ptrs = (ctypes.c_void_p * (count * (2 + n_states)))()
    args.scale_ptrs = scale_ptrs = (ctypes.c_void_p * max(1, count * n_states))()
    ptrs[0:count] = [p.data_ptr() for p in params]
    ptrs[count:2 * count] = [g.data_ptr() for g in grads]
    for k, _, _ in used:
        ptrs[(2 + k) * count:(3 + k) * count] = [s.data_ptr() for s in columns[k]]
        scale_ptrs[k * count:(k + 1) * count] = [None if s is None else s.data_ptr() for s in scale_cols[k]]
    args.numel = (ctypes.c_int64 * count)(*(p.numel() for p in params))
    args.row = (ctypes.c_int64 * count)(*rows)
    args.seeds = (ctypes.c_uint32 * count)(*(int(x) & 0xFFFFFFFF for x in seeds))
    args.kinds, args.slots, args.writeback = kinds, slots, writeback
    args.param_seeds = param_seeds
    args.tensors = (params, grads)  # the copies made here stay allocated while their pointers are in use
    return args



def encode(x: Tensor, format: str, kind: str, key: int) -> tuple[Tensor, Tensor | None]:
    """The kernel's rounding of given float32 values, for tests: ``x`` encoded as the kernel's step encodes.

    ``format`` "bfloat16" returns (bfloat16 tensor, None), like ``state_format.encode_bfloat16``; "int8" returns
    (uint8 codes, float32 scales) of a tensor of two or more dimensions, like ``state_format.quantize_int8``.
    ``x`` is read in its contiguous layout (row-major memory order).
    """
    if x.dtype != torch.float32:
        raise TypeError(f"encode takes a float32 tensor, got {x.dtype}")
    lib = load()
    work = x.contiguous().clone()  # the kernel clamps in place
    if format == "bfloat16":
        out = torch.empty_like(work, dtype=torch.bfloat16)
        rows, row, scales, scale_ptr = 1, work.numel(), None, None
    elif format == "int8":
        out = torch.empty_like(work, dtype=torch.uint8)
        rows, row = state_format.scale_shape(work.shape)[0], work.numel() // max(1, work.shape[0])
        scales = torch.empty(state_format.scale_shape(work.shape), dtype=torch.float32)
        scale_ptr = scales.data_ptr()
    else:
        raise ValueError(f'format must be "bfloat16" or "int8", got {format!r}')
    rc = lib.adamkit_encode(FORMATS[format], KINDS[kind], rows, row, work.data_ptr(), out.data_ptr(), scale_ptr,
                            key & 0xFFFFFFFF)
    if rc != 0:
        raise RuntimeError(f"adamkit_encode failed with code {rc}")
    return out, scales


def decode(codes: Tensor, scales: Tensor, kind: str) -> Tensor:
    """The kernel's float32 values of int8 codes (contiguous, two or more dimensions), for tests: as
    ``state_format.dequantize_int8``."""
    lib = load()
    codes = codes.contiguous()
    scales = scales.contiguous().float()
    out = torch.empty_like(codes, dtype=torch.float32)
    rows = codes.shape[0]
    rc = lib.adamkit_decode(KINDS[kind], rows, codes.numel() // max(1, rows), codes.data_ptr(), scales.data_ptr(),
                            out.data_ptr())
    if rc != 0:
        raise RuntimeError(f"adamkit_decode failed with code {rc}")
    return out
