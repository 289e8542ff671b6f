"""Every golden case (tests/golden, plus $ADAMKIT_GOLDEN_DIR) replayed through every implementation path, float64, rtol 1e-10."""
from __future__ import annotations

import pytest
import torch

from optimizer_table import GOLDEN_DIR, golden_cases

from adamkit.kernels import BACKENDS, compiled

CASES = list(golden_cases())
#: every backend, by the options that choose it
PATHS = {name: dict(backend.options) for name, backend in BACKENDS.items()}


def _skip_unavailable(path, device="cpu"):
    """The fused CPU kernel needs a C compiler, the Triton backend triton (and its interpreter for CPU tensors);
    without them their cases are skipped, saying why."""
    if path == "triton":
        from adamkit.kernels.gpu import launch

        if not (launch.steps_cpu_tensors() if device == "cpu" else BACKENDS["triton"].available()):
            pytest.skip(f"the Triton backend does not step {device} tensors here (no triton, no GPU, or on CPU no "
                        "TRITON_INTERPRET=1)")
    if path == "fused":
        from adamkit.kernels.fused import build as fused_build

        try:
            fused_build.load()
        except fused_build.FusedKernelUnavailable as exc:
            pytest.skip(str(exc))


@pytest.fixture
def traced_compiled_path(monkeypatch):
    """The compiled path with the update traced by dynamo and AOT autograd (tensor scalars, one graph per flag
    set) but no code generation, so that every case stays cheap; inductor itself is in tests/kernels/test_compiled.py."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()  # each case's shapes are new graphs: keep within the recompile budget
    yield
    torch._dynamo.reset()


def replay(info, case, path_kwargs, dtype=torch.float64, device="cpu"):
    names = case["param_order"]
    params = [
        torch.tensor(case["params"][n]["initial"], dtype=dtype).reshape(case["params"][n]["shape"]).to(device)
        for n in names
    ]
    opt = info.make(params, **info.translate(case["hyperparameters"]), **path_kwargs)
    results = {}
    for rec in case["steps"]:
        for n, p in zip(names, params):
            p.grad = torch.tensor(rec["grads"][n], dtype=dtype).reshape(p.shape).to(device)
        opt.step()
        key = str(rec["step"])
        if key in case["expected"]:
            results[key] = {n: p.detach().cpu().clone() for n, p in zip(names, params)}
    return results, opt


def test_golden_files_present():
    assert CASES, f"no golden cases found under {GOLDEN_DIR} (tests/golden ships with the repository)"
    assert {info.name for info, _, _ in CASES} >= {"adam", "adamw", "amsgrad", "eadam", "adabelief", "adopt", "agd"}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "info,doc,case", CASES, ids=[f"{info.name}-{case['name']}" for info, _, case in CASES]
)
def test_golden_replay(info, doc, case, path, request):
    _skip_unavailable(path)
    if path == "compiled":
        request.getfixturevalue("traced_compiled_path")
    results, _ = replay(info, case, PATHS[path])
    if path == "compiled":
        from torch._dynamo.utils import counters

        assert counters["stats"]["unique_graphs"] >= 1  # the update really went through torch.compile
    tol = doc["tolerance"]
    for key, per_param in case["expected"].items():
        for name, ref in per_param.items():
            got = results[key][name].reshape(-1)
            ref = torch.tensor(ref, dtype=torch.float64)
            assert torch.allclose(got, ref, rtol=tol["rtol"], atol=tol["atol"]), (
                f"{info.name}/{case['name']} step {key} {name}: max rel err "
                f"{((got - ref).abs() / ref.abs().clamp_min(1e-300)).max().item():.3e}"
            )


def _kernel_variants() -> list[str]:
    """The instruction-set builds of the fused kernel this CPU runs (none without the kernel)."""
    from adamkit.kernels.fused import build as fused_build

    try:
        return fused_build.runnable_variants()
    except fused_build.FusedKernelUnavailable:
        return []


@pytest.mark.parametrize(
    "info,doc,case", CASES, ids=[f"{info.name}-{case['name']}" for info, _, case in CASES]
)
def test_golden_replay_on_every_kernel_variant(info, doc, case):
    """Every build of the fused kernel this CPU runs (baseline x86-64, AVX2, AVX-512: cpu_variants) replays every
    case to the references' tolerance, and bit for bit as the others."""
    from adamkit.kernels.fused import build as fused_build

    variants = _kernel_variants()
    if not variants:
        _skip_unavailable("fused")
    results = {}
    for variant in variants:
        with fused_build.using(variant):
            results[variant], _ = replay(info, case, PATHS["fused"])
    tol = doc["tolerance"]
    for key, per_param in case["expected"].items():
        for name, ref in per_param.items():
            ref = torch.tensor(ref, dtype=torch.float64)
            for variant in variants:
                got = results[variant][key][name].reshape(-1)
                assert torch.allclose(got, ref, rtol=tol["rtol"], atol=tol["atol"]), (variant, key, name)
                first = results[variants[0]][key][name].reshape(-1)
                assert torch.equal(got.view(torch.int64), first.view(torch.int64)), (
                    f"{info.name}/{case['name']} step {key} {name}: the {variant} build differs from the "
                    f"{variants[0]} build")


@pytest.mark.parametrize(
    "info,doc,case", CASES, ids=[f"{info.name}-{case['name']}" for info, _, case in CASES]
)
def test_golden_final_state(info, doc, case):
    """The state tensors, under their upstream names, match the reference's final state too."""
    _, opt = replay(info, case, PATHS["loop"])
    for name, p in zip(case["param_order"], [g for group in opt.param_groups for g in group["params"]]):
        state = opt.state[p]
        for key, ref in case["final_state"][name].items():
            if key == "step":
                assert state["step"] == int(ref if not isinstance(ref, list) else ref[0]), key
                continue
            got = state[key].reshape(-1)
            ref = torch.tensor(ref, dtype=torch.float64)
            assert torch.allclose(got, ref, rtol=1e-8, atol=1e-14), f"{info.name}/{case['name']} {name}.{key}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("path", ["loop", "foreach", "compiled", "triton"])
@pytest.mark.parametrize(
    "info,doc,case", CASES, ids=[f"{info.name}-{case['name']}" for info, _, case in CASES]
)
def test_golden_replay_cuda(info, doc, case, path):  # pragma: no cover - needs a GPU
    """float64 on CUDA: the loop, the multi-tensor path, the compiled one (``fused=True`` on CUDA, inductor
    included) and the Triton kernel (scripts/gpu_check.sh runs these on a GPU)."""
    _skip_unavailable(path, "cuda")
    torch._dynamo.reset()
    options = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "compiled": {"fused": True},
               "triton": {"fused": "triton"}}[path]
    results, _ = replay(info, case, options, device="cuda")
    tol = doc["tolerance"]
    for key, per_param in case["expected"].items():
        for name, ref in per_param.items():
            got = results[key][name].reshape(-1)
            assert torch.allclose(got, torch.tensor(ref, dtype=torch.float64), rtol=tol["rtol"], atol=tol["atol"])
