"""Checkpoints and copies of an optimizer (adamkit.optim.checkpoint): validated whole, loaded whole, never silent.

Error inputs are written as in torch's ``OptimizerInfo`` error-input tests: each is a change to a good state
dict, the error it must raise and a pattern of its message; and every refused load must leave the optimizer
exactly as it was.
"""
from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import pickle
from typing import Any, Callable

import pytest
import torch

import adamkit
from adamkit.kernels import compiled
from backend_paths import paths
from optimizer_table import BY_NAME, OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]
PATHS = paths(exclude=("triton",), default=True)
SHAPES = ((4, 3), (5,), (2, 2, 2))


def make_params(dtype=torch.float64, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype).requires_grad_() for s in shapes]


def set_grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)


def steps(opt, params, start, stop):
    for s in range(start, stop):
        set_grads(params, s)
        opt.step()
    return opt


def trained(info, variant=None, path=None, n=4, dtype=torch.float64, **kw):
    params = make_params(dtype)
    opt = info.make(params, lr=1e-2, **(variant or {}), **(path or {}), **kw)
    return params, steps(opt, params, 0, n)


def snapshot(opt):
    """Everything an optimizer holds, as plain values, to tell whether a refused load changed anything."""
    state = {}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        state[i] = {k: (v.clone(), v.dtype) if torch.is_tensor(v) else v for k, v in opt.state.get(p, {}).items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return state, groups, [id(g) for g in opt.param_groups], [p.detach().clone() for g in opt.param_groups
                                                              for p in g["params"]]


def assert_same_snapshot(a, b):
    (sa, ga, ia, pa), (sb, gb, ib, pb) = a, b
    assert ga == gb and ia == ib
    assert sa.keys() == sb.keys()
    for i in sa:
        assert sa[i].keys() == sb[i].keys(), i
        for k in sa[i]:
            if isinstance(sa[i][k], tuple):
                assert sa[i][k][1] == sb[i][k][1] and torch.equal(sa[i][k][0], sb[i][k][0]), (i, k)
            else:
                assert sa[i][k] == sb[i][k], (i, k)
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))


def state_dict_bytes(sd):
    """A state dict as comparable plain values (tensors as (dtype, list))."""
    def plain(v):
        if torch.is_tensor(v):
            return ("tensor", str(v.dtype), tuple(v.shape), v.double().reshape(-1).tolist())
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(plain(x) for x in v)
        return v
    return plain(sd)


# ------------------------------------------------------------------ error inputs
@dataclasses.dataclass
class ErrorInput:
    """One bad checkpoint: ``mutate`` spoils a good state dict of ``info``; loading it must raise ``error``."""
    desc: str
    mutate: Callable[[Any, dict], None]
    error: type
    match: str


def _first_moment(info):
    return "exp_avg"


def _second_moment(info):
    return "exp_avg_var" if info.name == "adabelief" else "exp_avg_sq"


def _drop(key_of):
    def mutate(info, sd):
        del sd["state"][1][key_of(info)]
    return mutate


def _reshape(shape):
    def mutate(info, sd):
        sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].reshape(shape)
    return mutate


def _set_group(key, value):
    def mutate(info, sd):
        sd["param_groups"][0][key] = value
    return mutate


def _extra_group(info, sd):
    sd["param_groups"].append({**sd["param_groups"][0], "params": []})


def _drop_param(info, sd):
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]


def _orphan_state(info, sd):
    sd["state"][99] = copy.deepcopy(sd["state"][0])


def _foreign_state_key(info, sd):
    sd["state"][0]["momentum_buffer"] = torch.zeros_like(sd["state"][0]["exp_avg"])


def _bad_step(value):
    def mutate(info, sd):
        sd["state"][2]["step"] = value
    return mutate


def _not_a_tensor(info, sd):
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].tolist()


