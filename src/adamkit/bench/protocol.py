"""The tuning protocol: the same budget for every optimizer, selection on a validation metric, paired re-runs.

For every problem instance of a suite and every optimizer:

1. **Tuning.** ``trials`` configurations from a log-uniform random search over the learning rate
   (the problem's range, the same for every optimizer) and over ε/δ on *each optimizer's own scale*
   (:data:`SEARCH_SPACES`). The search is a Latin hypercube on [0, 1]^2 drawn once per problem
   instance from ``search_seed`` and mapped into each optimizer's ranges, so trial *i* of every
   optimizer sits at the same quantiles of its ranges: no optimizer gets luckier draws.
   Every trial runs on the same ``tune_seeds``.
2. **The paper-defaults arm.** The optimizer's own defaults (lr 1e-3 and all), on the tuning seeds
   too, as one more candidate of the selection (so every optimizer has ``trials + 1`` candidates),
   and on the final seeds, reported as its own arm.
3. **Selection** on the problem's validation metric (``selection_metric``), the mean over the tuning
   seeds of its final value; a failed, diverged or non-finite run counts as the worst value.
   Ties go to the earlier candidate.
4. **Final runs.** The winner re-runs on the ``final_seeds``, the same seeds for every optimizer
   (paired): results as median and spread, paired win rates, steps-to-target, performance profiles.

A problem with ``tune = false`` runs only its fixed hyperparameters (``hparams``) on the final seeds.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

import adamkit

from .suite import ProblemInstanceSpec, Suite

#: bump when the meaning of a stored run changes (part of every run's hash)
RUN_FORMAT = 1

#: ε/δ search ranges, each on its optimizer's own scale (the default sits inside the range)
SEARCH_SPACES: dict[str, dict[str, tuple[float, float]]] = {
    "adam": {"eps": (1e-10, 1e-6)},
    "adamw": {"eps": (1e-10, 1e-6)},
    "amsgrad": {"eps": (1e-10, 1e-6)},
    "eadam": {"eps": (1e-10, 1e-6)},       # ε is accumulated in v: ≈ 1000 ε is added to v̂
    "adabelief": {"eps": (1e-16, 1e-8)},   # the authors: 1e-16 (CNNs) .. 1e-8 (GAN, LSTM)
    "adopt": {"eps": (1e-8, 1e-4)},        # a floor on sqrt(v); default 1e-6
    "agd": {"delta": (1e-14, 1e-5)},       # the authors: 1e-5 (default) .. 1e-14 (transformers)
}

ARMS = ("tune", "defaults", "tuned", "fixed")


@dataclass(frozen=True)
class PlannedRun:
    """A run of the sweep: its full configuration (``spec``, hashed) and its place in the protocol."""

    spec: dict[str, Any]
    hash: str
    instance: str  # ProblemInstanceSpec.key
    optimizer: str
    arm: str  # "tune" (trial), "defaults", "tuned" (winner on final seeds), "fixed" (tune = false)
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


def make_spec(inst: ProblemInstanceSpec, optimizer: str, hparams: dict[str, Any], seed: int) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "problem": inst.problem,
        "params": inst.params,
        "optimizer": optimizer,
        "hparams": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(hparams.items())},
        "seed": int(seed),
        "steps": inst.steps,
        "epochs": inst.epochs,
        "eval_every": inst.eval_every,
        "record_every": inst.record_every,
        "timeout": inst.timeout,
        "adamkit": adamkit.__version__,
    }


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def unit_samples(suite: Suite, inst: ProblemInstanceSpec, n: int, dims: int = 2) -> np.ndarray:
    """A Latin hypercube of ``n`` points in [0, 1]^dims, fixed by the suite's search seed and the instance."""
    digest = hashlib.sha256(f"{suite.search_seed}|{inst.key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    out = np.empty((n, dims))
    for d in range(dims):
        out[:, d] = (rng.permutation(n) + rng.random(n)) / max(n, 1)
    return out


def _log_map(u: float, low: float, high: float) -> float:
    return _round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


def trial_hparams(suite: Suite, inst: ProblemInstanceSpec, optimizer: str) -> list[dict[str, Any]]:
    """The ``inst.trials`` searched configurations of ``optimizer`` (hyperparameters fixed by the suite win)."""
    space = {"lr": inst.lr_range, **suite.search.get(optimizer, {})}
    space = {k: v for k, v in space.items() if k not in inst.hparams}
    u = unit_samples(suite, inst, inst.trials, dims=2)
    trials = []
    for i in range(inst.trials):
        hp = {}
        for d, (name, (low, high)) in enumerate(space.items()):
            hp[name] = _log_map(u[i, min(d, 1)], low, high)
        trials.append({**inst.hparams, **hp})
    return trials


def plan_first_phase(suite: Suite) -> list[PlannedRun]:
    """Tuning trials and the defaults arm (they need no selection), in a deterministic order."""
    runs = []
    for inst in suite.problems:
        for opt in inst.optimizers:
            if not inst.tune:
                for seed in inst.final_seeds:
                    runs.append(_planned(inst, opt, dict(inst.hparams), seed, "fixed", -1))
                continue
            for i, hp in enumerate(trial_hparams(suite, inst, opt)):
                for seed in inst.tune_seeds:
                    runs.append(_planned(inst, opt, hp, seed, "tune", i))
            if suite.defaults_arm:
                for seed in inst.tune_seeds:
                    runs.append(_planned(inst, opt, dict(inst.hparams), seed, "tune", -1))
                for seed in inst.final_seeds:
                    runs.append(_planned(inst, opt, dict(inst.hparams), seed, "defaults", -1))
    return runs


def _planned(inst, opt, hp, seed, arm, trial) -> PlannedRun:
    spec = make_spec(inst, opt, hp, seed)
    return PlannedRun(spec=spec, hash=run_hash(spec), instance=inst.key, optimizer=opt, arm=arm, trial=trial, seed=seed)


def score(final: dict[str, Any] | None, metric: str, maximize: bool) -> float:
    """The selection score of one finished run (smaller is better); failures score +inf."""
    if not final or final.get("diverged"):
        return math.inf
    value = final.get(metric)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.inf
    return -value if maximize else value


def select(suite: Suite, finals: dict[str, dict[str, Any] | None]) -> dict[tuple[str, str], dict[str, Any]]:
    """The winning hyperparameters per (instance key, optimizer), from the stored final metrics by run hash.

    Returns {(instance, optimizer): {"hparams": ..., "trial": i, "score": s, "complete": bool}}; ``complete``
    is False when some tuning run has no stored result yet (the selection is then provisional).
    """
    by_candidate: dict[tuple[str, str, int], list[PlannedRun]] = {}
    hparams: dict[tuple[str, str, int], dict[str, Any]] = {}
    for run in plan_first_phase(suite):
        if run.arm == "tune":
            key = (run.instance, run.optimizer, run.trial)
            by_candidate.setdefault(key, []).append(run)
            hparams[key] = run.spec["hparams"]
    insts = {i.key: i for i in suite.problems}
    winners: dict[tuple[str, str], dict[str, Any]] = {}
    for (ikey, opt, trial), runs in sorted(by_candidate.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] >= 0, kv[0][2])):
        inst = insts[ikey]
        complete = all(r.hash in finals for r in runs)
        scores = [score(finals.get(r.hash), inst.selection_metric, inst.maximize) for r in runs]
        s = float(np.mean(scores)) if scores else math.inf
        best = winners.get((ikey, opt))
        if best is None or s < best["score"]:
            winners[(ikey, opt)] = {"hparams": hparams[(ikey, opt, trial)], "trial": trial, "score": s,
                                    "complete": complete and (best is None or best["complete"])}
        else:
            best["complete"] = best["complete"] and complete
    return winners


def plan_final_phase(suite: Suite, winners: dict[tuple[str, str], dict[str, Any]]) -> list[PlannedRun]:
    """The winners re-run on the paired final seeds."""
    runs = []
    for inst in suite.problems:
        if not inst.tune:
            continue
        for opt in inst.optimizers:
            win = winners[(inst.key, opt)]
            for seed in inst.final_seeds:
                runs.append(_planned(inst, opt, dict(win["hparams"]), seed, "tuned", win["trial"]))
    return runs


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
