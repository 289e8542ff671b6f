"""From a results store to numbers: per-arm summaries, paired win rates, steps-to-target, performance profiles.

Everything is recomputed from the stored runs and the suite stored with them: the tuning selection is
deterministic, so the report finds each arm's runs by their hashes.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import protocol
from .store import ResultStore, first_step_reaching, target_key
from .suite import ProblemInstanceSpec, Suite

FINAL_ARMS = ("tuned", "fixed", "defaults")


@dataclass
class ArmSummary:
    instance: str
    optimizer: str
    arm: str
    hparams: dict[str, Any]
    seeds: list[int]
    hashes: list[str]
    values: list[float]  # final target metric per seed (nan: missing or failed)
    dists: list[float]
    steps_to_target: list[float]  # inf: never reached
    failed: int
    missing: int
    diverged: int
    target: float | None = None
    maximize: bool = False

    @property
    def n(self) -> int:
        return sum(1 for v in self.values if not math.isnan(v))

    def quantiles(self) -> tuple[float, float, float]:
        vals = [v for v in self.values if not math.isnan(v)]
        return quantile(vals, 0.25), quantile(vals, 0.5), quantile(vals, 0.75)

    @property
    def median(self) -> float:
        return self.quantiles()[1]

    @property
    def converged(self) -> float:
        """The share of seeds (start points) whose final value meets the target."""
        if not self.values or self.target is None:
            return math.nan
        ok = [(v >= self.target) if self.maximize else (v <= self.target) for v in self.values if not math.isnan(v)]
        return sum(ok) / len(self.values)

    @property
    def median_steps(self) -> float:
        """Median steps to the target over the seeds (inf when fewer than half reach it)."""
        if not self.steps_to_target:
            return math.inf
        return float(np.median(np.array(self.steps_to_target, dtype=float)))


@dataclass
class Results:
    suite: Suite
    store: ResultStore
    finals: dict[str, dict[str, Any] | None]
    phase1: list[protocol.PlannedRun]
    phase2: list[protocol.PlannedRun]
    winners: dict[tuple[str, str], dict[str, Any]]
    arms: dict[tuple[str, str, str], ArmSummary] = field(default_factory=dict)
    searches: dict[tuple[str, str], protocol.Search] = field(default_factory=dict)
    version: int = protocol.BENCH_VERSION  # the benchmark version the runs were made with
    bench: dict[str, Any] = field(default_factory=dict)  # the store's record of the sweep (suite name, hash)
    lookup: protocol.Lookup | None = None  # the protocol's reading of the runs (selection scores), as planned

    @property
    def instances(self) -> list[ProblemInstanceSpec]:
        return self.suite.problems

    def instance(self, key: str) -> ProblemInstanceSpec:
        return next(i for i in self.suite.problems if i.key == key)

    def main_arm(self, inst: ProblemInstanceSpec) -> str:
        return "tuned" if inst.tune else "fixed"

    def arm(self, instance: str, optimizer: str, arm: str) -> ArmSummary | None:
        return self.arms.get((instance, optimizer, arm))

    def missing_final_runs(self, tier: str | None = None) -> int:
        """The final runs planned and not stored yet (of the instances of ``tier``, or all), each run once however
        many arms share it (a winner that is also the defaults, say)."""
        statuses = self.store.statuses()
        tiers = {i.key: i.tier for i in self.suite.problems}
        return len({h for (key, _, _), a in self.arms.items() if tier in (None, tiers[key])
                    for h in a.hashes if h not in statuses})

    def tuning_runs(self, instance: str, optimizer: str, paper: str | None = None) -> list[protocol.PlannedRun]:
        """The trials of the search of (``instance``, ``optimizer``), or of its paper configuration ``paper``
        (search key ``(instance, "optimizer@paper")``)."""
        arm = "tune" if paper is None else f"tune:{paper}"
        return [r for r in self.phase1 if r.arm == arm and r.instance == instance and r.optimizer == optimizer]


def load(where: str | Path) -> Results:
    """The results of a sweep directory (or store file)."""
    # reading: a missing folder is not created, and the store is not written (a committed one stays as it is)
    store = ResultStore.open_results(where, create=False, read_only=True)
    text = store.get_meta("suite")
    if text is None:
        raise ValueError(f"{where}: no sweep stored here (run `adamkit bench run SUITE --out DIR` first)")
    bench = store.bench_record()
    version = int(bench.get("version", 1))
    if version > protocol.BENCH_VERSION:
        raise ValueError(f"{where}: made by benchmark version {version}, newer than this adamkit's "
                         f"({protocol.BENCH_VERSION}); read it with the adamkit that wrote it")
    suite = Suite.from_json(text, version)
    finals = store.finals()
    specs = store.specs() if version < 2 else None
    if specs is not None:  # a version-1 suite's default optimizers were adamkit's only (no baseline yet)
        ran = {s["optimizer"] for s in specs.values()}
        suite.optimizers = tuple(o for o in suite.optimizers if o in ran)
        for i, inst in enumerate(suite.problems):
            suite.problems[i] = dataclasses.replace(inst, optimizers=tuple(o for o in inst.optimizers if o in ran))
    lookup = protocol.Lookup(finals, store.curve if version >= 2 else None, suite.smooth, specs,
                             exclude_start=version >= 3)  # (older stores: smoothed as they were selected)
    plan = protocol.plan(suite, lookup, version)
    phase1, phase2 = plan.tuning, plan.final
    res = Results(suite, store, finals, phase1, phase2, plan.winners(), searches=plan.searches, version=version,
                  bench=bench, lookup=lookup)
    statuses = store.statuses()
    insts = {i.key: i for i in suite.problems}
    groups: dict[tuple[str, str, str], list[protocol.PlannedRun]] = {}
    for r in phase1 + phase2:
        if r.arm in FINAL_ARMS or r.arm.startswith(("paper:", "paper-lr:", "variant:")):
            groups.setdefault((r.instance, r.optimizer, r.arm), []).append(r)
    for key, runs in groups.items():
        inst = insts[key[0]]
        values, dists, steps = [], [], []
        failed = missing = diverged = 0
        for r in runs:
            final = finals.get(r.hash)
            if r.hash not in statuses:
                missing += 1
            elif final is None:
                failed += 1
            elif final.get("diverged"):
                diverged += 1
            v = _metric(final, inst.target_metric, inst.maximize)
            values.append(v)
            dists.append(_metric(final, "dist"))
            steps.append(_steps_to_target(store, r.hash, inst, final) if final is not None else math.inf)
        res.arms[key] = ArmSummary(key[0], key[1], key[2], runs[0].spec["hparams"], [r.seed for r in runs],
                                   [r.hash for r in runs], values, dists, steps, failed, missing, diverged,
                                   inst.target, inst.maximize)
    return res


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile with linear interpolation (the median of two values is their mean), where
    infinite values (diverged runs) stay infinite instead of turning into nan; nan for no values."""
    vals = sorted(values)
    if not vals:
        return math.nan
    pos = q * (len(vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if vals[lo] == vals[hi]:
        return float(vals[lo])
    if math.isinf(vals[lo]) or math.isinf(vals[hi]):  # between -inf (or +inf) and a number: that infinity
        return float(vals[lo] if math.isinf(vals[lo]) else vals[hi])
    return float(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo))


def _metric(final: dict[str, Any] | None, name: str, maximize: bool = False) -> float:
    """A run's final ``name``; nan for a failed run, the worst value (±inf) for a diverged one."""
    if final is None:
        return math.nan
    if final.get("diverged"):
        return -math.inf if maximize else math.inf
    v = final.get(name)
    return float(v) if isinstance(v, (int, float)) else math.nan


def per_chain(final: dict[str, Any] | None, name: str) -> list[float] | None:
    """A run's final ``name`` per independent chain (a counterexample run with ``chains`` stores
    ``<name>_chains``); None when the run has no chains (or did not finish)."""
    values = (final or {}).get(f"{name}_chains")
    return [float(v) for v in values] if isinstance(values, list) and values else None


def chain_values(res: "Results", arm: ArmSummary, name: str) -> list[float]:
    """Each independent chain's final ``name`` over the arm's runs, seed after seed; [] when they have no chains."""
    return [v for h in arm.hashes for v in (per_chain(res.finals.get(h), name) or [])]


def chain_or_run_values(res: "Results", arm: ArmSummary, name: str) -> list[float]:
    """Each chain's final ``name`` (:func:`chain_values`), or, where the arm's runs have no chains, each finished,
    undiverged run's that records it; [] when none does."""
    return chain_values(res, arm, name) or [
        v for h in arm.hashes if math.isfinite(v := _metric(res.finals.get(h), name))]


def _steps_to_target(store: ResultStore, run_hash: str, inst: ProblemInstanceSpec,
                     final: dict[str, Any] | None = None) -> float:
    """The first evaluation step at which the run reaches the instance's target (inf: never): as kept in its
    final metrics by a compacted store (:meth:`ResultStore.compact`, computed from the whole curve), else
    from its evaluation curve. (The protocol's selection on steps to target, ``Lookup.steps_score``, reads
    the same step; a run that never reaches the target is ranked there by its final distance.)"""
    if inst.target is None:
        return math.inf
    kept = (final or {}).get("steps_to_target") or {}
    key = target_key(inst.target_metric, inst.target, inst.maximize)
    if key in kept:
        return math.inf if kept[key] is None else float(kept[key])
    curve = store.curve(run_hash)
    step = first_step_reaching(curve.get("step", []), curve.get(inst.target_metric, []), inst.target,
                               inst.maximize)
    return math.inf if step is None else step


def paired_win_rates(res: Results, instances: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Win rate of row optimizer over column optimizer on the same (instance, seed) pairs of the main arm.

    A win is a smaller final target metric (larger when the problem maximises); ties (equal within 1e-12
    relative) count one half; a failed or diverged run loses to a finished one. Returns (names, rate, count).
    """
    names = list(res.suite.optimizers)
    wins = np.zeros((len(names), len(names)))
    count = np.zeros((len(names), len(names)))
    for inst in res.instances:
        if instances is not None and inst.key not in instances:
            continue
        arm = res.main_arm(inst)
        per_opt = {}
        for o in inst.optimizers:
            a = res.arm(inst.key, o, arm)
            if a:
                per_opt[o] = dict(zip(a.seeds, a.values))
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i == j or a not in per_opt or b not in per_opt:
                    continue
                for seed, va in per_opt[a].items():
                    vb = per_opt[b].get(seed)
                    if vb is None or (math.isnan(va) and math.isnan(vb)):
                        continue
                    sa = _sortable(va, inst.maximize)
                    sb = _sortable(vb, inst.maximize)
                    count[i, j] += 1
                    if sa == sb or (math.isfinite(sa) and math.isfinite(sb)
                                    and abs(sa - sb) <= 1e-12 * max(abs(sa), abs(sb), 1e-300)):
                        wins[i, j] += 0.5
                    elif sa < sb:
                        wins[i, j] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(count > 0, wins / np.maximum(count, 1), np.nan)
    return names, rate, count


def _sortable(v: float, maximize: bool) -> float:
    if math.isnan(v):
        return math.inf
    return -v if maximize else v


def _ratio(value: float, best: float, maximize: bool) -> float:
    """An instance's performance ratio (1 = the best; larger is worse). Minimised costs: value / best (floored at
    1e-12 so exact zeros compare). Maximised metrics: 1 + the shortfall relative to the best, (best − value) /
    |best| — a CartPole return of 498 against 500 is 1.004, not infinitely worse."""
    if not math.isfinite(value):
        return math.inf
    if maximize:
        return 1.0 + (best - value) / max(abs(best), 1e-12)
    return max(value, 1e-12) / max(best, 1e-12)


def profile_ratios(res: Results, measure: str, tier: str, optimizers: list[str] | None = None,
                   keep=None) -> tuple[list[str], dict[str, np.ndarray]]:
    """Performance ratios of each optimizer on the instances of ``tier`` that *every* profiled optimizer ran
    (an instance one optimizer did not run is left out, not counted as its failure); ``keep(inst)``, when
    given, selects the instances further (e.g. no counterexamples: :func:`is_counterexample`).

    ``measure``: ``"steps"`` (median steps to the target over the final seeds; fewer than half reaching it = ∞;
    only instances with a target) or ``"final"`` (median final target metric). Instances where no optimizer has
    a finite cost are left out. Returns (instance keys, {optimizer: ratios})."""
    opts = list(optimizers or res.suite.optimizers)
    keys, rows = [], []
    for inst in res.instances:
        if inst.tier != tier or (measure == "steps" and inst.target is None) or (keep is not None and not keep(inst)):
            continue
        arms = {o: res.arm(inst.key, o, res.main_arm(inst)) for o in opts}
        if any(a is None or a.n == 0 for a in arms.values()):
            continue
        if measure == "steps":
            cost = {o: a.median_steps for o, a in arms.items()}
            maximize = False
        else:
            cost = {o: a.median for o, a in arms.items()}
            cost = {o: (v if not math.isnan(v) else math.inf) for o, v in cost.items()}
            maximize = inst.maximize
            if maximize:
                cost = {o: (v if v != -math.inf else math.inf) for o, v in cost.items()}
        finite = [v for v in cost.values() if math.isfinite(v)]
        if not finite:
            continue
        best = max(finite) if maximize else min(finite)
        keys.append(inst.key)
        rows.append({o: _ratio(v, best, maximize) for o, v in cost.items()})
    return keys, {o: np.array([r[o] for r in rows], dtype=float) for o in opts}


def profile(ratios: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """ρ(τ): the share of instances with ratio ≤ τ (Dolan & Moré)."""
    if ratios.size == 0:
        return np.full(len(taus), np.nan)
    return np.array([(ratios <= t).mean() for t in taus])


def algoperf_score(ratios: np.ndarray, tau_max: float = 4.0) -> float:
    """AlgoPerf's benchmark score: ∫₁^τmax ρ(τ) dτ / (τmax − 1), in [0, 1] (1: the best on every instance)."""
    if ratios.size == 0:
        return math.nan
    taus = np.linspace(1.0, tau_max, 3001)
    return float(np.trapezoid(profile(ratios, taus), taus) / (tau_max - 1.0)) if hasattr(np, "trapezoid") else \
        float(np.trapz(profile(ratios, taus), taus) / (tau_max - 1.0))


def performance_profile(res: Results, measure: str, taus: np.ndarray, tier: str = "A") -> dict[str, np.ndarray]:
    """{optimizer: ρ(τ) at ``taus``} over the common instances of ``tier`` (``"_n"``: their number)."""
    keys, ratios = profile_ratios(res, measure, tier)
    out = {o: profile(r, taus) for o, r in ratios.items()}
    out["_n"] = np.array([len(keys)])
    return out


# ------------------------------------------------------------------------------ the report's measures (issue 22)


def problem_class(inst: ProblemInstanceSpec):
    """The registered class of an instance's problem, or None when it is not registered here."""
    from . import registry

    try:
        return registry.get_problem_class(inst.problem)
    except ValueError:
        return None


def is_counterexample(inst: ProblemInstanceSpec) -> bool:
    """Whether the instance is a fixed-rate counterexample (ADOPT's, Reddi's): a problem built to break adaptive
    methods, scored apart from the Tier A profile."""
    from .problems.counterexamples import _Counterexample

    cls = problem_class(inst)
    return cls is not None and issubclass(cls, _Counterexample)


def is_stand_in(inst: ProblemInstanceSpec) -> bool:
    """Whether the task declares itself a stand-in for the papers' kind of experiment (its class attribute
    ``experiment = "stand-in"``); False where the task declares nothing."""
    return getattr(problem_class(inst), "experiment", None) == "stand-in"


#: the task family of a task module (``adamkit.bench.tasks.<module>``): the practitioner table's groups
FAMILIES = {"vision": "image classification", "language": "language modelling", "wordlm": "language modelling",
            "gan": "GANs", "vae": "generative models (VAE)", "rl": "reinforcement learning",
            "ctr": "click-through rate", "criteo": "click-through rate"}


def family(inst: ProblemInstanceSpec) -> str:
    """The task family of an instance (``image classification``, …; a Tier A problem: ``toy problems``)."""
    cls = problem_class(inst)
    if inst.tier == "A" or cls is None:
        return "counterexamples" if is_counterexample(inst) else "toy problems"
    return FAMILIES.get(cls.__module__.rsplit(".", 1)[-1], (cls.stands_for or cls.name).split(" (")[0])


def reference_optimizer(res: Results) -> str:
    """The optimizer the practitioner table and the reference targets measure against: Adam where the suite
    runs it, else the suite's first optimizer."""
    return "adam" if "adam" in res.suite.optimizers else res.suite.optimizers[0]


@dataclass
class TimeToTarget:
    """Per optimizer, the share of instances whose runs reach the reference target by each fraction of the
    budget (``curves[o][j]`` at ``fractions[j]``; each instance weighs 1, its seeds share it)."""

    instances: list[str]
    targets: dict[str, float]
    reference: str
    fractions: np.ndarray
    curves: dict[str, np.ndarray]

    def score(self, optimizer: str) -> float:
        """The area under the optimizer's curve over the budget, in [0, 1] (1: every run at the target from
        the first evaluation; 0: none ever)."""
        y = self.curves[optimizer]
        x = self.fractions
        return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0 / (x[-1] - x[0])) if len(x) > 1 else math.nan


