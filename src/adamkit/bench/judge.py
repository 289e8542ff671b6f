"""One generic judge for every claim of :mod:`adamkit.bench.claims`: paired differences with a 95 % interval.

For each instance a claim names, the two arms' runs on the same final seeds give paired differences
``d_s = a_s − b_s`` (``b_s − a_s`` when lower is better), so ``d > 0`` points the way the claim says.
The effect is the mean of ``d``; its 95 % interval is a **paired bootstrap** (percentile method, 10,000
resamples of the seeds with replacement, a fixed generator seed 0, so the same store gives the same
interval). A diverged run takes the worst finite value seen on that instance in either arm (for
``steps_to_target``: a run that never reaches the target counts as the full budget), a failed or missing
run drops its pair. Verdicts:

- **supported**: the interval lies above 0 (above −margin for an "as good as" claim);
- **contradicted**: it lies below 0 (below −margin);
- **inconclusive**: the interval contains 0 (−margin), or fewer than :data:`MIN_SEEDS` paired seeds;
- **outside the claim's regime**: the instance's budget is below the claim's ``regime`` (numbers shown);
- **not measured**: the suite has no such instance, or not both arms on it.

Per tier (Tier A toy problems and Tier B tasks are never pooled) the instance verdicts aggregate to
*supported* / *contradicted* only when every in-regime instance of that tier says so, *mixed* when both
occur, else *inconclusive*.

The same statistic judges a suite's **variants** (:func:`judge_variants`; e.g. int8 optimizer state against
float32): per (instance, optimizer, variant), ``d_s`` = variant − main arm on each paired seed, in the metric's
direction (> 0: the variant is better), and a non-inferiority test with the suite's stated margin ``M``
(``protocol.margins``: an absolute one, or a relative one times the main arm's mean over the paired seeds):
**no worse** when the whole interval lies above ``−M``, **worse** when it lies wholly below ``−M``, else
(and whenever n < 5) **inconclusive**.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._stats import LEVEL, RESAMPLES, paired_bootstrap  # noqa: F401 - part of this module's interface
from . import analysis
from .claims import Claim, Ref, load_claims

MIN_SEEDS = 5
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
NO_WORSE, WORSE = "no worse", "worse"  # the verdicts of a non-inferiority test (and INCONCLUSIVE)
OUTSIDE, NOT_MEASURED, MIXED = "outside the claim's regime", "not measured", "mixed"


def paired_differences(a: dict, b: dict, direction: str,
                       cap: float | None = None) -> np.ndarray:
    """``d_s`` over the seeds both arms have (nan: failed or missing, dropped); ±inf (diverged, never reached)
    becomes ``cap`` or, without one, the worst finite value of either arm; two infinities tie."""
    seeds = sorted(s for s in a if s in b and not (math.isnan(a[s]) or math.isnan(b[s])))
    finite = [v for s in seeds for v in (a[s], b[s]) if math.isfinite(v)]
    worst = cap if cap is not None else ((min(finite) if direction == "higher" else max(finite)) if finite else None)
    out = []
    for s in seeds:
        va, vb = a[s], b[s]
        if not math.isfinite(va) and not math.isfinite(vb):
            out.append(0.0)
            continue
        va = va if math.isfinite(va) else worst
        vb = vb if math.isfinite(vb) else worst
        out.append((va - vb) if direction == "higher" else (vb - va))
    return np.array(out, dtype=float)


def verdict_of(d: np.ndarray, margin: float = 0.0) -> tuple[str, float, float, float]:
    """(verdict, effect, low, high) of paired differences ``d`` (> 0: the claimed direction)."""
    effect, low, high = paired_bootstrap(d)
    if d.size < MIN_SEEDS:
        return INCONCLUSIVE, effect, low, high
    if low > -margin:
        return SUPPORTED, effect, low, high
    if high < -margin:
        return CONTRADICTED, effect, low, high
    return INCONCLUSIVE, effect, low, high


@dataclass
class Comparison:
    instance: str
    tier: str
    verdict: str
    n: int = 0
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    note: str = ""

    def text(self, claim: Claim) -> str:
        if self.verdict == NOT_MEASURED:
            return f"{self.instance}: not measured ({self.note})"
        edge = f"−{_num(claim.margin)}, the margin" if claim.margin else "0"
        why = " (n < 5)" if self.verdict == INCONCLUSIVE and self.n < MIN_SEEDS else \
            f" (interval contains {edge})" if self.verdict == INCONCLUSIVE else ""
        unit = "steps" if claim.metric == "steps_to_target" else claim.metric
        return (f"{self.instance}: {_signed(self.effect)} {unit} [{_num(self.low)}, {_num(self.high)}], "
                f"n = {self.n} → **{self.verdict}**{why}" + (f"; {self.note}" if self.note else ""))


@dataclass
class Verdict:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)  # tier -> aggregate verdict with counts

    @property
    def firm(self) -> bool:
        return any(v.startswith((SUPPORTED, CONTRADICTED)) for v in self.tiers.values())


def _num(v: float) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v:.3g}"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else (f"+{v:.3g}" if v >= 0 else f"{v:.3g}")


def arm_of(res: analysis.Results, inst, ref: Ref) -> analysis.ArmSummary | None:
    return res.arm(inst.key, ref.optimizer, f"paper:{ref.arm}" if ref.arm else res.main_arm(inst))


def values_of(res: analysis.Results, inst, arm: analysis.ArmSummary, metric: str, direction: str) -> dict:
    """seed -> the arm's value of ``metric`` (nan: failed or missing; the worst infinity: diverged). A run of
    several independent chains (a counterexample's ``chains``) whose final metrics give each chain's value
    (``<metric>_chains``) counts each chain: (seed, chain) -> value, paired with the same chain of the other
    arm (the same seed gives the same gradients)."""
    out: dict = {}
    for seed, h in zip(arm.seeds, arm.hashes):
        final = res.finals.get(h)
        per_chain = (final or {}).get(f"{metric}_chains")
        if isinstance(per_chain, list) and per_chain:
            for i, v in enumerate(per_chain):
                out[(seed, i)] = analysis._metric({**final, metric: v}, metric, maximize=direction == "higher")
            continue
        if metric == "steps_to_target":
            out[seed] = math.nan if final is None else analysis._steps_to_target(res.store, h, inst, final)
        else:
            out[seed] = analysis._metric(final, metric, maximize=direction == "higher")
    return out


def _in_regime(claim: Claim, inst, res) -> tuple[bool, str]:
    need_steps, need_epochs = claim.regime.get("min_steps"), claim.regime.get("min_epochs")
    if need_epochs is not None and (inst.epochs or 0) < need_epochs:
        have = f"{inst.epochs} epochs" if inst.epochs else f"{inst.steps} steps"
        return False, f"budget {have} < the claim's {need_epochs} epochs"
    if need_steps is not None:
        steps = inst.steps
        if steps is None:  # epochs: the steps the runs actually had
            steps = max((int((res.finals.get(h) or {}).get("budget_steps") or 0) for a in res.arms.values()
                         if a.instance == inst.key for h in a.hashes), default=0)
        if steps < need_steps:
            return False, f"budget {steps} steps < the claim's {need_steps}"
    return True, ""


def judge_claim(claim: Claim, res: analysis.Results) -> Verdict:
    out = Verdict(claim)
    for inst in res.instances:
        if not claim.matches(inst):
            continue
        tier = inst.tier
        a, b = arm_of(res, inst, claim.optimizer), arm_of(res, inst, claim.baseline)
        if a is None or b is None:
            refs = [r for r, x in ((claim.optimizer, a), (claim.baseline, b)) if x is None]
            absent = [r.label for r in refs if r.optimizer not in inst.optimizers
                      or (r.arm and not res.suite.paper_arms)]
            if absent:
                note = f"no {' and no '.join(absent)} arm in this suite"
            else:  # the suite plans them: a search still running, or an incomplete sweep
                note = f"no finished {' and no finished '.join(r.label for r in refs)} arm yet"
            out.comparisons.append(Comparison(inst.key, tier, NOT_MEASURED, note=note))
            continue
        cap = None
        if claim.metric == "steps_to_target":
            cap = float(inst.steps) if inst.steps else None
        va = values_of(res, inst, a, claim.metric, claim.direction)
        d = paired_differences(va, values_of(res, inst, b, claim.metric, claim.direction), claim.direction, cap)
        if d.size == 0:
            out.comparisons.append(Comparison(inst.key, tier, NOT_MEASURED, note="no paired finished runs"))
            continue
        verdict, effect, low, high = verdict_of(d, claim.margin)
        ok, why = _in_regime(claim, inst, res)
        chains = "n counts independent chains, paired chain by chain" if any(isinstance(k, tuple) for k in va) else ""
        note = "; ".join(x for x in ("" if ok else why, chains) if x)
        out.comparisons.append(Comparison(inst.key, tier, verdict if ok else OUTSIDE, int(d.size), effect, low,
                                          high, note))
    for tier in ("A", "B"):
        rows = [c for c in out.comparisons if c.tier == tier]
        if rows:
            out.tiers[tier] = aggregate([c.verdict for c in rows])
    return out


def aggregate(verdicts: list[str]) -> str:
    """One tier's verdict from its instances' (never pooling their runs)."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    inside = [v for v in measured if v != OUTSIDE]
    if not inside:
        return f"{OUTSIDE} ({len(measured)} instance{'s' if len(measured) != 1 else ''})"
    counts = {v: inside.count(v) for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    detail = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if counts[SUPPORTED] == len(inside):
        head = SUPPORTED
    elif counts[CONTRADICTED] == len(inside):
        head = CONTRADICTED
    elif counts[SUPPORTED] and counts[CONTRADICTED]:
        head = MIXED
    else:
        head = INCONCLUSIVE
    extra = len(measured) - len(inside)
    return f"{head} ({detail}" + (f"; {extra} outside the regime" if extra else "") + ")"


def judge_all(res: analysis.Results) -> list[Verdict]:
    return [judge_claim(c, res) for c in load_claims()]


# ------------------------------------------------------------------------------------------------- variants


def noninferiority(d: np.ndarray, margin: float) -> tuple[str, float, float, float]:
    """(verdict, effect, low, high) of paired differences ``d`` (> 0: the variant is better) against a
    non-inferiority margin ``margin`` ≥ 0: *no worse* when the interval lies above ``-margin``, *worse* when it
    lies below, else — or with fewer than :data:`MIN_SEEDS` pairs — *inconclusive*."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    verdict, effect, low, high = verdict_of(np.asarray(d, dtype=float), margin)
    return {SUPPORTED: NO_WORSE, CONTRADICTED: WORSE}.get(verdict, INCONCLUSIVE), effect, low, high


def margin_value(kind: str, value: float, reference: list[float]) -> float:
    """The margin in the metric's units: ``value`` itself (``absolute``) or ``value`` times the magnitude of
    the mean of the reference arm's finite values (``relative``; nan when it has none)."""
    if kind == "absolute":
        return float(value)
    if kind == "relative":
        finite = [v for v in reference if math.isfinite(v)]
        return float(value * abs(np.mean(finite))) if finite else math.nan
    raise ValueError(f"margin kind must be 'absolute' or 'relative', got {kind!r}")


def margin_text(kind: str, value: float, margin: float) -> str:
    """``0.01 absolute`` or ``1 % of the reference (0.034)``."""
    if kind == "absolute":
        return f"{value:g} absolute"
    return f"{value * 100:g} % of the reference ({_num(margin)})"


@dataclass
class VariantComparison:
    """One variant of one optimizer on one instance, against the optimizer's main arm on the same seeds."""

    instance: str
    tier: str
    optimizer: str
    variant: str
    metric: str
    direction: str  # "higher" / "lower" is better
    verdict: str
    reference_arm: str = ""
    n: int = 0
    effect: float = math.nan  # mean paired difference, > 0: the variant is better
    low: float = math.nan
    high: float = math.nan
    margin: float = math.nan  # in the metric's units
    margin_text: str = ""
    reference_median: float = math.nan
    variant_median: float = math.nan
    note: str = ""


def judge_variants(res: analysis.Results) -> list[VariantComparison]:
    """Every (instance, optimizer, variant) of the suite's variants, in the suite's order."""
    out = []
    for inst in res.instances:
        direction = "higher" if inst.maximize else "lower"
        kind, value = res.suite.margins.get(inst.target_metric, ("absolute", math.nan))
        main = res.main_arm(inst)
        for opt in inst.optimizers:
            ref = res.arm(inst.key, opt, main)
            for name in res.suite.variants:
                row = VariantComparison(inst.key, inst.tier, opt, name, inst.target_metric, direction, NOT_MEASURED,
                                        main)
                out.append(row)
                var = res.arm(inst.key, opt, f"variant:{name}")
                if ref is None or var is None:
                    row.note = "the main arm is not planned yet (its search is not finished)" if ref is None \
                        else "no such arm"
                    continue
                a = values_of(res, inst, var, inst.target_metric, direction)
                b = values_of(res, inst, ref, inst.target_metric, direction)
                d = paired_differences(a, b, direction)
                row.reference_median, row.variant_median = ref.median, var.median
                if d.size == 0:
                    row.note = "no paired finished runs"
                    continue
                paired = [s for s in a if s in b and not (math.isnan(a[s]) or math.isnan(b[s]))]
                row.margin = margin_value(kind, value, [b[s] for s in paired])
                row.margin_text = margin_text(kind, value, row.margin)
                if math.isnan(row.margin):
                    row.note = "no margin: the reference has no finite value"
                    row.n = int(d.size)
                    continue
                row.verdict, row.effect, row.low, row.high = noninferiority(d, row.margin)
                row.n = int(d.size)
                notes = [f"n < {MIN_SEEDS}"] if row.n < MIN_SEEDS else []
                if ref.diverged or var.diverged:
                    notes.append(f"diverged: {ref.diverged} reference, {var.diverged} variant (the worst finite value)")
                row.note = "; ".join(notes)
    return out
