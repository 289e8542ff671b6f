"""The fused CPU kernel (adamkit.kernels.fused): agreement with the reference path, layouts, selection, errors.

The golden replay of every case on the fused path is in test_golden.py.
"""
from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels import implementation_of
from adamkit.kernels.fused import build as fused_build
from optimizer_table import BY_NAME, OPTIMIZERS

try:
    fused_build.load()
    _UNAVAILABLE = None
except fused_build.FusedKernelUnavailable as exc:  # no C compiler here
    _UNAVAILABLE = str(exc)

needs_kernel = pytest.mark.skipif(_UNAVAILABLE is not None, reason=f"{_UNAVAILABLE}")

# float32 math for float32/float16/bfloat16: a few ulps of the stored type after several steps
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-14),
    torch.float32: dict(rtol=2e-5, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=1e-4),  # one float16 ulp of a rounding flip
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-3),  # one bfloat16 ulp
}

VARIANTS = [
    pytest.param(info, variant, id=f"{info.name}-{i}")
    for info in OPTIMIZERS
    for i, variant in enumerate(info.variants)
]


def _run(info, variant, path, dtype, shapes, steps=7, seed=0, maximize=False, lr_decay=False):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    opt = info.make(params, **variant, **path, maximize=maximize)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2, 0.5) if lr_decay else None
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(dtype)
        opt.step()
        if sched:
            sched.step()
    return params, opt


def _assert_close(a, b, dtype, what):
    tol = TOLERANCES[dtype]
    for x, y in zip(a, b):
        assert x.dtype == y.dtype
        torch.testing.assert_close(x.double(), y.double(), **tol, msg=lambda m: f"{what}: {m}")


SHAPES = [(3, 5), (0,), (1,), (40_000,), (17, 33), (2, 2, 2)]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16],
                         ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("info,variant", VARIANTS)
def test_fused_agrees_with_loop(info, variant, dtype):
    """Every branch of every algorithm, every dtype: the fused kernel matches the per-tensor reference."""
    maximize = dtype == torch.float32  # maximize on one dtype keeps the run short
    ref, ref_opt = _run(info, variant, dict(foreach=False), dtype, SHAPES, maximize=maximize, lr_decay=True)
    got, got_opt = _run(info, variant, dict(fused=True), dtype, SHAPES, maximize=maximize, lr_decay=True)
    _assert_close(got, ref, dtype, f"{info.name} {variant} params")
    for pr, pg in zip(ref, got):
        sr, sg = ref_opt.state[pr], got_opt.state[pg]
        assert sr.keys() == sg.keys() and sr["step"] == sg["step"]
        for key in sr:
            if key != "step":
                assert sg[key].dtype == sr[key].dtype
                # states of half parameters are float32 computed from the same float32 math
                _assert_close([sg[key]], [sr[key]], torch.float64 if dtype == torch.float64 else torch.float32,
                              f"{info.name} {variant} state {key}")


@needs_kernel
def test_fused_float64_is_exact_enough_over_many_steps():
    """float64 math in float64: 200 steps agree with the loop path to 1e-12 for every algorithm."""
    for info in OPTIMIZERS:
        ref, _ = _run(info, {}, dict(foreach=False), torch.float64, [(64,), (5, 7)], steps=200)
        got, _ = _run(info, {}, dict(fused=True), torch.float64, [(64,), (5, 7)], steps=200)
        _assert_close(got, ref, torch.float64, info.name)


@needs_kernel
def test_many_random_shapes_cross_thread_boundaries():
    """Hundreds of tensors, empty ones included, split over threads mid-tensor: same result as the loop."""
    gen = torch.Generator().manual_seed(3)
    sizes = torch.randint(0, 5000, (120,), generator=gen).tolist() + [0, 0, 100_001, 1, 70_000]
    shapes = [(n,) if i % 3 else (1, n) for i, n in enumerate(sizes)]
    threads = torch.get_num_threads()
    try:
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            for info in (BY_NAME["adam"], BY_NAME["adabelief"], BY_NAME["agd"]):
                ref, _ = _run(info, {}, dict(foreach=False), torch.float32, shapes, steps=3)
                got, _ = _run(info, {}, dict(fused=True), torch.float32, shapes, steps=3)
                _assert_close(got, ref, torch.float32, f"{info.name} {nt} threads")
    finally:
        torch.set_num_threads(threads)


