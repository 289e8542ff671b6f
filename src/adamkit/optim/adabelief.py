"""AdaBelief (Zhuang et al., NeurIPS 2020), as the package adabelief-pytorch 0.2.1 computes it."""
from __future__ import annotations

import math
from types import SimpleNamespace

from . import _checks
from ..kernels import fused_cpu
from .base import AdamkitOptimizer
from .benchspec import BenchSpec


def rectification(beta2: float, t: int) -> tuple[float, float]:
    """RAdam's ``(ρ_t, r_t·bc1)`` at update ``t``: the length of the SMA and the variance rectification.

    ``r`` is returned only for ``ρ_t ≥ 5`` (else 0.0); it is the reference's
    ``step_size`` before the division by ``bc1``, in the reference's order of operations.
    """
    beta2_t = beta2**t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
    if rho_t < 5.0:
        return rho_t, 0.0
    r = math.sqrt(
        (1.0 - beta2_t) * (rho_t - 4.0) / (rho_inf - 4.0) * (rho_t - 2.0) / rho_t * rho_inf / (rho_inf - 2.0)
    )
    return rho_t, r


class AdaBelief(AdamkitOptimizer):
    r"""AdaBelief, numerically identical to ``adabelief_pytorch.AdaBelief`` 0.2.1 (the authors' package).

    Per parameter, at update ``t`` (``bc1 = 1 - β1^t``, ``bc2 = 1 - β2^t``)::

        g ← -g                               if maximize (not in the reference)
        θ ← θ·(1 - λ)                        if weight_decouple and fixed_decay
        θ ← θ·(1 - α·λ)                      if weight_decouple (every step, also when λ = 0)
        g ← g + λ·θ                          if not weight_decouple and λ ≠ 0 (coupled L2)
        m ← β1·m + (1 - β1)·g
        s ← β2·s + (1 - β2)·(g - m)² + ε     (the new m; ε accumulates in the state)
        s̄ ← max(s̄, s)                        if amsgrad
        rectify = False (the paper's Algorithm 2):
            θ ← θ - (α/bc1) · m / (sqrt(s or s̄)/sqrt(bc2) + ε)
        rectify = True (RAdam-style, the package default):
            ρ∞ = 2/(1 - β2) - 1,   ρt = ρ∞ - 2·t·β2^t/(1 - β2^t)
            ρt ≥ 5:  r = sqrt((1-β2^t)(ρt-4)(ρt-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρt)) / bc1
                     θ ← θ - α·r · m / (sqrt(s) + ε)      (raw s: no /bc2, and not s̄)
            else, degenerated_to_sgd:  θ ← θ - (α/bc1)·m  (SGD with momentum)
            else:    no update (the decoupled decay above still applies)

    With β2 = 0.999 the first five updates take the ``ρt < 5`` branch.

    Where the reference is odd, its behaviour is the default and a named option
    gives the alternative:
      * ``rectified_amsgrad=True`` makes the rectified branch use the AMSGrad
        maximum s̄ (the reference keeps s̄ but ignores it once ``ρt ≥ 5``).

    Args:
        lr (1e-3), betas ((0.9, 0.999)), eps (1e-16; the authors use 1e-8 for image
        classification), weight_decay (0), amsgrad (False), weight_decouple (True),
        fixed_decay (False), rectify (True), degenerated_to_sgd (True),
        rectified_amsgrad (False), maximize (False), foreach / fused (None: adamkit chooses),
        print_change_log: accepted for compatibility with the reference; adamkit prints nothing.

    The paper's algorithm is ``rectify=False, weight_decay=0, amsgrad=False``.

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_var`` (s, with the
    accumulated ε), ``max_exp_avg_var`` (s̄, amsgrad).
    """

    name = "adabelief"
    bench = BenchSpec(  # ε inside the root ≈ Adam's ε squared; the paper's runs: rectify off, ε per task
        color="#d62728", eps_range=(1e-16, 1e-8), paper_eps=(1e-16, 1e-12, 1e-10, 1e-8),
        paper_configs={"cnn": {"rectify": False, "weight_decouple": False, "eps": 1e-8},
                       "lstm": {"rectify": False, "weight_decouple": False, "eps": 1e-16},
                       "gan": {"rectify": False, "eps": 1e-12}, "toy": {"rectify": False}})
    fused_call = staticmethod(fused_cpu.adabelief)  # the kernel's arguments for the same math as update()
    hyperparameters = {
        "betas": _checks.betas,
        "eps": _checks.non_negative,
        "weight_decay": _checks.non_negative,
        "amsgrad": _checks.flag,
        "weight_decouple": _checks.flag,
        "fixed_decay": _checks.flag,
        "rectify": _checks.flag,
        "degenerated_to_sgd": _checks.flag,
        "rectified_amsgrad": _checks.flag,
    }

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-16,
        weight_decay=0.0,
        amsgrad=False,
        weight_decouple=True,
        fixed_decay=False,
        rectify=True,
        degenerated_to_sgd=True,
        print_change_log=False,
        *,
        rectified_amsgrad=False,
        maximize=False,
        foreach=None,
        fused=None,
    ):
        _checks.flag("print_change_log", print_change_log)
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                eps=eps,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                weight_decouple=weight_decouple,
                fixed_decay=fixed_decay,
                rectify=rectify,
                degenerated_to_sgd=degenerated_to_sgd,
                rectified_amsgrad=rectified_amsgrad,
                maximize=maximize,
                foreach=foreach,
                fused=fused,
            ),
        )

    def check_group(self, group):
        if group.get("rectified_amsgrad") and not (group.get("amsgrad") and group.get("rectify")):
            raise ValueError("rectified_amsgrad=True needs amsgrad=True and rectify=True")

    def state_names(self, group):
        if group["amsgrad"]:
            return ("exp_avg", "exp_avg_var", "max_exp_avg_var")
        return ("exp_avg", "exp_avg_var")

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        lr = float(group["lr"])
        wd = group["weight_decay"]
        # mode: "adaptive" (unrectified), "rectified", "sgd" or "none"
        rectified_step = 0.0
        if not group["rectify"]:
            mode = "adaptive"
        else:
            rho_t, r = rectification(beta2, t)
            if rho_t >= 5.0:
                mode, rectified_step = "rectified", r / bc1 * lr
            elif group["degenerated_to_sgd"]:
                mode = "sgd"
            else:
                mode = "none"
        if group["weight_decouple"]:
            decay_factor = 1.0 - wd if group["fixed_decay"] else 1.0 - lr * wd
        else:
            decay_factor = 1.0
        return SimpleNamespace(
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            amsgrad=group["amsgrad"],
            rectified_amsgrad=group["rectified_amsgrad"],
            decay_factor=decay_factor,
            coupled_wd=0.0 if group["weight_decouple"] else wd,
            mode=mode,
            step_size=lr / bc1,
            sgd_step=1.0 / bc1 * lr,
            rectified_step=rectified_step,
            sqrt_bc2=math.sqrt(bc2),
        )

    @staticmethod
    def update(param, grad, state, c):
        if c.decay_factor != 1.0:
            param.mul_(c.decay_factor)
        if c.coupled_wd != 0.0:
            grad = grad.add(param, alpha=c.coupled_wd)
        exp_avg, exp_avg_var = state["exp_avg"], state["exp_avg_var"]
        exp_avg.mul_(c.beta1).add_(grad, alpha=1 - c.beta1)
        residual = grad.sub(exp_avg)
        exp_avg_var.mul_(c.beta2).addcmul_(residual, residual, value=1 - c.beta2).add_(c.eps)
        second = exp_avg_var
        if c.amsgrad:
            second = state["max_exp_avg_var"]
            second.copy_(second.maximum(exp_avg_var))
        if c.mode == "adaptive":
            denom = second.sqrt().div_(c.sqrt_bc2).add_(c.eps)
            param.addcdiv_(exp_avg, denom, value=-c.step_size)
        elif c.mode == "rectified":
            denom = (second if c.rectified_amsgrad else exp_avg_var).sqrt().add_(c.eps)
            param.addcdiv_(exp_avg, denom, value=-c.rectified_step)
        elif c.mode == "sgd":
            param.add_(exp_avg, alpha=-c.sgd_step)
