"""torch's optimizer contract, checked for every optimizer and every variant in the table."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

import adamkit
from backend_paths import paths
from optimizer_table import OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]
VARIANTS = [(info, variant) for info in OPTIMIZERS for variant in info.variants]
VARIANT_IDS = [f"{info.name}-{i}" for info in OPTIMIZERS for i, _ in enumerate(info.variants)]
PATHS, PATH_IDS = list(paths().values()), list(paths())


def make_params(dtype=torch.float64, seed=0, shapes=((4, 3), (5,), (2, 2, 2))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def set_grads(params, step, scale=1.0):
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        real = torch.randn(torch.view_as_real(p).shape if p.is_complex() else p.shape, generator=g,
                           dtype=torch.float64)
        grad = torch.view_as_complex(real) if p.is_complex() else real
        p.grad = (grad * scale).to(p.dtype)


def run(info, variant, params, steps, **kw):
    opt = info.make(params, lr=1e-2, **variant, **kw)
    for s in range(steps):
        set_grads(params, s)
        opt.step()
    return opt


# ----------------------------------------------------------------- paths agree
@pytest.mark.parametrize("path", PATHS[1:], ids=PATH_IDS[1:])
@pytest.mark.parametrize("info,variant", VARIANTS, ids=VARIANT_IDS)
def test_every_path_agrees_with_the_loop(info, variant, path):
    a, b = make_params(), make_params()
    run(info, variant, a, 12, foreach=False)
    run(info, variant, b, 12, **path)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


# ------------------------------------------------------------------ resume
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("info,variant", VARIANTS, ids=VARIANT_IDS)
def test_resume_is_bit_exact(info, variant, path):
    straight = make_params()
    run(info, variant, straight, 10, **path)

    resumed = make_params()
    opt = run(info, variant, resumed, 4, **path)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in resumed], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    # a callable hyperparameter (ADOPT's clip_lambda) needs full unpickling; numbers load with weights_only
    saved = torch.load(buffer, weights_only=not any(callable(v) for v in variant.values()))
    fresh = [p.clone().requires_grad_() for p in saved["params"]]
    opt2 = info.make(fresh, lr=1e-2, **variant, **path)
    opt2.load_state_dict(saved["opt"])
    for s in range(4, 10):
        set_grads(fresh, s)
        opt2.step()
    for x, y in zip(straight, fresh):
        assert torch.equal(x, y)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_state_dict_keeps_flags_and_state_dtypes(info):
    params = [torch.randn(3, dtype=torch.bfloat16, requires_grad=True), torch.randn(2, requires_grad=True)]
    opt = info.make(params, **info.variants[-1])
    for s in range(3):
        set_grads(params, s)
        opt.step()
    sd = opt.state_dict()
    group = sd["param_groups"][0]
    for key, value in opt.defaults.items():
        assert key in group
    # state of the bfloat16 parameter is float32, and stays so through a load into a fresh optimizer
    dtypes = {k: v.dtype for k, v in opt.state[params[0]].items() if torch.is_tensor(v)}
    assert dtypes and set(dtypes.values()) == {torch.float32}
    opt2 = info.make([p.detach().clone().requires_grad_() for p in params], **info.variants[-1])
    opt2.load_state_dict(copy.deepcopy(sd))
    p0 = opt2.param_groups[0]["params"][0]
    assert {k: v.dtype for k, v in opt2.state[p0].items() if torch.is_tensor(v)} == dtypes
    assert isinstance(opt2.state[p0]["step"], int) and opt2.state[p0]["step"] == 3
    for key in opt.defaults:
        if key != "params":
            assert opt2.param_groups[0][key] == opt.param_groups[0][key]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_load_state_dict_converts_tensor_steps(info):
    """Checkpoints of the reference implementations keep ``step`` as a tensor."""
    params = make_params()
    opt = run(info, {}, params, 3)
    sd = copy.deepcopy(opt.state_dict())
    for state in sd["state"].values():
        state["step"] = torch.tensor(float(state["step"]))
    opt.load_state_dict(sd)
    assert all(type(s["step"]) is int and s["step"] == 3 for s in opt.state.values())


# ----------------------------------------------------------- user's data safe
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("info,variant", VARIANTS, ids=VARIANT_IDS)
def test_grad_is_never_modified(info, variant, path):
    params = make_params()
    opt = info.make(params, **{"lr": 1e-2, "weight_decay": 0.1, "maximize": True, **variant, **path})
    for s in range(3):
        set_grads(params, s)
        before = [p.grad.clone() for p in params]
        opt.step()
        for p, g in zip(params, before):
            assert torch.equal(p.grad, g)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_sparse_gradients_are_refused(info):
    p = torch.zeros(4, requires_grad=True)
    p.grad = torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (4,))
    opt = info.make([p])
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


# ----------------------------------------------------------- step semantics
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_params_without_grad_are_skipped_and_late_joiners_start_their_own_schedule(info, path):
    early, late = make_params(shapes=((3,),)), make_params(seed=1, shapes=((3,),))
    opt = info.make([early[0], late[0]], lr=1e-2, **path)
    late_start = late[0].detach().clone()
    for s in range(3):
        set_grads(early, s)
        opt.step()
    assert torch.equal(late[0], late_start) and len(opt.state[late[0]]) == 0
    # from now on both get gradients; the late one must behave as a fresh optimizer would
    twin = late[0].detach().clone().requires_grad_()
    reference = info.make([twin], lr=1e-2, **path)
    for s in range(3, 8):
        set_grads(early, s)
        set_grads(late, s)
        twin.grad = late[0].grad.clone()
        opt.step()
        reference.step()
        assert opt.state[late[0]]["step"] == reference.state[twin]["step"] == s - 2
        assert opt.state[early[0]]["step"] == s + 1
        torch.testing.assert_close(late[0], twin, rtol=0, atol=0)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_first_step_moves_as_the_algorithm_says(info):
    params = make_params()
    before = [p.detach().clone() for p in params]
    run(info, {}, params, 1)
    moved = any(not torch.equal(a, b) for a, b in zip(params, before))
    assert moved == info.first_step_moves


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_maximize_equals_minimising_the_negated_gradient(info):
    a, b = make_params(), make_params()
    opt_a = info.make(a, lr=1e-2, maximize=True)
    opt_b = info.make(b, lr=1e-2)
    for s in range(6):
        set_grads(a, s)
        set_grads(b, s, scale=-1.0)
        opt_a.step()
        opt_b.step()
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_closure_is_evaluated_with_grad_and_its_loss_returned(info):
    model = nn.Linear(3, 1).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    opt = info.make(model.parameters(), lr=1e-2)
    calls = []

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        calls.append(loss.item())
        return loss

    loss = opt.step(closure)
    assert calls and loss.item() == calls[0]
    assert opt.step(loss=1.5) == 1.5
    with pytest.raises(ValueError, match="closure or loss"):
        opt.step(closure, loss=1.0)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_per_group_hyperparameters_and_add_param_group(info):
    a, b = make_params(shapes=((3,),)), make_params(seed=2, shapes=((3,),))
    opt = info.make([{"params": a, "lr": 1e-2}, {"params": b, "lr": 0.0}])
    b_start = b[0].detach().clone()
    for s in range(3):
        set_grads(a + b, s)
        opt.step()
    assert torch.equal(b[0], b_start)  # lr = 0 in b's group: nothing moves, decoupled decay included
    c = make_params(seed=3, shapes=((2,),))
    opt.add_param_group({"params": c, "lr": 1e-3})
    assert opt.param_groups[-1]["betas"] == opt.defaults["betas"]
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": make_params(seed=4, shapes=((2,),)), "lr": -1.0})
    with pytest.raises(ValueError, match="did you mean 'weight_decay'"):  # a typo of a setting
        opt.add_param_group({"params": make_params(seed=5, shapes=((2,),)), "weight_decy": 0.1})
    with pytest.raises(ValueError, match="'momentum' is a hyperparameter of .*torch.optim.SGD"):  # would be ignored
        opt.add_param_group({"params": make_params(seed=5, shapes=((2,),)), "momentum": 0.9})
    assert len(opt.param_groups) == 3
    # metadata keys (a group's name, timm's lr_scale) are kept and unused, as torch keeps them
    d = make_params(seed=6, shapes=((2,),))
    opt.add_param_group({"params": d, "name": "head", "lr_scale": 0.5})
    assert opt.param_groups[-1]["name"] == "head" and opt.param_groups[-1]["lr_scale"] == 0.5
    set_grads(a + b + c + d, 7)
    opt.step()
    assert opt.state_dict()["param_groups"][-1]["lr_scale"] == 0.5


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_lr_scheduler_drives_the_optimizer(info):
    params = make_params()
    opt = info.make(params, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for s in range(5):
        set_grads(params, s)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.25)


# ----------------------------------------------------------- dtypes & complex
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("info,variant", VARIANTS, ids=VARIANT_IDS)
def test_half_precision_params_step_in_float32(info, variant, path, dtype):
    """A half parameter follows float32 math from the same (rounded) start, up to its own rounding."""
    half = make_params(dtype=dtype)
    full = [p.detach().float().requires_grad_() for p in half]
    opt_h = info.make(half, lr=1e-2, **variant, **path)
    opt_f = info.make(full, lr=1e-2, **variant, **path)
    for s in range(5):
        set_grads(half, s)
        for h, f in zip(half, full):
            f.grad = h.grad.float()
        opt_h.step()
        opt_f.step()
        for h, f in zip(half, full):
            assert h.dtype == dtype
            assert all(v.dtype == torch.float32 for v in opt_h.state[h].values() if torch.is_tensor(v))
            # one step in float32, then rounding to the half type
            torch.testing.assert_close(h.float(), f, rtol=2 * torch.finfo(dtype).eps, atol=1e-3)
            with torch.no_grad():
                f.copy_(h.float())  # follow the rounded trajectory


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("info,variant", VARIANTS, ids=VARIANT_IDS)
def test_complex_params_are_stepped_as_their_real_view(info, variant, path):
    cplx = make_params(shapes=((3, 2),))[0].detach()
    cplx = torch.complex(cplx, cplx.flip(0)).requires_grad_()
    real = torch.view_as_real(cplx.detach()).clone().requires_grad_()
    opt_c = info.make([cplx], lr=1e-2, **variant, **path)
    opt_r = info.make([real], lr=1e-2, **variant, **path)
    for s in range(6):
        set_grads([cplx], s)
        real.grad = torch.view_as_real(cplx.grad).clone()
        opt_c.step()
        opt_r.step()
    assert torch.equal(torch.view_as_real(cplx), real)
    assert all(v.is_complex() for v in opt_c.state[cplx].values() if torch.is_tensor(v))


def test_float32_matches_float64_within_float32_rounding():
    for info in OPTIMIZERS:
        for variant in info.variants:
            a = make_params()
            b = [p.detach().float().requires_grad_() for p in a]
            oa, ob = info.make(a, lr=1e-2, **variant), info.make(b, lr=1e-2, **variant)
            for s in range(5):
                set_grads(a, s)
                for x, y in zip(a, b):
                    y.grad = x.grad.float()
                oa.step()
                ob.step()
            for x, y in zip(a, b):
                torch.testing.assert_close(y.double(), x, rtol=1e-4, atol=1e-5, msg=f"{info.name} {variant}")


# ------------------------------------------------------------------ errors
BAD_COMMON = [
    ("lr", -1e-3, "lr"),
    ("lr", float("nan"), "lr"),
    ("lr", "0.1", "lr"),
    ("betas", (0.9,), "betas"),
    ("betas", (1.0, 0.999), r"betas\[0\]"),
    ("betas", (0.9, -0.1), r"betas\[1\]"),
    ("weight_decay", -0.1, "weight_decay"),
    ("maximize", 1, "maximize"),
    ("foreach", "yes", "foreach"),
]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
@pytest.mark.parametrize("arg,value,match", BAD_COMMON, ids=[f"{a}={v!r}" for a, v, _ in BAD_COMMON])
def test_invalid_hyperparameters_raise_naming_the_argument(info, arg, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        info.make(make_params(), **{arg: value})


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_invalid_eps_and_range_in_message(info):
    with pytest.raises(ValueError, match=rf"{info.eps_name} must be a finite number >= 0"):
        info.make(make_params(), **{info.eps_name: -1.0})


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_foreach_and_fused_together_refused(info):
    with pytest.raises(ValueError, match="foreach=True and fused=True"):
        info.make(make_params(), foreach=True, fused=True)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (adamkit.ADOPT, {"clip_lambda": "sqrt"}, "clip_lambda"),
        (adamkit.ADOPT, {"capturable": True}, "capturable"),
        (adamkit.Adam, {"differentiable": True}, "differentiable"),
        (adamkit.AGD, {"clip": 0.0}, "clip"),
        (adamkit.AGD, {"win_z_init": "ones"}, "win_z_init"),
        (adamkit.AdaBelief, {"rectified_amsgrad": True}, "rectified_amsgrad"),
        (adamkit.AdaBelief, {"rectify": "yes"}, "rectify"),
        (adamkit.AdaBelief, {"print_change_log": None}, "print_change_log"),
    ],
)
def test_algorithm_specific_errors(cls, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls(make_params(), **kwargs)


def test_unknown_keyword_raises():
    with pytest.raises(TypeError):
        adamkit.Adam(make_params(), weight_decouple=True)


def test_adopt_clip_lambda_forms_agree():
    """A callable, an exponent and the default give the same trajectory."""
    runs = []
    for clip in (lambda t: t**0.25, 0.25, "default"):
        params = make_params()
        kwargs = {} if clip == "default" else {"clip_lambda": clip}
        opt = adamkit.ADOPT(params, lr=1e-2, **kwargs)
        for s in range(8):
            set_grads(params, s, scale=100.0)
            opt.step()
        runs.append(params)
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            assert torch.equal(x, y)


def test_adopt_clipping_is_active_with_large_gradients():
    clipped, unclipped = make_params(), make_params()
    oc, ou = adamkit.ADOPT(clipped, lr=1e-2), adamkit.ADOPT(unclipped, lr=1e-2, clip_lambda=None)
    for s in range(4):
        set_grads(clipped, s, scale=1.0 if s == 0 else 1e4)  # small v_0, then huge gradients
        set_grads(unclipped, s, scale=1.0 if s == 0 else 1e4)
        oc.step()
        ou.step()
    assert not torch.equal(clipped[0], unclipped[0])


def test_agd_win_z_init_params_keeps_the_scale():
    """The reference's zero z shrinks θ to about a third on the first Win step; z = θ does not."""
    zeros, from_params = make_params(), make_params()
    start = zeros[0].detach().clone()
    for params, init in ((zeros, "zeros"), (from_params, "params")):
        opt = adamkit.AGD(params, lr=1e-6, win=True, win_z_init=init)
        set_grads(params, 0)
        opt.step()
    torch.testing.assert_close(zeros[0], start / 3, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_params[0], start, rtol=1e-4, atol=1e-5)


