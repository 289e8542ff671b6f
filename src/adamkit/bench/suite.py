"""Suites: which problems and tasks, which optimizers, budgets, seeds and targets — TOML files.

A suite is a shipped name (``smoke``, ``quick``, ``full``, ``tasks_quick``, ``paper``, ``precision``, ``gpu_smoke``,
``gpu``:
``src/adamkit/bench/suites/*.toml``) or the path of a user's file. The format::

    name = "my-suite"
    description = "what it shows"
    optimizers = ["adam", "adabelief", "adopt"]     # default: every registered optimizer and the baselines;
                                                    # "adamkit": every registered adamkit optimizer, no baseline

    [protocol]
    trials = 8            # log-spaced learning rates per optimizer and problem (extended while the best is at an edge)
    extend = 2            # at most this many decades added per side; still at an edge: "not bracketed"
    smooth = 3            # select on the mean of each run's last 3 evaluations (never the one at step 0)
    eps_trials = 3        # ε/δ values on each optimizer's own grid at the best rate (extended while the best is at an edge)
    eps_step = 1          # or: an ε/δ grid with points at most this many decades apart, extended by this many, the
                          # same for every optimizer (default: eps_trials points, extended by that grid's own step)
    selection_metric = "steps_to_target"   # select every tuned instance on steps to its target (default: the
                                           # problem's validation metric); also a per-problem key
    paper_arms = true     # also run the paper configurations the claims name (e.g. adabelief@cnn)
    variants = { int8 = { state_dtype = "int8" } }   # arms of the main arm's hyperparameters with these on top
    margins = { test_accuracy = { absolute = 0.01 }, test_bpc = { relative = 0.01 } }  # their non-inferiority margins
    tune_seeds = 2        # seeds each trial runs on (a number n means 0..n-1; default 2: the selection averages them)
    final_seeds = 10      # paired seeds of every final arm (n means 1000..1000+n-1)
    search_seed = 0       # seed of the random search
    defaults_arm = true   # also run every optimizer with the paper defaults (and let tuning pick them)
    lr = [1e-4, 1e-1]     # learning-rate range (else each problem's own range)

    [protocol.search.agd] # ε/δ ranges on an optimizer's own scale (defaults: each optimizer's BenchSpec)
    delta = [1e-14, 1e-5]

    [[problems]]                    # (``[[tasks]]`` is the same table, for Tier B tasks)
    name = "rosenbrock"             # a registered problem or task
    params = { noise = 0.0 }        # its settings
    grid = { noise = [0.0, 0.1] }   # settings to sweep: one instance per combination
    steps = 500                     # budget in optimizer steps  (or: epochs = 3, for tasks)
    eval_every = 1                  # evaluate every n steps (and at the start and the end)
    tune_steps = 100                # the tuning trials' budget, if shorter (or: tune_epochs = 1; tune_steps
    tune_eval_every = 1             # may also shorten a budget in epochs); the final arms run the full budget.
                                    # Default: the same budget and eval_every
    target = 1e-3                   # "reached the target" threshold of the problem's target metric
    lr = [1e-3, 1.0]                # this problem's learning-rate range
    tune = true                     # false: no search, run `hparams` (on the defaults) on the final seeds
    hparams = { lr = 0.01 }         # hyperparameters fixed for every optimizer and arm
    optimizers = ["adam", "adopt"]  # a subset for this problem
    paper_only = ["agd"]            # of those, run only in the paper configurations the claims name (agd@cnn)
    trials = 8, tune_seeds = ..., final_seeds = ...   # per-problem protocol overrides
    selection_metric = "steps_to_target"  # select on the first evaluation step reaching `target` (toy-speed claims)
    timeout = 600                   # seconds one run may take (Tier B); 0: no limit

**Variants** (``protocol.variants``): named sets of hyperparameters that change one thing about the main arm
(the tuned winner, or the fixed hyperparameters), e.g. the storage format of the optimizer state. Each runs as
an arm ``variant:<name>`` on the same final seeds as the main arm (paired: the same seed gives the same
initialisation and data order), and the report compares it with the main arm by a non-inferiority test whose
margin ``protocol.margins`` states per target metric: ``{ absolute = a }`` (the variant is *no worse* when the
95 % interval of its paired difference lies above ``-a``) or ``{ relative = r }`` (above ``-r`` times the
main arm's mean). A suite with variants must state a margin for the target metric of each of its instances.

Errors name the file and the key, e.g. ``suite 'x.toml': problems[2].grid.beta2: expected a list``.
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import adamkit

from . import optimizers as bench_optimizers
from . import registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and the key."""


