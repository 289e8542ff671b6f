"""The low-precision state formats: bfloat16 with stochastic rounding and blockwise 8-bit codes."""
import math

import pytest
import torch

from adamkit.core import state_format as sf


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
    # two moments per parameter: <= 2.3 B/param; AMSGrad's three: <= 3.4 (rows of 64 or more elements)
    assert 2 * sf.bytes_per_element("int8", 64) <= 2.3 and 3 * sf.bytes_per_element("int8", 64) <= 3.4
    assert sf.bytes_per_element("int8", 300) == 1 + 8 / 300


def test_tensor_format_keeps_vectors_in_bfloat16_under_int8():
    assert sf.tensor_format("int8", torch.zeros(3, 4)) == "int8"
    assert sf.tensor_format("int8", torch.zeros(7)) == "bfloat16"
    assert sf.tensor_format(torch.bfloat16, torch.zeros(3, 4)) == "bfloat16"
    assert sf.tensor_format(torch.float32, torch.zeros(3, 4)) == "float32"


# ------------------------------------------------------------------------------------------ random bits
def test_random_bits_match_the_scalar_definition_and_look_uniform():
    key = sf.stream_key(sf.rounding_seed(3), 17, 1)
    bits = sf.random_bits(100_000, key)
    scalar = [sf.mix32(i * sf.HASH_INDEX + key) for i in range(50)]
    assert bits[:50].tolist() == scalar
    assert torch.equal(sf.random_bits(10, key, offset=40), bits[40:50])
    assert 0 <= bits.min().item() and bits.max().item() < 2**32
    u = bits.double() / 2**32
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002
    # neighbouring elements, steps, slots and seeds give unrelated streams
    for other in (sf.stream_key(sf.rounding_seed(3), 18, 1), sf.stream_key(sf.rounding_seed(3), 17, 2),
                  sf.stream_key(sf.rounding_seed(4), 17, 1)):
        c = torch.corrcoef(torch.stack([u, sf.random_bits(100_000, other).double() / 2**32]))[0, 1]
        assert abs(c.item()) < 0.02
    assert abs(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()) < 0.02


def test_memory_flat_follows_the_memory_order():
    x = torch.arange(24.0).view(2, 3, 4).permute(2, 0, 1)
    assert sf.memory_flat(x).tolist() == list(range(24))
    with pytest.raises(ValueError, match="densely"):
        sf.memory_flat(torch.zeros(4, 4)[:, :2])


# ---------------------------------------------------------------------------------------------- bfloat16
def test_bfloat16_rounding_is_unbiased_and_lands_on_a_neighbour():
    x = torch.full((200_000,), 1.0 + 2.0 ** -10, dtype=torch.float32)  # 1/8 of the way from 1 to the next bf16
    out = sf.encode_bfloat16(x, "signed", key=11)
    lo, hi = 1.0, 1.0 + 2.0 ** -7
    assert set(out.float().unique().tolist()) == {lo, hi}
    share_up = (out.float() == hi).double().mean().item()
    assert abs(share_up - 0.125) < 0.005
    assert abs(out.double().mean().item() - x.double().mean().item()) < 2e-5


def test_bfloat16_rounding_is_exact_for_representable_values_and_keeps_signs_and_specials():
    x = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38, float("inf"), -float("inf"), 1e-40])
    out = sf.encode_bfloat16(x, "signed", key=5)
    assert torch.equal(out[:4].float(), x[:4]) and math.copysign(1, out[1].item()) == -1
    assert out[5].item() == math.inf and out[6].item() == -math.inf
    assert torch.isnan(sf.encode_bfloat16(torch.tensor([float("nan")]), "signed", 0)).all()
    negative = sf.encode_bfloat16(torch.full((10_000,), -(1.0 + 2.0 ** -9)), "signed", 9)
    assert (negative.float() < 0).all() and abs(negative.double().mean().item() + 1.0 + 2.0 ** -9) < 1e-4


