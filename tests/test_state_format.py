"""The low-precision state formats: bfloat16 with stochastic rounding and blockwise 8-bit codes."""
import math

import pytest
import torch

from adamkit.optim import state_format as sf


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ the argument
@pytest.mark.parametrize("value, expected", [(torch.float32, torch.float32), ("bfloat16", torch.bfloat16),
                                             (torch.bfloat16, torch.bfloat16), ("int8", "int8")])
def test_state_dtype_accepts_the_three_formats(value, expected):
    assert sf.check_state_dtype("state_dtype", value) == expected


@pytest.mark.parametrize("value", [torch.float16, torch.float64, torch.int8, "fp8", "int4", None, 8])
def test_state_dtype_refuses_others_naming_the_valid_values(value):
    with pytest.raises(ValueError, match=r'state_dtype must be torch.float32, torch.bfloat16 or "int8"'):
        sf.check_state_dtype("state_dtype", value)


def test_bytes_per_element_meet_the_targets():
    assert sf.bytes_per_element(torch.float32) == 4
    assert sf.bytes_per_element(torch.bfloat16) == 2
    # two moments per parameter: <= 2.3 B/param; AMSGrad's three: <= 3.4
    assert 2 * sf.bytes_per_element("int8") <= 2.3 and 3 * sf.bytes_per_element("int8") <= 3.4


# ---------------------------------------------------------------------------------------------- bfloat16
def test_bfloat16_rounding_is_unbiased_and_lands_on_a_neighbour():
    x = torch.full((200_000,), 1.0 + 2.0 ** -10, dtype=torch.float32)  # 1/8 of the way from 1 to the next bf16
    out = sf.round_bfloat16(x, _gen())
    lo, hi = 1.0, 1.0 + 2.0 ** -7
    assert set(out.float().unique().tolist()) == {lo, hi}
    share_up = (out.float() == hi).double().mean().item()
    assert abs(share_up - 0.125) < 0.005
    assert abs(out.double().mean().item() - x.double().mean().item()) < 2e-5


def test_bfloat16_rounding_is_exact_for_representable_values_and_keeps_signs_and_specials():
    x = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38, float("inf"), -float("inf"), 1e-40])
    out = sf.round_bfloat16(x, _gen())
    assert torch.equal(out[:4].float(), x[:4]) and math.copysign(1, out[1].item()) == -1
    assert out[5].item() == math.inf and out[6].item() == -math.inf
    assert torch.isnan(sf.round_bfloat16(torch.tensor([float("nan")]), _gen())).all()
    negative = sf.round_bfloat16(torch.full((10_000,), -(1.0 + 2.0 ** -9)), _gen())
    assert (negative.float() < 0).all() and abs(negative.double().mean().item() + 1.0 + 2.0 ** -9) < 1e-4


def test_bfloat16_rounding_is_reproducible_from_the_generator_state():
    x = torch.randn(1000)
    g = _gen(3)
    state = g.get_state()
    first = sf.round_bfloat16(x, g)
    g.set_state(state)
    assert torch.equal(sf.round_bfloat16(x, g), first)
    assert not torch.equal(sf.round_bfloat16(x, g), first)  # the generator moved on


# -------------------------------------------------------------------------------------------------- int8
def test_int8_tables_are_sorted_logarithmic_and_hold_zero_and_one():
    for kind in sf.KINDS:
        t = sf.table(kind).double()
        assert t.numel() <= 256 and torch.all(t[1:] > t[:-1])
        assert 0.0 in t.tolist() and t[-1].item() == 1.0
        positive = t[t > 0]
        assert torch.allclose(positive[1:] / positive[:-1], torch.tensor(sf.CODE_RATIO, dtype=torch.float64))
    assert sf.table("unsigned")[1].item() < 1e-9 < sf.table("signed")[128].item()
    with pytest.raises(ValueError, match="kind must be one of"):
        sf.table("magnitude")


@pytest.mark.parametrize("kind", ["signed", "unsigned"])
def test_int8_keeps_relative_precision_over_decades_and_is_unbiased(kind):
    torch.manual_seed(0)
    decades = 4 if kind == "signed" else 9
    x = 10.0 ** (-decades * torch.rand(sf.BLOCK * 40))  # every block spans the decades
    if kind == "signed":
        x = x * torch.where(torch.rand_like(x) < 0.5, -1.0, 1.0)
    x = x.float()
    codes, scales = sf.quantize_int8(x, kind, _gen())
    assert codes.dtype == torch.uint8 and codes.shape == x.shape and scales.shape == (40,)
    back = sf.dequantize_int8(codes, scales, kind)
    rel = ((back - x) / x).abs()
    assert rel.max().item() <= sf.CODE_RATIO - 1 + 1e-6  # never further than one code step
    # unbiased: the mean of many independent roundings converges to the value
    draws = torch.stack([sf.dequantize_int8(*sf.quantize_int8(x, kind, _gen(s)), kind) for s in range(200)])
    assert ((draws.double().mean(0) - x.double()) / x.double()).abs().max().item() < 0.03


def test_int8_zero_and_block_maximum_are_exact_and_shapes_need_not_fill_blocks():
    x = torch.zeros(3, 100)
    x[1, 7] = 5.0
    x[2, 3] = -2.0
    for kind in ("signed",):
        codes, scales = sf.quantize_int8(x, kind, _gen())
        back = sf.dequantize_int8(codes, scales, kind)
        assert back.shape == (3, 100) and scales.numel() == math.ceil(300 / sf.BLOCK)
        assert back[1, 7].item() == 5.0 and (back[x == 0] == 0).all()
    codes, scales = sf.quantize_int8(x.abs(), "unsigned", _gen())
    back = sf.dequantize_int8(codes, scales, "unsigned")
    assert back[1, 7].item() == 5.0 and (back[x == 0] == 0).all()
    empty_block = sf.quantize_int8(torch.zeros(sf.BLOCK), "unsigned", _gen())
    assert (sf.dequantize_int8(*empty_block, "unsigned") == 0).all()


def test_int8_upper_never_reads_back_below_the_value():
    torch.manual_seed(1)
    x = (10.0 ** (-8 * torch.rand(sf.BLOCK * 20))).float()
    codes, scales = sf.quantize_int8(x, "upper", _gen())
    back = sf.dequantize_int8(codes, scales, "upper")
    assert (back >= x).all()
    assert (back / x).max().item() <= sf.CODE_RATIO + 1e-6


def test_int8_non_finite_block_reads_back_as_nan_and_other_blocks_are_untouched():
    x = torch.ones(2 * sf.BLOCK)
    x[3] = float("inf")
    codes, scales = sf.quantize_int8(x, "unsigned", _gen())
    back = sf.dequantize_int8(codes, scales, "unsigned")
    assert torch.isnan(back[: sf.BLOCK]).all() and (back[sf.BLOCK:] == 1).all()


def test_int8_rounding_is_reproducible_from_the_generator_state():
    x = torch.rand(1000)
    g = _gen(5)
    state = g.get_state()
    first = sf.quantize_int8(x, "unsigned", g)
    g.set_state(state)
    again = sf.quantize_int8(x, "unsigned", g)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_int8_refuses_other_dtypes():
    with pytest.raises(TypeError, match="float32"):
        sf.quantize_int8(torch.ones(4, dtype=torch.float64), "signed", None)
