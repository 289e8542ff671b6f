"""One generic judge for every claim of :mod:`adamkit.bench.claims`: paired tests within the paper's regime.

**Rows.** For each instance a claim names, the primary row (``row = "tuned"``) compares the claimed optimizer's
tuned arm with the baseline's: ``name@arm`` is the arm ``paper:<arm>``, the paper configuration tuned as an
optimizer of its own (its own learning-rate search, ``res.searches[(instance, "name@arm")]``), plain ``name`` the
main arm (``tuned``, or ``fixed`` where the suite does not tune). Where the store has ``paper-lr:<arm>`` (the
configuration at the paper's own learning rate, untuned), a second row (``row = "paper-lr"``) compares it with
the same baseline arm.

**Differences.** The two arms' runs on the same final seeds give paired differences ``d_s = a_s − b_s``
(``b_s − a_s`` when lower is better), so ``d > 0`` points the way the claim says. A diverged run takes the worst
finite value seen on that instance in either arm (``steps_to_target``: a run that never reaches the target counts
as the full budget); a failed or missing run drops its pair. A run of independent chains (the counterexamples'
``<metric>_chains``) gives one pair per chain. An instance whose problem is deterministic (``deterministic = True``
on its class), or whose arms give the same value on every seed, counts once: ``n = 1``, no interval.

**Statistics** (:mod:`adamkit._stats`), with the claim's equivalence band ``δ`` (``claims.toml``, per metric):
the mean and median of ``d``; the paired t interval (95 %); the exact two-sided Wilcoxon signed-rank p; the
p of "the mean lies beyond ``±δ``" (a t test against the band's nearer edge) and the TOST p of equivalence within
``±δ``. Both are Holm-adjusted over the comparisons of one claim, tier and row that reach a test; ``p_holm`` is the
adjusted p of the first. ``collapsed = (a, b)``: runs (chains) per arm that diverged or ended worse than their
arm's median by more than :data:`COLLAPSE_BANDS` bands.

**Verdicts**, in this order:

- **not measured**: the suite has no such instance, optimizer or arm (a suite of ``paper_arms = false`` runs no
  paper configuration), or its runs are not finished;
- **precondition not met**: the store's ``paper:<arm>`` was not tuned as an optimizer of its own (its runs use
  another configuration's learning rate), or the claim's precondition fails in the data (e.g.
  a counterexample's baseline does not fail at this budget);
- **outside the claim's regime**: a task of the papers' kind (``experiment = "paper"`` on its class) run below the
  claim's ``in_regime`` fraction of the paper's budget (or where that budget is unknown), or a stand-in below the
  claim's stand-in minimum; the numbers are kept;
- **inconclusive** with the reason: fewer than :data:`MIN_PAIRS` pairs, or neither test decides, or the t test and
  the rank test disagree;
- **better** / **worse** (by more than the band): Holm-adjusted p of the band test < :data:`ALPHA` and the Wilcoxon
  p < :data:`ALPHA`, in the direction of the mean; **equivalent**: Holm-adjusted TOST p < :data:`ALPHA` (so the
  90 % t interval lies inside the band, which the note prints: the 95 % interval may reach past it). A
  deterministic instance compares its one difference with the band directly, and so does a random one whose pairs
  all differ by the same amount (both arms at a cap on every seed, say), with its n and no interval;
- a **stand-in** experiment (``experiment = "stand-in"``, or a run on synthetic data) never gets a firm verdict:
  *consistent at stand-in scale* where the result agrees with the claim (better; for an "as good as" claim, also
  equivalent), else *inconsistent at stand-in scale*.

Budgets are compared in the paper's unit: a budget in steps meets a regime in epochs only through the runs'
``steps_per_epoch`` (read from their final metrics where recorded), never as 0 epochs; an epoch budget converts to
steps through the runs' ``budget_steps``.

Per tier (Tier A toy problems and Tier B tasks are never pooled) the primary rows aggregate: the common verdict when
all judged instances agree, *mixed* when better and worse (or consistent and inconsistent) both occur, else
*inconclusive*; with the counts and how many instances were in the paper's regime (:attr:`Verdict.in_regime`).

The practitioner's question (:func:`against_reference`, the report's first table) uses the same statistics
without a claim: on every Tier B task, each tuned alternative (every other optimizer's tuned arm, and each paper
configuration tuned as an optimizer of its own) against tuned Adam on the task's own metric and its ``[bands]``
band, Holm-adjusted over the task's alternatives; a stand-in's firm verdict reads *… at stand-in scale*.

The variants of a suite (:func:`judge_variants`; e.g. int8 optimizer state against float32) keep their own
non-inferiority test: per (instance, optimizer, variant), ``d_s`` = variant − main arm on each paired seed, in the
metric's direction (> 0: the variant is better), a 95 % paired bootstrap interval (10,000 resamples, generator seed
0) and the suite's margin ``M`` (``protocol.margins``: absolute, or relative to the main arm's mean): **no worse**
when the interval lies above ``−M``, **worse** when below, else (and whenever n < :data:`MIN_SEEDS`)
**inconclusive**.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import _stats
from .._stats import LEVEL, RESAMPLES, paired_bootstrap  # noqa: F401 - part of this module's interface
from . import analysis
from .claims import Claim, Ref, load_claims

#: paired seeds (or chains) a firm claim verdict needs
MIN_PAIRS = 10
#: paired seeds a variant's non-inferiority verdict needs
MIN_SEEDS = 5
#: the family-wise error rate of each claim's tier and row (Holm)
ALPHA = 0.05
#: a run "collapsed" when it ends worse than its arm's median by more than this many bands
COLLAPSE_BANDS = 10

BETTER, EQUIVALENT, WORSE, INCONCLUSIVE = "better", "equivalent", "worse", "inconclusive"
CONSISTENT, INCONSISTENT = "consistent at stand-in scale", "inconsistent at stand-in scale"
PRECONDITION, OUTSIDE, NOT_MEASURED = "precondition not met", "outside the claim's regime", "not measured"
MIXED = "mixed"
VERDICTS = (BETTER, EQUIVALENT, WORSE, INCONCLUSIVE, CONSISTENT, INCONSISTENT, PRECONDITION, OUTSIDE, NOT_MEASURED)
FIRM = (BETTER, EQUIVALENT, WORSE)
SUPPORTED, CONTRADICTED = "supported", "contradicted"  # the bootstrap rule's outcomes (variants' test)
NO_WORSE = "no worse"  # the verdicts of a non-inferiority test (and WORSE, INCONCLUSIVE)
ROWS = ("tuned", "paper-lr")


def paired_differences(a: dict, b: dict, direction: str,
                       cap: float | None = None) -> np.ndarray:
    """``d_s`` over the seeds both arms have (nan: failed or missing, dropped); ±inf (diverged, never reached)
    becomes ``cap`` or, without one, the worst finite value of either arm; two infinities tie."""
    seeds = _paired_keys(a, b)
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


def _paired_keys(a: dict, b: dict) -> list:
    return sorted(s for s in a if s in b and not (math.isnan(a[s]) or math.isnan(b[s])))


def verdict_of(d: np.ndarray, margin: float = 0.0) -> tuple[str, float, float, float]:
    """(verdict, effect, low, high) of paired differences ``d`` (> 0: the claimed direction) by the paired bootstrap:
    *supported* when the interval lies above ``−margin``, *contradicted* below it, else (or n < :data:`MIN_SEEDS`)
    *inconclusive*. The variants' non-inferiority test (:func:`noninferiority`) rests on it."""
    effect, low, high = paired_bootstrap(d)
    if d.size < MIN_SEEDS:
        return INCONCLUSIVE, effect, low, high
    if low > -margin:
        return SUPPORTED, effect, low, high
    if high < -margin:
        return CONTRADICTED, effect, low, high
    return INCONCLUSIVE, effect, low, high


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3g}"


