"""Checks of hyperparameter values.

Each check takes the argument's name and value, raises ``ValueError`` (or
``TypeError`` for a value of the wrong kind) naming the argument and its valid
range, and returns the value in canonical form (``betas`` as a tuple of floats,
numbers as floats), which is what is stored in ``param_groups``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import torch

Check = Callable[[str, Any], Any]


def _real(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a number or a one-element tensor, got a tensor of shape {tuple(value.shape)}")
        number = float(value.item())
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    else:
        number = float(value)
    return number  # NaN fails every range check below, so its message names the valid range


def non_negative(name: str, value: Any) -> float:
    """A finite number >= 0."""
    number = _real(name, value)
    if not 0.0 <= number < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def learning_rate(name: str, value: Any) -> Any:
    """A finite number >= 0; a one-element tensor is kept as a tensor (for schedulers that use one)."""
    non_negative(name, value)
    return value if isinstance(value, torch.Tensor) else float(value)


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    number = _real(name, value)
    if not 0.0 < number < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def optional_positive(name: str, value: Any) -> float | None:
    """None (off) or a finite number > 0."""
    return None if value is None else positive(name, value)


def betas(name: str, value: Any) -> tuple[float, float]:
    """A pair (beta1, beta2), each in [0, 1)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2) with each value in [0, 1), got {value!r}")
    out = []
    for index, beta in enumerate(value):
        number = _real(f"{name}[{index}]", beta)
        if not 0.0 <= number < 1.0:
            raise ValueError(f"{name}[{index}] must be in [0, 1), got {beta!r}")
        out.append(number)
    return tuple(out)


def flag(name: str, value: Any) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def optional_flag(name: str, value: Any) -> bool | None:
    """None (let adamkit choose), True or False."""
    return None if value is None else flag(name, value)


def must_be_false(name: str, value: Any) -> bool:
    """Accepted for compatibility with torch's signatures; only False is supported."""
    flag(name, value)
    if value:
        raise ValueError(f"{name}=True is not supported by adamkit; use {name}=False")
    return value


def one_of(*choices: str) -> Check:
    """One of a fixed set of strings."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
        return value

    check.__doc__ = f"one of {choices}"
    return check
