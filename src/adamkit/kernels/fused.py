"""The fused backend: the C kernel of ``fused_cpu`` for a bucket, and its pointer table kept between steps.

The kernel's arguments come from the algorithm's declaration through one generic
packer (:func:`adamkit.kernels.fused_spec.kernel_call`). With thousands of small
tensors, building the kernel's pointer table is most of a step's cost, so after a
step that covered a whole group in one bucket the table is kept (in the
optimizer's ``_fused_tables``, keyed by the group) and the next step of that group
goes straight to the kernel (:meth:`Fused.resume`). It is used only while it
provably still applies (same parameter objects and storage, same state tensors,
one step count, every gradient present, strided and contiguous); otherwise the
engine's general path runs and may rebuild it.
"""
from __future__ import annotations

import torch

from . import fused_cpu
from .backend import Backend, register


class Fused(Backend):
    name = "fused"
    options = {"fused": True}

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

    def step(self, opt, group, params, grads, states, names, c, *, whole_group):
        call = fused_cpu.kernel_call(type(opt), c, names, group["maximize"])
        try:
            fused_cpu.launch(call, params, grads, states)
        except fused_cpu.Unsupported:  # raised before any tensor is written
            if group["fused"]:
                raise
            return False
        if whole_group:
            self._remember(opt, group, names, call.names)
        return True

    @staticmethod
    def _remember(opt, group, names, kernel_names) -> None:
        params = group["params"]
        states = {n: [opt.state[p][n] for p in params] for n in kernel_names if n is not None}
        tables = opt.__dict__.setdefault("_fused_tables", {})
        if fused_cpu.CachedLaunch.eligible(kernel_names, params, states):
            tables[id(group)] = (group, opt.state, names, fused_cpu.CachedLaunch(kernel_names, params, states))
        else:
            tables.pop(id(group), None)

    def keeps(self, opt, group) -> bool:
        return id(group) in opt.__dict__.get("_fused_tables", {})

    def forget(self, opt) -> None:
        opt.__dict__.pop("_fused_tables", None)  # the tables point at the old tensors

    def resume(self, opt, group, names, loss) -> bool:
        entry = opt.__dict__.get("_fused_tables", {}).get(id(group))
        if entry is None:
            return False
        cached_group, cached_state, cached_names, table = entry
        params = group["params"]
        if (cached_group is not group or cached_state is not opt.state or cached_names != names
                or len(params) != table.count or opt._implementation(group, params) != "fused"):
            return False
        grads = [p.grad for p in params]
        if any(g is None or g.layout != torch.strided for g in grads):
            return False
        states = [opt.state.get(p) for p in params]
        if any(s is None for s in states):
            return False
        step = states[0]["step"]
        if any(s["step"] != step for s in states):
            return False
        c = opt.coefficients(group, step, loss)
        call = fused_cpu.kernel_call(type(opt), c, names, group["maximize"])
        if not table.matches(call.names, params, states) or not table.run(call, grads):
            return False
        for s in states:
            s["step"] = step + 1
        return True


FUSED = register(Fused())
