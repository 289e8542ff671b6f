"""Checkpoints of adamkit optimizers: a state dict is validated whole, then loaded whole, or refused.

``AdamkitOptimizer.load_state_dict`` is :func:`load_state_dict` here. It does what
``torch.optim.Optimizer.load_state_dict`` does (a shallow copy of the dict, the
``register_load_state_dict_pre_hook`` hooks, whose returned dict is what gets
loaded, parameters paired by position, the post-hooks last, after which nothing is
written), with two differences:

* **Everything is checked before anything changes.** The algorithm (a checkpoint
  of another update rule is refused, naming both), the param groups (count, sizes,
  keys, and each hyperparameter with this optimizer's own checks), the state of
  every parameter (every key the algorithm needs, no key it does not keep, a step
  count that is a whole number, tensors of the parameter's shape). A refused
  checkpoint raises and leaves the optimizer exactly as it was; the new state
  and groups replace the old ones in one assignment.
* **State tensors are kept in the parameter's math dtype** (``base.math_dtype``:
  float32 for float16/bfloat16 parameters, else the parameter's dtype), the dtype
  the optimizer itself keeps and every path steps in; torch casts to the
  parameter's dtype instead. So a checkpoint of float32 parameters resumes on
  float64 ones (and back) on every path. ``step`` becomes an ``int``.

The algorithm of a checkpoint: adamkit's :func:`state_dict` writes the
optimizer's registry name under :data:`MARKER` in each param group (a group key,
because every tool that handles optimizer state dicts, DCP and ZeRO included,
carries group keys through). Adam, AdamW and AMSGrad share one update rule and
their groups hold every flag that tells them apart, so their checkpoints load into
each other as torch's Adam and AdamW do. A checkpoint without the marker
(``torch.optim``, an older adamkit) is told by its keys: a hyperparameter that
this optimizer does not have but another optimizer does (torch's Adam has
``decoupled_weight_decay`` and ``capturable``, AdaBelief ``weight_decouple``) or a
state name it never keeps refuses it. So torch's Adam/AdamW checkpoints resume in
adamkit's Adam/AdamW/AMSGrad and are refused by EAdam, AdaBelief, ADOPT and AGD,
whose moments mean other things.

Missing hyperparameters (a checkpoint of an older torch or adamkit) take the
value of the group they replace. ``differentiable=False``, which
``torch.optim.Optimizer.__setstate__`` adds to every optimizer's defaults, is
dropped where the algorithm has no such flag.
"""
from __future__ import annotations

import copy
import inspect
import numbers
from collections import defaultdict
from typing import Any, Mapping

import torch
from torch import Tensor

from ..kernels import BACKENDS

#: the param-group key under which adamkit's state dicts name their algorithm
MARKER = "adamkit_algorithm"
#: group keys that are not hyperparameters and are always accepted
_META = frozenset({"params", "param_names", "initial_lr", MARKER})
#: flags of torch.optim.Optimizer that its ``__setstate__`` adds with this value
_TORCH_ADDED = {"differentiable": False}


class MissingStateError(KeyError):
    """A checkpoint lacks a state entry the algorithm needs (a KeyError, as torch raises; readable message)."""

    def __str__(self) -> str:
        return str(self.args[0])


# ------------------------------------------------------------------ saving
def state_dict(opt, sd: dict) -> dict:
    """``sd`` (torch's state dict of ``opt``) with the algorithm named in each group (:data:`MARKER`)."""
    for group in sd["param_groups"]:
        group[MARKER] = type(opt).name
    return sd


def after_setstate(opt) -> None:
    """Undo what ``Optimizer.__setstate__`` adds that this algorithm does not have (after a load, copy or unpickling)."""
    for key, value in _TORCH_ADDED.items():
        if key not in opt._checks and opt.defaults.get(key, not value) == value:
            del opt.defaults[key]


