"""Checkpoints of low-precision optimizer state (state_dtype=torch.bfloat16 / "int8"; issue 13 item 3).

A state dict keeps the state as stored (bfloat16 tensors, uint8 codes with their ``<name>_finite_absmax``, each
parameter's ``rounding_seed``) and its groups' ``state_dtype``; a round trip into a fresh optimizer resumes
bit for bit; a checkpoint of another format, or one with a spoiled tensor, is refused before anything
changes; ``adamkit.convert_state_dtype`` re-encodes a state dict for another ``state_dtype``.
"""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch

import adamkit
from adamkit.core import state_format
from adamkit.optim.convert import CONVERSION_SLOT
from backend_paths import SLOW, paths
from optimizer_table import BY_NAME, OPTIMIZERS
from test_checkpoint import assert_same_snapshot, snapshot, state_dict_bytes

LOW = {"bf16": torch.bfloat16, "int8": "int8"}
#: the fused kernel, where it runs, as the default
PATHS = {**paths(exclude=("fused", *SLOW)), "default": {}}
#: run by test_round_trip_on_the_compiled_path only
COMPILED = {"compiled": dict(fused="compiled")}


def _fused_takes_low_precision() -> bool:
    """Whether fused=True steps low-precision state in this build (the C kernel's storage formats)."""
    p = torch.zeros(2, 3, requires_grad=True)
    p.grad = torch.ones(2, 3)
    try:
        for state_dtype in LOW.values():
            adamkit.Adam([p], lr=1e-3, fused=True, state_dtype=state_dtype).step()
    except (RuntimeError, ValueError, NotImplementedError, TypeError):
        return False
    return True


if _fused_takes_low_precision():
    PATHS["fused"] = dict(fused=True)
#: rows of 300 elements: two int8 blocks a row, the second one short; a vector (bfloat16 under "int8");
#: a 3-D tensor (rows of 6)
SHAPES = ((3, 300), (5,), (2, 2, 3))
#: one int8 code step (the ratio of neighbouring magnitudes) and one bfloat16 step, relative
INT8_STEP = state_format.CODE_RATIO - 1.0
BF16_STEP = 2.0 ** -7


