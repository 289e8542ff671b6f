"""Helpers for training with adamkit under ``torch.distributed`` (DDP, FSDP2, ZeRO, DCP).

Nothing here is needed to *step* an adamkit optimizer in a distributed job: every
update rule is element-wise, so the engine steps each rank's local shard of a
DTensor parameter (FSDP2) and keeps the state as DTensors with the parameter's
sharding. Two things are easy to get wrong, and these helpers do them:

* :func:`reduce_loss`: an optimizer that uses the loss value (``step(loss=...)``)
  must see the *same* loss on every rank, or the ranks' shards drift apart.
* :func:`init_state`: ``torch.distributed.checkpoint.state_dict`` fills an empty
  optimizer's state by calling ``step()`` with zero gradients and ``lr=0``. For
  most adamkit optimizers that leaves the parameters alone, but not for all
  (AGD's ``win=True`` and the ``fixed_decay`` options of AdaBelief and AGD move
  the parameters even at ``lr=0``), and it advances every step counter. Calling :func:`init_state` first gives the
  optimizer exactly the state a fresh optimizer would create, without stepping.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .optim.base import AdamkitOptimizer

__all__ = ["reduce_loss", "init_state"]


def reduce_loss(loss: Any, group: Any = None) -> Tensor:
    """The average of ``loss`` over the ranks of ``group`` (the default group if None), on every rank.

    Use it before ``optimizer.step(loss=...)`` for a loss-aware optimizer: each
    rank computes the loss of its own part of the batch, and the optimizer must
    see the loss of the whole batch on every rank. The result is a detached
    float64 scalar tensor (double precision, so that the mean is the same on
    every rank to the last bit); ``loss`` itself is not changed. Without an
    initialised process group it returns ``loss`` as such a tensor.
    """
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"the loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
        value = loss.detach().reshape(()).to(torch.float64, copy=True)
    else:
        value = torch.tensor(float(loss), dtype=torch.float64)
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return value
    if dist.get_backend(group) == "nccl" and value.device.type != "cuda":
        value = value.cuda()
    dist.all_reduce(value, op=dist.ReduceOp.SUM, group=group)
    return value.div_(dist.get_world_size(group))


@torch.no_grad()
def init_state(optimizer: AdamkitOptimizer) -> AdamkitOptimizer:
    """Create the state of every parameter that has none, as its first ``step()`` would, without stepping.

    Step counters start at 0 and the state tensors are those of a fresh optimizer
    (DTensors with the parameter's sharding under FSDP2), so training afterwards
    is exactly as without the call. Call it before
    ``torch.distributed.checkpoint.state_dict.get_state_dict`` (or
    ``get_optimizer_state_dict``) on an optimizer that has not stepped yet. Returns
    ``optimizer``.
    """
    if not isinstance(optimizer, AdamkitOptimizer):
        raise TypeError(f"init_state takes an adamkit optimizer, got {type(optimizer).__name__}")
    for group in optimizer.param_groups:
        names = optimizer.state_names(group)
        for p in group["params"]:
            optimizer.init_param_state(p, group, names)
    return optimizer
