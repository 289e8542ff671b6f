"""What an algorithm module declares, once; the engine and every backend read it.

An algorithm is a subclass of :class:`~adamkit.optim.base.AdamkitOptimizer` with

``name``
    its name in the registry;
``hyperparameters``
    ``{name: Hyperparameter(default, check, doc)}`` in signature order. The
    constructor (a real ``__init__`` with this signature), the defaults, the
    checks of the constructor and of every param group, and the ``Args``
    section of the class docstring all come from it. A variant (AdamW,
    AMSGrad) derives its declaration from its base with :func:`variant`;
``Flags`` and ``Scalars``
    the two halves of what ``coefficients(group, step, loss)`` returns, a
    :class:`Coefficients` record: **flags** are static choices (which
    operations run: amsgrad on, decay on, the first step); **scalars** are the
    numbers of one step (betas, step sizes, bias corrections), computed in
    double precision from the integer step. ``update`` branches on flags only,
    so it is one graph per set of flags when the scalars are tensors;
``update(param, grad, state, c)``
    the element-wise math, written once against tensor methods that take a
    number or a 0-dim tensor alike (no ``alpha=``/``value=`` scalars), so the
    same function runs per tensor (loop), over tensor lists (foreach) and
    compiled with tensor scalars (compiled);
``fused_kernel``
    a :class:`FusedKernel`: the name of its loop body in ``kernels/fused/bodies/<body>.h``.
    The kernel's scalar slots, flag fields and state slots are ``Scalars``,
    ``Flags`` and ``state_formats`` in declaration order (a header generated
    from these declarations, checked by a test).

Every optimizer class is recorded here when it is defined (:func:`declare`), so that the layers that must
know the algorithms (a checkpoint names its algorithm; a param-group key is told from another optimizer's
hyperparameter) find them on this floor, without importing the engine.
"""
from __future__ import annotations

import dataclasses
import enum
import inspect
import typing
import weakref
from typing import Any, Callable, Mapping, NamedTuple

Check = Callable[[str, Any], Any]


@dataclasses.dataclass(frozen=True)
class Hyperparameter:
    """One constructor argument: its default, its check (``check(name, value) -> canonical value``) and its doc."""

    default: Any
    check: Check
    doc: str
    #: after the ``*`` of the signature
    keyword_only: bool = False
    #: False: fixed by a variant (AdamW's ``decoupled_weight_decay=True``): kept in the groups, not an argument
    in_signature: bool = True
    #: False: accepted and checked for compatibility with a reference signature, then dropped (never used)
    stored: bool = True


def variant(base: Mapping[str, Hyperparameter], *, defaults: Mapping[str, Any] = {},
            fixed: Mapping[str, Any] = {}, keyword_only: tuple[str, ...] = ()) -> dict[str, Hyperparameter]:
    """A variant's declaration from its base's: other ``defaults``, ``fixed`` values (no longer arguments),
    arguments moved after the ``*``."""
    unknown = (set(defaults) | set(fixed) | set(keyword_only)) - set(base)
    if unknown:
        raise AssertionError(f"variant of unknown hyperparameters {sorted(unknown)}")
    out = {}
    for name, h in base.items():
        if name in fixed:
            h = dataclasses.replace(h, default=fixed[name], in_signature=False)
        elif name in defaults:
            h = dataclasses.replace(h, default=defaults[name])
        if name in keyword_only:
            h = dataclasses.replace(h, keyword_only=True)
        out[name] = h
    return out


class Coefficients(NamedTuple):
    """What ``coefficients()`` returns: static ``flags`` (choose the ops) and the step's ``scalars`` (numbers)."""

    flags: NamedTuple
    scalars: NamedTuple


class FusedKernel(NamedTuple):
    """The fused C kernel of an algorithm: its loop body (``<BODY>_BODY`` in ``kernels/fused/bodies/<body>.h``).

    Its state slots are the algorithm's ``state_formats``, in order (every state tensor the body can touch); a
    state the group does not keep (``max_exp_avg_sq`` without amsgrad) leaves its slot empty.
    """

    body: str