SHIPPED = ("smoke", "quick", "full", "tasks_quick", "paper", "precision", "gpu_smoke", "gpu")


@dataclass(frozen=True)
class ProblemInstanceSpec:
    """One problem of a suite with one combination of its settings, and its budget."""

    key: str  # unique label in the suite, e.g. "adopt_counterexample[k=10,beta2=0.1]"
    problem: str
    params: dict[str, Any]
    tier: str
    steps: int | None
    epochs: int | None
    eval_every: int
    record_every: int
    target: float | None
    target_metric: str
    selection_metric: str
    maximize: bool
    lr_range: tuple[float, float]
    tune: bool
    hparams: dict[str, Any]
    optimizers: tuple[str, ...]
    trials: int
    tune_seeds: tuple[int, ...]
    final_seeds: tuple[int, ...]
    timeout: float
    group: str  # the suite entry it came from (its problem name, or the entry's label)
    #: the tuning trials' budget and evaluation interval where they differ from the final arms' (None: the same)
    tune_steps: int | None = None
    tune_epochs: int | None = None
    tune_eval_every: int | None = None
    #: optimizers run here only in the paper configurations the claims name (no search of their own, no
    #: defaults arm): what a claim about ``optimizer@arm`` needs, at the cost of one search
    paper_only: tuple[str, ...] = ()

    @property
    def tune_budget(self) -> tuple[int | None, int | None, int]:
        """(steps, epochs, eval_every) of the tuning trials."""
        if self.tune_steps is None and self.tune_epochs is None:
            return self.steps, self.epochs, self.tune_eval_every or self.eval_every
        return self.tune_steps, self.tune_epochs, self.tune_eval_every or self.eval_every

    @property
    def multi_fidelity(self) -> bool:
        """Whether the trials run a shorter budget than the final arms."""
        return self.tune_budget != (self.steps, self.epochs, self.eval_every)


