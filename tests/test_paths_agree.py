"""Every implementation path agrees with the loop on random shapes and hyperparameters (property-based)."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_paths import paths
from optimizer_table import OPTIMIZERS

PATHS = list(paths().values())

shapes = st.lists(st.lists(st.integers(0, 5), min_size=0, max_size=3).map(tuple), min_size=1, max_size=4)


@st.composite
def configurations(draw):
    info = draw(st.sampled_from(OPTIMIZERS))
    variant = dict(draw(st.sampled_from(info.variants)))
    hyper = {
        "lr": 10 ** draw(st.floats(-4, -0.5)),
        "betas": (draw(st.floats(0.0, 0.99)), draw(st.floats(0.5, 0.9999))),
        info.eps_name: 10 ** draw(st.floats(-16, -2)),
        "maximize": draw(st.booleans()),
    }
    if "weight_decay" in variant or draw(st.booleans()):
        hyper["weight_decay"] = draw(st.floats(0.0, 0.5))
    return info, {**hyper, **{k: v for k, v in variant.items() if k != "weight_decay"}}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configurations(), shapes, st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_every_path_agrees_with_the_loop_on_random_problems(config, shape_list, steps, seed):
    info, hyper = config
    g = torch.Generator().manual_seed(seed)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in shape_list]
    grads = [[torch.randn(s, generator=g, dtype=torch.float64) for s in shape_list] for _ in range(steps)]
    results = []
    for path in PATHS:
        params = [p.clone().requires_grad_() for p in start]
        opt = info.make(params, **path, **hyper)
        for step_grads in grads:
            for p, grad in zip(params, step_grads):
                p.grad = grad.clone()
            opt.step()
        results.append(params)
    for other in results[1:]:
        for x, y in zip(results[0], other):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-14, equal_nan=True)