def _signed(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"+{v:.3g}" if v >= 0 else f"{v:.3g}"


def _p(v: float | None) -> str:
    return "–" if v is None or math.isnan(v) else (f"{v:.2g}" if v >= 0.001 else "< 0.001")


@dataclass
class Comparison:
    """One instance of one claim, in one row ("tuned": tuned against tuned; "paper-lr": the paper configuration at
    the paper's learning rate against the baseline's tuned arm). ``mean``/``median``: of the paired differences
    (> 0: the way the claim says); ``low``/``high``: the 95 % paired t interval (None when deterministic or
    n < 2); ``collapsed``: (claimed arm, baseline arm) runs that diverged or collapsed."""

    instance: str
    tier: str
    row: str = "tuned"
    verdict: str = NOT_MEASURED
    n: int = 0
    mean: float = math.nan
    median: float = math.nan
    low: float | None = None
    high: float | None = None
    p_wilcoxon: float | None = None
    p_holm: float | None = None
    band: float = math.nan
    collapsed: tuple[int, int] = (0, 0)
    deterministic: bool = False
    note: str = ""
    # beyond the agreed interface: what the verdict rests on
    arms: tuple[str, str] = ("", "")  # the arm labels compared (claimed, baseline)
    experiment: str = ""  # "paper" | "stand-in" (the instance's problem class)
    in_regime: bool | None = None  # the budget is within the claim's regime (None: not checked)
    budget_fraction: float | None = None  # the budget as a fraction of the paper's (None: not comparable)
    p_band: float | None = None  # the band test's unadjusted p
    p_tost: float | None = None  # the TOST p of equivalence within the band, unadjusted
    p_tost_holm: float | None = None
    differences: tuple[float, ...] = ()  # the paired differences themselves (one when deterministic)
    pending: bool = False  # not measured yet: the suite plans both arms, and the store has not finished them

    @property
    def effect(self) -> float:
        """The mean paired difference (the name earlier reports used)."""
        return self.mean

    def text(self, claim: Claim | None = None) -> str:
        """One line: the numbers, the verdict in bold, the reasons."""
        head = self.instance + ("" if self.row == "tuned" else f" ({self.row})")
        if self.verdict == NOT_MEASURED or self.n == 0:
            return f"{head}: **{self.verdict}**" + (f" ({self.note})" if self.note else "")
        unit = "steps" if claim is not None and claim.metric == "steps_to_target" else \
            (claim.metric if claim is not None else "")
        if self.deterministic:
            numbers = f"{_signed(self.mean)} {unit} (deterministic: one run per arm, n = 1, no interval)"
        else:
            interval = f" [{_num(self.low)}, {_num(self.high)}]" if self.low is not None else ""
            numbers = (f"{_signed(self.mean)} {unit}{interval}, median {_signed(self.median)}, n = {self.n}"
                       + (f", Wilcoxon p {_p(self.p_wilcoxon)}" if self.p_wilcoxon is not None else "")
                       + (f", Holm p {_p(self.p_holm)}" if self.p_holm is not None else ""))
        extra = [f"band ±{_num(self.band)}"]
        if any(self.collapsed):
            extra.append(f"collapsed {self.collapsed[0]} / {self.collapsed[1]}")
        if self.note:
            extra.append(self.note)
        return f"{head}: {numbers} → **{self.verdict}** (" + "; ".join(extra) + ")"


@dataclass
class Verdict:
    claim: Claim
    comparisons: list[Comparison] = field(default_factory=list)
    tiers: dict[str, str] = field(default_factory=dict)  # tier -> aggregate verdict of the primary rows, with counts

    @property
    def firm(self) -> bool:
        return any(v.startswith(FIRM) for v in self.tiers.values())

    @property
    def in_regime(self) -> tuple[int, int]:
        """(in regime, measured): the primary rows of paper-kind experiments within the paper's regime, of all
        the primary rows that were measured."""
        rows = [c for c in self.comparisons if c.row == "tuned" and c.verdict != NOT_MEASURED]
        return sum(1 for c in rows if c.in_regime and c.experiment == "paper"), len(rows)


# ------------------------------------------------------------------------------------------------ the pieces


def arm_of(res: analysis.Results, inst, ref: Ref, row: str = "tuned") -> analysis.ArmSummary | None:
    """The arm a claim's reference names on ``inst``: ``paper:<arm>`` (row "tuned") or ``paper-lr:<arm>`` (row
    "paper-lr") for ``name@arm``, the main arm for plain ``name``."""
    if ref.arm:
        return res.arm(inst.key, ref.optimizer, f"{'paper' if row == 'tuned' else 'paper-lr'}:{ref.arm}")
    return res.arm(inst.key, ref.optimizer, res.main_arm(inst))


def arm_label(res: analysis.Results, inst, ref: Ref, row: str = "tuned") -> str:
    if ref.arm:
        return f"{ref.optimizer} {'paper' if row == 'tuned' else 'paper-lr'}:{ref.arm}"
    return f"{ref.optimizer} {res.main_arm(inst)}"


def values_of(res: analysis.Results, inst, arm: analysis.ArmSummary, metric: str, direction: str) -> dict:
    """seed -> the arm's value of ``metric`` (nan: failed or missing; the worst infinity: diverged). A run of
    several independent chains (a counterexample's ``chains``) whose final metrics give each chain's value
    (``<metric>_chains``) counts each chain: (seed, chain) -> value, paired with the same chain of the other
    arm (the same seed gives the same gradients)."""
    out: dict = {}
    for seed, h in zip(arm.seeds, arm.hashes):
        final = res.finals.get(h)
        chains = analysis.per_chain(final, metric)
        if chains:
            for i, v in enumerate(chains):
                out[(seed, i)] = analysis._metric({**final, metric: v}, metric, maximize=direction == "higher")
            continue
        if metric == "steps_to_target":
            out[seed] = math.nan if final is None else analysis._steps_to_target(res.store, h, inst, final)
        else:
            out[seed] = analysis._metric(final, metric, maximize=direction == "higher")
    return out


def experiment_of(inst) -> tuple[str, str]:
    """("paper" | "stand-in", why): the instance's kind of experiment, from its problem class's ``experiment``; a
    run on synthetic data, or a class that declares none, is a stand-in."""
    from .registry import get_problem_class

    if (inst.params or {}).get("synthetic"):
        return "stand-in", "synthetic data"
    try:
        kind = getattr(get_problem_class(inst.problem), "experiment", None)
    except (KeyError, ValueError):
        kind = None
    if kind not in ("paper", "stand-in"):
        return "stand-in", f"{inst.problem} declares no experiment kind: read as a stand-in"
    return kind, ""


def _deterministic_problem(inst) -> bool:
    from .registry import get_problem_class

    try:
        return bool(getattr(get_problem_class(inst.problem), "deterministic", False))
    except (KeyError, ValueError):
        return False


@dataclass
class Budget:
    """An instance's budget in steps and in epochs (None where not known)."""

    steps: float | None
    epochs: float | None

    def text(self, unit: str | None = None) -> str:
        if unit == "epochs" and self.epochs is not None:
            return f"{self.epochs:.3g} epochs" + (f" ({int(self.steps)} steps)" if self.steps else "")
        if self.steps is not None:
            return f"{int(self.steps)} steps" + (f" ({self.epochs:.3g} epochs)" if self.epochs is not None else "")
        return f"{self.epochs:g} epochs" if self.epochs is not None else "unknown"


def budget_of(inst, res: analysis.Results) -> Budget:
    """The final runs' budget: steps from the suite (or, for an epoch budget, the runs' ``budget_steps``), epochs from
    the suite (or steps / the runs' ``steps_per_epoch``, where their final metrics record it)."""
    finals = [res.finals.get(h) or {} for a in res.arms.values() if a.instance == inst.key for h in a.hashes]
    recorded = [int(f["budget_steps"]) for f in finals if isinstance(f.get("budget_steps"), (int, float))]
    per_epoch = [float(f["steps_per_epoch"]) for f in finals
                 if isinstance(f.get("steps_per_epoch"), (int, float)) and f["steps_per_epoch"] > 0]
    steps = float(inst.steps) if inst.steps else (float(max(recorded)) if recorded else None)
    if inst.epochs:
        epochs = float(inst.epochs)
    elif steps is not None and per_epoch:
        epochs = steps / max(per_epoch)
    else:
        epochs = None
    return Budget(steps, epochs)


def regime_of(claim: Claim, inst, res: analysis.Results, experiment: str) -> tuple[bool, float | None, str]:
    """(in regime, the budget as a fraction of the paper's, why not). A paper-kind experiment is in regime when it
    runs at least ``in_regime`` of the paper's budget (in the paper's unit); a stand-in when it runs at least the
    claim's stand-in minimum (or there is none)."""
    reg = claim.regime
    budget = budget_of(inst, res)
    unit = reg.unit
    have = None if unit is None else (budget.epochs if unit == "epochs" else budget.steps)
    fraction = None if have is None else have / reg.paper_budget
    if experiment == "stand-in":
        need_e, need_s = reg.stand_in_epochs, reg.stand_in_steps
        if need_e is not None:
            if budget.epochs is None:
                return False, fraction, (f"budget {budget.text()}: the runs record no steps per epoch, so it cannot "
                                         f"be compared with the stand-in minimum of {need_e:g} epochs")
            if budget.epochs < need_e:
                return False, fraction, (f"budget {budget.text('epochs')} < the claim's stand-in minimum of "
                                         f"{need_e:g} epochs")
        if need_s is not None and (budget.steps is None or budget.steps < need_s):
            return False, fraction, f"budget {budget.text()} < the claim's stand-in minimum of {need_s} steps"
        return True, fraction, ""
    if unit is None:
        return False, None, "the paper's budget is not known (PAPERS.md), so no budget is in its regime"
    paper = f"{reg.paper_budget:g} {unit}"
    if have is None:
        return False, None, (f"budget {budget.text()}: the runs record no steps per epoch, so it cannot be compared "
                             f"with the paper's {paper}")
    if fraction < reg.in_regime:
        return False, fraction, (f"budget {budget.text(unit)} = {fraction:.2%} of the paper's {paper}, below the "
                                 f"{reg.in_regime:.0%} the claim counts as in regime")
    return True, fraction, ""


def precondition_of(claim: Claim, res: analysis.Results, inst, a, b) -> tuple[bool, str]:
    """(met, what was found) of the claim's precondition on the arm it names (met when the claim has none)."""
    pre = claim.precondition
    if pre is None:
        return True, ""
    arm = b if pre.arm == "baseline" else a
    vals = [v for v in values_of(res, inst, arm, pre.metric, "lower").values() if not math.isnan(v)]
    if not vals:
        return False, f"the claim presumes that {pre.text}; no finished run of the {pre.arm} to check it on"
    hits = sum(pre.holds(v) for v in vals)
    found = (f"the claim presumes that {pre.text}; {hits} of {len(vals)} runs of the {pre.arm} ({arm.optimizer} "
             f"{arm.arm}) show it")
    return hits >= pre.share * len(vals), found


def _collapsed(values: dict, keys: list, direction: str, band: float) -> int:
    vals = [values[k] for k in keys]
    finite = [v for v in vals if math.isfinite(v)]
    if not finite:
        return len(vals)
    med = float(np.median(finite))
    worse = (lambda v: med - v) if direction == "higher" else (lambda v: v - med)
    return sum(1 for v in vals if not math.isfinite(v) or (band > 0 and worse(v) > COLLAPSE_BANDS * band))


# ------------------------------------------------------------------------------------------------ the judge


def _compare(claim: Claim, res: analysis.Results, inst, row: str) -> Comparison:
    c = Comparison(inst.key, inst.tier, row, band=claim.band,
                   arms=(arm_label(res, inst, claim.optimizer, row), arm_label(res, inst, claim.baseline)))
    a, b = arm_of(res, inst, claim.optimizer, row), arm_of(res, inst, claim.baseline)
    c.experiment, why_kind = experiment_of(inst)
    if a is None or b is None:
        refs = [r for r, x in ((claim.optimizer, a), (claim.baseline, b)) if x is None]
        absent = [r.label for r in refs if r.optimizer not in inst.optimizers]
        unplanned = [r.label for r in refs if r.optimizer in inst.optimizers and r.arm and not res.suite.paper_arms]
        if absent:
            c.note = f"the suite runs no {' and no '.join(absent)} on this instance"
        elif unplanned:  # not measured: the report names the claim once, under its table, never as a row
            c.note = "the arm the claim needs was not run: the suite runs no paper arms (protocol.paper_arms = false)"
        else:  # the suite plans them: a search still running, or an incomplete sweep
            c.pending = True
            c.note = f"no finished {' and no finished '.join(r.label for r in refs)} arm yet"
        return c
    if row == "tuned" and claim.optimizer.arm and inst.tune and \
            (inst.key, claim.optimizer.label) not in res.searches:
        c.verdict = PRECONDITION
        c.note = (f"the arm the claim needs was not run: paper:{claim.optimizer.arm} was not tuned as an optimizer of "
                  f"its own in this store (its runs use another configuration's learning rate)")
        return c
    cap = float(inst.steps) if claim.metric == "steps_to_target" and inst.steps else None
    measured = _measure(c, res, inst, a, b, claim.metric, claim.direction, cap)
    if measured is None:
        return c
    constant, notes = measured
    if why_kind:
        notes.insert(0, why_kind)
    met, found = precondition_of(claim, res, inst, a, b)
    ok, c.budget_fraction, why = regime_of(claim, inst, res, c.experiment)
    c.in_regime = ok
    if not met:
        c.verdict = PRECONDITION
        c.note = "; ".join([found] + notes)
        return c
    if not ok:
        c.verdict = OUTSIDE
        c.note = "; ".join([why] + notes)
        return c
    _settle(c, constant, notes, lambda verdict, experiment: _standin(claim, verdict, experiment))
    return c


def _settle(c: Comparison, constant: bool, notes: list[str], standin) -> None:
    """The verdict a measured comparison gets before Holm's adjustment: a deterministic or constant difference
    against the band directly (``standin(verdict, experiment)`` words it on a stand-in), *inconclusive* below
    :data:`MIN_PAIRS` pairs, else ``""``: decided by :func:`_decide` over its family."""
    if c.deterministic or constant:  # no sampling error: the exact difference against the band
        c.verdict = standin(BETTER if c.mean > c.band else WORSE if c.mean < -c.band else EQUIVALENT, c.experiment)
    elif c.n < MIN_PAIRS:
        c.verdict = INCONCLUSIVE
        notes = [f"n = {c.n} < {MIN_PAIRS} pairs, too few for a verdict"] + notes
    else:
        c.verdict = ""
    c.note = "; ".join(notes)


def _measure(c: Comparison, res: analysis.Results, inst, a, b, metric: str, direction: str,
             cap: float | None = None) -> tuple[bool, list[str]] | None:
    """Fill ``c``'s numbers from arms ``a`` and ``b`` (the paired differences, > 0: ``a`` is better in
    ``direction``; their mean, median, collapsed runs, t interval, Wilcoxon p and the band tests' unadjusted p
    against ``c.band``): (whether every pair differs by the same amount, notes), or None when no pair finished."""
    va = values_of(res, inst, a, metric, direction)
    vb = values_of(res, inst, b, metric, direction)
    keys = _paired_keys(va, vb)
    d = paired_differences(va, vb, direction, cap)
    if d.size == 0:
        c.note = "no paired finished runs"
        c.pending = bool(a.missing or b.missing)  # runs planned and not stored yet (not: every run failed)
        return None
    chains = any(isinstance(k, tuple) for k in keys)
    same = len({va[k] for k in keys}) == 1 and len({vb[k] for k in keys}) == 1
    c.deterministic = _deterministic_problem(inst) and same
    if c.deterministic:
        d, keys = d[:1], keys[:1]
    c.n = int(d.size)
    c.differences = tuple(float(x) for x in d)
    c.mean, c.median = float(d.mean()), float(np.median(d))
    c.collapsed = (_collapsed(va, keys, direction, c.band), _collapsed(vb, keys, direction, c.band))
    notes = ["n counts independent chains, paired chain by chain"] if chains else []
    constant = c.n >= 2 and bool(np.all(d == d[0]))  # the same difference on every pair: no sampling variation
    if constant and same:  # a random problem whose every run of each arm ends alike (both at a cap, say)
        said = lambda v: "never reached" if math.isinf(v) else _num(v)  # noqa: E731 (steps to target: ∞)
        notes.append(f"every run of each arm gives the same value ({said(va[keys[0]])} against "
                     f"{said(vb[keys[0]])}) on all {c.n} pairs: no sampling variation, no interval")
    elif constant:
        notes.append("the same difference on every pair: no interval")
    elif c.n >= 2:
        _, low, high = _stats.t_interval(d)
        c.low, c.high = low, high
        c.p_wilcoxon = _stats.wilcoxon(d)
        c.p_band, c.p_tost = _stats.beyond_band(d, c.band), _stats.tost(d, c.band)
    return constant, notes


def _standin(claim: Claim, verdict: str, experiment: str) -> str:
    if experiment != "stand-in" or verdict not in FIRM:
        return verdict
    agrees = verdict == BETTER or (verdict == EQUIVALENT and claim.kind == "as good as")
    return CONSISTENT if agrees else INCONSISTENT


def _decide(family: list[Comparison], standin) -> None:
    """Holm over the family's band tests (and, separately, its TOST tests), then each verdict; ``standin(verdict,
    experiment)`` gives the word a firm verdict takes on a stand-in experiment."""
    for c, p in zip(family, _stats.holm([c.p_band for c in family])):
        c.p_holm = p
    for c, p in zip(family, _stats.holm([c.p_tost for c in family])):
        c.p_tost_holm = p
    for c in family:
        notes = [c.note] if c.note else []
        if c.p_holm < ALPHA and c.p_wilcoxon < ALPHA:
            verdict = BETTER if c.mean > 0 else WORSE
        elif c.p_holm < ALPHA:
            verdict = INCONCLUSIVE
            notes.insert(0, f"the t test puts the mean beyond the band (Holm p {_p(c.p_holm)}) but the rank test "
                            f"does not (Wilcoxon p {_p(c.p_wilcoxon)})")
        elif c.p_tost_holm < ALPHA:
            verdict = EQUIVALENT
            # TOST at level α is the 1 − 2α interval inside the band: the printed 95 % one may reach past it
            _, low, high = _stats.t_interval(np.asarray(c.differences), 1.0 - 2.0 * ALPHA)
            notes.insert(0, f"its {100 * (1 - 2 * ALPHA):g} % interval [{_num(low)}, {_num(high)}] lies inside "
                            f"the band ±{_num(c.band)} (TOST, Holm p {_p(c.p_tost_holm)})")
        else:
            verdict = INCONCLUSIVE
            notes.insert(0, f"the interval [{_num(c.low)}, {_num(c.high)}] is neither beyond nor inside the band "
                            f"±{_num(c.band)}")
        c.verdict = standin(verdict, c.experiment)
        if c.verdict != verdict:
            notes.insert(0, f"{verdict} on a stand-in experiment")
        c.note = "; ".join(notes)


def judge_claim(claim: Claim, res: analysis.Results) -> Verdict:
    out = Verdict(claim)
    for inst in res.instances:
        if not claim.matches(inst):
            continue
        out.comparisons.append(_compare(claim, res, inst, "tuned"))
        if claim.optimizer.arm and arm_of(res, inst, claim.optimizer, "paper-lr") is not None:
            out.comparisons.append(_compare(claim, res, inst, "paper-lr"))
    for tier in ("A", "B"):
        for row in ROWS:
            family = [c for c in out.comparisons if c.tier == tier and c.row == row and c.verdict == ""]
            if family:
                _decide(family, lambda verdict, experiment: _standin(claim, verdict, experiment))
        rows = [c for c in out.comparisons if c.tier == tier and c.row == "tuned"]
        if rows:
            out.tiers[tier] = aggregate([c.verdict for c in rows],
                                        sum(1 for c in rows if c.in_regime and c.experiment == "paper"))
    return out


def aggregate(verdicts: list[str], in_regime: int | None = None) -> str:
    """One tier's verdict from its instances' primary rows (never pooling their runs), with the counts and, when
    given, how many of the measured instances are paper-kind experiments inside the paper's regime."""
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if not measured:
        return NOT_MEASURED
    counts = {v: measured.count(v) for v in VERDICTS if measured.count(v)}
    judged = [v for v in measured if v not in (OUTSIDE, PRECONDITION)]
    if not judged:
        head = OUTSIDE if OUTSIDE in counts else PRECONDITION
    elif len(set(judged)) == 1:
        head = judged[0]
    elif ({BETTER, WORSE} <= set(judged)) or ({CONSISTENT, INCONSISTENT} <= set(judged)):
        head = MIXED
    else:
        head = INCONCLUSIVE
    detail = ", ".join(f"{n} {v}" for v, n in counts.items())
    if in_regime is not None:
        detail += f"; {in_regime} of {len(measured)} in the paper's regime"
    return f"{head} ({detail})"


def judge_all(res: analysis.Results) -> list[Verdict]:
    return [judge_claim(c, res) for c in load_claims()]


# ------------------------------------------------------------------------------- the practitioner's question


def at_stand_in_scale(verdict: str, experiment: str) -> str:
    """A firm verdict of :func:`against_reference` on a stand-in experiment: ``better at stand-in scale`` (the
    task's own result, not a verdict on the papers' experiment)."""
    return f"{verdict} at stand-in scale" if experiment == "stand-in" and verdict in FIRM else verdict


def alternatives(res: analysis.Results, inst, reference: str) -> list[tuple[str, analysis.ArmSummary]]:
    """(label, arm) of every tuned configuration on ``inst`` other than ``reference``'s main arm, in the suite's
    optimizer order: each optimizer's main arm (``name``), then each paper configuration tuned as an optimizer of
    its own (``name@arm``; on an untuned instance, run at its fixed hyperparameters). A paper arm run at another
    configuration's learning rate (an older store) is left out: it was not tuned."""
    main = res.main_arm(inst)
    out = []
    for opt in inst.optimizers:
        arm = res.arm(inst.key, opt, main)
        if opt != reference and arm is not None:
            out.append((opt, arm))
        for name in sorted({a[len("paper:"):] for (i, o, a) in res.arms if i == inst.key and o == opt
                            and a.startswith("paper:")}):
            if not inst.tune or (inst.key, f"{opt}@{name}") in res.searches:
                out.append((f"{opt}@{name}", res.arm(inst.key, opt, f"paper:{name}")))
    return out


def against_reference(res: analysis.Results) -> dict[str, list[tuple[str, Comparison]]]:
    """The practitioner's question, asked with or without a claim: on every Tier B task (counterexamples apart),
    each tuned alternative (:func:`alternatives`) against the reference optimizer's tuned arm
    (:func:`analysis.reference_optimizer`, Adam) on the same final seeds, on the task's own target metric, with
    the band ``[bands]`` of ``claims.toml`` declares for it (0 where none: no *equivalent* then). The statistics
    and verdict rules are the claims' (``> 0``: the alternative is better), Holm-adjusted over the task's
    alternatives; on a stand-in experiment a firm verdict reads :func:`at_stand_in_scale`. No paper regime is
    tested: the task's budget is the regime. instance key -> [(alternative's label, comparison)]."""
    from .claims import load_bands

    reference, bands = analysis.reference_optimizer(res), load_bands()
    out: dict[str, list[tuple[str, Comparison]]] = {}
    for inst in res.instances:
        base = res.arm(inst.key, reference, res.main_arm(inst))
        if inst.tier != "B" or analysis.is_counterexample(inst) or base is None:
            continue
        metric, direction = inst.target_metric, "higher" if inst.maximize else "lower"
        experiment, why_kind = experiment_of(inst)
        rows, family = [], []
        for label, arm in alternatives(res, inst, reference):
            c = Comparison(inst.key, inst.tier, "tuned", band=bands.get(metric, 0.0),
                           arms=(label, f"{reference} {res.main_arm(inst)}"), experiment=experiment)
            rows.append((label, c))
            measured = _measure(c, res, inst, arm, base, metric, direction)
            if measured is None:
                continue
            constant, notes = measured
            _settle(c, constant, [why_kind] + notes if why_kind else notes, at_stand_in_scale)
            if c.verdict == "":
                family.append(c)
        if family:
            _decide(family, at_stand_in_scale)
        if rows:
            out[inst.key] = rows
    return out


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
