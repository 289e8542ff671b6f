"""Shared pieces of the Tier B tasks: a configurable task base class, supervised
mini-batch training with a held-out validation split, the learning-rate decay at 75%
of training, and metrics (AUC, bits per character, loss spikes, Fréchet distance).

Devices: a task that can compute on a GPU sets ``supports_device = True`` and builds its instance on
``self.device`` (a ``torch.device``; the runner sets it for a sweep's ``--device``, default the CPU): model and
data there, everything random drawn on the CPU from the run's seed and moved (:func:`to_device`), so that a
seed means the same initial weights, batches and noise on every device."""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..problem import Instance, Problem


class Task(Problem):
    """A Tier B task configured by keyword arguments (listed in ``defaults``).

    ``synthetic=True`` replaces the real data by the loader's tiny generated stand-in: for unit
    tests only (runs with it are labelled in their config, so they never mix with real results).
    """

    tier = "B"
    parameter_dtype = "float32"
    #: whether the task computes on the sweep's device (``--device``); False: always on the CPU
    supports_device: ClassVar[bool] = False
    #: where this task's instances compute (set by the runner; not part of the configuration)
    device: torch.device = torch.device("cpu")
    defaults: ClassVar[dict[str, Any]] = {}
    #: keys every task accepts
    common: ClassVar[dict[str, Any]] = {"steps": None, "synthetic": False, "data_dir": None}

    def __init__(self, **kwargs: Any):
        allowed = {**self.common, **self.defaults}
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise TypeError(f"unknown argument(s) {unknown} for task {self.name!r}; valid: {', '.join(sorted(allowed))}")
        self.cfg = {**allowed, **kwargs}
        if self.cfg["steps"] is None:
            self.cfg["steps"] = self.default_steps

    default_steps: ClassVar[int] = 1000
    #: the measured cost of one run on the development machine (2 shared CPU cores, 1 thread per run), for
    #: sizing suites; shown by ``adamkit bench list``
    cost: ClassVar[str] = ""

    def __getattr__(self, key: str) -> Any:  # cfg keys as attributes
        cfg = self.__dict__.get("cfg")
        if cfg is not None and key in cfg:
            return cfg[key]
        raise AttributeError(key)

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfg.items() if k != "data_dir"}


def to_device(x, device: torch.device):
    """``x`` (a tensor, a module, or a dict of tensors) on ``device``; the same object when it is there."""
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    return x.to(device)


def as_float(loss) -> float:
    """The Python float of a loss returned by ``optimizer.step(closure)``."""
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def decay_at_75(optimizer: torch.optim.Optimizer, total_steps: int, gamma: float = 0.1):
    """Multiply the learning rate by ``gamma`` once 75% of the steps are done."""
    milestone = max(1, int(0.75 * total_steps))
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[milestone], gamma=gamma)


def seeded(seed: int) -> torch.Generator:
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed) + 1)


class Batches:
    """Endless shuffled mini-batches of index ranges, epoch by epoch, from a seeded generator."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator):
        self.n, self.batch_size, self.gen = n, min(batch_size, n), gen
        self.steps_per_epoch = max(1, n // self.batch_size)
        self._perm, self._pos = None, 0

    def next(self) -> torch.Tensor:
        if self._perm is None or self._pos + self.batch_size > self.n:
            self._perm, self._pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self._perm[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx


class MinibatchInstance(Instance):
    """A model trained on mini-batches of ``data["x_train"]``, ``data["y_train"]`` with the loss ``loss_fn``.

    Subclasses set ``model``, ``data`` and ``batches`` and say how they evaluate.
    """

    loss_fn = staticmethod(F.cross_entropy)

    def parameters(self):
        return list(self.model.parameters())

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training mini-batch (indices drawn on the CPU, data on the instance's device)."""
        idx = self.batches.next().to(self.data["y_train"].device)
        return self.data["x_train"][idx], self.data["y_train"][idx]

    def train_step(self, optimizer, step):
        x, y = self.batch()
        self.model.train()

        def closure():
            optimizer.zero_grad()
            loss = self.loss_fn(self.model(x), y)
            loss.backward()
            return loss

        loss = as_float(optimizer.step(closure))
        self._recent = (self._recent + [loss])[-50:]
        return loss


