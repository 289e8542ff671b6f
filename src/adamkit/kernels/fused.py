"""The fused backend: the C kernel of ``fused_cpu`` for a bucket, and its pointer table kept between steps.

The kernel's arguments come from the algorithm's declaration through one generic
packer (:func:`adamkit.kernels.fused_spec.kernel_call`). With thousands of small
tensors, building the kernel's pointer table is most of a step's cost, so after a
step that covered a whole group in one bucket the table is kept (in the
optimizer's ``_fused_tables``, keyed by the group) and the next step of that group
goes straight to the kernel (:meth:`Fused.prepare`). It is used only while it
provably still applies (same parameter and state storages, same state dicts,
one step count, every gradient present, strided and contiguous); otherwise the
engine's general path runs and may rebuild it.

A group of low-precision state (``state_dtype`` bfloat16 or "int8") is kept the
same way, one :class:`fused_cpu.StoredLaunch` per bucket (int8 matrices and their
bfloat16 vectors are two buckets), once the engine's general path has stepped the
whole group on the kernel (:meth:`Fused.stored_group_done`); each step checks the
codes', the scales' and the seeds' identity too.
"""
from __future__ import annotations

import operator
from collections import deque
from itertools import repeat
from typing import NamedTuple

import torch

from . import fused_cpu
from .backend import Backend, register


class Fused(Backend):
    name = "fused"
    options = {"fused": True}
    #: the low-precision state formats the kernel steps (``state_format.Storage.format``)
    storage_formats = ("bfloat16", "int8")

    def available(self) -> bool:
        return fused_cpu.available()

    def require(self, cls) -> None:
        if cls.fused_kernel is None:
            raise RuntimeError(f"{cls.__name__} has no fused implementation in this build")
        fused_cpu.load()  # raises FusedKernelUnavailable, saying why

    def takes(self, cls, params) -> bool:
        """Whether the default path runs the kernel; when it could but the kernel is unavailable, says so once."""
        if cls.fused_kernel is None or not fused_cpu.supports(params):
            return False
        if fused_cpu.available():
            return True
        fused_cpu.warn_fallback()  # once per process: why, and how to fix it
        return False

    def step(self, opt, group, params, grads, states, names, c, *, whole_group, storage=None):
        """One kernel call for the bucket; ``storage`` (bfloat16 or int8 state) passes its formats, kinds and
        rounding seeds into the kernel. Only float32-state groups keep their pointer table."""
        call = fused_cpu.kernel_call(type(opt), c, names, group["maximize"])
        try:
            args = fused_cpu.launch(call, params, grads, states, storage=storage, storage_names=names)
        except fused_cpu.Unsupported:  # raised before any tensor is written
            if group["fused"]:
                raise
            return False
        if whole_group and storage is None:
            self._remember(opt, group, names, call.names)
        elif storage is not None:
            # kept by stored_group_done once every bucket of the group is stepped
            table = fused_cpu.StoredLaunch.build(call, params, grads, states, storage,
                                                 [opt.state.get(p) for p in params], args)
            opt.__dict__.setdefault("_fused_pending", []).append(table)
        return True

    def stored_group_done(self, opt, group, names, complete: bool) -> None:
        """After the general path stepped a group of low-precision state: keep the tables of its buckets when
        the kernel stepped every parameter of the group (``complete``) and each bucket could keep one, else
        drop what was kept for the group."""
        pending = opt.__dict__.pop("_fused_pending", [])
        tables = opt.__dict__.setdefault("_fused_tables", {})
        changes = getattr(opt.state, "changes", None)
        if not complete or not pending or None in pending or changes is None:
            tables.pop(id(group), None)
            return
        kept = StoredGroup(list(group["params"]), group.get("state_dtype"), pending, changes)
        tables[id(group)] = (group, opt.state, names, kept)

    @staticmethod
    def _remember(opt, group, names, kernel_names) -> None:
        params = group["params"]
        state_dicts = [opt.state[p] for p in params]
        states = {n: [s[n] for s in state_dicts] for n in kernel_names if n is not None}
        tables = opt.__dict__.setdefault("_fused_tables", {})
        changes = getattr(opt.state, "changes", None)  # opt.state counts its changes (base.OptimizerState)
        if changes is not None and fused_cpu.CachedLaunch.eligible(kernel_names, params, states):
            table = fused_cpu.CachedLaunch(kernel_names, params, states, state_dicts)
            table.state_changes = changes
            tables[id(group)] = (group, opt.state, names, table)
        else:
            tables.pop(id(group), None)

    def forget(self, opt) -> None:
        opt.__dict__.pop("_fused_tables", None)  # the tables point at the old tensors

    def prepare(self, opt, group, names, loss):
        """The group's next step from its kept table, checked but not yet run; None where the table does not apply.

        O(1) Python per group plus a few C-level passes over the tensors (:meth:`CachedLaunch.check`).
        """
        entry = opt.__dict__.get("_fused_tables", {}).get(id(group))
        if entry is None:
            return None
        cached_group, cached_state, cached_names, table = entry
        params = group["params"]
        state = opt.state
        if (cached_group is not group or cached_state is not state or cached_names != names
                or getattr(state, "changes", None) != table.state_changes):
            return None  # no entry of opt.state was set or removed since the table was built: its state dicts
        if isinstance(table, StoredGroup):
            return self._prepare_stored(opt, group, names, loss, table)
        if group.get("state_dtype", torch.float32) is not torch.float32:
            return None
        checked = table.check(table.names, params, table.state_dicts)  # are still the ones kept in the table
        if checked is None or opt._implementation(group, params) != "fused":
            return None
        step, grad_ptrs = checked
        call = fused_cpu.kernel_call(type(opt), opt.coefficients(group, step, loss), names, group["maximize"])
        if call.names != table.names:
            return None

        def run() -> None:
            table.launch(call, grad_ptrs)
            if table.native is not None:
                table.native.set_steps(table.state_dicts, step + 1)
            else:
                deque(map(operator.setitem, table.state_dicts, repeat("step"), repeat(step + 1)), maxlen=0)
        return run

    @staticmethod
    def _prepare_stored(opt, group, names, loss, kept: "StoredGroup"):
        """``prepare`` for a group of low-precision state: every bucket's kept table checked, one step count."""
        params = group["params"]
        if (group.get("state_dtype") != kept.state_dtype or len(params) != len(kept.params)
                or not all(map(operator.is_, params, kept.params))):
            return None
        checked = [table.check() for table in kept.tables]
        if None in checked or len({step for step, _ in checked}) != 1 or opt._implementation(group, params) != "fused":
            return None
        step = checked[0][0]
        call = fused_cpu.kernel_call(type(opt), opt.coefficients(group, step, loss), names, group["maximize"])
        if any(call.names != table.names for table in kept.tables):
            return None

        def run() -> None:
            for table, (_, grad_ptrs) in zip(kept.tables, checked):
                table.launch(call, grad_ptrs, step)
            for table in kept.tables:
                deque(map(operator.setitem, table.state_dicts, repeat("step"), repeat(step + 1)), maxlen=0)
        return run


class StoredGroup(NamedTuple):
    """What the fused backend keeps for a group of low-precision state: its parameters, its ``state_dtype``
    when kept, one :class:`fused_cpu.StoredLaunch` per bucket, and the owner's count of changes of
    ``opt.state`` then."""

    params: list
    state_dtype: object
    tables: list
    state_changes: int


FUSED = register(Fused())
