"""Low-precision storage of optimizer state: bfloat16 with stochastic rounding, and blockwise 8-bit codes.

These are the storage primitives; the math of every algorithm still runs in float32 (or the parameter's
math dtype): a step reads a state tensor into float32, updates it, and writes it back through one of these
formats. Both formats round **stochastically**, so that a stored value is, in expectation, the float32 value
the update computed. That matters for the moments of the Adam family: with β2 = 0.999 a second moment
changes by about 0.1 % a step, far less than one bfloat16 ulp (0.8 %) or one 8-bit code step (9 % here), so
round-to-nearest would freeze it; stochastic rounding keeps its expectation moving at the right rate.

The random bits come from a ``torch.Generator`` that the caller keeps (as part of the optimizer state), so a
run resumed from a checkpoint draws the same bits and is bit-identical.

bfloat16
    ``round_bfloat16(x, generator)``: adds 16 uniformly random bits below bfloat16's last mantissa bit of the
    float32 pattern and truncates. For a value between two bfloat16 neighbours ``a < x < b`` this gives ``b``
    with probability ``(x - a) / (b - a)``: unbiased. 2 bytes per element.

8-bit blockwise (``"int8"``)
    A tensor is cut into blocks of :data:`BLOCK` consecutive elements (of its flattened local storage; a
    shard of a distributed parameter is quantised on its own, so no block straddles a shard boundary). Each
    block keeps one float32 scale (its largest magnitude) and one 8-bit code per element, an index into a
    fixed table of values in [-1, 1] or [0, 1]. The tables are logarithmic: neighbouring codes differ by the
    factor ``2**(1/8)`` (9 %), so a small moment keeps its *relative* precision, which a linear code would
    not give (a linear 8-bit code maps everything below 1/255 of the block's largest value to zero, and the
    second moment ends up in a denominator). Bytes per element: ``1 + 4 / BLOCK``.

    Kinds, chosen per state tensor by the algorithm (see each algorithm's docstring):

    * ``"signed"`` — first moments (Adam's m, AdaBelief's m, ADOPT's m, AGD's m): 127 magnitudes
      ``2**(-k/8)``, k = 0..126 (down to 1.8e-5 of the block's largest), their negatives and an exact zero;
    * ``"unsigned"`` — non-negative second moments (Adam's and ADOPT's v, AdaBelief's s, AGD's moment of
      step differences, EAdam's v): 255 magnitudes ``2**(-k/8)``, k = 0..254 (down to 3e-10 of the block's
      largest: second moments are squares, so they span twice the decades of the gradients) and an exact zero;
    * ``"upper"`` — a running maximum (AMSGrad's v̄): the unsigned table, rounded **up** to the next code, so
      the stored maximum is never below the true maximum.

    Zero is exact in every kind and the largest magnitude of a block is stored exactly (it is the scale).
    A block holding a non-finite value stores a NaN scale: it reads back as NaN, as a float32 state poisoned
    by an infinite or NaN gradient would propagate.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: the valid values of ``state_dtype``
STATE_DTYPES = (torch.float32, torch.bfloat16, "int8")
#: elements per block of the 8-bit format
BLOCK = 256
#: ratio of neighbouring magnitudes in the 8-bit tables
CODE_RATIO = 2.0 ** 0.125
KINDS = ("signed", "unsigned", "upper")


def check_state_dtype(name: str, value: Any) -> torch.dtype | str:
    """``state_dtype``: torch.float32 (default), torch.bfloat16 or "int8"; raises naming the valid values."""
    if value in ("float32", "bfloat16"):
        value = getattr(torch, value)
    if isinstance(value, torch.dtype) and value in STATE_DTYPES:
        return value
    if value == "int8":
        return "int8"
    raise ValueError(f'{name} must be torch.float32, torch.bfloat16 or "int8", got {value!r}')


def bytes_per_element(state_dtype: torch.dtype | str) -> float:
    """Bytes of storage per state element in a format, scales included (for whole blocks)."""
    if state_dtype == "int8":
        return 1.0 + 4.0 / BLOCK
    return float(torch.empty((), dtype=state_dtype).element_size())


# ---------------------------------------------------------------------------------------------- bfloat16
def round_bfloat16(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """``x`` (float32) rounded stochastically to bfloat16 (unbiased); NaN stays NaN, ±inf stays ±inf."""
    if x.dtype != torch.float32:
        raise TypeError(f"round_bfloat16 takes a float32 tensor, got {x.dtype}")
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, x.shape, generator=generator, device=x.device, dtype=torch.int32)
    # adding below the kept bits rounds the magnitude up with the right probability, for either sign; the
    # carry can only reach the exponent of the largest finite values (which round to inf, as overflow does)
    rounded = (bits + noise).bitwise_and_(-(1 << 16)).view(torch.float32)
    rounded = torch.where(torch.isfinite(x), rounded, x)  # inf and NaN patterns stay what they are
    return rounded.to(torch.bfloat16)  # exact: the low 16 bits are zero


# -------------------------------------------------------------------------------------------------- int8
def _tables() -> dict[str, Tensor]:
    signed_mag = CODE_RATIO ** -torch.arange(126, -1, -1, dtype=torch.float64)  # 2**(-126/8) .. 1
    unsigned_mag = CODE_RATIO ** -torch.arange(254, -1, -1, dtype=torch.float64)  # 2**(-254/8) .. 1
    zero = torch.zeros(1, dtype=torch.float64)
    signed = torch.cat([-signed_mag.flip(0), zero, signed_mag]).float()
    unsigned = torch.cat([zero, unsigned_mag]).float()
    return {"signed": signed, "unsigned": unsigned, "upper": unsigned}


TABLES = _tables()


def table(kind: str, device: torch.device | str = "cpu") -> Tensor:
    """The sorted float32 code table of a kind (code = index)."""
    try:
        return TABLES[kind].to(device)
    except KeyError:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}") from None


def num_blocks(numel: int) -> int:
    return max(1, math.ceil(numel / BLOCK))


def _blocks(x: Tensor) -> Tensor:
    flat = x.reshape(-1)
    pad = num_blocks(flat.numel()) * BLOCK - flat.numel()
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, BLOCK)


def quantize_int8(x: Tensor, kind: str, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Blockwise 8-bit codes of ``x``: ``(codes, scales)``; codes are uint8 of ``x``'s shape, scales float32.

    ``"signed"`` and ``"unsigned"`` round stochastically between the two neighbouring codes (unbiased in
    value); ``"upper"`` rounds up, so ``dequantize_int8(...) >= x`` everywhere. ``x`` must be float32, and
    non-negative for the unsigned kinds.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"quantize_int8 takes a float32 tensor, got {x.dtype}")
    codes_table = table(kind, x.device)
    blocks = _blocks(x)
    finite = torch.isfinite(blocks).all(dim=1)
    scales = blocks.abs().amax(dim=1)
    scales = torch.where(finite, scales, torch.full_like(scales, math.nan))
    safe = torch.where(finite & (scales > 0), scales, torch.ones_like(scales))
    r = (blocks / safe[:, None]).clamp_(codes_table[0], 1.0)
    r = torch.where(finite[:, None], r, torch.zeros_like(r))
    n = codes_table.numel()
    hi = torch.searchsorted(codes_table, r.reshape(-1)).clamp_(1, n - 1)
    if kind == "upper":
        code = hi
        low = hi - 1  # an exact hit on the lower code stays there
        code = torch.where(codes_table[low] >= r.reshape(-1), low, code)
    else:
        low = hi - 1
        t_lo, t_hi = codes_table[low], codes_table[hi]
        p = (r.reshape(-1) - t_lo) / (t_hi - t_lo)
        u = torch.rand(p.shape, generator=generator, device=x.device)
        code = low + (u < p).long()
    codes = code.to(torch.uint8)[: x.numel()].view(x.shape)
    if kind == "upper":  # float rounding of code * scale must not land below the value itself
        below = dequantize_int8(codes, scales, kind) < x
        if bool(below.any()):
            codes = torch.where(below, (codes.long() + 1).clamp_(max=n - 1).to(torch.uint8), codes)
    return codes, scales


def dequantize_int8(codes: Tensor, scales: Tensor, kind: str) -> Tensor:
    """float32 values of blockwise 8-bit codes (the inverse of :func:`quantize_int8`, up to its rounding)."""
    codes_table = table(kind, codes.device)
    values = codes_table[codes.reshape(-1).long()]
    pad = scales.numel() * BLOCK - values.numel()
    if pad:
        values = torch.cat([values, values.new_zeros(pad)])
    return (values.view(-1, BLOCK) * scales[:, None]).reshape(-1)[: codes.numel()].view(codes.shape)
