"""Stochastic rounding of bfloat16/float16 parameters (``param_rounding="stochastic"``, issue 23 item 3).

The float32 result of a step is written to a half-precision parameter with unbiased stochastic rounding
(``state_format.round_param``) from the counter-based stream of slot ``state_format.PARAM_SLOT`` of the
parameter's ``rounding_seed``: small updates and weight decay that round-to-nearest loses are kept in
expectation, every path writes the same bits, and a resumed run is bit-identical.
"""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch

import adamkit
from adamkit.core import state_format as sf
from adamkit.kernels import BACKENDS, compiled
from optimizer_table import BY_NAME, OPTIMIZERS

DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]
STATE_DTYPES = [pytest.param(torch.float32, id="f32state"), pytest.param(torch.bfloat16, id="bf16state"),
                pytest.param("int8", id="int8state")]


def _steps_cpu_tensors(name) -> bool:
    if name != "triton":
        return True
    from adamkit.kernels.gpu import launch

    return launch.steps_cpu_tensors()


#: every backend that runs here on CPU tensors, but the loop (the reference)
OTHER_PATHS = [pytest.param(b.options, id=name) for name, b in BACKENDS.items()
               if name != "loop" and b.available() and _steps_cpu_tensors(name)]
TRITON = BACKENDS["triton"].options


@pytest.fixture(autouse=True)
def cheap_compiles(monkeypatch):
    """The compiled path traced by dynamo without code generation (inductor: tests/kernels/test_compiled.py);
    the rounding around it is eager either way."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _bits(t: torch.Tensor) -> torch.Tensor:
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.detach().contiguous().view(view).long()


# ------------------------------------------------------------------------------------------------ the key
@pytest.mark.parametrize("bad", ["up", "Stochastic", None, True, 1])
def test_bad_values_are_refused_naming_the_argument_and_the_valid_values(bad):
    p = torch.zeros(3, requires_grad=True)
    for make in (lambda: adamkit.AdamW([p], param_rounding=bad),
                 lambda: adamkit.Adam([{"params": [p], "param_rounding": bad}])):
        with pytest.raises(ValueError, match=r'param_rounding must be "nearest" or "stochastic", got'):
            make()
    opt = adamkit.AdamW([p])
    with pytest.raises(ValueError, match="param_rounding"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "param_rounding": bad})


@pytest.mark.parametrize("info", [pytest.param(i, id=i.name) for i in OPTIMIZERS])
def test_every_optimizer_takes_the_key_nearest_by_default(info):
    p, q = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = info.make([{"params": [p]}, {"params": [q], "param_rounding": "stochastic"}])
    assert [g["param_rounding"] for g in opt.param_groups] == ["nearest", "stochastic"]
    assert opt.state_dict()["param_groups"][1]["param_rounding"] == "stochastic"


# --------------------------------------------------------------------------------------- the rounding itself
def _neighbours(x: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The values of ``dtype`` just below and just above float32 ``x`` (equal where ``x`` is one)."""
    near = x.to(dtype).float()
    low = torch.where(near > x, torch.nextafter(near.to(dtype), torch.tensor(-math.inf, dtype=dtype)).float(), near)
    high = torch.where(near < x, torch.nextafter(near.to(dtype), torch.tensor(math.inf, dtype=dtype)).float(), near)
    return low, high


#: ordinary values, float16's subnormals (below 2**-14) and values below its smallest one (2**-24), float32
#: subnormals (bfloat16's range), both signs
VALUES = torch.tensor([1.0 + 2 ** -10, 1.0 + 1 / 3 * 2 ** -7, -3.14159265, 1e-3, -7.7e-5, 123.456, 3e-6, -4.1e-7,
                       1e-8, -3e-8, 5.9e-8, 1e-40, 2.5e-39])
