"""The Triton backend (adamkit.kernels.gpu, ``fused="triton"``): generation, agreement with the loop, the codec.

On a machine without a GPU the kernels run on CPU tensors in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported); where a GPU is present they are compiled and run on CUDA
tensors instead (``DEVICE``). The golden replays of every case are in test_golden.py (path "triton").

Agreement with the loop: every op of ``update`` is computed as ATen computes it (the same order, one fused
multiply-add where ATen's CPU kernels use one), so the results are the loop's **bit for bit**, once the loop's
square root is IEEE's: torch's CPU ``sqrt`` is not correctly rounded (1 ulp off for about one float32 value in
six), while the kernel's is (``sqrt_rn``, as CUDA's). With torch's own sqrt the agreement is to 1 ulp after a
step.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import BACKENDS
from adamkit.kernels.gpu import Unsupported, kernel_source, launch, source, step_bucket, trace
from adamkit.core import state_format
from adamkit.core.declaration import Coefficients
from adamkit.registry import algorithm_classes
from optimizer_table import BY_NAME, OPTIMIZERS

AVAILABLE = BACKENDS["triton"].available()
pytestmark = [pytest.mark.skipif(not AVAILABLE, reason="no triton, or neither a GPU nor TRITON_INTERPRET=1"),
              # the interpreter's reductions over a block holding NaN (the format's NaN blocks) warn in numpy
              pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")]
DEVICE = "cpu" if AVAILABLE and launch.interpreting() else "cuda"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
#: ATen's CPU lerp/addcmul use a fused multiply-add on these builds (the kernel follows them)
VECTORISED = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")

SHAPES = [(3, 5), (1,), (300,), (2, 2, 2), (0,), (2, 300)]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bit patterns of a tensor (any NaN as one pattern), for exact comparisons."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    bits = t.detach().cpu().contiguous().view(view).long()
    return torch.where(t.detach().cpu().isnan(), -1, bits) if t.is_floating_point() else bits


def _ieee_sqrt(t):
    """sqrt rounded correctly (numpy's), for the loop path on CPU tensors."""
    return torch.from_numpy(np.asarray(np.sqrt(t.detach().numpy())))


def _loop_with_ieee_sqrt(monkeypatch, info, variant, path, *args, **kwargs):
    """The loop path (``path``) with a correctly rounded sqrt: the reference of the bit-for-bit comparisons."""
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "sqrt", _ieee_sqrt)
        return _run(info, variant, path, *args, **kwargs)


def _run(info, variant, path, dtype, shapes=SHAPES, steps=3, seed=0, state_dtype=torch.float32, device="cpu",
         maximize=False, schedule=False):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(device=device, dtype=dtype) for s in shapes]
    opt = info.make(params, **variant, **path, state_dtype=state_dtype, maximize=maximize)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5) if schedule else None
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        opt.step()
        if sched:
            sched.step()
    return params, opt


def _assert_same(ref, got, ref_opt, got_opt, what):
    for i, (x, y) in enumerate(zip(ref, got)):
        assert torch.equal(_bits(x), _bits(y)), f"{what}: parameter {i}"
        for key, value in ref_opt.state[x].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(_bits(value), _bits(got_opt.state[y][key])), f"{what}: state {key} of {i}"


VARIANTS = [pytest.param(info, variant, id=f"{info.name}-{i}")
            for info in OPTIMIZERS for i, variant in enumerate(info.variants)]
FIRST_VARIANTS = [pytest.param(info, info.variants[-1], id=info.name) for info in OPTIMIZERS]


# ---------------------------------------------------------------------------------------------- generation
@pytest.mark.parametrize("cls", algorithm_classes(), ids=lambda c: c.name)
def test_every_flag_set_of_every_optimizer_traces_and_generates(cls):
    """Every registered algorithm, every combination of its flags: update traces, and the source is Python."""
    names = tuple(cls.state_formats)
    for flags in trace.flag_sets(cls):
        for state in ("float32", "int8"):
            text = kernel_source(cls, flags, names, state=state)
            compile(text, "<generated>", "exec")
            assert f"def {cls.name}_step(args, scalars" in text


def test_an_unknown_op_fails_loudly_naming_it():
    class Exotic(adamkit.Adam):
        @staticmethod
        def update(param, grad, state, c):
            state["exp_avg"].exp_()

    flags = Exotic.Flags(False, False, False)
    with pytest.raises(trace.UnknownOp, match=r"Exotic\.update calls Tensor\.exp_"):
        kernel_source(Exotic, flags)