ERROR_INPUTS = [
    ErrorInput("missing first moment", _drop(_first_moment), KeyError, r"parameter 1 .*'exp_avg'"),
    ErrorInput("missing second moment", _drop(_second_moment), KeyError, r"parameter 1 .*'exp_avg_(sq|var)'"),
    ErrorInput("missing step", _drop(lambda info: "step"), KeyError, r"parameter 1 .*'step'"),
    ErrorInput("state of a transposed parameter", _reshape((3, 4)), ValueError, r"parameter 0.*\(3, 4\).*\(4, 3\)"),
    ErrorInput("state of a flattened parameter", _reshape((12,)), ValueError, r"parameter 0.*\(12,\).*\(4, 3\)"),
    ErrorInput("state that is not a tensor", _not_a_tensor, TypeError, r"'exp_avg' of parameter 0.*tensor"),
    ErrorInput("a foreign state key", _foreign_state_key, ValueError, r"parameter 0.*'momentum_buffer'"),
    ErrorInput("a negative step", _bad_step(-1), ValueError, r"'step' of parameter 2.*whole number >= 0"),
    ErrorInput("a fractional step", _bad_step(2.5), ValueError, r"'step' of parameter 2.*whole number >= 0"),
    ErrorInput("capturable=True (torch)", _set_group("capturable", True), ValueError, "capturable"),
    ErrorInput("a negative learning rate", _set_group("lr", -1.0), ValueError, r"param group 0.*lr.*>= 0"),
    ErrorInput("NaN betas", _set_group("betas", (float("nan"), 0.9)), ValueError, r"betas\[0\].*\[0, 1\)"),
    ErrorInput("a foreign hyperparameter", _set_group("momentum", 0.9), ValueError, "momentum"),
    ErrorInput("one group too many", _extra_group, ValueError, r"2 param groups.*1"),
    ErrorInput("one parameter too few", _drop_param, ValueError, r"param group 0 .*2 parameters.*3"),
    ErrorInput("state for a parameter in no group", _orphan_state, ValueError, r"99"),
]


def _applies(info, e):
    if e.desc.startswith("capturable") and "capturable" not in info.cls.hyperparameters:
        return False  # a foreign key there: refused as such (another error input)
    return True


ERROR_CASES = [pytest.param(info, e, id=f"{info.name}-{e.desc}") for info in OPTIMIZERS for e in ERROR_INPUTS
               if _applies(info, e)]


@pytest.mark.parametrize("info,error_input", ERROR_CASES)
def test_bad_checkpoints_raise_and_change_nothing(info, error_input):
    """Items 2, 4 (at load), 6: each bad checkpoint raises a clear error, and nothing is half-loaded."""
    params, opt = trained(info)
    sd = copy.deepcopy(opt.state_dict())
    error_input.mutate(info, sd)
    target_params, target = trained(info, n=2)  # an optimizer with its own state, to see that it is kept
    before = snapshot(target)
    with pytest.raises(error_input.error, match=error_input.match):
        target.load_state_dict(sd)
    assert_same_snapshot(snapshot(target), before)
    steps(target, target_params, 2, 3)  # and it still steps


def test_missing_moment_does_not_restart_from_zero():
    """Item 2 as reported: without exp_avg_sq, the next step would move a parameter by ~5x the learning rate."""
    params, opt = trained(BY_NAME["adam"], n=5)
    sd = copy.deepcopy(opt.state_dict())
    del sd["state"][0]["exp_avg_sq"]
    with pytest.raises(KeyError, match="exp_avg_sq"):
        adamkit.Adam(make_params(), lr=1e-2).load_state_dict(sd)


# ------------------------------------------------------------------ algorithms
FAMILIES = {"adam": "adam", "adamw": "adam", "amsgrad": "adam"}
PAIRS = [pytest.param(a, b, id=f"{a.name}-into-{b.name}") for a, b in itertools.permutations(OPTIMIZERS, 2)
         if FAMILIES.get(a.name, a.name) != FAMILIES.get(b.name, b.name)]


@pytest.mark.parametrize("src,dst", PAIRS)
def test_checkpoint_of_another_algorithm_is_refused_naming_both(src, dst):
    """Item 3: every pair of different algorithms."""
    _, opt = trained(src)
    sd = opt.state_dict()
    target = dst.make(make_params(), lr=1e-2)
    before = snapshot(target)
    with pytest.raises(ValueError, match=rf"(?s){src.cls.__name__}.*{dst.cls.__name__}"):
        target.load_state_dict(sd)
    assert_same_snapshot(snapshot(target), before)


@pytest.mark.parametrize("src,dst", [("adabelief", "adam"), ("adam", "adabelief"), ("agd", "eadam"),
                                     ("adopt", "adam"), ("adam", "agd")])
def test_unmarked_checkpoint_of_another_algorithm_is_refused(src, dst):
    """Item 3 without adamkit's marker (an older adamkit, or a tool that rebuilds the dict): told by its keys."""
    _, opt = trained(BY_NAME[src])
    sd = copy.deepcopy(opt.state_dict())
    for g in sd["param_groups"]:
        g.pop("adamkit_algorithm")
    with pytest.raises(ValueError, match=BY_NAME[dst].cls.__name__):
        BY_NAME[dst].make(make_params(), lr=1e-2).load_state_dict(sd)


