"""AGD (Yue et al., NeurIPS 2023), as atorch's ``agd.py`` computes it."""
from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from . import _checks
from ..kernels import fused_cpu
from .base import AdamkitOptimizer, math_dtype
from .benchspec import BenchSpec


class AGD(AdamkitOptimizer):
    r"""AGD: auto-switchable optimizer with stepwise gradient difference, as atorch's reference computes it.

    AGD preconditions with an EMA of the squared difference between consecutive
    bias-corrected momenta and floors the preconditioner at δ: coordinates whose
    preconditioner is below δ take an SGD-with-momentum step (learning rate α/δ), the
    others an adaptive step. That floor *is* the automatic switch. Per parameter, at
    update ``t`` (``bc1 = 1 - β1^t``, ``bc2 = 1 - β2^t``)::

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

    Args:
        lr (1e-3; the authors suggest about 1/10 of AdamW's), betas ((0.9, 0.999)),
        delta (1e-5; the authors use 1e-14 for transformers), weight_decay (0),
        amsgrad (False), win (False), clip (None; the authors suggest 5 when unstable),
        weight_decouple (True), fixed_decay (False), win_z_init ("zeros"),
        maximize (False), foreach / fused (None: adamkit chooses).

    State per parameter: ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (s),
    ``max_exp_avg_sq`` (s̄, amsgrad), ``z`` (win).
    """

    name = "agd"
    bench = BenchSpec(  # δ: where sqrt(b) is below it the step is SGD's; README: lr ≈ AdamW's / 10, δ 1e-14 (transformers)
        color="#ff7f0e", lr_scale=0.1, eps_name="delta", eps_range=(1e-14, 1e-5), paper_eps=(1e-5, 1e-8, 1e-14),
        paper_configs={"cnn": {"delta": 1e-8}, "transformer": {"delta": 1e-14}})
    fused_call = staticmethod(fused_cpu.agd)  # the kernel's arguments for the same math as update()
    hyperparameters = {
        "betas": _checks.betas,
        "delta": _checks.non_negative,
        "weight_decay": _checks.non_negative,
        "amsgrad": _checks.flag,
        "win": _checks.flag,
        "clip": _checks.optional_positive,
        "weight_decouple": _checks.flag,
        "fixed_decay": _checks.flag,
        "win_z_init": _checks.one_of("zeros", "params"),
    }

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        delta=1e-5,
        weight_decay=0.0,
        amsgrad=False,
        win=False,
        clip=None,
        weight_decouple=True,
        fixed_decay=False,
        *,
        win_z_init="zeros",
        maximize=False,
        foreach=None,
        fused=None,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                betas=betas,
                delta=delta,
                weight_decay=weight_decay,
                amsgrad=amsgrad,
                win=win,
                clip=clip,
                weight_decouple=weight_decouple,
                fixed_decay=fixed_decay,
                win_z_init=win_z_init,
                maximize=maximize,
                foreach=foreach,
                fused=fused,
            ),
        )

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
        if win or not group["weight_decouple"]:
            decay_factor = 1.0
        else:
            decay_factor = 1.0 - wd if group["fixed_decay"] else 1.0 - lr * wd
        return SimpleNamespace(
            first=t == 1,
            beta1=beta1,
            beta2=beta2,
            bc1=bc1,
            bc1_prev=1.0 - beta1 ** (t - 1),
            decay_factor=decay_factor,
            coupled_wd=wd if not (win or group["weight_decouple"]) else 0.0,
            amsgrad=group["amsgrad"],
            floor=group["delta"] * sqrt_bc2,
            clip=group["clip"],
            lr_adjust=lr_adjust,
            win=win,
            z_factor=1.0 / (1.0 + wd * lr_adjust),
            tau=1.0 / (3.0 + 2.0 * lr_adjust * wd),
        )

    @staticmethod
    def update(param, grad, state, c):
        if c.decay_factor != 1.0:
            param.mul_(c.decay_factor)
        if c.coupled_wd != 0.0:
            grad = grad.add(param, alpha=c.coupled_wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        previous = None if c.first else exp_avg.clone()
        exp_avg.mul_(c.beta1).add_(grad, alpha=1 - c.beta1)
        diff = exp_avg.div(c.bc1)
        if previous is not None:
            diff.sub_(previous.div_(c.bc1_prev))
        exp_avg_sq.mul_(c.beta2).addcmul_(diff, diff, value=1 - c.beta2)
        second = exp_avg_sq
        if c.amsgrad:
            second = state["max_exp_avg_sq"]
            second.copy_(second.maximum(exp_avg_sq))
        q = exp_avg.div(second.sqrt().clamp_min_(c.floor))
        if c.clip is not None:
            q.clamp_(-c.clip, c.clip)
        if not c.win:
            param.add_(q, alpha=-c.lr_adjust)
        else:
            z = state["z"]
            z.add_(q, alpha=-c.lr_adjust).mul_(c.z_factor)
            param.mul_(c.tau).add_(q, alpha=-2.0 * c.tau * c.lr_adjust).add_(z, alpha=2.0 * c.tau)
