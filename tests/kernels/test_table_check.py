"""The native check of the fused kernel's kept pointer table (fused_check): it accepts exactly what it may.

Every change the Python check notices must make the native check refuse the table too (the general path
then steps the group, or raises, as before), and where both accept they must hand the kernel the same
gradients and step count. Where the native check is stricter (a same-storage view of another dtype or
shape), the general path takes over, which is never wrong.
"""
from __future__ import annotations

import ctypes
import warnings

import pytest
import torch

import adamkit
from adamkit import _integrity
from adamkit.kernels.fused import build as fused_build, check as fused_check
from adamkit.kernels.fused import FUSED

pytestmark = pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")


def native_or_skip():
    try:
        return fused_check.load()
    except fused_check.NativeCheckUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def native(monkeypatch):
    """Tables of any size use the native check."""
    native_or_skip()
    monkeypatch.setattr(fused_check, "MIN_TENSORS", 1)
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "1")


SHAPES = ((5, 3), (7,), (2, 2), (1, 4, 1), (6,))


def make(seed=0, dtype=torch.float64, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype)) for s in shapes]


def set_grads(params, step):
    g = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def table_of(opt):
    return FUSED.kept(opt, opt.param_groups[0])


def both_checks(table, params):
    """(native result, Python result) of the same table over the same tensors; the native one's gradient
    pointers as read back from the table."""
    n = table.count
    got = table.check(table.names, params, table.state_dicts)
    if got is not None:
        assert got[1] is None  # written into the table
        got = (got[0], list(table.ptrs[n:2 * n]))
    native, table.native = table.native, None
    try:
        want = table.check(table.names, params, table.state_dicts)
    finally:
        table.native = native
    return got, want


def stepped(cls=adamkit.AdamW, seed=0, steps=2, shapes=SHAPES, **kwargs):
    params = make(seed, shapes=shapes)
    opt = cls(params, lr=1e-2, **kwargs)
    for s in range(steps):
        set_grads(params, s)
        opt.step()
    set_grads(params, steps)
    table = table_of(opt)
    assert table is not None
    return params, opt, table


def test_a_big_group_uses_the_native_check_and_a_small_one_does_not(monkeypatch):
    native_or_skip()
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "1")
    big = [torch.nn.Parameter(torch.randn(3)) for _ in range(fused_check.MIN_TENSORS)]
    small = big[:fused_check.MIN_TENSORS - 1]
    tables = []
    for params in (big, small):
        opt = adamkit.Adam(params, lr=1e-3)
        for _ in range(2):
            for p in params:
                p.grad = torch.ones_like(p)
            opt.step()
        tables.append(table_of(opt))
    assert tables[0].native is not None and tables[1].native is None
    assert all(opt.state[p]["step"] == 2 for p in small)


def test_unchanged_tensors_give_the_same_step_and_gradients_as_the_python_check(native):
    params, opt, table = stepped(amsgrad=True)
    got, want = both_checks(table, params)
    assert want is not None and got == (want[0], list(want[1]))
    assert got[0] == 2 and got[1] == [p.grad.data_ptr() for p in params]


def _swap_param_data(params, opt):
    params[1].data = params[1].data.clone()


def _swap_state_data(params, opt):
    s = opt.state[params[2]]["exp_avg"]
    s.data = s.data.clone()


def _replace_state_tensor(params, opt):
    opt.state[params[0]]["exp_avg_sq"] = opt.state[params[0]]["exp_avg_sq"].clone()


def _missing_grad(params, opt):
    params[3].grad = None


def _non_contiguous_grad(params, opt):
    params[0].grad = params[0].grad.t().contiguous().t()


def _other_dtype_grad(params, opt):
    params[4].grad.data = params[4].grad.data.float()  # around torch's check of assigned gradients


def _other_shape_grad(params, opt):
    params[0].grad.data = params[0].grad.data.reshape(3, 5)  # same size, another shape


def _bigger_grad(params, opt):
    params[1].grad.data = torch.zeros(params[1].numel() + 4, dtype=params[1].dtype)


def _sparse_grad(params, opt):
    params[1].grad = params[1].grad.to_sparse()


def _changed_step(params, opt):
    opt.state[params[2]]["step"] = 7


def _float_steps(params, opt):
    for p in params:
        opt.state[p]["step"] = 2.0


def _removed_state_tensor(params, opt):
    del opt.state[params[1]]["exp_avg"]


def _resized_param(params, opt):
    params[4].data.resize_(100)  # a new allocation under the same storage object


MUTATIONS = [_swap_param_data, _swap_state_data, _replace_state_tensor, _missing_grad, _non_contiguous_grad,
             _other_dtype_grad, _other_shape_grad, _bigger_grad, _sparse_grad, _changed_step,
             _removed_state_tensor, _resized_param]


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_every_change_the_python_check_refuses_is_refused(native, mutate):
    params, opt, table = stepped()
    mutate(params, opt)
    got, want = both_checks(table, params)
    assert want is None and got is None