BF16_MAX = float.fromhex("0x1.fep127")  # the largest finite bfloat16, 3.3895e38
F32_MAX = float.fromhex("0x1.fffffep127")


def _float32_bits(*bits):
    return torch.tensor(list(bits), dtype=torch.int64).to(torch.int32).view(torch.float32)


@pytest.mark.parametrize("kind", sf.KINDS)
def test_bfloat16_rounding_near_the_float32_maximum_never_makes_a_finite_value_infinite(kind):
    """Issue 25 item 1: stochastic rounding carried a finite value above the largest bfloat16 into inf, which
    float32 state holds finite (a first moment at inf would make its parameter NaN). The stochastic kinds keep
    the largest finite bfloat16; "upper" rounds up to inf, the only bfloat16 not below the value."""
    x = torch.tensor([BF16_MAX, 3.39e38, 3.4e38, F32_MAX, -3.4e38, -F32_MAX]).repeat(2000)
    x = x if kind == "signed" else x.abs()
    out = sf.encode_bfloat16(x, kind, key=21).float()
    if kind == "upper":
        assert bool((out >= x).all()) and bool(torch.isinf(out[x > BF16_MAX]).all()) and bool(
            (out[x == BF16_MAX] == BF16_MAX).all())
    else:
        assert bool(torch.isfinite(out).all())
        assert set(out.abs().unique().tolist()) <= {BF16_MAX, float.fromhex("0x1.fcp127")}


@pytest.mark.parametrize("kind", sf.KINDS)
def test_bfloat16_keeps_infinities_and_stores_every_nan_as_one_pattern(kind):
    """NaN patterns whose top 16 bits alone would read inf (0x7F800001) or another NaN are all stored as the
    bfloat16 NaN 0x7FC0, on every path (the kernel's bit-identity tests compare the bits)."""
    nans = _float32_bits(0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0xFF800001, 0xFFC00000, 0xFFFFFFFF, 0x7F80FFFF)
    x = torch.cat([nans, torch.tensor([math.inf, -math.inf])])
    out = sf.encode_bfloat16(x, kind, key=3).view(torch.int16).tolist()
    assert out[:7] == [sf.BFLOAT16_NAN_BITS] * 7 and out[7:] == [0x7F80, -0x80]


def test_bfloat16_upper_rounds_up_and_keeps_exact_values():
    x = torch.rand(10_000)
    up = sf.encode_bfloat16(x, "upper", key=0).float()
    assert (up >= x).all() and torch.equal(sf.encode_bfloat16(up, "upper", key=3).float(), up)


def test_bfloat16_rounding_depends_on_the_key_only_and_follows_the_layout():
    x = torch.randn(64, 32)
    assert torch.equal(sf.encode_bfloat16(x, "signed", 7), sf.encode_bfloat16(x.clone(), "signed", 7))
    assert not torch.equal(sf.encode_bfloat16(x, "signed", 7), sf.encode_bfloat16(x, "signed", 8))
    # the bits belong to memory positions: a transposed layout rounds its memory the same way
    out = torch.empty(32, 64, dtype=torch.bfloat16).t()
    sf.encode_bfloat16(x, "signed", 7, out=out)
    assert torch.equal(sf.memory_flat(out), sf.encode_bfloat16(x.t().contiguous(), "signed", 7).view(-1))


