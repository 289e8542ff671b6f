"""The compiled path (fused="compiled"; fused=True on CUDA): same math as the reference, one graph per run."""
from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels import compiled, implementation_of
from adamkit.kernels.fused import FUSED
from optimizer_table import BY_NAME, OPTIMIZERS

VARIANTS = [
    pytest.param(info, variant, id=f"{info.name}-{i}") for info in OPTIMIZERS for i, variant in enumerate(info.variants)
]


def _run(info, variant, path, dtype=torch.float64, steps=8, maximize=False):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in [(3, 4), (5,), (0,)]]
    opt = info.make(params, **variant, **path, maximize=maximize)
    sched = torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
        opt.step()
        sched.step()
    return params


@pytest.mark.parametrize("info,variant", VARIANTS)
def test_compiled_rules_match_the_reference(info, variant, monkeypatch):
    """The tensor-scalar rules of the compiled path, run eagerly (no compile time), match every branch."""
    monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)
    ref = _run(info, variant, dict(foreach=False), maximize=True)
    got = _run(info, variant, dict(fused="compiled"), maximize=True)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.complex64])
def test_compiled_rules_low_precision_and_complex(dtype, monkeypatch):
    monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)
    info = BY_NAME["adamw"]
    ref = _run(info, {}, dict(foreach=False), dtype=dtype)
    got = _run(info, {}, dict(fused="compiled"), dtype=dtype)
    for a, b in zip(got, ref):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1.6e-2 if dtype == torch.bfloat16 else 1e-5, atol=1e-5)


def test_one_graph_across_steps_under_a_scheduler():
    """torch.compile traces the step once: 10 steps with a changing learning rate never recompile."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    twin.load_state_dict(model.state_dict())
    opt = adamkit.AdamW(model.parameters(), lr=0.05, fused="compiled")
    ref = adamkit.AdamW(twin.parameters(), lr=0.05, foreach=False)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1.0 / (1 + t)) for o in (opt, ref)]
    for _ in range(10):
        x = torch.randn(8, 4)
        for m, o, s in zip((model, twin), (opt, ref), scheds):
            m(x).square().mean().backward()
            o.step()
            o.zero_grad()
            s.step()
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    assert opt.param_groups[0]["lr"] != 0.05  # the schedule really changed the learning rate
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_true_on_cpu_is_not_the_compiled_path():
    p = torch.randn(3)
    p.grad = torch.randn(3)
    opt = adamkit.Adam([p], fused="compiled")
    assert implementation_of(opt, opt.param_groups[0], [p]) == "compiled"
    opt2 = adamkit.Adam([p], fused=True)
    assert implementation_of(opt2, opt2.param_groups[0], [p]) == "fused"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_fused_is_compiled_and_matches():  # pragma: no cover - needs a GPU
    info = BY_NAME["adamw"]
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in [(64, 32), (32,)]]
    gpu = [t.cuda() for t in init]
    cpu = [t.clone() for t in init]
    opt = info.make(gpu, fused=True)
    assert implementation_of(opt, opt.param_groups[0], gpu) == "compiled"
    ref = info.make(cpu, foreach=False)
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=gen) for t in init]
        for p, g in zip(gpu, grads):
            p.grad = g.cuda()
        for p, g in zip(cpu, grads):
            p.grad = g
        opt.step()
        ref.step()
    for a, b in zip(gpu, cpu):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)


def _recipe(info, variant, compile_step, steps=6):
    """torch's compile recipe: a tensor lr, a schedule, ``torch.compile(lambda: opt.step())``."""
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in [(3, 2), (4,)]]
    opt = info.make(params, lr=torch.tensor(0.01, dtype=torch.float64), **variant)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    step = torch.compile(lambda: opt.step(), backend="eager") if compile_step else opt.step
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        step()
        sched.step()
    return params, opt


@pytest.mark.parametrize("info", OPTIMIZERS, ids=[info.name for info in OPTIMIZERS])
def test_torch_compile_recipe_builds_at_most_two_graphs_and_matches_eager(info, monkeypatch):
    """Flags choose the graph, scalars are tensors: 6 scheduled steps build one graph per flag set (≤ 2)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")  # graphs are traced and counted, no code generated
    for variant in ({"foreach": False}, {"foreach": True}):
        torch._dynamo.reset()
        counters.clear()
        got, opt = _recipe(info, variant, compile_step=True)
        graphs = counters["stats"]["unique_graphs"]
        assert 1 <= graphs <= 2, dict(counters["stats"])
        ref, _ = _recipe(info, {"foreach": False}, compile_step=False)
        assert float(opt.param_groups[0]["lr"]) < 0.01 / 5  # the schedule ran
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_torch_compile_recipe_with_inductor():
    """The same recipe compiled for real (ADOPT: an initialising graph, then one graph for every later step)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    info = BY_NAME["adopt"]
    got, _ = _recipe(info, {"foreach": False}, compile_step=True, steps=8)
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    ref, _ = _recipe(info, {"foreach": False}, compile_step=False, steps=8)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_torch_compile_recipe_keeps_the_fused_kernel_on_cpu():
    """The default CPU path under torch.compile is still the C kernel: no graph, the same numbers as eager."""
    from adamkit.kernels.fused import build as fused_build
    from torch._dynamo.utils import counters

    if not fused_build.available():
        pytest.skip("the fused CPU kernel is unavailable here")
    torch._dynamo.reset()
    counters.clear()
    info = BY_NAME["agd"]
    got, opt = _recipe(info, {}, compile_step=True)
    assert counters["stats"]["unique_graphs"] == 0
    assert FUSED.kept(opt, opt.param_groups[0]) is not None  # the kernel's pointer table was used
    ref, _ = _recipe(info, {}, compile_step=False)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