def test_a_value_used_for_a_python_decision_fails_loudly():
    class Branchy(adamkit.Adam):
        @staticmethod
        def update(param, grad, state, c):
            if c.scalars.beta1 > 0.5:
                param.mul_(2.0)

    with pytest.raises(trace.TraceError, match="flags only"):
        kernel_source(Branchy, Branchy.Flags(False, False, False))


def test_scalar_arithmetic_runs_on_the_host_in_double_precision():
    """``1 - β1`` is one slot of the kernel's scalar vector, computed in double precision as the loop does."""
    flags = adamkit.Adam.Flags(amsgrad=False, decoupled_decay=False, coupled_decay=False)
    tr = trace.trace(adamkit.Adam, flags, ("exp_avg", "exp_avg_sq"))
    described = [s.describe(tr.fields) for s in tr.scalars]
    assert "(1.0 - beta1)" in described and "beta1" not in described
    c = adamkit.Adam([torch.zeros(1)], betas=(0.1 + 0.2, 0.999)).coefficients(
        {"betas": (0.1 + 0.2, 0.999), "lr": 1e-3, "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
         "decoupled_weight_decay": False}, 0, None)
    assert tr.scalar_values(c.scalars)[described.index("(1.0 - beta1)")] == 1 - (0.1 + 0.2)


# ------------------------------------------------------------------------------------- agreement with the loop
@pytest.mark.skipif(DEVICE != "cpu" or not VECTORISED, reason="the loop's ATen kernels fuse multiply-adds on "
                    "AVX2/AVX512 CPU builds; compared bit for bit there")
@pytest.mark.parametrize("info,variant", VARIANTS)
def test_float32_parameters_agree_with_the_loop_bit_for_bit(info, variant, monkeypatch):
    """Every branch of every algorithm, maximize and a learning-rate schedule: the loop's bits."""
    ref, ref_opt = _loop_with_ieee_sqrt(monkeypatch, info, variant, dict(foreach=False), torch.float32,
                                        schedule=True, maximize=True)
    got, got_opt = _run(info, variant, dict(fused="triton"), torch.float32, schedule=True, maximize=True)
    _assert_same(ref, got, ref_opt, got_opt, f"{info.name} {variant}")


@pytest.mark.skipif(DEVICE != "cpu" or not VECTORISED, reason="bit for bit against the CPU loop (see above)")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("info,variant", FIRST_VARIANTS)
def test_half_and_double_parameters_agree_with_the_loop_bit_for_bit(info, variant, dtype, monkeypatch):
    """float32 math for half parameters, written back rounded to nearest even; float64 math for float64."""
    ref, ref_opt = _loop_with_ieee_sqrt(monkeypatch, info, variant, dict(foreach=False), dtype)
    got, got_opt = _run(info, variant, dict(fused="triton"), dtype)
    _assert_same(ref, got, ref_opt, got_opt, f"{info.name} {dtype}")


@pytest.mark.skipif(DEVICE != "cpu", reason="against the CPU loop")
@pytest.mark.parametrize("info,variant", FIRST_VARIANTS)
def test_with_torchs_own_sqrt_one_step_agrees_to_one_ulp(info, variant):
    ref, _ = _run(info, variant, dict(foreach=False), torch.float32, steps=1)
    got, _ = _run(info, variant, dict(fused="triton"), torch.float32, steps=1)
    for x, y in zip(ref, got):
        assert x.numel() == 0 or int((_bits(x) - _bits(y)).abs().max()) <= 1


STORED = [pytest.param(BY_NAME[name], variant, id=f"{name}-{i}") for i, (name, variant) in enumerate([
    ("amsgrad", {"weight_decay": 0.1}),  # signed, unsigned and upper kinds
    ("adabelief", {"amsgrad": True}),
    ("adopt", {}),  # the first call re-encodes an untouched m
    ("agd", {"win": True, "win_z_init": "params"}),
    ("eadam", {}),
])]


@pytest.mark.skipif(DEVICE != "cpu" or not VECTORISED, reason="bit for bit against the CPU loop (see above)")
@pytest.mark.parametrize("state_dtype", [torch.bfloat16, "int8"], ids=str)
@pytest.mark.parametrize("info,variant", STORED)
def test_low_precision_state_agrees_with_the_loop_bit_for_bit(info, variant, state_dtype, monkeypatch):
    """Decode, update and encode in one pass: the loop's codes, scales and parameters, bit for bit (rows of 300:
    a short last block; vectors: bfloat16 state in int8 mode)."""
    shapes = [(3, 300), (5,), (2, 2, 2), (4, 1, 3, 3)]
    ref, ref_opt = _loop_with_ieee_sqrt(monkeypatch, info, variant, dict(foreach=False), torch.float32, shapes,
                                        state_dtype=state_dtype)
    got, got_opt = _run(info, variant, dict(fused="triton"), torch.float32, shapes, state_dtype=state_dtype)
    _assert_same(ref, got, ref_opt, got_opt, f"{info.name} {state_dtype}")