@dataclass
class Suite:
    name: str
    description: str
    optimizers: tuple[str, ...]
    trials: int
    tune_seeds: tuple[int, ...]
    final_seeds: tuple[int, ...]
    search_seed: int
    defaults_arm: bool
    search: dict[str, dict[str, tuple[float, float]]]
    problems: list[ProblemInstanceSpec] = field(default_factory=list)
    extend: int = 2  # decades a learning-rate grid may be extended by, per side, while its optimum is at an edge
    smooth: int = 3  # the selection averages the last `smooth` evaluations of a run
    eps_trials: int = 3  # ε/δ grid values tried at the best rate (version 3)
    #: decades between ε/δ grid points (at most) and of one extension, the same for every optimizer (None:
    #: ``eps_trials`` points over each optimizer's own range, extended by that grid's step)
    eps_step: float | None = None
    paper_arms: bool = True  # run the paper configurations the claims name (``optimizer@arm``)
    #: name -> hyperparameters on top of the main arm's (arm ``variant:<name>``), in the suite's order
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: target metric -> ("absolute" | "relative", value): the non-inferiority margin of the variants
    margins: dict[str, tuple[str, float]] = field(default_factory=dict)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """The suite as stored with a sweep: its tables and the *name* of its file (no machine path)."""
        return json.dumps({"source": Path(self.source).name if self.source else "", "suite": self.raw},
                          sort_keys=True, default=str)

    def content_hash(self) -> str:
        """sha256 (first 12 hex digits) of the suite's tables: the same suite gives the same hash anywhere."""
        import hashlib

        text = json.dumps(self.raw, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @classmethod
    def from_json(cls, text: str, version: int | None = None) -> "Suite":
        """A stored suite; ``version``: the benchmark version it was run with (its defaults are that version's)."""
        data = json.loads(text)
        return parse_suite(data["suite"], data.get("source", "stored suite"), version=version)


# ------------------------------------------------------------------------------------------------ loading


def shipped_suite_path(name: str) -> Path:
    return Path(str(resources.files("adamkit.bench").joinpath("suites", f"{name}.toml")))


def list_suites() -> list[tuple[str, str]]:
    """(name, description) of the shipped suites."""
    out = []
    for name in SHIPPED:
        try:
            suite = load_suite(name)
            out.append((name, suite.description))
        except (SuiteError, FileNotFoundError) as exc:
            out.append((name, f"(cannot be loaded: {exc})"))
    return out


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name, or a suite file by path."""
    text = str(name_or_path)
    path = Path(text)
    if text in SHIPPED and not path.exists():
        path = shipped_suite_path(text)
    elif not path.exists():
        raise SuiteError(f"no suite {text!r}: not a file, and not a shipped suite ({', '.join(SHIPPED)})")
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"suite {str(path)!r}: not valid TOML ({exc})") from None
    return parse_suite(data, str(path))


def _fail(source: str, key: str, message: str):
    raise SuiteError(f"suite {source!r}: {key}: {message}")


def _check_keys(source, where, table, allowed):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        _fail(source, f"{where}{unknown[0]}" if where else unknown[0],
              f"unknown key; allowed here: {', '.join(sorted(allowed))}")


def _int(source, key, value, minimum=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(source, key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _float(source, key, value, positive=True):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (positive and value <= 0):
        _fail(source, key, f"expected a {'positive ' if positive else ''}number, got {value!r}")
    return float(value)


def _range(source, key, value):
    if not (isinstance(value, list) and len(value) == 2):
        _fail(source, key, f"expected a range [low, high], got {value!r}")
    low, high = (_float(source, key, v) for v in value)
    if low > high:
        _fail(source, key, f"low {low} is above high {high}")
    return (low, high)


def _seeds(source, key, value, base):
    if isinstance(value, list):
        if not value:
            _fail(source, key, "expected at least one seed")
        return tuple(_int(source, f"{key}[{i}]", v) for i, v in enumerate(value))
    n = _int(source, key, value, minimum=1)
    return tuple(range(base, base + n))


def _optimizers(source, key, value):
    names = bench_optimizers.names()
    if value == "adamkit":  # every registered adamkit optimizer (discovered from the registry), no baseline
        return tuple(n for n in adamkit.list_optimizers())
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        _fail(source, key, f'expected a non-empty list of optimizer names (or "adamkit"), got {value!r}')
    for i, v in enumerate(value):
        if v.lower() not in names:
            _fail(source, f"{key}[{i}]", f"unknown optimizer {v!r}; choose from {', '.join(names)}")
    return tuple(v.lower() for v in value)


def _label(problem: str, params: Mapping[str, Any], varying: list[str]) -> str:
    if not varying:
        return problem
    return problem + "[" + ",".join(f"{k}={params[k]}" for k in varying) + "]"


PROTOCOL_KEYS = {"trials", "tune_seeds", "final_seeds", "search_seed", "defaults_arm", "lr", "search", "extend",
                 "smooth", "paper_arms", "variants", "margins", "eps_trials", "eps_step",
                 "selection_metric"}
ENTRY_KEYS = {"name", "label", "params", "grid", "steps", "epochs", "eval_every", "record_every", "target", "lr",
              "tune", "hparams", "optimizers", "trials", "tune_seeds", "final_seeds", "timeout",
              "tune_steps", "tune_epochs", "tune_eval_every", "selection_metric", "paper_only"}
#: the defaults that changed with the benchmark version (a stored suite is read with its own version's)
VERSION_DEFAULTS = {1: {"tune_seeds": [0], "final_seeds": 5}, 2: {"tune_seeds": [0], "final_seeds": 5},
                    3: {"tune_seeds": 2, "final_seeds": 10}}


def parse_suite(data: Mapping[str, Any], source: str = "<suite>", version: int | None = None) -> Suite:
    """Check a suite's tables and expand its grids; raise SuiteError naming the key on any problem.

    ``version``: the benchmark version whose defaults apply (None: the current one)."""
    from .protocol import BENCH_VERSION

    vdefaults = VERSION_DEFAULTS.get(version or BENCH_VERSION, VERSION_DEFAULTS[3])
    _check_keys(source, "", data, {"name", "description", "optimizers", "protocol", "problems", "tasks"})
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        _fail(source, "name", f"expected a non-empty string, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        _fail(source, "description", "expected a string")
    optimizers = _optimizers(source, "optimizers", data.get("optimizers", bench_optimizers.names()))

    proto = data.get("protocol", {})
    if not isinstance(proto, dict):
        _fail(source, "protocol", "expected a table")
    _check_keys(source, "protocol.", proto, PROTOCOL_KEYS)
    trials = _int(source, "protocol.trials", proto.get("trials", 8))
    tune_seeds = _seeds(source, "protocol.tune_seeds", proto.get("tune_seeds", vdefaults["tune_seeds"]), 0)
    final_seeds = _seeds(source, "protocol.final_seeds", proto.get("final_seeds", vdefaults["final_seeds"]), 1000)
    eps_trials = _int(source, "protocol.eps_trials", proto.get("eps_trials", 3), minimum=2)
    eps_step = proto.get("eps_step")
    if eps_step is not None:
        if isinstance(eps_step, bool) or not isinstance(eps_step, (int, float)) or not 0 < eps_step < math.inf:
            _fail(source, "protocol.eps_step", f"expected a number of decades > 0, got {eps_step!r}")
        if "eps_trials" in proto:  # the step sets the number of points: one of the two, never one ignored
            _fail(source, "protocol.eps_step", "give eps_step or eps_trials, not both (eps_step sets how many "
                  "points each range gets)")
        eps_step = float(eps_step)
    suite_selection = proto.get("selection_metric")
    if suite_selection is not None and not (isinstance(suite_selection, str) and suite_selection):
        _fail(source, "protocol.selection_metric", f"expected a metric name or \"steps_to_target\", got {suite_selection!r}")
    search_seed = _int(source, "protocol.search_seed", proto.get("search_seed", 0))
    extend = _int(source, "protocol.extend", proto.get("extend", 2))
    smooth = _int(source, "protocol.smooth", proto.get("smooth", 3), minimum=1)
    paper_arms = proto.get("paper_arms", True)
    if not isinstance(paper_arms, bool):
        _fail(source, "protocol.paper_arms", f"expected true or false, got {paper_arms!r}")
    defaults_arm = proto.get("defaults_arm", True)
    if not isinstance(defaults_arm, bool):
        _fail(source, "protocol.defaults_arm", f"expected true or false, got {defaults_arm!r}")
    suite_lr = _range(source, "protocol.lr", proto["lr"]) if "lr" in proto else None
    search = {opt: dict(bench_optimizers.spec(opt).search_space()) for opt in bench_optimizers.names()}
    user_search = proto.get("search", {})
    if not isinstance(user_search, dict):
        _fail(source, "protocol.search", "expected a table of optimizer tables")
    for opt, space in user_search.items():
        key = f"protocol.search.{opt}"
        if opt not in search:
            _fail(source, key, f"unknown optimizer; choose from {', '.join(search)}")
        if not isinstance(space, dict):
            _fail(source, key, "expected a table such as { eps = [1e-10, 1e-6] }")
        for hp, rng in space.items():
            if hp not in search[opt]:
                _fail(source, f"{key}.{hp}", f"not searched for {opt}; searched: {', '.join(search[opt])}")
            search[opt][hp] = _range(source, f"{key}.{hp}", rng)

    variants = _variants(source, proto.get("variants", {}))
    margins = _margins(source, proto.get("margins", {}))

    entries = []
    for table in ("problems", "tasks"):
        value = data.get(table, [])
        if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
            _fail(source, table, "expected an array of tables ([[" + table + "]])")
        entries += [(f"{table}[{i}]", e) for i, e in enumerate(value)]
    if not entries:
        _fail(source, "problems", "the suite names no problem (add a [[problems]] table)")

    instances: list[ProblemInstanceSpec] = []
    seen: dict[str, str] = {}
    for where, entry in entries:
        _check_keys(source, where + ".", entry, ENTRY_KEYS)
        pname = entry.get("name")
        if not isinstance(pname, str):
            _fail(source, f"{where}.name", "expected the name of a registered problem")
        try:
            cls = registry.get_problem_class(pname)
        except ValueError as exc:
            _fail(source, f"{where}.name", str(exc))
        params = entry.get("params", {})
        grid = entry.get("grid", {})
        if not isinstance(params, dict):
            _fail(source, f"{where}.params", "expected a table")
        if not isinstance(grid, dict):
            _fail(source, f"{where}.grid", "expected a table of lists")
        for k, v in grid.items():
            if not isinstance(v, list) or not v:
                _fail(source, f"{where}.grid.{k}", f"expected a non-empty list of values, got {v!r}")
            if k in params:
                _fail(source, f"{where}.grid.{k}", "also given in params")
        if "steps" in entry and "epochs" in entry:
            _fail(source, f"{where}.epochs", "give steps or epochs, not both")
        steps = _int(source, f"{where}.steps", entry["steps"], 1) if "steps" in entry else None
        epochs = _int(source, f"{where}.epochs", entry["epochs"], 1) if "epochs" in entry else None
        eval_every = _int(source, f"{where}.eval_every", entry.get("eval_every", 1 if cls.tier == "A" else 100), 1)
        if "tune_steps" in entry and "tune_epochs" in entry:
            _fail(source, f"{where}.tune_epochs", "give tune_steps or tune_epochs, not both")
        tune_steps = _int(source, f"{where}.tune_steps", entry["tune_steps"], 1) if "tune_steps" in entry else None
        tune_epochs = _int(source, f"{where}.tune_epochs", entry["tune_epochs"], 1) if "tune_epochs" in entry else None
        if (tune_steps is not None or tune_epochs is not None) and steps is None and epochs is None:
            key = "tune_steps" if tune_steps is not None else "tune_epochs"
            _fail(source, f"{where}.{key}", "a tuning budget needs the final budget (`steps` or `epochs`)")
        if tune_epochs is not None and epochs is None:
            _fail(source, f"{where}.tune_epochs", "a tuning budget in epochs needs the final budget in epochs (`epochs`)")
        if (tune_steps is not None and steps is not None and tune_steps > steps) or (
                tune_epochs is not None and tune_epochs > epochs):
            key = "tune_steps" if tune_steps is not None else "tune_epochs"
            _fail(source, f"{where}.{key}", f"the tuning budget ({entry[key]}) exceeds the final budget "
                  f"({steps if tune_steps is not None else epochs})")
        tune_eval_every = (_int(source, f"{where}.tune_eval_every", entry["tune_eval_every"], 1)
                           if "tune_eval_every" in entry else None)
        record_every = _int(source, f"{where}.record_every", entry.get("record_every", 1), 1)
        target = entry.get("target", cls.target)
        if target is not None:
            target = _float(source, f"{where}.target", target, positive=False)
        lr_range = _range(source, f"{where}.lr", entry["lr"]) if "lr" in entry else (suite_lr or tuple(cls.lr_range))
        tune = entry.get("tune", True)
        if not isinstance(tune, bool):
            _fail(source, f"{where}.tune", f"expected true or false, got {tune!r}")
        hparams = entry.get("hparams", {})
        if not isinstance(hparams, dict):
            _fail(source, f"{where}.hparams", "expected a table of optimizer hyperparameters")
        opts = _optimizers(source, f"{where}.optimizers", entry["optimizers"]) if "optimizers" in entry else optimizers
        for opt in opts:
            _check_hparams(source, f"{where}.hparams", opt, hparams)
            for vname, vhp in variants.items():
                _check_hparams(source, f"protocol.variants.{vname}", opt, vhp)
        e_trials = _int(source, f"{where}.trials", entry.get("trials", trials))
        e_tune = _seeds(source, f"{where}.tune_seeds", entry["tune_seeds"], 0) if "tune_seeds" in entry else tune_seeds
        e_final = _seeds(source, f"{where}.final_seeds", entry["final_seeds"], 1000) if "final_seeds" in entry \
            else final_seeds
        if tune and e_trials > 0 and set(e_tune) & set(e_final):
            _fail(source, f"{where}.final_seeds", f"seeds {sorted(set(e_tune) & set(e_final))} are also tuning seeds; "
                  "the final seeds must be disjoint from the tuning seeds (selection would be scored on them)")
        timeout = _float(source, f"{where}.timeout", entry.get("timeout", 0), positive=False)
        if timeout < 0:
            _fail(source, f"{where}.timeout", f"expected seconds >= 0 (0: no limit), got {entry['timeout']!r}")
        paper_only = entry.get("paper_only", [])
        if not (isinstance(paper_only, list) and all(isinstance(v, str) for v in paper_only)):
            _fail(source, f"{where}.paper_only", f"expected a list of optimizer names, got {paper_only!r}")
        for i, v in enumerate(paper_only):
            if v.lower() not in opts:
                _fail(source, f"{where}.paper_only[{i}]", f"{v!r} is not one of this entry's optimizers ({', '.join(opts)})")
            if not bench_optimizers.spec(v.lower()).paper_configs:
                _fail(source, f"{where}.paper_only[{i}]", f"{v!r} declares no paper configuration")
        paper_only = tuple(v.lower() for v in paper_only)
        label = entry.get("label", pname)
        if not isinstance(label, str) or not label:
            _fail(source, f"{where}.label", "expected a non-empty string")
        selection = entry.get("selection_metric", suite_selection)
        key_sel = f"{where}.selection_metric" if "selection_metric" in entry else "protocol.selection_metric"
        if selection is not None and not (isinstance(selection, str) and selection):
            _fail(source, key_sel, f"expected a metric name or \"steps_to_target\", got {selection!r}")
        if selection == "steps_to_target" and target is None:
            _fail(source, key_sel, f"selection on steps to target needs a target: {pname} has none (give `target`)")
        selection = selection or cls.selection_metric
        varying = list(grid)
        for combo in itertools.product(*grid.values()) if grid else [()]:
            full = {**params, **dict(zip(varying, combo))}
            try:
                problem = registry.create_problem(pname, full)
            except (ValueError, TypeError) as exc:
                _fail(source, f"{where}.params", str(exc))
            for opt in opts:
                _check_values(source, where, problem, opt, hparams, lr_range, search.get(opt, {}))
                for vname, vhp in variants.items():
                    _check_values(source, where, problem, opt, {**hparams, **vhp}, lr_range, {},
                                  at=f"protocol.variants.{vname}")
            key = _label(label, full, varying)
            if key in seen:
                _fail(source, where, f"instance {key!r} is also produced by {seen[key]} (give a `label`)")
            seen[key] = where
            instances.append(ProblemInstanceSpec(
                key=key, problem=pname, params=problem.config() or full, tier=cls.tier, steps=steps, epochs=epochs,
                eval_every=eval_every, record_every=record_every, target=target,
                target_metric=cls.target_metric or cls.selection_metric, selection_metric=selection,
                maximize=bool(cls.maximize_metric), lr_range=lr_range, tune=tune and e_trials > 0, hparams=hparams,
                optimizers=opts, trials=e_trials if tune else 0, tune_seeds=e_tune, final_seeds=e_final,
                timeout=timeout, group=label, tune_steps=tune_steps, tune_epochs=tune_epochs,
                tune_eval_every=tune_eval_every, paper_only=paper_only,
            ))
    if variants:
        for inst in instances:
            if inst.target_metric not in margins:
                _fail(source, "protocol.margins", f"no margin for {inst.target_metric!r}, the target metric of "
                      f"{inst.key!r}; the variants are judged against it: add e.g. {inst.target_metric} = "
                      "{ relative = 0.01 } (or { absolute = 0.01 })")
    return Suite(name=name, description=description, optimizers=optimizers, trials=trials, tune_seeds=tune_seeds,
                 final_seeds=final_seeds, search_seed=search_seed, defaults_arm=defaults_arm, search=search,
                 problems=instances, source=source, raw=dict(data), extend=extend, smooth=smooth,
                 paper_arms=paper_arms, variants=variants, margins=margins, eps_trials=eps_trials,
                 eps_step=eps_step)


def _variants(source, value) -> dict[str, dict[str, Any]]:
    """``protocol.variants``: name -> a non-empty table of hyperparameters (names as arm labels: [a-z0-9_]+)."""
    import re

    if not isinstance(value, dict):
        _fail(source, "protocol.variants", 'expected a table such as { int8 = { state_dtype = "int8" } }')
    out = {}
    for vname, hp in value.items():
        key = f"protocol.variants.{vname}"
        if not re.fullmatch(r"[a-z0-9_]+", vname):
            _fail(source, key, "variant names are [a-z0-9_]+ (they label an arm)")
        if not isinstance(hp, dict) or not hp:
            _fail(source, key, 'expected a non-empty table of hyperparameters such as { state_dtype = "int8" }')
        out[vname] = dict(hp)
    return out


def _margins(source, value) -> dict[str, tuple[str, float]]:
    """``protocol.margins``: metric -> { absolute = a } or { relative = r }, a, r > 0."""
    if not isinstance(value, dict):
        _fail(source, "protocol.margins", "expected a table such as { test_accuracy = { absolute = 0.01 } }")
    out = {}
    for metric, m in value.items():
        key = f"protocol.margins.{metric}"
        if not (isinstance(m, dict) and len(m) == 1 and next(iter(m)) in ("absolute", "relative")):
            _fail(source, key, f"expected {{ absolute = a }} or {{ relative = r }}, got {m!r}")
        kind, v = next(iter(m.items()))
        out[metric] = (kind, _float(source, f"{key}.{kind}", v))
    return out


def _check_hparams(source, key, optimizer, hparams):
    valid = bench_optimizers.arguments(optimizer)
    for hp in hparams:
        if hp not in valid:
            _fail(source, f"{key}.{hp}", f"not an argument of {optimizer}; valid: {', '.join(valid)}")


def _check_values(source, where, problem, optimizer, hparams, lr_range, search_space, at=None):
    """Check a suite entry's hyperparameter values with the optimizer's own checks, at load time.

    The optimizer is built on a one-element dummy parameter of the problem's ``parameter_dtype`` with exactly
    what a run would give it (the problem's overrides and ``hparams``, see
    :func:`adamkit.bench.runner.optimizer_kwargs`), and with each end of the learning-rate range and of its
    search ranges; whatever adamkit's registry and the class reject (``lr = -1.0``, ``betas = [0.9]``,
    ``state_dtype = "int8"`` on a float64 problem, ...) is a SuiteError naming the file and the key.
    """
    from .runner import optimizer_kwargs

    dtype = getattr(problem, "parameter_dtype", "float32")

    def rejects(kwargs):
        return _rejection(optimizer, tuple(sorted(kwargs.items(), key=lambda kv: kv[0])), dtype)

    kwargs = optimizer_kwargs(problem, optimizer, hparams)
    error = rejects(kwargs)
    if error is not None:
        culprit = next((k for k in hparams if rejects({k: kwargs[k]}) is not None), None)
        if at is None:  # (``at``: the key of a variant's table, whose values are checked on top of hparams)
            key = f"{where}.hparams.{culprit}" if culprit else f"{where}.hparams"
        else:
            key = f"{at}.{culprit}" if culprit else at
        _fail(source, key, f"{optimizer} rejects it: {error}")
    for name, (low, high), key in [("lr", lr_range, f"{where}.lr"),
                                   *[(hp, rng, f"protocol.search.{optimizer}.{hp}") for hp, rng in search_space.items()]]:
        if name in hparams:
            continue  # fixed by hparams: the range is not used
        for value in (low, high):
            error = rejects({**kwargs, name: value})
            if error is not None:
                _fail(source, key, f"{optimizer} rejects {name} = {value!r}: {error}")


_REJECTIONS: dict[tuple, str | None] = {}


def _rejection(optimizer: str, items: tuple, dtype: str = "float32") -> str | None:
    """Why the optimizer refuses these keyword arguments on a parameter of ``dtype`` (None: it accepts them);
    memoised, suites repeat them."""
    import torch

    key = (optimizer, items, dtype)
    try:
        return _REJECTIONS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable value: not memoised
        key = None
    try:
        bench_optimizers.create(optimizer, [torch.zeros(1, dtype=getattr(torch, dtype), requires_grad=True)],
                                **dict(items))
        found = None
    except (ValueError, TypeError, OverflowError) as exc:
        found = str(exc)
    if key is not None:
        _REJECTIONS[key] = found
    return found
