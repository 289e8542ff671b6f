"""Low-precision optimizer state (``state_dtype=torch.bfloat16`` / ``"int8"``, issue 13) on every algorithm and path.

The done-when check of the issue: a small MLP on scikit-learn's digits trains to within 15 % (+0.02) of the
float32-state training loss, with the state in at most 4.2 / 2.3 bytes per parameter (6.3 / 3.4 with AMSGrad's
third state), on every path that runs low-precision state (``backend.storage_formats``).
"""
from __future__ import annotations

import copy
import inspect

import pytest
import torch
from torch import nn

import adamkit
from adamkit.kernels import BACKENDS, compiled
from adamkit.core import state_format as sf
from optimizer_table import OPTIMIZERS

FORMATS = [pytest.param(torch.bfloat16, id="bf16"), pytest.param("int8", id="int8")]


def _steps_cpu_tensors(name) -> bool:
    """The Triton backend steps CPU tensors only in its interpreter (set by conftest where there is no GPU)."""
    if name != "triton":
        return True
    from adamkit.kernels.gpu import launch

    return launch.steps_cpu_tensors()


#: every backend that runs low-precision state on CPU tensors here (the fused one once its kernel takes it)
PATHS = [pytest.param(b.options, id=name) for name, b in BACKENDS.items()
         if b.storage_formats and b.available() and _steps_cpu_tensors(name)]
INFOS = [pytest.param(info, id=info.name) for info in OPTIMIZERS]
#: bytes of state per parameter: (bfloat16, int8) bounds for two moments, and for three (AMSGrad's maximum)
BOUNDS = {2: {torch.bfloat16: 4.2, "int8": 2.3}, 3: {torch.bfloat16: 6.3, "int8": 3.4}}


