"""The compiled path: ``torch.compile`` of each algorithm's update, with every number a tensor
(``fused="compiled"`` on any device; ``fused=True`` on CUDA and other non-CPU devices).

Why not compile the algorithm's ``update`` itself: it takes its scalars as
Python floats and branches on their values (``if c.decay_factor != 1.0``);
dynamo specialises such floats, so every new learning rate or bias correction
would recompile. Here the same math is written against 0-dim tensors: the
numbers of ``coefficients()`` (learning rate, betas, bias corrections, step
sizes, decay factors, clip thresholds) travel in one float64 tensor on the
parameters' device, and only the *structure* is Python: which options are on
(amsgrad, decay, clip, win, maximize) and the step-dependent switches that
change which operations run (ADOPT's initialising call, AGD's first step,
AdaBelief's rectification mode). So a learning-rate schedule never recompiles;
a structural switch is one more graph, once per training run.

The formulas follow each module's ``update`` operation by operation and are
checked against it (tests/test_compiled.py). Inductor fuses each tensor's update
into one loop (C++/OpenMP on CPU, Triton on CUDA) without temporaries. Compiling
costs seconds to tens of seconds per process and bucket layout (and a very long
time for thousands of tensors); on CPU the fused C kernel is faster and the
default, so this is mainly the GPU path.
"""
from __future__ import annotations

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _max_(dst: Tensor, other: Tensor) -> Tensor:
    dst.copy_(torch.maximum(dst, other))
    return dst


def _adam(p, g, st, s, f):
    if f["decay"]:
        p.mul_(s["decay_factor"])
    if f["coupled"]:
        g = g + s["coupled_wd"] * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m.lerp_(g, 1 - s["beta1"])
    v.mul_(s["beta2"]).add_((1 - s["beta2"]) * (g * g))
    sec = _max_(st["max_exp_avg_sq"], v) if f["amsgrad"] else v
    p.sub_(s["step_size"] * (m / (sec.sqrt() / s["sqrt_bc2"] + s["eps"])))


def _eadam(p, g, st, s, f):
    if f["coupled"]:
        g = g + s["weight_decay"] * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    m.mul_(s["beta1"]).add_((1 - s["beta1"]) * g)
    v.mul_(s["beta2"]).add_((1 - s["beta2"]) * (g * g))
    if f["amsgrad"]:
        denom = _max_(st["max_exp_avg_sq"], v).sqrt() + s["eps"]
    else:
        denom = v.add_(s["eps"]).sqrt()
    p.sub_(s["step_size"] * (m / denom))


def _adabelief(p, g, st, s, f):
    if f["decay"]:
        p.mul_(s["decay_factor"])
    if f["coupled"]:
        g = g + s["coupled_wd"] * p
    m, var = st["exp_avg"], st["exp_avg_var"]
    m.mul_(s["beta1"]).add_((1 - s["beta1"]) * g)
    r = g - m
    var.mul_(s["beta2"]).add_((1 - s["beta2"]) * (r * r)).add_(s["eps"])
    sec = _max_(st["max_exp_avg_var"], var) if f["amsgrad"] else var
    if f["mode"] == "adaptive":
        p.sub_(s["step_size"] * (m / (sec.sqrt() / s["sqrt_bc2"] + s["eps"])))
    elif f["mode"] == "rectified":
        p.sub_(s["rectified_step"] * (m / ((sec if f["rectified_amsgrad"] else var).sqrt() + s["eps"])))
    elif f["mode"] == "sgd":
        p.sub_(s["sgd_step"] * m)


def _adopt(p, g, st, s, f):
    if f["coupled"]:
        g = g + s["coupled_wd"] * p
    m, v = st["exp_avg"], st["exp_avg_sq"]
    if f["initialise"]:
        v.add_(g * g)
        return
    if f["decoupled"]:
        p.sub_(s["decoupled_wd"] * p)
    n = g / torch.clamp(v.sqrt(), min=s["eps"])
    if f["clip"]:
        n = torch.clamp(n, min=-s["clip"], max=s["clip"])
    m.lerp_(n, 1 - s["beta1"])
    p.sub_(s["lr"] * m)
    v.mul_(s["beta2"]).add_((1 - s["beta2"]) * (g * g))


