"""The checks of every step's tensors, before any tensor is written: shapes, dtypes and stored state.

The update rules broadcast (a gradient of shape ``(3,)`` would step a ``(4, 3)`` parameter) or fail half-way
(AdamW decays the parameter before the moment update meets the wrong shape), so the engine runs these on
every path before a group's first tensor is written, and with several groups checks every group before the
first is stepped.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..core import state_format
from ..core.tensors import local_tensor, math_dtype


def check_step_tensors(opt, bucket: list[Tensor], params, grads, states: dict, check_dtypes: bool) -> None:
    """Before a step writes anything: every gradient and state tensor has its parameter's shape (and dtype).

    The update rules broadcast (a gradient of shape ``(3,)`` would step a ``(4, 3)``
    parameter) or fail half-way (AdamW decays the parameter before the moment update
    meets the wrong shape), so this runs on every path before any tensor is written.
    ``check_dtypes``: also the dtypes (the fused kernel checks its own, raising
    ``kernels.fused.launch.Unsupported``, which the default path answers with the loop).
    """
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
    for group, checked in zip(opt.param_groups, skip):
        if checked:
            continue
        names = opt.state_names(group)
        low_precision = group.get("state_dtype", torch.float32) is not torch.float32
        for p in group["params"]:
            if p.grad is None or p.grad.is_sparse:
                continue
            state = opt.state.get(p, {})
            # a rounding_seed alone does not mean low-precision state: a parameter written with stochastic
            # rounding (param_rounding="stochastic") keeps one with float32 state too
            if state and (low_precision or "rounding_seed" in state):
                opt._check_state_format(group, p, state)  # the format the group's state_dtype makes
                if low_precision:
                    check_stored_state(opt, [p], [local_tensor(p)], [n for n in names if n in state])
            states = {n: [local_tensor(state[n])] for n in names if n in state}
            check_step_tensors(opt, [p], [local_tensor(p)], [local_tensor(p.grad)], states, check_dtypes=False)


def _index(opt, param: Tensor) -> int:
    for i, p in enumerate(p for group in opt.param_groups for p in group["params"]):
        if p is param:
            return i
    return -1
