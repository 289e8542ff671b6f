"""Deterministic test functions: the 2-D functions of the papers' toy figures and N-D Rosenbrock.

Each run starts at a point drawn uniformly (by its seed) from the function's start box, so the
final seeds of a suite are many start points. ``noise`` adds N(0, noise²) to every gradient
coordinate (seeded), turning the problem into a stochastic one; the metrics are always those of
the exact function:

- ``gap``: f(θ) − f*;  ``dist``: distance to the nearest global minimiser;
- ``x``, ``y`` (2-D only): the iterate, for the trajectory plots.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import torch

from ..problem import Instance, Problem
from ..registry import register

DTYPE = torch.float64


class FunctionInstance(Instance):
    """θ, a start point, an exact function and optional gradient noise."""

    def __init__(self, problem: "TestFunction", seed: int):
        self.problem = problem
        gen = torch.Generator().manual_seed(int(seed))
        low = torch.tensor(problem.start_low(), dtype=DTYPE)
        high = torch.tensor(problem.start_high(), dtype=DTYPE)
        start = low + (high - low) * torch.rand(low.shape, generator=gen, dtype=DTYPE)
        self.theta = start.clone().requires_grad_(True)
        self.noise_gen = torch.Generator().manual_seed(int(seed) + 7919)
        self.default_steps = problem.default_steps

    def parameters(self):
        return [self.theta]

    def train_step(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        noise = self.problem.noise

        def closure():
            optimizer.zero_grad()
            loss = self.problem.f(self.theta)
            loss.backward()
            if noise:
                self.theta.grad.add_(torch.randn(self.theta.shape, generator=self.noise_gen, dtype=DTYPE), alpha=noise)
            return loss

        return float(optimizer.step(closure).detach())

    def evaluate(self) -> dict[str, float]:
        return self.problem.metrics(self.theta.detach())


class TestFunction(Problem):
    """A deterministic function with known global minimisers."""
    experiment = "stand-in"  # a test function no paper's claim ran

    __test__ = False  # not a pytest test class
    tier = "A"
    selection_metric = "gap"
    target_metric = "gap"
    stands_for = "the papers' toy trajectories on test functions"
    lr_range = (1e-3, 1.0)
    target: ClassVar[float | None] = 1e-3
    default_steps: ClassVar[int] = 300
    dim: ClassVar[int] = 2
    #: start box (low corner, high corner)
    box: ClassVar[tuple[Sequence[float], Sequence[float]]] = ((-3.0, -3.0), (3.0, 3.0))
    #: the global minimisers and the minimum value
    minimizers: ClassVar[Sequence[Sequence[float]]] = ((0.0, 0.0),)
    f_star: ClassVar[float] = 0.0
    #: the plot window of the contour plots (defaults to the start box, enlarged)
    plot_box: ClassVar[tuple[Sequence[float], Sequence[float]] | None] = None
    #: plot the contours of log(1 + f - f*) (functions with a huge range)
    log_contours: ClassVar[bool] = False

    def __init__(self, noise: float = 0.0):
        noise = float(noise)
        if not (noise >= 0 and math.isfinite(noise)):
            raise ValueError(f"noise must be a finite number >= 0, got {noise}")
        self.noise = noise

    def config(self) -> dict[str, Any]:
        return {"noise": self.noise}

    def start_low(self) -> list[float]:
        return list(self.box[0])

    def start_high(self) -> list[float]:
        return list(self.box[1])

    def make(self, seed: int) -> Instance:
        return FunctionInstance(self, seed)

    @staticmethod
    def f(t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def minimizer_tensor(self) -> torch.Tensor:
        return torch.tensor(self.minimizers, dtype=DTYPE)

    def metrics(self, theta: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            value = float(self.f(theta))
            dist = float(torch.linalg.vector_norm(self.minimizer_tensor() - theta, dim=1).min())
        out = {"gap": max(value - self.f_star, 0.0) if math.isfinite(value) else math.inf, "dist": dist}
        if self.dim == 2:
            out["x"], out["y"] = float(theta[0]), float(theta[1])
        return out


def _xy(t):
    return t[0], t[1]


@register
class AbsSum(TestFunction):
    experiment = "paper"  # AdaBelief's Fig. 3 function
    name = "abs_sum"
    description = "|x| + |y| (AdaBelief Fig. 4, non-smooth)"
    target = 1e-2

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return x.abs() + y.abs()


@register
class AbsRotated(TestFunction):
    experiment = "paper"  # AdaBelief's Fig. 3 function
    name = "abs_rotated"
    description = "|x + y| + |x - y|/10 (AdaBelief Fig. 4, non-smooth, ill-conditioned)"
    target = 1e-2

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (x + y).abs() + (x - y).abs() / 10


@register
class QuadRotated(TestFunction):
    experiment = "paper"  # AdaBelief's Fig. 3 function
    name = "quad_rotated"
    description = "(x + y)^2 + (x - y)^2/10 (AdaBelief Fig. 4, ill-conditioned quadratic)"

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (x + y) ** 2 + (x - y) ** 2 / 10


@register
class AbsScaled(TestFunction):
    experiment = "paper"  # AdaBelief's Fig. 3 function
    name = "abs_scaled"
    description = "|x|/10 + |y| (AdaBelief Fig. 4, non-smooth, different scales)"
    target = 1e-2

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return x.abs() / 10 + y.abs()


@register
class Beale(TestFunction):
    experiment = "paper"  # AdaBelief's toy figure (the README animation)
    name = "beale"
    description = "Beale, minimum 0 at (3, 0.5)"
    box = ((-2.0, -2.0), (2.0, 2.0))
    plot_box = ((-4.5, -4.5), (4.5, 4.5))
    minimizers = ((3.0, 0.5),)
    lr_range = (1e-3, 1e-1)
    log_contours = True

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


@register
class Rosenbrock(TestFunction):
    experiment = "paper"  # AdaBelief's toy figure (the reproduction's Rosenbrock)
    name = "rosenbrock"
    description = "Rosenbrock (1-x)^2 + 100(y-x^2)^2, minimum 0 at (1, 1)"
    box = ((-2.0, -1.0), (2.0, 3.0))
    plot_box = ((-2.5, -1.5), (2.5, 3.5))
    minimizers = ((1.0, 1.0),)
    log_contours = True
    lr_range = (1e-3, 1e-1)

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (1 - x) ** 2 + 100 * (y - x * x) ** 2


@register
class Booth(TestFunction):
    name = "booth"
    description = "Booth, minimum 0 at (1, 3)"
    box = ((-10.0, -10.0), (10.0, 10.0))
    minimizers = ((1.0, 3.0),)
    lr_range = (1e-3, 3.0)

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


@register
class Matyas(TestFunction):
    name = "matyas"
    description = "Matyas, minimum 0 at (0, 0)"
    box = ((-10.0, -10.0), (10.0, 10.0))
    lr_range = (1e-3, 3.0)

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return 0.26 * (x * x + y * y) - 0.48 * x * y


@register
class Himmelblau(TestFunction):
    name = "himmelblau"
    description = "Himmelblau, four global minima of value 0"
    box = ((-5.0, -5.0), (5.0, 5.0))
    minimizers = (
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.283185991286170),
        (3.584428340330492, -1.848126526964404),
    )
    lr_range = (1e-3, 1.0)
    log_contours = True

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


@register
class ThreeHumpCamel(TestFunction):
    name = "three_hump_camel"
    description = "three-hump camel, minimum 0 at (0, 0), two local minima"
    box = ((-2.0, -2.0), (2.0, 2.0))
    plot_box = ((-2.5, -2.5), (2.5, 2.5))
    log_contours = True

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return 2 * x * x - 1.05 * x**4 + x**6 / 6 + x * y + y * y


@register
class GoldsteinPrice(TestFunction):
    name = "goldstein_price"
    description = "Goldstein-Price, minimum 3 at (0, -1), several local minima"
    box = ((-2.0, -2.0), (2.0, 2.0))
    minimizers = ((0.0, -1.0),)
    f_star = 3.0
    target = 1e-2
    log_contours = True
    lr_range = (1e-4, 1e-1)

    @staticmethod
    def f(t):
        x, y = _xy(t)
        a = 1 + (x + y + 1) ** 2 * (19 - 14 * x + 3 * x * x - 14 * y + 6 * x * y + 3 * y * y)
        b = 30 + (2 * x - 3 * y) ** 2 * (18 - 32 * x + 12 * x * x + 48 * y - 36 * x * y + 27 * y * y)
        return a * b


@register
class Rastrigin(TestFunction):
    name = "rastrigin"
    description = "Rastrigin 2-D, minimum 0 at (0, 0), many local minima"
    box = ((-5.12, -5.12), (5.12, 5.12))
    target = 1e-2

    @staticmethod
    def f(t):
        x, y = _xy(t)
        return 20 + x * x - 10 * torch.cos(2 * math.pi * x) + y * y - 10 * torch.cos(2 * math.pi * y)


@register
class Ackley(TestFunction):
    name = "ackley"
    description = "Ackley 2-D, minimum 0 at (0, 0), many local minima"
    box = ((-5.0, -5.0), (5.0, 5.0))
    target = 1e-2

    @staticmethod
    def f(t):
        x, y = _xy(t)
        r = torch.sqrt(0.5 * (x * x + y * y))
        return -20 * torch.exp(-0.2 * r) - torch.exp(0.5 * (torch.cos(2 * math.pi * x) + torch.cos(2 * math.pi * y))) + math.e + 20


@register
class Branin(TestFunction):
    name = "branin"
    description = "Branin, minimum 5/(4π) ≈ 0.3979 at (-π, 12.275), (π, 2.275), (3π, 2.475)"
    box = ((-5.0, 0.0), (10.0, 15.0))
    minimizers = ((-math.pi, 12.275), (math.pi, 2.275), (3 * math.pi, 2.475))
    f_star = 10 / (8 * math.pi)
    lr_range = (1e-3, 3.0)

    @staticmethod
    def f(t):
        x, y = _xy(t)
        b, c, r, s, tt = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
        return (y - b * x * x + c * x - r) ** 2 + s * (1 - tt) * torch.cos(x) + s


@register
class RosenbrockND(TestFunction):
    name = "rosenbrock_nd"
    description = "N-D Rosenbrock sum 100(x[i+1]-x[i]^2)^2 + (1-x[i])^2, minimum 0 at (1, ..., 1)"
    lr_range = (1e-4, 1e-1)
    default_steps = 1000

    def __init__(self, dim: int = 10, noise: float = 0.0):
        super().__init__(noise)
        if int(dim) != dim or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim}")
        self.dim = int(dim)
        self.minimizers = (tuple([1.0] * self.dim),)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "noise": self.noise}

    def start_low(self):
        return [-2.0] * self.dim

    def start_high(self):
        return [2.0] * self.dim

    @staticmethod
    def f(t):
        return (100 * (t[1:] - t[:-1] ** 2) ** 2 + (1 - t[:-1]) ** 2).sum()


#: the 2-D functions, in the order of the report
FUNCTIONS_2D = [
    "abs_sum", "abs_rotated", "quad_rotated", "abs_scaled", "beale", "rosenbrock", "booth", "matyas",
    "himmelblau", "three_hump_camel", "goldstein_price", "rastrigin", "ackley", "branin",
]
