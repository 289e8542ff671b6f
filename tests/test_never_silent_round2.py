"""Issue 25 ("never silent, round 2"), the optimizer side: overflow with low-precision state, integer and
duplicate parameters. (The int8 codec's own cases are in tests/optim/test_state_format.py and
tests/kernels/test_fused_low_precision.py, the checkpoints' in tests/optim/test_checkpoint_low_precision.py,
the results store's in tests/bench/test_faults.py.)"""
from __future__ import annotations

import warnings

import pytest
import torch

import adamkit
from optimizer_table import BY_NAME, OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]


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
