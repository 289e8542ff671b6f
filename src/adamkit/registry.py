"""Optimizers by name: ``create_optimizer("adabelief", params, lr=1e-3)``, from a dict or a TOML file."""
from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from . import optim
from .optim import AdamkitOptimizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

def _declared() -> dict[str, type[AdamkitOptimizer]]:
    """The algorithms of ``adamkit.optim`` (in its ``__all__`` order): every class that declares its own ``name``."""
    out = {}
    for attr in optim.__all__:
        cls = getattr(optim, attr)
        if isinstance(cls, type) and issubclass(cls, AdamkitOptimizer) and cls.__dict__.get("name"):
            out[cls.name] = cls
    return out


_OPTIMIZERS: dict[str, type[AdamkitOptimizer]] = _declared()


def algorithm_classes() -> list[type[AdamkitOptimizer]]:
    """The registered optimizer classes, in registry order (the bench and ``adamkit speed`` discover them here)."""
    return list(_OPTIMIZERS.values())


def register(cls: type[AdamkitOptimizer]) -> type[AdamkitOptimizer]:
    """Register an algorithm declared outside ``adamkit.optim`` under ``cls.name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, AdamkitOptimizer) and cls.__dict__.get("name")):
        raise TypeError(f"register takes an AdamkitOptimizer subclass that declares its own name, got {cls!r}")
    if _OPTIMIZERS.get(cls.name, cls) is not cls:
        raise ValueError(f"an optimizer named {cls.name!r} is already registered ({_OPTIMIZERS[cls.name].__name__})")
    _OPTIMIZERS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered optimizer (tests that register a temporary algorithm)."""
    _OPTIMIZERS.pop(name.lower(), None)


def list_optimizers() -> list[str]:
    """The registered names: ``adam adamw amsgrad eadam adabelief adopt agd``."""
    return list(_OPTIMIZERS)


def get_optimizer_class(name: str) -> type[AdamkitOptimizer]:
    """The class registered under ``name`` (case-insensitive)."""
    if not isinstance(name, str):
        raise TypeError(f"optimizer name must be a string, got {name!r}")
    try:
        return _OPTIMIZERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(_OPTIMIZERS)}") from None


def optimizer_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments of optimizer ``name`` with their defaults."""
    signature = inspect.signature(get_optimizer_class(name).__init__)
    return {
        p.name: p.default
        for p in signature.parameters.values()
        if p.name not in ("self", "params") and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def create_optimizer(name: str, params: Iterable, **kwargs: Any) -> AdamkitOptimizer:
    """Create optimizer ``name`` over ``params`` (tensors or param-group dicts) with ``kwargs``.

    Unknown keyword arguments raise ``ValueError`` listing the valid ones.
    """
    cls = get_optimizer_class(name)
    valid = optimizer_arguments(name)
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for optimizer {cls.name!r}; valid: {', '.join(valid)}")
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])
    return cls(params, **kwargs)


def load_optimizer_config(source: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """Read and check an optimizer configuration: a mapping or the path of a TOML file.

    The configuration names the optimizer and its arguments, at the top level or
    under an ``[optimizer]`` table::

        name = "adabelief"
        lr = 1e-3
        betas = [0.9, 0.999]

    Returns a new dict with ``name`` and the arguments; raises ``ValueError`` naming
    the file and the problem.
    """
    where = "optimizer config"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        where = f"optimizer config {str(path)!r}"
        try:
            with open(path, "rb") as fh:
                config = tomllib.load(fh)
        except FileNotFoundError:
            raise ValueError(f"{where}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{where}: not valid TOML ({exc})") from None
    elif isinstance(source, Mapping):
        config = dict(source)
    else:
        raise TypeError(f"optimizer config must be a mapping or a TOML file path, got {type(source).__name__}")
    if "optimizer" in config and isinstance(config["optimizer"], Mapping):
        config = dict(config["optimizer"])
    if "name" not in config:
        raise ValueError(f"{where}: missing 'name' (one of: {', '.join(_OPTIMIZERS)})")
    name = config["name"]
    try:
        cls = get_optimizer_class(name)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    arguments = {k: v for k, v in config.items() if k != "name"}
    valid = optimizer_arguments(cls.name)
    unknown = sorted(set(arguments) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown argument(s) {unknown} for {cls.name!r}; valid: {', '.join(valid)}")
    # check every value now, with the optimizer's own checks, so a bad file fails before training starts
    try:
        cls([torch.zeros(1, requires_grad=True)], **_tupled(arguments))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    return {"name": cls.name, **arguments}


def create_optimizer_from_config(source: Mapping[str, Any] | str | os.PathLike, params: Iterable) -> AdamkitOptimizer:
    """Create an optimizer from a configuration mapping or TOML file (see :func:`load_optimizer_config`)."""
    config = load_optimizer_config(source)
    name = config.pop("name")
    return create_optimizer(name, params, **_tupled(config))


def _tupled(arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}
