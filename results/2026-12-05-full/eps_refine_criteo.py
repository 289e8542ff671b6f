"""A supplementary check of the one firm Tier B verdict in this run, AGD *worse* than Adam on the Criteo-shaped FM:
were AGD's δ and Adam's ε searched alike?

The protocol searches each optimizer's ε-like hyperparameter on its own range (Adam's ε over [1e-10, 1e-6], AGD's
δ over [1e-14, 1e-5]) with 3 log-spaced values and extends the grid by one grid step past an edge. One grid step
is 2 decades on Adam's range and 4.5 on AGD's: Adam's search tried ε = 1e-4 (its winner) and 1e-2, while AGD's
went from δ = 1e-5 straight to 0.32. This script gives both the same decade grid at their tuned learning rate,
ε or δ ∈ {1e-5, 1e-4, 1e-3, 1e-2, 1e-1}, on the protocol's tuning seeds with its selection (the mean of the last 3
validation AUCs, step 0 left out), keeps each optimizer's search winner unless a new value beats it, runs a new
winner on the 10 final seeds, and compares the two winners as the judge does (paired t interval, Wilcoxon, the
band ±0.002 AUC; one comparison, so Holm changes nothing; the verdict is ``judge``'s own rule). It is
descriptive, not part of the committed report.

    python results/2026-12-05-full/eps_refine_criteo.py results/2026-12-05-full [--jobs 2]

Its runs go to ``eps_refine_criteo.sqlite`` beside the store (a rerun reuses them): 26 runs of 1 epoch.
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from adamkit import _stats
from adamkit.bench import analysis, judge, protocol, runner
from adamkit.bench.store import ResultStore

INSTANCE = "fm_criteo"
GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
NAMES = {"adam": "eps", "agd": "delta"}
BAND = 0.002  # the claims' band for AUC


def run_all(store: ResultStore, specs: list[dict], jobs: int) -> None:
    """Run every spec whose hash the store does not hold yet, ``jobs`` at a time, and store it."""
    todo = {protocol.run_hash(s): s for s in specs}
    todo = {h: s for h, s in todo.items() if not store.finals([h])}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for h, result in zip(todo, pool.map(runner.execute, todo.values())):
            if result["status"] != "done":
                raise SystemExit(f"run {h[:10]} failed: {result['error'].splitlines()[0]}")
            store.put(h, todo[h], result)
            print(f"  ran {todo[h]['optimizer']} {todo[h]['hparams']} seed {todo[h]['seed']}: "
                  f"val_auc {result['final']['val_auc']:.4f}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    res = analysis.load(args.folder)
    inst = res.instance(INSTANCE)
    store = ResultStore(args.folder / "eps_refine_criteo.sqlite")
    lookup = protocol.Lookup(store.finals(), store.curve, res.suite.smooth)
    winners = {}
    for opt, name in NAMES.items():
        search = res.searches[(inst.key, opt)]
        lr = search.winner_hparams["lr"]
        print(f"{opt}: the search's winner {search.winner_hparams or 'its defaults'} "
              f"(selection score {search.scores[search.winner]:.5f}); {name} grid at lr {lr}")
        tried = {protocol._key(hp): t for t, hp, _ in search.candidates}
        candidates = [{"lr": lr, name: v} for v in GRID if protocol._key({"lr": lr, name: v}) not in tried]
        specs = [protocol.make_spec(inst, opt, hp, seed, tuning=True) for hp in candidates for seed in inst.tune_seeds]
        run_all(store, specs, args.jobs)
        lookup = protocol.Lookup(store.finals(), store.curve, res.suite.smooth)
        best_hp, best = search.winner_hparams, search.scores[search.winner]
        for hp in candidates:
            hashes = [protocol.run_hash(protocol.make_spec(inst, opt, hp, s, tuning=True)) for s in inst.tune_seeds]
            score = float(np.mean([lookup.selection(h, inst) for h in hashes]))
            print(f"  {name} = {hp[name]:g}: selection score {score:.5f}")
            if score < best:
                best_hp, best = hp, score
        winners[opt] = (best_hp, best, best_hp == search.winner_hparams)
        print(f"  winner: {best_hp} ({'the search' if winners[opt][2] else 'new'}, score {best:.5f})")

    finals = {}
    for opt, (hp, _, from_search) in winners.items():
        if from_search:  # the committed tuned arm's final runs
            arm = res.arm(inst.key, opt, "tuned")
            finals[opt] = dict(zip(arm.seeds, (res.finals[h]["test_auc"] for h in arm.hashes)))
        else:
            specs = [protocol.make_spec(inst, opt, hp, s) for s in inst.final_seeds]
            run_all(store, specs, args.jobs)
            got = store.finals([protocol.run_hash(s) for s in specs])
            finals[opt] = {s["seed"]: got[protocol.run_hash(s)]["test_auc"] for s in specs}
    seeds = sorted(set(finals["agd"]) & set(finals["adam"]))
    d = np.array([finals["agd"][s] - finals["adam"][s] for s in seeds])
    # the judge's own decision over a family of one (Holm leaves a single p as it is)
    mean, low, high = _stats.t_interval(d)
    c = judge.Comparison(INSTANCE, "B", n=d.size, mean=mean, median=float(np.median(d)), low=low, high=high,
                         p_wilcoxon=_stats.wilcoxon(d), band=BAND, experiment="paper",
                         p_band=_stats.beyond_band(d, BAND), p_tost=_stats.tost(d, BAND),
                         differences=tuple(float(x) for x in d))
    judge._decide([c], judge.at_stand_in_scale)
    print(f"AGD {winners['agd'][0]} against Adam {winners['adam'][0]} on the {len(seeds)} final seeds, test AUC: "
          f"{mean:+.5f} [{low:.5f}, {high:.5f}], median {c.median:+.5f}, n = {c.n}, Wilcoxon p "
          f"{c.p_wilcoxon:.2g}, beyond the band ±{BAND} p {c.p_band:.2g}, TOST p {c.p_tost:.2g}: {c.verdict}"
          + (f" ({c.note})" if c.note else ""))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