class ClassifierInstance(MinibatchInstance):
    """A classifier trained on mini-batches; validation and test metrics on held-out data."""

    def __init__(self, model: torch.nn.Module, data: dict[str, torch.Tensor], batch_size: int,
                 gen: torch.Generator, steps: int, lr_decay: bool, eval_size: int | None = None,
                 device: torch.device = torch.device("cpu")):
        self.model, self.data, self.lr_decay = to_device(model, device), to_device(data, device), lr_decay
        self.batches = Batches(len(data["y_train"]), batch_size, gen)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.default_steps = steps
        self.eval_size = eval_size
        self._recent: list[float] = []

    @torch.no_grad()
    def _scores(self, split: str) -> dict[str, float]:
        x, y = self.data[f"x_{split}"], self.data[f"y_{split}"]
        if self.eval_size:
            x, y = x[: self.eval_size], y[: self.eval_size]
        self.model.eval()
        logits = torch.cat([self.model(x[i:i + 2000]) for i in range(0, len(x), 2000)])
        return {f"{split}_loss": float(F.cross_entropy(logits, y)),
                f"{split}_accuracy": float((logits.argmax(1) == y).float().mean())}

    def evaluate(self):
        out = {**self._scores("val"), **self._scores("test")}
        if self._recent:
            out["train_loss"] = float(np.mean(self._recent))
        return out

    def lr_scheduler(self, optimizer, total_steps):
        return decay_at_75(optimizer, total_steps) if self.lr_decay else None


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0):
    """Hold out ``fraction`` of the training set (a fixed split, the same for every run seed)."""
    perm = np.random.default_rng(seed).permutation(len(y))
    n_val = max(1, int(round(fraction * len(y))))
    val, tr = perm[:n_val], perm[n_val:]
    return x[tr], y[tr], x[val], y[val]


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties counted half)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(len(s))
    # average ranks over ties
    _, first, counts = np.unique(s, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


class SpikeCounter:
    """Counts loss spikes: a non-finite training loss, or one above ``factor`` x the median of the previous
    ``window`` losses (counted only once ``window`` losses are seen). ``max_ratio``: the largest
    loss / running-median ratio seen (nan before ``window`` losses)."""

    def __init__(self, window: int = 50, factor: float = 1.3):
        if int(window) < 1:
            raise ValueError(f"spike_window must be >= 1, got {window!r}")
        if not factor > 1:
            raise ValueError(f"spike_factor must be > 1, got {factor!r}")
        self.window, self.factor = int(window), float(factor)
        self.history: list[float] = []
        self.spikes = 0
        self.max_ratio = math.nan

    def add(self, loss: float) -> None:
        if not math.isfinite(loss):
            self.spikes += 1
        elif len(self.history) >= self.window:
            median = float(np.median(self.history[-self.window:]))
            if median > 0:
                ratio = loss / median
                self.max_ratio = ratio if math.isnan(self.max_ratio) else max(self.max_ratio, ratio)
            if loss > self.factor * median:
                self.spikes += 1
        self.history.append(loss)
        del self.history[:-self.window]


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), with symmetric eigendecompositions."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = root1 @ s2 @ root1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def clone_optimizer(template: torch.optim.Optimizer, params) -> torch.optim.Optimizer:
    """A new optimizer of ``template``'s class and hyperparameters over ``params``.

    The second optimizer of a two-player task (GANs) when the runner gave no factory: same name,
    same hyperparameters, so both players are trained by the optimizer under test.
    """
    cls = type(template)
    accepted = inspect.signature(cls.__init__).parameters
    group = template.param_groups[0]
    kwargs = {k: group.get(k, v) for k, v in template.defaults.items() if k in accepted and k != "params"}
    return cls(params, **kwargs)


def make_second_optimizer(instance: Instance, template: torch.optim.Optimizer, params) -> torch.optim.Optimizer:
    factory: Callable | None = getattr(instance, "optimizer_factory", None)
    return factory(params) if factory is not None else clone_optimizer(template, params)


def sync_lr(template: torch.optim.Optimizer, other: torch.optim.Optimizer) -> None:
    """Let the second optimizer follow the first one's (scheduled) learning rate."""
    lr = template.param_groups[0]["lr"]
    for group in other.param_groups:
        group["lr"] = lr
