"""EAdam (Yuan & Gao 2020): Adam with ε moved inside the square root and accumulated in the state."""
from __future__ import annotations

import math
from typing import NamedTuple

from ..core import checks
from ..core.hyperparameters import FOREACH, FUSED, PARAM_ROUNDING, STATE_DTYPE, learning_rate
from ..core.benchspec import BenchSpec
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter as H
from .base import AdamkitOptimizer


class EAdamFlags(NamedTuple):
    amsgrad: bool
    #: g ← g + λ·θ
    coupled_decay: bool


class EAdamScalars(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    coupled_decay: float
    step_size: float


class EAdam(AdamkitOptimizer):
    r"""EAdam (Yuan & Gao, arXiv 2011.02150), as the authors' ``EAdam.py`` (yuanwei2019/EAdam-optimizer) computes it.

    Per parameter, at update ``t`` (``bc1 = 1 - β1^t``, ``bc2 = 1 - β2^t``)::

        g ← -g                           if maximize
        g ← g + λ·θ                      if λ ≠ 0 (coupled L2; EAdam has no decoupled decay)
        m ← β1·m + (1 - β1)·g
        v ← β2·v + (1 - β2)·g²
        amsgrad = False (the paper's algorithm):
            v ← v + ε                    (stored: the state accumulates ε every step)
            θ ← θ - α·(sqrt(bc2)/bc1) · m / sqrt(v)
        amsgrad = True (the reference's other branch, not in the paper):
            v̄ ← max(v̄, v)                (no ε is accumulated)
            θ ← θ - α·(sqrt(bc2)/bc1) · m / (sqrt(v̄) + ε)

    With the default β2 the accumulated ε makes ``v̂ ≈ EMA(g²)/bc2 + 1000·ε``.
    A checkpointed ``exp_avg_sq`` already contains the accumulated ε.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (with ε), ``max_exp_avg_sq`` (amsgrad).

    Low-precision state (``state_dtype``): m "signed"; v "unsigned" (non-negative, and the ε it
    accumulates every step is stored in it: in bfloat16 or 8-bit codes the accumulated ε is
    rounded stochastically like the rest of v, so it is kept in expectation; where g² ≪ ε the
    block's scale is about 1000·ε/(1 - β2)-sized and v keeps its relative precision); the
    amsgrad maximum v̄ "upper" (rounded up: never below the true maximum).
    """

    name = "eadam"
    bench = BenchSpec(  # ε accumulates in v (≈ 1000 ε added to v̂); the paper: 1e-8 (CNNs), 1e-16 (LSTMs)
        color="#8c564b", eps_range=(1e-16, 1e-6), paper_eps=(1e-8, 1e-16),
        paper_configs={"cnn": {"eps": 1e-8, "lr": 1e-3}, "lstm": {"eps": 1e-16, "lr": 1e-3}})
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "betas": H((0.9, 0.999), checks.betas, "(β1, β2), each in [0, 1)"),
        "eps": H(1e-8, checks.non_negative, "ε, accumulated in v every step"),
        "weight_decay": H(0.0, checks.non_negative, "λ (coupled L2)"),
        "amsgrad": H(False, checks.flag, "the reference's AMSGrad branch"),
        "maximize": H(False, checks.flag, "maximise the objective (not in the reference)", keyword_only=True),
        "foreach": FOREACH,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
    }
    Flags, Scalars = EAdamFlags, EAdamScalars
    fused_kernel = FusedKernel("eadam")  # its state slots: state_formats, in order
    state_formats = {"exp_avg": "signed", "exp_avg_sq": "unsigned", "max_exp_avg_sq": "upper"}

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        wd = group["weight_decay"]
        return Coefficients(
            EAdamFlags(amsgrad=group["amsgrad"], coupled_decay=wd != 0.0),
            EAdamScalars(beta1=beta1, beta2=beta2, eps=group["eps"], coupled_decay=wd,
                         step_size=float(group["lr"]) * math.sqrt(bc2) / bc1),
        )

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        if f.coupled_decay:
            grad = grad.add(param.mul(s.coupled_decay))
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(s.beta1).add_(grad.mul(1 - s.beta1))
        exp_avg_sq.mul_(s.beta2).add_(grad.mul(grad).mul_(1 - s.beta2))
        if f.amsgrad:
            max_sq = state["max_exp_avg_sq"]
            max_sq.copy_(max_sq.maximum(exp_avg_sq))
            denom = max_sq.sqrt().add_(s.eps)
        else:
            denom = exp_avg_sq.add_(s.eps).sqrt()
        param.sub_(exp_avg.div(denom).mul_(s.step_size))
