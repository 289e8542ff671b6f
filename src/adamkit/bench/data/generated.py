"""Generated benchmark data (no artefact to fetch): a click log with Criteo's layout.

Everything here is a pure function of its seeds, built with numpy in memory; nothing is cached or written.
"""
from __future__ import annotations

import numpy as np

#: Criteo's layout: 13 integer ("I1".."I13") and 26 categorical ("C1".."C26") fields
CRITEO_NUMERIC, CRITEO_CATEGORICAL = 13, 26

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective, well-mixed hash of uint64 values (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _id_normal(field: np.ndarray, ids: np.ndarray, salt: int) -> np.ndarray:
    """A standard normal value per (field, raw id, salt), computed from a hash: planted weights for millions
    of ids with no table (Box-Muller on two hashed uniforms)."""
    with np.errstate(over="ignore"):
        key = ids.astype(np.uint64) * _GOLDEN + field.astype(np.uint64) * np.uint64(0xD1B54A32D192ED03) \
            + np.uint64(salt) * np.uint64(0x8CB92BA72F3D8DD7)
    a, b = _mix(key), _mix(key ^ np.uint64(0xA5A5A5A5A5A5A5A5))
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    u2 = ((b >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0 ** 53
    return np.sqrt(-2 * np.log(u1)) * np.cos(2 * np.pi * u2)


def criteo_cardinalities(seed: int = 7) -> np.ndarray:
    """Raw-id cardinality of each of the 26 categorical fields: from 4 to 10 million, log-uniformly spread
    (Criteo's fields range from 3 to about 10 million distinct values), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    return np.round(np.exp(rng.uniform(np.log(4), np.log(1e7), CRITEO_CATEGORICAL))).astype(np.int64)


def synthetic_criteo(n: int, buckets: int = 20_000, k: int = 4, seed: int = 0, model_seed: int = 4321):
    """``n`` rows of a click log with Criteo's layout and a planted click model whose probabilities are known.

    - 13 numeric fields: counts ``floor(exp(N(mu_f, s_f)))`` with 20% missing (-1 before the transform), given
      to models as ``log(1 + max(count, 0))`` with missing as 0 (the usual Criteo transform);
    - 26 categorical fields of raw-id cardinality 4 to 10 M (:func:`criteo_cardinalities`); raw ids have
      long-tailed power-law (Zipf-like) frequencies, P(rank >= r) = r^-(a-1) with a from 1.1 to 2.0 per field,, then are hashed into ``buckets`` slots per
      field (the hashing trick: distinct raw ids collide in a slot, as in every Criteo pipeline);
    - the planted model acts on **raw ids** (so hashing loses information, as it does on real data): logit =
      bias + sum of first-order weights of the ids + rank-``k`` pairwise interactions of the ids' vectors
      (an FM) + linear numeric effects + a nonlinear term ``0.8 tanh(2 (u . v))`` in two latent directions
      (something an FM cannot express and DeepFM's MLP can), with the bias set for a click rate near
      Criteo's 26%.

    ``model_seed`` fixes the planted model and the field statistics; ``seed`` the rows. Returns ``(x_cat, x_num,
    y, p)``: x_cat int64 (n, 26) global bucket indices (field f uses [f * buckets, (f + 1) * buckets)), x_num
    float32 (n, 13), y float32 labels, p float32 planted click probabilities (their AUC is the best any
    model can reach).
    """
    if n < 1 or buckets < 2 or k < 1:
        raise ValueError(f"synthetic_criteo: n >= 1, buckets >= 2 and k >= 1 required, got {n}, {buckets}, {k}")
    stats = np.random.default_rng(model_seed)
    card = criteo_cardinalities()
    zipf_a = stats.uniform(1.1, 2.0, CRITEO_CATEGORICAL)
    num_mu, num_sd = stats.uniform(0.0, 4.0, CRITEO_NUMERIC), stats.uniform(0.5, 1.5, CRITEO_NUMERIC)
    num_w = stats.normal(0, 0.15, CRITEO_NUMERIC)
    num_v = stats.normal(0, 0.1, (CRITEO_NUMERIC, k))
    rng = np.random.default_rng(seed)
    # categorical raw ids: Zipf ranks, mapped to ids by a per-field permutation-like hash, within cardinality
    # power-law ranks P(rank >= r) = r^-(a-1) (a discrete Pareto, Zipf-like with exponent a), by inversion
    uniform = 1.0 - rng.random((n, CRITEO_CATEGORICAL))
    ranks = np.floor(np.minimum(uniform ** (-1.0 / (zipf_a - 1.0)), 2.0 ** 60))
    fields = np.broadcast_to(np.arange(CRITEO_CATEGORICAL, dtype=np.uint64), (n, CRITEO_CATEGORICAL))
    raw = ((_mix(ranks.astype(np.uint64) + fields * np.uint64(1 << 40)) % card.astype(np.uint64))).astype(np.int64)
    # numeric counts with missing values
    counts = np.floor(np.exp(rng.normal(num_mu, num_sd, (n, CRITEO_NUMERIC))))
    counts[rng.random((n, CRITEO_NUMERIC)) < 0.2] = -1
    x_num = np.log1p(np.maximum(counts, 0)).astype(np.float32)
    # planted model on raw ids, computed once per distinct (field, id) pair: Zipf ids repeat a lot
    keys = raw + np.arange(CRITEO_CATEGORICAL, dtype=np.int64) * np.int64(1 << 40)
    uniq, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(n, CRITEO_CATEGORICAL)
    u_field, u_id = uniq >> np.int64(40), uniq & np.int64((1 << 40) - 1)
    per_id = np.stack([_id_normal(u_field, u_id, salt) for salt in range(k + 3)], -1)[inverse]  # (n, 26, k + 3)
    w, v, a, b = per_id[..., 0], 0.15 * per_id[..., 1:k + 1], per_id[..., k + 1], per_id[..., k + 2]
    emb = np.concatenate([v, x_num[:, :, None] * num_v], 1)
    pair = 0.5 * ((emb.sum(1) ** 2) - (emb ** 2).sum(1)).sum(1)
    root = np.sqrt(CRITEO_CATEGORICAL)
    u, t = a.sum(1) / root + x_num @ num_w, b.sum(1) / root
    logit = w.sum(1) / root + pair + x_num @ num_w + 0.8 * np.tanh(2 * u * t)
    logit -= 2.28  # the bias: a click rate of 26% (Criteo's) at k = 4, calibrated on 400,000 rows
    p = 1 / (1 + np.exp(-logit))
    y = (rng.random(n) < p).astype(np.float32)
    # the hashing trick: raw id -> one of `buckets` slots of its field
    slot = (_mix(raw.astype(np.uint64) * np.uint64(31) + fields * np.uint64(0x1234567)) % np.uint64(buckets)).astype(np.int64)
    x_cat = slot + np.arange(CRITEO_CATEGORICAL, dtype=np.int64) * buckets
    return x_cat, x_num, y, p.astype(np.float32)