# -------------------------------------------------------------------------------------------------- int8
def test_int8_tables_are_sorted_small_floats_and_hold_zero_and_one():
    for kind in sf.KINDS:
        t = sf.table(kind).double()
        assert t.numel() == 256
        valid = t[torch.isfinite(t)]
        assert torch.all(valid[1:] > valid[:-1])
        assert valid.numel() == 254 - (kind == "signed") and valid[0].item() == (-1.0 if kind == "signed" else 0.0)
        assert t[sf.POS_INF_CODE].item() == math.inf and math.isnan(t[sf.NAN_CODE].item())
        assert t[sf.ZERO_CODE[kind]].item() == 0.0 and valid[-1].item() == 1.0
        positive = valid[valid > 0]
        ratios = positive[1:] / positive[:-1]
        assert ratios.max().item() == sf.CODE_RATIO and ratios.min().item() == 16 / 15
        # each magnitude has 3 mantissa bits: (1 + k/8) * 2**e, its bits (q + OFFSET) << 20
        mant, _ = torch.frexp(positive.float())
        assert set((mant * 16).tolist()) <= set(range(8, 16))
        q = torch.arange(1, positive.numel() + 1)
        assert torch.equal(positive.float().view(torch.int32), (q + sf.OFFSET[kind]) << 20)
        assert sf.SMALLEST[kind] == positive[0].item()
    assert sf.table("signed")[sf.NEG_INF_CODE].item() == -math.inf
    assert sf.table("unsigned")[1].item() < 1e-9 < sf.table("signed")[128].item()
    with pytest.raises(ValueError, match="kind must be one of"):
        sf.table("magnitude")


@pytest.mark.parametrize("kind", ["signed", "unsigned"])
def test_int8_keeps_relative_precision_over_decades_and_is_unbiased(kind):
    torch.manual_seed(0)
    decades = 4 if kind == "signed" else 9
    x = 10.0 ** (-decades * torch.rand(40, sf.BLOCK))  # every block spans the decades
    if kind == "signed":
        x = x * torch.where(torch.rand_like(x) < 0.5, -1.0, 1.0)
    x = x.float()
    codes, scales = sf.quantize_int8(x, kind, key=1)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape and scales.shape == (40, 1)
    back = sf.dequantize_int8(codes, scales, kind)
    rel = ((back - x) / x).abs()
    assert rel.max().item() <= sf.CODE_RATIO - 1 + 1e-6  # never further than one code step
    # unbiased: the mean of many independent roundings converges to the value
    draws = torch.stack([sf.dequantize_int8(*sf.quantize_int8(x, kind, key=s), kind) for s in range(200)])
    assert ((draws.double().mean(0) - x.double()) / x.double()).abs().max().item() < 0.03


def test_int8_blocks_lie_within_rows_and_zero_and_block_maximum_are_exact():
    x = torch.zeros(3, 300)
    x[1, 7] = 5.0
    x[2, 290] = -2.0
    codes, scales = sf.quantize_int8(x, "signed", key=0)
    assert scales.shape == sf.scale_shape(x.shape) == (3, 2)
    assert scales.tolist() == [[0.0, 0.0], [5.0, 0.0], [0.0, 2.0]]
    back = sf.dequantize_int8(codes, scales, "signed")
    assert back[1, 7].item() == 5.0 and back[2, 290].item() == -2.0 and (back[x == 0] == 0).all()
    codes, scales = sf.quantize_int8(x.abs(), "unsigned", key=0)
    back = sf.dequantize_int8(codes, scales, "unsigned")
    assert back[1, 7].item() == 5.0 and (back[x == 0] == 0).all()
    assert sf.scale_shape((8, 3, 5, 5)) == (8, 1) and sf.scale_shape((4, 1000)) == (4, 4)
    with pytest.raises(ValueError, match="two or more dimensions"):
        sf.scale_shape((7,))


def test_int8_a_shard_along_dim_0_quantises_like_its_rows_of_the_whole():
    x = torch.randn(10, 600)
    key = 4
    codes, scales = sf.quantize_int8(x, "signed", key)
    # the scales of rows 4..9 are those of the whole; the codes differ only by the random bits' positions
    part_codes, part_scales = sf.quantize_int8(x[4:].contiguous(), "signed", key)
    assert torch.equal(part_scales, scales[4:])
    assert (sf.dequantize_int8(part_codes, part_scales, "signed") - x[4:]).abs().max() <= (
        (sf.CODE_RATIO - 1) * x[4:].abs().amax(dim=1, keepdim=True)).max()


