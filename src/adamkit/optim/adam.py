"""Adam, AdamW and AMSGrad: the baselines, exactly as ``torch.optim`` computes them."""
from __future__ import annotations

import math
from typing import NamedTuple

from ..core import checks
from ..core.hyperparameters import FOREACH, FUSED, PARAM_ROUNDING, STATE_DTYPE, MAXIMIZE, learning_rate
from ..core.benchspec import BenchSpec
from ..core.declaration import Coefficients, FusedKernel, Hyperparameter as H, variant
from .base import AdamkitOptimizer


class AdamFlags(NamedTuple):
    amsgrad: bool
    #: θ ← θ·decay_factor (AdamW)
    decoupled_decay: bool
    #: g ← g + λ·θ (L2)
    coupled_decay: bool


class AdamScalars(NamedTuple):
    beta1: float
    beta2: float
    eps: float
    decay_factor: float
    coupled_decay: float
    step_size: float
    sqrt_bc2: float


#: torch compatibility: accepted, only False is supported
TORCH_ONLY_FALSE = {
    "capturable": H(False, checks.must_be_false, "accepted for torch compatibility; only False", keyword_only=True),
    "differentiable": H(False, checks.must_be_false, "accepted for torch compatibility; only False",
                        keyword_only=True),
}


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

    State per parameter: ``step`` (int), ``exp_avg`` (m), ``exp_avg_sq`` (v),
    ``max_exp_avg_sq`` (v̄, with amsgrad).

    Low-precision state (``state_dtype``, :mod:`adamkit.core.state_format`): m is a signed
    average of gradients ("signed" codes, symmetric around an exact zero); v is an average of
    squares, never negative, spanning twice the decades of the gradients, so it takes the
    "unsigned" codes whose 255 small-float magnitudes reach 2.9e-10 of a block's largest value
    (it sits under a square root in the denominator: a small v must keep its *relative*
    precision, which a linear code would lose). AMSGrad's v̄ is a running maximum that must
    never read below the true maximum (the guarantee the variant exists for), so it is rounded
    **up** ("upper"), never stochastically: the decoded v̄ is ≥ every decoded v it has seen.
    """

    name = "adam"
    bitsandbytes_reference = "Adam8bit"  # its CPU step, timed by adamkit speed beside int8 state
    torchao_reference = ("Adam8bit", {})
    bench = BenchSpec(color="#1f77b4", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))
    hyperparameters = {
        "lr": learning_rate(1e-3),
        "betas": H((0.9, 0.999), checks.betas, "(β1, β2), each in [0, 1)"),
        "eps": H(1e-8, checks.non_negative, "ε added to the denominator"),
        "weight_decay": H(0.0, checks.non_negative, "λ"),
        "amsgrad": H(False, checks.flag, "keep the running maximum of v (torch's AMSGrad variant)"),
        "decoupled_weight_decay": H(False, checks.flag, "apply λ as AdamW does", keyword_only=True),
        "maximize": MAXIMIZE,
        "foreach": FOREACH,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
        **TORCH_ONLY_FALSE,
    }
    Flags, Scalars = AdamFlags, AdamScalars
    fused_kernel = FusedKernel("adam")  # its state slots: state_formats, in order
    state_formats = {"exp_avg": "signed", "exp_avg_sq": "unsigned", "max_exp_avg_sq": "upper"}

    def state_names(self, group):
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def coefficients(self, group, step, loss):
        t = step + 1
        beta1, beta2 = group["betas"]
        bc1, bc2 = self.bias_corrections(group["betas"], t)
        lr = float(group["lr"])
        wd = group["weight_decay"]
        decoupled = group["decoupled_weight_decay"]
        return Coefficients(
            AdamFlags(amsgrad=group["amsgrad"], decoupled_decay=decoupled and wd != 0.0,
                      coupled_decay=not decoupled and wd != 0.0),
            AdamScalars(beta1=beta1, beta2=beta2, eps=group["eps"], decay_factor=1.0 - lr * wd if decoupled else 1.0,
                        coupled_decay=0.0 if decoupled else wd, step_size=lr / bc1, sqrt_bc2=math.sqrt(bc2)),
        )

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        if f.decoupled_decay:
            param.mul_(s.decay_factor)
        if f.coupled_decay:
            grad = grad.add(param.mul(s.coupled_decay))
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - s.beta1)
        exp_avg_sq.mul_(s.beta2).add_(grad.mul(grad).mul_(1 - s.beta2))
        second = exp_avg_sq
        if f.amsgrad:
            second = state["max_exp_avg_sq"]
            second.copy_(second.maximum(exp_avg_sq))
        denom = second.sqrt().div_(s.sqrt_bc2).add_(s.eps)
        param.sub_(exp_avg.div(denom).mul_(s.step_size))


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, ICLR 2019), numerically identical to ``torch.optim.AdamW``.

    As :class:`Adam` with decoupled weight decay applied first, ``θ ← θ·(1 - α·λ)``, and
    ``weight_decay`` defaulting to 1e-2. The decay is multiplied by the current
    learning rate as in PyTorch; the paper's decay is not (``λ_torch = λ_paper/α``).
    """

    name = "adamw"
    bitsandbytes_reference = "AdamW8bit"
    torchao_reference = ("AdamW8bit", {})
    hyperparameters = variant(Adam.hyperparameters, defaults={"weight_decay": 1e-2},
                              fixed={"decoupled_weight_decay": True})
    bench = BenchSpec(color="#17becf", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))


class AMSGrad(Adam):
    r"""AMSGrad (Reddi, Kale & Kumar, ICLR 2018), as PyTorch computes it: ``torch.optim.Adam(amsgrad=True)``.

    As :class:`Adam`, with ``v̄ ← max(v̄, v)`` of the *uncorrected* v and the step
    ``θ ← θ - (α/bc1)·m/(sqrt(v̄)/sqrt(bc2) + ε)``. Reddi et al.'s Algorithm 2 differs:
    no bias correction, no ε and a decaying ``α_t = α/sqrt(t)``.

    ``decoupled_weight_decay=True`` gives AMSGrad with AdamW's decay.
    """

    name = "amsgrad"
    hyperparameters = variant(Adam.hyperparameters, fixed={"amsgrad": True})
    torch_reference = ("Adam", {"amsgrad": True})  # keeps a third state tensor: compared with its own torch twin
    bitsandbytes_reference = None  # bitsandbytes has no 8-bit AMSGrad
    torchao_reference = ("Adam8bit", {"amsgrad": True})
    bench = BenchSpec(color="#9467bd", eps_range=(1e-10, 1e-6), paper_eps=(1e-8,))