KEYS = 4096


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_rounding_is_unbiased_between_the_two_neighbours(dtype):
    """Each value rounds to one of its two neighbours in ``dtype``, and the mean of KEYS independent roundings
    (one stream each) is the value itself within 6 standard deviations: the standard deviation of one rounding
    is at most half the neighbours' distance, so of the mean at most ``(high - low) / (2·sqrt(KEYS))``."""
    low, high = _neighbours(VALUES, dtype)
    x = VALUES.expand(KEYS, -1).contiguous()
    rounded = torch.empty_like(x, dtype=dtype)
    for k in range(KEYS):
        sf.round_param(x[k], rounded[k], sf.param_key(sf.rounding_seed(k), 7))
    r = rounded.float()
    assert bool(((r == low) | (r == high)).all())
    mean = r.double().mean(0)
    bound = 6 * (high - low).double() / (2 * math.sqrt(KEYS))
    err = (mean - VALUES.double()).abs()
    assert bool((err <= bound).all()), (err / bound)
    # both neighbours are taken where neither is all but certain
    chance = ((VALUES - low) / (high - low)).double()
    up = (r == high).double().mean(0)
    likely = (chance > 0.01) & (chance < 0.99)
    assert int(likely.sum()) >= 8 and bool(((up > 0) & (up < 1))[likely].all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_values_of_the_dtype_stay_inf_stays_nan_is_one_nan_and_no_finite_value_becomes_inf(dtype):
    exact = torch.tensor([0.0, -0.0, 1.0, -2.5, 2 ** -24, 2 ** -14, 65504.0]).to(dtype)
    out = torch.empty_like(exact)
    sf.round_param(exact.float(), out, 12345)
    assert torch.equal(_bits(out), _bits(exact))
    huge = torch.finfo(dtype).max
    x = torch.tensor([math.inf, -math.inf, math.nan, -math.nan, 1e38 if dtype == torch.float16 else 3.4e38,
                      -7e4 if dtype == torch.float16 else -3.4e38])
    for key in range(50):
        out = torch.empty(6, dtype=dtype)
        sf.round_param(x, out, key)
        assert out[0] == math.inf and out[1] == -math.inf
        nan = 0x7FC0 if dtype == torch.bfloat16 else 0x7E00
        assert _bits(out[2:4]).tolist() == [nan, nan]
        assert out[4] == huge and out[5] == -huge


def test_the_elements_are_numbered_in_the_layout_the_state_takes():
    """A dense parameter whose dim 0 is outermost in memory (channels_last) is numbered in its memory order, a
    transposed one in row-major order: as the state of each is laid out (state_format.layout_like)."""
    x = torch.randn(4, 3, 5, 2)
    key = 99
    cl = torch.empty(4, 3, 5, 2, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    sf.round_param(x, cl, key)
    flat = x.permute(0, 2, 3, 1).reshape(-1)
    assert torch.equal(_bits(cl.permute(0, 2, 3, 1).reshape(-1)) & 0xFFFF, sf.round_param_bits(flat, torch.bfloat16, key))
    y = torch.randn(6, 9)
    t = torch.empty(9, 6, dtype=torch.float16).t()  # dense, dim 0 inner
    sf.round_param(y, t, key)
    assert torch.equal(_bits(t.reshape(-1)) & 0xFFFF, sf.round_param_bits(y.reshape(-1), torch.float16, key))


# ----------------------------------------------------------------------------------- what it is for
N = 16384


@pytest.mark.parametrize("dtype", DTYPES)
def test_weight_decay_that_nearest_rounding_loses_is_kept_in_expectation(dtype):
    """AdamW with zero gradients: only the decoupled decay moves the parameters, by a factor 1 - 1e-4 a step,
    far below half a unit in the last place of 1.0 in either dtype: nearest rounding never moves them, the
    stochastic rounding's mean follows float32. Bound: the rounding errors are martingale differences of at
    most one unit in the last place ``ulp`` (2**-8 below 1 in bfloat16, 2**-11 in float16), so the mean of N
    parameters after T steps has a standard deviation of at most ``ulp·sqrt(T) / (2·sqrt(N))``; 6 of them."""
    steps = 300
    finals = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.ones(N, dtype=dtype, requires_grad=True)
        opt = adamkit.AdamW([p], lr=1e-2, weight_decay=1e-2, param_rounding=rounding)
        for _ in range(steps):
            p.grad = torch.zeros_like(p)
            opt.step()
        finals[rounding] = p.detach().double()
    expected = (1.0 - 1e-4) ** steps
    assert bool((finals["nearest"] == 1.0).all())
    ulp = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    bound = 6 * ulp * math.sqrt(steps) / (2 * math.sqrt(N))
    assert abs(finals["stochastic"].mean().item() - expected) <= bound, (finals["stochastic"].mean(), expected)
    assert 1.0 - expected > 3 * bound  # the test tells the two apart


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", [pytest.param({"foreach": False}, id="loop")] + OTHER_PATHS)
def test_the_mean_of_many_small_updates_matches_float32(dtype, path):
    """Adam with a constant gradient of ±1 moves each parameter by about ``lr`` a step, a small fraction of a
    unit in the last place: the mean displacement of N half-precision parameters is float32's within the
    bound of the test above; nearest rounding loses it all."""
    if path == TRITON:
        pytest.skip("Triton's interpreter is too slow for hundreds of steps (the paths agree bit for bit below)")
    steps, lr = 200, 3e-5
    sign = torch.where(torch.arange(N) % 2 == 0, 1.0, -1.0)
    start = 0.75 + 0.1 * torch.rand(N, generator=torch.Generator().manual_seed(0))
    finals = {}
    for label, dtype_, rounding in (("float32", torch.float32, "nearest"), ("nearest", dtype, "nearest"),
                                    ("stochastic", dtype, "stochastic")):
        p = start.to(dtype).to(dtype_).requires_grad_()  # the same start in every run
        opt = adamkit.Adam([p], lr=lr, param_rounding=rounding, **path)
        for _ in range(steps):
            p.grad = sign.to(dtype_)
            opt.step()
        finals[label] = (start.to(dtype).double() - p.detach().double()) * sign  # against the gradient
    moved = finals["float32"].mean().item()
    assert moved == pytest.approx(steps * lr, rel=1e-2)
    assert finals["nearest"].abs().max().item() == 0.0
    ulp = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11  # values in [0.5, 1)
    bound = 6 * ulp * math.sqrt(steps) / (2 * math.sqrt(N))
    assert abs(finals["stochastic"].mean().item() - moved) <= bound
    assert moved > 3 * bound


# ------------------------------------------------------------------------------------------ paths agree
def _start(dtype, seed=0):
    """Parameters of many layouts (a transposed and a channels_last one, an empty one last) and magnitudes:
    ordinary, float16's subnormals (below 2**-14) and bfloat16's (float32's subnormals)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 5), (300,), (2, 300), (1,), (5, 4, 3)]
    params = [torch.randn(s, generator=g) for s in shapes]
    params.append(torch.randn(7, 6, generator=g).t())  # dense, dim 0 inner: numbered in row-major order
    params.append(torch.randn(2, 3, 4, 5, generator=g).to(memory_format=torch.channels_last))
    params.append(torch.empty(0))  # (an empty tensor before a one-element one: see the note below)
    scale = torch.tensor([1.0, 3e-6, 4e-8, 1e-39 if dtype == torch.bfloat16 else 1e-7])
    out = []
    for p in params:
        x = p * scale[torch.arange(p.numel()) % 4].view(p.shape) if p.is_contiguous() else p
        out.append(x.to(dtype).requires_grad_())
    return out


def _run(info, variant, path, dtype, state_dtype, steps=3, rounding="stochastic"):
    params = _start(dtype)
    opt = info.make(params, lr=3e-2, **variant, **path, state_dtype=state_dtype, param_rounding=rounding)
    g = torch.Generator().manual_seed(4)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return params, opt


def _assert_same(ref, got, ref_opt, got_opt, what):
    """The same bits in every parameter and state tensor, the same other state entries."""
    for i, (x, y) in enumerate(zip(ref, got)):
        assert torch.equal(_bits(x), _bits(y)), f"{what}: parameter {i}"
        for key, value in ref_opt.state[x].items():
            other = got_opt.state[y][key]
            if isinstance(value, torch.Tensor):
                assert torch.equal(_bits(value), _bits(other)), f"{what}: state {key} of {i}"
            else:
                assert value == other, f"{what}: {key} of {i}"


#: the optimizers with a decoupled weight decay, in a setting that takes it: with zero gradients their update is
#: that decay alone (θ·(1 - α·λ), or θ - θ·λ for ADOPT), one or two float32 operations every path computes
#: alike, so that what the paths write can only differ by their rounding
DECAYING = [pytest.param(BY_NAME[name], variant, id=name) for name, variant in (
    ("adamw", {"weight_decay": 0.37}), ("adabelief", {"weight_decay": 0.37}), ("agd", {"weight_decay": 0.37}),
    ("adopt", {"weight_decay": 0.37, "decouple": True}), ("amsgrad", {"weight_decay": 0.37, "decoupled_weight_decay": True}))]


def _decay(info, variant, path, dtype, state_dtype, steps=3):
    params = _start(dtype)
    opt = info.make(params, lr=0.05, **variant, **path, state_dtype=state_dtype, param_rounding="stochastic")
    for _ in range(steps):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    return params, opt


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_loop_rounds_the_float32_result_as_the_reference(dtype, state_dtype):
    """AdamW with zero gradients: each step writes ``round_param(θ·(1 - α·λ), param_key(seed, step))``."""
    info = BY_NAME["adamw"]
    params, opt = _decay(info, {"weight_decay": 0.37}, {"foreach": False}, dtype, state_dtype, steps=0)
    expected = [p.detach().clone() for p in params]
    factor = 1.0 - 0.05 * 0.37
    for step in range(3):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
        for i, (p, e) in enumerate(zip(params, expected)):
            sf.round_param(e.float() * factor, e, sf.param_key(sf.rounding_seed(i), step))
            assert torch.equal(_bits(p), _bits(e)), (step, i)
    assert any(not torch.equal(p, p.float().mul(factor).to(dtype)) for p in params)  # not nearest's rounding


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", OTHER_PATHS)
@pytest.mark.parametrize("info, variant", DECAYING)
def test_every_path_writes_the_loops_bits(info, variant, path, dtype, state_dtype):
    """Where the float32 results are the same on every path (the decay alone), so are the parameters' bits:
    every element, every layout, both dtypes, every state format, the kernels' threads and tables included."""
    if path == TRITON and info.name not in ("adamw", "adopt"):
        pytest.skip("Triton's interpreter: two optimizers")
    ref, _ = _decay(info, variant, {"foreach": False}, dtype, state_dtype)
    got, got_opt = _decay(info, variant, path, dtype, state_dtype)
    for i, (x, y) in enumerate(zip(ref, got)):
        assert torch.equal(_bits(x), _bits(y)), f"{path} against the loop: parameter {i}"
    assert all("rounding_seed" in got_opt.state[p] for p in got)


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", [p for p in OTHER_PATHS if p.values[0] != TRITON])
@pytest.mark.parametrize("info", [pytest.param(i, id=i.name) for i in OPTIMIZERS])
def test_every_path_agrees_with_the_loop_to_one_unit_in_the_last_place(info, path, dtype, state_dtype):
    """With gradients, the paths' float32 math agrees to rounding (tests/optim/test_low_precision.py), so a
    stochastic rounding may land on the other neighbour: from one state (two loop steps in), one more step on
    each path writes parameters within one unit in the last place of the dtype, the same bits almost
    everywhere."""
    params = _start(dtype, seed=1)
    opt = info.make(params, lr=1e-2, foreach=False, state_dtype=state_dtype, param_rounding="stochastic")
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        if _ < 2:
            opt.step()
    a, opt_a = copy.deepcopy((params, opt))
    b, opt_b = copy.deepcopy((params, opt))
    opt_b.param_groups[0].update(path)
    opt_a.step()
    opt_b.step()
    results = [a, b]
    same = total = 0
    for x, y in zip(*results):
        info_ = torch.finfo(dtype)
        a, b = x.detach().float(), y.detach().float()
        ulp = info_.eps * torch.maximum(a.abs(), b.abs()) + info_.smallest_normal * info_.eps  # one step of dtype
        assert bool(((a - b).abs() <= ulp).all()), ((a - b).abs() / ulp).max()
        same += int((_bits(x) == _bits(y)).sum())
        total += x.numel()
    assert same >= 0.95 * total, (same, total)


@pytest.mark.parametrize("path", [pytest.param({"foreach": False}, id="loop")] + OTHER_PATHS)
def test_complex32_parameters_round_their_float16_real_views(path):
    info = BY_NAME["adamw"]
    params = [torch.randn(4, 3, dtype=torch.complex64).to(torch.complex32).requires_grad_() for _ in range(2)]
    if path == TRITON:
        pytest.skip("complex32 on the Triton path: as float16, covered above")
    results = []
    for p_path in ({"foreach": False}, path):
        ps = [p.detach().clone().requires_grad_() for p in params]
        opt = info.make(ps, lr=1e-2, param_rounding="stochastic", **p_path)
        g = torch.Generator().manual_seed(1)
        for _ in range(3):
            for p in ps:
                p.grad = torch.randn(p.shape, dtype=torch.complex64, generator=g).to(torch.complex32)
            opt.step()
        results.append(ps)
    for x, y in zip(*results):
        assert torch.equal(torch.view_as_real(x).view(torch.int16), torch.view_as_real(y).view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", [pytest.param({"foreach": False}, id="loop")] + OTHER_PATHS)
def test_float32_and_float64_parameters_are_unchanged_by_the_key(dtype, path):
    if path == TRITON and dtype == torch.float64:
        pytest.skip("float64 on the Triton interpreter: covered by test_triton.py")
    info = BY_NAME["adam"]
    variant = info.variants[1]
    state_dtype = torch.float32
    ref, ref_opt = _run(info, variant, path, dtype, state_dtype, rounding="nearest")
    got, got_opt = _run(info, variant, path, dtype, state_dtype, rounding="stochastic")
    _assert_same(ref, got, ref_opt, got_opt, "stochastic against nearest")
    assert not any("rounding_seed" in got_opt.state[p] for p in got)


# ------------------------------------------------------------------------------------------------ resume
def _clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", [pytest.param({"foreach": False}, id="loop"),
                                  pytest.param({"foreach": True}, id="foreach")]
                         + [p for p in OTHER_PATHS if p.id == "fused"])
def test_a_resumed_run_is_bit_identical(dtype, state_dtype, path):
    """Six steps straight, or three, a state dict through torch.save, a new optimizer and three more."""
    info = BY_NAME["adamw"]
    g = torch.Generator().manual_seed(3)
    start = [torch.randn(s, generator=g).to(dtype) for s in [(4, 300), (17,)]]
    grads = [[torch.randn(p.shape, generator=g).to(dtype) for p in start] for _ in range(6)]

    def steps(opt, params, which):
        for t in which:
            for p, grad in zip(params, grads[t]):
                p.grad = grad.clone()
            opt.step()

    straight = _clone_params(start)
    opt = info.make(straight, lr=1e-2, state_dtype=state_dtype, param_rounding="stochastic", **path)
    steps(opt, straight, range(6))

    first = _clone_params(start)
    opt1 = info.make(first, lr=1e-2, state_dtype=state_dtype, param_rounding="stochastic", **path)
    steps(opt1, first, range(3))
    buffer = io.BytesIO()
    torch.save(opt1.state_dict(), buffer)
    buffer.seek(0)
    resumed = _clone_params(first)
    opt2 = info.make(resumed, lr=1e-2, state_dtype=state_dtype, **path)  # nearest: the checkpoint's key wins
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt2.param_groups[0]["param_rounding"] == "stochastic"
    steps(opt2, resumed, range(3, 6))
    _assert_same(straight, resumed, opt, opt2, "resumed")


# -------------------------------------------------------------------- float32 state and a rounding_seed
def _float32_state_run(extra_group=True, steps=2):
    torch.manual_seed(0)
    w = torch.randn(6, 5, dtype=torch.bfloat16, requires_grad=True)
    b = torch.randn(5, dtype=torch.float16, requires_grad=True)
    groups = [{"params": [w, b], "param_rounding": "stochastic"}]
    if extra_group:  # two groups: every group is checked before the first is stepped (step_checks)
        groups.append({"params": [torch.randn(3, requires_grad=True)], "state_dtype": torch.bfloat16})
    params = [p for group in groups for p in group["params"]]
    opt = adamkit.AdamW(groups, lr=1e-2)
    for _ in range(steps):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    return params, opt


def test_float32_state_with_stochastic_parameters_keeps_a_seed_and_steps_with_other_groups():
    params, opt = _float32_state_run()
    w, b, v = params
    for i, p in enumerate((w, b)):
        state = opt.state[p]
        assert state["rounding_seed"] == sf.rounding_seed(i)
        assert state["exp_avg"].dtype == torch.float32 and state["step"] == 2
    assert opt.state[v]["exp_avg"].dtype == torch.bfloat16


def test_a_checkpoint_of_float32_state_with_stochastic_parameters_round_trips():
    params, opt = _float32_state_run()
    sd = opt.state_dict()
    assert sd["state"][0]["rounding_seed"] == opt.state[params[0]]["rounding_seed"]
    fresh = _clone_params(params)
    other = adamkit.AdamW([{"params": fresh[:2]}, {"params": fresh[2:], "state_dtype": torch.bfloat16}], lr=1e-2)
    other.load_state_dict(copy.deepcopy(sd))
    assert other.param_groups[0]["param_rounding"] == "stochastic"
    for p, q in zip(params, fresh):
        assert opt.state[p].keys() == other.state[q].keys()
        assert opt.state[p]["rounding_seed"] == other.state[q]["rounding_seed"]
    for ps, o in ((params, opt), (fresh, other)):
        for p in ps:
            p.grad = torch.full_like(p, 0.5)
        o.step()
    _assert_same(params, fresh, opt, other, "after loading")
    # the state dict of the loaded optimizer is the same again
    again = other.state_dict()
    assert again["state"][0]["rounding_seed"] == sd["state"][0]["rounding_seed"]


def test_a_bad_seed_in_float32_state_is_refused_naming_it():
    params, opt = _float32_state_run(extra_group=False)
    sd = opt.state_dict()
    sd["state"][0]["rounding_seed"] = -1
    with pytest.raises(ValueError, match="rounding_seed"):
        adamkit.AdamW(_clone_params(params), lr=1e-2).load_state_dict(sd)


def test_a_group_switched_to_nearest_still_saves_and_loads_its_seeds():
    """A seed kept in float32 state is not taken for low-precision state: switching param_rounding back to
    "nearest" by hand, saving and loading works, and the seed is kept."""
    params, opt = _float32_state_run(extra_group=False)
    opt.param_groups[0]["param_rounding"] = "nearest"
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    other = adamkit.AdamW(_clone_params(params), lr=1e-2)
    other.load_state_dict(sd)
    assert other.param_groups[0]["param_rounding"] == "nearest"
    assert "rounding_seed" in other.state[other.param_groups[0]["params"][0]]


def test_switching_to_stochastic_by_hand_creates_the_seed_at_the_next_step():
    p = torch.ones(8, dtype=torch.bfloat16, requires_grad=True)
    opt = adamkit.AdamW([p], lr=1e-2)  # the fused table is kept after a step of the whole group
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
    assert "rounding_seed" not in opt.state[p]
    opt.param_groups[0]["param_rounding"] = "stochastic"
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["rounding_seed"] == sf.rounding_seed(0) and opt.state[p]["step"] == 3


@pytest.mark.parametrize("target", [torch.bfloat16, "int8"])
def test_converting_the_state_dtype_keeps_the_seeds_of_a_stochastic_group(target):
    params, opt = _float32_state_run(extra_group=False)
    sd = opt.state_dict()
    low = adamkit.convert_state_dtype(sd, target)
    back = adamkit.convert_state_dtype(low, torch.float32)
    for i in range(2):
        assert low["state"][i]["rounding_seed"] == back["state"][i]["rounding_seed"] == sd["state"][i]["rounding_seed"]
    sd["param_groups"][0]["param_rounding"] = "nearest"
    dropped = adamkit.convert_state_dtype(adamkit.convert_state_dtype(sd, target), torch.float32)
    assert "rounding_seed" not in dropped["state"][0]  # a group that rounds to nearest needs none
    fresh = _clone_params(params)
    adamkit.AdamW(fresh, lr=1e-2, state_dtype=target).load_state_dict(low)
