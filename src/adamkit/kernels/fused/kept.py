"""The fused kernel's pointer tables kept between steps, and their per-step checks.

With thousands of small tensors, building the kernel's pointer table (:mod:`.launch`) is most of a step's
cost. After a step of plain contiguous CPU tensors the backend (:mod:`.backend`) keeps one of these for the
group (:class:`CachedLaunch`, float32 state) or per bucket (:class:`StoredLaunch`, low-precision state);
each step checks that it still applies before one kernel call. The check is in Python here, or, for
groups of ``check.MIN_TENSORS`` tensors or more where it is wanted, in native code (:mod:`.check`).
"""
from __future__ import annotations

import ctypes
import operator

import torch
from torch import Tensor

from ...core import state_format
from . import check
from .build import FIRST_USE_ORIGIN, load, loaded_build, parallel_run_address
from .launch import DTYPES, GRAIN, STATE_DTYPE
from .spec import ALGORITHMS, KernelCall

_DTYPE_OF = operator.attrgetter("dtype")
_GRAD = operator.attrgetter("grad")
_STEP = operator.itemgetter("step")
_DATA_PTR = Tensor.data_ptr


class CachedLaunch:
    """The kernel's pointer table for one bucket, kept between steps.

    For a group of plain contiguous CPU tensors the pointers of the parameters
    and of the state tensors stay the same from step to step; only the
    gradients change. Rebuilding the table costs a few microseconds per tensor,
    which for thousands of small tensors is most of a step, so the engine keeps
    one of these and, each step, checks that it still applies (:meth:`check`)
    before one kernel call (:meth:`launch`).

    Memory safety: the table holds the storages its pointers point into, so
    that memory stays allocated while the table exists, and each step it
    compares the current data pointers of every parameter and state tensor
    with the kept ones (C-level ``map`` over the tensors; for groups of
    ``check.MIN_TENSORS`` or more, one native pass, :mod:`.check`,
    which also checks their dtypes and shapes). A tensor whose
    storage was swapped (``p.data = ...``, ``state["exp_avg"].data = ...``, a
    new state tensor) has another pointer (no new allocation can start where a
    kept storage lies), so the table is not used and the general path steps
    the new tensors and rebuilds it.
    """

    def __init__(self, names: tuple, params: list[Tensor], states: dict[str, list[Tensor]], state_dicts: list[dict]):
        self.names = names
        self.count = count = len(params)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.state_dicts = list(state_dicts)  # the per-parameter state dicts the state tensors are found in
        self.state_changes = None  # the owner's count of changes of opt.state when the table was built
        self.shapes = list(map(Tensor.size, params))  # a gradient of another shape, even of the same size, is refused
        # (item getter, pointers, dtype, shapes) of each state column the kernel reads (see _check_kept)
        self.columns = [(operator.itemgetter(name), list(map(_DATA_PTR, states[name])), states[name][0].dtype,
                         self.shapes) for name in names if name is not None]
        # the memory the pointers point into stays allocated while the table exists
        self._storages = [list(map(Tensor.untyped_storage, params))] + [
            list(map(Tensor.untyped_storage, states[name])) for name in names if name is not None]
        self.numel = (ctypes.c_int64 * count)(*map(Tensor.numel, params))
        self.torch_dtype = params[0].dtype
        self.dtype = DTYPES[params[0].dtype]
        self.ptrs = (ctypes.c_void_p * (count * (2 + len(names))))()
        self.ptrs[0:count] = self.param_ptrs
        for k, name in enumerate(names):
            if name is not None:
                self.ptrs[(2 + k) * count:(3 + k) * count] = list(map(_DATA_PTR, states[name]))
        # groups of many tensors are checked in native code (check.py), which writes the gradients'
        # pointers straight into self.ptrs; None: the Python check below
        self.native = None
        if count >= check.MIN_TENSORS and (lib := check.native(
                loaded_build().origin == FIRST_USE_ORIGIN, parallel_run_address())) is not None:
            grad_slots = ctypes.addressof(self.ptrs) + count * ctypes.sizeof(ctypes.c_void_p)
            try:
                self.native = check.NativeCheck(lib, names, params, states, grad_slots)
            except check.NativeCheckUnavailable:
                pass

    @staticmethod
    def eligible(names: tuple, params: list[Tensor], states: dict[str, list[Tensor]]) -> bool:
        """Whether a table can stand for these tensors: contiguous, real, the kernel's dtypes, on the CPU."""
        if not params or params[0].device.type != "cpu" or params[0].dtype not in DTYPES:
            return False
        dtype, state_dtype = params[0].dtype, STATE_DTYPE[params[0].dtype]
        if any(type(p) is not torch.Tensor and type(p) is not torch.nn.Parameter for p in params):
            return False  # tensor subclasses (DTensor, ...) take the general path
        if not all(p.dtype == dtype and p.is_contiguous() for p in params):
            return False
        for name in names:
            if name is not None and not all(
                type(s) is torch.Tensor and s.dtype == state_dtype and s.is_contiguous() and s.shape == p.shape
                for s, p in zip(states[name], params)
            ):
                return False
        return True

    def check(self, names: tuple, params: list[Tensor], state_dicts: list[dict]) -> tuple | None:
        """The step count and the gradients' pointers if the table still applies to these tensors, else None.

        Writes nothing. It applies while the state dicts, the parameters' and the state tensors' storages are
        the ones the table points at (contiguous, of the kept dtypes and shapes), every parameter has one step
        count, and every gradient is a dense contiguous tensor of its parameter's shape and dtype (torch checks
        assigned gradients, but
        ``p.grad.data = ...`` goes around it; the general path then raises, naming the parameter).
        """
        if names != self.names or len(params) != self.count:
            return None
        if state_dicts is not self.state_dicts and not all(map(operator.is_, state_dicts, self.state_dicts)):
            return None
        if self.native is not None and type(params) is list:
            # the same conditions, checked per tensor in C++ (check.cpp): each parameter's storage,
            # dtype, shape and contiguity, each gradient's, each state tensor's, and one step count (an int);
            # the gradients' pointers are then already in self.ptrs
            step = self.native(params, self.state_dicts)
            return None if step is None else (step, None)
        return _check_kept(params, state_dicts, self.param_ptrs, self.torch_dtype, self.shapes, self.columns)

    def launch(self, call: "KernelCall", grad_ptrs: list[int]) -> None:
        """One kernel call with the gradients :meth:`check` accepted (call it right after that check;
        ``grad_ptrs`` None: the native check wrote them into the table)."""
        count = self.count
        if grad_ptrs is not None:
            self.ptrs[count:2 * count] = grad_ptrs
        sc = (ctypes.c_double * 16)(*call.scalars)
        base = ctypes.addressof(self.ptrs)
        size = ctypes.sizeof(ctypes.c_void_p)
        rc = load().adamkit_step(
            ALGORITHMS[call.algorithm], self.dtype, count, self.numel, base, base + count * size,
            base + 2 * count * size, len(self.names), sc, call.flags, torch.get_num_threads(), GRAIN, None, 0,
        )
        if rc != 0:  # pragma: no cover - eligible() and check() make this unreachable
            raise RuntimeError(f"adamkit fused kernel failed with code {rc}")


