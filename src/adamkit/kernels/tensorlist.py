"""A list of tensors that answers the tensor methods the update rules use.

Every algorithm in adamkit writes its update once, as a function of tensors
and Python scalars (see ``adamkit.optim``).  Called with plain tensors it is the
readable reference path (``foreach=False``); called with :class:`TensorList`
arguments the very same function runs as multi-tensor ``torch._foreach_*``
kernels (``foreach=True``).  Only the methods below may be used by an update
rule, so that both paths stay one piece of code.

Each method has the semantics of the :class:`torch.Tensor` method of the same
name (in-place methods end in ``_`` and return ``self``).  A scalar argument
applies to every tensor; a :class:`TensorList` argument pairs tensors
element by element.
"""
from __future__ import annotations

from typing import Iterable, Union

import torch
from torch import Tensor

Scalar = Union[int, float]


class TensorList:
    """Tensors of one device and dtype, operated on together."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Iterable[Tensor]):
        self.tensors = list(tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self):
        return iter(self.tensors)

    def __getitem__(self, index: int) -> Tensor:
        return self.tensors[index]

    def __repr__(self) -> str:
        return f"TensorList({len(self.tensors)} tensors)"

    # -- construction ------------------------------------------------------
    def clone(self) -> "TensorList":
        return TensorList(t.clone() for t in self.tensors)

    def copy_(self, other: "TensorList") -> "TensorList":
        torch._foreach_copy_(self.tensors, other.tensors)
        return self

    # -- arithmetic -----------------------------------------------------------
    def add(self, other: Union["TensorList", Scalar], alpha: Scalar = 1) -> "TensorList":
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_add(self.tensors, other.tensors, alpha=alpha))
        return TensorList(torch._foreach_add(self.tensors, other * alpha))

    def add_(self, other: Union["TensorList", Scalar], alpha: Scalar = 1) -> "TensorList":
        if isinstance(other, TensorList):
            torch._foreach_add_(self.tensors, other.tensors, alpha=alpha)
        else:
            torch._foreach_add_(self.tensors, other * alpha)
        return self

    def sub(self, other: "TensorList") -> "TensorList":
        return TensorList(torch._foreach_sub(self.tensors, other.tensors))

    def sub_(self, other: "TensorList") -> "TensorList":
        torch._foreach_sub_(self.tensors, other.tensors)
        return self

    def neg(self) -> "TensorList":
        return TensorList(torch._foreach_neg(self.tensors))

    def mul(self, other: Union["TensorList", Scalar]) -> "TensorList":
        return TensorList(torch._foreach_mul(self.tensors, _arg(other)))

    def mul_(self, other: Union["TensorList", Scalar]) -> "TensorList":
        torch._foreach_mul_(self.tensors, _arg(other))
        return self

    def div(self, other: Union["TensorList", Scalar]) -> "TensorList":
        return TensorList(torch._foreach_div(self.tensors, _arg(other)))

    def div_(self, other: Union["TensorList", Scalar]) -> "TensorList":
        torch._foreach_div_(self.tensors, _arg(other))
        return self

    def lerp_(self, end: "TensorList", weight: Scalar) -> "TensorList":
        torch._foreach_lerp_(self.tensors, end.tensors, weight)
        return self

    def addcmul_(self, a: "TensorList", b: "TensorList", value: Scalar = 1) -> "TensorList":
        torch._foreach_addcmul_(self.tensors, a.tensors, b.tensors, value=value)
        return self

    def addcdiv_(self, a: "TensorList", b: "TensorList", value: Scalar = 1) -> "TensorList":
        torch._foreach_addcdiv_(self.tensors, a.tensors, b.tensors, value=value)
        return self

    def sqrt(self) -> "TensorList":
        return TensorList(torch._foreach_sqrt(self.tensors))

    def sqrt_(self) -> "TensorList":
        torch._foreach_sqrt_(self.tensors)
        return self

    def sign(self) -> "TensorList":
        return TensorList(torch._foreach_sign(self.tensors))

    def maximum(self, other: "TensorList") -> "TensorList":
        return TensorList(torch._foreach_maximum(self.tensors, other.tensors))

    def clamp_min_(self, minimum: Scalar) -> "TensorList":
        torch._foreach_clamp_min_(self.tensors, minimum)
        return self

    def clamp_(self, min: Scalar, max: Scalar) -> "TensorList":  # noqa: A002 - torch's names
        torch._foreach_clamp_min_(self.tensors, min)
        torch._foreach_clamp_max_(self.tensors, max)
        return self


def _arg(other):
    return other.tensors if isinstance(other, TensorList) else other
