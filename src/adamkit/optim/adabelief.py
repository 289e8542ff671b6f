"""AdaBelief (Zhuang et al., NeurIPS 2020), as the package adabelief-pytorch 0.2.1 computes it."""
from __future__ import annotations

import enum
import math
from typing import NamedTuple

from ..core import checks
from ..core.hyperparameters import FOREACH, FUSED, PARAM_ROUNDING, STATE_DTYPE, learning_rate
from ..core.benchspec import BenchSpec
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter as H
from .base import AdamkitOptimizer


class Mode(enum.IntEnum):
    """Which step a call takes."""

    ADAPTIVE = 0  # unrectified (the paper's Algorithm 2)
    RECTIFIED = 1  # ρt ≥ 5
    SGD = 2  # ρt < 5 with degenerated_to_sgd
    NONE = 3  # ρt < 5 otherwise: no update


class AdaBeliefFlags(NamedTuple):
    amsgrad: bool
    #: θ ← θ·decay_factor
    decoupled_decay: bool
    #: g ← g + λ·θ
    coupled_decay: bool
    mode: Mode
    rectified_amsgrad: bool


class AdaBeliefScalars(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    decay_factor: float
    coupled_decay: float
    step_size: float
    sgd_step: float
    rectified_step: float
    sqrt_bc2: float


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
    r"""AdaBelief (Zhuang et al., NeurIPS 2020), as the authors' ``adabelief_pytorch.AdaBelief`` 0.2.1 computes it.

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

    With β2 = 0.999 the first five updates take the ``ρt < 5`` branch; with β2 < 2/3, ρ∞ < 5 and the
    rectified default never leaves it.

    With β1 = 0 the belief term vanishes (m = g, so (g - m)² = 0): s holds only the accumulated ε,
    s → ε/(1 - β2), and an adaptive step is about α·g·sqrt((1 - β2)/ε) in size (3·10⁷·α·g at
    ε = 1e-16, β2 = 0.9). On a bounded problem the iterate jumps from bound to bound: Reddi et al.'s
    counterexample in ``adamkit bench`` (β1 = 0) shows it, θ ending at −1 but averaging +1/3.

    Where the reference is odd, its behaviour is the default and a named option
    gives the alternative:

    * ``rectified_amsgrad=True`` makes the rectified branch use the AMSGrad
      maximum s̄ (the reference keeps s̄ but ignores it once ``ρt ≥ 5``).

    The paper's algorithm is ``rectify=False, weight_decay=0, amsgrad=False``.

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_var`` (s, with the
    accumulated ε), ``max_exp_avg_var`` (s̄, amsgrad).

    Low-precision state (``state_dtype``): m "signed". s is non-negative ("unsigned") but it is
    the widest-ranging second moment of the family: it is the variance of g around m, which
    can be many decades below g², plus ε accumulated every step (ε = 1e-16 by default, so
    s ≥ about 1e-13 after a few thousand steps). The unsigned codes (small floats of 3
    mantissa bits) keep its relative precision over 255 codes down to 2.9e-10 of a block's largest value, and stochastic
    rounding keeps the tiny per-step ε increments in expectation (round-to-nearest would drop
    them). Where s is below that range of its block it reads zero and the ε of the
    denominator bounds the step, as it does in float32 at the start. s̄ (amsgrad) is rounded
    up ("upper"): never below the true maximum.
    """

    name = "adabelief"
    bench = BenchSpec(  # ε inside the root ≈ Adam's ε squared; the paper's runs: rectify off, ε per task
        color="#d62728", eps_range=(1e-16, 1e-8), paper_eps=(1e-16, 1e-12, 1e-10, 1e-8),
        paper_configs={"cnn": {"rectify": False, "weight_decouple": False, "eps": 1e-8, "lr": 1e-3},
                       "lstm": {"rectify": False, "weight_decouple": False, "eps": 1e-16, "lr": 1e-3},
                       "gan": {"rectify": False, "eps": 1e-12, "lr": 2e-4}, "toy": {"rectify": False}})
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "betas": H((0.9, 0.999), checks.betas, "(β1, β2), each in [0, 1)"),
        "eps": H(1e-16, checks.non_negative, "ε (the authors use 1e-8 for image classification)"),
        "weight_decay": H(0.0, checks.non_negative, "λ"),
        "amsgrad": H(False, checks.flag, "keep the running maximum s̄ of s"),
        "weight_decouple": H(True, checks.flag, "decoupled decay θ ← θ·(1 - α·λ) (else coupled L2)"),
        "fixed_decay": H(False, checks.flag, "decoupled decay without the learning rate: θ ← θ·(1 - λ)"),
        "rectify": H(True, checks.flag, "RAdam-style rectification (the package default)"),
        "degenerated_to_sgd": H(True, checks.flag, "while ρt < 5, an SGD-with-momentum step (else none)"),
        "print_change_log": H(False, checks.flag, "accepted for compatibility with the reference; prints nothing",
                              stored=False),
        "rectified_amsgrad": H(False, checks.flag, "the rectified branch uses s̄ (the reference ignores it)",
                               keyword_only=True),
        "maximize": H(False, checks.flag, "maximise the objective (not in the reference)", keyword_only=True),
        "foreach": FOREACH,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
    }
    Flags, Scalars = AdaBeliefFlags, AdaBeliefScalars
    fused_kernel = FusedKernel("adabelief")  # its state slots: state_formats, in order
    state_formats = {"exp_avg": "signed", "exp_avg_var": "unsigned", "max_exp_avg_var": "upper"}

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
        rectified_step = 0.0
        if not group["rectify"]:
            mode = Mode.ADAPTIVE
        else:
            rho_t, r = rectification(beta2, t)
            if rho_t >= 5.0:
                mode, rectified_step = Mode.RECTIFIED, r / bc1 * lr
            elif group["degenerated_to_sgd"]:
                mode = Mode.SGD
            else:
                mode = Mode.NONE
        decouple = group["weight_decouple"]
        if decouple:
            decay_factor = 1.0 - wd if group["fixed_decay"] else 1.0 - lr * wd
        else:
            decay_factor = 1.0
        return Coefficients(
            AdaBeliefFlags(amsgrad=group["amsgrad"], decoupled_decay=decouple and wd != 0.0,
                           coupled_decay=not decouple and wd != 0.0, mode=mode,
                           rectified_amsgrad=group["rectified_amsgrad"]),
            AdaBeliefScalars(beta1=beta1, beta2=beta2, eps=group["eps"], decay_factor=decay_factor,
                             coupled_decay=0.0 if decouple else wd, step_size=lr / bc1, sgd_step=1.0 / bc1 * lr,
                             rectified_step=rectified_step, sqrt_bc2=math.sqrt(bc2)),
        )

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        if f.decoupled_decay:
            param.mul_(s.decay_factor)
        if f.coupled_decay:
            grad = grad.add(param.mul(s.coupled_decay))
        exp_avg, exp_avg_var = state["exp_avg"], state["exp_avg_var"]
        exp_avg.mul_(s.beta1).add_(grad.mul(1 - s.beta1))
        residual = grad.sub(exp_avg)
        exp_avg_var.mul_(s.beta2).add_(residual.mul(residual).mul_(1 - s.beta2)).add_(s.eps)
        second = exp_avg_var
        if f.amsgrad:
            second = state["max_exp_avg_var"]
            second.copy_(second.maximum(exp_avg_var))
        if f.mode == Mode.ADAPTIVE:
            denom = second.sqrt().div_(s.sqrt_bc2).add_(s.eps)
            param.sub_(exp_avg.div(denom).mul_(s.step_size))
        elif f.mode == Mode.RECTIFIED:
            denom = (second if f.rectified_amsgrad else exp_avg_var).sqrt().add_(s.eps)
            param.sub_(exp_avg.div(denom).mul_(s.rectified_step))
        elif f.mode == Mode.SGD:
            param.sub_(exp_avg.mul(s.sgd_step))
