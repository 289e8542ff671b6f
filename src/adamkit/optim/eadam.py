"""EAdam (Yuan & Gao 2020): Adam with ε moved inside the square root and accumulated in the state."""
from __future__ import annotations

import math
from types import SimpleNamespace

from . import _checks
from ..kernels import fused_cpu
from .base import AdamkitOptimizer
from .benchspec import BenchSpec


class EAdam(AdamkitOptimizer):
    r"""EAdam (Yuan & Gao, arXiv 2011.02150), as the authors' ``EAdam.py`` computes it.

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

    Args:
        lr (1e-3), betas ((0.9, 0.999)), eps (1e-8), weight_decay (0, coupled),
        amsgrad (False), maximize (False; not in the reference), foreach / fused (None: adamkit chooses).

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (with ε), ``max_exp_avg_sq`` (amsgrad).
    """

    name = "eadam"
    bench = BenchSpec(  # ε accumulates in v (≈ 1000 ε added to v̂); the paper: 1e-8 (CNNs), 1e-16 (LSTMs)
        color="#8c564b", eps_range=(1e-16, 1e-6), paper_eps=(1e-8, 1e-16),
        paper_configs={"cnn": {"eps": 1e-8}, "lstm": {"eps": 1e-16}})
    fused_call = staticmethod(fused_cpu.eadam)  # the kernel's arguments for the same math as update()
    hyperparameters = {
        "betas": _checks.betas,
        "eps": _checks.non_negative,
        "weight_decay": _checks.non_negative,
        "amsgrad": _checks.flag,
    }

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        fused=None,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                maximize=maximize,
                foreach=foreach,
                fused=fused,
            ),
        )

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        return SimpleNamespace(
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            amsgrad=group["amsgrad"],
            weight_decay=group["weight_decay"],
            step_size=float(group["lr"]) * math.sqrt(bc2) / bc1,
        )

    @staticmethod
    def update(param, grad, state, c):
        if c.weight_decay != 0.0:
            grad = grad.add(param, alpha=c.weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(c.beta1).add_(grad, alpha=1 - c.beta1)
        exp_avg_sq.mul_(c.beta2).addcmul_(grad, grad, value=1 - c.beta2)
        if c.amsgrad:
            max_sq = state["max_exp_avg_sq"]
            max_sq.copy_(max_sq.maximum(exp_avg_sq))
            denom = max_sq.sqrt().add_(c.eps)
        else:
            denom = exp_avg_sq.add_(c.eps).sqrt()
        param.addcdiv_(exp_avg, denom, value=-c.step_size)
