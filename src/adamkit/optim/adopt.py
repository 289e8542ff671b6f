"""ADOPT (Taniguchi et al., NeurIPS 2024), as the authors' ``adopt.py`` (torch-adopt 0.1.0) computes it."""
from __future__ import annotations

import math
import numbers
from types import SimpleNamespace

from . import _checks
from ..kernels import fused_cpu
from .base import AdamkitOptimizer
from .benchspec import BenchSpec


def _clip_lambda(name, value):
    """None (no clipping), a number p (threshold ``t**p``) or a callable ``t -> threshold``."""
    if value is None or callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(
            f"{name} must be None, a finite exponent p (threshold step**p) or a callable step -> threshold, "
            f"got {value!r}"
        )
    return float(value)


def clip_threshold(clip_lambda, t: int) -> float | None:
    """The clipping threshold at update ``t`` (1 at the second call), in double precision."""
    if clip_lambda is None:
        return None
    threshold = float(t) ** clip_lambda if isinstance(clip_lambda, float) else float(clip_lambda(t))
    if not threshold > 0.0:
        raise ValueError(f"clip_lambda gave the threshold {threshold} at step {t}; it must be > 0")
    return threshold


class ADOPT(AdamkitOptimizer):
    r"""ADOPT, numerically identical to the authors' reference (github iShohei220/adopt, current code).

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

    Args:
        lr (1e-3), betas ((0.9, **0.9999**)), eps (**1e-6**),
        clip_lambda: the clipping threshold as a function of the update index t:
            a callable ``t -> c_t`` (as the reference), a number p meaning ``t**p``
            (default 0.25, the reference's ``step**0.25``; a number keeps the
            state dict serialisable) or None for no clipping.
        weight_decay (0), decouple (False: coupled L2; True: AdamW-style),
        maximize (False), foreach / fused (None: adamkit chooses),
        capturable, differentiable: accepted for compatibility; only False is supported.

    State per parameter: ``step`` (calls made, the initialising one included),
    ``exp_avg`` (m), ``exp_avg_sq`` (v).
    """

    name = "adopt"
    bench = BenchSpec(  # ε is a floor on sqrt(v); the paper: 1e-6, clipped (t^¼) and the original unclipped form
        color="#2ca02c", eps_range=(1e-8, 1e-4), paper_eps=(1e-6,),
        paper_configs={"clipped": {"clip_lambda": 0.25}, "unclipped": {"clip_lambda": None}})
    fused_call = staticmethod(fused_cpu.adopt)  # the kernel's arguments for the same math as update()
    hyperparameters = {
        "betas": _checks.betas,
        "eps": _checks.non_negative,
        "clip_lambda": _clip_lambda,
        "weight_decay": _checks.non_negative,
        "decouple": _checks.flag,
        "capturable": _checks.must_be_false,
        "differentiable": _checks.must_be_false,
    }

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.9999),
        eps=1e-6,
        clip_lambda=0.25,
        weight_decay=0.0,
        decouple=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                clip_lambda=clip_lambda,
                weight_decay=weight_decay,
                decouple=decouple,
                maximize=maximize,
                foreach=foreach,
                fused=fused,
                capturable=capturable,
                differentiable=differentiable,
            ),
        )

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        beta1, beta2 = group["betas"]
        lr = float(group["lr"])
        wd = group["weight_decay"]
        return SimpleNamespace(
            initialise=step == 0,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            lr=lr,
            coupled_wd=0.0 if group["decouple"] else wd,
            decoupled_wd=lr * wd if group["decouple"] else 0.0,
            clip=None if step == 0 else clip_threshold(group["clip_lambda"], step),
        )

    @staticmethod
    def update(param, grad, state, c):
        if c.coupled_wd != 0.0:
            grad = grad.add(param, alpha=c.coupled_wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        if c.initialise:
            exp_avg_sq.addcmul_(grad, grad)
            return
        if c.decoupled_wd != 0.0:
            param.add_(param, alpha=-c.decoupled_wd)
        normed = grad.div(exp_avg_sq.sqrt().clamp_min_(c.eps))
        if c.clip is not None:
            normed.clamp_(-c.clip, c.clip)
        exp_avg.lerp_(normed, 1 - c.beta1)
        param.add_(exp_avg, alpha=-c.lr)
        exp_avg_sq.mul_(c.beta2).addcmul_(grad, grad, value=1 - c.beta2)
