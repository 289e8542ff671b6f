"""L2-regularised logistic regression on scikit-learn's bundled breast-cancer data, with its exact optimum.

569 samples × 30 features, standardised with the training split's mean and spread; a fixed
60/20/20 train/validation/test split (``split_seed``). The training objective

    F(w, b) = mean log-loss on the training split + (l2 / 2)(‖w‖² + b²)

is strongly convex; its minimiser is found once with scipy's L-BFGS-B at a tight tolerance in
float64, so ``gap`` = F(θ) − F* is the true suboptimality. Training uses mini-batches of
``batch`` samples drawn by the run's seed (0: full batch); selection is on the validation loss.
Needs the ``bench`` extra (scikit-learn, scipy).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from ..problem import Instance, Problem
from ..registry import register

DTYPE = torch.float64


@functools.lru_cache(maxsize=8)
def _data(split_seed: int):
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("logreg_breast_cancer needs scikit-learn: pip install 'adamkit[bench]'") from exc
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(split_seed).permutation(len(y))
    n_train, n_val = int(0.6 * len(y)), int(0.2 * len(y))
    tr, va, te = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    mean, std = x[tr].mean(0), x[tr].std(0)
    x = (x - mean) / std
    return tuple(torch.tensor(a, dtype=DTYPE) for a in (x[tr], y[tr], x[va], y[va], x[te], y[te]))


def _objective_np(theta: np.ndarray, x: np.ndarray, y: np.ndarray, l2: float):
    z = x @ theta[:-1] + theta[-1]
    loss = np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * theta @ theta
    p = 0.5 * (1 + np.tanh(0.5 * z))  # the logistic function, without overflow
    grad = np.concatenate([x.T @ (p - y), [np.sum(p - y)]]) / len(y) + l2 * theta
    return loss, grad


@functools.lru_cache(maxsize=8)
def exact_optimum(split_seed: int, l2: float) -> tuple[np.ndarray, float]:
    """(θ*, F*) of the training objective: L-BFGS-B at a tight tolerance, then Newton steps (gradient ~1e-16)."""
    try:
        from scipy.optimize import minimize
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("logreg_breast_cancer needs scipy: pip install 'adamkit[bench]'") from exc
    xtr, ytr = (a.numpy() for a in _data(split_seed)[:2])
    res = minimize(_objective_np, np.zeros(xtr.shape[1] + 1), args=(xtr, ytr, l2), jac=True, method="L-BFGS-B",
                   options={"maxiter": 20000, "gtol": 1e-13, "ftol": 0.0, "maxcor": 30})
    theta = res.x
    # polish with Newton steps (the objective is smooth and strongly convex, d = 31)
    xb = np.hstack([xtr, np.ones((len(ytr), 1))])
    for _ in range(3):
        _, grad = _objective_np(theta, xtr, ytr, l2)
        p = 0.5 * (1 + np.tanh(0.5 * (xb @ theta)))
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(ytr) + l2 * np.eye(len(theta))
        theta = theta - np.linalg.solve(hess, grad)
    return theta, float(_objective_np(theta, xtr, ytr, l2)[0])


class _LogRegInstance(Instance):
    default_steps = 500

    def __init__(self, problem: "LogRegBreastCancer", seed: int):
        self.problem = problem
        self.xtr, self.ytr, self.xva, self.yva, self.xte, self.yte = _data(problem.split_seed)
        theta_star, self.f_star = exact_optimum(problem.split_seed, problem.l2)
        self.theta_star = torch.tensor(theta_star, dtype=DTYPE)
        gen = torch.Generator().manual_seed(int(seed))
        d = self.xtr.shape[1]
        self.w = (torch.randn(d, generator=gen, dtype=DTYPE) / math.sqrt(d)).requires_grad_(True)
        self.b = torch.zeros(1, dtype=DTYPE, requires_grad=True)
        self.gen = gen

    def parameters(self):
        return [self.w, self.b]

    def objective(self, x, y, reg: bool = True) -> torch.Tensor:
        z = x @ self.w + self.b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        if reg:
            loss = loss + 0.5 * self.problem.l2 * (self.w @ self.w + self.b @ self.b)
        return loss

    def train_step(self, optimizer, step: int) -> float:
        if self.problem.batch:
            idx = torch.randint(0, len(self.ytr), (self.problem.batch,), generator=self.gen)
            x, y = self.xtr[idx], self.ytr[idx]
        else:
            x, y = self.xtr, self.ytr

        def closure():
            optimizer.zero_grad()
            loss = self.objective(x, y)
            loss.backward()
            return loss

        return float(optimizer.step(closure).detach())

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            f = float(self.objective(self.xtr, self.ytr))
            theta = torch.cat([self.w, self.b])
            zva = self.xva @ self.w + self.b
            zte = self.xte @ self.w + self.b
            return {
                "gap": max(f - self.f_star, 0.0) if math.isfinite(f) else math.inf,
                "dist": float((theta - self.theta_star).norm()),
                "val_loss": float(self.objective(self.xva, self.yva, reg=False)),
                "val_accuracy": float(((zva > 0).to(DTYPE) == self.yva).to(DTYPE).mean()),
                "test_accuracy": float(((zte > 0).to(DTYPE) == self.yte).to(DTYPE).mean()),
            }


@register
class LogRegBreastCancer(Problem):
    experiment = "stand-in"  # no paper claim ran it
    name = "logreg_breast_cancer"
    tier = "A"
    description = "L2 logistic regression on breast_cancer (sklearn), exact optimum by L-BFGS"
    stands_for = "convex learning problems of the convergence analyses, with a true suboptimality gap"
    selection_metric = "val_loss"
    target_metric = "gap"
    target = 1e-3
    lr_range = (1e-4, 1.0)

    def __init__(self, l2: float = 1e-3, batch: int = 32, split_seed: int = 0):
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0 (it makes the objective strongly convex), got {l2}")
        if int(batch) != batch or batch < 0:
            raise ValueError(f"batch must be an integer >= 0 (0: full batch), got {batch}")
        self.l2, self.batch, self.split_seed = float(l2), int(batch), int(split_seed)

    def config(self) -> dict[str, Any]:
        return {"l2": self.l2, "batch": self.batch, "split_seed": self.split_seed}

    def make(self, seed: int) -> Instance:
        return _LogRegInstance(self, seed)
