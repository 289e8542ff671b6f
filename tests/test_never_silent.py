"""Issue 14, the optimizer side beyond checkpoints: bad values, wrong shapes, overflowing thresholds, fallbacks."""
from __future__ import annotations

import math

import pytest
import torch

import adamkit
from adamkit.kernels import implementation_of
from adamkit.kernels.fused import build as fused_build
from backend_paths import paths
from optimizer_table import BY_NAME, OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]
NAN, INF = float("nan"), float("inf")


def make_params(shapes=((4, 3), (5,))):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


# ------------------------------------------------------------------ item 15
def _bad_values(info):
    eps = info.eps_name
    yield "lr", NAN, r"lr must be a finite number >= 0, got nan"
    yield "lr", INF, r"lr must be a finite number >= 0, got inf"
    yield "lr", torch.tensor(NAN), r"lr must be a finite number >= 0"
    yield eps, NAN, rf"{eps} must be a finite number >= 0, got nan"
    yield eps, INF, rf"{eps} must be a finite number >= 0, got inf"
    yield "weight_decay", NAN, r"weight_decay must be a finite number >= 0, got nan"
    yield "betas", (NAN, 0.999), r"betas\[0\] must be in \[0, 1\), got nan"
    yield "betas", (0.9, NAN), r"betas\[1\] must be in \[0, 1\), got nan"
    yield "betas", (0.9, INF), r"betas\[1\] must be in \[0, 1\), got inf"


BAD_VALUES = [pytest.param(info, arg, value, match, id=f"{info.name}-{arg}={value!r}")
              for info in OPTIMIZERS for arg, value, match in _bad_values(info)]
BAD_VALUES += [
    pytest.param(BY_NAME["agd"], "clip", NAN, r"clip must be a finite number > 0, got nan", id="agd-clip=nan"),
    pytest.param(BY_NAME["agd"], "clip", INF, r"clip must be a finite number > 0, got inf", id="agd-clip=inf"),
    pytest.param(BY_NAME["adopt"], "clip_lambda", NAN, r"clip_lambda must be .*\[0, 16\]", id="adopt-clip=nan"),
    pytest.param(BY_NAME["adopt"], "clip_lambda", INF, r"clip_lambda must be .*\[0, 16\]", id="adopt-clip=inf"),
]


@pytest.mark.parametrize("info,arg,value,match", BAD_VALUES)
def test_nan_and_inf_hyperparameters_name_the_valid_range(info, arg, value, match):
    """Item 15: NaN (and inf where invalid) get the message with the valid range, like other bad values."""
    with pytest.raises(ValueError, match=match):
        info.make(make_params(), **{arg: value})
    opt = info.make(make_params())
    with pytest.raises(ValueError, match=match):  # a param group, checked like the constructor
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], arg: value})


# ------------------------------------------------------------------ item 10
@pytest.mark.parametrize("exponent", [400.0, 1e308, 16.5, -0.25, INF])
def test_adopt_clip_exponents_that_overflow_or_shrink_are_refused(exponent):
    """Item 10: t**400 overflows float64 at step 7 (1e308 at step 2); the valid range is named."""
    with pytest.raises(ValueError, match=r"clip_lambda must be None, an exponent p in \[0, 16\]"):
        adamkit.ADOPT(make_params(), clip_lambda=exponent)


def test_adopt_largest_exponent_steps():
    params = make_params()
    opt = adamkit.ADOPT(params, clip_lambda=16.0)
    for _ in range(8):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("schedule,match", [
    (lambda t: float(t) ** 400.0, r"clip_lambda\(6\) overflowed"),
    (lambda t: INF, r"threshold inf at step 1; it must be a finite number > 0"),
    (lambda t: NAN, r"threshold nan at step 1; it must be a finite number > 0"),
    (lambda t: torch.tensor(INF), r"threshold inf at step 1"),
    (lambda t: 0.0, r"threshold 0.0 at step 1"),
], ids=["overflow", "inf", "nan", "tensor-inf", "zero"])
@pytest.mark.parametrize("path", [dict(foreach=False), dict(foreach=True), {}], ids=["loop", "foreach", "default"])
def test_adopt_clip_callable_giving_no_finite_threshold_raises_clearly(schedule, match, path):
    """Item 10: a callable's inf/NaN/overflow is a ValueError naming the step, raised before anything is written."""
    params = make_params()
    opt = adamkit.ADOPT(params, clip_lambda=schedule, **path)
    with pytest.raises(ValueError, match=match):
        for _ in range(10):
            for p in params:
                p.grad = torch.ones_like(p)
            before = [p.detach().clone() for p in params]
            state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]
            opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    for p, s in zip(params, state):
        assert all(torch.equal(opt.state[p][k], v) for k, v in s.items())