#: 300 tensors: on two threads the native check reads their C++ objects in two shares of 150 (MIN_SHARE 128)
MANY = SHAPES * 60


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_a_group_read_on_two_threads_gives_the_python_checks_step_and_gradients(native, two_threads):
    params, opt, table = stepped(amsgrad=True, shapes=MANY)
    got, want = both_checks(table, params)
    assert want is not None and got == (want[0], list(want[1]))
    assert got[1] == [p.grad.data_ptr() for p in params]


@pytest.mark.parametrize("offset", [0, 145, 150, 295], ids=lambda o: f"tensor{o}")
@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda f: f.__name__.strip("_"))
def test_a_change_in_either_threads_share_is_refused(native, two_threads, mutate, offset):
    """The same changes, made to the first, last, or a middle tensor of the first or of the second share."""
    params, opt, table = stepped(shapes=MANY)
    mutate(params[offset:], opt)  # MANY repeats SHAPES: params[offset + i] has the shape mutate expects of i
    got, want = both_checks(table, params)
    assert want is None and got is None


@pytest.mark.parametrize("mutate", MUTATIONS + [_float_steps], ids=lambda f: f.__name__.strip("_"))
def test_after_a_refusal_the_step_is_the_general_paths(native, mutate):
    """The optimizer with the native check steps (or raises) exactly as one whose table is dropped.
    (Steps that are floats the Python check accepts and the native one leaves to the general path.)"""
    results = []
    for keep in (True, False):
        params, opt, table = stepped()
        if not keep:
            FUSED.forget(opt)  # this step takes the general path
        mutate(params, opt)
        before = [p.detach().clone() for p in params]
        try:
            opt.step()
            error = None
        except Exception as exc:  # noqa: BLE001 - compared below
            error = type(exc)
            assert all(torch.equal(p, q) for p, q in zip(params, before))  # nothing written
        results.append((error, [p.detach().clone() for p in params],
                        [{k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()} for p in params]))
    (error_a, params_a, state_a), (error_b, params_b, state_b) = results
    assert error_a == error_b
    for p, q in zip(params_a, params_b):
        assert torch.equal(p, q)
    for sa, sb in zip(state_a, state_b):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert (torch.equal(sa[k], sb[k]) if torch.is_tensor(sa[k]) else sa[k] == sb[k])


VIEWS = ["dtype", "shape", "transpose", "square-transpose", "state-transpose"]


@pytest.mark.parametrize("check, view", [("native", v) for v in VIEWS + ["negated"]] + [("python", v) for v in VIEWS])
def test_same_storage_views_of_another_kind_are_refused(native, view, check):
    """A state tensor or parameter replaced by a view of the same memory with another dtype, shape or
    element order keeps its pointer; it goes to the general path (the native check also refuses a lazily
    negated gradient, whose pointer alone would lose the sign; the Python check cannot see that bit)."""
    params, opt, table = stepped(shapes=((5, 3), (7,), (2, 2), (1, 4, 1), (6,), (3, 3)))
    if check == "python":
        table.native = None
    state = opt.state[params[0]]
    if view == "dtype":
        state["exp_avg"] = state["exp_avg"].view(torch.int64)
    elif view == "shape":
        state["exp_avg"] = state["exp_avg"].view(3, 5)
    elif view == "transpose":
        params[0].data = params[0].data.t()
    elif view == "square-transpose":  # the same shape, the elements in another order
        params[5].data = params[5].data.t()
    elif view == "state-transpose":
        opt.state[params[5]]["exp_avg"] = opt.state[params[5]]["exp_avg"].t()
    else:  # a lazily negated gradient (same memory, the negative values): a pointer alone would lose the sign
        params[1].grad = torch._neg_view(params[1].grad.neg())
        assert params[1].grad.is_neg()
    got = table.check(table.names, params, table.state_dicts)
    assert got is None
    if view in ("dtype", "shape", "transpose"):
        with pytest.raises((RuntimeError, TypeError)):
            opt.step()  # the general path names the tensor


def test_steps_through_the_native_check_match_the_loop(native, monkeypatch):
    results = []
    call = fused_check.NativeCheck.__call__

    def counting(self, params, state_dicts):
        results.append(call(self, params, state_dicts))
        return results[-1]
    monkeypatch.setattr(fused_check.NativeCheck, "__call__", counting)
    a, b = make(), make()
    oa = adamkit.AdaBelief(a, lr=1e-2)
    ob = adamkit.AdaBelief(b, lr=1e-2, foreach=False)
    for s in range(6):
        set_grads(a, s)
        set_grads(b, s)
        oa.step()
        ob.step()
    assert table_of(oa).native is not None
    assert results == [1, 2, 3, 4, 5]  # every step after the first went through the table
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
        assert oa.state[p]["step"] == ob.state[q]["step"] == 6