@pytest.mark.parametrize("src,dst", [("adam", "adamw"), ("adamw", "amsgrad"), ("amsgrad", "adam")])
def test_adam_family_checkpoints_load_into_each_other(src, dst):
    """Adam, AdamW and AMSGrad are one update rule; the checkpoint's flags say which, as in torch."""
    a, opt = trained(BY_NAME[src])
    fresh = [p.detach().clone().requires_grad_() for p in a]
    other = BY_NAME[dst].make(fresh, lr=1e-2)
    other.load_state_dict(opt.state_dict())
    steps(opt, a, 4, 8)
    steps(other, fresh, 4, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, fresh))


TORCH_INTO = [pytest.param(t, d, path, id=f"torch.{t.__name__}-into-{d}-{pname}")
              for t in (torch.optim.Adam, torch.optim.AdamW) for d in ("adam", "adamw", "amsgrad")
              for pname, path in PATHS.items() if pname != "compiled"]


@pytest.mark.parametrize("torch_cls,dst,path", TORCH_INTO)
def test_torch_adam_checkpoints_resume_in_adamkit(torch_cls, dst, path):
    """torch's Adam/AdamW checkpoints resume in adamkit's Adam/AdamW/AMSGrad as torch would continue them."""
    kw = {"amsgrad": True} if dst == "amsgrad" else {}
    ref = make_params()
    topt = steps(torch_cls(ref, lr=1e-2, weight_decay=0.1, foreach=False, **kw), ref, 0, 4)
    buffer = io.BytesIO()
    torch.save(topt.state_dict(), buffer)
    buffer.seek(0)
    fresh = [p.detach().clone().requires_grad_() for p in ref]
    opt = BY_NAME[dst].make(fresh, lr=1e-2, **path)
    opt.load_state_dict(torch.load(buffer, weights_only=True))
    group = opt.param_groups[0]
    assert group["decoupled_weight_decay"] == (torch_cls is torch.optim.AdamW) and group["weight_decay"] == 0.1
    steps(topt, ref, 4, 8)
    steps(opt, fresh, 4, 8)
    for x, y in zip(ref, fresh):
        torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)
    # and back: adamkit's checkpoint resumes in torch
    back = torch_cls([p.detach().clone().requires_grad_() for p in fresh], lr=1e-2, foreach=False, **kw)
    back.load_state_dict(opt.state_dict())
    assert back.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("dst", ["eadam", "adabelief", "adopt", "agd"])
@pytest.mark.parametrize("torch_cls", [torch.optim.Adam, torch.optim.AdamW], ids=["Adam", "AdamW"])
def test_torch_adam_checkpoints_into_other_algorithms_are_refused(torch_cls, dst):
    ref = make_params()
    topt = steps(torch_cls(ref, lr=1e-2), ref, 0, 3)
    target = BY_NAME[dst].make(make_params(), lr=1e-2)
    before = snapshot(target)
    with pytest.raises(ValueError, match=rf"(?s)torch\.optim\.Adam.*{BY_NAME[dst].cls.__name__}"):
        target.load_state_dict(topt.state_dict())
    assert_same_snapshot(snapshot(target), before)


