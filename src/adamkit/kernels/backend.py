"""The interface every backend (loop, foreach, fused, compiled) implements, and their table.

The engine (``adamkit.optim.base``) groups tensors into buckets that share one
step's coefficients and hands each bucket to the backend it chose; it knows
nothing of how a backend runs. A backend gets the optimizer class (its
``update``, ``Flags``/``Scalars`` and ``fused_kernel`` declarations), the
coefficients of the step, and lists of local tensors.
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

    def forget(self, opt) -> None:
        """Drop what the backend kept for ``opt`` (its state or groups were replaced)."""

    def step(self, opt, group: dict, params: list[Tensor], grads: list[Tensor], states: dict[str, list[Tensor]],
             names: tuple, c, *, whole_group: bool) -> bool:
        """Step one bucket in place; False (nothing written) when it meets tensors it does not take."""
        raise NotImplementedError


BACKENDS: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    BACKENDS[backend.name] = backend
    return backend