@pytest.fixture(autouse=True)
def cheap_compiles(monkeypatch):
    """The compiled path traced by dynamo without code generation (inductor is tested in tests/kernels/test_compiled.py)."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead on a shared machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def untraced(monkeypatch):
    """The compiled backend with its body run as Python, not traced: under low-precision state the compiled
    graph is the float32 state's own (decoded float32 tensors in and out; tests/kernels/test_compiled.py compiles every
    algorithm's, and the tests here marked ``traced`` trace it); what these tests check is the backend's
    decoding and encoding around it, at the cost of the loop instead of a dynamo trace per bucket layout."""
    monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)


# --------------------------------------------------------------------------------------- the MLP on digits
def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


DIGITS = None
STEPS, BATCH = 60, 256
#: each optimizer's usual learning rate for this problem (AGD's is a tenth of Adam's, as its README says)
LR = {"agd": 1e-3}


def train(info, state_dtype, path, steps=STEPS):
    """(final full-data training loss, state bytes per parameter) of the MLP 64→64→10 after ``steps`` steps."""
    global DIGITS
    if DIGITS is None:
        DIGITS = _digits()
    x, y = DIGITS
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    opt = info.make(net.parameters(), lr=LR.get(info.name, 1e-2), state_dtype=state_dtype, **path)
    for t in range(steps):
        start = (t * BATCH) % (len(x) - BATCH)  # fixed minibatches, the same for every run
        loss = nn.functional.cross_entropy(net(x[start:start + BATCH]), y[start:start + BATCH])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = nn.functional.cross_entropy(net(x), y).item()
    return final, state_bytes(opt) / sum(p.numel() for p in net.parameters()), opt


def state_bytes(opt) -> int:
    """Every tensor of ``opt.state``, scales included."""
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor))


FLOAT32_LOSS: dict[str, float] = {}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info", INFOS)
def test_trains_the_digits_mlp_as_float32_state_does_in_a_fraction_of_the_bytes(info, state_dtype, path, untraced):
    if path == BACKENDS["triton"].options:
        pytest.skip("Triton's interpreter is too slow to train (tests/kernels/test_triton.py: the loop's bits)")
    if info.name not in FLOAT32_LOSS:
        FLOAT32_LOSS[info.name] = train(info, torch.float32, {"foreach": False})[0]
    reference = FLOAT32_LOSS[info.name]
    loss, per_param, opt = train(info, state_dtype, path)
    assert loss <= 1.15 * reference + 0.02, (loss, reference)
    assert per_param <= BOUNDS[len(opt.state_names(opt.param_groups[0]))][state_dtype], per_param


# ------------------------------------------------------------------------------------------ the layout
def test_state_layout_seeds_scales_and_no_generator_drawn():
    w, b = torch.randn(8, 300, requires_grad=True), torch.randn(5, requires_grad=True)
    v = torch.randn(3, 4, requires_grad=True)
    opt = adamkit.AMSGrad([{"params": [w, b]}, {"params": [v], "state_dtype": torch.bfloat16}], state_dtype="int8")
    for p in (w, b, v):
        p.grad = torch.randn_like(p)
    rng = torch.get_rng_state()
    opt.step()
    assert torch.equal(rng, torch.get_rng_state())  # the rounding bits are counter-based
    sw, sb, sv = opt.state[w], opt.state[b], opt.state[v]
    assert [s["rounding_seed"] for s in (sw, sb, sv)] == [sf.rounding_seed(i) for i in range(3)]
    names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    assert sw["step"] == 1 and set(sw) == {"step", "rounding_seed", *names, *(n + "_finite_absmax" for n in names)}
    for name, kind in adamkit.AMSGrad.state_formats.items():
        assert sw[name].dtype == torch.uint8 and sw[name].shape == w.shape
        assert sw[sf.scale_name(name)].dtype == torch.float32 and sw[sf.scale_name(name)].shape == (8, 2)
        assert sb[name].dtype == torch.bfloat16 and sv[name].dtype == torch.bfloat16  # vectors: bf16 under int8
        assert sf.scale_name(name) not in sb
    # the stored values are the encoded float32 moments of one step
    g = w.grad
    m = sf.dequantize_int8(sw["exp_avg"], sw["exp_avg_finite_absmax"], "signed")
    assert ((m - 0.1 * g).abs() <= (sf.CODE_RATIO - 1) * (0.1 * g).abs() + 1e-12).all()
    vmax = sf.dequantize_int8(sw["max_exp_avg_sq"], sw["max_exp_avg_sq_finite_absmax"], "upper")
    vv = sf.dequantize_int8(sw["exp_avg_sq"], sw["exp_avg_sq_finite_absmax"], "unsigned")
    assert (vmax >= g * g * (1 - 0.999)).all() and (vmax * sf.CODE_RATIO >= vv).all()  # the update's order
    late = torch.randn(2, 2, requires_grad=True)  # a late joiner: its position over every group so far
    opt.add_param_group({"params": [late]})
    late.grad = torch.ones_like(late)
    opt.step()
    assert opt.state[late]["rounding_seed"] == sf.rounding_seed(3) and opt.state[late]["step"] == 1


def test_channels_last_parameters_keep_their_layout_in_the_codes():
    w = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    w.grad = torch.randn_like(w)
    opt = adamkit.Adam([w], state_dtype="int8", foreach=False)
    opt.step()
    assert opt.state[w]["exp_avg"].stride() == w.stride() and opt.state[w]["exp_avg_finite_absmax"].shape == (4, 1)


def test_agd_z_from_the_parameter_is_its_encoded_value():
    w = torch.randn(6, 40, requires_grad=True)
    opt = adamkit.AGD([w], win=True, win_z_init="params", state_dtype=torch.bfloat16)
    state = opt.init_param_state(w, opt.param_groups[0])
    slot = list(adamkit.AGD.state_formats).index("z")
    expected = sf.encode_bfloat16(w.detach().clone(), "signed", sf.init_key(sf.rounding_seed(0), slot))
    assert torch.equal(state["z"], expected) and (state["z"].float() - w).abs().max() <= 2 ** -7 * w.abs().max()


# ------------------------------------------------------------------------------------------ paths agree
def _run(info, variant, state_dtype, path, steps=4, dtype=torch.float32, maximize=False,
         shapes=((6, 300), (7,))):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]
    opt = info.make(params, lr=1e-2, state_dtype=state_dtype, maximize=maximize, **variant, **path)
    for t in range(steps):
        gen = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        opt.step()
    return params, opt


def _decoded(opt, p):
    state, out = opt.state[p], {}
    for name, kind in type(opt).state_formats.items():
        if name in state:
            stored = state[name]
            scales = state.get(sf.scale_name(name))
            out[name] = sf.decode_state("int8" if stored.dtype == torch.uint8 else "bfloat16", kind, stored, scales)
    return out


def _within_one_code_step(a, b, state_dtype):
    ratio = sf.CODE_RATIO - 1 if state_dtype == "int8" else 2.0 ** -7
    bound = ratio * torch.maximum(a.abs(), b.abs()) * 1.01 + 1e-30
    return bool(((a - b).abs() <= bound).all())


@pytest.mark.parametrize("path", [p for p in PATHS if p.id != "loop"])
@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info,variant", [pytest.param(info, v, id=f"{info.name}-{i}")
                                          for info in OPTIMIZERS for i, v in enumerate(info.variants)])
def test_every_path_agrees_with_the_loop(info, variant, state_dtype, path, untraced):
    """From one state (two loop steps in), one more step on each path: the same parameters to rounding, and
    decoded states within one code step (the paths' float32 math agrees to rounding, so an intermediate value
    may round across a code boundary; an int8 block's scale is its largest float32 value, so decoded values
    may differ in their last bits)."""
    params, opt = _run(info, variant, state_dtype, {"foreach": False}, steps=2)
    a, opt_a = copy.deepcopy((params, opt))
    b, opt_b = copy.deepcopy((params, opt))
    opt_b.param_groups[0].update(path)
    gen = torch.Generator().manual_seed(7)
    for x, y in zip(a, b):
        x.grad = torch.randn(x.shape, generator=gen)
        y.grad = x.grad.clone()
    opt_a.step()
    opt_b.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
        da, db = _decoded(opt_a, x), _decoded(opt_b, y)
        assert da.keys() == db.keys() and da
        for name in da:
            assert _within_one_code_step(da[name], db[name], state_dtype), name
            close = ((da[name] - db[name]).abs() <= 1e-4 * da[name].abs() + 1e-30).double().mean().item()
            assert close > 0.95, (name, close)  # another code only where a value rounds across a boundary


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("state_dtype", FORMATS)
def test_every_tensor_beside_an_empty_one_is_stepped(state_dtype, path):
    """Empty tensors in a bucket (before, between and after others) take no part, and every other tensor is
    stepped as with float32 state (the loop once stepped only the first tensor of a chunk that an empty tensor
    had joined, leaving the next one unchanged)."""
    info = OPTIMIZERS[0]
    shapes = ((0,), (1,), (0, 3), (5,), (2, 256), (0,))
    ref, _ = _run(info, {}, torch.float32, path, steps=3, shapes=shapes)
    got, _ = _run(info, {}, state_dtype, path, steps=3, shapes=shapes)
    start, _ = _run(info, {}, torch.float32, path, steps=0, shapes=shapes)
    for x, y, x0 in zip(ref, got, start):
        if x.numel():
            assert not torch.equal(y, x0)
            torch.testing.assert_close(y, x, rtol=0, atol=3e-3)


@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info", [OPTIMIZERS[0], OPTIMIZERS[-1]], ids=lambda info: info.name)
def test_the_traced_compiled_update_agrees_with_the_loop(info, state_dtype):
    """The compiled path with its update traced (2-D parameters: one bucket, so bfloat16 and int8 share a graph)."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(s, generator=g).requires_grad_() for s in ((6, 300), (3, 4, 5))]
    b = [p.detach().clone().requires_grad_() for p in a]
    opt_a = info.make(a, lr=1e-2, state_dtype=state_dtype, foreach=False)
    opt_b = info.make(b, lr=1e-2, state_dtype=state_dtype, fused="compiled")
    for t in range(3):
        gen = torch.Generator().manual_seed(100 + t)
        for x, y in zip(a, b):
            x.grad = torch.randn(x.shape, generator=gen)
            y.grad = x.grad.clone()
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)
        da, db = _decoded(opt_a, x), _decoded(opt_b, y)
        for name in da:
            close = ((da[name] - db[name]).abs() <= 0.1 * da[name].abs() + 1e-12).double().mean().item()
            assert close > 0.99, (name, close)


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_half_precision_parameters_step_in_float32_math(state_dtype):
    """A bfloat16 parameter moves as its float32 copy would, rounded to bfloat16; the state is the same."""
    info = OPTIMIZERS[0]
    half, opt_h = _run(info, {}, state_dtype, {"foreach": False}, steps=1, dtype=torch.bfloat16)
    full = [p.detach().float().requires_grad_() for p in _run(info, {}, state_dtype, {}, steps=0,
                                                                dtype=torch.bfloat16)[0]]
    opt_f = info.make(full, lr=1e-2, state_dtype=state_dtype, foreach=False)
    gen = torch.Generator().manual_seed(100)
    for p in full:
        p.grad = torch.randn(p.shape, generator=gen).to(torch.bfloat16).float()
    opt_f.step()
    for h, f in zip(half, full):
        assert h.dtype == torch.bfloat16 and torch.equal(h, f.to(torch.bfloat16))
        for name, value in opt_h.state[h].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_f.state[f][name]))


