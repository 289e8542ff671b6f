"""The convex counterexamples on which Adam fails to converge, with β2 as a problem setting.

Both minimise a linear function over θ ∈ [-1, 1] (θ is projected back after each step), so the
minimiser is θ* = -1 and ``gap`` = ``dist`` = θ + 1 ∈ [0, 2] (θ starts at 0; the target θ ≤ −0.5). The β2 (and β1) of the sweep are
fixed for every optimizer through :meth:`Problem.optimizer_overrides`; the learning rate decays as
α/√t, as in the convergence analyses (``schedule = "sqrt"``), or stays constant.

- ``adopt_counterexample`` (Taniguchi et al. 2024, §3): f(θ) = θ, stochastic gradient k² with
  probability 1/k and −k otherwise (mean 1). Adam diverges to θ = +1 when β2 is small relative
  to k; ADOPT converges for any β2.
- ``reddi_counterexample`` (Reddi, Kale & Kumar 2018, Thm. 1): online f_t(θ) = Cθ when
  t mod 3 = 1 and −θ otherwise (C > 2, so the average is minimised at θ = −1); deterministic.

``chains = n`` runs n independent chains side by side in one tensor (every update is element-wise), each
with its own gradient stream; the streams come from the run's seed, so chain i of two optimizers sees the same
gradients, and the final metrics also give each chain's values (``theta_chains``, ``theta_avg_chains``,
``share_end_chains``), which the claims' judge pairs chain by chain. Besides the final θ, a run reports what
the papers' claims are about at a long horizon: ``theta_avg`` — the time-averaged θ (mean over steps, then over
chains; the regret analyses bound the average iterate, and a slow drift the right way shows in it long before
the last iterate settles) — and ``share_end`` — the share of the last 10 % of steps that each chain spends at
the optimum's end θ ≤ −0.99.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..problem import Instance, Problem
from ..registry import register


class _LinearInstance(Instance):
    def __init__(self, problem: "_Counterexample", seed: int):
        self.problem = problem
        self.chains = problem.chains
        self.theta = torch.zeros(self.chains, dtype=torch.float64, requires_grad=True)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.default_steps = problem.default_steps
        self.total_steps = problem.default_steps
        self.theta_sum = torch.zeros(self.chains, dtype=torch.float64)
        self.steps_done = 0
        self.end_hits = torch.zeros(self.chains, dtype=torch.float64)
        self.end_steps = 0

    def parameters(self):
        return [self.theta]

    def train_step(self, optimizer, step: int) -> float:
        if self.chains == 1:  # (the stream of stores made before chains existed)
            g = torch.full((1,), self.problem.gradient(step, self.gen), dtype=torch.float64)
        else:
            g = self.problem.gradients(step, self.gen, self.chains)

        with torch.no_grad():
            # a linear loss whose gradient is the sampled g, set directly (no graph, no closure: a step with a
            # closure took about 1.5x as long as one without, measured, and these runs are a million steps); θ·g
            # before the step is the loss a closure would give, and reaches a loss-aware optimizer as step(loss=...)
            loss = (self.theta * g).sum()
            self.theta.grad = g
            if getattr(optimizer, "requires_loss", False):
                optimizer.step(loss=loss)
            else:
                optimizer.step()
            self.theta.clamp_(-1.0, 1.0)
            self.theta_sum += self.theta
            self.steps_done += 1
            if self.steps_done > 0.9 * self.total_steps:
                self.end_hits += (self.theta <= -0.99).to(torch.float64)
                self.end_steps += 1
        return float(loss)

    def evaluate(self) -> dict[str, float]:
        theta = float(self.theta.detach().mean())
        out = {"gap": theta + 1.0, "dist": theta + 1.0, "theta": theta}
        avg = self.theta_sum / self.steps_done if self.steps_done else self.theta.detach()
        out["theta_avg"] = float(avg.mean())
        out["share_end"] = float((self.end_hits / self.end_steps).mean()) if self.end_steps else 0.0
        if self.chains > 1:  # each chain's values: the judge pairs chain i of two optimizers (the same gradients)
            theta_all = self.theta.detach()
            out["theta_chains"] = theta_all.tolist()
            out["theta_avg_chains"] = avg.tolist()
            out["share_end_chains"] = ((self.end_hits / self.end_steps).tolist() if self.end_steps
                                       else [0.0] * self.chains)
        return out

    def lr_scheduler(self, optimizer, total_steps: int):
        self.total_steps = int(total_steps)
        if self.problem.schedule == "sqrt":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 / math.sqrt(t + 1))
        return None


class _Counterexample(Problem):
    experiment = "paper"  # the papers' exact problems
    tier = "A"
    selection_metric = "gap"
    target_metric = "gap"
    #: "converged" = ends closer to the optimum -1 than to the start 0 (θ ≤ -0.5)
    target = 0.5
    lr_range = (1e-3, 1.0)
    default_steps = 2000

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, schedule: str = "sqrt", chains: int = 1):
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {beta1}, {beta2}")
        if schedule not in ("sqrt", "constant"):
            raise ValueError(f"schedule must be 'sqrt' or 'constant', got {schedule!r}")
        if isinstance(chains, bool) or not isinstance(chains, int) or not 1 <= chains <= 100_000:
            raise ValueError(f"chains must be an integer in [1, 100000], got {chains!r}")
        self.beta1, self.beta2, self.schedule, self.chains = float(beta1), float(beta2), schedule, chains

    def config(self) -> dict[str, Any]:
        out = {"beta1": self.beta1, "beta2": self.beta2, "schedule": self.schedule}
        return out if self.chains == 1 else {**out, "chains": self.chains}  # (1: as stored before chains)

    def gradients(self, step: int, gen: torch.Generator, n: int) -> torch.Tensor:
        """The gradients of ``n`` independent chains at ``step``."""
        return torch.full((n,), float(self.gradient(step, gen)), dtype=torch.float64)

    def optimizer_overrides(self, optimizer: str) -> dict[str, Any]:
        return {"betas": (self.beta1, self.beta2)}

    def make(self, seed: int) -> Instance:
        return _LinearInstance(self, seed)


@register
class AdoptCounterexample(_Counterexample):
    name = "adopt_counterexample"
    description = "f(θ)=θ on [-1,1], gradient k² w.p. 1/k else -k (ADOPT §3); β2 a setting"
    stands_for = "ADOPT's Figure 1: Adam fails for small β2, ADOPT converges for any β2"

    def __init__(self, k: int = 10, beta1: float = 0.9, beta2: float = 0.999, schedule: str = "sqrt",
                 chains: int = 1):
        super().__init__(beta1, beta2, schedule, chains)
        if int(k) != k or k < 2:
            raise ValueError(f"k must be an integer >= 2, got {k}")
        self.k = int(k)

    def config(self) -> dict[str, Any]:
        return {"k": self.k, **super().config()}

    def gradient(self, step: int, gen: torch.Generator) -> float:
        rare = float(torch.rand((), generator=gen, dtype=torch.float64)) < 1.0 / self.k
        return float(self.k**2) if rare else -float(self.k)

    def gradients(self, step: int, gen: torch.Generator, n: int) -> torch.Tensor:
        rare = torch.rand(n, generator=gen, dtype=torch.float64) < 1.0 / self.k
        return torch.where(rare, float(self.k**2), -float(self.k)).to(torch.float64)


@register
class ReddiCounterexample(_Counterexample):
    name = "reddi_counterexample"
    description = "online f_t(θ)=Cθ if t mod 3 = 1 else -θ on [-1,1] (Reddi et al. 2018); deterministic"
    stands_for = "AMSGrad's counterexample: Adam converges to the worst point"
    deterministic = True  # every seed gives the same gradients: the judge counts one run per arm (n = 1)

    def __init__(self, C: float = 3.0, beta1: float = 0.0, beta2: float = 0.1, schedule: str = "sqrt",
                 chains: int = 1):
        super().__init__(beta1, beta2, schedule, chains)
        if not C > 2:
            raise ValueError(f"C must be > 2, got {C}")
        self.C = float(C)

    def config(self) -> dict[str, Any]:
        return {"C": self.C, **super().config()}

    def gradient(self, step: int, gen: torch.Generator) -> float:
        return self.C if (step + 1) % 3 == 1 else -1.0
