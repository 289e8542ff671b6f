"""How the update rules run: backends behind one interface (:mod:`.backend`), as peers, and the one place
that chooses among them.

``BACKENDS`` maps each implementation name to its backend, in this order:
``loop`` (``update`` per tensor, the reference), ``foreach`` (``update`` on
TensorLists), ``fused`` (the C kernel, CPU), ``compiled`` (``torch.compile`` of
``update`` with tensor scalars), ``triton`` (a Triton kernel generated from ``update``,
one launch per bucket: :mod:`.gpu`). :func:`choose` picks the backend of a param group
and :func:`run` steps a bucket on it with the fallback policy; the engine names no
backend. Tests iterate over ``BACKENDS`` (``backend.options`` selects one,
``backend.available()`` says whether it runs here).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from torch import Tensor

from . import compiled, eager, fused, gpu  # noqa: F401 - each registers its backend
from .backend import BACKENDS, Backend, Bucket
from .tensorlist import TensorList

__all__ = ["BACKENDS", "Backend", "Bucket", "Choice", "TensorList", "choose", "forget", "implementation_of", "run"]


class Choice(NamedTuple):
    """The backend that steps a param group, and whether the user asked for it (``fused=True``,
    ``"compiled"`` or ``"triton"``): an explicit choice raises where it cannot be honoured, a default one falls back to the
    loop."""

    backend: Backend
    explicit: bool


def choose(cls: type, group: Mapping[str, Any], params: list[Tensor], *, compiling: bool = False) -> Choice:
    """The backend of ``params`` (a group's parameters, on one device type) under ``group``'s ``foreach`` and
    ``fused``; ``compiling``: the step runs under ``torch.compile``.

    * ``fused="compiled"``: the compiled path, on any device;
    * ``fused="triton"``: the Triton kernel (CUDA tensors; CPU tensors only under Triton's interpreter);
    * ``fused=True``: the fused C kernel on CPU (raising, saying why, where it cannot run), the compiled path
      on other devices;
    * ``foreach=True``: foreach; ``foreach=False`` or ``fused=False``: the loop;
    * neither: the fused kernel on CPU (the loop where no C compiler is available: never foreach, slower than
      the loop on CPU), foreach elsewhere.

    Under ``torch.compile`` the loop and foreach become the compiled path (the fused kernel stays: it is faster
    than any compiled step on CPU).
    """
    fused_flag, foreach = group["fused"], group["foreach"]
    on_cpu = params[0].device.type == "cpu"
    if fused_flag == "triton":
        BACKENDS["triton"].require(cls)
        return Choice(BACKENDS["triton"], True)
    if fused_flag:
        if fused_flag == "compiled" or not on_cpu:
            return Choice(BACKENDS["compiled"], True)
        BACKENDS["fused"].require(cls)
        return Choice(BACKENDS["fused"], True)
    if foreach:
        backend = BACKENDS["foreach"]
    elif foreach is None and fused_flag is None:
        if not on_cpu:
            backend = BACKENDS["foreach"]
        else:
            backend = BACKENDS["fused"] if BACKENDS["fused"].takes(cls, params) else BACKENDS["loop"]
    else:
        backend = BACKENDS["loop"]
    if compiling and backend.name in ("loop", "foreach"):
        backend = BACKENDS["compiled"]
    return Choice(backend, False)


def run(choice: Choice, cls: type, bucket: Bucket, c) -> Any:
    """Step ``bucket`` on the chosen backend: where it does not store the bucket's state format or does not take
    its tensors, the loop steps it instead (an explicit choice raises, saying what to do). Returns what the
    chosen backend returned, or False where the loop stepped the bucket."""
    backend = choice.backend
    storage = bucket.storage
    if storage is not None and storage.format not in backend.storage_formats:
        if choice.explicit:
            options = ", ".join(f"{k}={v!r}" for k, v in backend.options.items())
            raise ValueError(f"{options}: the {backend.name} backend of this build does not store state as "
                             f"{storage.format}; use fused=None or foreach=False (the loop), foreach=True or "
                             f'fused="compiled" with it, or state_dtype=torch.float32')
        backend = BACKENDS["loop"]
    receipt = backend.step(cls, bucket, c, explicit=choice.explicit)
    if receipt:
        return receipt if backend is choice.backend else False
    BACKENDS["loop"].step(cls, bucket, c, explicit=False)
    return False


def implementation_of(optimizer, group: Mapping[str, Any] | None = None, params: list[Tensor] | None = None) -> str:
    """The name of the backend that steps ``group`` (the first param group by default) of ``optimizer``, as
    :func:`choose` picks it for ``params`` (the group's by default): what runs on this machine, e.g.
    ``"fused"``, or ``"loop"`` where no C compiler is available."""
    group = optimizer.param_groups[0] if group is None else group
    params = list(group["params"]) if params is None else params
    return choose(type(optimizer), group, params).backend.name


def forget(owner) -> None:
    """Every backend drops what it kept for ``owner`` (its state or groups were replaced)."""
    for backend in BACKENDS.values():
        backend.forget(owner)