@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info", INFOS)
def test_maximize_equals_minimising_the_negated_gradient_and_the_grad_is_never_written(info, state_dtype):
    for path in ({"foreach": False}, {"foreach": True}):
        g = torch.Generator().manual_seed(0)
        a = [torch.randn(6, 300, generator=g).requires_grad_(), torch.randn(7, generator=g).requires_grad_()]
        b = [p.detach().clone().requires_grad_() for p in a]
        opt_a = info.make(a, lr=1e-2, state_dtype=state_dtype, maximize=True, **path)
        opt_b = info.make(b, lr=1e-2, state_dtype=state_dtype, **path)
        for t in range(3):
            gen = torch.Generator().manual_seed(10 + t)
            for p, q in zip(a, b):
                p.grad = torch.randn(p.shape, generator=gen)
                q.grad = -p.grad
            before = [p.grad.clone() for p in a]
            opt_a.step()
            opt_b.step()
            assert all(torch.equal(p.grad, g) for p, g in zip(a, before))
        for p, q in zip(a, b):
            assert torch.equal(p, q)


# ------------------------------------------------------------------------------------------ resuming
@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info", INFOS)
def test_a_copy_of_the_optimizer_resumes_bit_identically(info, state_dtype):
    straight, _ = _run(info, info.variants[-1], state_dtype, {"foreach": False}, steps=6)
    params, opt = _run(info, info.variants[-1], state_dtype, {"foreach": False}, steps=3)
    params, opt = copy.deepcopy((params, opt))
    for t in range(3, 6):
        gen = torch.Generator().manual_seed(100 + t)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    for x, y in zip(straight, params):
        assert torch.equal(x, y)