def _agd(p, g, st, s, f):
    if f["decay"]:
        p.mul_(s["decay_factor"])
    if f["coupled"]:
        g = g + s["coupled_wd"] * p
    m, sq = st["exp_avg"], st["exp_avg_sq"]
    prev = None if f["first"] else m.clone()
    m.mul_(s["beta1"]).add_((1 - s["beta1"]) * g)
    diff = m / s["bc1"]
    if prev is not None:
        diff = diff - prev / s["bc1_prev"]
    sq.mul_(s["beta2"]).add_((1 - s["beta2"]) * (diff * diff))
    sec = _max_(st["max_exp_avg_sq"], sq) if f["amsgrad"] else sq
    q = m / torch.clamp(sec.sqrt(), min=s["floor"])
    if f["clip"]:
        q = torch.clamp(q, min=-s["clip"], max=s["clip"])
    if not f["win"]:
        p.sub_(s["lr_adjust"] * q)
    else:
        z = st["z"]
        z.sub_(s["lr_adjust"] * q).mul_(s["z_factor"])
        p.mul_(s["tau"]).sub_((2 * s["tau"] * s["lr_adjust"]) * q).add_((2 * s["tau"]) * z)


RULES = {"adam": _adam, "adamw": _adam, "amsgrad": _adam, "eadam": _eadam, "adabelief": _adabelief,
         "adopt": _adopt, "agd": _agd}


def structure(c) -> dict:
    """The Python-level choices of one step (what the graph is specialised on); numbers are left out."""
    f = {k: v for k, v in vars(c).items() if isinstance(v, (bool, str))}
    f["decay"] = getattr(c, "decay_factor", 1.0) != 1.0
    f["coupled"] = getattr(c, "coupled_wd", getattr(c, "weight_decay", 0.0)) != 0.0
    f["decoupled"] = getattr(c, "decoupled_wd", 0.0) != 0.0
    f["clip"] = getattr(c, "clip", None) is not None
    return f


def numbers(c) -> tuple[tuple[str, ...], list[float]]:
    names = tuple(k for k, v in vars(c).items() if isinstance(v, float))
    return names, [float(getattr(c, k)) for k in names]


def _body(rule, params, grads, states, names, vec, f, maximize: bool, low: bool):
    s = {name: vec[i] for i, name in enumerate(names)}
    for i, p in enumerate(params):
        work = p.float() if low else p
        g = grads[i].float() if low else grads[i]
        if maximize:
            g = -g
        rule(work, g, {k: v[i] for k, v in states.items()}, s, f)
        if low:
            p.copy_(work)


_compiled = {}


def compiled_body(rule):
    """The compiled step of one update rule (built on first use)."""
    if rule not in _compiled:
        _compiled[rule] = torch.compile(_body, fullgraph=True, dynamic=False)
    return _compiled[rule]


def step(opt, group, params, grads, states, c) -> None:
    """Step one bucket (lists of local tensors of one device / dtype / step) with the compiled update."""
    rule = RULES.get(type(opt).name)
    if rule is None:
        raise RuntimeError(f"{type(opt).__name__} has no compiled implementation")
    real = (lambda t: torch.view_as_real(t)) if params[0].is_complex() else (lambda t: t)
    params = [real(p) for p in params]
    grads = [real(g) for g in grads]
    states = {k: [real(s) for s in v] for k, v in states.items()}
    low = params[0].dtype in _LOW_PRECISION
    names, values = numbers(c)
    math = torch.float32 if low else params[0].dtype
    vec = torch.tensor(values, dtype=torch.float64).to(device=params[0].device, dtype=math)
    compiled_body(rule)(rule, params, grads, states, names, vec, structure(c), bool(group["maximize"]), low)
