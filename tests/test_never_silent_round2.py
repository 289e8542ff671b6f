"""Issue 25 ("never silent, round 2"), the optimizer side: overflow with low-precision state, integer and
duplicate parameters. (The int8 codec's own cases are in tests/optim/test_state_format.py and
tests/kernels/test_fused_low_precision.py, the checkpoints' in tests/optim/test_checkpoint_low_precision.py,
the results store's in tests/bench/test_faults.py.)"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import adamkit
from adamkit.kernels import BACKENDS, compiled
from optimizer_table import BY_NAME, OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]
PATHS = {name: dict(backend.options) for name, backend in BACKENDS.items()}
STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": "int8"}


@pytest.fixture(scope="module")
def traced_compiled_path():
    """The compiled path traced by dynamo without code generation (inductor's own tests are in tests/kernels); one
    trace per algorithm and flags for the whole module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled, "BACKEND", "aot_eager")
        torch._dynamo.reset()
        yield
        torch._dynamo.reset()


def _path(name, request):
    if not BACKENDS[name].available():
        pytest.skip(f"the {name} path is unavailable here")
    if name == "compiled":
        request.getfixturevalue("traced_compiled_path")
    return PATHS[name]


# ------------------------------------------------------------------ item 1: overflow with low-precision state
#: gradients of a (2, 256) parameter (one int8 block per row), one per step; ``bad`` goes into element [0, 0]
#: (and [1, 5]) of step ``at``: a finite gradient whose square overflows float32, or a non-finite one
OVERFLOWS = {"1e20": 1e20, "-3e38": -3e38, "inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _poisoned(info, variant, state_dtype, path, bad, at, steps=3):
    p = torch.zeros(2, 256, requires_grad=True)
    opt = info.make([p], lr=1e-2, **variant, state_dtype=state_dtype, **path)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        p.grad = torch.randn(2, 256, generator=g)
        if step == at:
            p.grad[0, 0] = bad
            p.grad[1, 5] = bad
        opt.step()
    return set(map(tuple, (~torch.isfinite(p)).nonzero().tolist()))


@pytest.mark.parametrize("bad", list(OVERFLOWS), ids=list(OVERFLOWS))
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_low_precision_state_poisons_exactly_the_elements_float32_state_poisons(info, path, bad, request):
    """Issue 25 item 1: with float32 state a gradient above 1.8e19 gives an infinite second moment and a finite
    parameter (the step is m/inf = 0); int8 state stored a NaN scale for the block and all 256 parameters of it
    became NaN. On every algorithm (each variant reaching another branch), path and state dtype, the parameter
    elements made non-finite are those float32 state makes non-finite, no others."""
    kwargs = _path(path, request)
    # every variant where it is cheap (the compiled path traces each anew); the first step where it differs
    # (ADOPT's stores v = g², AGD's has no previous moment), a later one everywhere
    variants = info.variants[:1] if path == "compiled" or bad not in ("1e20", "inf") else info.variants
    for variant in variants:
        for at in (0, 1) if info.name in ("adopt", "agd") else (1,):
            want = _poisoned(info, variant, torch.float32, kwargs, OVERFLOWS[bad], at)
            for name in ("bfloat16", "int8"):
                got = _poisoned(info, variant, STATE_DTYPES[name], kwargs, OVERFLOWS[bad], at)
                assert got == want, (variant, at, name, sorted(got)[:4], len(got), sorted(want))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("state_dtype", list(STATE_DTYPES))
def test_adopt_first_step_with_one_infinite_gradient_keeps_every_parameter_finite(path, state_dtype, request):
    """ADOPT's first step stores v = g² and does not move the parameter: a single +inf gradient gives v = inf for
    that element, whose later steps are g / inf = 0; int8 state made the whole block NaN at the second step."""
    p = torch.ones(4, 300, requires_grad=True)
    opt = adamkit.ADOPT([p], lr=0.1, state_dtype=STATE_DTYPES[state_dtype], **_path(path, request))
    p.grad = torch.ones(4, 300)
    p.grad[2, 17] = math.inf
    opt.step()
    for _ in range(3):
        p.grad = torch.ones(4, 300)
        opt.step()
    assert bool(torch.isfinite(p).all())
    assert p[2, 17].item() == 1.0 and bool((p.view(-1)[:5] < 1).all())  # that element stays; the others move


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_float32_state_holding_inf_and_nan_converts_without_poisoning_its_neighbours(state_dtype):
    """convert_state_dtype encodes with the same codec: a float32 checkpoint whose second moments hold inf (and NaN)
    converts to low-precision state that goes on stepping its other elements."""
    params = [torch.zeros(3, 256, requires_grad=True), torch.zeros(300, requires_grad=True)]
    opt = adamkit.AMSGrad(params, lr=1e-2)
    for step in range(2):
        for p in params:
            p.grad = torch.full_like(p, 0.5)
            if step == 0:
                p.grad.view(-1)[:2] = torch.tensor([1e20, math.nan])
        opt.step()
    sd = adamkit.convert_state_dtype(opt.state_dict(), STATE_DTYPES[state_dtype])
    copies = [p.detach().clone().requires_grad_() for p in params]
    low = adamkit.AMSGrad(copies, lr=1e-2, state_dtype=STATE_DTYPES[state_dtype])
    low.load_state_dict(sd)
    for o, ps in ((opt, params), (low, copies)):
        for p in ps:
            p.grad = torch.full_like(p, 0.5)
        o.step()
    for p, q in zip(params, copies):
        assert torch.equal(~torch.isfinite(p), ~torch.isfinite(q)) and int((~torch.isfinite(q)).sum()) == 1


# ------------------------------------------------------------------ item 3: integer and bool parameters
NOT_STEPPED = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn]