@pytest.mark.parametrize("state_dtype", FORMATS)
@pytest.mark.parametrize("info", INFOS)
def test_a_state_dict_round_trip_into_a_fresh_optimizer_resumes_bit_identically(info, state_dtype):
    straight, _ = _run(info, info.variants[0], state_dtype, {"foreach": False}, steps=6)
    params, opt = _run(info, info.variants[0], state_dtype, {"foreach": False}, steps=3)
    saved = copy.deepcopy(opt.state_dict())
    fresh = [p.detach().clone().requires_grad_() for p in params]
    opt2 = info.make(fresh, lr=1e-2, state_dtype=state_dtype, **info.variants[0], foreach=False)
    if not hasattr(adamkit.optim, "convert_state_dtype"):
        pytest.skip("load_state_dict of low-precision state comes with the checkpoint work (branch ckpt)")
    opt2.load_state_dict(saved)
    for t in range(3, 6):
        gen = torch.Generator().manual_seed(100 + t)
        for p in fresh:
            p.grad = torch.randn(p.shape, generator=gen)
        opt2.step()
    for x, y in zip(straight, fresh):
        assert torch.equal(x, y)


# ------------------------------------------------------------------------------------------ stochastic rounding
def test_stochastic_rounding_keeps_a_slowly_moving_second_moment_on_track():
    """β2 = 0.999 and |g| constant per element: v grows by 0.1 % of (g² - v) a step, below half a bfloat16 ulp
    once v is a third of g²; round-to-nearest freezes it there (checked below, so the test can fail),
    stochastic rounding tracks the float32 moment in expectation, in bfloat16 and in 8-bit codes."""
    p16, p8 = torch.zeros(4096, requires_grad=True), torch.zeros(16, 256, requires_grad=True)
    opts = [adamkit.Adam([p], lr=1e-9, betas=(0.9, 0.999), state_dtype=sd, foreach=False)
            for p, sd in ((p16, torch.bfloat16), (p8, "int8"))]
    v32, nearest = torch.zeros(4096), torch.zeros(4096)
    gen = torch.Generator().manual_seed(0)
    scale = torch.rand(4096, generator=gen) + 0.5
    for _ in range(500):
        g = torch.where(torch.rand(4096, generator=gen) < 0.5, -1.0, 1.0) * scale
        for p, opt in zip((p16, p8), opts):
            p.grad = g.view(p.shape).clone()
            opt.step()
        v32.mul_(0.999).add_(g.mul(g).mul_(1 - 0.999))  # the float32 state's update
        nearest = (0.999 * nearest + 0.001 * g * g).bfloat16().float()
    v16 = opts[0].state[p16]["exp_avg_sq"].float()
    v8 = sf.dequantize_int8(opts[1].state[p8]["exp_avg_sq"], opts[1].state[p8]["exp_avg_sq_finite_absmax"], "unsigned")
    assert abs(v16.sum() / v32.sum() - 1) < 0.005
    assert abs(v8.sum() / v32.sum() - 1) < 0.005
    assert nearest.sum() / v32.sum() < 0.9  # round-to-nearest has stalled
    assert p16.abs().max() > 0 and p8.abs().max() > 0  # a tiny learning rate still moves the parameters


