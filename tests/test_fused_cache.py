"""The fused kernel's cached pointer table: used only while it still applies, rebuilt or bypassed otherwise."""
from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="the fused CPU kernel is unavailable here")


def make(seed=0, shapes=((5, 3), (7,), (2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def grads_for(params, step):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]


def twin_runs(cls=adamkit.AdaBelief, **kwargs):
    """The default (fused, cached) path and the loop path over the same gradients."""
    a, b = make(), make()
    return a, b, cls(a, lr=1e-2, **kwargs), cls(b, lr=1e-2, foreach=False, **kwargs)


def step_both(a, b, oa, ob, step, mutate=None):
    for p, q, g in zip(a, b, grads_for(a, step)):
        p.grad, q.grad = g.clone(), g.clone()
    if mutate:
        mutate(a, b, oa, ob)
    oa.step()
    ob.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


def table_of(opt):
    return opt.__dict__.get("_fused_tables", {}).get(id(opt.param_groups[0]))


def test_a_table_is_kept_after_the_first_step_and_used_afterwards(monkeypatch):
    a, b, oa, ob = twin_runs()
    step_both(a, b, oa, ob, 0)
    table = table_of(oa)
    assert table is not None
    calls = []
    monkeypatch.setattr(fused_cpu, "launch", lambda *args: calls.append(args))  # the general path's entry
    for s in range(1, 6):
        step_both(a, b, oa, ob, s)
    assert calls == [] and table_of(oa) is table
    assert all(oa.state[p]["step"] == 6 for p in a)


def test_replaced_parameter_storage_is_noticed():
    a, b, oa, ob = twin_runs()
    step_both(a, b, oa, ob, 0)

    def replace(a, b, oa, ob):
        a[0].data = a[0].data.clone()  # same Parameter object, new storage
    step_both(a, b, oa, ob, 1, replace)
    step_both(a, b, oa, ob, 2)


def test_replaced_state_and_loaded_checkpoints_are_noticed():
    a, b, oa, ob = twin_runs(amsgrad=True)
    step_both(a, b, oa, ob, 0)

    def replace_state(a, b, oa, ob):
        oa.state[a[1]]["exp_avg"] = oa.state[a[1]]["exp_avg"].clone()
    step_both(a, b, oa, ob, 1, replace_state)

    def reload(a, b, oa, ob):
        oa.load_state_dict(oa.state_dict())
    step_both(a, b, oa, ob, 2, reload)
    step_both(a, b, oa, ob, 3)


def test_missing_gradients_late_joiners_and_non_contiguous_gradients():
    a, b, oa, ob = twin_runs(cls=adamkit.ADOPT)
    step_both(a, b, oa, ob, 0)

    def drop(a, b, oa, ob):
        a[2].grad = b[2].grad = None
    step_both(a, b, oa, ob, 1, drop)  # a[2] falls one step behind: the step counts differ now
    step_both(a, b, oa, ob, 2)

    def transpose(a, b, oa, ob):
        g = a[0].grad.t().contiguous().t()  # same values, column-major
        a[0].grad, b[0].grad = g, g.clone()
    step_both(a, b, oa, ob, 3, transpose)
    assert [oa.state[p]["step"] for p in a] == [4, 4, 3]


def test_changed_flags_take_effect():
    a, b, oa, ob = twin_runs(cls=adamkit.AGD)
    step_both(a, b, oa, ob, 0)

    def flags(a, b, oa, ob):
        for opt in (oa, ob):
            opt.param_groups[0].update(amsgrad=True, maximize=True, lr=3e-3)
    step_both(a, b, oa, ob, 1, flags)
    step_both(a, b, oa, ob, 2)

    def to_loop(a, b, oa, ob):
        oa.param_groups[0]["fused"] = False
    step_both(a, b, oa, ob, 3, to_loop)


def test_gradients_swapped_behind_torchs_back_are_not_trusted():
    """``p.grad.data = ...`` skips torch's checks of dtype and size; the table must not trust such a gradient."""
    a, b, oa, ob = twin_runs()
    step_both(a, b, oa, ob, 0)
    for p in a:
        p.grad = torch.zeros_like(p)
    a[0].grad.data = torch.zeros(a[0].numel() + 4, dtype=torch.float64)  # a bigger buffer than the parameter
    before = [p.detach().clone() for p in a]
    with pytest.raises(Exception):
        oa.step()  # the general path refuses it, before anything is written
    assert all(torch.equal(p, q) for p, q in zip(a, before))