# ------------------------------------------------------------------ algorithms
def _adamkit_classes() -> dict[str, type]:
    from .base import AdamkitOptimizer

    found, pending = {}, list(AdamkitOptimizer.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.name:
            found.setdefault(cls.name, cls)
    return found


def _same_rule(a: type, b: type) -> bool:
    """Whether two optimizer classes step with the same update rule (Adam, AdamW and AMSGrad do)."""
    return inspect.getattr_static(a, "update") is inspect.getattr_static(b, "update")


_OWNERS: dict[str, frozenset] | None = None


def _hyperparameter_sets() -> dict[str, frozenset]:
    """Optimizer name -> its hyperparameter names, for adamkit's optimizers and the constructors of torch.optim."""
    global _OWNERS
    if _OWNERS is None:
        from .base import COMMON_HYPERPARAMETERS

        owners = {f"adamkit.{cls.__name__}": frozenset({**COMMON_HYPERPARAMETERS, **cls.hyperparameters})
                  for cls in _adamkit_classes().values()}
        for name in dir(torch.optim):
            cls = getattr(torch.optim, name)
            if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer:
                try:
                    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "params", "args", "kwargs"}
                except (TypeError, ValueError):
                    continue
                owners[f"torch.optim.{name}"] = frozenset(keys)
        _OWNERS = owners
    return _OWNERS


def _check_algorithm(opt, saved_groups: list) -> None:
    cls = type(opt)
    here = f"adamkit.{cls.__name__}"
    for name in sorted({g.get(MARKER) for g in saved_groups if isinstance(g, Mapping)} - {None}, key=str):
        other = _adamkit_classes().get(name)
        if other is None:
            raise ValueError(f"this checkpoint is of the optimizer {name!r}, unknown to this adamkit version; "
                             f"it cannot be loaded into {here}")
        if not _same_rule(other, cls):
            raise ValueError(
                f"this checkpoint is of adamkit.{other.__name__}, not of {here}: another update rule, whose state "
                f"means other things; resume it with adamkit.{other.__name__}, or start {here} afresh "
                f"(a new optimizer, without load_state_dict)"
            )
    # no marker (torch.optim, an older adamkit): told by hyperparameters this optimizer lacks and another has
    known = _hyperparameter_sets()
    own = opt._checks
    keys = set()
    for group in saved_groups:
        if isinstance(group, Mapping) and group.get(MARKER) is None:
            keys |= {k for k, v in group.items() if k not in _META and not (k in _TORCH_ADDED and v == _TORCH_ADDED[k])}
    recognised = {k for k in keys if any(k in ks for ks in known.values())}
    foreign = sorted(k for k in recognised if k not in own)
    if foreign:
        owners = [name for name, ks in known.items() if recognised <= ks] or \
                 [name for name, ks in known.items() if set(foreign) <= ks]
        source = " or ".join(owners) if owners else "another optimizer"
        raise ValueError(
            f"this checkpoint is of {source}, not of {here}: its param groups have {foreign}, which {here} "
            f"does not have; resume it with the optimizer that saved it, or start {here} afresh "
            f"(a new optimizer, without load_state_dict)"
        )


# ------------------------------------------------------------------ loading
def load_state_dict(opt, state_dict: Mapping[str, Any]) -> None:
    """Load ``state_dict`` into ``opt`` (see the module docstring); raises before changing anything."""
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"load_state_dict takes a dict (from state_dict()), got {type(state_dict).__name__}")
    state_dict = dict(state_dict)  # shallow copy, as torch
    for pre_hook in opt._optimizer_load_state_dict_pre_hooks.values():
        result = pre_hook(opt, state_dict)
        if result is not None:
            state_dict = result
    groups, state = _prepare(opt, state_dict)
    # commit: one assignment; what a backend kept between steps points at the old tensors
    for backend in BACKENDS.values():
        backend.forget(opt)
    opt.__setstate__({"state": state, "param_groups": groups})
    for post_hook in opt._optimizer_load_state_dict_post_hooks.values():
        post_hook(opt)


def _prepare(opt, sd: Mapping[str, Any]):
    """The new param groups and state of ``opt`` from ``sd``, every check done; ``opt`` is not touched."""
    cls = type(opt).__name__
    for key in ("state", "param_groups"):
        if key not in sd:
            raise KeyError(f"not an optimizer state dict: it has no {key!r} (keys: {sorted(map(str, sd))})")
    saved_state, saved_groups = sd["state"], sd["param_groups"]
    if not isinstance(saved_state, Mapping) or not isinstance(saved_groups, (list, tuple)) or not all(
            isinstance(g, Mapping) and "params" in g for g in saved_groups):
        raise TypeError("not an optimizer state dict: 'state' must be a dict and 'param_groups' a list of dicts "
                        "with 'params'")
    _check_algorithm(opt, saved_groups)
    current_groups = opt.param_groups
    if len(saved_groups) != len(current_groups):
        raise ValueError(f"the checkpoint has {len(saved_groups)} param groups, this {cls} has "
                         f"{len(current_groups)}")
    for i, (saved, current) in enumerate(zip(saved_groups, current_groups)):
        if len(saved["params"]) != len(current["params"]):
            raise ValueError(f"param group {i} of the checkpoint has {len(saved['params'])} parameters, this "
                             f"{cls}'s has {len(current['params'])}")

    groups, owner = [], {}
    index = 0
    for i, (saved, current) in enumerate(zip(saved_groups, current_groups)):
        group = copy.deepcopy({k: v for k, v in saved.items() if k != "params"})
        group.pop(MARKER, None)
        for key, value in _TORCH_ADDED.items():
            if key not in opt._checks and group.get(key, not value) == value:
                del group[key]
        for key in set(group) - set(opt._checks) - _META:
            try:
                opt._check_extra_group_key(key)
            except ValueError as exc:
                raise ValueError(f"param group {i} of the checkpoint: {exc}") from None
        for key in opt._checks:  # missing from an older or foreign checkpoint: this optimizer's value
            if key not in group:
                group[key] = current[key]
        if "param_names" in current and "param_names" not in group:
            group["param_names"] = current["param_names"]
        group["params"] = current["params"]
        try:
            opt._checked(group)
        except (ValueError, TypeError) as exc:
            raise type(exc)(f"param group {i} of the checkpoint: {exc}") from None
        groups.append(group)
        for saved_id, p in zip(saved["params"], current["params"]):
            owner[saved_id] = (index, p, group)
            index += 1

    state: defaultdict = defaultdict(dict)
    for saved_id, entry in saved_state.items():
        if saved_id not in owner:
            raise ValueError(f"the checkpoint has state for parameter {saved_id!r}, which none of its param "
                             f"groups lists")
        index, p, group = owner[saved_id]
        restored = _restore(opt, index, p, group, entry)
        if restored:
            state[p] = restored
    return groups, state


def _possible_state_names(opt, group) -> set:
    """The state names the algorithm keeps under ``group``'s flags or with any of them on (e.g. amsgrad later off)."""
    names = set(opt.state_names(group))
    switches = {k: True for k, v in group.items() if isinstance(v, bool) and k in opt._checks}
    try:
        names |= set(opt.state_names({**group, **switches}))
    except Exception:  # a combination the algorithm does not take: its own flags' names suffice
        pass
    return names


def _restore(opt, index: int, p: Tensor, group: dict, saved: Any) -> dict:
    """The checked, cast copy of one parameter's saved state."""
    from .base import math_dtype

    cls = type(opt).__name__
    if not isinstance(saved, Mapping):
        raise TypeError(f"the state of parameter {index} must be a dict, got {type(saved).__name__}")
    if not saved:
        return {}
    needed = ("step", *opt.state_names(group))
    unknown = sorted(set(saved) - _possible_state_names(opt, group) - {"step"}, key=str)
    if unknown:
        raise ValueError(f"the state of parameter {index} has {unknown}, which {cls} does not keep (it keeps "
                         f"{list(needed)}): a checkpoint of another optimizer?")
    for key in needed:
        if key not in saved:
            raise MissingStateError(
                f"the state of parameter {index} has no {key!r}, which {cls} needs with these settings "
                f"(it has {sorted(map(str, saved))}, needs {list(needed)}); the checkpoint is incomplete "
                f"or of other settings"
            )
    restored = {}
    for key, value in saved.items():
        if key == "step":
            restored[key] = _step_count(index, value)
            continue
        if not isinstance(value, Tensor):
            raise TypeError(f"state {key!r} of parameter {index} must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"state {key!r} of parameter {index} has shape {tuple(value.shape)}, the parameter "
                             f"{tuple(p.shape)}: a checkpoint of another model?")
        if not (value.is_floating_point() or value.is_complex()) or value.is_complex() != p.is_complex():
            raise TypeError(f"state {key!r} of parameter {index} is {value.dtype}, which cannot hold the state of "
                            f"a {p.dtype} parameter")
        restored[key] = value.detach().to(device=p.device, dtype=math_dtype(p.dtype), copy=True)
    return restored


def _step_count(index: int, value: Any) -> int:
    number = value
    if isinstance(value, Tensor):
        if value.numel() != 1:
            number = None
        else:
            number = value.item()
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or not float(number).is_integer() \
            or number < 0:
        raise ValueError(f"state 'step' of parameter {index} must be a whole number >= 0, got {value!r}")
    return int(number)