# ------------------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("value", [torch.float16, torch.float64, torch.int8, "fp8", None, 8])
def test_bad_state_dtype_raises_naming_the_argument_and_the_valid_values(value):
    match = r'state_dtype must be torch.float32, torch.bfloat16 or "int8"'
    with pytest.raises(ValueError, match=match):
        adamkit.AdamW([torch.zeros(2, requires_grad=True)], state_dtype=value)
    opt = adamkit.AdamW([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [torch.zeros(3, requires_grad=True)], "state_dtype": value})
    opt.param_groups[0]["state_dtype"] = value  # set by hand: refused at the step
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    with pytest.raises(ValueError, match=match):
        opt.step()


@pytest.mark.parametrize("state_dtype", FORMATS)
def test_float64_and_complex_parameters_refuse_low_precision_state(state_dtype):
    for dtype in (torch.float64, torch.complex64):
        with pytest.raises(ValueError, match=r"state_dtype=.*parameter 1 is torch\.(float64|complex64).*"
                                             r"state_dtype=torch.float32"):
            adamkit.Adam([torch.zeros(2), torch.zeros(2, dtype=dtype)], state_dtype=state_dtype)
    opt = adamkit.Adam([torch.zeros(2, dtype=torch.float64)])  # float32 state: as before
    with pytest.raises(ValueError, match="state_dtype"):
        opt.add_param_group({"params": (p for p in [torch.zeros(2, dtype=torch.float64)]),
                             "state_dtype": state_dtype})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("before, after", [(torch.float32, "int8"), ("int8", torch.bfloat16),
                                           (torch.bfloat16, torch.float32)])