def _layouts():
    """(name, make(gen) -> tensor) for parameters of unusual memory layouts."""
    return [
        ("transposed", lambda g: torch.randn(6, 9, generator=g).t()),
        ("channels_last", lambda g: torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last)),
        ("strided_view", lambda g: torch.randn(8, 10, generator=g)[:, ::2]),  # gaps: not dense
        ("expanded_rows", lambda g: torch.randn(5, 1, generator=g).expand(5, 1).clone()[::2]),
    ]


@needs_kernel
@pytest.mark.parametrize("layout", [name for name, _ in _layouts()])
@pytest.mark.parametrize("info", [BY_NAME["adam"], BY_NAME["adabelief"], BY_NAME["agd"]], ids=lambda i: i.name)
def test_non_contiguous_tensors(info, layout):
    """Non-contiguous parameters and gradients are stepped in place, like the reference path does."""
    make = dict(_layouts())[layout]
    results = []
    for path in (dict(foreach=False), dict(fused=True)):
        gen = torch.Generator().manual_seed(5)
        p = make(gen)
        storage_before = p.data_ptr()
        opt = info.make([p], **path)
        for _ in range(4):
            p.grad = torch.randn(p.shape[::-1], generator=gen).t() if p.dim() == 2 else torch.randn(p.shape, generator=gen)
            opt.step()
        assert p.data_ptr() == storage_before
        results.append((p, opt.state[p]))
    (p_ref, s_ref), (p_got, s_got) = results
    assert p_got.stride() == p_ref.stride()
    _assert_close([p_got], [p_ref], torch.float32, layout)
    assert s_got.keys() == s_ref.keys()
    for key in (k for k in s_ref if k != "step"):
        assert s_got[key].stride() == s_ref[key].stride()
        _assert_close([s_got[key]], [s_ref[key]], torch.float32, f"{layout} {key}")


@needs_kernel
def test_strided_view_leaves_the_gaps_alone():
    base = torch.randn(8, 10)
    before = base.clone()
    p = base[:, ::2]
    p.grad = torch.ones_like(p)
    adamkit.Adam([p], fused=True, lr=0.1).step()
    assert torch.equal(base[:, 1::2], before[:, 1::2])
    assert torch.allclose(base[:, ::2], before[:, ::2] - 0.1, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=["complex64", "complex128"])
def test_complex_parameters(dtype):
    real = torch.float32 if dtype == torch.complex64 else torch.float64
    for info in OPTIMIZERS:
        ref, _ = _run(info, {}, dict(foreach=False), dtype, [(4, 3), (7,)])
        got, _ = _run(info, {}, dict(fused=True), dtype, [(4, 3), (7,)])
        _assert_close([torch.view_as_real(t) for t in got], [torch.view_as_real(t) for t in ref], real, info.name)


@needs_kernel
def test_grad_is_not_written_and_nan_propagates():
    p = torch.tensor([1.0, 2.0, 3.0])
    g = torch.tensor([0.5, float("nan"), -1.0])
    p.grad = g
    kept = g.clone()
    adamkit.AMSGrad([p], fused=True).step()
    assert torch.equal(g, kept) or (torch.isnan(g) == torch.isnan(kept)).all()
    assert torch.isnan(p[1]) and torch.isfinite(p[0]) and torch.isfinite(p[2])


@needs_kernel
def test_default_on_cpu_is_the_fused_kernel():
    for info in OPTIMIZERS:
        p = torch.randn(3, requires_grad=True)
        p.grad = torch.randn(3)
        opt = info.make([p])
        group = opt.param_groups[0]
        assert group["fused"] is None and group["foreach"] is None
        assert implementation_of(opt, group, [p]) == "fused", info.name
        assert implementation_of(opt, {**group, "foreach": False}, [p]) == "loop"
        assert implementation_of(opt, {**group, "fused": False}, [p]) == "loop"
        assert implementation_of(opt, {**group, "foreach": True}, [p]) == "foreach"