def test_adabelief_rectified_amsgrad_uses_the_maximum():
    plain, corrected = make_params(), make_params()
    op = adamkit.AdaBelief(plain, lr=1e-2, amsgrad=True)
    oc = adamkit.AdaBelief(corrected, lr=1e-2, amsgrad=True, rectified_amsgrad=True)
    for s in range(12):
        scale = 10.0 if s < 3 else 0.1  # the maximum stays above the current s
        set_grads(plain, s, scale)
        set_grads(corrected, s, scale)
        op.step()
        oc.step()
        if s < 5:  # the first five steps do not use the rectified branch
            assert torch.equal(plain[0], corrected[0])
    assert not torch.equal(plain[0], corrected[0])


def test_loss_aware_optimizers_need_the_loss():
    class LossAware(adamkit.Adam):
        requires_loss = True
        seen = []

        def coefficients(self, group, step, loss):
            self.seen.append(loss)
            return super().coefficients(group, step, loss)

    params = make_params()
    opt = LossAware(params)
    set_grads(params, 0)
    with pytest.raises(ValueError, match="uses the loss value"):
        opt.step()
    opt.step(loss=torch.tensor(2.5))
    opt.step(lambda: 1.25)
    assert LossAware.seen == [2.5, 1.25]  # one bucket: the parameters share dtype and step
    with pytest.raises(ValueError, match="finite"):
        opt.step(loss=math.inf)
