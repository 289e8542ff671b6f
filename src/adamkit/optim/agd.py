"""AGD (Yue et al., NeurIPS 2023), as atorch's ``agd.py`` computes it."""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..core import checks
from ..core.hyperparameters import FOREACH, FUSED, PARAM_ROUNDING, STATE_DTYPE, learning_rate
from ..core.tensors import math_dtype
from ..core.benchspec import BenchSpec
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter as H
from .base import AdamkitOptimizer


class AGDFlags(NamedTuple):
    #: no previous momentum: u = m/bc1
    first_step: bool
    amsgrad: bool
    #: θ ← θ·decay_factor
    decoupled_decay: bool
    #: g ← g + λ·θ
    coupled_decay: bool
    clip: bool
    win: bool


class AGDScalars(NamedTuple):
    beta1: float
    beta2: float
    bc1: float
    bc1_prev: float
    decay_factor: float
    coupled_decay: float
    floor: float
    clip: float
    lr_adjust: float
    #: Win: z ← (z - α'·q)·z_factor;  θ ← τ·θ - win_step·q + win_z_weight·z
    z_factor: float
    tau: float
    win_step: float
    win_z_weight: float


class AGD(AdamkitOptimizer):
    r"""AGD (Yue et al., NeurIPS 2023), as the authors' ``agd.py`` in atorch computes it.

    AGD, the auto-switchable optimizer with stepwise gradient difference, preconditions
    with an EMA of the squared difference between consecutive bias-corrected momenta and
    floors the preconditioner at δ: coordinates whose preconditioner is below δ take an
    SGD-with-momentum step (learning rate α/δ), the others an adaptive step. That floor
    *is* the automatic switch. Per parameter, at update ``t`` (``bc1 = 1 - β1^t``,
    ``bc2 = 1 - β2^t``)::

        g ← -g                              if maximize (not in the reference)
        if not win:
            θ ← θ·(1 - λ)                   if weight_decouple and fixed_decay
            θ ← θ·(1 - α·λ)                 if weight_decouple
            g ← g + λ·θ                     if not weight_decouple and λ ≠ 0
        m_prev ← m;  m ← β1·m + (1 - β1)·g
        u ← m/bc1 - m_prev/(1 - β1^(t-1))  (u = m/bc1 = g at t = 1)
        s ← β2·s + (1 - β2)·u²
        r ← sqrt(s), or sqrt(s̄) with s̄ ← max(s̄, s) if amsgrad
        r ← max(r, δ·sqrt(bc2))             (the switch: a floor on the bias-corrected sqrt(ŝ))
        α' = α·sqrt(bc2)/bc1,   q ← m/r,   q ← clamp(q, -clip, clip) if clip
        not win:  θ ← θ - α'·q
        win:      z ← (z - α'·q)/(1 + λ·α');  τ = 1/(3 + 2·α'·λ);  θ ← τ·θ - 2τ·α'·q + 2τ·z

    i.e. ``θ ← θ - α·m̂/max(sqrt(ŝ), δ)`` without the options. With ``win=True`` the
    decay options are ignored: λ enters through the two Win formulas only.

    The reference starts ``z`` at zero, so the first Win step shrinks θ to about a
    third; that is the default (``win_z_init="zeros"``). ``win_z_init="params"``
    starts ``z`` at θ instead, which is probably what was intended.

    The scalars (β^t, bc1, bc2, α', δ·sqrt(bc2)) are computed in double precision;
    the reference rounds them to the default dtype (float32 normally).

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (s),
    ``max_exp_avg_sq`` (s̄, amsgrad), ``z`` (win).

    Low-precision state (``state_dtype``): m "signed"; s, the moment of the *differences* of
    consecutive corrected momenta, is non-negative ("unsigned") and typically decades below
    Adam's v (it shrinks as the momentum settles), and its square root is compared with the
    floor δ: the small-float codes keep its relative precision, so the switch between the
    adaptive and the SGD step happens where it would in float32 (up to the rounding of one
    code step, 6.7-12.5 %). Note that the difference itself is computed from the *decoded* previous
    m, so its rounding noise enters s (as it would with any stored m). s̄ (amsgrad) is rounded
    up ("upper"). Win's z is a signed parameter-like iterate ("signed"); with
    ``win_z_init="params"`` it starts as the parameter, encoded with the stream of the step
    before the first (``state_format.init_key``).
    """

    name = "agd"
    bench = BenchSpec(  # δ: where sqrt(b) is below it the step is SGD's; README: lr ≈ AdamW's / 10, δ 1e-14 (transformers)
        color="#ff7f0e", lr_scale=0.1, eps_name="delta", eps_range=(1e-14, 1e-5), paper_eps=(1e-5, 1e-8, 1e-14),
        paper_configs={"cnn": {"delta": 1e-8, "lr": 1e-3}, "transformer": {"delta": 1e-14}})
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "betas": H((0.9, 0.999), checks.betas, "(β1, β2), each in [0, 1)"),
        "delta": H(1e-5, checks.non_negative, "δ, the floor of sqrt(ŝ) (the authors use 1e-14 for transformers)"),
        "weight_decay": H(0.0, checks.non_negative, "λ"),
        "amsgrad": H(False, checks.flag, "keep the running maximum s̄ of s"),
        "win": H(False, checks.flag, "the Win acceleration (z state)"),
        "clip": H(None, checks.optional_positive, "clamp q to [-clip, clip] (the authors suggest 5 when unstable)"),
        "weight_decouple": H(True, checks.flag, "decoupled decay (else coupled L2)"),
        "fixed_decay": H(False, checks.flag, "decoupled decay without the learning rate"),
        "win_z_init": H("zeros", checks.one_of("zeros", "params"), "z's start: the reference's zeros, or θ",
                        keyword_only=True),
        "maximize": H(False, checks.flag, "maximise the objective (not in the reference)", keyword_only=True),
        "foreach": FOREACH,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
    }
    Flags, Scalars = AGDFlags, AGDScalars
    fused_kernel = FusedKernel("agd")  # its state slots: state_formats, in order
    state_formats = {"exp_avg": "signed", "exp_avg_sq": "unsigned", "max_exp_avg_sq": "upper", "z": "signed"}

    def state_names(self, group):
        names = ("exp_avg", "exp_avg_sq")
        if group["amsgrad"]:
            names += ("max_exp_avg_sq",)
        if group["win"]:
            names += ("z",)
        return names

    def init_state_tensor(self, name, param, group):
        if name == "z" and group["win_z_init"] == "params":
            return param.detach().to(dtype=math_dtype(param.dtype), copy=True, memory_format=torch.preserve_format)
        return super().init_state_tensor(name, param, group)

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        lr = float(group["lr"])
        wd = group["weight_decay"]
        sqrt_bc2 = math.sqrt(bc2)
        lr_adjust = lr * sqrt_bc2 / bc1
        win = group["win"]
        decouple = group["weight_decouple"]
        if win or not decouple:
            decay_factor = 1.0
        else:
            decay_factor = 1.0 - wd if group["fixed_decay"] else 1.0 - lr * wd
        tau = 1.0 / (3.0 + 2.0 * lr_adjust * wd)
        return Coefficients(
            AGDFlags(first_step=t == 1, amsgrad=group["amsgrad"], decoupled_decay=not win and decouple and wd != 0.0,
                     coupled_decay=not (win or decouple) and wd != 0.0, clip=group["clip"] is not None, win=win),
            AGDScalars(beta1=beta1, beta2=beta2, bc1=bc1, bc1_prev=1.0 - beta1 ** (t - 1), decay_factor=decay_factor,
                       coupled_decay=wd if not (win or decouple) else 0.0, floor=group["delta"] * sqrt_bc2,
                       clip=0.0 if group["clip"] is None else group["clip"], lr_adjust=lr_adjust,
                       z_factor=1.0 / (1.0 + wd * lr_adjust), tau=tau, win_step=2.0 * tau * lr_adjust,
                       win_z_weight=2.0 * tau),
        )

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        if f.decoupled_decay:
            param.mul_(s.decay_factor)
        if f.coupled_decay:
            grad = grad.add(param.mul(s.coupled_decay))
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        previous = None if f.first_step else exp_avg.clone()
        exp_avg.mul_(s.beta1).add_(grad.mul(1 - s.beta1))
        diff = exp_avg.div(s.bc1)
        if previous is not None:
            diff.sub_(previous.div_(s.bc1_prev))
        exp_avg_sq.mul_(s.beta2).add_(diff.mul(diff).mul_(1 - s.beta2))
        second = exp_avg_sq
        if f.amsgrad:
            second = state["max_exp_avg_sq"]
            second.copy_(second.maximum(exp_avg_sq))
        q = exp_avg.div(second.sqrt().clamp_min_(s.floor))
        if f.clip:
            q.clamp_(-s.clip, s.clip)
        if not f.win:
            param.sub_(q.mul(s.lr_adjust))
        else:
            z = state["z"]
            z.sub_(q.mul(s.lr_adjust)).mul_(s.z_factor)
            param.mul_(s.tau).sub_(q.mul(s.win_step)).add_(z.mul(s.win_z_weight))