# ------------------------------------------------------------------ items 4 and 6 (in the step)
PATHS = paths(default=True)


def _stepped(info, path, n=2):
    params = make_params()
    opt = info.make(params, lr=1e-2, weight_decay=0.1, **path)
    for _ in range(n):  # two steps: the default path has its cached pointer table by then
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    for p in params:
        p.grad = torch.randn_like(p)
    return params, opt


def _refused_without_writes(params, opt, match):
    before = [p.detach().clone() for p in params]
    state = [{k: v.clone() for k, v in opt.state[p].items() if torch.is_tensor(v)} for p in params]
    steps = [opt.state[p]["step"] for p in params]
    with pytest.raises(RuntimeError, match=match):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(params, before)), "a parameter was written before the error"
    for p, s in zip(params, state):
        assert all(torch.equal(opt.state[p][k], v) for k, v in s.items())
    assert [opt.state[p]["step"] for p in params] == steps


@pytest.mark.parametrize("shape", [(3, 4), (12,)], ids=["transposed", "flat"])
@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_state_of_another_shape_is_refused_on_every_path(info, path, shape):
    """Item 4: a (4, 3) parameter with a state of the same size and another shape; nothing written (item 6)."""
    params, opt = _stepped(info, PATHS[path])
    opt.state[params[0]]["exp_avg"] = opt.state[params[0]]["exp_avg"].reshape(shape).clone()
    _refused_without_writes(params, opt, rf"'exp_avg' of parameter 0 has shape {re_shape(shape)}")


@pytest.mark.parametrize("shape", [(3, 4), (12,), (3,)], ids=["transposed", "flat", "broadcastable"])
@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_gradient_of_another_shape_is_refused_on_every_path(info, path, shape):
    """Item 4: ``p.grad.data = ...`` goes around torch's shape check; every path, the cached table included."""
    params, opt = _stepped(info, PATHS[path])
    params[0].grad.data = torch.randn(shape, dtype=torch.float64)
    _refused_without_writes(params, opt, rf"gradient of parameter 0 has shape {re_shape(shape)}")


def test_adamw_does_not_decay_before_a_shape_error():
    """Item 6 as reported: AdamW's decoupled decay came before the moment update that met the wrong shape."""
    params, opt = _stepped(BY_NAME["adamw"], dict(foreach=False))
    opt.state[params[1]]["exp_avg_sq"] = torch.zeros(6, dtype=torch.float64)
    _refused_without_writes(params, opt, r"'exp_avg_sq' of parameter 1 has shape \(6,\)")


@pytest.mark.parametrize("path", ["loop", "foreach"])
def test_a_bad_tensor_in_a_later_group_raises_before_an_earlier_group_steps(path):
    """Item 6 across groups: the usual decay / no-decay split of AdamW, the second group's gradient is bad.

    (Not yet on the fused kernel's cached-table path: there each group's table checks its own gradients just
    before its launch, so an earlier group has stepped when a later one is refused.)
    """
    decay, no_decay = make_params(), make_params(((3,), (2, 2)))
    opt = adamkit.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, **PATHS[path])
    params = decay + no_decay
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    for p in params:
        p.grad = torch.randn_like(p)
    no_decay[1].grad.data = torch.randn(4, dtype=torch.float64)
    _refused_without_writes(params, opt, r"gradient of parameter 3 has shape \(4,\)")


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


# ------------------------------------------------------------------ item 14
def _fresh_kernel_state(monkeypatch, tmp_path):
    monkeypatch.setattr(fused_build._kernel, "value", None)
    monkeypatch.setattr(fused_build._kernel, "error", None)
    monkeypatch.setattr(fused_build, "_opened", {})
    monkeypatch.setattr(fused_build, "_warned_fallback", False)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ADAMKIT_DISABLE_FUSED", raising=False)


def _fallback_warnings(n_optimizers=3):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for info in OPTIMIZERS[:n_optimizers]:
            params = make_params()
            opt = info.make(params)
            for _ in range(2):
                for p in params:
                    p.grad = torch.randn_like(p)
                opt.step()
            assert implementation_of(opt, opt.param_groups[0], params) == "loop"
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "per-tensor loop" in str(w.message)]


