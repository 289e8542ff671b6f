"""Tensor helpers every layer uses: the math dtype of a parameter dtype, and DTensor shards as local tensors."""
from __future__ import annotations

import torch
from torch import Tensor

#: the half-precision parameter dtypes, whose update is computed in float32
HALF_DTYPES = (torch.float16, torch.bfloat16)


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the update is computed in (and the state is kept in) for a parameter dtype."""
    if dtype in HALF_DTYPES:
        return torch.float32
    if dtype == torch.complex32:
        return torch.complex64
    return dtype


try:  # DTensor (FSDP2, tensor parallel); absent from very old torch builds
    from torch.distributed.tensor import DTensor, Partial
except ImportError:  # pragma: no cover
    DTensor = Partial = None


def is_dtensor(t: object) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local_tensor(t: Tensor) -> Tensor:
    """The local shard of a DTensor (the tensor itself otherwise).

    Every update rule is element-wise, so stepping each rank's shard of the
    parameter, gradient and state is exact; no kernel needs a sharding rule.
    """
    if DTensor is not None and isinstance(t, DTensor):
        if any(isinstance(placement, Partial) for placement in t.placements):
            raise RuntimeError(
                "adamkit got a DTensor with a Partial placement (an unreduced gradient); "
                "reduce it before optimizer.step()"
            )
        return t.to_local()
    return t