# ---------------------------------------------------------------------------------------------- one launch
class _Counting:
    def __init__(self, function, launches):
        self.function, self.launches = function, launches

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.launches.append((grid, {k: v for k, v in kwargs.items()}))
            return self.function[grid](*args, **kwargs)
        return run


@pytest.fixture
def launches(monkeypatch):
    """Every launch of a Triton kernel: (grid, keyword arguments)."""
    calls = []
    build = source.kernel
    monkeypatch.setattr(launch.source, "kernel", lambda spec: build(spec)._replace(
        function=_Counting(build(spec).function, calls)))
    return calls


def test_tensors_of_many_sizes_step_in_one_launch(launches, monkeypatch):
    shapes = [(0,), (1,), (1023,), (1024,), (1025,), (3000,), (7, 11), ()]
    info = BY_NAME["adamw"]
    ref, ref_opt = _loop_with_ieee_sqrt(monkeypatch, info, {}, dict(foreach=False), torch.float32, shapes, steps=2,
                                        device=DEVICE)
    got, got_opt = _run(info, {}, dict(fused="triton"), torch.float32, shapes, steps=2, device=DEVICE)
    assert len(launches) == 2  # one per step for the whole bucket
    tiles = sum(math.ceil(math.prod(s) / source.BLOCK) for s in shapes)
    assert launches[0][0] == (tiles,)
    if DEVICE == "cpu" and VECTORISED:
        _assert_same(ref, got, ref_opt, got_opt, "many sizes")


def test_a_new_learning_rate_or_step_builds_no_kernel_and_reads_no_device_value(launches, monkeypatch):
    """The step's numbers are data: one kernel for the run, the same launch arguments every step, no .item()."""
    params = [torch.randn(4, 5, device=DEVICE), torch.randn(6, device=DEVICE)]
    opt = adamkit.AdamW(params, fused="triton", state_dtype="int8")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    before = len(source.KERNELS)
    for step in range(4):
        for p in params:
            p.grad = torch.randn_like(p)
        if step == 1:
            monkeypatch.setattr(torch.Tensor, "item", _forbidden)
            monkeypatch.setattr(torch.Tensor, "tolist", _forbidden)
            if DEVICE == "cuda":
                monkeypatch.setattr(torch.cuda, "synchronize", _forbidden)
        opt.step()
        sched.step()
    assert len(source.KERNELS) - before <= 2  # the int8 matrix and the bfloat16 vector, built at the first step
    per_step = [launches[i:i + 2] for i in range(0, len(launches), 2)]
    assert len(per_step) == 4 and all(step == per_step[0] for step in per_step)
    if DEVICE == "cuda":  # pragma: no cover - needs a GPU
        for kernel in source.KERNELS.values():
            assert len(kernel.function.device_caches[torch.cuda.current_device()][0]) <= 1


def _forbidden(*args, **kwargs):
    raise AssertionError("a step read a device value")


def test_maximize_never_writes_the_users_gradient():
    p = torch.randn(10, device=DEVICE)
    p.grad = torch.randn(10, device=DEVICE)
    kept = p.grad.clone()
    adamkit.Adam([p], fused="triton", maximize=True).step()
    assert torch.equal(p.grad, kept)


@pytest.mark.skipif(DEVICE != "cpu", reason="against the CPU loop")
def test_complex_parameters_and_odd_layouts_step_as_the_loop(monkeypatch):
    """Complex parameters as their real views; a transposed and a channels_last parameter in their memory order."""
    g = torch.Generator().manual_seed(3)
    made = [torch.randn(3, 4, dtype=torch.complex64, generator=g), torch.randn(5, 7, generator=g).t(),
            torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last)]
    results = []
    for path in (dict(foreach=False), dict(fused="triton")):
        params = [t.clone() for t in made]
        opt = adamkit.Adam(params, **path)
        for _ in range(2):
            for p in params:
                p.grad = torch.ones_like(p) * 0.1 + p.detach() * 0.5
            opt.step()
        results.append(params)
    for x, y in zip(*results):
        torch.testing.assert_close(x, y, rtol=2e-6, atol=1e-7)
        assert x.stride() == y.stride()