_SEED = operator.itemgetter("rounding_seed")
_PLAIN = (torch.Tensor, torch.nn.Parameter)


class StoredLaunch:
    """The kernel's arguments for one bucket of low-precision state (bfloat16, or int8 codes with their scales),
    kept between steps as :class:`CachedLaunch` keeps a float32 bucket's table.

    Built (:meth:`build`) after a step of plain contiguous CPU tensors the kernel stepped without copies. Each
    step :meth:`check` compares the current parameters', state tensors' and scales' data pointers, dtypes,
    shapes and contiguity with the kept ones (C-level ``map`` over the tensors), and the state dicts' rounding
    seeds and step counts; only the gradients' pointers are then new. The table holds the storages its
    pointers point into, so that memory stays allocated while it exists.
    """

    def __init__(self, call: "KernelCall", params: list[Tensor], states: dict[str, list[Tensor]],
                 scales: dict[str, list[Tensor]], state_dicts: list[dict], args: "_LowPrecisionArgs"):
        self.names = call.names
        self.args = args
        self.count = len(params)
        self.params = list(params)
        self.state_dicts = list(state_dicts)
        self.param_ptrs = list(map(_DATA_PTR, params))
        self.shapes = list(map(Tensor.size, params))
        self.torch_dtype = params[0].dtype
        self.seeds = list(map(_SEED, state_dicts))
        # (item getter, pointers, dtype, shapes) of each stored column the kernel reads: codes or bfloat16
        # tensors (the parameters' shapes), and int8 scales (their own shapes)
        self.columns = []
        for name in (n for n in call.names if n is not None):
            col = states[name]
            self.columns.append((operator.itemgetter(name), list(map(_DATA_PTR, col)), col[0].dtype, self.shapes))
            if name in scales:
                sc = scales[name]
                self.columns.append((operator.itemgetter(state_format.scale_name(name)), list(map(_DATA_PTR, sc)),
                                     torch.float32, list(map(Tensor.size, sc))))
        self._storages = [list(map(Tensor.untyped_storage, params))] + [
            list(map(Tensor.untyped_storage, map(get, state_dicts))) for get, _, _, _ in self.columns]

    @classmethod
    def build(cls, call: "KernelCall", params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
              storage: "state_format.Storage", state_dicts: list[dict],
              args: "_LowPrecisionArgs | None") -> "StoredLaunch | None":
        """The kept table of a bucket the kernel just stepped with ``args`` (what :func:`.launch.launch_low_precision`
        returned), or None where one cannot stand for it."""
        if args is None or None in state_dicts:  # local tensors of DTensor parameters: not the optimizer's keys
            return None
        used = [n for n in call.names if n is not None]
        scales = {n: storage.scales[n] for n in used if n in storage.scales}
        cols = [states[n] for n in used] + list(scales.values())
        if params[0].device.type != "cpu" or args.writeback or any(
                type(t) not in _PLAIN or not t.is_contiguous() for t in (*params, *grads, *(x for c in cols for x in c))):
            return None
        args.tensors = None  # no copies: the table keeps the storages it points into, not the first gradients
        return cls(call, params, states, scales, state_dicts, args)

    def check(self) -> tuple | None:
        """The step count and the gradients' pointers if the table still applies to its parameters (the caller
        checks that they are still the group's), else None (writes nothing)."""
        params, dicts = self.params, self.state_dicts
        try:
            if list(map(_SEED, dicts)) != self.seeds:
                return None
        except (TypeError, KeyError):
            return None
        return _check_kept(params, dicts, self.param_ptrs, self.torch_dtype, self.shapes, self.columns)

    def launch(self, call: "KernelCall", grad_ptrs: list[int], step: int) -> None:
        """One kernel call with the gradients :meth:`check` accepted (call it right after that check)."""
        self.args.ptrs[self.count:2 * self.count] = grad_ptrs
        self.args.launch(call.scalars, call.flags, step)