# ------------------------------------------------------------------ hooks
def names_matching(optimizer, state_dict):
    """torch's documented recipe (Optimizer.load_state_dict note): pair the saved state by parameter name."""
    current = optimizer.state_dict()
    adapted = copy.deepcopy(current)
    for g_ind in range(len(state_dict["param_groups"])):
        saved_group = state_dict["param_groups"][g_ind]
        for k, v in saved_group.items():
            if k not in ["params", "param_names"]:
                adapted["param_groups"][g_ind][k] = v
        for param_id, param_name in zip(current["param_groups"][g_ind]["params"],
                                        current["param_groups"][g_ind]["param_names"]):
            id_in_loaded = saved_group["params"][saved_group["param_names"].index(param_name)]
            if id_in_loaded in state_dict["state"]:
                adapted["state"][param_id] = copy.deepcopy(state_dict["state"][id_in_loaded])
    return adapted


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_pre_hook_result_is_what_gets_loaded(info):
    """Item 5: torch's remap-by-param_names recipe loads each parameter's own moments."""
    params = make_params()
    names = ["a", "b", "c"]
    opt = steps(info.make(list(zip(names, params)), lr=1e-2), params, 0, 4)
    fresh = [p.detach().clone().requires_grad_() for p in params]
    order = [2, 0, 1]  # the new optimizer lists the same parameters in another order
    other = info.make([(names[i], fresh[i]) for i in order], lr=1e-2)
    other.register_load_state_dict_pre_hook(names_matching)
    other.load_state_dict(opt.state_dict())
    for i in range(3):
        for key, value in opt.state[params[i]].items():
            got = other.state[fresh[i]][key]
            assert torch.equal(got, value) if torch.is_tensor(value) else got == value, (i, key)
    steps(opt, params, 4, 7)
    steps(other, fresh, 4, 7)
    assert all(torch.equal(x, y) for x, y in zip(params, fresh))


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_post_hook_changes_are_kept(info):
    """Item 5: what a post-hook sets in opt.state is what the optimizer holds afterwards."""
    params, opt = trained(info)
    other = info.make([p.detach().clone().requires_grad_() for p in params], lr=1e-2)
    calls = []

    def post(o):
        calls.append(o)
        for p in o.param_groups[0]["params"]:
            o.state[p]["exp_avg"] = torch.full_like(o.state[p]["exp_avg"], 7.0)
    other.register_load_state_dict_post_hook(post)
    other.load_state_dict(opt.state_dict())
    assert calls == [other]
    assert all(torch.equal(other.state[p]["exp_avg"], torch.full_like(p, 7.0)) for p in other.param_groups[0]["params"])


def test_pre_hook_sees_a_shallow_copy_and_can_change_hyperparameters():
    params, opt = trained(BY_NAME["adamw"])
    sd = opt.state_dict()
    other = adamkit.AdamW([p.detach().clone().requires_grad_() for p in params], lr=1e-2)

    def pre(o, state_dict):
        state_dict["param_groups"] = copy.deepcopy(state_dict["param_groups"])
        state_dict["param_groups"][0]["lr"] = 0.5
    other.register_load_state_dict_pre_hook(pre)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] == 0.5 and sd["param_groups"][0]["lr"] == 1e-2


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("path", list(PATHS), ids=list(PATHS))
@pytest.mark.parametrize("src,dst", [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                     (torch.bfloat16, torch.float64), (torch.float32, torch.bfloat16)],
                         ids=["f32-f64", "f64-f32", "bf16-f64", "f32-bf16"])
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_checkpoint_into_parameters_of_another_dtype_steps(info, src, dst, path, monkeypatch):
    """Item 9: the state is cast to the parameters' math dtype, so the next step runs on every path."""
    monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)  # the rules, without compile time
    _, opt = trained(info, dtype=src)
    fresh = make_params(dst)
    other = info.make(fresh, lr=1e-2, **PATHS[path])
    other.load_state_dict(opt.state_dict())
    math = torch.float32 if dst == torch.bfloat16 else dst
    for p in fresh:
        assert {v.dtype for v in other.state[p].values() if torch.is_tensor(v)} == {math}
    before = [p.detach().clone() for p in fresh]
    steps(other, fresh, 4, 6)
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(fresh, before))


def test_torch_bfloat16_checkpoint_state_is_kept_in_float32():
    """torch keeps bfloat16 state for bfloat16 parameters; adamkit computes in float32 and keeps that."""
    ref = make_params(torch.bfloat16)
    topt = steps(torch.optim.Adam(ref, lr=1e-2), ref, 0, 3)
    fresh = make_params(torch.bfloat16)
    opt = adamkit.Adam(fresh, lr=1e-2)
    opt.load_state_dict(topt.state_dict())
    assert opt.state[fresh[0]]["exp_avg"].dtype == torch.float32
    steps(opt, fresh, 3, 5)


# ------------------------------------------------------------------ copies
def _copies():
    def deep(params, opt):
        return copy.deepcopy((params, opt))

    def pickled(params, opt):
        return pickle.loads(pickle.dumps((params, opt)))

    def torch_saved(params, opt):
        buffer = io.BytesIO()
        torch.save((params, opt), buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)
    return {"deepcopy": deep, "pickle": pickled, "torch.save": torch_saved}


