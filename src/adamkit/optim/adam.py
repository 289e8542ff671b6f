"""Adam, AdamW and AMSGrad: the baselines, exactly as ``torch.optim`` computes them."""
from __future__ import annotations

import math
from types import SimpleNamespace

from . import _checks
from ..kernels import fused_cpu
from .base import AdamkitOptimizer
from .benchspec import BenchSpec


class Adam(AdamkitOptimizer):
    r"""Adam (Kingma & Ba, ICLR 2015), numerically identical to ``torch.optim.Adam``.

    Per parameter, at update ``t`` (bias corrections ``bc1 = 1 - β1^t``, ``bc2 = 1 - β2^t``)::

        g ← -g                                 if maximize
        θ ← θ·(1 - α·λ)                        if decoupled_weight_decay   (AdamW)
        g ← g + λ·θ                            otherwise, if λ ≠ 0         (coupled L2)
        m ← β1·m + (1 - β1)·g
        v ← β2·v + (1 - β2)·g²
        v̄ ← max(v̄, v)                          if amsgrad (v used below is then v̄)
        θ ← θ - (α/bc1) · m / (sqrt(v)/sqrt(bc2) + ε)

    i.e. ``θ_t = θ_{t-1} - α·m̂_t/(sqrt(v̂_t) + ε)``, Algorithm 1 of the paper. The
    paper's "more efficient" form with an uncorrected ε is not what this computes.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate α (default 1e-3).
        betas: (β1, β2), each in [0, 1) (default (0.9, 0.999)).
        eps: ε added to the denominator (default 1e-8).
        weight_decay: λ (default 0).
        amsgrad: keep the running maximum of v (torch's AMSGrad variant, default False).
        decoupled_weight_decay: apply λ as AdamW does (default False).
        maximize: maximise the objective (default False).
        foreach, fused: implementation; None lets adamkit choose the fastest correct one.
        capturable, differentiable: accepted for torch compatibility; only False is supported.

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v),
    ``max_exp_avg_sq`` (v̄, with amsgrad).
    """

    name = "adam"
    bench = BenchSpec(color="#1f77b4", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))
    fused_call = staticmethod(fused_cpu.adam)  # the kernel's arguments for the same math as update()
    hyperparameters = {
        "betas": _checks.betas,
        "eps": _checks.non_negative,
        "weight_decay": _checks.non_negative,
        "amsgrad": _checks.flag,
        "decoupled_weight_decay": _checks.flag,
        "capturable": _checks.must_be_false,
        "differentiable": _checks.must_be_false,
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
        decoupled_weight_decay=False,
        maximize=False,
        foreach=None,
        fused=None,
        capturable=False,
        differentiable=False,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                decoupled_weight_decay=decoupled_weight_decay,
                maximize=maximize,
                foreach=foreach,
                fused=fused,
                capturable=capturable,
                differentiable=differentiable,
            ),
        )

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        lr = float(group["lr"])
        wd = group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        return SimpleNamespace(
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            amsgrad=group["amsgrad"],
            # decoupled decay multiplies θ by this factor (1.0: no decay)
            decay_factor=1.0 - lr * wd if decoupled else 1.0,
            coupled_wd=0.0 if decoupled else wd,
            step_size=lr / bc1,
            sqrt_bc2=math.sqrt(bc2),
        )

    @staticmethod
    def update(param, grad, state, c):
        if c.decay_factor != 1.0:
            param.mul_(c.decay_factor)
        if c.coupled_wd != 0.0:
            grad = grad.add(param, alpha=c.coupled_wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - c.beta1)
        exp_avg_sq.mul_(c.beta2).addcmul_(grad, grad, value=1 - c.beta2)
        second = exp_avg_sq
        if c.amsgrad:
            second = state["max_exp_avg_sq"]
            second.copy_(second.maximum(exp_avg_sq))
        denom = second.sqrt().div_(c.sqrt_bc2).add_(c.eps)
        param.addcdiv_(exp_avg, denom, value=-c.step_size)


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, ICLR 2019), numerically identical to ``torch.optim.AdamW``.

    As :class:`Adam` with decoupled weight decay applied first, ``θ ← θ·(1 - α·λ)``, and
    ``weight_decay`` defaulting to 1e-2. The decay is multiplied by the current
    learning rate as in PyTorch; the paper's decay is not (``λ_torch = λ_paper/α``).
    """

    name = "adamw"
    bench = BenchSpec(color="#17becf", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        fused=None,
        capturable=False,
        differentiable=False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decoupled_weight_decay=True,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )


class AMSGrad(Adam):
    r"""AMSGrad as PyTorch computes it: ``torch.optim.Adam(amsgrad=True)``.

    As :class:`Adam`, with ``v̄ ← max(v̄, v)`` of the *uncorrected* v and the step
    ``θ ← θ - (α/bc1)·m/(sqrt(v̄)/sqrt(bc2) + ε)``. Reddi et al.'s Algorithm 2 differs:
    no bias correction, no ε and a decaying ``α_t = α/sqrt(t)``.

    ``decoupled_weight_decay=True`` gives AMSGrad with AdamW's decay.
    """

    name = "amsgrad"
    bench = BenchSpec(color="#9467bd", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        *,
        decoupled_weight_decay=False,
        maximize=False,
        foreach=None,
        fused=None,
        capturable=False,
        differentiable=False,
    ):
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=True,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )
