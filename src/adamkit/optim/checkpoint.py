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
* **State tensors are kept in the group's storage format** (``state_dtype``, see
  :mod:`adamkit.core.state_format`). Under ``state_dtype=torch.float32`` (the
  default, and what a checkpoint without a ``state_dtype`` key holds: torch's and
  older adamkit's) they are cast to the parameter's math dtype (``base.math_dtype``:
  float32 for float16/bfloat16 parameters, else the parameter's dtype), the dtype
  the optimizer itself keeps and every path steps in; torch casts to the
  parameter's dtype instead. So a checkpoint of float32 parameters resumes on
  float64 ones (and back) on every path. Under ``torch.bfloat16`` and ``"int8"``
  the tensors are kept exactly as stored (bfloat16; uint8 codes with their float32
  ``<name>_finite_absmax`` of ``state_format.scale_shape``; each parameter's
  ``rounding_seed``, an int in [0, 2**32), which float32 state keeps too for a parameter written with
  stochastic rounding, ``param_rounding="stochastic"``), in the format
  ``state_format.tensor_format`` gives each parameter, and nothing is cast: a
  tensor of another dtype is refused, and so is a scale that is not a finite
  number >= 0 (an infinite scale would read its block as inf and NaN). int8
  state of the previous revision of the code (scales under ``<name>_absmax``)
  is converted exactly on load (``state_format.upgrade_absmax``). ``step``
  becomes an ``int``.
* **A state dtype is never changed by loading.** A checkpoint group whose
  ``state_dtype`` differs from the loaded group's (a float32 checkpoint into a
  bfloat16 optimizer, say) is refused, naming the conversion call,
  :func:`.convert.convert_state_dtype` (``adamkit.convert_state_dtype``), which re-encodes
  a state dict for another ``state_dtype`` in any direction.

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

from ..core import declaration, state_format
from ..core.tensors import is_dtensor, math_dtype
from .. import kernels

#: the param-group key under which adamkit's state dicts name their algorithm
MARKER = "adamkit_algorithm"
#: the group key of the storage format, and the per-parameter state entries of the low-precision formats
STATE_DTYPE = "state_dtype"
SEED = "rounding_seed"
#: the group key of the parameters' rounding: a group of "stochastic" keeps its parameters' seeds in float32 state
PARAM_ROUNDING = "param_rounding"
SCALE = state_format.SCALE_SUFFIX  # suffix: state[name + SCALE] holds the int8 scales of state[name]
#: the suffix of the scales of the previous revision of the 8-bit code (before 2026-12-04: no codes for inf
#: and NaN, a NaN scale for a block that held one), whose checkpoints are converted on load
#: (``state_format.upgrade_absmax``)
ABSMAX = state_format.ABSMAX_SUFFIX
#: the suffix of the scales of the earlier, logarithmic 8-bit code (adamkit before 2026-12-02), whose codes
#: read as other numbers in this one: a checkpoint holding them is refused
EARLIER_SCALE = "_scale"
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


def _check_int8_code(group: Mapping[str, Any], saved_state: Mapping, i: int, what: str) -> None:
    """Refuse a param group holding int8 codes of the earlier, logarithmic 8-bit code (their scales are kept
    under ``name + EARLIER_SCALE``): read with this code they would be other numbers."""
    for pid in group["params"]:
        entry = saved_state.get(pid) if _hashable(pid) else None
        if isinstance(entry, Mapping) and any(
                isinstance(v, Tensor) and v.dtype == torch.uint8 and isinstance(k, str) and k + EARLIER_SCALE in entry
                for k, v in entry.items()):
            raise ValueError(
                f"param group {i} of {what} holds int8 state in the logarithmic 8-bit code of adamkit before "
                f"2026-12-02 (scales under '<state>{EARLIER_SCALE}'); this adamkit reads {state_format.INT8_CODE!r} "
                f"(scales under '<state>{SCALE}'): convert it to float32 with the adamkit that wrote it "
                f"(adamkit.convert_state_dtype(state_dict, torch.float32)), then load it and convert it here")


def after_setstate(opt) -> None:
    """Undo what ``Optimizer.__setstate__`` adds that this algorithm does not have (after a load, copy or unpickling)."""
    for key, value in _TORCH_ADDED.items():
        if key not in opt._checks and opt.defaults.get(key, not value) == value:
            del opt.defaults[key]


# ------------------------------------------------------------------ algorithms
def _same_rule(a: type, b: type) -> bool:
    """Whether two optimizer classes step with the same update rule (Adam, AdamW and AMSGrad do)."""
    return inspect.getattr_static(a, "update") is inspect.getattr_static(b, "update")


def _check_algorithm(opt, saved_groups: list) -> None:
    cls = type(opt)
    here = f"adamkit.{cls.__name__}"
    for name in sorted({g.get(MARKER) for g in saved_groups if isinstance(g, Mapping)} - {None}, key=str):
        other = declaration.algorithms_by_name().get(name)
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
    known = declaration.optimizer_hyperparameters()
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
    kernels.forget(opt)
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
        _check_int8_code(saved, saved_state, i, "the checkpoint")
        group = copy.deepcopy({k: v for k, v in saved.items() if k != "params"})
        group.pop(MARKER, None)
        if STATE_DTYPE in opt._checks and STATE_DTYPE not in group:
            # a checkpoint of torch or an older adamkit holds float32 state (a group without state: any)
            has_state = any(saved_state.get(pid) for pid in saved["params"] if _hashable(pid))
            group[STATE_DTYPE] = torch.float32 if has_state else current[STATE_DTYPE]
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
        if STATE_DTYPE in opt._checks:
            try:
                saved_dtype = state_format.check_state_dtype(STATE_DTYPE, group[STATE_DTYPE])
            except ValueError as exc:
                raise ValueError(f"param group {i} of the checkpoint: {exc}") from None
            if saved_dtype != current[STATE_DTYPE]:  # a torch dtype never equals "int8"
                raise ValueError(
                    f"param group {i} of the checkpoint has state_dtype={_show(saved_dtype)}, this {cls}'s "
                    f"group has state_dtype={_show(current[STATE_DTYPE])}; loading never changes a state dtype: "
                    f"convert the checkpoint first, opt.load_state_dict(adamkit.convert_state_dtype(state_dict, "
                    f"{_show(current[STATE_DTYPE])}))"
                )
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


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _show(state_dtype: Any) -> str:
    """``state_dtype`` as it is written in Python: torch.bfloat16, "int8"."""
    return f'"{state_dtype}"' if isinstance(state_dtype, str) else str(state_dtype)


def _group_format(opt, group: Mapping[str, Any]) -> Any:
    return group.get(STATE_DTYPE, torch.float32) if STATE_DTYPE in opt._checks else torch.float32


def _restore(opt, index: int, p: Tensor, group: dict, saved: Any) -> dict:
    """The checked copy of one parameter's saved state: cast (float32 format) or kept as stored (bfloat16, int8)."""
    cls = type(opt).__name__
    if not isinstance(saved, Mapping):
        raise TypeError(f"the state of parameter {index} must be a dict, got {type(saved).__name__}")
    if not saved:
        return {}
    state_dtype = _group_format(opt, group)
    fmt = state_format.tensor_format(state_dtype, p)
    if fmt != "float32" and math_dtype(p.dtype) != torch.float32:
        raise ValueError(f"state_dtype={_show(state_dtype)} applies only to float32-math parameters (float32, "
                         f"float16, bfloat16); parameter {index} is {p.dtype}")
    names = opt.state_names(group)
    possible = _possible_state_names(opt, group)
    low = () if fmt == "float32" else (SEED,)
    scales = {n + suffix for n in possible for suffix in (SCALE, ABSMAX)} if fmt == "int8" else set()
    needed = ("step", *low, *names, *(n + SCALE for n in names if fmt == "int8"))
    # float32 state may keep a rounding_seed too: the stream of the parameter's stochastic rounding
    # (param_rounding="stochastic"; one missing is made again from the parameter's position at its next step)
    unknown = sorted(set(saved) - possible - scales - {"step", SEED}, key=str)
    if unknown:
        hint = ""
        if all(k == SEED or (isinstance(k, str) and k.endswith((SCALE, ABSMAX))) for k in unknown):
            hint = (f" under state_dtype={_show(state_dtype)}: a checkpoint of another state_dtype? convert it "
                    f"with adamkit.convert_state_dtype(state_dict, {_show(state_dtype)})")
        raise ValueError(f"the state of parameter {index} has {unknown}, which {cls} does not keep{hint} (it keeps "
                         f"{list(needed)}){'' if hint else ': a checkpoint of another optimizer?'}")
    present = [k for k in saved if k in possible]
    for key in (*needed, *(k + SCALE for k in present if fmt == "int8")):
        if key not in saved and not (key.endswith(SCALE) and _scale_key(index, saved, key[:-len(SCALE)])):
            raise MissingStateError(
                f"the state of parameter {index} has no {key!r}, which {cls} needs with these settings "
                f"(it has {sorted(map(str, saved))}, needs {list(needed)}); the checkpoint is incomplete "
                f"or of other settings"
            )
    restored = {"step": _step_count(index, saved["step"])}
    if SEED in saved:
        restored[SEED] = _seed(index, saved[SEED])
    for key in present:
        value = saved[key]
        if not isinstance(value, Tensor):
            raise TypeError(f"state {key!r} of parameter {index} must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"state {key!r} of parameter {index} has shape {tuple(value.shape)}, the parameter "
                             f"{tuple(p.shape)}: a checkpoint of another model?")
        if fmt == "float32":
            if not (value.is_floating_point() or value.is_complex()) or value.is_complex() != p.is_complex():
                raise TypeError(f"state {key!r} of parameter {index} is {value.dtype}, which cannot hold the state "
                                f"of a {p.dtype} parameter")
            restored[key] = value.detach().to(device=p.device, dtype=math_dtype(p.dtype), copy=True)
            continue
        stored = torch.bfloat16 if fmt == "bfloat16" else torch.uint8
        if value.dtype != stored:
            what = "bfloat16" if fmt == "bfloat16" else f"uint8 codes (with {key + SCALE!r})"
            raise TypeError(
                f"state {key!r} of parameter {index} is {value.dtype}; under state_dtype={_show(state_dtype)} it "
                f"is stored as {what}: a checkpoint of another state_dtype? convert it with "
                f"adamkit.convert_state_dtype(state_dict, {_show(state_dtype)})")
        _check_distribution(index, key, value, p)
        restored[key] = _stored_copy(index, key, value, p, fmt)
        if fmt == "int8":
            scale_key = _scale_key(index, saved, key)
            restored[key + SCALE] = _scales_copy(index, scale_key, saved[scale_key], p, restored[key])
            if _previous_revision(scale_key):  # converted exactly
                restored[key], restored[key + SCALE] = _upgraded(restored[key], restored[key + SCALE],
                                                                 type(opt).state_formats[key])
    return restored


def _scale_key(index: int, saved: Mapping, name: str) -> str | None:
    """The key of the int8 scales of state ``name`` in a saved state: ``name + SCALE``, or ``name + ABSMAX`` in a
    checkpoint of the previous revision of the code (None: neither)."""
    keys = [name + suffix for suffix in (SCALE, ABSMAX) if name + suffix in saved]
    if len(keys) > 1:
        raise ValueError(f"the state of parameter {index} has both {keys[0]!r} and {keys[1]!r}: two revisions of "
                         f"the int8 scales of {name!r}, of which the codes can follow one only")
    return keys[0] if keys else None


def _previous_revision(scale_key: str) -> bool:
    """Whether int8 scales kept under ``scale_key`` are of the previous revision of the code (``SCALE`` ends
    with ``ABSMAX`` too)."""
    return scale_key.endswith(ABSMAX) and not scale_key.endswith(SCALE)


def _upgraded(codes: Tensor, scales: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """``state_format.upgrade_absmax`` of (local) codes and scales, placed as they were."""
    local_codes = codes.to_local() if is_dtensor(codes) else codes
    local_scales = scales.to_local() if is_dtensor(scales) else scales
    new_codes, new_scales = state_format.upgrade_absmax(local_codes, local_scales, kind)
    return _like(codes, new_codes, scales=False), _like(codes, new_scales, scales=True)


def _check_scale_values(index: int, key: str, scales: Tensor) -> None:
    """Refuse int8 scales that are not finite numbers >= 0 (the previous revision's NaN: a block that held a
    non-finite value, which the conversion keeps as NaN elements)."""
    previous = _previous_revision(key)
    bad = [what for what, mask in (("negative", scales < 0), ("infinite", scales.isinf()),
                                   ("NaN", scales.isnan() & (not previous))) if bool(mask.any())]
    if bad:
        name = key[:-len(ABSMAX if previous else SCALE)]
        raise ValueError(
            f"state {key!r} of parameter {index} (the int8 scales of {name!r}) has {' and '.join(bad)} scales; "
            f"a scale is the largest finite magnitude of its block, a finite number >= 0 (an infinite one would "
            f"read its block as inf and NaN): the checkpoint is damaged or was edited; load another one, or "
            f"start afresh without load_state_dict")


def _seed(index: int, value: Any) -> int:
    number = value
    if isinstance(value, Tensor):
        number = value.item() if value.numel() == 1 and not value.is_floating_point() else None
    if isinstance(number, bool) or not isinstance(number, numbers.Integral) or not 0 <= number < 2**32:
        raise ValueError(f"state {SEED!r} of parameter {index} must be an int in [0, 2**32), got {value!r}")
    return int(number)


def _check_distribution(index: int, key: str, value: Tensor, p: Tensor) -> None:
    """A low-precision state tensor of a DTensor parameter is a DTensor with its mesh and placements."""
    if is_dtensor(p) != is_dtensor(value):
        raise TypeError(f"state {key!r} of parameter {index} is a {type(value).__name__}, its parameter a "
                        f"{type(p).__name__}: load a sharded checkpoint with torch.distributed.checkpoint "
                        f"(set_state_dict) into the sharded model")
    if is_dtensor(p) and (tuple(value.placements) != tuple(p.placements) or value.device_mesh != p.device_mesh):
        raise ValueError(f"state {key!r} of parameter {index} is placed {tuple(value.placements)}, its parameter "
                         f"{tuple(p.placements)}")


def _dim_order(t: Tensor) -> list[int]:
    """The dimensions of ``t`` (those of size > 1) from outermost to innermost in memory."""
    return [d for d in sorted(range(t.dim()), key=lambda d: (t.stride(d), t.shape[d]), reverse=True)
            if t.shape[d] > 1]


def _stored_copy(index: int, key: str, value: Tensor, p: Tensor, fmt: str) -> Tensor:
    """A copy of a bfloat16 tensor or of int8 codes on ``p``'s device, in the layout the optimizer keeps."""
    if is_dtensor(p):
        local, target = value.to_local(), p.to_local()
    else:
        local, target = value, p
    if fmt == "int8":
        # the blocks follow the memory order of each row: codes copied into another order would change blocks
        if not state_format._dense(local) or _dim_order(local) != _dim_order(
                torch.empty_like(target, dtype=torch.uint8, **state_format.layout_like(target))):
            raise ValueError(
                f"state {key!r} of parameter {index} (int8 codes) is laid out in memory with strides "
                f"{local.stride()}, unlike this parameter's state; the 8-bit blocks follow the memory order, "
                f"so they cannot be copied into another layout: give the parameter its saved memory format, "
                f"or convert the checkpoint with adamkit.convert_state_dtype(state_dict, torch.bfloat16) first")
    if is_dtensor(p):
        return value.detach().to(device=p.device, copy=True)
    out = torch.empty_like(p, dtype=value.dtype, **state_format.layout_like(p))
    return out.copy_(value.detach())


def _scales_copy(index: int, key: str, value: Any, p: Tensor, codes: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"state {key!r} of parameter {index} must be a tensor, got {type(value).__name__}")
    want = state_format.scale_shape(p.shape)
    if value.dtype != torch.float32 or tuple(value.shape) != want:
        raise ValueError(f"state {key!r} of parameter {index} is {value.dtype} of shape {tuple(value.shape)}; the "
                         f"int8 scales of a {tuple(p.shape)} parameter are torch.float32 of shape {want} "
                         f"(state_format.scale_shape)")
    _check_distribution(index, key, value, p)
    local = value.to_local() if is_dtensor(value) else value
    local_codes = codes.to_local() if is_dtensor(codes) else codes
    if tuple(local.shape) != state_format.scale_shape(local_codes.shape):
        raise ValueError(f"state {key!r} of parameter {index}: this rank's scales have shape {tuple(local.shape)}, "
                         f"its codes {tuple(local_codes.shape)} (expected {state_format.scale_shape(local_codes.shape)}"
                         f"): the scales must be sharded along dim 0 with the parameter's rows")
    _check_scale_values(index, key, local)
    copied = value.detach().to(device=p.device, copy=True)
    return copied if is_dtensor(copied) else copied.contiguous()


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


def _like(source: Tensor, local: Tensor, scales: bool) -> Tensor:
    """``local`` as a DTensor with ``source``'s mesh and placements when ``source`` is one."""
    if not is_dtensor(source):
        return local
    from torch.distributed.tensor import DTensor

    if scales:
        shape = state_format.scale_shape(source.shape)
        return DTensor.from_local(local, source.device_mesh, source.placements, run_check=False,
                                  shape=torch.Size(shape), stride=(shape[1], 1))
    return DTensor.from_local(local, source.device_mesh, source.placements, run_check=False,
                              shape=source.shape, stride=source.stride())
