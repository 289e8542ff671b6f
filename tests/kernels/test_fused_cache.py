"""The fused kernel's cached pointer table: used only while it still applies, rebuilt or bypassed otherwise."""
from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels.fused import build as fused_build, launch as fused_launch
from adamkit.kernels.fused import FUSED

pytestmark = pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")


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
    return FUSED.kept(opt, opt.param_groups[0])


def test_a_table_is_kept_after_the_first_step_and_used_afterwards(monkeypatch):
    a, b, oa, ob = twin_runs()
    step_both(a, b, oa, ob, 0)
    table = table_of(oa)
    assert table is not None
    calls = []
    monkeypatch.setattr(fused_launch, "launch", lambda *args: calls.append(args))  # the general path's entry
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


@pytest.mark.parametrize("swap", ["state", "param"])
def test_storage_swapped_under_the_same_tensor_object_is_noticed(swap):
    """``state[...].data = t`` / ``p.data = t`` keep the tensor object and replace its storage; the table must
    step the new storage as the loop does, and write nothing into the old one (which may be freed)."""
    a, b, oa, ob = twin_runs(amsgrad=True)
    for s in range(3):
        step_both(a, b, oa, ob, s)
    assert table_of(oa) is not None
    old = {}

    def swap_storage(a, b, oa, ob):
        if swap == "state":
            for opt, params in ((oa, a), (ob, b)):
                state = opt.state[params[1]]
                old[opt] = state["exp_avg"].detach().clone()  # the old storage, and a copy to compare it with
                old[opt, "storage"] = state["exp_avg"].data
                state["exp_avg"].data = state["exp_avg"].data * 0.5 + 1.0
        else:
            for params in (a, b):
                old[id(params)] = params[0].detach().clone()
                old[id(params), "storage"] = params[0].data
                params[0].data = params[0].data * 0.5 + 1.0
    step_both(a, b, oa, ob, 3, swap_storage)
    for opt, params in ((oa, a), (ob, b)):
        if swap == "state":
            torch.testing.assert_close(opt.state[params[1]]["exp_avg"], ob.state[b[1]]["exp_avg"], rtol=1e-13, atol=1e-15)
            assert torch.equal(old[opt, "storage"], old[opt])  # nothing was written into the old storage
        else:
            assert torch.equal(old[id(params), "storage"], old[id(params)])
    for s in range(4, 7):  # the table is rebuilt over the new storage and used again
        step_both(a, b, oa, ob, s)
    assert table_of(oa) is not None
    for p, q in zip(a, b):
        for name in oa.state[p]:
            if name != "step":
                torch.testing.assert_close(oa.state[p][name], ob.state[q][name], rtol=1e-13, atol=1e-15)


def test_a_bad_gradient_in_a_later_cached_group_raises_before_any_group_is_stepped():
    """Issue 14 item 6 on the cached path: every group's table is checked before any group writes."""
    params = make(shapes=((5, 3), (7,), (2, 2), (4,)))
    opt = adamkit.AdamW([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}], lr=1e-2)
    for s in range(3):
        for p, g in zip(params, grads_for(params, s)):
            p.grad = g
        opt.step()
    assert all(FUSED.kept(opt, group) is not None for group in opt.param_groups)  # both groups step through their tables
    for p, g in zip(params, grads_for(params, 3)):
        p.grad = g
    params[3].grad.data = torch.zeros(5, dtype=torch.float64)  # a wrong shape, around torch's check
    before = [p.detach().clone() for p in params]
    state_before = [{k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for p in params]
    with pytest.raises(RuntimeError, match="shape"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(params, before))
    for p, saved in zip(params, state_before):
        assert opt.state[p]["step"] == saved["step"] == 3
        assert all(torch.equal(opt.state[p][k], v) for k, v in saved.items() if k != "step")


def test_replaced_or_removed_state_dicts_are_noticed():
    """The table keeps the state dicts; ``opt.state[p] = ...`` or ``del opt.state[p]`` must not go unseen."""
    a, b, oa, ob = twin_runs()
    step_both(a, b, oa, ob, 0)

    def replace_dict(a, b, oa, ob):
        oa.state[a[0]] = {k: v.clone() if torch.is_tensor(v) else v for k, v in oa.state[a[0]].items()}
    step_both(a, b, oa, ob, 1, replace_dict)

    def reset(a, b, oa, ob):
        for opt, params in ((oa, a), (ob, b)):
            del opt.state[params[2]]  # a fresh state: that parameter starts again from step 0
    step_both(a, b, oa, ob, 2, reset)
    step_both(a, b, oa, ob, 3)
    assert [oa.state[p]["step"] for p in a] == [4, 4, 2]