def test_int8_follows_a_channels_last_layout():
    x = torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last)
    codes, scales = sf.quantize_int8(x, "signed", key=2)
    assert codes.stride() == x.stride() and scales.shape == (4, 1)
    back = sf.dequantize_int8(codes, scales, "signed")
    assert ((back - x).abs() <= (sf.CODE_RATIO - 1) * x.abs() + 1e-30).all()


def test_int8_upper_never_reads_back_below_the_value_and_exact_values_stay():
    torch.manual_seed(1)
    x = (10.0 ** (-8 * torch.rand(20, sf.BLOCK))).float()
    codes, scales = sf.quantize_int8(x, "upper", key=0)
    back = sf.dequantize_int8(codes, scales, "upper")
    assert (back >= x).all()
    assert (back / x).max().item() <= sf.CODE_RATIO + 1e-6
    again, same_scales = sf.quantize_int8(back, "upper", key=0)
    assert torch.equal(again, codes) and torch.equal(same_scales, scales)  # no ratchet upwards


def test_int8_upper_does_not_round_up_again_when_the_block_maximum_grows():
    """A running maximum re-encoded after its block's largest value grew reads back as before (its scale is a
    power of two, so a stored value is a code at any larger scale): AMSGrad's v̄ does not drift upwards."""
    torch.manual_seed(2)
    x = (10.0 ** (-6 * torch.rand(4, sf.BLOCK))).float()
    codes, scales = sf.quantize_int8(x, "upper", key=0)
    assert torch.equal(scales, torch.exp2(torch.ceil(torch.log2(x.amax(dim=1, keepdim=True)))))
    stored = sf.dequantize_int8(codes, scales, "upper")
    for growth in (1.3, 2.0, 37.0, 1e4):
        grown = stored.clone()
        grown[:, 0] = stored[:, 0] * growth  # the maximum moves; every other element keeps its stored value
        again = sf.dequantize_int8(*sf.quantize_int8(grown, "upper", key=0), "upper")
        keep = grown[:, 1:] >= sf.SMALLEST["upper"] * grown.amax(dim=1, keepdim=True) * 2  # still within the range
        assert torch.equal(again[:, 1:][keep], stored[:, 1:][keep]), growth
        assert (again >= grown).all()


