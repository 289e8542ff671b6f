"""A noisy 100-D quadratic with a deep-learning-like spectrum (after DeepOBS's ``quadratic_deep``).

The Hessian H = Q diag(λ) Qᵀ has mostly small eigenvalues (90 % uniform in [0, 1]) and a few large
ones (10 % uniform in [30, 60]), rotated by a random orthogonal Q; H is fixed by ``hessian_seed``,
not by the run's seed. A mini-batch loss is ½ (θ − x̄)ᵀ H (θ − x̄) with x̄ the mean of ``batch``
N(0, noise²) samples, so the expected loss is ½ θᵀHθ + const, minimised at θ = 0; the metric
``gap`` = ½ θᵀHθ is the exact suboptimality. θ starts at (1, ..., 1) as in DeepOBS.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..problem import Instance, Problem
from ..registry import register

DTYPE = torch.float64


class _QuadInstance(Instance):
    default_steps = 500

    def __init__(self, problem: "QuadraticDeep", seed: int):
        self.problem = problem
        self.H = problem.hessian()
        self.theta = torch.ones(problem.dim, dtype=DTYPE, requires_grad=True)
        self.gen = torch.Generator().manual_seed(int(seed))

    def parameters(self):
        return [self.theta]

    def train_step(self, optimizer, step: int) -> float:
        p = self.problem
        xbar = torch.randn(p.dim, generator=self.gen, dtype=DTYPE) * (p.noise / math.sqrt(p.batch))

        def closure():
            optimizer.zero_grad()
            d = self.theta - xbar
            loss = 0.5 * d @ (self.H @ d)
            loss.backward()
            return loss

        return float(optimizer.step(closure).detach())

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            t = self.theta.detach()
            gap = float(0.5 * t @ (self.H @ t))
            return {"gap": gap if math.isfinite(gap) else math.inf, "dist": float(t.norm())}


@register
class QuadraticDeep(Problem):
    experiment = "stand-in"  # DeepOBS's problem, not a paper claim's
    name = "quadratic_deep"
    tier = "A"
    description = "noisy 100-D quadratic, eigenvalues 90% in [0,1] and 10% in [30,60], rotated (DeepOBS)"
    stands_for = "DeepOBS quadratic_deep: the ill-conditioned, noisy valley of deep-learning losses"
    selection_metric = "gap"
    target_metric = "gap"
    target = 1.0
    lr_range = (1e-4, 1.0)

    def __init__(self, dim: int = 100, noise: float = 1.0, batch: int = 128, hessian_seed: int = 42):
        if int(dim) != dim or dim < 10:
            raise ValueError(f"dim must be an integer >= 10, got {dim}")
        if not noise >= 0 or int(batch) != batch or batch < 1:
            raise ValueError(f"noise must be >= 0 and batch an integer >= 1, got {noise}, {batch}")
        self.dim, self.noise, self.batch, self.hessian_seed = int(dim), float(noise), int(batch), int(hessian_seed)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "noise": self.noise, "batch": self.batch, "hessian_seed": self.hessian_seed}

    def eigenvalues(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.hessian_seed)
        n_large = self.dim // 10
        small = torch.rand(self.dim - n_large, generator=gen, dtype=DTYPE)
        large = 30 + 30 * torch.rand(n_large, generator=gen, dtype=DTYPE)
        return torch.cat([small, large])

    def hessian(self) -> torch.Tensor:
        lam = self.eigenvalues()
        gen = torch.Generator().manual_seed(self.hessian_seed + 1)
        q, r = torch.linalg.qr(torch.randn(self.dim, self.dim, generator=gen, dtype=DTYPE))
        q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed rotation
        return (q * lam) @ q.T

    def make(self, seed: int) -> Instance:
        return _QuadInstance(self, seed)