def test_fallback_without_a_compiler_is_said_once(monkeypatch, tmp_path):
    """Item 14: the default path drops to the 2-12x slower loop: one warning per process, with the reason and fix."""
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setattr(fused_build, "_compiler", lambda: None)
    found = _fallback_warnings()
    assert len(found) == 1
    message = str(found[0].message)
    assert "no C compiler found" in message and "fused=False" in message and "slower" in message


def test_fallback_with_an_unwritable_cache_is_said_once(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(blocker / "cache"))
    found = _fallback_warnings()
    assert len(found) == 1 and "ADAMKIT_CACHE_DIR" in str(found[0].message) and "not writable" in str(
        found[0].message)


def test_fallback_with_a_failing_compiler_is_said_once(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setattr(fused_build, "_compiler", lambda: "/bin/false")
    found = _fallback_warnings()
    assert len(found) == 1 and "compiler failed" in str(found[0].message)


def test_no_warning_when_the_loop_is_chosen(monkeypatch, tmp_path):
    _fresh_kernel_state(monkeypatch, tmp_path)
    monkeypatch.setattr(fused_build, "_compiler", lambda: None)
    monkeypatch.setenv("ADAMKIT_DISABLE_FUSED", "1")
    assert _fallback_warnings(1) == []


# ------------------------------------------------------------------ item 7
STEP_SCRIPT = """
import sys, torch, adamkit
from adamkit.kernels import implementation_of
from adamkit.kernels.fused import build as fused_build
p = torch.randn(10, requires_grad=True)
p.grad = torch.randn(10)
opt = adamkit.Adam([p])
opt.step()
assert implementation_of(opt, opt.param_groups[0], [p]) == "fused", fused_build._kernel.error
print(fused_build.loaded_build().path)
"""


def _step_in_subprocess(cache):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "ADAMKIT_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(Path(adamkit.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    env.pop("ADAMKIT_DISABLE_FUSED", None)
    return subprocess.Popen([sys.executable, "-c", STEP_SCRIPT], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"exit status {proc.returncode} (negative: killed by a signal)\n{err[-2000:]}"
    from pathlib import Path

    return Path(out.strip().splitlines()[-1])


def _seeded_cache(tmp_path):
    """A cache holding this process's (recorded) builds, the one in use and the baseline that chooses it, so
    that a subprocess loads them without compiling; returns the cache and the build in use there."""
    import shutil

    from adamkit import _integrity

    cc = fused_build._compiler()
    source = fused_build._build(cc, fused_build.loaded_build().variant)
    cache = tmp_path / "cache"
    cache.mkdir()
    for variant in {fused_build.runnable_variants()[0], fused_build.loaded_build().variant}:
        built = fused_build._build(cc, variant)
        for path in (built, _integrity.record_path(built)):
            shutil.copy2(path, cache / path.name)
    return cache, cache / source.name


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(4096)


def _garbage(path):
    import random

    size = path.stat().st_size
    path.write_bytes(random.Random(0).randbytes(size))


@pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")
def test_a_cached_kernel_full_of_garbage_is_rebuilt_not_loaded(tmp_path, damage=_garbage):
    """Item 7: a cached .so overwritten with garbage (SIGSEGV in dlopen before) is caught by its record, rebuilt."""
    from adamkit import _integrity

    cache, built = _seeded_cache(tmp_path)
    assert _finish(_step_in_subprocess(cache)) == built
    assert _integrity.problem(built) is None
    good = built.read_bytes()
    damage(built)
    assert _integrity.problem(built) is not None
    assert _finish(_step_in_subprocess(cache)) == built  # stepped on the fused path, no signal
    assert _integrity.problem(built) is None and built.stat().st_size == len(good)


@pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")
def test_concurrent_processes_heal_a_truncated_kernel_together(tmp_path):
    """Item 7: a cached .so truncated to 4 KiB (SIGBUS before), met by two processes at once: each rebuilds
    it atomically and steps on the fused path, and one good, recorded build is left."""
    from adamkit import _integrity

    cache, built = _seeded_cache(tmp_path)
    _truncate(built)
    procs = [_step_in_subprocess(cache) for _ in range(2)]
    assert {_finish(p) for p in procs} == {built}
    assert _integrity.problem(built) is None
    assert built.name in {p.name for p in cache.iterdir()} and not list(cache.glob("tmp*"))
