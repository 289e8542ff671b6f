"""The fused kernel's kept tables for low-precision state: used only while they still apply, bit for bit the
general path's step, rebuilt or bypassed otherwise."""
from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels.fused import build as fused_build, launch as fused_launch
from adamkit.kernels.fused import FUSED, StoredGroup
from adamkit.core import state_format

pytestmark = pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")

SHAPES = ((6, 300), (7,), (4, 3, 5, 5), (2, 2))  # int8 matrices and bfloat16 vectors in one group


def make(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]


def set_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)


def table_of(opt):
    return FUSED.kept(opt, opt.param_groups[0])


def twin(cls=adamkit.AMSGrad, state_dtype="int8", **kwargs):
    """The default path (kept tables) and the same optimizer whose tables are dropped before every step."""
    a, b = make(), make()
    return a, b, cls(a, lr=1e-2, state_dtype=state_dtype, **kwargs), cls(b, lr=1e-2, state_dtype=state_dtype, **kwargs)


def step_both(a, b, oa, ob, step, mutate=None):
    set_grads(a, step)
    set_grads(b, step)
    if mutate:
        mutate(a, b, oa, ob)
    oa.step()
    FUSED.forget(ob)  # b always takes the general path
    ob.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        for key, t in oa.state[p].items():
            other = ob.state[q][key]
            assert torch.equal(t, other) if isinstance(t, torch.Tensor) else t == other, key


@pytest.mark.parametrize("state_dtype", ["int8", torch.bfloat16])
@pytest.mark.parametrize("cls", [adamkit.AMSGrad, adamkit.AdaBelief, adamkit.ADOPT, adamkit.AGD])
def test_kept_tables_step_bit_for_bit_as_the_general_path(monkeypatch, cls, state_dtype):
    a, b, oa, ob = twin(cls, state_dtype)
    step_both(a, b, oa, ob, 0)
    kept = table_of(oa)
    assert isinstance(kept, StoredGroup)
    assert len(kept.tables) == (2 if state_dtype == "int8" else 1)  # int8 matrices, bfloat16 vectors
    general = []
    real = fused_launch.launch
    monkeypatch.setattr(fused_launch, "launch", lambda *args, **kw: (general.append(1), real(*args, **kw))[1])
    for s in range(1, 6):
        general.clear()
        step_both(a, b, oa, ob, s)
        assert len(general) == len(kept.tables)  # only b's general path launched; a ran from its tables
    assert table_of(oa) is kept and all(oa.state[p]["step"] == 6 for p in a)


def _swap_codes(a, b, oa, ob):
    for opt, params in ((oa, a), (ob, b)):
        opt.state[params[0]]["exp_avg"] = opt.state[params[0]]["exp_avg"].clone()


def _swap_scales(a, b, oa, ob):
    for opt, params in ((oa, a), (ob, b)):
        key = state_format.scale_name("exp_avg_sq")
        opt.state[params[2]][key] = opt.state[params[2]][key].clone()


def _new_seed(a, b, oa, ob):
    for opt, params in ((oa, a), (ob, b)):
        opt.state[params[1]]["rounding_seed"] = 12345


def _replace_param_data(a, b, oa, ob):
    for params in (a, b):
        params[0].data = params[0].data.clone()


def _late_step_count(a, b, oa, ob):
    for opt, params in ((oa, a), (ob, b)):
        opt.state[params[3]]["step"] = 10


def _new_learning_rate(a, b, oa, ob):
    for opt in (oa, ob):
        opt.param_groups[0]["lr"] = 3e-3


@pytest.mark.parametrize("mutate", [_swap_codes, _swap_scales, _new_seed, _replace_param_data, _late_step_count,
                                    _new_learning_rate])
def test_changes_behind_the_tables_are_noticed(mutate):
    a, b, oa, ob = twin()
    step_both(a, b, oa, ob, 0)
    step_both(a, b, oa, ob, 1)
    step_both(a, b, oa, ob, 2, mutate)
    step_both(a, b, oa, ob, 3)


def test_a_missing_gradient_takes_the_general_path_and_drops_the_tables():
    a, b, oa, ob = twin()
    step_both(a, b, oa, ob, 0)
    assert table_of(oa) is not None
    step_both(a, b, oa, ob, 1, lambda a, b, oa, ob: (setattr(a[1], "grad", None), setattr(b[1], "grad", None)))
    assert table_of(oa) is None  # a partial step keeps nothing
    step_both(a, b, oa, ob, 2)
    assert table_of(oa) is None  # two step counts in the group now: the general path, bucket by bucket
    assert {oa.state[p]["step"] for p in a} == {2, 3}


def test_a_state_dtype_set_by_hand_still_raises_naming_the_conversion():
    a, b, oa, ob = twin()
    step_both(a, b, oa, ob, 0)
    oa.param_groups[0]["state_dtype"] = torch.bfloat16
    set_grads(a, 1)
    before = [p.detach().clone() for p in a]
    with pytest.raises(ValueError, match="convert_state_dtype"):
        oa.step()
    assert all(torch.equal(p, q) for p, q in zip(a, before))


def test_a_failed_kernel_step_keeps_no_half_built_tables(monkeypatch):
    a, b, oa, ob = twin(fused=True)
    step_both(a, b, oa, ob, 0)
    FUSED.forget(oa)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    real = fused_launch.launch_low_precision
    monkeypatch.setattr(fused_launch, "launch_low_precision", failing)
    set_grads(a, 1)
    with pytest.raises(RuntimeError, match="boom"):
        oa.step()
    assert table_of(oa) is None