# ------------------------------------------------------------------ stepping
def check_step_tensors(opt, bucket: list[Tensor], params, grads, states: dict, check_dtypes: bool) -> None:
    """Before a step writes anything: every gradient and state tensor has its parameter's shape (and dtype).

    The update rules broadcast (a gradient of shape ``(3,)`` would step a ``(4, 3)``
    parameter) or fail half-way (AdamW decays the parameter before the moment update
    meets the wrong shape), so this runs on every path before any tensor is written.
    ``check_dtypes``: also the dtypes (the fused kernel checks its own, raising
    ``fused_cpu.Unsupported``, which the default path answers with the loop).
    """
    from .base import math_dtype

    for k, (p, g) in enumerate(zip(params, grads)):
        if g.shape != p.shape or g.dtype != p.dtype:
            raise RuntimeError(
                f"the gradient of parameter {_index(opt, bucket[k])} has shape {tuple(g.shape)} and dtype "
                f"{g.dtype}, its parameter {tuple(p.shape)} and {p.dtype} (a gradient set with p.grad.data = ...?)"
            )
        want = math_dtype(p.dtype)
        for name, tensors in states.items():
            s = tensors[k]
            if s.shape != p.shape or (check_dtypes and s.dtype != want):
                raise RuntimeError(
                    f"state {name!r} of parameter {_index(opt, bucket[k])} has shape {tuple(s.shape)} and dtype "
                    f"{s.dtype}; the parameter needs {tuple(p.shape)} and {want} (load checkpoints with "
                    f"load_state_dict, which checks and casts them)"
                )


def check_stored_state(opt, bucket: list[Tensor], params, names) -> None:
    """Before a step of low-precision state writes anything: every int8 state has float32 scales of the shape
    its blocks need (``state_format.scale_shape`` of the local tensor), every stored tensor its format's dtype."""
    from . import state_format
    from .base import local_tensor

    for k, p in enumerate(params):
        state = opt.state[bucket[k]]
        for name in names:
            stored = local_tensor(state[name])
            if stored.dtype == torch.uint8:
                scales = state.get(state_format.scale_name(name))
                want = state_format.scale_shape(p.shape)
                scales = local_tensor(scales) if isinstance(scales, Tensor) else None
                if scales is None or scales.dtype != torch.float32 or tuple(scales.shape) != want:
                    got = "none" if scales is None else f"{scales.dtype} of shape {tuple(scales.shape)}"
                    raise RuntimeError(
                        f"state {name!r} of parameter {_index(opt, bucket[k])} is int8 codes, whose scales "
                        f"{state_format.scale_name(name)!r} must be float32 of shape {want}, got {got} (load "
                        f"checkpoints with load_state_dict, which checks them)"
                    )
            elif stored.dtype != torch.bfloat16:
                raise RuntimeError(f"state {name!r} of parameter {_index(opt, bucket[k])} is {stored.dtype}, "
                                   f"not a low-precision format (bfloat16, or uint8 codes)")


def check_groups_before_step(opt, skip: list[bool]) -> None:
    """With several param groups: check the groups that will take the general path before any is stepped.

    So that a wrong shape in the second group (say, the no-decay group of AdamW) raises
    before the first group's parameters move. Groups marked in ``skip`` were checked
    already by the backend that will step them from what it kept (the fused kernel's
    pointer table checks its tensors in its check phase, writing nothing).
    """
    from .base import local_tensor

    for group, checked in zip(opt.param_groups, skip):
        if checked:
            continue
        names = opt.state_names(group)
        for p in group["params"]:
            if p.grad is None or p.grad.is_sparse:
                continue
            state = opt.state.get(p, {})
            if "rounding_seed" in state or group.get("state_dtype", torch.float32) is not torch.float32:
                if state:
                    opt._check_state_format(group, p, state)  # the format the group's state_dtype makes
                    check_stored_state(opt, [p], [local_tensor(p)], [n for n in names if n in state])
            states = {n: [local_tensor(state[n])] for n in names if n in state}
            check_step_tensors(opt, [p], [local_tensor(p)], [local_tensor(p.grad)], states, check_dtypes=False)


def _index(opt, param: Tensor) -> int:
    for i, p in enumerate(p for group in opt.param_groups for p in group["params"]):
        if p is param:
            return i
    return -1
