"""Converting a checkpoint's state to another storage format: :func:`convert_state_dtype`.

``load_state_dict`` (:mod:`.checkpoint`) never changes a group's ``state_dtype``: it refuses a checkpoint
stored in another format and names this conversion, which re-encodes a state dict for another
``state_dtype`` in any direction. It checks what it reads with the checkpoint's own validators.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import Tensor

from ..core import declaration, state_format
from ..core.tensors import is_dtensor, math_dtype
from .checkpoint import (ABSMAX, MARKER, PARAM_ROUNDING, SCALE, SEED, STATE_DTYPE, MissingStateError, _check_int8_code,
                         _check_scale_values, _hashable, _like, _previous_revision, _same_rule, _scale_key, _seed, _show,
                         _step_count)

#: a conversion rounds with the streams of slots CONVERSION_SLOT + slot, which no step draws (a step draws
#: the slots 0 .. len(state_formats) - 1), so that its rounding is independent of the next step's
CONVERSION_SLOT = 64


def convert_state_dtype(state_dict: Mapping[str, Any], state_dtype: Any, *, algorithm: Any = None) -> dict:
    """A copy of an optimizer state dict with its state stored in ``state_dtype`` (float32, bfloat16, "int8").

    The only way a checkpoint changes its storage format (``load_state_dict`` refuses a checkpoint whose
    ``state_dtype`` differs from the optimizer's, so that a state dtype is never changed silently)::

        opt = adamkit.AdamW(model.parameters(), lr=1e-3, state_dtype="int8")
        opt.load_state_dict(adamkit.convert_state_dtype(torch.load(path), "int8"))

    Every param group gets ``state_dtype`` and every state tensor is re-encoded, in any direction
    (float32 ⇄ bfloat16 ⇄ int8; see :mod:`adamkit.core.state_format`): each is decoded to float32
    (int8 codes dequantised with their scales, bfloat16 widened: exact) and encoded in the format
    ``state_format.tensor_format(state_dtype, ·)`` gives its parameter (vectors under "int8" take
    bfloat16; a float32 target keeps float32, and float64 state stays as it is). The encoding rounds as a
    step would: stochastically for first and second moments, up for running maxima (AMSGrad's, so that a
    stored maximum is never below the true one); the kind of each state comes from ``state_formats`` of the
    algorithm named by the groups' ``adamkit_algorithm`` marker. The random bits are the parameter's own
    counter-based stream, ``stream_key(rounding_seed, step, CONVERSION_SLOT + slot)``, so a conversion is
    deterministic and draws no torch generator. A parameter that has no ``rounding_seed`` yet gets
    ``state_format.rounding_seed(index)`` (its position over the groups, as a fresh optimizer gives it);
    converting to float32 drops the scales, and the seeds but in a group of ``param_rounding="stochastic"``
    (whose parameters round with them). Hyperparameters, flags and step counts are kept.

    A DTensor state (FSDP2) is converted shard by shard, on each rank, as the engine steps it: the codes and
    scales stay DTensors with the parameter's mesh and placements (int8 needs ``Shard(0)`` or
    ``Replicate()``; bfloat16 takes any).

    ``state_dtype`` may also be a list with one value per param group (float64 parameters, say, keep
    float32 state in their own group). ``algorithm``: the optimizer class (or registry name) of a state dict
    without the marker (one saved by ``torch.optim.Adam``, say). The input is not changed; the result holds
    new tensors.
    """
    if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("state"), Mapping) or not isinstance(
            state_dict.get("param_groups"), (list, tuple)) or not all(
            isinstance(g, Mapping) and "params" in g for g in state_dict["param_groups"]):
        raise TypeError("convert_state_dtype takes an optimizer state dict (from state_dict()): a dict with "
                        "'state' (a dict) and 'param_groups' (a list of dicts with 'params')")
    saved_state, saved_groups = state_dict["state"], state_dict["param_groups"]
    if isinstance(state_dtype, (list, tuple)):
        if len(state_dtype) != len(saved_groups):
            raise ValueError(f"state_dtype: a list gives one value per param group; the state dict has "
                             f"{len(saved_groups)} groups, the list {len(state_dtype)} values")
        targets = [state_format.check_state_dtype(f"state_dtype[{i}]", v) for i, v in enumerate(state_dtype)]
    else:
        targets = [state_format.check_state_dtype("state_dtype", state_dtype)] * len(saved_groups)
    groups, state = [], {}
    index = 0
    for i, (saved, target) in enumerate(zip(saved_groups, targets)):
        formats = _state_formats(saved, algorithm, i)
        _check_int8_code(saved, saved_state, i, "the state dict")
        group = copy.deepcopy({k: v for k, v in saved.items() if k != "params"})
        group["params"] = list(saved["params"])
        group[STATE_DTYPE] = target
        groups.append(group)
        for pid in saved["params"]:
            entry = saved_state.get(pid) if _hashable(pid) else None
            if entry is not None:
                if not isinstance(entry, Mapping):
                    raise TypeError(f"the state of parameter {index} must be a dict, got {type(entry).__name__}")
                state[pid] = _convert_entry(index, entry, formats, target, math_dtype,
                                            keep_seed=group.get(PARAM_ROUNDING) == "stochastic")
            index += 1
    listed = {pid for g in saved_groups for pid in g["params"] if _hashable(pid)}
    orphans = [pid for pid in saved_state if pid not in listed]
    if orphans:
        raise ValueError(f"the state dict has state for parameters {orphans!r}, which none of its param groups "
                         f"lists")
    out = {k: copy.deepcopy(v) for k, v in state_dict.items() if k not in ("state", "param_groups")}
    out["state"], out["param_groups"] = state, groups
    return out


def _state_formats(group: Mapping[str, Any], algorithm: Any, i: int) -> dict[str, str]:
    """{state name: kind} of the algorithm of one param group (by its marker, else by ``algorithm``)."""
    name = group.get(MARKER)
    if name is not None:
        cls = declaration.algorithms_by_name().get(name)
        if cls is None:
            raise ValueError(f"param group {i} is of the optimizer {name!r}, unknown to this adamkit version")
        if algorithm is not None and not _same_rule(_algorithm_class(algorithm), cls):
            raise ValueError(f"param group {i} is of adamkit.{cls.__name__}, not of algorithm={algorithm!r}")
    elif algorithm is None:
        raise ValueError(f"param group {i} has no {MARKER!r} marker (a state dict of torch.optim or an older "
                         f"adamkit): name its algorithm, convert_state_dtype(state_dict, state_dtype, "
                         f"algorithm=adamkit.Adam)")
    else:
        cls = _algorithm_class(algorithm)
    return dict(cls.state_formats)


def _algorithm_class(algorithm: Any) -> type:
    if isinstance(algorithm, type) and algorithm in declaration.declared_classes() and algorithm.name:
        return algorithm
    if isinstance(algorithm, str) and algorithm in declaration.algorithms_by_name():
        return declaration.algorithms_by_name()[algorithm]
    raise ValueError(f"algorithm must be an adamkit optimizer class or one of {sorted(declaration.algorithms_by_name())}, "
                     f"got {algorithm!r}")


def _convert_entry(index: int, entry: Mapping[str, Any], formats: dict[str, str], target: Any,
                   math_dtype, keep_seed: bool = False) -> dict:
    if not entry:
        return {}
    names = [k for k in entry if k not in ("step", SEED) and not any(
        isinstance(k, str) and k.endswith(suffix) and k[:-len(suffix)] in entry and k[:-len(suffix)] in formats
        for suffix in (SCALE, ABSMAX))]
    unknown = [k for k in names if k not in formats]
    if unknown:
        raise ValueError(f"the state of parameter {index} has {unknown}, which its algorithm does not keep (it "
                         f"keeps {list(formats)})")
    if "step" not in entry:
        raise MissingStateError(f"the state of parameter {index} has no 'step' (it has "
                                f"{sorted(map(str, entry))}): the rounding stream needs the step count")
    step = _step_count(index, entry["step"])
    out: dict = {"step": entry["step"].clone() if isinstance(entry["step"], Tensor) else entry["step"]}
    seed = _seed(index, entry[SEED]) if SEED in entry else state_format.rounding_seed(index)
    for name in names:
        value = entry[name]
        if not isinstance(value, Tensor):
            raise TypeError(f"state {name!r} of parameter {index} must be a tensor, got {type(value).__name__}")
        kind, slot = formats[name], list(formats).index(name)
        local = value.to_local() if is_dtensor(value) else value
        fmt = state_format.tensor_format(target, value)
        if value.dtype == torch.uint8:
            scale_key = _scale_key(index, entry, name) or name + SCALE
            scales = entry.get(scale_key)
            if not isinstance(scales, Tensor):
                raise MissingStateError(f"the state of parameter {index} has int8 codes {name!r} without "
                                        f"{name + SCALE!r}")
            local_scales = (scales.to_local() if is_dtensor(scales) else scales).float()
            _check_scale_values(index, scale_key, local_scales)
            if local.numel():
                if _previous_revision(scale_key):
                    local, local_scales = state_format.upgrade_absmax(local, local_scales, kind)
                x = state_format.dequantize_int8(local, local_scales, kind)
            else:
                x = torch.empty_like(local, dtype=torch.float32)
        elif value.is_floating_point() and math_dtype(value.dtype) == torch.float32:
            x = local.detach().to(torch.float32, copy=True)
        elif value.is_floating_point() or value.is_complex():
            if target != torch.float32:
                raise ValueError(f'state_dtype={_show(target)} applies only to float32-math parameters (float32, '
                                 f'float16, bfloat16); the state {name!r} of parameter {index} is {value.dtype}: '
                                 f'keep state_dtype=torch.float32 for its group')
            out[name] = value.detach().clone()
            continue
        else:
            raise TypeError(f"state {name!r} of parameter {index} is {value.dtype}, which is no state format")
        key = state_format.stream_key(seed, step, CONVERSION_SLOT + slot)
        if fmt == "float32":
            encoded = {name: x}
        elif fmt == "bfloat16":
            encoded = {name: state_format.encode_bfloat16(x, kind, key) if x.numel() else
                       torch.empty_like(x, dtype=torch.bfloat16)}
        else:
            _check_int8_placements(index, value)
            if x.numel():
                codes, sc = state_format.quantize_int8(x, kind, key)
            else:
                codes = torch.empty_like(x, dtype=torch.uint8)
                sc = torch.zeros(state_format.scale_shape(x.shape), dtype=torch.float32, device=x.device)
            encoded = {name: codes, name + SCALE: sc}
        for k, t in encoded.items():
            out[k] = _like(value, t, scales=k.endswith(SCALE) and k != name)
    if target != torch.float32 or (keep_seed and SEED in entry):
        out[SEED] = seed
    return out


def _check_int8_placements(index: int, value: Tensor) -> None:
    if is_dtensor(value):
        from torch.distributed.tensor import Replicate, Shard

        if any(not (isinstance(pl, Replicate) or (isinstance(pl, Shard) and pl.dim == 0)) for pl in value.placements):
            raise ValueError(f'state_dtype="int8" keeps the blocks of a DTensor state only under Shard(0) or '
                             f'Replicate() placements; parameter {index} is placed {tuple(value.placements)} '
                             f'(state_dtype=torch.bfloat16 works for any placement)')
