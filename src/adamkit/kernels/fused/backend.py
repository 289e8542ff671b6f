"""The fused backend: the C kernel for a bucket (:mod:`.launch`), and its pointer tables kept between steps
(:mod:`.kept`).

The kernel's arguments come from the algorithm's declaration through one generic
packer (:func:`adamkit.kernels.fused.spec.kernel_call`). With thousands of small
tensors, building the kernel's pointer table is most of a step's cost, so after a
step that covered a whole group the table is kept (by this backend, per owner
and group) and the next step of that group goes straight to the kernel
(:meth:`Fused.prepare`). It is used only while it provably still applies (same
parameter and state storages, same state dicts, one step count, every gradient
present, strided and contiguous); otherwise the engine's general path runs and
may rebuild it.

A group of float32 state keeps one :class:`.kept.CachedLaunch` (the group in one bucket); a group of
low-precision state (``state_dtype`` bfloat16 or "int8") one :class:`.kept.StoredLaunch` per bucket
(int8 matrices and their bfloat16 vectors are two buckets); each step checks the codes', the scales' and the
seeds' identity too. A group of ``param_rounding="stochastic"`` keeps no table: the general path steps it,
handing the kernel the parameters' rounding seeds.
"""
from __future__ import annotations

import operator
import weakref
from collections import deque
from itertools import repeat
from typing import NamedTuple

import torch

from ..backend import Backend, register
from . import build, launch
from .kept import CachedLaunch, StoredLaunch
from .spec import kernel_call


class Stepped(NamedTuple):
    """What :meth:`Fused.step` returns for a bucket it stepped: the kernel's state slots, and for low-precision
    state the table that can stand for the bucket next time (None where none can)."""

    names: tuple
    stored: bool
    table: "StoredLaunch | None"


class StoredGroup(NamedTuple):
    """What the fused backend keeps for a group of low-precision state: its parameters, its ``state_dtype``
    when kept, one :class:`.kept.StoredLaunch` per bucket, and the owner's count of changes of its
    state then."""

    params: list
    state_dtype: object
    tables: list
    state_changes: int


