"""The storage formats of :mod:`adamkit.core.state_format` as Triton device functions, bit for bit.

These functions are written in Triton's language; the kernel generator (:mod:`.source`) copies the ones a
kernel uses into its generated module, under ``@triton.jit``, after a header that defines the constants
below from ``state_format`` (:data:`CONSTANTS`), so a change of the format's constants reaches every kernel.
All the rounding is integer arithmetic on the float32 bit patterns (uint32, wrapping as the reference's
``mod 2**32``), and the one division (``x / scale``) is IEEE (``div_rn``), so a given float32 value rounds to
exactly ``state_format``'s bits on the interpreter and on a GPU alike.

int8 tiles are ``[blocks, BLOCK]``: one row of the tile is one block of a state row (lanes past the row's
end are masked and read as 0.0, as the reference pads them). The format's treatment of non-finite values
is in one section below (``int8_scale``, ``int8_special_codes``, ``int8_special_value``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...core import state_format

if TYPE_CHECKING:  # the functions run inside generated modules, which import triton.language as tl
    import triton.language as tl

HASH_INDEX, HASH_MIX1, HASH_MIX2 = state_format.HASH_INDEX, state_format.HASH_MIX1, state_format.HASH_MIX2
INT8_BLOCK = state_format.BLOCK
UNIT20 = 2.0 ** -20
#: the module-level constants of every generated kernel module (``NAME = tl.constexpr(value)`` in its header)
CONSTANTS = {"HASH_INDEX": HASH_INDEX, "HASH_MIX1": HASH_MIX1, "HASH_MIX2": HASH_MIX2, "INT8_BLOCK": INT8_BLOCK,
             "UNIT20": UNIT20, "POS_INF_CODE": state_format.POS_INF_CODE, "NAN_CODE": state_format.NAN_CODE,
             "NEG_INF_CODE": state_format.NEG_INF_CODE, "NAN_BITS": state_format.BFLOAT16_NAN_BITS << 16}


def kind_constants(kind: str) -> dict:
    """The constexpr arguments of the int8 functions for one kind ("signed", "unsigned", "upper")."""
    return {"ZERO": state_format.ZERO_CODE[kind], "OFFSET": state_format.OFFSET[kind],
            "TOP": state_format.TOP_CODE[kind], "INV_SMALLEST": state_format.INV_SMALLEST[kind],
            "SIGNED": kind == "signed", "UPPER": kind == "upper"}


# ------------------------------------------------------------------------------------------ random bits
def mix32(x):
    """state_format.mix32 of uint32 values."""
    x ^= x >> 15
    x *= HASH_MIX1
    x ^= x >> 12
    x *= HASH_MIX2
    x ^= x >> 15
    return x


def random_bits(index, key):
    """The 32 random bits of the elements at memory ``index`` (int64) of a stream ``key``: state_format.random_bits."""
    return mix32(index.to(tl.uint32) * HASH_INDEX + key.to(tl.uint32))


# --------------------------------------------------------------------------------------------- bfloat16
def bfloat16_value(bits16):
    """float32 of bfloat16 bit patterns (uint16)."""
    return (bits16.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


def bfloat16_nearest(x):
    """bfloat16 bits of float32 ``x``, rounded to nearest even (torch's float -> bfloat16; NaN -> 0x7FC0)."""
    u = x.to(tl.uint32, bitcast=True)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return tl.where(x != x, 0x7FC0, rounded).to(tl.uint16)


def bfloat16_stochastic(x, bits, UPPER: tl.constexpr):
    """state_format.encode_bfloat16: the top 16 random bits added below the kept bits, then truncated
    (``UPPER``: 0xFFFF added, the magnitude rounded up); inf and NaN stay what they are."""
    u = x.to(tl.uint32, bitcast=True)
    if UPPER:
        rounded = (u + 0xFFFF) >> 16
    else:  # a carry into the exponent of the largest finite values keeps the largest finite bfloat16
        rounded = (u + (bits >> 16)) >> 16
        rounded = tl.where((rounded & 0x7FFF) == 0x7F80, rounded - 1, rounded)
    finite = (u & 0x7F800000) != 0x7F800000
    return tl.where(finite, rounded.to(tl.uint16), bfloat16_nearest(x))


# ------------------------------------------------------------------------------------------------- int8
def int8_magnitude(q, OFFSET: tl.constexpr):
    """The value of magnitude codes ``q`` (int32, 0 .. TOP): 0, or the float32 of bits ``(q + OFFSET) << 20``."""
    return tl.where(q == 0, 0.0, ((q + OFFSET) << 20).to(tl.float32, bitcast=True))


def decode_int8(code, scale, ZERO: tl.constexpr, OFFSET: tl.constexpr, SIGNED: tl.constexpr):
    """state_format.dequantize_int8: the code's value times its block's scale (``scale`` broadcast per block)."""
    c = code.to(tl.int32)
    if SIGNED:
        q = c - ZERO
        magnitude = int8_magnitude(tl.abs(q), OFFSET)
        value = tl.where(q < 0, -magnitude, magnitude)
    else:
        value = int8_magnitude(c, OFFSET)
    value = value * scale
    return int8_special_value(value, c, SIGNED)


def encode_int8(x, mask, bits, ZERO: tl.constexpr, OFFSET: tl.constexpr, TOP: tl.constexpr,
                INV_SMALLEST: tl.constexpr, SIGNED: tl.constexpr, UPPER: tl.constexpr):
    """state_format.quantize_int8 of a tile of blocks: ``(codes (uint8), scales (float32, one per block))``.

    ``mask``: the lanes inside the state row; ``bits``: the lanes' random bits (unused by "upper").
    """
    x = tl.where(mask, x, 0.0)
    if not SIGNED:
        x = tl.where(x < 0.0, 0.0, x)  # clamp_min(0): NaN stays NaN
    scale, finite = int8_scale(x)
    if UPPER:  # the smallest power of two >= the largest value (the value itself where that overflows)
        up2 = (scale.to(tl.uint32, bitcast=True) + 0x7FFFFF) & 0x7F800000
        power = up2.to(tl.float32, bitcast=True)
        scale = tl.where((scale > 0.0) & (up2 < 0x7F800000), power, scale)
    safe = tl.where(scale > 0.0, scale, 1.0)[:, None]
    r = tl.where(finite, tl.div_rn(tl.where(finite, x, 0.0), safe), 0.0)
    magnitude = tl.abs(r)
    b = magnitude.to(tl.int32, bitcast=True)
    low = b < ((OFFSET + 1) << 20)  # below the smallest magnitude (zero included)
    if UPPER:  # the smallest code whose value times the scale is >= x
        level = tl.where(low, 0, (b >> 20) - OFFSET)
        level += ((int8_magnitude(level, OFFSET) * safe < x) & (level < TOP)).to(tl.int32)
        level += ((int8_magnitude(level, OFFSET) * safe < x) & (level < TOP)).to(tl.int32)
    else:  # the top 20 random bits added below the kept bits; below the smallest magnitude, 0 or 1 by chance
        noise = (bits >> 12).to(tl.int32)
        level = ((b + noise) >> 20) - OFFSET
        chance = noise.to(tl.float32) * UNIT20 < magnitude * INV_SMALLEST
        level = tl.where(low, chance.to(tl.int32), level)
    if SIGNED:
        code = tl.where(r < 0.0, ZERO - level, ZERO + level)
    else:
        code = level
    return int8_special_codes(code, x, finite).to(tl.uint8), scale


# -------------------------------------------------------------- int8: the format's rule for non-finite values
# An infinite or NaN element takes a code of its own (POS_INF_CODE, NAN_CODE, and NEG_INF_CODE for the signed
# kind; the other kinds clamp -inf to 0 before), whatever the block's other values; a block's scale is its
# largest finite magnitude, so the finite values beside a non-finite one keep their precision. These three
# functions are the only places that know it.
def int8_scale(x):
    """``(scale, finite)`` of a tile: each block's largest finite magnitude (0 where it has none), and whether
    each element is finite."""
    finite = (x.to(tl.uint32, bitcast=True) & 0x7F800000) != 0x7F800000
    return tl.max(tl.where(finite, tl.abs(x), 0.0), axis=1), finite


def int8_special_codes(code, x, finite):
    """The codes of a tile, with those of the non-finite elements of ``x`` replaced by their own codes."""
    special = tl.where(x != x, NAN_CODE, tl.where(x > 0.0, POS_INF_CODE, NEG_INF_CODE))
    return tl.where(finite, code, special)


def int8_special_value(value, code, SIGNED: tl.constexpr):
    """Decoded code values, with those of the codes of ±inf and NaN replaced (they are not scaled)."""
    zero_bits = value.to(tl.uint32, bitcast=True) & 0
    inf = (zero_bits | 0x7F800000).to(tl.float32, bitcast=True)
    value = tl.where(code == POS_INF_CODE, inf, value)
    value = tl.where(code == NAN_CODE, (zero_bits | NAN_BITS).to(tl.float32, bitcast=True), value)
    if SIGNED:
        value = tl.where(code == NEG_INF_CODE, -inf, value)
    return value


#: every device function of this module, in dependency order (the generator copies those a kernel needs)
FUNCTIONS = (mix32, random_bits, bfloat16_value, bfloat16_nearest, bfloat16_stochastic, int8_magnitude,
             int8_scale, int8_special_codes, int8_special_value, decode_int8, encode_int8)