@pytest.mark.parametrize("path", [{}, {"foreach": False}, {"foreach": True}])
def test_a_state_dtype_changed_by_hand_raises_naming_the_conversion_call(before, after, path):
    w, b = torch.randn(4, 8, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = adamkit.Adam([{"params": [b]}, {"params": [w]}], state_dtype=before, **path)
    for _ in range(2):  # twice: the fused kernel's kept table is in use from the second step on
        w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
        opt.step()
    kept = copy.deepcopy((w, b, dict(opt.state)))
    opt.param_groups[1]["state_dtype"] = after
    with pytest.raises(ValueError, match=r"param group 1 has state_dtype=.*adamkit\.optim\.convert_state_dtype"):
        opt.step()
    # nothing moved, in either group (the check phase runs before any group steps)
    assert torch.equal(w, kept[0]) and torch.equal(b, kept[1]) and opt.state[b]["step"] == 2


def test_the_fused_kernel_takes_low_precision_state_or_says_so():
    w = torch.randn(4, 8, requires_grad=True)
    w.grad = torch.ones_like(w)
    fused = BACKENDS["fused"]
    if not fused.available():
        pytest.skip("no C compiler: the fused kernel is not built here")
    opt = adamkit.Adam([w], state_dtype="int8", fused=True)
    if "int8" in fused.storage_formats:
        opt.step()
        assert opt.state[w]["exp_avg"].dtype == torch.uint8
    else:
        with pytest.raises(ValueError, match="fused=True.*state_dtype='int8'"):
            opt.step()
        assert opt.state[w]["step"] == 0 and torch.equal(w.grad, torch.ones_like(w))
    adamkit.Adam([w], state_dtype="int8").step()  # the default path steps it (the loop where the kernel does not)


# ------------------------------------------------------------------------------------------ declarations
@pytest.mark.parametrize("info", INFOS)
def test_every_algorithm_declares_a_kind_for_every_state_and_takes_state_dtype(info):
    cls = info.cls
    parameter = inspect.signature(cls).parameters["state_dtype"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is torch.float32
    assert "state_dtype" in cls.__doc__ and "docs/low-precision.md" in cls.__doc__
    opt = cls([torch.zeros(2, 2)])
    for variant in info.variants:
        names = opt.state_names({**opt.defaults, **variant})
        assert set(names) <= set(cls.state_formats)
    assert set(cls.state_formats.values()) <= set(sf.KINDS)
    assert cls.state_formats.get("exp_avg") == "signed"


# ------------------------------------------------------------------------------------------ torch.compile
@pytest.mark.parametrize("state_dtype", [pytest.param(torch.bfloat16, id="bf16"), pytest.param("int8", id="int8")])
def test_step_under_torch_compile_never_recompiles_over_steps(state_dtype):
    """Low-precision state steps one flattened tensor at a time through one graph with dynamic sizes per set of
    flags (torch.compile specialises its first call, then compiles the dynamic graph: two graphs at most),
    whatever the tensors' shapes and state formats; ADOPT's initialising step has flags of its own. The steps
    after the second (new learning rate, new rounding keys every step) compile nothing."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    w, b = torch.randn(6, 300, requires_grad=True), torch.randn(7, requires_grad=True)
    opt = adamkit.ADOPT([w, b], lr=torch.tensor(1e-3), state_dtype=state_dtype, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    step = torch.compile(lambda: opt.step(), backend="eager")
    for t in range(6):
        w.grad, b.grad = torch.randn_like(w), torch.randn_like(b)
        step()
        sched.step()
        if t == 1:
            after_two = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == after_two <= 2 * 2
    assert opt.state[w]["step"] == 6 and opt.state[w]["exp_avg"].dtype == (
        torch.uint8 if state_dtype == "int8" else torch.bfloat16)


# ------------------------------------------------------------------------------------------ DTensor (FSDP2)
def test_dtensor_parameters_get_dtensor_codes_and_scales_and_int8_refuses_other_placements(tmp_path):
    """One process (world size 1, gloo): the state of a DTensor parameter is DTensors placed as it is, the int8
    scales included (global shape (rows, blocks per row)); int8 refuses Shard(1), bfloat16 takes it.
    The sharded runs themselves are tests/test_distributed.py's."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))

        def param(shape, placement):
            p = nn.Parameter(distribute_tensor(torch.randn(shape), mesh, [placement]))
            p.grad = distribute_tensor(torch.randn(shape), mesh, [placement])
            return p

        w, r, b = param((8, 300), Shard(0)), param((4, 5), Replicate()), param((7,), Shard(0))
        opt = adamkit.AdamW([w, r, b], state_dtype="int8", foreach=False)
        opt.step()
        for p in (w, r):
            for name in ("exp_avg", "exp_avg_sq"):
                codes, scales = opt.state[p][name], opt.state[p][sf.scale_name(name)]
                assert isinstance(codes, DTensor) and codes.dtype == torch.uint8 and codes.placements == p.placements
                assert isinstance(scales, DTensor) and scales.placements == p.placements
                assert tuple(scales.shape) == sf.scale_shape(p.shape)
        assert isinstance(opt.state[b]["exp_avg"], DTensor) and opt.state[b]["exp_avg"].dtype == torch.bfloat16
        bad = param((8, 6), Shard(1))
        with pytest.raises(ValueError, match=r'state_dtype="int8".*Shard\(0\) or Replicate\(\).*torch.bfloat16'):
            adamkit.Adam([bad], state_dtype="int8").step()
        opt = adamkit.Adam([bad], state_dtype=torch.bfloat16)
        opt.step()
        assert isinstance(opt.state[bad]["exp_avg"], DTensor) and opt.state[bad]["exp_avg"].dtype == torch.bfloat16
    finally:
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ peak memory
PEAK_SCRIPT = r"""
import gc, json, sys, torch, adamkit

def vm(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

torch.set_num_threads(1)
path = json.loads(sys.argv[1])
out = {}
for name, state_dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16), ("int8", "int8")):
    params = [torch.zeros(1024, 1024) for _ in range(32)]
    for p in params:
        p.grad = torch.randn(1024, 1024)
    opt = adamkit.AdamW(params, state_dtype=state_dtype, **path)
    opt.step()  # the state is created
    gc.collect()
    peaks = []
    for _ in range(2):
        rss = vm("VmRSS")
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # VmHWM := VmRSS
        opt.step()
        peaks.append(vm("VmHWM") - rss)
    out[name] = min(peaks)
    del opt, params
    gc.collect()
print(json.dumps(out))
"""


@pytest.mark.parametrize("path", [pytest.param({"foreach": True}, id="foreach")])
def test_a_low_precision_step_adds_at_most_one_chunk_of_float32_state_to_the_peak(path):
    """32 tensors of 1M parameters (AdamW, one thread): a foreach step with bfloat16 or int8 state decodes a
    chunk of about 1M elements at a time (``eager.CHUNK_ELEMENTS``), so its peak memory above what it held
    before the step is one chunk's float32 state, the update's and the codec's temporaries of that chunk:
    under 96 MB, where decoding the whole bucket at once held its float32 copies (256 MB of state) and more;
    and at most 32 MB more than the float32 state's step (foreach's temporaries of the whole bucket)."""
    import json
    import os
    import subprocess
    import sys

    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs to read a step's peak memory")
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, json.dumps(path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    peak = json.loads(run.stdout.strip().splitlines()[-1])
    for fmt in ("bfloat16", "int8"):
        assert peak[fmt] <= 96 * 2**20 and peak[fmt] - peak["float32"] <= 32 * 2**20, (fmt, peak)