def test_default_falls_back_to_loop_and_explicit_fused_raises(monkeypatch):
    monkeypatch.setenv("ADAMKIT_DISABLE_FUSED", "1")
    p = torch.randn(4)
    p.grad = torch.randn(4)
    opt = adamkit.AdamW([p])
    assert implementation_of(opt, opt.param_groups[0], [p]) == "loop"
    before = p.clone()
    opt.step()  # the default path still works
    assert not torch.equal(p, before)
    with pytest.raises(fused_build.FusedKernelUnavailable, match="ADAMKIT_DISABLE_FUSED"):
        adamkit.AdamW([p], fused=True).step()


def test_no_compiler_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_build._kernel, "value", None)
    monkeypatch.setattr(fused_build._kernel, "error", None)
    monkeypatch.setattr(fused_build, "_opened", {})
    monkeypatch.setattr(fused_build, "_compiler", lambda: None)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(tmp_path))
    assert not fused_build.available()
    p = torch.randn(4)
    p.grad = torch.randn(4)
    with pytest.raises(fused_build.FusedKernelUnavailable, match="no C compiler found"):
        adamkit.Adam([p], fused=True).step()
    opt = adamkit.Adam([p])
    opt.step()  # default: the loop
    assert implementation_of(opt, opt.param_groups[0], [p]) == "loop"


def test_a_failing_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_build._kernel, "value", None)
    monkeypatch.setattr(fused_build._kernel, "error", None)
    monkeypatch.setattr(fused_build, "_opened", {})
    monkeypatch.setattr(fused_build, "_compiler", lambda: "/bin/false")
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(tmp_path))
    with pytest.raises(fused_build.FusedKernelUnavailable, match="compiler failed"):
        fused_build.load()
    assert list(tmp_path.iterdir()) == []  # no half-written library left behind


@needs_kernel
def test_foreign_state_dtype_explicit_raises_default_behaves_like_the_loop():
    """State of another dtype: every path refuses it before writing anything, naming the state and the dtype the
    parameter needs (the engine checks the state's dtypes before any backend runs)."""
    for kwargs in (dict(fused=True), dict(foreach=False), {}):
        p = torch.randn(5)
        p.grad = torch.randn(5)
        opt = adamkit.Adam([p], **kwargs)
        opt.step()
        opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].double()  # e.g. from a foreign checkpoint
        before = p.clone()
        with pytest.raises(RuntimeError, match="'exp_avg' of parameter 0 .*float64; the parameter needs .*float32"):
            opt.step()
        assert torch.equal(p, before)


def test_fused_flag_values_are_checked():
    p = torch.randn(2)
    with pytest.raises(ValueError, match="compiled"):
        adamkit.Adam([p], fused="yes")
    with pytest.raises(TypeError):
        adamkit.Adam([p], fused=1)
    with pytest.raises(ValueError, match="cannot both"):
        adamkit.Adam([p], fused=True, foreach=True)


@needs_kernel
def test_kernel_is_cached_by_source_hash():
    lib_path = fused_build._build(fused_build._compiler(), fused_build.loaded_build().variant)  # found, not rebuilt
    assert lib_path.exists() and lib_path.parent == fused_build.cache_dir()
    assert lib_path.name.startswith("fused_cpu-")


def test_cache_prune_removes_only_stale_builds_and_leftovers(tmp_path):
    import os
    import time

    day = 24 * 3600
    old = time.time() - 40 * day

    def make(name, mtime):
        path = tmp_path / name
        path.write_bytes(b"\0")
        os.utime(path, (mtime, mtime))
        return path

    stale = make("fused_cpu-aaaa.so", old)
    kept = make("fused_cpu-bbbb.so", old)  # the build being made: never removed
    recent = make("fused_cpu-cccc.so", time.time() - 2 * day)  # another version's build in use lately
    leftover = make("tmpx1y2.so", time.time() - 2 * day)  # a killed build's output
    fresh_tmp = make("tmpz9.so", time.time())  # a build in progress right now
    other = make("notes.txt", old)
    removed = fused_build.prune_cache(tmp_path, keep=kept)
    assert sorted(removed) == sorted([stale, leftover])
    assert all(p.exists() for p in (kept, recent, fresh_tmp, other)) and not stale.exists()


@needs_kernel
def test_loading_a_cached_build_marks_it_used():
    import os

    variant = fused_build.loaded_build().variant
    lib_path = fused_build._build(fused_build._compiler(), variant)
    os.utime(lib_path, (1, 1))
    assert fused_build._build(fused_build._compiler(), variant) == lib_path
    assert lib_path.stat().st_mtime > 1e9
