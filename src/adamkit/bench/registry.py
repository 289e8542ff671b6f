"""The problem registry: names -> problem classes (Tier A problems and Tier B tasks alike).

A problem or task module registers its classes itself, at import::

    from adamkit.bench.registry import register

    @register
    class FashionMLP(Problem):
        name = "fmnist_mlp"
        tier = "B"
        ...

Suites name them (``[[problems]] name = "fmnist_mlp"``); the keyword arguments of the class
(``params`` and ``grid`` in a suite) become its configuration. ``load_all()`` imports the shipped
problem modules (:mod:`adamkit.bench.problems`) and every module of the :mod:`adamkit.bench.tasks`
package when it exists, so a new task module needs no edit anywhere else.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from .problem import Problem

_REGISTRY: dict[str, type[Problem]] = {}
_LOADED: set[str] = set()
#: packages whose modules are imported by load_all(); each module registers its own classes
PROBLEM_PACKAGES = ("adamkit.bench.problems", "adamkit.bench.tasks")
#: modules that failed to import in load_all() (name -> error), shown by ``adamkit bench list``
IMPORT_ERRORS: dict[str, str] = {}


def register(cls: type[Problem]) -> type[Problem]:
    """Class decorator: register ``cls`` under ``cls.name``. Registering a second class under a name raises."""
    if not (isinstance(cls, type) and issubclass(cls, Problem)):
        raise TypeError(f"register() takes a Problem subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} has no registry name (set the class attribute `name`)")
    if cls.tier not in ("A", "B"):
        raise ValueError(f"{cls.__qualname__}: tier must be 'A' or 'B', got {cls.tier!r}")
    old = _REGISTRY.get(name)
    if old is not None and old is not cls and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"problem name {name!r} is taken by {old.__module__}.{old.__qualname__}")
    _REGISTRY[name] = cls
    return cls


def load_all(packages: tuple[str, ...] = PROBLEM_PACKAGES) -> None:
    """Import every module of the problem packages (once); each registers its problems."""
    for package_name in packages:
        if package_name in _LOADED:
            continue
        _LOADED.add(package_name)
        try:
            package = importlib.import_module(package_name)
        except ModuleNotFoundError as exc:
            if exc.name == package_name:  # the package is simply not there (yet)
                continue
            IMPORT_ERRORS[package_name] = f"{type(exc).__name__}: {exc}"
            continue
        for info in pkgutil.iter_modules(package.__path__, package_name + "."):
            if info.name.rsplit(".", 1)[-1].startswith("_"):
                continue
            try:
                importlib.import_module(info.name)
            except Exception as exc:  # a broken task module must not take the Tier A suite down with it
                IMPORT_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"


def list_problems(tier: str | None = None) -> list[str]:
    """Registered problem names (optionally of one tier), sorted."""
    load_all()
    return sorted(n for n, c in _REGISTRY.items() if tier is None or c.tier == tier)


def get_problem_class(name: str) -> type[Problem]:
    load_all(PROBLEM_PACKAGES[:1])  # the Tier A problems; the task modules only when needed (heavier imports)
    if name not in _REGISTRY:
        load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def create_problem(name: str, params: dict[str, Any] | None = None) -> Problem:
    """An instance of problem ``name`` with keyword arguments ``params``; bad arguments raise ValueError."""
    cls = get_problem_class(name)
    try:
        return cls(**(params or {}))
    except TypeError as exc:
        raise ValueError(f"problem {name!r}: {exc}") from None
