"""One launch per bucket: the table of the bucket's tensors, the step's scalars and the kernel call.

Nothing here reads a device value: the table is built on the host from the tensors' addresses, sizes and the
step's Python numbers, and copied to the device asynchronously (from pinned memory on CUDA), so a step never
synchronises the device and never recompiles for new numbers.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os

import numpy as np
import torch
from torch import Tensor

from ...core import state_format
from . import source


class Unsupported(ValueError):
    """The Triton backend cannot step these tensors here (raised before anything is written)."""


def available() -> bool:
    """Triton is installed and can run here: a CUDA device, or its interpreter for CPU tensors."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (decided by TRITON_INTERPRET when triton is imported)."""
    import triton

    return bool(triton.knobs.runtime.interpret)


def steps_cpu_tensors() -> bool:
    """Whether CPU tensors can be stepped here: triton is installed and runs in its interpreter (tests)."""
    return importlib.util.find_spec("triton") is not None and interpreting()


def _check_device(device: torch.device) -> None:
    if importlib.util.find_spec("triton") is None:
        raise Unsupported('fused="triton" needs the triton package (pip install adamkit[gpu])')
    if device.type == "cpu" and not interpreting():
        raise Unsupported('fused="triton" steps CPU tensors only in Triton\'s interpreter (set TRITON_INTERPRET=1 '
                          'before triton is imported; it is for tests); on CPU use fused=True, the C kernel')
    if device.type == "cuda" and interpreting():
        raise Unsupported('fused="triton" steps CUDA tensors with compiled kernels: unset TRITON_INTERPRET')
    if device.type not in ("cpu", "cuda"):
        raise Unsupported(f'fused="triton" steps CUDA tensors, got tensors on {device}')


def _memory_order(t: Tensor) -> tuple:
    return tuple(s for s, n in zip(t.stride(), t.shape) if n != 1)


def _aligned(tensors: list[Tensor], reference: Tensor, writeback: list) -> list[Tensor]:
    """``tensors`` laid out in ``reference``'s memory order (copies where not; written ones noted in ``writeback``,
    all but the gradient, which is ``tensors[1]``)."""
    order = _memory_order(reference)
    out = []
    for k, t in enumerate(tensors):
        if _memory_order(t) != order:
            copy = torch.empty_like(reference, dtype=t.dtype).copy_(t)
            if k != 1:
                writeback.append((t, copy))
            t = copy
        out.append(t)
    return out


