"""The interface every backend (loop, foreach, fused, compiled, ...) implements, and their table.

The engine (:mod:`adamkit.optim.base`) groups a param group's tensors into buckets that share one step's
coefficients, asks :func:`adamkit.kernels.choose` which backend steps the group, and hands each bucket to
:func:`adamkit.kernels.run`. A backend never sees the optimizer: it gets the algorithm class (its
``update``, ``Flags``/``Scalars`` and ``fused_kernel`` declarations), the step's coefficients and a
:class:`Bucket` of local tensors.

Low-precision state (``state_dtype``, :mod:`adamkit.core.state_format`): a bucket of bfloat16 or int8 state
comes with ``storage`` (a ``state_format.Storage``; ``states[n]`` then lists the stored tensors: bfloat16, or
uint8 codes with their scales in ``storage.scales[n]``). A backend runs a format only if it is in its
``storage_formats``. Every path computes the same thing: ``state_format.decode_state`` to float32, the
algorithm's float32 ``update``, ``state_format.encode_state`` with ``stream_key(storage.seeds[i],
storage.step, storage.slots[k])``.

Stochastic parameter rounding (``param_rounding="stochastic"``): a bucket of bfloat16 or float16 parameters
comes with ``rounding`` (a ``state_format.ParamRounding``); every path computes the float32 result as
otherwise and writes it with ``state_format.round_param`` and ``param_key(rounding.seeds[i], rounding.step)``,
bit for bit. A backend that cannot raises or returns False, like for tensors it does not take.

A backend may keep what it needs to step a whole group faster next time (the fused kernel's pointer
tables): :meth:`Backend.prepare` offers the step from what was kept, :meth:`Backend.finish_group` is told how
the general path stepped a group, :meth:`Backend.forget` drops what was kept for an owner. The others leave
these three as they are here.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping, NamedTuple

from torch import Tensor


class Bucket(NamedTuple):
    """One call's tensors: local tensors of one device, dtype, step count and state format."""

    params: list[Tensor]
    grads: list[Tensor]
    #: state name -> one tensor per parameter (stored tensors when ``storage`` is given)
    states: dict[str, list[Tensor]]
    #: the group's state names, in the algorithm's slot order
    names: tuple[str, ...]
    maximize: bool
    #: how ``states`` are stored; None: in the parameters' math dtype
    storage: Any = None
    #: the parameters' state dicts (None for the local shard of a DTensor parameter): what a backend that keeps
    #: tables between steps checks them against
    state_dicts: list | None = None
    #: stochastic rounding of bfloat16/float16 parameters (a ``state_format.ParamRounding``); None: to nearest
    rounding: Any = None


class Backend:
    """One way of running an algorithm's update."""

    #: the implementation's name (``adamkit.kernels.implementation_of`` returns it)
    name: ClassVar[str] = ""
    #: the optimizer keyword arguments that choose this backend explicitly (tests iterate over these)
    options: ClassVar[Mapping[str, Any]] = {}
    #: the low-precision state formats (``Storage.format``) whose buckets ``step`` runs
    storage_formats: ClassVar[tuple[str, ...]] = ()

    def available(self) -> bool:
        """Whether this backend can run here at all (a C compiler for the fused kernel, ...)."""
        return True

    def require(self, cls: type) -> None:
        """Raise, saying why, if an explicit choice of this backend cannot be honoured for ``cls``."""

    def takes(self, cls: type, params: list[Tensor]) -> bool:
        """Whether the default choice may pick this backend for ``cls`` and these parameters."""
        return True

    def step(self, cls: type, bucket: Bucket, c, *, explicit: bool) -> Any:
        """Step one bucket in place. Returns a true value when it did (a backend that keeps tables may return
        what :meth:`finish_group` needs), or False, with nothing written, when it meets tensors it does not
        take; an ``explicit`` choice raises instead, saying why."""
        raise NotImplementedError

    def prepare(self, owner, cls: type, group: dict, state: Mapping, names: tuple,
                coefficients: Callable[[int], Any]) -> Callable[[], None] | None:
        """Check phase of stepping a whole group from what this backend kept for ``owner``'s ``group``.

        Returns a callable that runs the step (the launch phase), or None where nothing kept applies (the
        engine's general path then steps the group). ``coefficients(step)`` gives the step's coefficients;
        ``state`` is the owner's ``parameter -> state dict``. Writes nothing: the engine prepares every group
        before any group is stepped, so that a bad tensor in a later group raises before an earlier one moves.
        """
        return None

    def finish_group(self, owner, cls: type, group: dict, state: Mapping, names: tuple, receipts: list,
                     complete: bool) -> None:
        """Told after the general path stepped ``owner``'s ``group`` on this backend: ``receipts`` are what
        :meth:`step` returned for its buckets; ``complete``: this backend stepped every parameter of the group,
        at one step count. A backend may keep what :meth:`prepare` needs next time, and must drop what it
        kept for the group otherwise."""

    def forget(self, owner) -> None:
        """Drop what the backend kept for ``owner`` (its state or groups were replaced)."""


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend
