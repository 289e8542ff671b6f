"""Low-precision storage of optimizer state: bfloat16 with stochastic rounding, and blockwise 8-bit codes.

The formats are specified in docs/low-precision.md ("The formats"); this module is their reference
implementation, and every path (loop, foreach, compiled, the fused C kernel, the Triton kernel) follows it bit
for bit. The invariants:

* the math is float32: a step decodes a state tensor to float32, runs the algorithm's update, and encodes;
* "signed" and "unsigned" state round stochastically (unbiased); "upper" (running maxima) rounds up, never
  below the true value;
* the random bits of element ``i`` are ``mix32(i·C + stream_key(seed, step, slot))``: from the parameter's
  ``rounding_seed``, the step count and the state's slot; no torch generator is drawn, a resumed run is
  bit-identical;
* zero is exact; a block's largest finite magnitude is exact (it is the scale), except under "upper", whose
  scale is a power of two; +inf, -inf and NaN are stored element by element (their own int8 codes, bfloat16's
  own values, NaN as 0x7FC0), so low-precision state makes non-finite exactly the elements float32 state does,
  and a finite value never rounds to inf under the stochastic kinds;
* an int8 block (:data:`BLOCK` elements) never straddles a row (dim 0), so a parameter sharded along dim 0
  shards its codes and scales alike; vectors and scalars keep bfloat16 state in "int8" mode;
* parameters (``param_rounding="stochastic"``): a bfloat16 or float16 parameter's float32 result is written
  with unbiased stochastic rounding (:func:`round_param`), from the stream of slot :data:`PARAM_SLOT` of its
  ``rounding_seed``, which no state tensor draws;
* the int8 scales are kept under ``name + "_finite_absmax"``; a checkpoint of the previous revision
  (``name + "_absmax"``) is converted exactly on load (:func:`upgrade_absmax`), and one of the earlier
  logarithmic code (``name + "_scale"``) is refused with what to do (``checkpoint.EARLIER_SCALE``).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

#: the valid values of ``state_dtype``
STATE_DTYPES = (torch.float32, torch.bfloat16, "int8")
#: elements per block of the 8-bit format (at most; the last block of a row may be shorter)
BLOCK = 256
#: the largest ratio of neighbouring non-zero magnitudes of the 8-bit codes (3 mantissa bits: 9/8)
CODE_RATIO = 1.125
KINDS = ("signed", "unsigned", "upper")
#: the zero code of each kind
ZERO_CODE = {"signed": 127, "unsigned": 0, "upper": 0}
#: the top magnitude code of each kind (its value is 1.0, the block's scale)
TOP_CODE = {"signed": 126, "unsigned": 253, "upper": 253}
#: magnitude code q >= 1 is the float32 of bits (q + OFFSET[kind]) << 20, so that TOP_CODE reads 1.0
OFFSET = {kind: (0x3F800000 >> 20) - top for kind, top in TOP_CODE.items()}
#: the codes reserved for non-finite values, the same in every kind (-inf only in "signed": the other kinds
#: store a negative value as zero)
POS_INF_CODE, NAN_CODE, NEG_INF_CODE = 254, 255, 0
#: the name of this 8-bit code (error messages about checkpoints of another one)
INT8_CODE = "e5m3 small floats with codes for inf and NaN"
#: the state key of the scales of state ``n`` is ``n + SCALE_SUFFIX`` (each block's largest finite magnitude)
SCALE_SUFFIX = "_finite_absmax"
#: the scales of the previous revision of this code (before 2026-12-04: no codes for inf and NaN, a NaN scale
#: for a block holding one, the top codes 127 and 255) were kept under ``n + ABSMAX_SUFFIX``; a checkpoint of
#: it is converted on load (:func:`upgrade_absmax`). The logarithmic code before it kept them under
#: ``n + "_scale"`` (checkpoint.EARLIER_SCALE refuses those).
ABSMAX_SUFFIX = "_absmax"
ABSMAX_TOP_CODE = {"signed": 127, "unsigned": 255, "upper": 255}
#: the bits of the one NaN every encoder stores in bfloat16 (c10::BFloat16's)
BFLOAT16_NAN_BITS = 0x7FC0

#: the valid values of ``param_rounding``
PARAM_ROUNDINGS = ("nearest", "stochastic")
#: the parameter dtypes ``param_rounding="stochastic"`` rounds (a complex32 parameter as its float16 real view)
ROUNDED_PARAM_DTYPES = (torch.bfloat16, torch.float16)
#: the stream slot of the parameters' rounding: state tensors draw the slots 0 .. len(state_formats) - 1 and
#: a conversion ``checkpoint.CONVERSION_SLOT + slot``, so that no two roundings share a stream
PARAM_SLOT = 32
#: the bits of float16's largest finite value (65504) as a float32, and of its smallest normal one (2**-14)
FLOAT16_MAX_BITS = 0x477FE000
FLOAT16_NORMAL_BITS = 0x38800000

_M32 = 0xFFFFFFFF
# odd multipliers below 2**30, so that the int64 products of the torch reference never overflow
HASH_INDEX = 0x27D4EB2F
HASH_MIX1 = 0x2C1B3C6D
HASH_MIX2 = 0x297A2D39
KEY_STEP = 0x1E3779B1
KEY_SLOT = 0x05EBCA77
SEED_MIX = 0x3C6EF372


class Storage(NamedTuple):
    """How one bucket's state tensors are stored, handed by the engine to a backend with float32-math tensors.

    ``format`` is "bfloat16" or "int8" (a bucket of float32 state gets no Storage). ``kinds[k]`` and
    ``slots[k]`` are the kind and the stream slot of the k-th state name the backend got (the slot is the
    position of the name in the algorithm's ``state_formats``); ``seeds[i]`` is the ``rounding_seed`` of the
    bucket's i-th tensor and ``step`` the step count before this step (one for the whole bucket), so the
    stream of tensor i, slot k is ``stream_key(seeds[i], step, slots[k])``. For "int8", ``scales[name]``
    lists each tensor's scales (the state tensors themselves are the uint8 codes).
    """

    format: str
    kinds: tuple[str, ...]
    slots: tuple[int, ...]
    seeds: list[int]
    step: int
    scales: dict[str, list[Tensor]]


def check_state_dtype(name: str, value: Any) -> torch.dtype | str:
    """``state_dtype``: torch.float32 (default), torch.bfloat16 or "int8"; raises naming the valid values."""
    if value in ("float32", "bfloat16"):
        value = getattr(torch, value)
    if isinstance(value, torch.dtype) and value in STATE_DTYPES:
        return value
    if value == "int8":
        return "int8"
    raise ValueError(f'{name} must be torch.float32, torch.bfloat16 or "int8", got {value!r}')


def check_param_rounding(name: str, value: Any) -> str:
    """``param_rounding``: "nearest" (default) or "stochastic"; raises naming the valid values."""
    if isinstance(value, str) and value in PARAM_ROUNDINGS:
        return value
    raise ValueError(f'{name} must be "nearest" or "stochastic", got {value!r}')


def tensor_format(state_dtype: torch.dtype | str, param: Tensor) -> str:
    """How the state of ``param`` is stored under ``state_dtype``: "float32", "bfloat16" or "int8".

    "float32" means the parameter's math dtype (float64 state for float64 parameters, as today). Only
    float32-math parameters (float32, float16, bfloat16) take a low-precision format; "int8" needs two or
    more dimensions (vectors keep bfloat16, see the module docstring).
    """
    if state_dtype == torch.float32:
        return "float32"
    if state_dtype == torch.bfloat16:
        return "bfloat16"
    return "int8" if param.dim() >= 2 else "bfloat16"


def bytes_per_element(state_dtype: torch.dtype | str, row: int = BLOCK) -> float:
    """Bytes of storage per state element in a format, scales included, for rows of ``row`` elements."""
    if state_dtype == "int8":
        return 1.0 + 4.0 * math.ceil(row / BLOCK) / row
    return float(torch.empty((), dtype=state_dtype).element_size())


# ------------------------------------------------------------------------------------------ random bits
def mix32(x: int) -> int:
    """The 32-bit finaliser of the counter-based generator (Python ints; :func:`random_bits` for tensors)."""
    x &= _M32
    x ^= x >> 15
    x = (x * HASH_MIX1) & _M32
    x ^= x >> 12
    x = (x * HASH_MIX2) & _M32
    x ^= x >> 15
    return x


def rounding_seed(index: int) -> int:
    """The ``rounding_seed`` of the parameter at position ``index`` of an optimizer (a 32-bit integer)."""
    return mix32(index * KEY_STEP + SEED_MIX)


def stream_key(seed: int, step: int, slot: int) -> int:
    """The key of one state tensor's random stream at one step (``step`` counts the steps before this one)."""
    return mix32(seed + step * KEY_STEP + slot * KEY_SLOT)


def init_key(seed: int, slot: int) -> int:
    """The key of the encoding of a state tensor's initial value: the stream of "step -1"."""
    return stream_key(seed, -1, slot)


def scale_name(name: str) -> str:
    """The state key of the int8 scales of state tensor ``name``: ``name + SCALE_SUFFIX``."""
    return name + SCALE_SUFFIX


def random_bits(numel: int, key: int, device: torch.device | str = "cpu", offset: int = 0) -> Tensor:
    """``mix32((i·HASH_INDEX + key) mod 2**32)`` for ``i = offset .. offset + numel - 1``, as int64 in [0, 2**32)."""
    x = torch.arange(offset, offset + numel, dtype=torch.int64, device=device).bitwise_and_(_M32)
    x = x.mul_(HASH_INDEX).add_(key).bitwise_and_(_M32)
    x = x.bitwise_xor_(x >> 15).mul_(HASH_MIX1).bitwise_and_(_M32)
    x = x.bitwise_xor_(x >> 12).mul_(HASH_MIX2).bitwise_and_(_M32)
    return x.bitwise_xor_(x >> 15)


def memory_flat(t: Tensor) -> Tensor:
    """A 1-D view of a dense tensor in the order of its memory (element ``i`` at storage offset + i)."""
    if t.dim() == 0:
        return t.view(1)
    order = sorted(range(t.dim()), key=lambda d: (t.stride(d), t.shape[d]), reverse=True)
    flat = t.permute(order)
    if not flat.is_contiguous():
        raise ValueError("a state tensor of the low-precision formats must cover its memory densely")
    return flat.reshape(-1)


# ---------------------------------------------------------------------------------------------- bfloat16
def encode_bfloat16(x: Tensor, kind: str, key: int, out: Tensor | None = None) -> Tensor:
    """``x`` (float32) rounded to bfloat16 (stochastically; up for ``"upper"``), written into ``out``."""
    if x.dtype != torch.float32:
        raise TypeError(f"encode_bfloat16 takes a float32 tensor, got {x.dtype}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if out is None:
        out = torch.empty_like(x, dtype=torch.bfloat16)
    if out.stride() != x.stride():
        x = torch.empty_like(out, dtype=torch.float32).copy_(x)
    flat = memory_flat(x)
    bits = flat.view(torch.int32).to(torch.int64) & _M32
    if kind == "upper":
        noise = 0xFFFF
    else:
        noise = random_bits(flat.numel(), key, x.device) >> 16
    half = _bfloat16_half(bits, noise, finite_stays_finite=kind != "upper")
    memory_flat(out).view(torch.int16).copy_(torch.where(half >= 0x8000, half - 0x10000, half))
    return out


def _bfloat16_half(bits: Tensor, noise: Tensor | int, finite_stays_finite: bool) -> Tensor:
    """The bfloat16 bits (int64 in [0, 2**16)) of float32 ``bits`` (int64) with ``noise`` (< 2**16) added below
    the kept bits and then truncated; inf stays inf, NaN becomes :data:`BFLOAT16_NAN_BITS`."""
    # adding below the kept bits rounds the magnitude up with the right probability, for either sign; the
    # carry can only reach the exponent of the largest finite values: rounding up ("upper") lets them round to
    # inf (the only bfloat16 >= them), the stochastic roundings keep the largest finite bfloat16 of their sign
    rounded = (bits + noise).bitwise_and_(0xFFFF0000)
    if finite_stays_finite:
        rounded = torch.where((rounded & 0x7FFFFFFF) == 0x7F800000, rounded - 0x10000, rounded)
    magnitude = bits & 0x7FFFFFFF
    rounded = torch.where(magnitude >= 0x7F800000, bits & 0xFFFF0000, rounded)  # inf stays inf
    rounded = torch.where(magnitude > 0x7F800000, BFLOAT16_NAN_BITS << 16, rounded)  # one NaN
    return rounded >> 16


def decode_bfloat16(t: Tensor) -> Tensor:
    return t.float()


# -------------------------------------------------------------------------------------------------- int8
def _magnitude(q: np.ndarray, kind: str, offset: dict[str, int] = OFFSET) -> np.ndarray:
    """The float32 value of magnitude codes ``q`` (0 .. TOP_CODE[kind]) of a kind."""
    bits = ((q.astype(np.int64) + offset[kind]) << 20).astype(np.uint32)
    return np.where(q == 0, np.float32(0.0), bits.view(np.float32)).astype(np.float32)


def _tables() -> dict[str, Tensor]:
    signed_mag = _magnitude(np.arange(1, TOP_CODE["signed"] + 1), "signed")
    unsigned = _magnitude(np.arange(TOP_CODE["unsigned"] + 1), "unsigned")
    signed = np.concatenate([[-np.inf], -signed_mag[::-1], [0.0], signed_mag, [np.inf, np.nan]]).astype(np.float32)
    unsigned = np.concatenate([unsigned, [np.inf, np.nan]]).astype(np.float32)
    assert signed[NEG_INF_CODE] == -np.inf and signed[ZERO_CODE["signed"]] == 0.0 and len(signed) == 256
    assert signed[POS_INF_CODE] == unsigned[POS_INF_CODE] == np.inf and len(unsigned) == 256
    return {"signed": torch.from_numpy(signed), "unsigned": torch.from_numpy(unsigned),
            "upper": torch.from_numpy(unsigned.copy())}


TABLES = _tables()
#: the smallest non-zero magnitude of each kind, and float32(1 / it): the stochastic rounding below it
SMALLEST = {kind: float(TABLES[kind][ZERO_CODE[kind] + 1]) for kind in KINDS}
INV_SMALLEST = {kind: float(np.float32(1.0) / np.float32(v)) for kind, v in SMALLEST.items()}


def table(kind: str, device: torch.device | str = "cpu") -> Tensor:
    """The float32 value of each code of a kind (256 entries: code = index; the last ones are ±inf and NaN)."""
    try:
        t = TABLES[kind]
    except KeyError:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None
    return t.to(device)


def scale_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """Shape of the scales of an int8 state tensor of ``shape``: (rows, blocks per row)."""
    if len(shape) < 2:
        raise ValueError(f"the int8 format needs a tensor of two or more dimensions, got shape {tuple(shape)}")
    rows = shape[0]
    row = math.prod(shape[1:])
    return rows, max(1, math.ceil(row / BLOCK))


def layout_like(param: Tensor) -> dict[str, Any]:
    """``memory_format`` keywords for a state tensor of ``param``'s format: its layout when dim 0 is outermost."""
    if param.dim() >= 2 and param.shape[0] > 1:
        dense = _dense(param)
        outer = param.stride(0) == math.prod(param.shape[1:])
        if not (dense and outer):
            return {"memory_format": torch.contiguous_format}
    return {"memory_format": torch.preserve_format}


def _dense(t: Tensor) -> bool:
    """True when ``t`` covers its memory densely without overlap (in any order of its dimensions)."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _rows(t: Tensor) -> Tensor:
    """The (rows, R) view of an int8-format tensor's memory (dim 0 outermost, each row dense)."""
    rows = t.shape[0]
    flat = memory_flat(t)
    if rows > 1 and t.stride(0) != flat.numel() // rows:
        raise ValueError("an int8 state tensor must keep dim 0 outermost in memory")
    return flat.view(rows, math.prod(t.shape[1:]))  # also for an empty shard (0 rows: FSDP2)


def _padded_blocks(x2: Tensor, fill: float) -> Tensor:
    rows, row = x2.shape
    nb = max(1, math.ceil(row / BLOCK))
    pad = nb * BLOCK - row
    if pad:
        x2 = torch.cat([x2, x2.new_full((rows, pad), fill)], dim=1)
    return x2.view(rows, nb, BLOCK)


def quantize_int8(x: Tensor, kind: str, key: int, codes: Tensor | None = None,
                  scales: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Blockwise 8-bit codes of ``x`` (float32, two or more dimensions): ``(codes, scales)``.

    ``codes`` (uint8, ``x``'s shape) and ``scales`` (float32, :func:`scale_shape`) are written in place when
    given. The signed and unsigned kinds round stochastically with the bits of stream ``key``; ``"upper"``
    rounds up, so ``dequantize_int8(...) >= x`` everywhere. ±inf and NaN take their codes, whatever the
    block's other values; the scales are the largest finite magnitudes.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"quantize_int8 takes a float32 tensor, got {x.dtype}")
    codes_table = table(kind, x.device)
    if codes is None:
        codes = torch.empty_like(x, dtype=torch.uint8, **layout_like(x))
    if scales is None:
        scales = torch.empty(scale_shape(x.shape), dtype=torch.float32, device=x.device)
    if x.stride() != codes.stride():
        x = torch.empty_like(codes, dtype=torch.float32).copy_(x)
    x2 = _rows(x)
    rows, row = x2.shape
    if kind != "signed":
        x2 = x2.clamp_min(0.0)  # NaN stays NaN, -inf becomes 0
    blocks = _padded_blocks(x2, 0.0)  # (rows, nb, BLOCK)
    finite = torch.isfinite(blocks)
    scale = torch.where(finite, blocks.abs(), torch.zeros_like(blocks)).amax(dim=2)  # the largest finite magnitude
    if kind == "upper":  # the smallest power of two >= the block's largest value (unless that overflows)
        up2 = (scale.view(torch.int32).to(torch.int64) + 0x7FFFFF) & 0x7F800000
        power = up2.to(torch.int32).view(torch.float32)
        scale = torch.where((scale > 0) & (up2 < 0x7F800000), power, scale)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    r = torch.where(finite, blocks / safe[..., None], torch.zeros_like(blocks))
    magnitude = r.abs()
    bits = magnitude.view(torch.int32).to(torch.int64)  # |r| <= 1: non-negative bits that order like values
    zero, offset, top = ZERO_CODE[kind], OFFSET[kind], TOP_CODE[kind]
    low = bits < (offset + 1) << 20  # below the smallest magnitude (zero included)
    if kind == "upper":
        value = blocks.clamp_min(0.0)
        mags = codes_table  # 0 and the ascending magnitudes, code = index
        lo = torch.where(low, torch.zeros_like(bits), (bits >> 20) - offset)  # the largest code <= |r|
        up = (mags[lo] * safe[..., None] < value) & (lo < top)
        level = lo + up.long()
        # float rounding of code · scale must not land below the value itself
        below = (mags[level] * safe[..., None] < value) & (level < top)
        level = level + below.long()
    else:
        noise = _padded_blocks((random_bits(rows * row, key, x.device) >> 12).view(rows, row), 0)
        level = ((bits + noise) >> 20) - offset
        p = magnitude * torch.tensor(INV_SMALLEST[kind], dtype=torch.float32)
        u = noise.to(torch.float32) * 2.0 ** -20
        level = torch.where(low, (u < p).long(), level)
    if kind == "signed":
        code = torch.where(r < 0, zero - level, zero + level)
    else:
        code = level
    special = torch.where(blocks.isnan(), NAN_CODE, torch.where(blocks > 0, POS_INF_CODE, NEG_INF_CODE))
    code = torch.where(finite, code, special)
    _rows(codes).copy_(code.flatten(1)[:, :row].to(torch.uint8))
    scales.copy_(scale)
    return codes, scales


def dequantize_int8(codes: Tensor, scales: Tensor, kind: str, out: Tensor | None = None) -> Tensor:
    """float32 values of blockwise 8-bit codes (code value × its block's scale; ±inf and NaN as they are),
    ``codes``' layout."""
    codes_table = table(kind, codes.device)
    if out is None:
        out = torch.empty_like(codes, dtype=torch.float32)
    c2 = _rows(codes)
    rows, row = c2.shape
    values = _padded_blocks(codes_table[c2.long()], 0.0)
    if tuple(scales.shape) != (rows, values.shape[1]):
        raise ValueError(f"int8 scales of shape {tuple(scales.shape)} do not fit codes of shape "
                         f"{tuple(codes.shape)} (expected {(rows, values.shape[1])})")
    scaled = torch.where(values.isfinite(), values * scales[..., None], values)  # inf · 0 would be NaN
    _rows(out).copy_(scaled.flatten(1)[:, :row])
    return out


def upgrade_absmax(codes: Tensor, scales: Tensor, kind: str) -> tuple[Tensor, Tensor]:
    """Codes and scales of this revision from those of the previous one (scales under ``name + ABSMAX_SUFFIX``).

    The magnitudes are the same e5m3 values, numbered from the top: old magnitude code ``q`` is new code
    ``q - (ABSMAX_TOP_CODE - TOP_CODE)`` (one for "signed", two for the others), exactly, except the
    smallest one or two old magnitudes, which this revision lacks: they round to its smallest (to nearest
    for the stochastic kinds, up for "upper": both the same code). A block of a NaN scale (one that held a
    non-finite value) read NaN everywhere: its codes become NaN and its scale 0. Other scales are kept;
    unsigned code 255 reads 1.0 and signed code 255 (unused, NaN) becomes NaN.
    """
    shift = ABSMAX_TOP_CODE[kind] - TOP_CODE[kind]
    c2 = _rows(codes).long()
    rows, row = c2.shape
    zero = ZERO_CODE[kind]
    level = (c2 - zero).abs()
    level = torch.where(level > 0, (level - shift).clamp_min(1), level)
    new = torch.where(c2 < zero, zero - level, zero + level)
    if kind == "signed":
        new = torch.where(c2 == 255, NAN_CODE, new)
    poisoned = scales.isnan()
    blocks = _padded_blocks(new, 0)
    blocks = torch.where(poisoned[..., None], NAN_CODE, blocks)
    out = torch.empty_like(codes, dtype=torch.uint8, **layout_like(codes))
    _rows(out).copy_(blocks.flatten(1)[:, :row].to(torch.uint8))
    return out, torch.where(poisoned, torch.zeros_like(scales), scales)


# ------------------------------------------------------------------------------ one state tensor, any format
def decode_state(format: str, kind: str, stored: Tensor, scales: Tensor | None = None) -> Tensor:
    """The float32 values of one stored state tensor ("bfloat16": the tensor; "int8": codes and their scales)."""
    if format == "int8":
        return dequantize_int8(stored, scales, kind)
    return decode_bfloat16(stored)


def encode_state(format: str, kind: str, key: int, x: Tensor, stored: Tensor, scales: Tensor | None = None) -> None:
    """Write the float32 values ``x`` into the stored tensor (and its scales) of ``format``, rounding with ``key``."""
    if format == "int8":
        quantize_int8(x, kind, key, codes=stored, scales=scales)
    else:
        encode_bfloat16(x, kind, key, out=stored)


# ------------------------------------------------------------------------------------------ parameters
class ParamRounding(NamedTuple):
    """Stochastic rounding of one bucket's bfloat16 or float16 parameters, handed by the engine to a backend
    (``param_rounding="stochastic"``): ``seeds[i]`` is the ``rounding_seed`` of the bucket's i-th tensor and
    ``step`` the step count before this step, so tensor i rounds with :func:`param_key` ``(seeds[i], step)``."""

    seeds: list[int]
    step: int

    def keys(self) -> list[int]:
        return [param_key(seed, self.step) for seed in self.seeds]


def param_key(seed: int, step: int) -> int:
    """The key of a parameter's rounding stream at one step: ``stream_key(seed, step, PARAM_SLOT)``."""
    return stream_key(seed, step, PARAM_SLOT)


def in_memory_order(param: Tensor) -> bool:
    """Whether the elements of ``param`` are numbered in the order of its memory for the rounding (else in
    row-major order): where the state of a parameter is laid out as the parameter (:func:`layout_like`)."""
    return layout_like(param)["memory_format"] is torch.preserve_format and _dense(param)


def round_param_bits(x: Tensor, dtype: torch.dtype, key: int) -> Tensor:
    """The bits (int64 in [0, 2**16)) of 1-D float32 ``x`` rounded stochastically to ``dtype`` (bfloat16 or
    float16), element ``i`` with the bits of ``random_bits(i, key)``.

    bfloat16: ``encode_bfloat16``'s "signed" rounding (16 random bits added below the kept bits, then
    truncated). float16: from 2**-14 (its smallest normal) up, 13 random bits added below float16's 10
    mantissa bits; below it, in units of 2**-24 (its subnormal spacing), the integer part ``f`` and the
    remainder ``rem`` of ``|x|·2**24`` (``rem < 2**s``), rounded up when ``r < (rem·2**32) >> s`` for the 32
    random bits ``r`` (exact for ``|x| >= 2**-33``, an error below 2**-32 units under it). Both are unbiased
    for every finite value a finite result can hold; a finite value never rounds to inf (one beyond the
    largest finite value rounds to it), ±inf stays, NaN becomes the one NaN (bfloat16 0x7FC0, float16 0x7E00).
    """
    bits = x.view(torch.int32).to(torch.int64) & _M32
    if dtype == torch.bfloat16:  # encode_bfloat16's stochastic rounding
        return _bfloat16_half(bits, random_bits(x.numel(), key, x.device) >> 16, finite_stays_finite=True)
    if dtype != torch.float16:
        raise ValueError(f"stochastic rounding writes bfloat16 or float16 parameters, not {dtype}")
    r = random_bits(x.numel(), key, x.device)
    sign = (bits >> 16) & 0x8000
    magnitude = bits & 0x7FFFFFFF
    normal = ((magnitude + (r >> 19)) & ~0x1FFF).clamp_max_(FLOAT16_MAX_BITS)
    normal = (normal - 0x38000000) >> 13
    exponent = magnitude >> 23
    mantissa = (magnitude & 0x7FFFFF) | ((exponent != 0).long() << 23)
    shift = (126 - exponent.clamp_min(1)).clamp_(0, 63)  # >= 14 below 2**-14
    whole = mantissa >> shift
    rem = mantissa - (whole << shift)
    small = whole + (r < ((rem << 32) >> shift)).long()
    out = torch.where(magnitude < FLOAT16_NORMAL_BITS, small, normal)
    out = torch.where(magnitude >= 0x7F800000, torch.where(magnitude > 0x7F800000, 0x7E00, 0x7C00), out)
    return torch.where(magnitude > 0x7F800000, out, out | sign)


def round_param(x: Tensor, param: Tensor, key: int) -> None:
    """``param`` ← the float32 values ``x`` rounded stochastically to ``param``'s dtype (bfloat16 or float16;
    :func:`round_param_bits`), with the bits of stream ``key`` (:func:`param_key`).

    Element ``i`` takes random bits ``i``, numbered in the parameter's memory order where it is laid out as its
    state (:func:`in_memory_order`: every dense parameter whose dim 0 is outermost, and any vector), else in
    row-major order, so that every path numbers the elements alike.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"round_param takes float32 values, got {x.dtype}")
    out = param if in_memory_order(param) else torch.empty_like(param, memory_format=torch.contiguous_format)
    if x.stride() != out.stride() or x.shape != out.shape:
        x = torch.empty_like(out, dtype=torch.float32).copy_(x)
    if out.numel():
        half = round_param_bits(memory_flat(x), out.dtype, key)
        memory_flat(out).view(torch.int16).copy_(torch.where(half >= 0x8000, half - 0x10000, half))
    if out is not param:
        param.copy_(out)