@pytest.mark.parametrize("kind", sf.KINDS)
def test_int8_non_finite_values_read_back_as_themselves_and_poison_no_other_element(kind):
    """Issue 25 item 1: a block holding inf or NaN stored a NaN scale, so all its elements read NaN (a gradient
    above 1.8e19 made 256 parameters NaN where float32 state makes none). Each non-finite element now has its
    own code and the scale is the block's largest finite magnitude: the others read back as without it."""
    torch.manual_seed(3)
    x = torch.rand(4, 2 * sf.BLOCK) + 0.5
    clean = x.clone()
    x[0, 3], x[0, 300], x[1, 7], x[1, 8] = math.inf, -math.inf, math.nan, -math.nan
    x[2, :sf.BLOCK] = math.inf  # a whole block of non-finite values: scale 0
    x[2, sf.BLOCK:] = torch.tensor([math.inf, -math.inf, math.nan, 0.0]).repeat(sf.BLOCK // 4)
    x[3, 5] = 3.4e38  # the largest finite value of float32 is the scale of its block (no overflow)
    codes, scales = sf.quantize_int8(x, kind, key=7)
    back = sf.dequantize_int8(codes, scales, kind)
    positive = x if kind == "signed" else x.clamp_min(0)  # the other kinds store negative values (-inf too) as 0
    special = ~torch.isfinite(positive)
    assert torch.equal(torch.isnan(back), torch.isnan(positive))
    assert torch.equal(back[special & ~torch.isnan(positive)], positive[special & ~torch.isnan(positive)])
    assert bool(torch.isfinite(back[~special]).all())
    assert scales[2].tolist() == [0.0, 0.0]
    assert scales[3, 0].item() == pytest.approx(3.4e38) and back[3, 5].item() == scales[3, 0].item()
    # rows 0 and 1 round as the same values without the non-finite ones (the same codes: same scale, same bits)
    ref_codes, ref_scales = sf.quantize_int8(torch.where(special, clean, x)[:2].contiguous(), kind, key=7)
    assert torch.equal(scales[:2], ref_scales) if kind != "upper" else bool((scales[:2] >= ref_scales).all())
    if kind != "upper":
        assert torch.equal(codes[:2][~special[:2]], ref_codes[~special[:2]])
    if kind == "signed":
        assert codes[0, 3] == sf.POS_INF_CODE and codes[0, 300] == sf.NEG_INF_CODE and codes[1, 8] == sf.NAN_CODE
    else:
        assert codes[0, 3] == sf.POS_INF_CODE and codes[0, 300] == 0 and codes[1, 7] == sf.NAN_CODE


def test_int8_previous_revision_codes_upgrade_to_the_same_values():
    """A checkpoint of the previous revision (scales under "_absmax": top codes 127 / 255, a NaN scale for a block
    that held a non-finite value) converts to the same values, except the one or two smallest magnitudes, which
    become the smallest one of this revision, and a NaN scale, whose elements are NaN codes."""
    old_offset = {kind: (0x3F800000 >> 20) - top for kind, top in sf.ABSMAX_TOP_CODE.items()}
    for kind in sf.KINDS:
        old_mags = sf._magnitude(torch.arange(sf.ABSMAX_TOP_CODE[kind] + 1).numpy(), kind, old_offset)
        if kind == "signed":
            old_table = torch.cat([-torch.from_numpy(old_mags[1:]).flip(0), torch.zeros(1),
                                   torch.from_numpy(old_mags[1:]), torch.tensor([math.nan])])
        else:
            old_table = torch.from_numpy(old_mags)
        codes = torch.arange(256, dtype=torch.uint8).repeat(3, 2)  # rows of 512: two blocks each
        scales = torch.tensor([[1.0, 3.0], [2.0 ** -20, math.nan], [0.0, 1e30]])
        new_codes, new_scales = sf.upgrade_absmax(codes, scales, kind)
        back = sf.dequantize_int8(new_codes, new_scales, kind)
        old = old_table[codes.long()] * scales.repeat_interleave(sf.BLOCK, dim=1)
        smallest = sf.SMALLEST[kind] * scales.repeat_interleave(sf.BLOCK, dim=1)
        tiny = (old.abs() > 0) & (old.abs() < smallest)  # the old magnitudes this revision lacks
        assert int(tiny[0].sum()) == 4  # two per block: signed ±q=1, the other kinds q=1 and 2
        exact = ~tiny & ~torch.isnan(old)
        assert torch.equal(back[exact], old[exact]), kind
        assert torch.equal(back[tiny], smallest[tiny] * old[tiny].sign())
        assert bool(torch.isnan(back[torch.isnan(old)]).all()) and bool(torch.isnan(back[1, sf.BLOCK:]).all())
        assert new_scales[1, 1].item() == 0.0 and torch.equal(new_scales[0], scales[0])


def test_int8_rounding_depends_on_the_key_only():
    x = torch.rand(10, 100)
    first = sf.quantize_int8(x, "unsigned", key=5)
    again = sf.quantize_int8(x.clone(), "unsigned", key=5)
    other = sf.quantize_int8(x, "unsigned", key=6)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_int8_refuses_other_dtypes_and_mismatched_scales():
    with pytest.raises(TypeError, match="float32"):
        sf.quantize_int8(torch.ones(4, 4, dtype=torch.float64), "signed", 0)
    codes, _ = sf.quantize_int8(torch.ones(4, 4), "signed", 0)
    with pytest.raises(ValueError, match="do not fit"):
        sf.dequantize_int8(codes, torch.ones(3, 1), "signed")