def test_float32_and_half_parameters(native):
    for dtype in (torch.float32, torch.bfloat16):
        a, b = make(dtype=dtype), make(dtype=dtype)
        oa = adamkit.Adam(a, lr=1e-2)
        ob = adamkit.Adam(b, lr=1e-2, foreach=False)
        for s in range(4):
            set_grads(a, s)
            set_grads(b, s)
            oa.step()
            ob.step()
        assert table_of(oa).native is not None
        got, want = both_checks(table_of(oa), a)
        assert got is not None and got == (want[0], list(want[1]))
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q)


def test_a_layout_other_than_the_one_the_build_reads_is_refused():
    class Lib:  # a build that finds another address where the tensor should be
        @staticmethod
        def adamkit_check_impl(t, *_):
            return t._cdata + 8

    with pytest.raises(fused_check.NativeCheckUnavailable, match="lays out"):
        fused_check._verify_layout(Lib)


def _fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "1")
    monkeypatch.setattr(fused_check._library, "value", None)
    monkeypatch.setattr(fused_check._library, "error", None)
    monkeypatch.setattr(fused_check, "_warned", False)
    monkeypatch.setattr(fused_check, "MIN_TENSORS", 1)


def test_without_a_compiler_the_python_check_runs_and_says_why_once(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setattr(fused_check, "_compiler", lambda: None)
    a, b = make(), make()
    oa, ob = adamkit.Adam(a, lr=1e-2), adamkit.Adam(b, lr=1e-2, foreach=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(4):
            set_grads(a, s)
            set_grads(b, s)
            oa.step()
            ob.step()
    said = [w for w in caught if "native table check" in str(w.message)]
    assert len(said) == 1 and "no C++ compiler" in str(said[0].message)
    assert table_of(oa) is not None and table_of(oa).native is None
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("variable,value", [("ADAMKIT_NATIVE_CHECK", "0"), ("ADAMKIT_DISABLE_NATIVE_CHECK", "1")])
def test_disabled_by_the_environment_silently(monkeypatch, tmp_path, variable, value):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.delenv("ADAMKIT_NATIVE_CHECK")
    monkeypatch.setenv(variable, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fused_check.native(True, 0) is None
    assert not list(tmp_path.glob("fused_check-*.so"))


def test_the_build_is_cached_verified_and_rebuilt_when_damaged(monkeypatch, tmp_path):
    native_or_skip()
    cxx = fused_check._compiler()
    built = fused_check._build(cxx)  # this process's build, in the usual cache directory
    _fresh(monkeypatch, tmp_path)
    copy = tmp_path / built.name  # the same key: a cache that holds it already
    copy.write_bytes(built.read_bytes())
    _integrity.record(copy)
    assert fused_check._build(cxx) == copy and _integrity.problem(copy) is None  # used, not rebuilt
    copy.write_bytes(copy.read_bytes()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = fused_check._build(cxx)
    assert again == copy and _integrity.problem(again) is None
    lib = ctypes.PyDLL(str(again))
    assert lib.adamkit_check_abi_version() == fused_check.ABI_VERSION


@pytest.mark.parametrize("origin,wanted", [(fused_build.FIRST_USE_ORIGIN, True), (fused_build.PREBUILT_ORIGIN, False)])
def test_by_default_the_check_is_native_only_where_the_kernel_was_built_here(monkeypatch, origin, wanted):
    """A wheel's prebuilt kernel keeps the Python check (no compiler is assumed); a source install, whose kernel
    a compiler just built, builds the native one too; ADAMKIT_NATIVE_CHECK decides where it is set."""
    monkeypatch.delenv("ADAMKIT_NATIVE_CHECK", raising=False)
    monkeypatch.delenv("ADAMKIT_DISABLE_NATIVE_CHECK", raising=False)
    build = fused_build.loaded_build()
    monkeypatch.setattr(fused_build._kernel, "value", (fused_build.load(), fused_build.KernelBuild(
        build.variant, origin, build.path, build.threads)))
    if wanted:
        native_or_skip()
    params, opt, table = stepped(shapes=MANY)
    assert (table.native is not None) is wanted
    built_here = origin == fused_build.FIRST_USE_ORIGIN
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "1")
    assert fused_check.enabled(built_here)
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "0")
    assert not fused_check.enabled(built_here)
    monkeypatch.setenv("ADAMKIT_NATIVE_CHECK", "yes")
    with pytest.raises(ValueError, match="ADAMKIT_NATIVE_CHECK='yes'.*1.*0"):
        fused_check.enabled(built_here)
