"""Every Tier A problem: its optimum is right and its gradient agrees with a finite difference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adamkit.bench import registry
from adamkit.bench.problems.functions import FUNCTIONS_2D, TestFunction

# functions whose minimiser is a kink (no gradient there)
NONSMOOTH = {"abs_sum", "abs_rotated", "abs_scaled", "ackley"}
FUNCTIONS = FUNCTIONS_2D + ["rosenbrock_nd"]


def _fd_grad(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    g = torch.zeros_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def _autograd(f, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    f(x).backward()
    return x.grad


def test_every_function_is_registered_and_tier_a():
    names = registry.list_problems("A")
    for name in FUNCTIONS + ["adopt_counterexample", "reddi_counterexample", "quadratic_deep", "logreg_breast_cancer"]:
        assert name in names


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_optimum(name):
    problem = registry.create_problem(name)
    assert isinstance(problem, TestFunction)
    f = problem.f
    for m in problem.minimizers:
        x = torch.tensor(m, dtype=torch.float64)
        assert float(f(x)) == pytest.approx(problem.f_star, abs=1e-9)
        if name not in NONSMOOTH:
            assert float(_autograd(f, x).norm()) < 1e-6, "the gradient vanishes at a minimiser"
        # no point of the start box is below the minimum
    gen = torch.Generator().manual_seed(0)
    low, high = torch.tensor(problem.start_low()), torch.tensor(problem.start_high())
    pts = low + (high - low) * torch.rand(2000, low.numel(), generator=gen, dtype=torch.float64)
    values = torch.stack([f(p) for p in pts[:300]])
    assert float(values.min()) >= problem.f_star - 1e-9
    metrics = problem.metrics(torch.tensor(problem.minimizers[0], dtype=torch.float64))
    assert metrics["gap"] == pytest.approx(0, abs=1e-9) and metrics["dist"] == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_gradient_matches_finite_difference(name):
    problem = registry.create_problem(name)
    gen = torch.Generator().manual_seed(1)
    low, high = torch.tensor(problem.start_low()), torch.tensor(problem.start_high())
    for _ in range(5):
        x = (low + (high - low) * torch.rand(low.numel(), generator=gen, dtype=torch.float64)).to(torch.float64)
        ga, gf = _autograd(problem.f, x), _fd_grad(problem.f, x)
        torch.testing.assert_close(ga, gf, rtol=1e-5, atol=1e-5 * (1 + float(gf.abs().max())))


def test_start_points_are_seeded_and_noise_is_seeded():
    p = registry.create_problem("rosenbrock", {"noise": 0.5})
    a, b, c = p.make(3), p.make(3), p.make(4)
    assert torch.equal(a.theta, b.theta) and not torch.equal(a.theta, c.theta)
    low, high = torch.tensor(p.start_low(), dtype=torch.float64), torch.tensor(p.start_high(), dtype=torch.float64)
    assert bool(((a.theta >= low) & (a.theta <= high)).all())
    import adamkit

    for inst in (a, b):
        opt = adamkit.create_optimizer("adam", inst.parameters(), lr=0.1)
        for step in range(5):
            inst.train_step(opt, step)
    assert torch.equal(a.theta, b.theta), "the same seed gives the same noisy run"


def test_adopt_counterexample_gradient_has_mean_one_and_projection():
    p = registry.create_problem("adopt_counterexample", {"k": 10, "beta2": 0.1})
    gen = torch.Generator().manual_seed(0)
    g = np.array([p.gradient(t, gen) for t in range(40000)])
    assert set(np.unique(g)) == {100.0, -10.0}
    assert g.mean() == pytest.approx(1.0, abs=0.15)  # k^2/k - k(1 - 1/k) = 1: f(θ) = θ in expectation
    assert p.optimizer_overrides("adam") == {"betas": (0.9, 0.1)}
    inst = p.make(0)
    import adamkit

    opt = adamkit.create_optimizer("adam", inst.parameters(), lr=5.0)
    for t in range(20):
        inst.train_step(opt, t)
        assert -1.0 <= float(inst.theta.detach()) <= 1.0
    assert inst.evaluate()["gap"] == pytest.approx(float(inst.theta.detach()) + 1)


def test_reddi_counterexample_gradient_pattern():
    p = registry.create_problem("reddi_counterexample", {"C": 3.0})
    assert [p.gradient(t, None) for t in range(6)] == [3.0, -1.0, -1.0, 3.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="C must be > 2"):
        registry.create_problem("reddi_counterexample", {"C": 2.0})


def test_quadratic_deep_spectrum_optimum_and_gradient():
    p = registry.create_problem("quadratic_deep")
    lam = torch.linalg.eigvalsh(p.hessian())
    assert int((lam <= 1).sum()) == 90 and int(((lam >= 30) & (lam <= 60)).sum()) == 10
    torch.testing.assert_close(lam, torch.sort(p.eigenvalues()).values)
    inst = p.make(0)
    assert inst.evaluate()["gap"] > 10
    with torch.no_grad():
        inst.theta.zero_()
    assert inst.evaluate()["gap"] == 0.0
    H = p.hessian()
    f = lambda t: 0.5 * t @ (H @ t)  # noqa: E731
    x = torch.randn(100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_autograd(f, x), _fd_grad(f, x), rtol=1e-6, atol=1e-6)


def test_logreg_exact_optimum_and_gradient():
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    p = registry.create_problem("logreg_breast_cancer")
    inst = p.make(0)
    assert inst.evaluate()["gap"] > 0.1
    # at θ* the gradient of the training objective vanishes and the gap is zero
    with torch.no_grad():
        inst.w.copy_(inst.theta_star[:-1])
        inst.b.copy_(inst.theta_star[-1:])
    inst.w.grad = inst.b.grad = None
    inst.objective(inst.xtr, inst.ytr).backward()
    assert float(torch.cat([inst.w.grad, inst.b.grad]).abs().max()) < 1e-12
    assert inst.evaluate()["gap"] == pytest.approx(0, abs=1e-14)
    assert inst.evaluate()["val_accuracy"] > 0.9
    # the objective's autograd gradient agrees with a finite difference at a random point
    theta0 = torch.randn(31, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.3

    def f(t):
        z = inst.xtr @ t[:-1] + t[-1]
        return torch.nn.functional.binary_cross_entropy_with_logits(z, inst.ytr) + 0.5 * p.l2 * (t @ t)

    torch.testing.assert_close(_autograd(f, theta0), _fd_grad(f, theta0), rtol=1e-6, atol=1e-8)
    # and no point is below the optimum
    for _ in range(5):
        t = torch.randn(31, dtype=torch.float64) * 0.1 + inst.theta_star
        assert float(f(t)) >= inst.f_star - 1e-15


def test_bad_problem_settings_raise():
    with pytest.raises(ValueError, match="noise"):
        registry.create_problem("beale", {"noise": -1})
    with pytest.raises(ValueError, match="unexpected keyword"):
        registry.create_problem("beale", {"nosie": 1})
    with pytest.raises(ValueError, match="unknown problem"):
        registry.create_problem("no_such_problem")