def test_tensors_the_backend_cannot_step_are_refused_naming_why(monkeypatch):
    p = torch.zeros(3, dtype=torch.int32, device=DEVICE)
    c = adamkit.Adam([torch.zeros(1)]).coefficients(adamkit.Adam([torch.zeros(1)]).param_groups[0], 0, None)
    with pytest.raises(Unsupported, match="float32, float16, bfloat16 and float64 parameters, got torch.int32"):
        step_bucket(adamkit.Adam, c, [p], [p], {"exp_avg": [p], "exp_avg_sq": [p]}, ("exp_avg", "exp_avg_sq"), False)
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    with pytest.raises(Unsupported, match="CPU tensors only in Triton's interpreter"):
        launch._check_device(torch.device("cpu"))
    with pytest.raises(ValueError, match='"compiled" or "triton"'):
        adamkit.Adam([torch.zeros(1)], fused="trition")


# -------------------------------------------------------------------------------------------- the codec
class _Codec(adamkit.Adam):
    """A test algorithm: writes the parameter into its state (encode) or the state into its parameter (decode)."""

    @staticmethod
    def update(param, grad, state, c):
        if c.flags.amsgrad:  # "decode"
            param.copy_(state["x"])
        else:
            state["x"].copy_(param)


def _codec_step(x, stored, scales, fmt, kind, decode=False, seed=12345, step=7):
    storage = state_format.Storage(fmt, (kind,), (0,), [seed], step, {"x": [scales]} if fmt == "int8" else {})
    c = Coefficients(_Codec.Flags(decode, False, False), _Codec.Scalars(*[0.0] * len(_Codec.Scalars._fields)))
    step_bucket(_Codec, c, [x], [torch.zeros_like(x)], {"x": [stored]}, ("x",), False, storage)
    return state_format.stream_key(seed, step, 0)