def step_bucket(cls, c, params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
                names: tuple[str, ...], maximize: bool, storage: state_format.Storage | None = None,
                rounding: state_format.ParamRounding | None = None) -> None:
    """Step one bucket in place with one kernel launch (see :mod:`adamkit.kernels.gpu`).

    ``cls``: the algorithm (its ``update``, ``Flags``, ``Scalars``, ``state_formats``); ``c``: the step's
    coefficients; ``params``, ``grads`` and ``states[name]``: local tensors of one device, dtype and step;
    ``storage``: how ``states`` are stored when not in the math dtype (``state_format.Storage``);
    ``rounding``: bfloat16/float16 parameters written with stochastic rounding (``state_format.ParamRounding``;
    each element's bits from its position in the parameter's memory where ``state_format.in_memory_order``,
    else in a row-major copy, as ``state_format.round_param``).
    Raises :class:`Unsupported` before anything is written where it cannot step them.
    """
    if not params:
        return
    device = params[0].device
    _check_device(device)
    if params[0].is_complex():
        if storage is not None:
            raise Unsupported("low-precision state of complex parameters")
        params = [torch.view_as_real(p) for p in params]
        grads = [torch.view_as_real(g) for g in grads]
        states = {n: [torch.view_as_real(s) for s in col] for n, col in states.items()}
    dtype = params[0].dtype
    if dtype not in source.PARAM_DTYPES:
        raise Unsupported(f'fused="triton" steps float32, float16, bfloat16 and float64 parameters, got {dtype}')
    if rounding is not None and (dtype not in state_format.ROUNDED_PARAM_DTYPES or len(rounding.seeds) != len(params)):
        raise Unsupported(f"stochastic rounding writes bfloat16 or float16 parameters with one seed each, got "
                          f"{dtype} and {len(rounding.seeds)} seeds for {len(params)} parameters")
    spec = source.spec_for(cls, c.flags, names, dtype, storage, maximize,
                           "nearest" if rounding is None else "stochastic")
    kernel = source.kernel(spec)
    cols = kernel.columns
    scalars = np.array(kernel.trace.scalar_values(c.scalars), dtype=np.float64)
    count = len(params)
    table = np.zeros(len(scalars) + source.HEADER + count + 1 + count * len(cols), dtype=np.int64)
    table[:len(scalars)] = scalars.view(np.int64)
    table[len(scalars)] = count
    table[len(scalars) + 1] = max(1, count.bit_length())
    starts = table[len(scalars) + source.HEADER:][:count + 1]
    rows = table[len(scalars) + source.HEADER + count + 1:].reshape(count, len(cols))
    int8 = spec.state == "int8"
    writeback: list = []
    alive: list = []
    programs = [0]
    for i, (p, g) in enumerate(zip(params, grads)):
        tensors = [p, g] + [states[n][i] for n in names]
        if int8:
            reference = tensors[2]  # the codes' memory order defines the blocks
            if rounding is not None and _memory_order(reference) != _memory_order(
                    torch.empty_like(p, device="meta", **state_format.layout_like(p))):
                raise Unsupported("stochastic parameter rounding numbers the elements in the layout the engine "
                                  "gives int8 state (state_format.layout_like); these codes have another")
        elif rounding is not None:  # the rounding's element order (state_format.round_param)
            reference = p if state_format.in_memory_order(p) else torch.empty_like(
                p, memory_format=torch.contiguous_format)
        else:
            reference = p if state_format._dense(p) else torch.empty_like(p, memory_format=torch.contiguous_format)
        tensors = _aligned(tensors, reference, writeback)
        alive.append(tensors)  # the copies (a gradient's too) stay allocated until the kernel has run
        row = rows[i]
        row[cols["numel"]] = p.numel()
        row[cols["param"]] = tensors[0].data_ptr()
        row[cols["grad"]] = tensors[1].data_ptr()
        for k, name in enumerate(names):
            row[cols[f"state:{name}"]] = tensors[2 + k].data_ptr()
        if storage is not None:
            for k, name in enumerate(names):
                row[cols[f"key:{name}"]] = state_format.stream_key(storage.seeds[i], storage.step, storage.slots[k])
        if rounding is not None:
            row[cols["key:param"]] = state_format.param_key(rounding.seeds[i], rounding.step)
        if int8:
            n_rows, per_row = state_format.scale_shape(p.shape)
            row[cols["row"]] = p.numel() // n_rows if n_rows else 0
            row[cols["per_row"]] = per_row
            row[cols["blocks"]] = n_rows * per_row
            for name in names:
                scales = storage.scales[name][i]
                if not scales.is_contiguous():
                    work = scales.contiguous()
                    writeback.append((scales, work))
                    scales = work
                row[cols[f"scale:{name}"]] = scales.data_ptr()
            tiles = math.ceil(n_rows * per_row / source.INT8_BLOCKS)
        else:
            tiles = math.ceil(p.numel() / source.BLOCK)
        programs.append(programs[-1] + tiles)
    starts[:] = programs
    if programs[-1]:
        args = torch.from_numpy(table)
        if device.type == "cuda":  # asynchronous: pinned memory, released by the caching host allocator when copied
            args = args.pin_memory().to(device, non_blocking=True)
        tile = {"BLOCKS": source.INT8_BLOCKS} if int8 else {"BLOCK": source.BLOCK}
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            kernel.function[(programs[-1],)](args, args.view(torch.float64), **tile, enable_fp_fusion=False)
    for dst, src in writeback:
        dst.copy_(src)