def make_params(seed=0, shapes=SHAPES, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def set_grads(params, step):
    g = torch.Generator().manual_seed(1000 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


def steps(opt, params, start, stop):
    for s in range(start, stop):
        set_grads(params, s)
        opt.step()
    return opt


def trained(info, state_dtype, variant=None, path=None, n=3, **kw):
    params = make_params()
    opt = info.make(params, lr=1e-2, state_dtype=state_dtype, **(variant or {}), **(path or {}), **kw)
    return params, steps(opt, params, 0, n)


def saved_and_loaded(sd, weights_only=True):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def picklable(variant) -> bool:
    return not any(callable(v) for v in variant.values())


# ------------------------------------------------------------------ the format is kept
@pytest.mark.parametrize("dtype", list(LOW))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_state_dict_carries_the_stored_format(info, dtype):
    params, opt = trained(info, LOW[dtype])
    sd = opt.state_dict()
    assert all(g["state_dtype"] == LOW[dtype] for g in sd["param_groups"])
    formats = info.cls.state_formats
    for index, p in enumerate(params):
        entry = sd["state"][index]
        assert type(entry["step"]) is int and entry["step"] == 3
        assert entry["rounding_seed"] == state_format.rounding_seed(index)
        fmt = state_format.tensor_format(LOW[dtype], p)
        names = [k for k in entry if k in formats]
        assert names == [n for n in formats if n in opt.state_names(opt.param_groups[0]) or n in entry]
        for name in names:
            t = entry[name]
            assert t.shape == p.shape and t.dtype == (torch.uint8 if fmt == "int8" else torch.bfloat16)
            if fmt == "int8":
                s = entry[name + "_finite_absmax"]
                assert s.dtype == torch.float32 and tuple(s.shape) == state_format.scale_shape(p.shape)
            else:
                assert name + "_finite_absmax" not in entry


# ------------------------------------------------------------------ round trips
ROUND_TRIP_CASES = [pytest.param(info, variant, pname, dtype, id=f"{info.name}-{i}-{pname}-{dtype}")
                    for info in OPTIMIZERS for i, variant in enumerate(info.variants)
                    for pname in PATHS for dtype in LOW if pname == "default" or i == 0 or pname == "loop"]


@pytest.mark.parametrize("info,variant,pname,dtype", ROUND_TRIP_CASES)
def test_round_trip_into_a_fresh_optimizer_resumes_bit_exactly(info, variant, pname, dtype):
    """Done-when of issue 13: save after 3 steps, torch.save/torch.load, load into a fresh optimizer, 3 more."""
    path, state_dtype = {**PATHS, **COMPILED}[pname], LOW[dtype]
    straight, sopt = trained(info, state_dtype, variant, path, n=6)
    params, opt = trained(info, state_dtype, variant, path, n=3)
    saved = saved_and_loaded({"params": [p.detach() for p in params], "opt": opt.state_dict()},
                             weights_only=picklable(variant))
    fresh = [p.clone().requires_grad_() for p in saved["params"]]
    target = info.make(fresh, lr=1e-2, state_dtype=state_dtype, **variant, **path)
    target.load_state_dict(saved["opt"])
    assert state_dict_bytes(target.state_dict()) == state_dict_bytes(opt.state_dict())
    steps(target, fresh, 3, 6)
    for x, y in zip(straight, fresh):
        assert torch.equal(x, y)
    assert state_dict_bytes(target.state_dict()) == state_dict_bytes(sopt.state_dict())


@pytest.mark.parametrize("dtype", list(LOW))
@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_round_trip_on_the_compiled_path(info, dtype, monkeypatch):
    """fused="compiled" (its update uncompiled here, as in tests/optim/test_checkpoint.py: compiling costs minutes;
    the codec around it is eager on that path anyway): the round trip resumes bit-exactly."""
    from adamkit.kernels import compiled

    monkeypatch.setattr(compiled, "compiled_body", lambda *args, **kwargs: compiled._body)
    test_round_trip_into_a_fresh_optimizer_resumes_bit_exactly(info, {}, "compiled", dtype)


@pytest.mark.parametrize("dtype", list(LOW))
def test_round_trip_with_bfloat16_parameters(dtype):
    """bfloat16 parameters step in float32 math; their low-precision state round-trips like any other."""
    info = BY_NAME["adamw"]
    straight = make_params(dtype=torch.bfloat16)
    steps(info.make(straight, lr=1e-2, state_dtype=LOW[dtype]), straight, 0, 6)
    params = make_params(dtype=torch.bfloat16)
    opt = steps(info.make(params, lr=1e-2, state_dtype=LOW[dtype]), params, 0, 3)
    fresh = [p.detach().clone().requires_grad_() for p in params]
    target = info.make(fresh, lr=1e-2, state_dtype=LOW[dtype])
    target.load_state_dict(saved_and_loaded(opt.state_dict()))
    steps(target, fresh, 3, 6)
    assert all(torch.equal(x, y) for x, y in zip(straight, fresh))


@pytest.mark.parametrize("dtype", list(LOW))
def test_load_keeps_the_saved_seeds_and_tensors(dtype):
    """The seeds come from the checkpoint (not recomputed from positions), the stored tensors are copies."""
    info = BY_NAME["eadam"]
    params, opt = trained(info, LOW[dtype])
    sd = copy.deepcopy(opt.state_dict())
    for i in sd["state"]:
        sd["state"][i]["rounding_seed"] ^= 0x1234
    target = info.make([p.detach().clone().requires_grad_() for p in params], lr=1e-2, state_dtype=LOW[dtype])
    target.load_state_dict(sd)
    for i, p in enumerate(target.param_groups[0]["params"]):
        state = target.state[p]
        assert state["rounding_seed"] == state_format.rounding_seed(i) ^ 0x1234
        for k, v in sd["state"][i].items():
            if torch.is_tensor(v):
                assert state[k].dtype == v.dtype and torch.equal(state[k], v) and state[k].data_ptr() != v.data_ptr()


def test_older_float32_checkpoints_without_state_dtype_load_as_float32_state():
    info = BY_NAME["adam"]
    params, opt = trained(info, torch.float32)
    sd = copy.deepcopy(opt.state_dict())
    for g in sd["param_groups"]:
        del g["state_dtype"]
    fresh = [p.detach().clone().requires_grad_() for p in params]
    target = info.make(fresh, lr=1e-2)
    target.load_state_dict(sd)
    assert target.param_groups[0]["state_dtype"] == torch.float32
    assert all(v.dtype == torch.float32 for s in target.state.values() for k, v in s.items() if k != "step")
    assert all("rounding_seed" not in s for s in target.state.values())
    # and into a bfloat16 optimizer: refused (its state is float32), unless the group had no state
    low = info.make([p.detach().clone().requires_grad_() for p in params], lr=1e-2, state_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="state_dtype=torch.float32.*state_dtype=torch.bfloat16"):
        low.load_state_dict(sd)
    empty = copy.deepcopy(info.make(make_params(), lr=1e-2).state_dict())
    del empty["param_groups"][0]["state_dtype"]
    low.load_state_dict(empty)
    assert low.param_groups[0]["state_dtype"] == torch.bfloat16


def test_torch_adam_checkpoint_is_refused_by_a_low_precision_optimizer_and_converts():
    params = make_params()
    topt = steps(torch.optim.Adam(params, lr=1e-2), params, 0, 3)
    opt = adamkit.Adam([p.detach().clone().requires_grad_() for p in params], lr=1e-2, state_dtype="int8")
    with pytest.raises(ValueError, match="convert_state_dtype"):
        opt.load_state_dict(topt.state_dict())
    with pytest.raises(ValueError, match="algorithm="):
        adamkit.convert_state_dtype(topt.state_dict(), "int8")
    sd = topt.state_dict()
    converted = adamkit.convert_state_dtype(sd, "int8", algorithm=adamkit.Adam)
    assert torch.is_tensor(sd["state"][0]["step"]) and converted["state"][0]["step"] is not sd["state"][0]["step"]
    opt.load_state_dict(converted)
    assert opt.state[opt.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.uint8
    assert opt.state[opt.param_groups[0]["params"][0]]["step"] == 3
    steps(opt, opt.param_groups[0]["params"], 3, 4)


# ------------------------------------------------------------------ refusals
def _set(index, key, make):
    def mutate(sd):
        sd["state"][index][key] = make(sd["state"][index])
    return mutate


def _drop(index, key):
    def mutate(sd):
        del sd["state"][index][key]
    return mutate


def _group(key, value):
    def mutate(sd):
        sd["param_groups"][0][key] = value
    return mutate


M_SCALE = state_format.scale_name("exp_avg")
M_ABSMAX = "exp_avg" + state_format.ABSMAX_SUFFIX


def _one_scale(scales, value):
    out = scales.clone()
    out.view(-1)[0] = value
    return out


def as_previous_revision(sd):
    """``sd`` (int8 state of finite values) in the previous revision of the 8-bit code: its scales under
    "_absmax" and its magnitude codes numbered from the previous top codes (127 and 255)."""
    formats = _adamkit_class(sd).state_formats
    for entry in sd["state"].values():
        for name in [k for k in entry if k in formats and entry[k].dtype == torch.uint8]:
            kind = formats[name]
            zero, shift = state_format.ZERO_CODE[kind], state_format.ABSMAX_TOP_CODE[kind] - state_format.TOP_CODE[kind]
            codes = entry[name].long()
            assert bool(((codes != state_format.POS_INF_CODE) & (codes != state_format.NAN_CODE)).all())
            level = (codes - zero).abs()
            level = torch.where(level > 0, level + shift, level)
            entry[name] = torch.where(codes < zero, zero - level, zero + level).to(torch.uint8)
            entry[name + state_format.ABSMAX_SUFFIX] = entry.pop(state_format.scale_name(name))
    return sd


def _adamkit_class(sd):
    from adamkit.core import declaration

    return declaration.algorithms_by_name()[sd["param_groups"][0]["adamkit_algorithm"]]


def _previous(mutate):
    def both(sd):
        mutate(as_previous_revision(sd))
    return both


REFUSALS = {
    # (state_dtypes it applies to, mutate, error, pattern)
    "float32 checkpoint": (("bf16", "int8"), None, ValueError,
                           r"state_dtype=torch\.float32.*convert_state_dtype\(state_dict, "),
    "other low-precision format": (("bf16", "int8"), "other", ValueError, r"param group 0.*state_dtype=.*convert"),
    "state_dtype key changed": (("bf16", "int8"), _group("state_dtype", torch.float32), ValueError,
                                r"state_dtype=torch\.float32.*convert_state_dtype"),
    "scale of another shape": (("int8",), _set(0, M_SCALE, lambda e: e[M_SCALE][:, :1].clone()),
                               ValueError, rf"'{M_SCALE}' of parameter 0.*\(3, 1\).*\(3, 2\)"),
    "transposed scale": (("int8",), _set(0, M_SCALE, lambda e: e[M_SCALE].t().contiguous()),
                         ValueError, rf"'{M_SCALE}'.*scale_shape"),
    "scale of another dtype": (("int8",), _set(0, M_SCALE, lambda e: e[M_SCALE].double()),
                               ValueError, rf"'{M_SCALE}'.*torch\.float64"),
    "negative scale": (("int8",), _set(2, M_SCALE, lambda e: -e[M_SCALE] - 1), ValueError,
                       rf"'{M_SCALE}' of parameter 2 \(the int8 scales of 'exp_avg'\) has negative scales"),
    # issue 25 item 2: an infinite scale loaded, and two steps later its block was NaN
    "infinite scale": (("int8",), _set(0, M_SCALE, lambda e: _one_scale(e[M_SCALE], math.inf)), ValueError,
                       rf"'{M_SCALE}' of parameter 0 \(the int8 scales of 'exp_avg'\) has infinite scales; a "
                       r"scale is the largest finite magnitude of its block, a finite number >= 0"),
    "NaN scale": (("int8",), _set(2, M_SCALE, lambda e: _one_scale(e[M_SCALE], math.nan)), ValueError,
                  rf"'{M_SCALE}' of parameter 2 \(the int8 scales of 'exp_avg'\) has NaN scales"),
    "-inf scale": (("int8",), _set(0, M_SCALE, lambda e: _one_scale(e[M_SCALE], -math.inf)), ValueError,
                   r"has negative and infinite scales"),
    "infinite scale, previous revision": (("int8",), _previous(_set(0, M_ABSMAX, lambda e: _one_scale(
        e[M_ABSMAX], math.inf))), ValueError, rf"'{M_ABSMAX}' of parameter 0 .*has infinite scales"),
    "negative scale, previous revision": (("int8",), _previous(_set(0, M_ABSMAX, lambda e: -e[M_ABSMAX] - 1)),
                                          ValueError, rf"'{M_ABSMAX}' of parameter 0 .*has negative scales"),
    "both revisions": (("int8",), _set(0, M_ABSMAX, lambda e: e[M_SCALE].clone()), ValueError,
                       rf"parameter 0 has both '{M_SCALE}' and '{M_ABSMAX}'"),
    "missing scale": (("int8",), _drop(0, M_SCALE), KeyError, rf"parameter 0 .*'{M_SCALE}'"),
    "scale of a vector": (("int8",), _set(1, M_SCALE, lambda e: torch.ones(5, 1)), ValueError,
                          rf"parameter 1.*'{M_SCALE}'.*convert_state_dtype"),
    "missing seed": (("bf16", "int8"), _drop(1, "rounding_seed"), KeyError, r"parameter 1 .*'rounding_seed'"),
    "negative seed": (("bf16", "int8"), _set(0, "rounding_seed", lambda e: -1), ValueError,
                      r"'rounding_seed' of parameter 0.*int in \[0, 2\*\*32\)"),
    "seed too large": (("bf16", "int8"), _set(0, "rounding_seed", lambda e: 2**32), ValueError,
                       r"'rounding_seed'.*\[0, 2\*\*32\)"),
    "fractional seed": (("bf16", "int8"), _set(0, "rounding_seed", lambda e: 1.5), ValueError, "rounding_seed"),
    "boolean seed": (("bf16", "int8"), _set(0, "rounding_seed", lambda e: True), ValueError, "rounding_seed"),
    "codes of another dtype": (("int8",), _set(0, "exp_avg", lambda e: e["exp_avg"].to(torch.int8)), TypeError,
                               r"'exp_avg' of parameter 0 is torch\.int8.*uint8 codes.*convert_state_dtype"),
    "float32 codes": (("int8",), _set(2, "exp_avg", lambda e: e["exp_avg"].float()), TypeError,
                      r"'exp_avg' of parameter 2 is torch\.float32.*uint8"),
    "float32 in a bfloat16 state": (("bf16", "int8"), _set(1, "exp_avg", lambda e: e["exp_avg"].float()),
                                    TypeError, r"'exp_avg' of parameter 1 is torch\.float32.*bfloat16"),
    "codes of another shape": (("int8",), _set(0, "exp_avg", lambda e: e["exp_avg"].reshape(300, 3)),
                               ValueError, r"'exp_avg' of parameter 0.*\(300, 3\)"),
    "codes in another memory order": (("int8",), _set(0, "exp_avg", lambda e: e["exp_avg"].t().contiguous().t()),
                                      ValueError, r"'exp_avg' of parameter 0.*memory"),
}
REFUSAL_CASES = [pytest.param(name, dtype, id=f"{name}-{dtype}") for name, (dtypes, *_) in REFUSALS.items()
                 for dtype in dtypes]


@pytest.mark.parametrize("info", [BY_NAME["adam"], BY_NAME["adabelief"]], ids=["adam", "adabelief"])
@pytest.mark.parametrize("name,dtype", REFUSAL_CASES)
def test_refused_checkpoints_leave_the_optimizer_unchanged(info, name, dtype):
    _, mutate, error, match = REFUSALS[name]
    state_dtype = LOW[dtype]
    if mutate is None:  # a float32-state checkpoint into a low-precision optimizer
        sd = copy.deepcopy(trained(info, torch.float32)[1].state_dict())
    elif mutate == "other":
        sd = copy.deepcopy(trained(info, LOW["int8" if dtype == "bf16" else "bf16"])[1].state_dict())
    else:
        sd = copy.deepcopy(trained(info, state_dtype)[1].state_dict())
        mutate(sd)
    target_params, target = trained(info, state_dtype, n=2)  # with state of its own, to see that it is kept
    before = snapshot(target)
    with pytest.raises(error, match=match):
        target.load_state_dict(sd)
    assert_same_snapshot(snapshot(target), before)
    steps(target, target_params, 2, 3)  # and it still steps


@pytest.mark.parametrize("dtype", list(LOW))
def test_low_precision_checkpoint_into_a_float32_optimizer_is_refused(dtype):
    info = BY_NAME["agd"]
    sd = trained(info, LOW[dtype])[1].state_dict()
    target_params, target = trained(info, torch.float32, n=2)
    before = snapshot(target)
    with pytest.raises(ValueError, match=rf"state_dtype=.*, this AGD's group has state_dtype=torch\.float32.*"
                                         rf"convert_state_dtype\(state_dict, torch\.float32\)"):
        target.load_state_dict(sd)
    assert_same_snapshot(snapshot(target), before)
    target.load_state_dict(adamkit.convert_state_dtype(sd, torch.float32))
    steps(target, target_params, 3, 4)


def test_refusal_message_is_one_line():
    sd = trained(BY_NAME["adam"], torch.float32)[1].state_dict()
    opt = trained(BY_NAME["adam"], "int8")[1]
    with pytest.raises(ValueError) as info:
        opt.load_state_dict(sd)
    assert "\n" not in str(info.value) and 'convert_state_dtype(state_dict, "int8")' in str(info.value)


# ------------------------------------------------------------------ conversion
def _state_values(sd, formats, index, name):
    """float32 values of one state tensor of a state dict, decoded from its format."""
    t = sd["state"][index][name]
    if t.dtype == torch.uint8:
        return state_format.dequantize_int8(t, sd["state"][index][name + "_finite_absmax"], formats[name])
    return t.float()


@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_conversion_float32_bfloat16_int8_float32_keeps_values_flags_and_hyperparameters(info):
    variant = info.variants[-1]
    params, opt = trained(info, torch.float32, variant, n=4)
    sd = opt.state_dict()
    original = state_dict_bytes(sd)
    formats = info.cls.state_formats
    chain = [sd]
    for target in (torch.bfloat16, "int8", torch.float32):
        chain.append(adamkit.convert_state_dtype(chain[-1], target))
        assert all(g["state_dtype"] == target for g in chain[-1]["param_groups"])
    assert state_dict_bytes(sd) == original  # the input is untouched
    bf16, int8, back = chain[1:]
    for g, gb in zip(sd["param_groups"], back["param_groups"]):
        assert {k: v for k, v in g.items()} == {k: v for k, v in gb.items()}  # every flag, float32 again
    for index, p in enumerate(params):
        entry = sd["state"][index]
        assert set(back["state"][index]) == set(entry)  # seeds and scales dropped again
        assert bf16["state"][index]["rounding_seed"] == state_format.rounding_seed(index)
        assert int8["state"][index]["step"] == bf16["state"][index]["step"] == entry["step"] == 4
        for name in (n for n in entry if n in formats):
            x = entry[name]
            b = _state_values(bf16, formats, index, name)
            q = _state_values(int8, formats, index, name)
            f = back["state"][index][name]
            assert f.dtype == torch.float32 and torch.equal(f, q)
            assert bf16["state"][index][name].dtype == torch.bfloat16
            assert int8["state"][index][name].dtype == (torch.uint8 if p.dim() >= 2 else torch.bfloat16)
            # within one step of each format (int8 values also down to the smallest code of their block)
            assert ((b - x).abs() <= BF16_STEP * x.abs()).all(), name
            if p.dim() >= 2:
                scale = int8["state"][index][name + "_finite_absmax"]
                floor = state_format.table(formats[name])[1 if formats[name] != "signed" else 128].item()
                block = scale.repeat_interleave(state_format.BLOCK, dim=1)[:, :p[0].numel()].reshape(p.shape)
                assert ((q - b).abs() <= INT8_STEP * b.abs() + floor * block).all(), name
            else:
                assert torch.equal(int8["state"][index][name], bf16["state"][index][name])
            if formats[name] == "upper":  # a running maximum is never stored below its value
                assert (b >= x).all() and (q >= b).all(), name
    # the converted state dicts load into optimizers of their state_dtype and step
    for target, converted in zip((torch.bfloat16, "int8", torch.float32), chain[1:]):
        fresh = [p.detach().clone().requires_grad_() for p in params]
        new = info.make(fresh, lr=1e-2, state_dtype=target, **variant)
        new.load_state_dict(converted)
        steps(new, fresh, 4, 5)
        assert all(torch.isfinite(p).all() for p in fresh)


def test_conversion_is_deterministic_and_unbiased():
    """The same bits each time (the parameter's own stream, not a torch generator), and unbiased in the mean."""
    info = BY_NAME["adam"]
    sd = trained(info, torch.float32)[1].state_dict()
    state = torch.get_rng_state()
    a = adamkit.convert_state_dtype(sd, "int8")
    b = adamkit.convert_state_dtype(sd, "int8")
    assert torch.equal(state, torch.get_rng_state())
    assert state_dict_bytes(a) == state_dict_bytes(b)
    x = sd["state"][0]["exp_avg_sq"]
    q = _state_values(a, info.cls.state_formats, 0, "exp_avg_sq")
    # stochastic rounding: the mean relative error over 900 elements is far below one code step
    assert abs(((q - x) / x).mean().item()) < INT8_STEP / 10


def test_conversion_uses_streams_no_step_draws():
    """The conversion's bits are those of slots CONVERSION_SLOT + slot, never the next step's (slots 0..k-1)."""
    info = BY_NAME["adam"]
    sd = trained(info, torch.float32)[1].state_dict()
    converted = adamkit.convert_state_dtype(sd, torch.bfloat16)
    seed, step = converted["state"][1]["rounding_seed"], converted["state"][1]["step"]
    x = sd["state"][1]["exp_avg"]
    key = state_format.stream_key(seed, step, CONVERSION_SLOT + 0)
    assert torch.equal(converted["state"][1]["exp_avg"], state_format.encode_bfloat16(x, "signed", key))
    assert len(info.cls.state_formats) <= CONVERSION_SLOT


def test_conversion_keeps_existing_seeds_and_same_format_is_a_copy():
    info = BY_NAME["adamw"]
    sd = trained(info, "int8")[1].state_dict()
    seeds = [sd["state"][i]["rounding_seed"] for i in sd["state"]]
    for i in sd["state"]:
        sd["state"][i]["rounding_seed"] = seeds[i] ^ 0x5A5A
    bf16 = adamkit.convert_state_dtype(sd, torch.bfloat16)
    assert [bf16["state"][i]["rounding_seed"] for i in bf16["state"]] == [s ^ 0x5A5A for s in seeds]
    same = adamkit.convert_state_dtype(sd, "int8")
    assert state_dict_bytes(same) == state_dict_bytes(sd)
    assert all(same["state"][0][k].data_ptr() != sd["state"][0][k].data_ptr()
               for k in same["state"][0] if torch.is_tensor(same["state"][0][k]))


def test_conversion_bad_input():
    sd = trained(BY_NAME["adam"], torch.float32)[1].state_dict()
    with pytest.raises(ValueError, match=r'state_dtype must be torch\.float32, torch\.bfloat16 or "int8"'):
        adamkit.convert_state_dtype(sd, torch.float16)
    with pytest.raises(TypeError, match="optimizer state dict"):
        adamkit.convert_state_dtype({"state": {}}, "int8")
    with pytest.raises(ValueError, match="algorithm must be"):
        adamkit.convert_state_dtype(sd, "int8", algorithm="sgd")
    with pytest.raises(ValueError, match="not of algorithm="):
        adamkit.convert_state_dtype(sd, "int8", algorithm=adamkit.AdaBelief)
    doubles = [torch.randn(3, 3, dtype=torch.float64, requires_grad=True)]
    d = steps(adamkit.Adam(doubles, lr=1e-2), doubles, 0, 1).state_dict()
    with pytest.raises(ValueError, match=r"float32-math parameters.*torch\.float64"):
        adamkit.convert_state_dtype(d, torch.bfloat16)
    assert adamkit.convert_state_dtype(d, torch.float32)["state"][0]["exp_avg"].dtype == torch.float64


def test_conversion_per_group():
    """One state_dtype per group: a float64 group keeps float32 state while the other converts."""
    info = BY_NAME["adamw"]
    singles, doubles = make_params(), [torch.randn(3, 4, dtype=torch.float64, requires_grad=True)]
    opt = steps(info.make([{"params": singles}, {"params": doubles}], lr=1e-2), singles + doubles, 0, 2)
    out = adamkit.convert_state_dtype(opt.state_dict(), ["int8", torch.float32])
    assert [g["state_dtype"] for g in out["param_groups"]] == ["int8", torch.float32]
    assert out["state"][0]["exp_avg"].dtype == torch.uint8 and out["state"][3]["exp_avg"].dtype == torch.float64
    target = info.make([{"params": [p.detach().clone().requires_grad_() for p in singles], "state_dtype": "int8"},
                        {"params": [p.detach().clone().requires_grad_() for p in doubles]}], lr=1e-2)
    target.load_state_dict(out)
    with pytest.raises(ValueError, match=r"one value per param group.*2 groups.*1 values"):
        adamkit.convert_state_dtype(opt.state_dict(), ["int8"])
    with pytest.raises(ValueError, match=r"state_dtype\[1\] must be"):
        adamkit.convert_state_dtype(opt.state_dict(), ["int8", "fp8"])


def test_conversion_is_documented_and_exported():
    assert adamkit.convert_state_dtype is adamkit.optim.convert_state_dtype
    doc = adamkit.convert_state_dtype.__doc__
    assert 'opt.load_state_dict(adamkit.convert_state_dtype(torch.load(path), "int8"))' in doc
    assert adamkit.convert_state_dtype not in adamkit.list_optimizers()


@pytest.mark.parametrize("dtype", list(LOW))
def test_torch_save_with_weights_only(dtype):
    """torch.load's default (weights_only=True) reads a low-precision state dict: dtypes, ints, strings."""
    sd = trained(BY_NAME["amsgrad"], LOW[dtype])[1].state_dict()
    loaded = saved_and_loaded(sd, weights_only=True)
    assert state_dict_bytes(loaded) == state_dict_bytes(sd)
    assert loaded["param_groups"][0]["state_dtype"] == LOW[dtype]


def test_empty_shards_convert():
    """An FSDP2 rank may hold no rows of a parameter: its (0, n) state converts to empty codes and (0, 1) scales."""
    sd = {"state": {0: {"step": 1, "exp_avg": torch.zeros(0, 5), "exp_avg_sq": torch.zeros(0, 5)}},
          "param_groups": [{"params": [0], "adamkit_algorithm": "adam"}]}
    out = adamkit.convert_state_dtype(sd, "int8")
    assert out["state"][0]["exp_avg"].shape == (0, 5) and out["state"][0]["exp_avg_finite_absmax"].shape == (0, 1)
    back = adamkit.convert_state_dtype(out, torch.float32)
    assert back["state"][0]["exp_avg_sq"].shape == (0, 5) and back["state"][0]["step"] == 1


@pytest.mark.parametrize("dtype", list(LOW))
def test_empty_shard_steps_saves_and_loads(dtype):
    """An FSDP2 rank's empty shard (0 rows) of a parameter steps, and its state round-trips."""
    p = torch.zeros(0, 5, requires_grad=True)
    opt = adamkit.AdaBelief([p], lr=1e-2, amsgrad=True, state_dtype=LOW[dtype])
    p.grad = torch.zeros(0, 5)
    opt.step()
    q = torch.zeros(0, 5, requires_grad=True)
    target = adamkit.AdaBelief([q], lr=1e-2, amsgrad=True, state_dtype=LOW[dtype])
    target.load_state_dict(saved_and_loaded(opt.state_dict()))
    assert state_dict_bytes(target.state_dict()) == state_dict_bytes(opt.state_dict())
    if dtype == "int8":
        assert target.state[q]["exp_avg_finite_absmax"].shape == (0, 1)


@pytest.mark.parametrize("dtype", list(LOW))
def test_channels_last_round_trip(dtype):
    """A channels_last convolution weight keeps its layout in the state (the rounding bits and int8 blocks
    follow memory order): a round trip into a fresh channels_last parameter resumes bit-exactly."""
    def conv_weight():
        g = torch.Generator().manual_seed(3)
        w = torch.randn(4, 3, 5, 5, generator=g).to(memory_format=torch.channels_last)
        return [w.requires_grad_()]

    info = BY_NAME["adabelief"]
    straight = conv_weight()
    steps(info.make(straight, lr=1e-2, state_dtype=LOW[dtype]), straight, 0, 4)
    params = conv_weight()
    opt = steps(info.make(params, lr=1e-2, state_dtype=LOW[dtype]), params, 0, 2)
    fresh = [p.detach().clone().requires_grad_() for p in params]
    assert fresh[0].is_contiguous(memory_format=torch.channels_last)
    target = info.make(fresh, lr=1e-2, state_dtype=LOW[dtype])
    target.load_state_dict(saved_and_loaded(opt.state_dict()))
    assert target.state[fresh[0]]["exp_avg"].stride() == opt.state[params[0]]["exp_avg"].stride()
    steps(target, fresh, 2, 4)
    assert torch.equal(straight[0], fresh[0])


def test_a_checkpoint_of_the_earlier_8_bit_code_is_refused_before_anything_changes():
    p = torch.nn.Parameter(torch.randn(8, 300))
    opt = adamkit.Adam([p], lr=1e-2, state_dtype="int8")
    p.grad = torch.randn(8, 300)
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"][0]) == {"step", "rounding_seed", "exp_avg", "exp_avg_sq", "exp_avg_finite_absmax",
                                   "exp_avg_sq_finite_absmax"}
    earlier = copy.deepcopy(sd)  # the logarithmic code kept its scales under "<name>_scale"
    for name in ("exp_avg", "exp_avg_sq"):
        earlier["state"][0][name + "_scale"] = earlier["state"][0].pop(name + "_finite_absmax")
    target = adamkit.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2, state_dtype="int8")
    with pytest.raises(ValueError, match="logarithmic 8-bit code.*convert it to float32 with the adamkit that wrote"):
        target.load_state_dict(earlier)
    assert target.state_dict()["state"] == {}
    with pytest.raises(ValueError, match="logarithmic 8-bit code"):
        adamkit.convert_state_dtype(earlier, torch.float32)
    adamkit.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2, state_dtype="int8").load_state_dict(sd)