def _values(shape, seed):
    """float32 values over many decades, exact code values and their neighbours, zeros and denormals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g) * 6)
    flat = x.view(-1)
    if flat.numel() >= 64:
        table = state_format.table("unsigned")[1:]
        flat[:32] = table[torch.randint(0, table.numel(), (32,), generator=g)] * float(flat.abs().max())
        flat[32:48] = torch.nextafter(flat[16:32], torch.full((16,), math.inf))
        flat[48:56] = -flat[48:56].abs()
        flat[56:60] = torch.tensor([0.0, -0.0, 1e-40, -1e-42])
        flat[60:64] = flat[0:4] * 2.0 ** -40
    return x


@pytest.mark.parametrize("kind", state_format.KINDS)
@pytest.mark.parametrize("shape", [(7, 1000), (3, 256), (5, 3), (2, 513), (4, 64, 1)], ids=str)
def test_int8_encoding_is_the_reference_bit_for_bit(shape, kind):
    x = _values(shape, 1).to(DEVICE)
    x[1] = 0.0  # a zero block
    codes = torch.zeros(shape, dtype=torch.uint8, device=DEVICE)
    scales = torch.zeros(state_format.scale_shape(shape), device=DEVICE)
    key = _codec_step(x.clone(), codes, scales, "int8", kind)
    ref_codes, ref_scales = state_format.quantize_int8(x.cpu(), kind, key)
    assert torch.equal(codes.cpu(), ref_codes), int((codes.cpu() != ref_codes).sum())
    assert torch.equal(_bits(scales), _bits(ref_scales))


@pytest.mark.parametrize("fmt", ["bfloat16", "int8"])
@pytest.mark.parametrize("kind", state_format.KINDS)
def test_non_finite_values_round_as_the_reference(fmt, kind):
    x = torch.randn(4, 600)
    x[0, 3], x[1, 300], x[2, 10], x[3, 599] = math.nan, math.inf, -math.inf, -math.nan
    x[0, 5], x[2, 20] = 3.4e38, -3.4e38  # finite values that must not round to inf
    x = x.to(DEVICE)
    stored = torch.zeros(x.shape, dtype=torch.uint8 if fmt == "int8" else torch.bfloat16, device=DEVICE)
    scales = torch.zeros(state_format.scale_shape(x.shape), device=DEVICE)
    key = _codec_step(x.clone(), stored, scales, fmt, kind)
    if fmt == "int8":
        ref, ref_scales = state_format.quantize_int8(x.cpu(), kind, key)
        assert torch.equal(_bits(scales), _bits(ref_scales)) and bool(scales.isfinite().all())
        assert {state_format.POS_INF_CODE, state_format.NAN_CODE} <= set(stored.cpu().unique().tolist())
    else:
        ref = state_format.encode_bfloat16(x.cpu(), kind, key)
    assert torch.equal(_bits(stored), _bits(ref))
    if fmt == "bfloat16" and kind != "upper":
        assert bool(stored[0, 5].float().isfinite()) and bool(stored[2, 20].float().isfinite())


@pytest.mark.parametrize("kind", state_format.KINDS)
@pytest.mark.parametrize("shape", [(1000,), (3,), (7, 100)], ids=str)
def test_bfloat16_encoding_is_the_reference_bit_for_bit(shape, kind):
    x = _values(shape, 2).to(DEVICE)
    out = torch.zeros(shape, dtype=torch.bfloat16, device=DEVICE)
    key = _codec_step(x.clone(), out, None, "bfloat16", kind)
    assert torch.equal(_bits(out), _bits(state_format.encode_bfloat16(x.cpu(), kind, key)))


@pytest.mark.parametrize("kind", state_format.KINDS)
def test_int8_decoding_is_the_reference_bit_for_bit(kind):
    """Every code of every kind, with ordinary, zero, tiny, huge and NaN scales, in rows of 700 (3 blocks)."""
    g = torch.Generator().manual_seed(5)
    codes = torch.arange(256, dtype=torch.uint8).repeat(6, 3)[:, :700].contiguous()
    codes[3] = torch.randint(0, 256, (700,), generator=g, dtype=torch.uint8)
    scales = torch.tensor([[1.0, 0.5, 3.0], [0.0, 1e-30, 3e38], [math.nan, 2.0, 1e-3],
                           [7.0, 1e-10, 1.5], [1.0, 1.0, 1.0], [2.0 ** -100, 2.0 ** 100, 0.1]])
    ref = state_format.dequantize_int8(codes, scales, kind)
    out = torch.zeros(codes.shape, device=DEVICE)
    _codec_step(out, codes.to(DEVICE), scales.to(DEVICE), "int8", kind, decode=True)
    assert torch.equal(_bits(out), _bits(ref))


# ----------------------------------------------------------------------------------------------- GPU only
@needs_cuda
@pytest.mark.parametrize("info,variant", FIRST_VARIANTS)
def test_cuda_agrees_with_the_cuda_loop(info, variant):  # pragma: no cover - needs a GPU
    """On a GPU: the CUDA loop to a few ulps (nvcc contracts torch's own multiply-adds where it likes, and
    torch's CUDA division by a scalar multiplies by its reciprocal)."""
    ref, _ = _run(info, variant, dict(foreach=False), torch.float32, device="cuda")
    got, _ = _run(info, variant, dict(fused="triton"), torch.float32, device="cuda")
    for x, y in zip(ref, got):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


_INTERPRETED_RUN = """
import sys, torch
sys.path[:0] = {paths!r}
from test_triton import _cross_check_run
torch.save(_cross_check_run("cpu"), {out!r})
"""


def _cross_check_run(device):
    """Every algorithm (its last variant), float32 parameters, float32 and int8 state: parameters and states."""
    results = {}
    for info in OPTIMIZERS:
        for state_dtype in (torch.float32, "int8"):
            params, opt = _run(info, info.variants[-1], dict(fused="triton"), torch.float32, [(3, 300), (7,)],
                               state_dtype=state_dtype, device=device)
            results[f"{info.name}-{state_dtype}"] = [t.detach().cpu() for p in params for t in
                                                     [p, *(v for v in opt.state[p].values() if torch.is_tensor(v))]]
    return results


@needs_cuda
def test_cuda_kernels_compute_the_interpreters_bits(tmp_path):  # pragma: no cover - needs a GPU
    """The same steps on CUDA (compiled, no contraction) and in the interpreter (CPU, another process): the same
    bits, parameters, codes and scales alike."""
    import os
    import subprocess
    import sys

    out = tmp_path / "interpreted.pt"
    here = os.path.dirname(__file__)
    code = _INTERPRETED_RUN.format(paths=[here, os.path.dirname(here)] + sys.path, out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TRITON_INTERPRET": "1"},
                   timeout=600)
    interpreted = torch.load(out)
    for key, tensors in _cross_check_run("cuda").items():
        for i, (a, b) in enumerate(zip(tensors, interpreted[key])):
            assert torch.equal(_bits(a), _bits(b)), f"{key}: tensor {i}"
