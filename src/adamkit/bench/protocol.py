"""The tuning protocol: every optimizer searched on its own scale until its optimum is bracketed, selection on
a smoothed validation metric, paired re-runs on seeds disjoint from the tuning seeds.

Protocol version 2 (the current one, :data:`BENCH_VERSION`), for every problem instance and optimizer:

1. **A learning-rate grid that brackets.** ``trials`` (≥ 8 in ``quick``/``full``) log-spaced rates over the
   problem's range times the optimizer's own ``lr_scale`` (its ``BenchSpec``), ε/δ at the optimizer's
   default. When the best rate is the lowest or highest of the grid, the grid is extended by one decade on
   that side (at the same spacing), at most ``extend`` times; an optimum still at an edge is recorded as
   *not bracketed* (the report flags it). Then two ε/δ trials at the best rate: the ends of the optimizer's
   own ε/δ range (which holds each paper's values, e.g. EAdam's 1e-16).
2. **The paper-defaults arm**: the optimizer's own defaults, one more candidate of the selection, and an arm
   of its own on the final seeds.
3. **Selection** on the problem's validation metric smoothed over the last ``smooth`` evaluations of each
   run (the mean), averaged over the tuning seeds; a failed or diverged run is the worst value; among equal
   scores the middle one of the grid wins (so a flat response does not count as an edge).
4. **Final runs** on ``final_seeds``, disjoint from the tuning seeds and the same for every optimizer
   (paired): the winner (``tuned``), the defaults, and each paper configuration a claim asks for on this
   instance (``paper:<arm>``: the winner's rate with the paper's settings, :mod:`adamkit.bench.claims`),
   and each of the suite's variants (``variant:<name>``: the winner's hyperparameters with the variant's on
   top, e.g. ``state_dtype = "int8"``; judged against the main arm by :func:`adamkit.bench.judge.judge_variants`).

A problem with ``tune = false`` runs its fixed hyperparameters (``hparams``) on the final seeds (``fixed``),
and the paper and variant arms on top of them. Version 1 (stores written before the version was recorded): a Latin
hypercube of ``trials`` random configurations over the problem's range, selection on the final value; the
report reads those stores with the version-1 rules.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import adamkit

from . import optimizers as bench_optimizers
from .suite import ProblemInstanceSpec, Suite

#: bump when the meaning of a stored run changes (part of every run's hash)
RUN_FORMAT = 1
#: the benchmark's version: its rules (this protocol), tasks and analysis. Stored with every sweep and
#: printed in every report; a report made by a newer version than its runs says so.
BENCH_VERSION = 3
#: what changed at each version (printed by the report when it reads an older store)
BENCH_VERSIONS = {
    1: "random search (Latin hypercube) over the problem's lr range, selection on the final value",
    2: "log-spaced lr grid on each optimizer's scale extended until bracketed, ε/δ trials at the best rate, "
       "selection on the smoothed validation metric, paper-configuration arms, SGD baseline",
    3: "each paper configuration tuned as an optimizer of its own (paper:<arm>) and run at the paper's own rate "
       "(paper-lr:<arm>), ε/δ searched on a grid extended until bracketed, 2 tuning seeds, tuning at the final "
       "budget, smoothing without the step-0 evaluation, selection on steps to target where the suite says so",
}

ARMS = ("tune", "defaults", "tuned", "fixed")  # and "tune:<arm>", "paper:<arm>", "paper-lr:<arm>", "variant:<name>"


def search_space(suite: Suite, optimizer: str) -> dict[str, tuple[float, float]]:
    """The ε/δ range searched for ``optimizer`` (its BenchSpec's, unless the suite overrides it)."""
    return dict(suite.search.get(optimizer) or bench_optimizers.spec(optimizer).search_space())


@dataclass(frozen=True)
class PlannedRun:
    """A run of the sweep: its full configuration (``spec``, hashed) and its place in the protocol."""

    spec: dict[str, Any]
    hash: str
    instance: str  # ProblemInstanceSpec.key
    optimizer: str
    arm: str  # "tune" (trial), "tune:<arm>" (trial of a paper configuration's search), "defaults", "tuned"
    #           (winner on final seeds), "fixed" (tune = false), "paper:<arm>", "paper-lr:<arm>", "variant:<name>"
    trial: int  # candidate index in the selection (-1: the defaults candidate), -1 for final arms
    seed: int


def run_hash(spec: dict[str, Any]) -> str:
    """The identity of a run: sha256 of its canonical JSON configuration (first 20 hex digits)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not serialisable in a run configuration: {value!r}")


def make_spec(inst: ProblemInstanceSpec, optimizer: str, hparams: dict[str, Any], seed: int,
              tuning: bool = False) -> dict[str, Any]:
    """The configuration of one run; ``tuning``: a tuning trial, at the instance's tuning budget."""
    steps, epochs, eval_every = inst.tune_budget if tuning else (inst.steps, inst.epochs, inst.eval_every)
    return {
        "format": RUN_FORMAT,
        "problem": inst.problem,
        "params": inst.params,
        "optimizer": optimizer,
        "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(hparams.items())},
        "seed": int(seed),
        "steps": steps,
        "epochs": epochs,
        "eval_every": eval_every,
        "record_every": inst.record_every,
        "timeout": inst.timeout,
        "adamkit": adamkit.__version__,
    }


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _planned(inst, opt, hp, seed, arm, trial) -> PlannedRun:
    spec = make_spec(inst, opt, hp, seed, tuning=arm == "tune" or arm.startswith("tune:"))
    return PlannedRun(spec=spec, hash=run_hash(spec), instance=inst.key, optimizer=opt, arm=arm, trial=trial, seed=seed)


def score(final: dict[str, Any] | None, metric: str, maximize: bool) -> float:
    """The selection score of one finished run (smaller is better); failures score +inf."""
    if not final or final.get("diverged"):
        return math.inf
    value = final.get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return -value if maximize else value


def budget(runs: list[PlannedRun]) -> dict[tuple[str, str, str], dict[str, int]]:
    """Per (instance, optimizer, arm): number of runs and total optimizer steps (for the fairness checks)."""
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for r in runs:
        b = out.setdefault((r.instance, r.optimizer, r.arm), {"runs": 0, "steps": 0, "candidates": 0})
        b["runs"] += 1
        b["steps"] += r.spec["steps"] or 0
    for key in out:
        out[key]["candidates"] = len({r.trial for r in runs if (r.instance, r.optimizer, r.arm) == key})
    return out


# ------------------------------------------------------------------------------------------- version 2


class Lookup:
    """What the protocol reads of the stored runs: final metrics by hash, and (for smoothing) curves.

    ``finals``: hash -> final metrics (None: failed); ``curve``: hash -> {"step": [...], metric: [...]}
    (the evaluation curve), or None when curves are not available (then the final value is used).
    ``exclude_start``: the smoothing leaves out the evaluation at step 0 (the untrained model), which a
    short curve would otherwise average in (version 3; version-2 stores are read with it included, as they
    were selected).
    """

    def __init__(self, finals: dict[str, dict[str, Any] | None], curve: Callable[[str], dict] | None = None,
                 smooth: int = 3, specs: dict[str, dict[str, Any]] | None = None, exclude_start: bool = True):
        self.finals, self._curve, self.smooth = finals, curve, smooth
        self.specs = specs  # hash -> stored configuration (read by the version-1 rules)
        self.exclude_start = exclude_start
        self._scores: dict[tuple, float] = {}

    def has(self, run_hash: str) -> bool:
        return run_hash in self.finals

    def score(self, run_hash: str, metric: str, maximize: bool) -> float:
        """Smaller is better: the mean of the last ``smooth`` evaluations of ``metric`` (negated when it is
        maximised), never counting the evaluation at step 0 (``exclude_start``); +inf for a failed or diverged
        run or a non-finite value; the final value without a curve (or with no evaluation after step 0)."""
        key = (run_hash, metric, maximize)
        if key not in self._scores:
            final = self.finals.get(run_hash)
            value = score(final, metric, maximize)
            if math.isfinite(value) and self._curve is not None and self.smooth > 1:
                curve = self._curve(run_hash) or {}
                values = curve.get(metric) or []
                steps = curve.get("step") or []
                if self.exclude_start and len(steps) == len(values):
                    values = [v for s, v in zip(steps, values) if not (isinstance(s, (int, float)) and s <= 0)]
                tail = [float(v) for v in values[-self.smooth:] if isinstance(v, (int, float))]
                if tail and all(math.isfinite(v) for v in tail):
                    value = float(np.mean(tail)) * (-1.0 if maximize else 1.0)
                elif tail:
                    value = math.inf
            self._scores[key] = value
        return self._scores[key]

    def steps_score(self, run_hash: str, inst: ProblemInstanceSpec) -> float:
        """Smaller is better: the first evaluation step at which the run reaches the instance's target; a run
        that never reaches it scores above every run that does, by its distance to the target at the end:
        ``budget · (1 + log(1 + |final − target| / |target|))`` (the budget: the run's steps); +inf for a
        failed or diverged run. The selection of ``selection_metric = "steps_to_target"``."""
        key = (run_hash, "steps_to_target", inst.target_metric, inst.target)
        if key in self._scores:
            return self._scores[key]
        from .store import first_step_reaching, target_key

        final = self.finals.get(run_hash)
        value = score(final, inst.target_metric, inst.maximize)
        if not math.isfinite(value) or inst.target is None:
            self._scores[key] = math.inf
            return math.inf
        kept = final.get("steps_to_target") or {}
        tkey = target_key(inst.target_metric, inst.target, inst.maximize)
        if isinstance(kept, dict) and tkey in kept:
            step = kept[tkey]
        elif self._curve is not None:
            curve = self._curve(run_hash) or {}
            step = first_step_reaching(curve.get("step", []), curve.get(inst.target_metric, []), inst.target,
                                       inst.maximize)
        else:
            step = None
        if step is not None:
            out = float(step)
        else:
            budget = final.get("budget_steps") or final.get("steps") or 1
            end = -value if inst.maximize else value
            miss = max(0.0, (inst.target - end) if inst.maximize else (end - inst.target))
            out = float(budget) * (1.0 + math.log1p(miss / max(abs(inst.target), 1e-12)))
        self._scores[key] = out
        return out

    def selection(self, run_hash: str, inst: ProblemInstanceSpec) -> float:
        """The instance's selection score of one run: :meth:`steps_score` when it selects on steps to the target,
        else :meth:`score` of its selection metric."""
        if inst.selection_metric == "steps_to_target":
            return self.steps_score(run_hash, inst)
        return self.score(run_hash, inst.selection_metric, inst.maximize)


@dataclass
class Search:
    """The tuning of one (instance, optimizer): its candidates, the winner, and whether the optimum is bracketed."""

    instance: str
    optimizer: str
    candidates: list[tuple[int, dict[str, Any], str]]  # (trial, hparams, kind: "grid" | "eps" | "defaults")
    scores: dict[int, float] = field(default_factory=dict)
    winner: int | None = None
    complete: bool = False
    extensions: list[str] = field(default_factory=list)  # "low" / "high", one per decade added
    bracketed: bool | None = None  # None: no learning-rate search (fixed lr, or not finished)
    lr_grid: list[float] = field(default_factory=list)
    #: version 3: the paper configuration searched (None: the optimizer's own search), its held keys
    arm: str | None = None
    held: dict[str, Any] = field(default_factory=dict)
    #: version 3: per ε/δ hyperparameter, the values tried at the best rate, the sides extended, and whether
    #: its best value is inside them
    eps_grid: dict[str, list[float]] = field(default_factory=dict)
    eps_extensions: dict[str, list[str]] = field(default_factory=dict)
    eps_bracketed: dict[str, bool | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``optimizer`` or ``optimizer@arm``: the second part of the search's key in ``Plan.searches``."""
        return self.optimizer + (f"@{self.arm}" if self.arm else "")

    @property
    def winner_hparams(self) -> dict[str, Any] | None:
        return next((hp for t, hp, _ in self.candidates if t == self.winner), None)


def lr_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` log-spaced rates from ``low`` to ``high`` (4 significant digits)."""
    if n <= 1:
        return [_round(math.sqrt(low * high))]
    return [_round(v) for v in np.exp(np.linspace(math.log(low), math.log(high), n))]


def _best(scored: list[tuple[int, float]]) -> int | None:
    """The index (into ``scored``) of the best score; among equal bests the middle one."""
    if not scored:
        return None
    best = min(s for _, s in scored)
    tied = [i for i, (_, s) in enumerate(scored) if s == best or (math.isfinite(best) and abs(s - best)
                                                                  <= 1e-12 * max(abs(best), 1e-300))]
    return tied[(len(tied) - 1) // 2]


def search_v2(suite: Suite, inst: ProblemInstanceSpec, optimizer: str, lookup: Lookup) -> Search:
    """Run the version-2 search of (``inst``, ``optimizer``) as far as the stored results allow."""
    base = dict(inst.hparams)
    out = Search(inst.key, optimizer, [])
    runs_of = lambda hp: [make_spec(inst, optimizer, hp, s, tuning=True) for s in inst.tune_seeds]  # noqa: E731

    def mean_score(hp) -> float | None:
        hashes = [run_hash(s) for s in runs_of(hp)]
        if not all(lookup.has(h) for h in hashes):
            return None
        return float(np.mean([lookup.score(h, inst.selection_metric, inst.maximize) for h in hashes]))

    if suite.defaults_arm:
        out.candidates.append((-1, dict(base), "defaults"))
    searched_lr = "lr" not in base
    grid: list[float] = []
    if searched_lr:
        scale = bench_optimizers.spec(optimizer).lr_scale
        low, high = inst.lr_range[0] * scale, inst.lr_range[1] * scale
        grid = lr_grid(low, high, inst.trials)
    trial = 0
    by_lr: dict[float, int] = {}
    for lr in grid:
        out.candidates.append((trial, {**base, "lr": lr}, "grid"))
        by_lr[lr] = trial
        trial += 1
    if not searched_lr:  # a fixed learning rate: the ε/δ trials only
        by_lr = {}
    step = (math.log(grid[-1]) - math.log(grid[0])) / (len(grid) - 1) if len(grid) > 1 else math.log(10)
    per_decade = max(1, math.ceil(math.log(10) / step - 1e-9))
    complete = True
    while by_lr:
        scored = []
        for lr in sorted(by_lr):
            s = mean_score({**base, "lr": lr})
            if s is None:
                complete = False
                break
            scored.append((by_lr[lr], s))
        if not complete:
            break
        lrs = sorted(by_lr)
        i = _best(scored)
        edge = "low" if i == 0 else "high" if i == len(lrs) - 1 else None
        if edge is None or len(lrs) < 3:
            out.bracketed = edge is None
            break
        if out.extensions.count(edge) >= suite.extend:
            out.bracketed = False
            break
        out.extensions.append(edge)
        sign = -1 if edge == "low" else 1
        origin = lrs[0] if edge == "low" else lrs[-1]
        for k in range(1, per_decade + 1):
            lr = _round(math.exp(math.log(origin) + sign * k * step))
            out.candidates.append((trial, {**base, "lr": lr}, "grid"))
            by_lr[lr] = trial
            trial += 1
    out.lr_grid = sorted(by_lr)
    # the ε/δ trials at the best rate (or at the fixed rate)
    space = {k: v for k, v in search_space(suite, optimizer).items() if k not in base}
    if complete and space:
        if by_lr:
            scored = [(by_lr[lr], mean_score({**base, "lr": lr})) for lr in out.lr_grid]
            best_lr = out.lr_grid[_best(scored)]
            at = {**base, "lr": best_lr}
        else:
            at = dict(base)
        for name, (low, high) in space.items():
            for value in (low, high):
                out.candidates.append((trial, {**at, name: value}, "eps"))
                trial += 1
    return _select(out, suite, mean_score, complete)


def _select(out: Search, suite: Suite, mean_score, complete: bool) -> Search:
    """The selection over every candidate of ``out``: each one's mean score (inf where a run is missing, which
    leaves the search incomplete), the winner the best (ties: the defaults, then the earlier trial)."""
    scored = []
    for t, hp, _ in out.candidates:
        s = mean_score(hp)
        if s is None:
            complete = False
            s = math.inf
        out.scores[t] = s
        scored.append((t, s))
    out.complete = complete
    if scored:
        best = min(s for _, s in scored)
        out.winner = next(t for t, s in scored if s == best)
        if not math.isfinite(best):
            out.winner = -1 if suite.defaults_arm else scored[0][0]
    return out


@dataclass
class Plan:
    """Every run of a sweep as far as the stored results determine it, and each search."""

    tuning: list[PlannedRun]
    final: list[PlannedRun]
    searches: dict[tuple[str, str], Search]
    complete: bool  # every tuning run is stored: the final phase is the final one

    @property
    def runs(self) -> list[PlannedRun]:
        return self.tuning + self.final

    def winners(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {k: {"hparams": s.winner_hparams, "trial": s.winner, "score": s.scores.get(s.winner, math.inf),
                    "complete": s.complete} for k, s in self.searches.items() if s.winner is not None}


def plan_v2(suite: Suite, lookup: Lookup) -> Plan:
    """A version-2 store, read by its own rules (:func:`search_v2`; paper arms at the winner's rate)."""
    from .claims import paper_arms

    tuning, final = [], []
    searches: dict[tuple[str, str], Search] = {}
    complete = True
    for inst in suite.problems:
        for opt in inst.optimizers:
            if not inst.tune:
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, dict(inst.hparams), seed, "fixed", -1))
                main = dict(inst.hparams)
            else:
                s = search_v2(suite, inst, opt, lookup)
                searches[(inst.key, opt)] = s
                for t, hp, _ in s.candidates:
                    for seed in inst.tune_seeds:
                        tuning.append(_planned(inst, opt, hp, seed, "tune", t))
                if suite.defaults_arm:
                    for seed in inst.final_seeds:
                        final.append(_planned(inst, opt, dict(inst.hparams), seed, "defaults", -1))
                if not s.complete:
                    complete = False
                    continue
                main = s.winner_hparams
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, dict(main), seed, "tuned", s.winner))
            for arm, config in (paper_arms(inst, opt) if suite.paper_arms else []):
                hp = {**main, **{k: ("none" if v is None else v) for k, v in config.items()}}
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, hp, seed, f"paper:{arm}", -1))
            for name, config in suite.variants.items():
                hp = {**main, **config}
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, hp, seed, f"variant:{name}", -1))
    return Plan(tuning, final, searches, complete)


# ------------------------------------------------------------------------------------------- version 3


def paper_base(inst: ProblemInstanceSpec, optimizer: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """(the hyperparameters a paper configuration's search starts from, the keys it holds).

    The configuration's keys but ``lr`` are held (the search never changes them); a held value equal to the
    optimizer's own default is left out of the hyperparameters, so that the run is the same run (the same
    hash) as the optimizer's own search makes, and is stored once. ``None`` (e.g. ADOPT's unclipped form,
    ``clip_lambda = None``) is written ``"none"`` as a suite would."""
    defaults = bench_optimizers.defaults(optimizer)
    base = dict(inst.hparams)
    held: dict[str, Any] = {}
    for k, v in config.items():
        if k == "lr":
            continue
        held[k] = "none" if v is None else v
        if k not in inst.hparams and k in defaults and _same(defaults[k], v):
            base.pop(k, None)
        else:
            base[k] = held[k]
    return base, held


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def eps_grid(low: float, high: float, n: int) -> list[float]:
    """``n`` ≥ 2 log-spaced ε/δ values from ``low`` to ``high`` (4 significant digits)."""
    return lr_grid(low, high, max(2, n))


def eps_search_grid(suite: Suite, low: float, high: float) -> tuple[list[float], float]:
    """The ε/δ values a search first tries over an optimizer's range ``[low, high]`` and the step (in natural log)
    by which it extends them past an edge: ``suite.eps_trials`` values and that grid's own step, or, with
    ``suite.eps_step`` (decades), values at most ``eps_step`` decades apart and steps of exactly ``eps_step``
    decades, so that every optimizer's ε/δ is searched at the same resolution whatever its range's width."""
    if suite.eps_step is None:
        grid = eps_grid(low, high, suite.eps_trials)
        return grid, (math.log(grid[-1]) - math.log(grid[0])) / (len(grid) - 1)
    points = math.ceil(math.log10(high / low) / suite.eps_step - 1e-9) + 1
    return eps_grid(low, high, points), suite.eps_step * math.log(10.0)


def _key(hp: dict[str, Any]) -> str:
    return json.dumps(hp, sort_keys=True, default=_jsonable)


def search_v3(suite: Suite, inst: ProblemInstanceSpec, optimizer: str, lookup: Lookup,
              paper: tuple[str, dict[str, Any]] | None = None) -> Search:
    """The version-3 search of (``inst``, ``optimizer``), or of one of its paper configurations
    (``paper = (arm, config)``: the configuration's keys held, see :func:`paper_base`), as far as the stored
    results allow.

    1. The defaults candidate (the configuration at the optimizer's defaults).
    2. ``inst.trials`` log-spaced rates over the instance's range times the optimizer's ``lr_scale``, extended
       by a decade at an edge (at most ``suite.extend`` times), as in version 2.
    3. At the best rate, each ε/δ the configuration does not hold on its own grid: ``suite.eps_trials``
       log-spaced values over the optimizer's range plus its default (the grid's runs), extended by one grid
       step beyond an edge while the best value sits there (at most ``suite.extend`` times per side); with
       ``suite.eps_step``, points at most that many decades apart and extended by that many
       (:func:`eps_search_grid`).
    4. The winner: the best mean selection score over the tuning seeds among every candidate (ties: the
       defaults, then the earlier candidate).
    """
    arm, config = paper if paper is not None else (None, {})
    base, held = paper_base(inst, optimizer, config) if paper is not None else (dict(inst.hparams), {})
    out = Search(inst.key, optimizer, [], arm=arm, held=held)
    index: dict[str, int] = {}
    trial = [0]

    def add(hp: dict[str, Any], kind: str) -> int:
        k = _key(hp)
        if k not in index:
            t_ = -1 if kind == "defaults" else trial[0]
            if kind != "defaults":
                trial[0] += 1
            index[k] = t_
            out.candidates.append((t_, dict(hp), kind))
        return index[k]

    def mean_score(hp) -> float | None:
        hashes = [run_hash(make_spec(inst, optimizer, hp, s, tuning=True)) for s in inst.tune_seeds]
        if not all(lookup.has(h) for h in hashes):
            return None
        return float(np.mean([lookup.selection(h, inst) for h in hashes]))

    if suite.defaults_arm:
        add(dict(base), "defaults")
    searched_lr = "lr" not in inst.hparams
    by_lr: dict[float, dict[str, Any]] = {}
    complete = True
    if searched_lr:
        scale = bench_optimizers.spec(optimizer).lr_scale
        grid = lr_grid(inst.lr_range[0] * scale, inst.lr_range[1] * scale, inst.trials)
        for lr in grid:
            by_lr[lr] = {**base, "lr": lr}
            add(by_lr[lr], "grid")
        step = (math.log(grid[-1]) - math.log(grid[0])) / (len(grid) - 1) if len(grid) > 1 else math.log(10)
        per_decade = max(1, math.ceil(math.log(10) / step - 1e-9))
        while True:
            lrs = sorted(by_lr)
            scored = []
            for lr in lrs:
                sc = mean_score(by_lr[lr])
                if sc is None:
                    complete = False
                    break
                scored.append((index[_key(by_lr[lr])], sc))
            if not complete:
                break
            i = _best(scored)
            edge = "low" if i == 0 else "high" if i == len(lrs) - 1 else None
            if edge is None or len(lrs) < 3:
                out.bracketed = edge is None
                break
            if out.extensions.count(edge) >= suite.extend:
                out.bracketed = False
                break
            out.extensions.append(edge)
            sign = -1 if edge == "low" else 1
            origin = lrs[0] if edge == "low" else lrs[-1]
            for k in range(1, per_decade + 1):
                lr = _round(math.exp(math.log(origin) + sign * k * step))
                by_lr[lr] = {**base, "lr": lr}
                add(by_lr[lr], "grid")
    out.lr_grid = sorted(by_lr)
    # the ε/δ grids at the best rate (or at the fixed rate)
    space = {k: v for k, v in search_space(suite, optimizer).items() if k not in base and k not in held}
    if complete and space:
        if by_lr:
            scored = [(i, mean_score(by_lr[lr])) for i, lr in enumerate(out.lr_grid)]
            at = by_lr[out.lr_grid[_best(scored)]]
        else:
            at = dict(base)
            add(at, "eps")  # (already a candidate when it is the defaults)
        defaults = bench_optimizers.defaults(optimizer)
        for name, (low, high) in space.items():
            default = defaults.get(name)
            values: dict[float, dict[str, Any]] = {}
            if isinstance(default, (int, float)) and not isinstance(default, bool) and default > 0:
                values[float(default)] = at  # the rate's own run is the default ε/δ
            grid, gstep = eps_search_grid(suite, low, high)
            ext: list[str] = []
            bracketed = None

            def put(v):
                if not any(math.isclose(v, u, rel_tol=1e-6) for u in values):
                    values[v] = {**at, name: v}
                    add(values[v], "eps")
            for v in grid:
                put(v)
            while True:
                vs = sorted(values)
                scored = []
                for v in vs:
                    sc = mean_score(values[v])
                    if sc is None:
                        complete = False
                        break
                    scored.append((0, sc))
                if not complete:
                    break
                i = _best(scored)
                edge = "low" if i == 0 else "high" if i == len(vs) - 1 else None
                if edge is None:
                    bracketed = True
                    break
                if ext.count(edge) >= suite.extend:
                    bracketed = False
                    break
                ext.append(edge)
                put(_round(math.exp(math.log(vs[0]) - gstep)) if edge == "low"
                    else _round(math.exp(math.log(vs[-1]) + gstep)))
            out.eps_grid[name] = sorted(values)
            out.eps_extensions[name] = ext
            out.eps_bracketed[name] = bracketed
    return _select(out, suite, mean_score, complete)


def search(suite: Suite, inst: ProblemInstanceSpec, optimizer: str, lookup: Lookup,
           paper: tuple[str, dict[str, Any]] | None = None) -> Search:
    """The current version's search (:func:`search_v3`)."""
    return search_v3(suite, inst, optimizer, lookup, paper)


def plan(suite: Suite, lookup: Lookup, version: int = BENCH_VERSION) -> Plan:
    """The sweep's runs given what is stored, by the rules of ``version`` (3: :func:`plan_v3`; a store made by
    an older version is read by that version's rules)."""
    if version == 1:
        return plan_v1(suite, lookup)
    if version == 2:
        return plan_v2(suite, lookup)
    if version != BENCH_VERSION:
        raise ValueError(f"benchmark version {version} is not known to this adamkit (it knows 1 to "
                         f"{BENCH_VERSION}); read the store with the adamkit that wrote it")
    return plan_v3(suite, lookup)


def plan_v3(suite: Suite, lookup: Lookup) -> Plan:
    """Version 3: per (instance, optimizer) its own search (key ``(instance, optimizer)``, arms ``tune``,
    ``tuned``, ``defaults``), and per paper configuration a claim asks for a search of its own (key
    ``(instance, "optimizer@arm")``, trials ``tune:<arm>``, final arm ``paper:<arm>`` = its winner) and, where
    the configuration gives a learning rate, ``paper-lr:<arm>`` at that rate (not tuned). An instance with
    ``tune = false`` runs its fixed hyperparameters (``fixed``) and each paper configuration on top of them."""
    from .claims import paper_arms

    tuning, final = [], []
    searches: dict[tuple[str, str], Search] = {}
    complete = True
    for inst in suite.problems:
        for opt in inst.optimizers:
            configs = paper_arms(inst, opt) if suite.paper_arms else []
            own = opt not in inst.paper_only  # else: only its paper configurations
            if not inst.tune and not own:
                for arm, config in configs:
                    base, _ = paper_base(inst, opt, config)
                    for seed in inst.final_seeds:
                        final.append(_planned(inst, opt, dict(base), seed, f"paper:{arm}", -1))
                continue
            if not inst.tune:
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, dict(inst.hparams), seed, "fixed", -1))
                main = dict(inst.hparams)
                for arm, config in configs:
                    base, _ = paper_base(inst, opt, config)
                    for seed in inst.final_seeds:
                        final.append(_planned(inst, opt, dict(base), seed, f"paper:{arm}", -1))
            else:
                main = None
                if own:
                    s = search_v3(suite, inst, opt, lookup)
                    searches[(inst.key, opt)] = s
                    for t_, hp, _ in s.candidates:
                        for seed in inst.tune_seeds:
                            tuning.append(_planned(inst, opt, hp, seed, "tune", t_))
                    if suite.defaults_arm:
                        for seed in inst.final_seeds:
                            final.append(_planned(inst, opt, dict(inst.hparams), seed, "defaults", -1))
                    main = s.winner_hparams if s.complete else None
                    complete &= s.complete
                    if main is not None:
                        for seed in inst.final_seeds:
                            final.append(_planned(inst, opt, dict(main), seed, "tuned", s.winner))
                for arm, config in configs:
                    ps = search_v3(suite, inst, opt, lookup, (arm, config))
                    searches[(inst.key, f"{opt}@{arm}")] = ps
                    for t_, hp, _ in ps.candidates:
                        for seed in inst.tune_seeds:
                            tuning.append(_planned(inst, opt, hp, seed, f"tune:{arm}", t_))
                    complete &= ps.complete
                    if ps.complete:
                        for seed in inst.final_seeds:
                            final.append(_planned(inst, opt, dict(ps.winner_hparams), seed, f"paper:{arm}", ps.winner))
                    if "lr" in config and "lr" not in inst.hparams:
                        base, _ = paper_base(inst, opt, config)
                        hp = dict(base) if _same(bench_optimizers.defaults(opt).get("lr"), config["lr"]) \
                            else {**base, "lr": config["lr"]}
                        for seed in inst.final_seeds:
                            final.append(_planned(inst, opt, hp, seed, f"paper-lr:{arm}", -1))
                if main is None:
                    continue
            for name, config in suite.variants.items():
                hp = {**main, **config}
                for seed in inst.final_seeds:
                    final.append(_planned(inst, opt, hp, seed, f"variant:{name}", -1))
    return Plan(tuning, final, searches, complete)


def _identity(spec: dict[str, Any]) -> str:
    """A run's configuration without its hyperparameters and seed: which (instance, optimizer) it belongs to."""
    keep = {k: spec.get(k) for k in ("problem", "params", "optimizer", "steps", "epochs", "eval_every",
                                     "record_every", "timeout")}
    return json.dumps(keep, sort_keys=True, default=_jsonable)


def plan_v1(suite: Suite, lookup: Lookup) -> Plan:
    """A version-1 store, read by its own rules from its stored runs (their search spaces were those of that
    version, so the candidates are taken from the store, not recomputed): candidates are the stored runs on
    the tuning seeds grouped by hyperparameters (the defaults: the instance's own ``hparams``), the winner has
    the best mean final validation value (ties: the defaults, then the lower rate), and the final arms are the
    stored runs on the final seeds with the winner's (``tuned``) or the default (``defaults``) hyperparameters."""
    specs = lookup.specs or {}
    by_identity: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for h, spec in specs.items():
        by_identity.setdefault(_identity(spec), []).append((h, spec))
    tuning, final = [], []
    searches: dict[tuple[str, str], Search] = {}
    complete = True
    for inst in suite.problems:
        for opt in inst.optimizers:
            stored = by_identity.get(_identity(make_spec(inst, opt, {}, 0)), [])
            base = make_spec(inst, opt, dict(inst.hparams), 0)["hparams"]
            same = lambda hp, ref: json.dumps(hp, sort_keys=True) == json.dumps(ref, sort_keys=True)  # noqa: E731

            def runs_with(hp, seeds, arm, trial):
                return [PlannedRun(s, h, inst.key, opt, arm, trial, int(s["seed"])) for h, s in stored
                        if int(s["seed"]) in seeds and same(s["hparams"], hp)]
            if not inst.tune:
                final += runs_with(base, inst.final_seeds, "fixed", -1)
                continue
            groups: dict[str, dict[str, Any]] = {}
            for h, s in stored:
                if int(s["seed"]) in inst.tune_seeds:
                    groups.setdefault(json.dumps(s["hparams"], sort_keys=True), s["hparams"])
            cands = sorted(groups.values(), key=lambda hp: (not same(hp, base), hp.get("lr", 0.0)))
            search = Search(inst.key, opt, [])
            trial = 0
            for hp in cands:
                t_ = -1 if same(hp, base) else trial
                trial += 0 if t_ == -1 else 1
                runs = runs_with(hp, inst.tune_seeds, "tune", t_)
                tuning += runs
                search.candidates.append((t_, hp, "defaults" if t_ == -1 else "grid"))
                search.scores[t_] = float(np.mean([score(lookup.finals.get(r.hash), inst.selection_metric,
                                                         inst.maximize) for r in runs])) if runs else math.inf
            search.complete = bool(cands)
            complete &= search.complete
            if search.scores:
                best = min(search.scores.values())
                search.winner = next(t_ for t_, _, _ in search.candidates if search.scores[t_] == best)
                search.lr_grid = sorted(hp["lr"] for _, hp, k in search.candidates if k == "grid" and "lr" in hp)
                win_lr = (search.winner_hparams or {}).get("lr")
                if search.winner != -1 and win_lr is not None and len(search.lr_grid) >= 3:
                    search.bracketed = search.lr_grid[0] < win_lr < search.lr_grid[-1]
                final += runs_with(search.winner_hparams, inst.final_seeds, "tuned", search.winner)
            searches[(inst.key, opt)] = search
            if suite.defaults_arm:
                final += runs_with(base, inst.final_seeds, "defaults", -1)
    return Plan(tuning, final, searches, complete)


# ------------------------------------------------------------------------------------------- cost model

#: seconds of one run, per problem: (per optimizer step, per evaluation, per run), fitted to the run-seconds of
#: the committed `full` store of benchmark version 2 (one torch thread per run, 2 runs at a time on the 2-core
#: development machine, on a day its small runs were about 3x slower than on a quiet one: Tier A costs here are
#: upper bounds). Steps per epoch for tasks budgeted in epochs. A problem not listed costs its tier's default.
COSTS: dict[str, tuple[float, float, float]] = {
    # Tier A at a quiet machine's speed: the store's figures divided by 3 (the machine probe of each sweep
    # session, in `adamkit bench report`'s "About this run", says how fast the machine was when it ran)
    "adopt_counterexample": (8e-5, 4e-5, 0.05), "reddi_counterexample": (8.5e-5, 2e-5, 0.02),
    "logreg_breast_cancer": (2.7e-4, 4e-5, 0.05), "quadratic_deep": (1.6e-4, 4e-5, 0.05),
    "rosenbrock_nd": (2.9e-4, 4e-5, 0.05),
    "mnist1d_mlp": (1.4e-3, 0.05, 0.5), "mnist1d_cnn": (6.5e-3, 0.1, 0.5), "fm_movielens": (2.5e-3, 0.05, 0.2),
    "deepfm_movielens": (4.2e-3, 0.05, 0.2), "gan_ring8": (7.2e-3, 0.15, 0.2), "cartpole_ppo": (0.05, 0.2, 0.5),
    "char_lstm1": (0.035, 0.3, 0.5), "fmnist_resnet": (0.08, 2.0, 17.0), "word_lstm1": (0.22, 2.0, 1.0),
    "gpt_noclip_b8": (0.066, 0.5, 3.5), "vae_fmnist": (0.017, 0.7, 1.0), "fm_criteo": (0.015, 1.0, 4.0),
    "hopper_ppo": (0.0087, 0.2, 1.0),
    # the GPU tier's tasks: seconds per step on one CPU thread (docs/bench/tasks-and-data.md), evaluations and
    # start-up at Tier B's default; on a GPU they are far cheaper (not measured yet)
    "fmnist_resnet_wd_aug": (1.1, 2.0, 5.0), "wgan_clip_fmnist": (1.5, 2.0, 5.0),
}
#: the chains of a counterexample run side by side: about 20 % more per step at 8 chains (measured)
CHAIN_COST = 0.02
STEPS_PER_EPOCH = {"fmnist_resnet": 421, "vae_fmnist": 421, "fm_criteo": 488, "fm_movielens": 156,
                   "deepfm_movielens": 156, "word_lstm1": 1507}
TIER_DEFAULT = {"A": (2.5e-4, 1e-4, 0.05), "B": (0.1, 2.0, 5.0)}  # (Tier A: the 2-D functions, measured)


#: the 2-D test functions: Tier A's default cost is theirs (measured)
_FUNCTIONS = {"abs_sum", "abs_rotated", "quad_rotated", "abs_scaled", "beale", "rosenbrock", "booth", "matyas",
              "himmelblau", "three_hump_camel", "goldstein_price", "rastrigin", "ackley", "branin"}


def run_seconds(spec: dict[str, Any]) -> tuple[float, bool]:
    """(estimated seconds of one run of ``spec`` on one core, whether its problem's cost was measured)."""
    from . import registry

    problem = spec["problem"]
    measured = problem in COSTS or problem in _FUNCTIONS
    if problem in COSTS:
        per_step, per_eval, per_run = COSTS[problem]
    else:
        try:
            tier = registry.get_problem_class(problem).tier
        except ValueError:
            tier = "B"
            measured = False
        per_step, per_eval, per_run = TIER_DEFAULT[tier]
    steps = spec.get("steps")
    if steps is None:
        epochs = spec.get("epochs") or 1
        steps = epochs * STEPS_PER_EPOCH.get(problem, 500)
        measured = measured and problem in STEPS_PER_EPOCH
    chains = (spec.get("params") or {}).get("chains") or 1
    per_step *= 1.0 + CHAIN_COST * (chains - 1)
    evals = steps // max(1, spec.get("eval_every") or 1) + 2
    return per_run + steps * per_step + evals * per_eval, measured


@dataclass
class CostEstimate:
    """What a suite costs by :func:`run_seconds`: with nothing stored, the first stage of every search (its grid,
    defaults and the ε/δ grid at one rate) and every final arm; against a store, what is left of that (the runs
    planned and not stored, and the ε/δ grids and final arms of the searches not yet settled) beside what is
    stored. Grid extensions not yet decided add to it."""

    seconds: float
    runs: int
    by_group: dict[str, tuple[int, float]]  # suite entry -> (runs, seconds)
    unmeasured: list[str]  # problems costed by their tier's default
    #: against a store: suite entry -> (runs of the plan that are stored, their measured seconds)
    stored: dict[str, tuple[int, float]] | None = None
    #: against a store: suite entry -> what its stored runs took over what the cost model gives them (entries
    #: with measured runs only); the runs left of an entry are expected to take the same multiple
    scale: dict[str, float] | None = None

    @property
    def cpu_hours(self) -> float:
        return self.seconds / 3600.0

    @property
    def measured_seconds(self) -> float:
        """What is left, each entry's cost-model seconds times its :attr:`scale` (1 where it has no measured run)."""
        scale = self.scale or {}
        return sum(sec * scale.get(group, 1.0) for group, (_, sec) in self.by_group.items())

    def lines(self, jobs: int = 2) -> list[str]:
        wall = f"about {self.cpu_hours / jobs:.1f} h of wall time at --jobs {jobs}"
        if self.stored is None:
            out = [f"{self.runs} runs, about {self.cpu_hours:.1f} CPU-hours ({wall}); grid extensions add to it"]
            for group, (n, sec) in sorted(self.by_group.items(), key=lambda kv: -kv[1][1]):
                out.append(f"  {group:<32} {n:>6} runs {sec / 3600:>7.2f} CPU-h")
        else:
            n_stored = sum(n for n, _ in self.stored.values())
            stored_h = sum(sec for _, sec in self.stored.values()) / 3600
            measured = self.measured_seconds / 3600
            out = [f"stored: {n_stored} runs of this plan, {stored_h:.1f} run-hours as measured",
                   f"left: {self.runs} runs, about {self.cpu_hours:.1f} CPU-hours ({wall}); grid extensions "
                   f"not yet decided add to it" if self.runs else "left: nothing (the sweep is complete)"]
            if self.runs:
                out.append(f"  at the pace of the stored runs (each entry's cost-model hours times what its stored "
                           f"runs took over the model's figure for them): about {measured:.1f} CPU-hours (about "
                           f"{measured / jobs:.1f} h of wall time at --jobs {jobs})")
                out.append(f"  {'':<32} {'left':>6} {'CPU-h':>7} {'paced':>7}   {'stored':>6} {'run-h':>7}")
            for group in sorted(set(self.by_group) | set(self.stored),
                                key=lambda g: (-self.by_group.get(g, (0, 0.0))[1], g)):
                n, sec = self.by_group.get(group, (0, 0.0))
                if n == 0:
                    continue
                m, msec = self.stored.get(group, (0, 0.0))
                paced = sec * (self.scale or {}).get(group, 1.0)
                out.append(f"  {group:<32} {n:>6} {sec / 3600:>7.2f} {paced / 3600:>7.2f}   {m:>6} {msec / 3600:>7.2f}")
        if self.unmeasured:
            out.append(f"  (not measured, costed at their tier's default: {', '.join(sorted(self.unmeasured))})")
        return out


def unplanned_runs(suite: Suite, inst: ProblemInstanceSpec, s: Search) -> list[tuple[str, dict[str, Any]]]:
    """(a key of its own, a configuration costing the same) of each run a search not settled yet will still plan
    beyond its learning-rate grid: its final arm and variants on the final seeds, and its ε/δ grids at the rate
    it will choose (each planned once that rate is chosen). Nothing for a settled search: its runs are planned."""
    if s.complete:
        return []
    out = []
    key, label = inst.key, s.label
    spec = make_spec(inst, s.optimizer, dict(inst.hparams), inst.final_seeds[0])
    for seed in inst.final_seeds:  # the winner (``tuned`` or ``paper:<arm>``)
        out.append((f"final:{key}:{label}:{seed}", {**spec, "seed": seed}))
    space = {k: v for k, v in search_space(suite, s.optimizer).items() if k not in inst.hparams and k not in s.held}
    defaults = bench_optimizers.defaults(s.optimizer)
    tune = make_spec(inst, s.optimizer, {}, 0, tuning=True)
    for name, (low, high) in space.items():
        if name in s.eps_grid:  # already planned
            continue
        for v in eps_search_grid(suite, low, high)[0]:
            if isinstance(defaults.get(name), float) and math.isclose(v, defaults[name], rel_tol=1e-6):
                continue  # the best rate's own run
            for seed in inst.tune_seeds:
                out.append((f"eps:{key}:{label}:{name}:{v}:{seed}", tune))
    for variant in suite.variants:
        for seed in inst.final_seeds:
            out.append((f"variant:{key}:{label}:{variant}:{seed}", spec))
    return out


def estimate(suite: Suite, lookup: Lookup | None = None,
             durations: dict[str, float] | None = None) -> CostEstimate:
    """The cost of ``suite`` by the planner's cost model, each run at :func:`run_seconds`.

    With nothing stored (no ``lookup``): every run the plan makes, plus the ε/δ grid values each search tries at
    its best rate (:func:`search_v3`) and every final arm. Against a store (``lookup`` of its finals,
    ``durations`` its measured seconds per run): what is left, the plan's runs not stored plus the ε/δ grids
    and final arms of the searches not settled, and per suite entry the plan's runs that are stored."""

    class _Unfinished(Lookup):
        def has(self, run_hash):  # nothing is stored: the first stage of every search
            return False

    planned = plan(suite, lookup if lookup is not None else _Unfinished({}))
    by_group: dict[str, list] = {}
    stored: dict[str, list] | None = None if lookup is None else {}
    unmeasured: set[str] = set()
    insts = {i.key: i for i in suite.problems}
    seen: set[str] = set()
    paces: dict[str, list[float]] = {}  # suite entry -> [measured seconds, cost-model seconds] of its stored runs

    def count(h, spec, group, times=1):
        if h in seen:
            return
        seen.add(h)
        if lookup is not None and lookup.has(h):
            acc = stored.setdefault(group, [0, 0.0])
            acc[0] += 1
            took = (durations or {}).get(h) or 0.0
            acc[1] += took
            if took > 0:
                pace = paces.setdefault(group, [0.0, 0.0])
                pace[0] += took
                pace[1] += run_seconds(spec)[0]
            return
        sec, ok = run_seconds(spec)
        if not ok:
            unmeasured.add(spec["problem"])
        acc = by_group.setdefault(group, [0, 0.0])
        acc[0] += times
        acc[1] += sec * times
    for r in planned.runs:
        count(r.hash, r.spec, insts[r.instance].group)
    # the final arms of the searches not settled (not planned before their tuning is stored) and their ε/δ
    # grids (planned once the rate is chosen)
    for (key, _), s in planned.searches.items():
        for h, spec in unplanned_runs(suite, insts[key], s):
            count(h, spec, insts[key].group)
    total = sum(sec for _, sec in by_group.values())
    runs = sum(n for n, _ in by_group.values())
    return CostEstimate(total, runs, {g: (n, sec) for g, (n, sec) in by_group.items()}, sorted(unmeasured),
                        None if stored is None else {g: (n, sec) for g, (n, sec) in stored.items()},
                        None if stored is None else {g: took / model for g, (took, model) in paces.items() if model > 0})