class Fused(Backend):
    name = "fused"
    options = {"fused": True}
    #: the low-precision state formats the kernel steps (``state_format.Storage.format``)
    storage_formats = ("bfloat16", "int8")

    def __init__(self):
        #: owner -> {id(group): (group, state, names, table)}
        self._kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def available(self) -> bool:
        return build.available()

    def require(self, cls) -> None:
        if cls.fused_kernel is None:
            raise RuntimeError(f"{cls.__name__} has no fused implementation in this build")
        build.load()  # raises FusedKernelUnavailable, saying why

    def takes(self, cls, params) -> bool:
        """Whether the default path runs the kernel; when it could but the kernel is unavailable, says so once."""
        if cls.fused_kernel is None or not launch.supports(params):
            return False
        if build.available():
            return True
        build.warn_fallback()  # once per process: why, and how to fix it
        return False

    def step(self, cls, bucket, c, *, explicit):
        """One kernel call for the bucket; ``bucket.storage`` (bfloat16 or int8 state) passes its formats, kinds
        and rounding seeds into the kernel."""
        call = kernel_call(cls, c, bucket.names, bucket.maximize)
        storage = bucket.storage
        try:
            args = launch.launch(call, bucket.params, bucket.grads, bucket.states, storage=storage,
                                 storage_names=bucket.names, rounding=bucket.rounding)
        except launch.Unsupported:  # raised before any tensor is written
            if explicit:
                raise
            return False
        if storage is None:
            return Stepped(call.names, False, None)
        if bucket.rounding is not None:  # no kept table: the general path hands the rounding seeds each step
            return Stepped(call.names, True, None)
        dicts = bucket.state_dicts or [None] * len(bucket.params)
        return Stepped(call.names, True, StoredLaunch.build(
            call, bucket.params, bucket.grads, bucket.states, storage, dicts, args))

    def finish_group(self, owner, cls, group, state, names, receipts, complete) -> None:
        """Keep the group's tables when the kernel stepped every parameter of it at one step count (``complete``)
        and each bucket could keep one (float32: the group in one bucket), else drop what was kept for it."""
        kept = self._kept.setdefault(owner, {})
        kept.pop(id(group), None)
        changes = getattr(state, "changes", None)  # the owner's state counts its changes (base.OptimizerState)
        if not complete or not receipts or changes is None or _stochastic(group):
            return
        if all(r.stored for r in receipts):
            tables = [r.table for r in receipts]
            if None not in tables:
                table = StoredGroup(list(group["params"]), group.get("state_dtype"), tables, changes)
                kept[id(group)] = (group, state, names, table)
            return
        if len(receipts) != 1:
            return
        params = group["params"]
        state_dicts = [state[p] for p in params]
        kernel_names = receipts[0].names
        states = {n: [s[n] for s in state_dicts] for n in kernel_names if n is not None}
        if CachedLaunch.eligible(kernel_names, params, states):
            table = CachedLaunch(kernel_names, params, states, state_dicts)
            table.state_changes = changes
            kept[id(group)] = (group, state, names, table)

    def forget(self, owner) -> None:
        self._kept.pop(owner, None)  # the tables point at the old tensors

    def kept(self, owner, group):
        """The table kept for ``owner``'s ``group`` (a :class:`.kept.CachedLaunch` or a
        :class:`StoredGroup`), or None."""
        entry = self._kept.get(owner, {}).get(id(group))
        return None if entry is None else entry[3]

    def prepare(self, owner, cls, group, state, names, coefficients):
        """The group's next step from its kept table, checked but not yet run; None where the table does not apply.

        O(1) Python per group plus a few C-level passes over the tensors (:meth:`CachedLaunch.check`).
        """
        entry = self._kept.get(owner, {}).get(id(group))
        if entry is None:
            return None
        cached_group, cached_state, cached_names, table = entry
        if (cached_group is not group or cached_state is not state or cached_names != names
                or getattr(state, "changes", None) != table.state_changes):
            return None  # an entry of the owner's state was set or removed since the table was built
        if _stochastic(group):  # param_rounding set by hand since: the general path hands the rounding seeds
            return None
        if isinstance(table, StoredGroup):
            return self._prepare_stored(cls, group, names, coefficients, table)
        if group.get("state_dtype", torch.float32) is not torch.float32:
            return None
        checked = table.check(table.names, group["params"], table.state_dicts)
        if checked is None:
            return None
        step, grad_ptrs = checked
        call = kernel_call(cls, coefficients(step), names, group["maximize"])
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
    def _prepare_stored(cls, group, names, coefficients, kept: StoredGroup):
        """``prepare`` for a group of low-precision state: every bucket's kept table checked, one step count."""
        params = group["params"]
        if (group.get("state_dtype") != kept.state_dtype or len(params) != len(kept.params)
                or not all(map(operator.is_, params, kept.params))):
            return None
        checked = [table.check() for table in kept.tables]
        if None in checked or len({step for step, _ in checked}) != 1:
            return None
        step = checked[0][0]
        call = kernel_call(cls, coefficients(step), names, group["maximize"])
        if any(call.names != table.names for table in kept.tables):
            return None

        def run() -> None:
            for table, (_, grad_ptrs) in zip(kept.tables, checked):
                table.launch(call, grad_ptrs, step)
            for table in kept.tables:
                deque(map(operator.setitem, table.state_dicts, repeat("step"), repeat(step + 1)), maxlen=0)
        return run


def _stochastic(group) -> bool:
    """Whether ``group`` writes its half-precision parameters with stochastic rounding: its steps take the
    general path, which hands the kernel the rounding seeds (no table is kept for it)."""
    return group.get("param_rounding", "nearest") != "nearest"


FUSED = register(Fused())