@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_a_checkpoint_of_the_previous_revision_of_the_code_is_converted_exactly_on_load(info):
    """Issue 25 item 1 revised the 8-bit code (codes for inf and NaN, scales of finite values, under
    "<name>_finite_absmax"); a checkpoint of the previous revision (scales under "<name>_absmax") is never read
    with this one's numbering: it is converted on load to the same values and resumes as the saved run would."""
    variant = {"amsgrad": True} if {"amsgrad": True} in info.variants else {}  # every kind ("upper" too)
    straight, sopt = trained(info, "int8", variant, n=5)
    params, opt = trained(info, "int8", variant, n=3)
    saved = opt.state_dict()
    previous = as_previous_revision(copy.deepcopy(saved))
    assert any(k.endswith("_absmax") and not k.endswith("_finite_absmax") for k in previous["state"][0])
    fresh = [p.detach().clone().requires_grad_() for p in params]
    target = info.make(fresh, lr=1e-2, state_dtype="int8", **variant)
    target.load_state_dict(previous)
    assert state_dict_bytes(target.state_dict()) == state_dict_bytes(saved)
    steps(target, fresh, 3, 5)
    assert all(torch.equal(x, y) for x, y in zip(straight, fresh))
    # convert_state_dtype reads it alike
    assert state_dict_bytes(adamkit.convert_state_dtype(previous, torch.float32)) == state_dict_bytes(
        adamkit.convert_state_dtype(saved, torch.float32))