def reference_target(res: Results, inst: ProblemInstanceSpec, reference: str) -> float:
    """An instance's target set from the reference runs: the median final target metric of the reference
    optimizer's main arm over its final seeds (nan when it has no finite value)."""
    arm = res.arm(inst.key, reference, res.main_arm(inst))
    vals = [v for v in (arm.values if arm else []) if math.isfinite(v)]
    return quantile(vals, 0.5) if vals else math.nan


def time_to_target(res: Results, tier: str = "B", reference: str | None = None, points: int = 101,
                   keep=None) -> TimeToTarget:
    """The time-to-target profile of ``tier`` on targets set from reference runs (:func:`reference_target`).

    Per instance that every optimizer ran (main arms, evaluation curves of the target metric stored;
    ``keep(inst)`` selects further; counterexamples never count), each run's time to target is the first
    evaluation step at which it reaches the reference target, as a fraction of the instance's budget (its
    last evaluation step); a run that never reaches it (or diverged) never counts. The share at fraction ``f``
    averages, over the instances, the share of each optimizer's seeds there at or before ``f``."""
    from .store import first_step_reaching

    reference = reference or reference_optimizer(res)
    opts = list(res.suite.optimizers)
    fractions = np.linspace(0.0, 1.0, points)
    keys, targets, rows = [], {}, []
    for inst in res.instances:
        if inst.tier != tier or is_counterexample(inst) or (keep is not None and not keep(inst)):
            continue
        arms = {o: res.arm(inst.key, o, res.main_arm(inst)) for o in opts}
        if any(a is None or a.n == 0 for a in arms.values()):
            continue
        target = reference_target(res, inst, reference)
        if math.isnan(target):
            continue
        curves = {o: [res.store.curve(h) for h in a.hashes] for o, a in arms.items()}
        budget = max((c["step"][-1] for cs in curves.values() for c in cs if c.get("step")), default=0)
        if budget <= 0 or not any(c.get(inst.target_metric) for cs in curves.values() for c in cs):
            continue
        # curves are stored to 7 significant digits; the target eases by as much, so a run ending on it counts
        reach = target + (-1e-6 if inst.maximize else 1e-6) * abs(target)
        row = {}
        for o, cs in curves.items():
            times = []
            for c in cs:
                step = first_step_reaching(c.get("step", []), c.get(inst.target_metric, []), reach, inst.maximize)
                times.append(math.inf if step is None else step / budget)
            t = np.array(times, dtype=float)
            row[o] = np.array([(t <= f).mean() for f in fractions]) if t.size else np.zeros(points)
        keys.append(inst.key)
        targets[inst.key] = target
        rows.append(row)
    curves_out = {o: (np.mean([r[o] for r in rows], axis=0) if rows else np.full(points, np.nan)) for o in opts}
    return TimeToTarget(keys, targets, reference, fractions, curves_out)