@pytest.mark.parametrize("dtype", NOT_STEPPED, ids=str)
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_parameters_of_a_dtype_no_path_steps_are_refused_when_the_optimizer_is_built(info, dtype):
    """torch's internal errors at the first step ("lerp_kernel_scalar" not implemented for 'Long'), or ADOPT's first
    step taking them silently: refused at construction, naming the parameter (its index in its group) and dtype."""
    good = torch.zeros(2, 3, requires_grad=True)
    bad = torch.zeros(2, 3, dtype=dtype)
    with pytest.raises(TypeError, match=rf"parameter 1 of param group 0 is {dtype}: adamkit steps parameters of "
                                        r"dtype float16, bfloat16, float32, float64, complex32"):
        info.make([good, bad])
    with pytest.raises(ValueError, match=rf"parameter 0 \('ids'\) of param group 1 is {dtype}"):
        info.make([{"params": [good]}, {"params": [("ids", bad)]}])
    opt = info.make([good])
    with pytest.raises(TypeError, match=rf"parameter 0 of param group 1 is {dtype}"):
        opt.add_param_group({"params": bad})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_complex_and_half_parameters_are_still_stepped(info, dtype):
    p = torch.zeros(2, 3, dtype=dtype, requires_grad=True)
    opt = info.make([p], lr=0.1)
    for _ in range(2):
        p.grad = torch.ones_like(p)
        opt.step()
    assert bool(torch.isfinite(torch.view_as_real(p) if p.is_complex() else p).all()) and bool(p.ne(0).any())


# ------------------------------------------------------------------ item 4: a parameter listed twice
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_a_parameter_listed_twice_in_one_group_is_refused_on_every_construction(info):
    """torch warns (and means to raise); adamkit's loop and fused paths stepped it twice in turn while foreach
    stepped both copies from the same old values, so the paths disagreed. Refused, naming both positions."""
    p, q = (torch.zeros(3, requires_grad=True) for _ in range(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused before torch's warning
        with pytest.raises(ValueError, match=r"parameter 2 of param group 0 is the same tensor as parameter 0: "
                                             r"list each parameter once"):
            info.make([p, q, p])
        with pytest.raises(ValueError, match=r"parameter 1 of param group 1 is the same tensor as parameter 0"):
            info.make([{"params": [q]}, {"params": iter([p, p])}])
        opt = info.make([q])
        with pytest.raises(ValueError, match=r"parameter 1 \('b'\) of param group 0 is the same tensor"):
            info.make([("a", p), ("b", p)])
        with pytest.raises(ValueError, match=r"parameter 1 of param group 1 is the same tensor as parameter 0"):
            opt.add_param_group({"params": [p, p]})
        assert len(opt.param_groups) == 1


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_a_parameter_in_two_groups_is_refused_naming_both(info):
    p, q = (torch.zeros(3, requires_grad=True) for _ in range(2))
    with pytest.raises(ValueError, match=r"parameter 1 of param group 1 is already parameter 0 of param group 0"):
        info.make([{"params": [p]}, {"params": [q, p]}])
    opt = info.make([q, p])
    with pytest.raises(ValueError, match=r"parameter 0 of param group 1 is already parameter 1 of param group 0"):
        opt.add_param_group({"params": p, "lr": 0.5})
    assert len(opt.param_groups) == 1


def test_the_int8_check_of_a_group_still_names_its_parameter():
    opt = adamkit.Adam([torch.zeros(2, 3, requires_grad=True)], state_dtype="int8")
    with pytest.raises(ValueError, match=r"parameter 0 is torch.float64: put it in a param group"):
        opt.add_param_group({"params": [torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)]})