def test_a_poisoned_block_of_the_previous_revision_loads_as_nan_elements():
    """The previous revision stored a NaN scale for a block that held inf or NaN (all its elements read NaN):
    converted, those elements are NaN codes, the others keep their values."""
    p = torch.nn.Parameter(torch.randn(4, 300))
    opt = adamkit.Adam([p], lr=1e-2, state_dtype="int8")
    p.grad = torch.randn(4, 300)
    opt.step()
    previous = as_previous_revision(copy.deepcopy(opt.state_dict()))
    previous["state"][0]["exp_avg_sq_absmax"][1, 0] = math.nan
    target = adamkit.Adam([torch.nn.Parameter(p.detach().clone())], lr=1e-2, state_dtype="int8")
    target.load_state_dict(previous)
    state = target.state[target.param_groups[0]["params"][0]]
    key = state_format.scale_name("exp_avg_sq")
    v = state_format.dequantize_int8(state["exp_avg_sq"], state[key], "unsigned")
    v0 = state_format.dequantize_int8(opt.state[p]["exp_avg_sq"], opt.state[p][key], "unsigned")
    poisoned = torch.zeros(4, 300, dtype=torch.bool)
    poisoned[1, :256] = True
    assert bool(v[poisoned].isnan().all()) and torch.equal(v[~poisoned], v0[~poisoned])
    assert state[key][1, 0].item() == 0.0


@pytest.mark.parametrize("value", [math.inf, math.nan, -1.0])
def test_convert_state_dtype_refuses_scales_that_are_not_finite_numbers_at_least_zero(value):
    """Issue 25 item 2, the other reader of int8 scales: converting would read an infinite scale's block as inf and
    NaN (and a NaN scale's as NaN)."""
    p = torch.nn.Parameter(torch.randn(4, 300))
    opt = adamkit.AdamW([p], lr=1e-2, state_dtype="int8")
    p.grad = torch.randn(4, 300)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["exp_avg_sq_finite_absmax"][2, 1] = value
    what = {math.inf: "infinite", -1.0: "negative"}.get(value, "NaN")
    for target in (torch.float32, torch.bfloat16, "int8"):
        with pytest.raises(ValueError, match=rf"'exp_avg_sq_finite_absmax' of parameter 0 \(the int8 scales of "
                                             rf"'exp_avg_sq'\) has {what} scales"):
            adamkit.convert_state_dtype(sd, target)