def flag_fields(flags_type: type) -> dict[str, type]:
    """``{field: type}`` of a ``Flags`` record: ``bool`` or an ``enum.IntEnum`` (a choice among a few ops)."""
    hints = typing.get_type_hints(flags_type)
    out = {}
    for name in flags_type._fields:
        kind = hints.get(name, bool)
        if kind is not bool and not (isinstance(kind, type) and issubclass(kind, enum.IntEnum)):
            raise AssertionError(f"{flags_type.__name__}.{name}: a flag is a bool or an IntEnum, got {kind!r}")
        out[name] = kind
    return out


def signature_source(hyper: Mapping[str, Hyperparameter]) -> tuple[list[str], list[str]]:
    """(positional, keyword-only) argument names of a declaration."""
    positional = [n for n, h in hyper.items() if h.in_signature and not h.keyword_only]
    keyword = [n for n, h in hyper.items() if h.in_signature and h.keyword_only]
    return positional, keyword


def make_init(cls: type, hyper: Mapping[str, Hyperparameter], engine_init: Callable) -> Callable:
    """A real ``__init__(self, params, <declared arguments>)`` (introspectable: ``inspect.signature``,
    ``help``), whose defaults are the declared ones; it checks and hands the values to ``engine_init``."""
    positional, keyword = signature_source(hyper)
    args = ["self", "params"] + [f"{n}=_defaults[{n!r}]" for n in positional]
    if keyword:
        args += ["*"] + [f"{n}=_defaults[{n!r}]" for n in keyword]
    given = ", ".join(f"{n!r}: {n}" for n in positional + keyword)
    source = f"def __init__({', '.join(args)}):\n    _engine_init(self, params, {{{given}}})\n"
    namespace = {"_defaults": {n: h.default for n, h in hyper.items()}, "_engine_init": engine_init}
    exec(compile(source, f"<adamkit {cls.__name__}.__init__>", "exec"), namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = f"Create {cls.__name__} over ``params`` (tensors or param-group dicts).\n\n" + args_doc(hyper)
    return init


def args_doc(hyper: Mapping[str, Hyperparameter]) -> str:
    """The ``Args:`` section of a declaration."""
    lines = ["Args:", "    params: parameters or param-group dicts."]
    for name, h in hyper.items():
        if h.in_signature:
            lines.append(f"    {name}: {h.doc} (default {h.default!r}).")
    fixed = [f"{n}={h.default!r}" for n, h in hyper.items() if not h.in_signature]
    if fixed:
        lines.append(f"Fixed by this variant: {', '.join(fixed)}.")
    return "\n".join(lines)


_declared: list[weakref.ref] = []


def declare(cls: type) -> None:
    """Record an optimizer class (the engine calls this for every subclass it defines)."""
    _declared.append(weakref.ref(cls))


def declared_classes() -> list[type]:
    """Every optimizer class defined so far (and still alive), in the order of definition."""
    return [cls for ref in _declared if (cls := ref()) is not None]


def algorithms_by_name() -> dict[str, type]:
    """Registry name -> the first class defined with that ``name`` (a subclass that keeps its base's name
    is not another algorithm)."""
    found: dict[str, type] = {}
    for cls in declared_classes():
        if getattr(cls, "name", ""):
            found.setdefault(cls.name, cls)
    return found


_TORCH_OPTIMIZERS: dict[str, frozenset] | None = None


def optimizer_hyperparameters() -> dict[str, frozenset]:
    """``"adamkit.X"`` / ``"torch.optim.Y"`` -> the names of its hyperparameters: adamkit's algorithms (from
    their declarations) and the constructors of ``torch.optim`` (read once from their signatures)."""
    global _TORCH_OPTIMIZERS
    if _TORCH_OPTIMIZERS is None:
        import torch

        found = {}
        for name in dir(torch.optim):
            cls = getattr(torch.optim, name)
            if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
                try:
                    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "params", "args", "kwargs"}
                except (TypeError, ValueError):
                    continue
                found[f"torch.optim.{name}"] = frozenset(keys)
        _TORCH_OPTIMIZERS = found
    ours = {f"adamkit.{cls.__name__}": frozenset(cls.hyperparameters)
            for cls in algorithms_by_name().values()}
    return {**ours, **_TORCH_OPTIMIZERS}