COPIES = _copies()


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_copies_load_add_groups_and_step_like_the_original(info, how):
    """Item 8: a copy of an optimizer can load a state dict, take a param group and step like the original."""
    params, opt = trained(info, info.variants[-1])
    cparams, copied = COPIES[how](params, opt)
    assert type(copied) is type(opt)
    copied.load_state_dict(opt.state_dict())
    extra, cextra = torch.ones(3, dtype=torch.float64, requires_grad=True), torch.ones(3, dtype=torch.float64,
                                                                                       requires_grad=True)
    opt.add_param_group({"params": [extra], "lr": 3e-3})
    copied.add_param_group({"params": [cextra], "lr": 3e-3})
    with pytest.raises(ValueError, match="weight_decy"):
        copied.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "weight_decy": 0.1})
    steps(opt, params + [extra], 4, 8)
    steps(copied, cparams + [cextra], 4, 8)
    assert all(torch.equal(x, y) for x, y in zip(params + [extra], cparams + [cextra]))


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_state_dict_is_identical_across_load_deepcopy_and_pickle(info):
    """Item 18 (torch's test_state_dict_deterministic): no key appears or changes on the way."""
    params, opt = trained(info)
    reference = state_dict_bytes(opt.state_dict())
    other = info.make(make_params(), lr=1e-2)
    other.load_state_dict(opt.state_dict())
    assert state_dict_bytes(other.state_dict()) == reference
    for how, make_copy in COPIES.items():
        _, copied = make_copy(params, opt)
        assert state_dict_bytes(copied.state_dict()) == reference, how
        copied.load_state_dict(copied.state_dict())
        assert state_dict_bytes(copied.state_dict()) == reference, how
        assert set(copied.defaults) == set(opt.defaults), how
    assert "differentiable" in opt.defaults or all("differentiable" not in g for g in other.param_groups)


# ------------------------------------------------------------------ round trips
def _with_hooks(opt):
    opt.register_load_state_dict_pre_hook(lambda o, sd: copy.deepcopy(sd))
    opt.register_load_state_dict_post_hook(lambda o: None)
    return opt


def _resume(how, info, variant, path, params, opt):
    """(params, optimizer) that continue the run of ``opt`` after step 4, obtained in the way ``how``."""
    if how in COPIES:
        return COPIES[how](params, opt)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=not any(callable(v) for v in variant.values()))
    fresh = [p.clone().requires_grad_() for p in saved["params"]]
    if how.startswith("fresh"):
        target = info.make(fresh, lr=1e-2, **variant, **path)
    else:  # into a copied optimizer: a deepcopy of a fresh one, loaded
        target = copy.deepcopy(info.make(fresh, lr=1e-2, **variant, **path))
        fresh = [p for g in target.param_groups for p in g["params"]]
    if how.endswith("hooks"):
        _with_hooks(target)
    target.load_state_dict(saved["opt"])
    return fresh, target


ROUND_TRIPS = ["fresh", "fresh+hooks", "copied", "copied+hooks", *COPIES]
ROUND_TRIP_CASES = [pytest.param(info, variant, pname, how, id=f"{info.name}-{i}-{pname}-{how}")
                    for info in OPTIMIZERS for i, variant in enumerate(info.variants)
                    for pname in PATHS for how in ROUND_TRIPS
                    if pname not in ("compiled", "default") or (i == 0 and how in ("fresh+hooks", "pickle"))]


@pytest.mark.parametrize("info,variant,pname,how", ROUND_TRIP_CASES)
def test_round_trip_is_bit_exact(info, variant, pname, how, monkeypatch):
    """Save, deepcopy, pickle, load into a fresh or a copied optimizer, with and without hooks: bit-exact."""
    if pname == "compiled":
        monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)
    path = PATHS[pname]
    straight, sopt = trained(info, variant, path, n=8)
    params, opt = trained(info, variant, path, n=4)
    reference = state_dict_bytes(opt.state_dict())
    rparams, ropt = _resume(how, info, variant, path, params, opt)
    assert state_dict_bytes(ropt.state_dict()) == reference
    steps(ropt, rparams, 4, 8)
    for x, y in zip(straight, rparams):
        assert torch.equal(x, y)
    assert state_dict_bytes(ropt.state_dict()) == state_dict_bytes(sopt.state_dict())


def test_round_trip_on_the_compiled_path_itself():
    """One real torch.compile run: a resumed AdamW matches the straight run bit for bit."""
    info = BY_NAME["adamw"]
    straight, _ = trained(info, {}, PATHS["compiled"], n=6)
    params, opt = trained(info, {}, PATHS["compiled"], n=3)
    fresh, target = _resume("fresh+hooks", info, {}, PATHS["compiled"], params, opt)
    steps(target, fresh, 3, 6)
    assert all(torch.equal(x, y) for x, y in zip(straight, fresh))
