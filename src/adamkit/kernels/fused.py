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
"""
from __future__ import annotations

import operator
from collections import deque
from itertools import repeat

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
            fused_cpu.launch(call, params, grads, states, storage=storage, storage_names=names)
        except fused_cpu.Unsupported:  # raised before any tensor is written
            if group["fused"]:
                raise
            return False
        if whole_group and storage is None:
            self._remember(opt, group, names, call.names)
        return True

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


FUSED = register(Fused())
