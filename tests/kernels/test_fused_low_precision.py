"""The fused C kernel with low-precision state (bfloat16, int8): the same rounding and the same steps as the loop.

The kernel decodes each block of a state tensor into a small buffer, steps it with the float32 body and
encodes it back. Its rounding of a given float32 value must be ``state_format``'s bit for bit (tested
directly through ``fused_launch.encode``); its float32 math agrees with the loop's to rounding only (as for
float32 state), so whole steps are compared with a tolerance of one code step for the state.
"""
from __future__ import annotations

import math

import pytest
import torch

from adamkit.kernels import implementation_of
from adamkit.kernels.fused import build as fused_build, launch as fused_launch, spec as fused_spec
from adamkit.kernels.fused import FUSED, StoredGroup
from adamkit.core import state_format
from optimizer_table import OPTIMIZERS, variant_id

pytestmark = pytest.mark.skipif(not fused_build.available(), reason="no fused CPU kernel here")

FORMATS = ("bfloat16", "int8")
STATE_DTYPES = {"bfloat16": torch.bfloat16, "int8": "int8"}


# ------------------------------------------------------------------------------------ rounding, bit for bit
def _values(shape, seed):
    """float32 values over many decades, with the cases the tables and the rounding treat specially."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp(torch.randn(shape, generator=g) * 6)
    flat = x.view(-1)
    n = flat.numel()
    table = state_format.table("unsigned")[1:]  # exact table magnitudes
    if n >= 64:
        picks = torch.randint(0, table.numel(), (32,), generator=g)
        scale = float(flat.abs().max())
        flat[:32] = table[picks] * scale  # exact code values times the block's scale
        flat[32:48] = torch.nextafter(flat[16:32], torch.full((16,), math.inf))  # just above a code value
        flat[48:56] = -flat[48:56].abs()
        flat[56:60] = torch.tensor([0.0, -0.0, 1e-40, -1e-42])  # zeros and denormals
        flat[60:64] = flat[0:4] * 2.0 ** -40  # far below the smallest code of the block
    return x


SHAPES = [(7, 1000), (64, 3, 7, 7), (3, 256), (5, 3), (1, 10000), (2, 513), (4, 64)]


@pytest.mark.parametrize("kind", state_format.KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_int8_rounding_is_the_reference_bit_for_bit(shape, kind):
    for seed, key in ((0, 0), (1, 0xDEADBEEF), (2, state_format.stream_key(12345, 7, 2))):
        x = _values(shape, seed)
        codes, scales = fused_launch.encode(x, "int8", kind, key)
        ref_codes, ref_scales = state_format.quantize_int8(x, kind, key)
        assert torch.equal(codes, ref_codes), (shape, kind, seed, int((codes != ref_codes).sum()))
        assert torch.equal(scales.view(torch.int32), ref_scales.view(torch.int32))


@pytest.mark.parametrize("kind", state_format.KINDS)
@pytest.mark.parametrize("shape", [(1000,), (7, 1000), (3,), (100003,)], ids=str)
def test_bfloat16_rounding_is_the_reference_bit_for_bit(shape, kind):
    for seed, key in ((0, 1), (1, 0x80000001)):
        x = _values(shape, seed)
        out, _ = fused_launch.encode(x, "bfloat16", kind, key)
        ref = state_format.encode_bfloat16(x, kind, key)
        assert torch.equal(out.view(torch.int16), ref.view(torch.int16)), (shape, kind, seed)


#: NaN patterns of every sign and payload (some whose top 16 bits alone would read inf), and the infinities
SPECIAL_BITS = [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F80FFFF, 0x7F800000,
                0xFF800000]


def _non_finite_values(shape, seed):
    """``_values`` with the non-finite cases of issue 25 item 1: inf, -inf and NaN patterns scattered in the blocks
    (in the vectorised body and in the tails), blocks of only non-finite values, blocks of only one finite value
    among them, and huge finite values (up to float32's largest) beside them."""
    g = torch.Generator().manual_seed(seed)
    x = _values(shape, seed)
    rows = x.view(x.shape[0], -1)
    flat = x.view(-1)
    special = torch.tensor(SPECIAL_BITS, dtype=torch.int64).to(torch.int32).view(torch.float32)
    picks = torch.randint(0, flat.numel(), (max(4, flat.numel() // 40),), generator=g)
    flat[picks] = special[torch.randint(0, len(SPECIAL_BITS), picks.shape, generator=g)]
    huge = torch.tensor([float.fromhex("0x1.fffffep127"), -3.4e38, 3.39e38, float.fromhex("0x1.fep127"), 1e38])
    flat[torch.randint(0, flat.numel(), (5,), generator=g)] = huge
    if rows.shape[0] >= 3:
        rows[0, :256] = special[torch.arange(min(256, rows.shape[1])) % len(SPECIAL_BITS)]  # no finite value
        rows[1, :256] = math.inf
        rows[1, rows.shape[1] // 2] = -2.5  # one finite value among infinities
    return x


def _same_bits(a, b):
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


@pytest.mark.parametrize("kind", state_format.KINDS)
@pytest.mark.parametrize("shape", [(7, 1000), (3, 256), (5, 3), (4, 64), (2, 513), (6, 37)], ids=str)
def test_non_finite_values_round_as_the_reference_bit_for_bit(shape, kind):
    """Issue 25 item 1: every non-finite value takes its code (its bfloat16) element by element, the scales are the
    largest finite magnitudes; the kernel (AVX2 body and scalar tails) agrees with the reference bit for bit."""
    for seed, key in ((0, 99), (1, 0xFEEDF00D)):
        x = _non_finite_values(shape, seed)
        codes, scales = fused_launch.encode(x, "int8", kind, key)
        ref_codes, ref_scales = state_format.quantize_int8(x, kind, key)
        assert torch.equal(codes, ref_codes), (shape, kind, seed, int((codes != ref_codes).sum()))
        assert _same_bits(scales, ref_scales) and bool(torch.isfinite(scales).all())
        positive = x if kind == "signed" else x.clamp_min(0)
        back = state_format.dequantize_int8(codes, scales, kind)
        assert _same_bits(fused_launch.decode(codes, scales, kind), back)
        assert torch.equal(back.isnan(), positive.isnan()) and torch.equal(back.isinf(), positive.isinf())
        out, _ = fused_launch.encode(x.view(-1), "bfloat16", kind, key)
        assert _same_bits(out, state_format.encode_bfloat16(x.view(-1), kind, key)), (shape, kind, seed)


@pytest.mark.parametrize("kind", state_format.KINDS)
def test_int8_decoding_is_the_reference_bit_for_bit(kind):
    """Every code of every kind, with ordinary, zero, tiny, huge and NaN scales, in blocks of every length."""
    g = torch.Generator().manual_seed(5)
    codes = torch.arange(256, dtype=torch.uint8).repeat(6, 3)[:, :700].contiguous()  # rows of 700: 3 blocks
    codes[3] = torch.randint(0, 256, (700,), generator=g, dtype=torch.uint8)
    scales = torch.tensor([[1.0, 0.5, 3.0], [0.0, 1e-30, 3e38], [float("nan"), 2.0, 1e-3],
                           [7.0, 1e-10, 1.5], [1.0, 1.0, 1.0], [2.0 ** -100, 2.0 ** 100, 0.1]])
    out = fused_launch.decode(codes, scales, kind)
    ref = state_format.dequantize_int8(codes, scales, kind)
    assert _same_bits(out, ref)


def test_stochastic_rounding_is_unbiased():
    """Sanity of the kernel's int8 stochastic rounding: the mean of many roundings is the value."""
    x = torch.full((1, 256), 0.3)
    x[0, 0] = 1.0  # the scale
    means = torch.stack([state_format.dequantize_int8(*fused_launch.encode(x, "int8", "signed", key), "signed")
                         for key in range(400)]).mean(0)
    assert abs(float(means[0, 1:].mean()) - 0.3) < 2e-3


# ------------------------------------------------------------------------------------- whole steps
SHAPES_STEP = [(8, 3, 3, 3), (20,), (12, 600), (5, 3), (2, 1, 1, 256)]


def _run(info, variant, state_dtype, path, steps=4, seed=0, dtype=torch.float32, shapes=SHAPES_STEP,
         channels_last=False):
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.randn(s, generator=g).to(dtype)
        if channels_last and len(s) == 4:
            p = p.contiguous(memory_format=torch.channels_last)
        params.append(torch.nn.Parameter(p))
    grads = [[torch.randn(s, generator=g).to(dtype) for s in shapes] for _ in range(steps)]
    opt = info.make(params, lr=1e-2, state_dtype=state_dtype, **path, **variant)
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        opt.step()
    return params, opt


def _stored(opt, p):
    return {k: v for k, v in opt.state[p].items() if isinstance(v, torch.Tensor)}


def _bits(t):
    """A tensor's stored bits as integers (NaN patterns compare too)."""
    return {torch.bfloat16: lambda: t.view(torch.int16), torch.float32: lambda: t.view(torch.int32)}.get(
        t.dtype, lambda: t)()


def _decoded(opt, p, name):
    """The float32 values of a stored state tensor (int8 codes with their block scales)."""
    t = opt.state[p][name]
    if t.dtype == torch.uint8:
        kind = type(opt).state_formats[name]
        return state_format.dequantize_int8(t, opt.state[p][state_format.scale_name(name)], kind)
    return t.float()


def _assert_within_one_code(opt_a, p, opt_b, q, name):
    """Stored state of two paths: decoded values at most one code step apart (bfloat16: 2**-7 relative; int8:
    CODE_RATIO - 1 relative), beyond a floor far below the tensor's values (where the float32 math of a moment
    cancels, one rounding of the operands apart is a large relative gap), and few stored codes differ at all."""
    a, b = _decoded(opt_a, p, name), _decoded(opt_b, q, name)
    step = 2.0 ** -7 if opt_a.state[p][name].dtype == torch.bfloat16 else state_format.CODE_RATIO - 1.0
    floor = 1e-5 * float(torch.maximum(a.abs().max(), b.abs().max()))
    allowed = step * 1.001 * torch.maximum(a.abs(), b.abs()) + floor
    assert bool(((a - b).abs() <= allowed).all()), (name, float(((a - b).abs() - allowed).max()))
    sa, sb = opt_a.state[p][name], opt_b.state[q][name]
    differing = int((_bits(sa) != _bits(sb)).sum())
    assert differing <= max(2, sa.numel() // 100), (name, differing, sa.numel())


CASES = [(info, variant) for info in OPTIMIZERS for variant in info.variants]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("info,variant", CASES, ids=[variant_id(i, v) for i, v in CASES])
def test_every_algorithm_steps_like_the_loop(info, variant, format):
    fused, opt_f = _run(info, variant, STATE_DTYPES[format], dict(fused=True))
    loop, opt_l = _run(info, variant, STATE_DTYPES[format], dict(foreach=False))
    for p, q in zip(fused, loop):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4)
        sf, sl = _stored(opt_f, p), _stored(opt_l, q)
        assert sf.keys() == sl.keys()
        for name in sf:
            assert sf[name].dtype == sl[name].dtype
            if not name.endswith(state_format.SCALE_SUFFIX):
                assert sf[name].dtype in (torch.bfloat16, torch.uint8)
                _assert_within_one_code(opt_f, p, opt_l, q, name)
        assert opt_f.state[p]["step"] == opt_l.state[q]["step"]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_parameters_and_channels_last_step_like_the_loop(format, dtype):
    info = next(i for i in OPTIMIZERS if i.name == "adam")
    for channels_last in (False, True):
        fused, opt_f = _run(info, {"amsgrad": True}, STATE_DTYPES[format], dict(fused=True), dtype=dtype,
                            channels_last=channels_last)
        loop, opt_l = _run(info, {"amsgrad": True}, STATE_DTYPES[format], dict(foreach=False), dtype=dtype,
                           channels_last=channels_last)
        for p, q in zip(fused, loop):
            assert p.dtype == dtype and p.stride() == q.stride()
            torch.testing.assert_close(p.float(), q.float(), rtol=1e-2, atol=1e-2)
            for name in _stored(opt_f, p):
                if not name.endswith(state_format.SCALE_SUFFIX):
                    _assert_within_one_code(opt_f, p, opt_l, q, name)


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("name", ["adam", "adabelief", "adopt", "agd"])
def test_bit_identical_across_runs_and_thread_counts(name, format):
    """One chunk of state is stepped by one thread, with bits that depend only on positions: the thread count
    and the run change nothing."""
    info = next(i for i in OPTIMIZERS if i.name == name)
    shapes = [(300, 700), (70_000,), (3, 5)]  # big enough to be split over threads (GRAIN elements each)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 2, 3):
            torch.set_num_threads(threads)
            params, opt = _run(info, {}, STATE_DTYPES[format], dict(fused=True), steps=3, shapes=shapes)
            results.append((params, opt))
    finally:
        torch.set_num_threads(before)
    (first, opt0), rest = results[0], results[1:]
    for params, opt in rest:
        for p, q in zip(first, params):
            assert torch.equal(p, q)
            for key, t in _stored(opt0, p).items():
                other = _stored(opt, q)[key]
                assert torch.equal(_bits(t), _bits(other)), key


@pytest.mark.parametrize("format", FORMATS)
def test_the_default_cpu_path_is_the_kernel_and_keeps_its_tables(format):
    info = next(i for i in OPTIMIZERS if i.name == "adam")
    default, opt_d = _run(info, {}, STATE_DTYPES[format], {})
    fused, opt_f = _run(info, {}, STATE_DTYPES[format], dict(fused=True))
    group = opt_d.param_groups[0]
    assert implementation_of(opt_d, group, group["params"]) == "fused"
    for p, q in zip(default, fused):
        assert torch.equal(p, q)
    # both keep the kernel's tables of the group's buckets (tests/kernels/test_fused_stored_cache.py)
    for opt in (opt_d, opt_f):
        assert isinstance(FUSED.kept(opt, opt.param_groups[0]), StoredGroup)


def test_fused_true_with_a_format_the_kernel_cannot_run_raises_naming_state_dtype(monkeypatch):
    monkeypatch.setattr(type(FUSED), "storage_formats", ("bfloat16",))
    p = torch.nn.Parameter(torch.randn(4, 300))
    opt = OPTIMIZERS[0].make([p], state_dtype="int8", fused=True)
    p.grad = torch.randn(4, 300)
    before = p.detach().clone()
    with pytest.raises(ValueError, match="state_dtype"):
        opt.step()
    assert torch.equal(p.detach(), before)


def test_a_storage_format_unknown_to_the_kernel_raises_naming_state_dtype_before_writing():
    p = torch.randn(4, 300)
    g = torch.randn(4, 300)
    state = {"exp_avg": [torch.zeros(4, 300, dtype=torch.bfloat16)],
             "exp_avg_sq": [torch.zeros(4, 300, dtype=torch.bfloat16)]}
    info = OPTIMIZERS[0]
    opt = info.make([torch.nn.Parameter(p.clone())])
    c = opt.coefficients(opt.param_groups[0], 0, None)
    names = ("exp_avg", "exp_avg_sq")
    call = fused_spec.kernel_call(type(opt), c, names, False)
    before = p.clone()
    storage = state_format.Storage("fp8", ("signed", "unsigned"), (0, 1), [1], 0, {})
    with pytest.raises(fused_launch.Unsupported, match="state_dtype"):
        fused_launch.launch(call, [p], [g], state, storage=storage, storage_names=names)
    codes = {n: [torch.full((4, 300), 127, dtype=torch.uint8)] for n in names}  # int8 codes, bfloat16 said
    wrong = state_format.Storage("bfloat16", ("signed", "unsigned"), (0, 1), [1], 0, {})
    with pytest.raises(fused_launch.Unsupported, match="state_dtype"):
        fused_launch.launch(call, [p], [g], codes, storage=wrong, storage_names=names)
    no_scales = state_format.Storage("int8", ("signed", "unsigned"), (0, 1), [1], 0, {})
    with pytest.raises(fused_launch.Unsupported, match="state_dtype"):
        fused_launch.launch(call, [p], [g], codes, storage=no_scales, storage_names=names)
    assert torch.equal(p, before)


def test_a_hand_set_state_of_the_wrong_dtype_raises_naming_state_dtype():
    p = torch.nn.Parameter(torch.randn(4, 300))
    opt = OPTIMIZERS[0].make([p], state_dtype=torch.bfloat16, fused=True)
    p.grad = torch.randn(4, 300)
    opt.step()
    opt.state[p]["exp_avg"] = torch.zeros(4, 300, dtype=torch.float16)
    with pytest.raises(Exception, match="state_dtype"):
        opt.step()


@pytest.mark.parametrize("variant", fused_build.runnable_variants() if fused_build.available() else [])
def test_every_build_rounds_as_the_reference(variant):
    """Each instruction-set variant (the baseline one has no AVX2 code paths) rounds as the reference, bit for
    bit: int8 codes and scales of every kind, and bfloat16, finite and non-finite values alike."""
    with fused_build.using(variant):
        for kind in state_format.KINDS:
            for x in (_values((7, 1000), 3), _non_finite_values((7, 1000), 4)):
                codes, scales = fused_launch.encode(x, "int8", kind, 77)
                ref_codes, ref_scales = state_format.quantize_int8(x, kind, 77)
                assert torch.equal(codes, ref_codes) and torch.equal(scales, ref_scales), (variant, kind)
                assert _same_bits(fused_launch.decode(codes, scales, kind),
                                  state_format.dequantize_int8(codes, scales, kind)), (variant, kind)
                half, _ = fused_launch.encode(x, "bfloat16", kind, 77)
                assert _same_bits(half, state_format.encode_bfloat16(x, kind, 77)), (variant, kind)