def _check_kept(params: list[Tensor], state_dicts: list[dict], param_ptrs: list[int], dtype: torch.dtype,
                shapes: list, columns: list) -> tuple | None:
    """The Python check of a kept table (:class:`CachedLaunch`, :class:`StoredLaunch`): the step count and the
    gradients' pointers while the parameters' pointers are ``param_ptrs`` and each column of ``columns``
    (item getter, pointers, dtype, shapes) is what it was, all contiguous and of their kept dtypes and shapes,
    every state dict has one step count, and every gradient is a dense contiguous tensor of its parameter's
    shape and dtype; else None (writes nothing). A same-storage view of another dtype, shape or order
    (``p.data = p.data.t()``, ...) keeps the pointer: the layout is compared too."""
    try:
        if list(map(_DATA_PTR, params)) != param_ptrs or not _same_layout(params, dtype, shapes):
            return None
        for get, ptrs, col_dtype, col_shapes in columns:
            col = list(map(get, state_dicts))
            if list(map(_DATA_PTR, col)) != ptrs or not _same_layout(col, col_dtype, col_shapes):
                return None
        steps = set(map(_STEP, state_dicts))
        grads = list(map(_GRAD, params))
        grad_ptrs = list(map(_DATA_PTR, grads))  # None or a tensor without storage (sparse) raise here
        if not _same_layout(grads, dtype, shapes):
            return None
    except (TypeError, RuntimeError, KeyError, AttributeError):
        return None
    if len(steps) != 1:
        return None
    return steps.pop(), grad_ptrs


def _same_layout(col: list[Tensor], dtype: torch.dtype, shapes: list) -> bool:
    """Every tensor of ``col`` contiguous, of ``dtype`` and of the kept shapes."""
    return (all(map(Tensor.is_contiguous, col)) and set(map(_DTYPE_OF, col)) == {dtype}
            and list(map(Tensor.size, col)) == shapes)
