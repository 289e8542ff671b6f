"""The interface every backend (loop, foreach, fused, compiled) implements, and their table.

The engine (``adamkit.optim.base``) groups tensors into buckets that share one
step's coefficients and hands each bucket to the backend it chose; it knows
nothing of how a backend runs. A backend gets the optimizer class (its
``update``, ``Flags``/``Scalars`` and ``fused_kernel`` declarations), the
coefficients of the step, and lists of local tensors.

Low-precision state (``state_dtype``, :mod:`adamkit.core.state_format`): the engine buckets by state
format too and hands a bucket of bfloat16 or int8 state with ``storage=`` a ``state_format.Storage``
(``states[n]`` then lists the stored tensors: bfloat16, or uint8 codes with their scales in
``storage.scales[n]``). A backend runs a format only if it is in its ``storage_formats``; the engine sends a
bucket of another format to the loop (or raises, naming ``state_dtype``, when the user chose the backend
explicitly). Every path computes the same thing: ``state_format.decode_state`` to float32, the algorithm's
float32 ``update``, ``state_format.encode_state`` with ``stream_key(storage.seeds[i], storage.step,
storage.slots[k])``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from torch import Tensor


class Backend:
    """One way of running an algorithm's update."""

    #: the implementation's name (``opt._implementation`` returns it)
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

    def prepare(self, opt, group: dict, names: tuple, loss):
        """Check phase of stepping a whole group from what the backend kept after the previous step.

        Returns a callable that runs the step (the launch phase), or None where what was kept does not apply
        (the engine's general path then steps the group). Writes nothing: the engine prepares every group
        before any group is stepped, so a bad tensor in a later group raises before an earlier one moves.
        """
        return None

    def stored_group_done(self, opt, group: dict, names: tuple, complete: bool) -> None:
        """Called by the engine after its general path stepped a group of low-precision state on this backend;
        ``complete``: this backend stepped every parameter of the group, at one step count. A backend may keep
        what its ``prepare`` needs next time (and must drop what it kept for the group otherwise)."""

    def forget(self, opt) -> None:
        """Drop what the backend kept for ``opt`` (its state or groups were replaced)."""

    def step(self, opt, group: dict, params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
             names: tuple, c, *, whole_group: bool, storage=None) -> bool:
        """Step one bucket in place; False (nothing written) when it meets tensors it does not take.

        ``storage`` (a ``state_format.Storage``, one of ``storage_formats``) says how ``states`` are stored;
        None: float32 state (the parameter's math dtype), and the engine then passes no ``storage`` at all.
        """
        raise NotImplementedError


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend
