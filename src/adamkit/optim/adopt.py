"""ADOPT (Taniguchi et al., NeurIPS 2024), as the authors' ``adopt.py`` (torch-adopt 0.1.0) computes it."""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

from ..core import checks
from ..core.hyperparameters import FOREACH, FUSED, PARAM_ROUNDING, STATE_DTYPE, MAXIMIZE, learning_rate
from ..core.benchspec import BenchSpec
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter as H
from .adam import TORCH_ONLY_FALSE
from .base import AdamkitOptimizer


class ADOPTFlags(NamedTuple):
    #: the first call only initialises v
    first_step: bool
    #: g ← g + λ·θ
    coupled_decay: bool
    #: θ ← θ - α·λ·θ
    decoupled_decay: bool
    clip: bool


class ADOPTScalars(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    lr: float
    coupled_decay: float
    decoupled_decay: float
    clip: float


#: the largest clip exponent: ``t**p`` stays finite in float64 for every step count ``t < 2**63``
#: (``(2**63)**16 = 2**1008 < 2**1024``), so no run can reach an overflowing threshold
MAX_CLIP_EXPONENT = 16.0


def _clip_lambda(name, value):
    """None (no clipping), an exponent p in [0, 16] (threshold ``t**p``) or a callable ``t -> threshold``.

    Why [0, 16]: the threshold ``c_t = t**p`` bounds the normalised gradient and must
    not shrink (the convergence argument of the clipped ADOPT, see the spec, needs a
    non-decreasing ``c_t``; p = 0 is the constant threshold 1, a negative p would clip
    every update towards zero), and it must stay a finite double at every step: with
    p <= 16 it does for every step count below ``2**63``, while p = 400 overflows at
    step 7 and p = 1e308 at step 2. Beyond p of about 2 the clipping is inactive after
    a few steps anyway. The reference uses 0.25, timm 1/3.
    """
    if value is None or callable(value):
        return value
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) <= MAX_CLIP_EXPONENT):
        raise ValueError(
            f"{name} must be None, an exponent p in [0, {MAX_CLIP_EXPONENT:g}] (threshold step**p; larger ones "
            f"overflow float64 within a run) or a callable step -> threshold, got {value!r}"
        )
    return float(value)


def clip_threshold(clip_lambda, t: int) -> float | None:
    """The clipping threshold at update ``t`` (1 at the second call), in double precision.

    A callable's threshold must be a finite number > 0; otherwise (inf, NaN, an
    overflow inside the callable) this raises ``ValueError`` before anything is written.
    """
    if clip_lambda is None:
        return None
    if isinstance(clip_lambda, float):
        threshold = float(t) ** clip_lambda
    else:
        try:
            threshold = float(clip_lambda(t))
        except OverflowError as exc:
            raise ValueError(f"clip_lambda({t}) overflowed ({exc}); the clipping threshold must be a finite "
                             f"number > 0 at every step") from None
    if not 0.0 < threshold < math.inf:
        raise ValueError(f"clip_lambda gave the threshold {threshold} at step {t}; it must be a finite number > 0")
    return threshold


class ADOPT(AdamkitOptimizer):
    r"""ADOPT (Taniguchi et al., NeurIPS 2024), as the authors' ``adopt.py`` (= torch-adopt 0.1.0) computes it.

    The gradient is normalised by the second moment of the *previous* steps, momentum
    is applied after normalisation, there is no bias correction, and the first call
    only initialises ``v``. Per parameter, with ``k`` the number of earlier calls::

        g ← -g                                  if maximize
        g ← g + λ·θ                             if λ ≠ 0 and not decouple (also on the first call)
        k = 0:   v ← g²                         (θ does not move)
        k = t ≥ 1:
            θ ← θ - α·λ·θ                       if λ ≠ 0 and decouple
            n ← g / max(sqrt(v), ε)             (ε is a floor, not an additive term)
            n ← clamp(n, -c_t, c_t)             c_t = clip_lambda(t), default t**0.25
            m ← β1·m + (1 - β1)·n               (m starts at 0)
            θ ← θ - α·m
            v ← β2·v + (1 - β2)·g²

    ``clip_lambda=None`` gives the unclipped algorithm of the first paper version.

    State per parameter: ``step`` (calls made, the initialising one included),
    ``exp_avg`` (m), ``exp_avg_sq`` (v).

    Low-precision state (``state_dtype``): m is an average of *normalised* (and clipped)
    gradients, signed and of order one ("signed"). v is non-negative ("unsigned"); its
    initialising call stores v = g² of one gradient, which spans twice the decades of g, so
    the unsigned codes' 255 small-float magnitudes (down to 2.9e-10 of a block's largest) matter
    most right there; the call is encoded with the stream of step 0 like any other step, and
    m (still exactly zero) is re-encoded exactly. v divides the next gradient (``g/max(sqrt(v),
    ε)``), so a v rounded to zero is floored by ε, never a division by zero.
    """

    name = "adopt"
    bench = BenchSpec(  # ε is a floor on sqrt(v); the paper: 1e-6, clipped (t^¼) and the original unclipped form
        color="#2ca02c", eps_range=(1e-8, 1e-4), paper_eps=(1e-6,),
        paper_configs={"clipped": {"clip_lambda": 0.25}, "unclipped": {"clip_lambda": None}})
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "betas": H((0.9, 0.9999), checks.betas, "(β1, β2), each in [0, 1)"),
        "eps": H(1e-6, checks.non_negative, "ε, a floor of sqrt(v) (not an additive term)"),
        "clip_lambda": H(0.25, _clip_lambda, "the clipping threshold as a function of the update index t: a "
                         "callable t -> c_t (as the reference), a number p meaning t**p (0.25: the reference's "
                         "step**0.25; a number keeps the state dict serialisable) or None for no clipping"),
        "weight_decay": H(0.0, checks.non_negative, "λ"),
        "decouple": H(False, checks.flag, "False: coupled L2; True: AdamW-style decay"),
        "foreach": FOREACH,
        "maximize": MAXIMIZE,
        **TORCH_ONLY_FALSE,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
    }
    Flags, Scalars = ADOPTFlags, ADOPTScalars
    fused_kernel = FusedKernel("adopt")  # its state slots: state_formats, in order
    state_formats = {"exp_avg": "signed", "exp_avg_sq": "unsigned"}

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        wd = group["weight_decay"]
        decouple = group["decouple"]
        clip = None if step == 0 else clip_threshold(group["clip_lambda"], step)
        return Coefficients(
            ADOPTFlags(first_step=step == 0, coupled_decay=not decouple and wd != 0.0,
                       decoupled_decay=decouple and wd != 0.0, clip=group["clip_lambda"] is not None),
            ADOPTScalars(beta1=beta1, beta2=beta2, eps=group["eps"], lr=lr, coupled_decay=0.0 if decouple else wd,
                         decoupled_decay=lr * wd if decouple else 0.0, clip=0.0 if clip is None else clip),
        )

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        if f.coupled_decay:
            grad = grad.add(param.mul(s.coupled_decay))
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if f.first_step:
            exp_avg_sq.addcmul_(grad, grad)
            return
        if f.decoupled_decay:
            param.sub_(param.mul(s.decoupled_decay))
        normed = grad.div(exp_avg_sq.sqrt().clamp_min_(s.eps))
        if f.clip:
            normed.clamp_(-s.clip, s.clip)
        exp_avg.lerp_(normed, 1 - s.beta1)
        param.sub_(exp_avg.mul(s.lr))
        exp_avg_sq.mul_(s.beta2).add_(grad.mul(grad).mul_(1 - s.beta2))
