"""A small synthetic results store for the report's tests: Tier B task runs with evaluation and training curves
whose shapes (and so whose times to target) are known, and judge comparisons built directly in the interface
the report renders (``Comparison``: instance, tier, row, verdict, n, mean, median, low, high, p_wilcoxon, p_holm,
band, collapsed, deterministic, note; ``Verdict``: claim, comparisons, tiers)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from adamkit.bench import analysis, protocol
from adamkit.bench.claims import Claim, Ref
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import parse_suite
from adamkit.bench.sweep import bench_record

STEPS = 10
EVAL = 2  # evaluations at steps 0, 2, ..., 10
START = 0.1  # the untrained model's accuracy
#: each optimizer's final accuracy before the seed's offset, and the fraction of the budget at which its curve
#: gets there (it rises linearly from START until then, and stays)
FINAL = {"adam": 0.90, "agd": 0.91, "adabelief": 0.895}
RISE = {"adam": 1.0, "agd": 0.5, "adabelief": 1.0}
SEEDS = 5


def offset(seed: int) -> float:
    """The seed's offset, the same for every optimizer (a paired design): distinct, small, known."""
    return 0.001 * ((seed * 7) % 5 - 2)


def accuracy_curve(optimizer: str, seed: int) -> tuple[list[int], list[float]]:
    final = FINAL[optimizer] + offset(seed)
    steps = list(range(0, STEPS + 1, EVAL))
    values = [START + (final - START) * min(1.0, s / (RISE[optimizer] * STEPS)) for s in steps]
    return steps, values


def make_store(path, tasks=("fmnist_cnn", "fmnist_mlp"), optimizers=("adam", "agd", "adabelief"), losses=False):
    """``losses``: the final metrics also hold a test loss and a training loss (the image classifiers' pair):
    the test loss 0.40 + 0.01 · (seed mod 3) + 0.1 for AGD, the training loss 0.25."""
    suite = parse_suite({"name": "rep", "description": "a synthetic store for the report's tests",
                         "optimizers": list(optimizers), "protocol": {"final_seeds": SEEDS},
                         "tasks": [{"name": t, "steps": STEPS, "eval_every": EVAL, "tune": False} for t in tasks]})
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    store.set_meta("bench", json.dumps(bench_record(suite)))
    for run in protocol.plan(suite, protocol.Lookup({})).runs:
        steps, values = accuracy_curve(run.optimizer, run.seed)
        final = {"test_accuracy": values[-1], "val_accuracy": values[-1], "diverged": False, "steps": STEPS,
                 "budget_steps": STEPS}
        if losses:
            final.update(test_loss=0.40 + 0.01 * (run.seed % 3) + (0.1 if run.optimizer == "agd" else 0.0),
                         train_loss=0.25)
        curve = {"eval_step": steps, "eval:test_accuracy": values, "eval:val_accuracy": values,
                 "train_step": list(range(STEPS + 1)), "loss": [2.0 / (1 + s) + 0.01 * (run.seed % 3) for s in
                                                                range(STEPS + 1)]}
        store.put(run.hash, run.spec, {"status": "done", "final": final, "curve": curve, "seconds": 0.5,
                                       "error": None})
    store.close()
    return path


@dataclass
class Comparison:
    """The judge's comparison as judge22's interface gives it."""

    instance: str
    tier: str
    row: str
    verdict: str
    n: int = 0
    mean: float = math.nan
    median: float | None = None
    low: float | None = None
    high: float | None = None
    p_wilcoxon: float | None = None
    p_holm: float | None = None
    band: float | None = None
    collapsed: tuple = (0, 0)
    deterministic: bool = False
    note: str = ""
    pending: bool = False


@dataclass
class Verdict:
    claim: Claim
    comparisons: list = field(default_factory=list)
    tiers: dict = field(default_factory=dict)


def claim(cid="agd_image", optimizer="agd", baseline="adam", instances=("fmnist_cnn", "fmnist_mlp"),
          metric="test_accuracy", margin=0.0):
    name, _, arm = optimizer.partition("@")
    return Claim(cid, "Paper", f"claim {cid}", Ref(name, arm or None), Ref(baseline), tuple(instances), metric,
                 "higher", {}, margin)


def paired(res, instance, a, b) -> np.ndarray:
    """The paired differences a − b of two optimizers' main arms on an instance (as a judge would form them)."""
    inst = res.instance(instance)
    x, y = res.arm(instance, a, res.main_arm(inst)), res.arm(instance, b, res.main_arm(inst))
    return np.array(x.values) - np.array(y.values)


def load(path):
    return analysis.load(path)
