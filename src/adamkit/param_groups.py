"""Helpers that build param groups."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

_NORM_LAYERS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def param_groups_weight_decay(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay: Iterable[str] = (),
    **group_options: Any,
) -> list[dict[str, Any]]:
    """Two param groups: one with ``weight_decay``, one without.

    Biases, the weights of normalisation layers (BatchNorm, LayerNorm, GroupNorm,
    RMSNorm, ...), every other one-dimensional parameter and the parameters named in
    ``no_decay`` (full names as in ``model.named_parameters()``) get no weight decay.
    Parameters that do not require gradients are left out. ``group_options`` (for
    example ``lr``) are set on both groups. Empty groups are dropped.

    Example::

        opt = adamkit.AdamW(param_groups_weight_decay(model, 0.05), lr=1e-3)
    """
    excluded = set(no_decay)
    known = {name for name, _ in model.named_parameters()}
    missing = excluded - known
    if missing:
        raise ValueError(f"no_decay names parameters the model does not have: {sorted(missing)}")
    norm_params = {
        id(p) for module in model.modules() if isinstance(module, _NORM_LAYERS) for p in module.parameters(recurse=False)
    }
    decay: list[torch.Tensor] = []
    plain: list[torch.Tensor] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in excluded or id(param) in norm_params or param.ndim <= 1 or name.endswith(".bias"):
            plain.append(param)
        else:
            decay.append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, **group_options},
        {"params": plain, "weight_decay": 0.0, **group_options},
    ]
    return [g for g in groups if g["params"]]
