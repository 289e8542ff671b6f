"""The optimizers a suite may name: every registered adamkit optimizer, and the baselines of the bench.

adamkit's optimizers are discovered from the registry and described by their own ``bench`` declaration
(:class:`adamkit.core.benchspec.BenchSpec`). The bench adds one baseline that is not an adamkit algorithm:
``sgd``, ``torch.optim.SGD`` with heavy-ball momentum 0.9 (Nesterov as its paper arm ``sgd@nesterov``),
tuned like the rest — the reference of "generalises like SGD" (AdaBelief) and of AGD's switch to SGD.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch

import adamkit
from adamkit.core.benchspec import BenchSpec

#: the bench's baselines: name -> (constructor, its defaults in the bench, its declaration)
BASELINES: dict[str, tuple[type, dict[str, Any], BenchSpec]] = {
    "sgd": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9},
            BenchSpec(color="#7f7f7f", lr_scale=30.0, eps_name=None, eps_range=None,
                      paper_configs={"nesterov": {"nesterov": True}})),
}


def names() -> list[str]:
    """adamkit's registered optimizers, then the baselines."""
    return list(adamkit.list_optimizers()) + list(BASELINES)


def spec(name: str) -> BenchSpec:
    """The bench declaration of optimizer ``name``."""
    if name in BASELINES:
        return BASELINES[name][2]
    cls = adamkit.get_optimizer_class(name)
    declared = getattr(cls, "bench", None)
    if not isinstance(declared, BenchSpec):
        raise ValueError(f"optimizer {name!r} declares no `bench = BenchSpec(...)`; the bench cannot tune it")
    return declared


def color(name: str) -> str:
    try:
        return spec(name).color
    except ValueError:
        return "#333333"


def arguments(name: str) -> list[str]:
    """The keyword arguments optimizer ``name`` accepts."""
    cls = BASELINES[name][0] if name in BASELINES else adamkit.get_optimizer_class(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]


def create(name: str, params: Iterable, **hparams: Any) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params``: an adamkit optimizer, or a baseline with its bench defaults."""
    if name in BASELINES:
        ctor, defaults, _ = BASELINES[name]
        valid = set(arguments(name))
        unknown = sorted(set(hparams) - valid)
        if unknown:
            raise ValueError(f"unknown argument(s) {unknown} for optimizer {name!r}; valid: {', '.join(sorted(valid))}")
        return ctor(params, **{**defaults, **hparams})
    return adamkit.create_optimizer(name, params, **hparams)


def defaults(name: str) -> dict[str, Any]:
    """The hyperparameters optimizer ``name`` runs with when none is given: an adamkit optimizer's signature
    defaults, or a baseline's constructor defaults with the bench's on top."""
    if name in BASELINES:
        ctor, bench_defaults, _ = BASELINES[name]
        found = {p.name: p.default for p in inspect.signature(ctor.__init__).parameters.values()
                 if p.default is not inspect.Parameter.empty}
        return {**found, **bench_defaults}
    return dict(adamkit.registry.optimizer_arguments(name))


def default_lr(name: str) -> float:
    """The learning rate optimizer ``name`` runs with when none is given (its defaults arm)."""
    if name in BASELINES:
        return float(BASELINES[name][1]["lr"])
    return float(adamkit.registry.optimizer_arguments(name)["lr"])
