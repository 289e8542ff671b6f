"""What a benchmark problem is: the contract between the suite and its problems and tasks.

A *problem* (Tier A: test functions, counterexamples, quadratics, logistic
regression) or *task* (Tier B: real models on real data) is a small class with
a registry name and a ``make(seed)`` that builds everything one run needs, so
that the same run is reproducible from its seed. The suite only talks to the
objects below and to adamkit's public optimizer API.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Iterable

import torch


class Instance(abc.ABC):
    """One seeded instance of a problem: parameters, a training step, an evaluation."""

    #: default number of optimizer steps of a run
    default_steps: int = 100
    #: optimizer steps in one epoch, for tasks whose suite budget is given in epochs (None: steps only)
    steps_per_epoch: int | None = None

    @abc.abstractmethod
    def parameters(self) -> Iterable[torch.Tensor] | list[dict[str, Any]]:
        """What the optimizer is built over (tensors or param-group dicts)."""

    @abc.abstractmethod
    def train_step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Compute the loss and gradients of step ``step`` (0-based), call ``optimizer.step``, return the loss.

        Loss-aware optimizers get the loss through ``optimizer.step(closure)`` or
        ``optimizer.step(loss=...)``; a problem should use one of these.
        """

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Metrics of the current parameters (for example ``val_loss``, ``test_accuracy``, ``gap``)."""

    def lr_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        """The learning-rate schedule of this problem, or None for a constant rate."""
        return None


class Problem(abc.ABC):
    """A benchmark problem or task; subclasses set the class attributes and implement ``make``."""

    #: registry name, e.g. "rosenbrock" or "fmnist_cnn"
    name: ClassVar[str]
    #: "A" (seconds, no data) or "B" (real task on packaged data)
    tier: ClassVar[str] = "A"
    #: the metric the tuning protocol selects on, and whether larger is better
    selection_metric: ClassVar[str] = "val_loss"
    maximize_metric: ClassVar[bool] = False
    #: the kind of experiment of the papers this stands in for
    stands_for: ClassVar[str] = ""
    #: one line for ``adamkit bench list``
    description: ClassVar[str] = ""
    #: the learning-rate range (low, high) of the tuning search, unless the suite gives one
    lr_range: ClassVar[tuple[float, float]] = (1e-4, 1e-1)
    #: a run "reaches the target" when ``target_metric`` (default: ``selection_metric``) is at or
    #: below ``target`` (above it, when ``maximize_metric``); None: no default target
    target: ClassVar[float | None] = None
    target_metric: ClassVar[str] = ""
    #: the dtype of the parameters the optimizer steps ("float64": Tier A's exact arithmetic; tasks: "float32");
    #: a suite's hyperparameters are checked against an optimizer built on a parameter of this dtype, so that
    #: what a run would refuse (a low-precision ``state_dtype`` on float64 parameters) is refused at load time
    parameter_dtype: ClassVar[str] = "float64"

    @abc.abstractmethod
    def make(self, seed: int) -> Instance:
        """Build a fresh instance; the same seed gives the same instance."""

    def config(self) -> dict[str, Any]:
        """The problem's own settings (part of a run's identity in the results store)."""
        return {}

    def optimizer_overrides(self, optimizer: str) -> dict[str, Any]:
        """Hyperparameters this problem fixes for every optimizer (e.g. ``betas`` of a β2 sweep).

        They apply on top of each optimizer's defaults in every arm; tuning never changes them.
        """
        return {}


ProblemFactory = Callable[..., Problem]
