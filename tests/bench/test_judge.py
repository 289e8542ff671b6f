"""The generic judge: every verdict kind on synthetic stored results where the right verdict is known."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from adamkit import _stats
from adamkit.bench import analysis, judge, protocol, report
from adamkit.bench.claims import Claim, Precondition, Ref, Regime, load_claims
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import parse_suite
from adamkit.bench.sweep import bench_record

SEEDS = 10
#: a regime every synthetic run below is inside (10 steps of a claimed 10)
IN = Regime("test", "m", "d", "10 steps", "h", steps=10, in_regime=1.0)


def _store(tmp_path, value, *, steps=10, seeds=SEEDS, tasks=("fmnist_resnet",), problems=(),
           optimizers=("adam", "adabelief"), stored=lambda run: True, extra=None, paper_arms=True):
    """A stored sweep of fixed-hyperparameter runs whose final metrics are ``value(run)`` (the runs ``stored(run)``
    is false for are not in the store yet: an unfinished sweep); ``extra``: more final metrics of every run."""
    entries = [t if isinstance(t, dict) else {"name": t} for t in tasks]
    suite = parse_suite({"name": "j", "optimizers": list(optimizers),
                         "protocol": {"final_seeds": seeds, "paper_arms": paper_arms},
                         "tasks": [{**({} if "epochs" in e else {"steps": steps}), "tune": False, **e}
                                   for e in entries],
                         "problems": [{"steps": steps, "tune": False, **p} for p in problems]})
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    store.set_meta("bench", json.dumps(bench_record(suite)))
    plan = protocol.plan(suite, protocol.Lookup({}))
    for run in plan.runs:
        if not stored(run):
            continue
        v = value(run)
        final = None if v is None else {"test_accuracy": v, "val_accuracy": v, "theta": v, "gap": abs(v),
                                        "diverged": math.isinf(v), "steps": steps, "budget_steps": steps,
                                        **(extra or {})}
        store.put(run.hash, run.spec, {"status": "done" if final else "failed", "final": final, "curve": None,
                                       "seconds": 0.1, "error": None if final else "boom"})
    store.close()
    return analysis.load(path)


CLAIM = Claim("t", "Paper", "AdaBelief is more accurate", Ref("adabelief", "cnn"), Ref("adam"), ("fmnist_resnet",),
              "test_accuracy", "higher", IN, band=0.005)


def _claim(**changes) -> Claim:
    return dataclasses.replace(CLAIM, **changes)


def _accuracy(effect, noise=0.002, by_instance=None):
    """Paired accuracies: the seed moves both arms alike; adabelief is ``effect`` (per instance: ``by_instance``)
    better, with its own noise."""
    rng = np.random.default_rng(1)
    offsets = {s: float(rng.normal(0, noise)) for s in range(1000, 1100)}

    def value(run):
        base = 0.9 + offsets[run.seed]
        e = (by_instance or {}).get(run.instance, effect)
        return base + (e + offsets[run.seed + 1] * 0.5 if run.optimizer == "adabelief" else 0.0)
    return value


@dataclasses.dataclass
class _Run:  # what _accuracy's value reads of a planned run
    optimizer: str
    seed: int
    instance: str = "fmnist_resnet"


def _one(claim, res) -> judge.Comparison:
    (c,) = judge.judge_claim(claim, res).comparisons
    return c


# ------------------------------------------------------------------------------------------------ firm verdicts


def test_better_when_the_interval_lies_beyond_the_band(tmp_path):
    v = judge.judge_claim(CLAIM, _store(tmp_path, _accuracy(0.02)))
    (c,) = v.comparisons
    assert c.verdict == judge.BETTER and c.row == "tuned" and c.n == SEEDS and c.experiment == "paper"
    assert c.low > c.band == 0.005 and c.mean == pytest.approx(0.02, abs=2e-3) and c.median > 0.01
    assert c.p_wilcoxon == pytest.approx(2 / 1024) and c.p_holm < 0.05 and not c.deterministic
    assert c.collapsed == (0, 0) and c.arms == ("adabelief paper:cnn", "adam fixed")
    # the differences behind the numbers travel with them (the forest plot draws them)
    assert len(c.differences) == c.n and np.mean(c.differences) == pytest.approx(c.mean)
    assert np.median(c.differences) == pytest.approx(c.median)
    res = _store(tmp_path / "again", _accuracy(0.02))
    inst = res.instance("fmnist_resnet")
    a, b = (judge.values_of(res, inst, judge.arm_of(res, inst, r), "test_accuracy", "higher")
            for r in (CLAIM.optimizer, CLAIM.baseline))
    d = np.array([a[s] - b[s] for s in sorted(a)])
    assert (c.mean, c.low, c.high) == pytest.approx(_stats.t_interval(d))  # the paired t interval of a − b
    assert v.tiers == {"B": "better (1 better; 1 of 1 in the paper's regime)"} and v.firm
    assert v.in_regime == (1, 1)
    assert "n = 10" in c.text(CLAIM) and "→ **better**" in c.text(CLAIM) and "band ±0.005" in c.text(CLAIM)


def test_worse_by_more_than_the_band(tmp_path):
    c = _one(CLAIM, _store(tmp_path, _accuracy(-0.02)))
    assert c.verdict == judge.WORSE and c.high < -0.005


def test_equivalent_within_the_band_by_tost(tmp_path):
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.0005, noise=0.001)))
    assert c.verdict == judge.EQUIVALENT and -0.005 < c.low < c.high < 0.005
    assert "TOST" in c.note and c.p_tost < 0.05


def test_an_equivalence_whose_95_interval_reaches_past_the_band_prints_the_90_interval_it_rests_on(tmp_path):
    """TOST at 5 % is the 90 % interval inside the band; the table's 95 % interval may cross the band's edge, so
    the note must show the interval the verdict rests on, or the row reads as a contradiction."""
    seeds = range(1000, 1000 + SEEDS)

    def straddles(noise):  # the synthetic pairs' 90 % interval inside the band, their 95 % one past its edge
        value = _accuracy(0.0005, noise=noise)
        d = [value(_Run("adabelief", s)) - value(_Run("adam", s)) for s in seeds]
        _, low90, high90 = _stats.t_interval(d, 0.90)
        return -0.005 < low90 and high90 < 0.005 < _stats.t_interval(d)[2]
    noise = next((float(x) for x in np.linspace(0.005, 0.03, 251) if straddles(float(x))), None)
    assert noise is not None, "no noise level gives pairs whose 90 and 95 % intervals sit either side of the band"
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.0005, noise=noise)))
    assert c.verdict == judge.EQUIVALENT and c.high > 0.005  # the table's 95 % interval crosses the band's edge
    _, low90, high90 = _stats.t_interval(np.asarray(c.differences), 0.90)
    assert f"its 90 % interval [{judge._num(low90)}, {judge._num(high90)}] lies inside the band ±0.005" in c.note
    assert "TOST, Holm p" in c.note


def test_a_significant_effect_inside_the_band_is_equivalent_not_better(tmp_path):
    """+0.002 with a tight interval above 0: "better than 0", but within the band a claim cares about."""
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.002, noise=0.0004)))
    assert c.low > 0 and c.high < 0.005 and c.verdict == judge.EQUIVALENT


def test_inconclusive_when_the_interval_straddles_the_band(tmp_path):
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.004, noise=0.01)))
    assert c.verdict == judge.INCONCLUSIVE and c.low < 0.005 < c.high
    assert "neither beyond nor inside the band" in c.note


def test_inconclusive_with_fewer_than_ten_pairs_however_large_the_effect(tmp_path):
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.05), seeds=5))
    assert c.verdict == judge.INCONCLUSIVE and c.n == 5 and c.low > 0.005
    assert "n = 5 < 10 pairs" in c.note and c.p_holm is None
    # a failed run drops its pair: 10 seeds with one failure is n = 9
    ok = _accuracy(0.05)
    res = _store(tmp_path / "f", lambda r: None if (r.seed == 1000 and r.optimizer == "adam") else ok(r))
    c = _one(CLAIM, res)
    assert c.n == 9 and c.verdict == judge.INCONCLUSIVE


def test_inconclusive_when_the_t_test_and_the_rank_test_disagree(tmp_path):
    """Nine positive differences and one negative with the largest magnitude: the t test puts the mean above a
    zero band (p 0.031), the signed-rank test does not reject (p 0.084)."""
    diffs = [0.692, 0.567, 1.273, 1.321, 0.898, 0.794, 0.777, 0.861, 1.077, -1.583]
    assert _stats.beyond_band(np.array(diffs), 0.0) < 0.05 < _stats.wilcoxon(np.array(diffs))

    def value(run):
        return 0.5 + (0.01 * diffs[run.seed - 1000] if run.optimizer == "adabelief" else 0.0)
    c = _one(_claim(band=0.0), _store(tmp_path, value))
    assert c.verdict == judge.INCONCLUSIVE and c.p_holm < 0.05 < c.p_wilcoxon
    assert "the rank test does not" in c.note


def test_holm_adjusts_within_the_claims_tier_and_row(tmp_path):
    """Three instances whose own band tests are each significant at 5 % but not after Holm's correction."""
    z = np.array([1.2, -0.8, 0.3, -1.5, 0.9, -0.2, 1.6, -0.6, 0.1, -1.0])
    z = (z - z.mean()) / z.std(ddof=1)
    t_target = _stats.t_quantile(1 - 0.03 / 2, 9)  # a two-sided p of 0.03 at n = 10
    tasks = ("fmnist_resnet", "fmnist_resnet_nodecay", "word_lstm1")
    shift = {"fmnist_resnet": 1.0, "fmnist_resnet_nodecay": 1.02, "word_lstm1": 0.98}

    def value(run):
        s = run.seed - 1000
        d = shift[run.instance] * t_target * 0.01 / math.sqrt(10) + 0.01 * z[s]
        return 0.5 + 0.001 * s + (d if run.optimizer == "adabelief" else 0.0)
    claim = _claim(optimizer=Ref("adabelief"), instances=tasks, band=0.0)  # the main arms (no paper arm there)
    v = judge.judge_claim(claim, _store(tmp_path, value, tasks=tasks))
    rows = {c.instance: c for c in v.comparisons}
    raw = [rows[t].p_band for t in tasks]
    assert all(0.01 < p < 0.05 for p in raw)
    # Holm by hand: the smallest p times 3, the next times 2 (at least the previous), the largest times 1 (idem)
    order = sorted(range(3), key=lambda i: raw[i])
    expected, running = [0.0] * 3, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (3 - k) * raw[i]))
        expected[i] = running
    assert [rows[t].p_holm for t in tasks] == pytest.approx(expected)
    assert all(p > 0.05 for p in expected)
    assert all(rows[t].verdict == judge.INCONCLUSIVE for t in tasks)
    # one instance alone (a family of one) is firm at the same data
    alone = _one(claim, _store(tmp_path / "one", value, tasks=("fmnist_resnet",)))
    assert alone.p_holm == pytest.approx(alone.p_band) and alone.verdict == judge.BETTER


# ------------------------------------------------------------------------------------------------ stand-ins


def test_a_stand_in_experiment_is_only_consistent_or_inconsistent(tmp_path):
    claim = _claim(instances=("fmnist_cnn",))
    better = _one(claim, _store(tmp_path / "b", _accuracy(0.02), tasks=("fmnist_cnn",)))
    assert better.experiment == "stand-in" and better.verdict == judge.CONSISTENT
    assert "better on a stand-in experiment" in better.note
    worse = _one(claim, _store(tmp_path / "w", _accuracy(-0.02), tasks=("fmnist_cnn",)))
    assert worse.verdict == judge.INCONSISTENT
    # a tie: inconsistent with "better", consistent with "as good as"
    tie = _store(tmp_path / "t", _accuracy(0.0005, noise=0.001), tasks=("fmnist_cnn",))
    assert _one(claim, tie).verdict == judge.INCONSISTENT
    assert _one(dataclasses.replace(claim, kind="as good as"), tie).verdict == judge.CONSISTENT
    v = judge.judge_claim(claim, tie)
    assert v.tiers["B"] == f"{judge.INCONSISTENT} (1 {judge.INCONSISTENT}; 0 of 1 in the paper's regime)"
    assert not v.firm and v.in_regime == (0, 1)


def test_synthetic_data_is_a_stand_in_whatever_the_task(tmp_path):
    res = _store(tmp_path, _accuracy(0.02), tasks=({"name": "fmnist_resnet", "params": {"synthetic": True}},))
    c = _one(CLAIM, res)
    assert c.experiment == "stand-in" and c.verdict == judge.CONSISTENT and "synthetic data" in c.note


def test_a_stand_in_below_the_claims_stand_in_minimum_is_outside(tmp_path):
    claim = _claim(instances=("fmnist_cnn",), regime=dataclasses.replace(IN, stand_in_steps=1000))
    c = _one(claim, _store(tmp_path, _accuracy(0.02), tasks=("fmnist_cnn",)))
    assert c.verdict == judge.OUTSIDE and "10 steps < the claim's stand-in minimum of 1000 steps" in c.note


# ------------------------------------------------------------------------------------------------ the regime


def test_outside_the_papers_regime_with_the_fraction_and_the_numbers_kept(tmp_path):
    claim = _claim(regime=Regime("PAPERS.md", "m", "d", "b", "h", steps=1000, in_regime=0.25))
    v = judge.judge_claim(claim, _store(tmp_path, _accuracy(0.02)))
    (c,) = v.comparisons
    assert c.verdict == judge.OUTSIDE and c.budget_fraction == pytest.approx(0.01) and c.low > 0
    assert "budget 10 steps = 1.00% of the paper's 1000 steps, below the 25%" in c.note
    assert v.tiers["B"].startswith(judge.OUTSIDE) and not v.firm and v.in_regime == (0, 1)


def test_steps_are_never_compared_with_epochs_as_zero_epochs(tmp_path):
    """A budget in steps meets a regime in epochs through the runs' steps per epoch: 2,000 steps at 36 steps per
    epoch is 55.6 epochs, in the regime of a 200-epoch paper at 25 %; without it the judge says it cannot tell."""
    claim = _claim(regime=Regime("PAPERS.md", "m", "d", "b", "h", epochs=200, in_regime=0.25))
    c = _one(claim, _store(tmp_path / "a", _accuracy(0.02), steps=2000, extra={"steps_per_epoch": 36}))
    assert c.in_regime and c.budget_fraction == pytest.approx(2000 / 36 / 200) and c.verdict == judge.BETTER
    c = _one(claim, _store(tmp_path / "b", _accuracy(0.02), steps=2000))
    assert c.verdict == judge.OUTSIDE and c.in_regime is False and c.budget_fraction is None
    assert "the runs record no steps per epoch, so it cannot be compared with the paper's 200 epochs" in c.note
    assert c.note.startswith("budget 2000 steps: ")  # not "0 epochs"
    # a budget in epochs meets a regime in steps through the runs' budget_steps
    steps_claim = _claim(regime=Regime("PAPERS.md", "m", "d", "b", "h", steps=40, in_regime=1.0))
    res = _store(tmp_path / "c", _accuracy(0.02), tasks=({"name": "fmnist_resnet", "epochs": 1},))
    assert res.instance("fmnist_resnet").epochs == 1
    assert judge.budget_of(res.instance("fmnist_resnet"), res) == judge.Budget(10.0, 1.0)  # budget_steps: 10
    assert _one(steps_claim, res).verdict == judge.OUTSIDE


def test_an_unknown_paper_budget_is_never_in_regime(tmp_path):
    claim = _claim(regime=Regime("PAPERS.md", "m", "d", "not in PAPERS.md", "h"))
    c = _one(claim, _store(tmp_path, _accuracy(0.02)))
    assert c.verdict == judge.OUTSIDE and "the paper's budget is not known" in c.note


# ------------------------------------------------------------------------------------------------ preconditions


def test_precondition_not_met_when_the_baseline_does_not_fail(tmp_path):
    claim = _claim(precondition=Precondition("baseline", "test_accuracy", max=0.5, text="the baseline collapses"))
    c = _one(claim, _store(tmp_path, _accuracy(0.02)))
    assert c.verdict == judge.PRECONDITION
    assert "the claim presumes that the baseline collapses; 0 of 10 runs of the baseline" in c.note
    met = _claim(precondition=Precondition("baseline", "test_accuracy", min=0.5, text="the baseline trains"))
    assert _one(met, _store(tmp_path / "m", _accuracy(0.02))).verdict == judge.BETTER
    v = judge.judge_claim(claim, _store(tmp_path / "v", _accuracy(0.02)))
    assert v.tiers["B"].startswith(judge.PRECONDITION) and not v.firm


def test_not_measured_when_the_suite_runs_no_paper_arms(tmp_path):
    """A claim whose arm the suite never runs is not measured (named once under the report's table), not a row."""
    c = _one(CLAIM, _store(tmp_path, _accuracy(0.02), paper_arms=False))
    assert c.verdict == judge.NOT_MEASURED and "the suite runs no paper arms" in c.note


def test_an_untuned_paper_arm_does_not_stand_for_the_tuned_one(tmp_path):
    """A tuned instance whose paper arm has no search of its own (a store made before the paper arms were tuned):
    the primary row, tuned against tuned, cannot be formed."""
    res = _store(tmp_path, _accuracy(0.02))
    inst = res.instance("fmnist_resnet")
    res.suite.problems[0] = dataclasses.replace(inst, tune=True)
    for key in [k for k in res.arms if k[2] == "fixed"]:
        res.arms[(key[0], key[1], "tuned")] = res.arms.pop(key)
    c = _one(CLAIM, res)
    assert c.verdict == judge.PRECONDITION and "paper:cnn was not tuned as an optimizer of its own" in c.note
    res.searches[("fmnist_resnet", "adabelief@cnn")] = object()  # its own search: tuned against tuned
    assert _one(CLAIM, res).verdict == judge.BETTER


def test_the_paper_lr_arm_is_a_second_row_with_its_own_holm_family(tmp_path):
    res = _store(tmp_path, _accuracy(0.02))
    tuned = res.arm("fmnist_resnet", "adabelief", "paper:cnn")
    base = res.arm("fmnist_resnet", "adam", "fixed")
    # the paper-lr arm: runs equal to the baseline's, so it ties
    res.arms[("fmnist_resnet", "adabelief", "paper-lr:cnn")] = dataclasses.replace(
        tuned, arm="paper-lr:cnn", hashes=list(base.hashes))
    v = judge.judge_claim(CLAIM, res)
    assert [(c.row, c.verdict) for c in v.comparisons] == [("tuned", judge.BETTER), ("paper-lr", judge.EQUIVALENT)]
    lr_row = v.comparisons[1]
    # the same difference (0) on every pair: no sampling variation, so no (zero-width) interval
    assert not lr_row.deterministic and lr_row.n == 10 and lr_row.low is None and lr_row.mean == 0.0
    assert "the same difference on every pair" in lr_row.note
    assert v.tiers == {"B": "better (1 better; 1 of 1 in the paper's regime)"}  # the primary row only
    assert lr_row.text(CLAIM).startswith("fmnist_resnet (paper-lr): ")


# ------------------------------------------------------------------------------------------------ deterministic


def test_a_deterministic_problem_counts_once_and_prints_no_interval(tmp_path):
    """Reddi's problem: identical θ on every seed. n = 1, no interval; the exact difference against the band."""
    claim = next(c for c in load_claims() if c.id == "reddi_counterexample")
    theta = {"adam": 1.0, "amsgrad": -0.94}
    res = _store(tmp_path, lambda r: theta[r.optimizer], tasks=(), optimizers=("adam", "amsgrad"),
                 problems=({"name": "reddi_counterexample", "params": {"beta2": 0.1}},), steps=100_000)
    v = judge.judge_claim(claim, res)
    (c,) = v.comparisons
    assert c.deterministic and c.n == 1 and c.low is None and c.high is None and c.p_holm is None
    assert c.mean == pytest.approx(1.94) and c.verdict == judge.BETTER and c.experiment == "paper"
    assert "deterministic: one run per arm, n = 1, no interval" in c.text(claim)
    assert "[" not in c.text(claim).split("→")[0]  # no interval printed
    # the same with one seed (a deterministic problem runs once): declared by its class
    one = _store(tmp_path / "1", lambda r: theta[r.optimizer], tasks=(), optimizers=("adam", "amsgrad"), seeds=1,
                 problems=({"name": "reddi_counterexample", "params": {"beta2": 0.1}},), steps=100_000)
    c1 = _one(claim, one)
    assert c1.deterministic and c1.n == 1 and c1.verdict == judge.BETTER
    # Adam does not fail (large β2): the counterexample's precondition is not met
    calm = _store(tmp_path / "c", lambda r: -0.99 if r.optimizer == "adam" else -0.98, tasks=(),
                  optimizers=("adam", "amsgrad"),
                  problems=({"name": "reddi_counterexample", "params": {"beta2": 0.999}},), steps=100_000)
    c2 = _one(claim, calm)
    assert c2.verdict == judge.PRECONDITION and "Adam ends on the wrong side" in c2.note
    # below the claim's 10^5 steps: outside the regime
    short = _store(tmp_path / "s", lambda r: theta[r.optimizer], tasks=(), optimizers=("adam", "amsgrad"),
                   problems=({"name": "reddi_counterexample", "params": {"beta2": 0.1}},), steps=1500)
    assert _one(claim, short).verdict == judge.OUTSIDE


def test_identical_values_on_every_seed_of_a_random_problem_are_said_so_not_called_deterministic(tmp_path):
    """Every seed of each arm ends alike (both at a cap, say) on a problem that is not deterministic: the exact
    difference against the band, with its n and no interval, and the text says why rather than "deterministic"."""
    c = _one(CLAIM, _store(tmp_path, lambda r: 0.91 if r.optimizer == "adabelief" else 0.9))
    assert not c.deterministic and c.n == SEEDS and c.low is None and c.high is None and c.p_holm is None
    assert c.mean == pytest.approx(0.01) and c.verdict == judge.BETTER
    assert c.differences == pytest.approx((0.01,) * SEEDS)
    assert f"every run of each arm gives the same value (0.91 against 0.9) on all {SEEDS} pairs" in c.note
    text = c.text(CLAIM)
    assert "deterministic" not in text and f"n = {SEEDS}" in text and "[" not in text.split("→")[0]
    shown = report.shown(CLAIM, c)
    assert not shown.deterministic and report.effect_text(shown) == f"+0.01, n = {SEEDS} (no interval)"
    c = _one(CLAIM, _store(tmp_path / "e", lambda r: 0.902 if r.optimizer == "adabelief" else 0.9))
    assert c.verdict == judge.EQUIVALENT  # 0.002 is inside the band


# ------------------------------------------------------------------------------------------------ the rest


def test_collapsed_and_diverged_runs_are_counted_per_arm(tmp_path):
    ok = _accuracy(0.02)

    def value(run):
        if run.optimizer == "adam" and run.seed == 1003:
            return 0.1  # a collapse: 0.8 below the arm's median, far beyond 10 bands
        if run.optimizer == "adabelief" and run.seed == 1004:
            return -math.inf  # diverged
        return ok(run)
    c = _one(CLAIM, _store(tmp_path, value))
    assert c.collapsed == (1, 1) and "collapsed 1 / 1" in c.text(CLAIM)
    assert c.median > 0.01  # the median difference resists the two outliers


def test_not_measured_without_the_arms_or_the_instances(tmp_path):
    res = _store(tmp_path, _accuracy(0.01), optimizers=("adam",))
    c = _one(CLAIM, res)
    assert c.verdict == judge.NOT_MEASURED and "adabelief@cnn" in c.note and not c.pending  # never planned
    other = _claim(instances=("char_lstm1",))
    v = judge.judge_claim(other, res)
    assert v.comparisons == [] and v.tiers == {}
    unfinished = _store(tmp_path / "u", _accuracy(0.01), tasks=({"name": "fmnist_resnet", "tune": True},),
                        stored=lambda run: False)
    tuned, paper_lr = judge.judge_claim(CLAIM, unfinished).comparisons  # the configuration gives a rate: two rows
    assert (tuned.row, paper_lr.row) == ("tuned", "paper-lr")
    assert tuned.verdict == judge.NOT_MEASURED and tuned.note == "no finished adabelief@cnn and no finished adam arm yet"
    assert paper_lr.verdict == judge.NOT_MEASURED and paper_lr.note == "no finished adam arm yet"
    assert tuned.pending and paper_lr.pending  # planned by the suite, not stored yet
    # fixed-hyperparameter arms planned, none of their runs stored: pending; every run failed: not pending
    planned = _one(CLAIM, _store(tmp_path / "p", _accuracy(0.01), stored=lambda run: False))
    assert planned.verdict == judge.NOT_MEASURED and planned.note == "no paired finished runs" and planned.pending
    failed = _one(CLAIM, _store(tmp_path / "f", lambda run: None))
    assert failed.verdict == judge.NOT_MEASURED and failed.note == "no paired finished runs" and not failed.pending


def test_a_diverged_run_is_the_worst_value_and_two_infinities_tie():
    d = judge.paired_differences({0: 0.9, 1: -math.inf, 2: -math.inf}, {0: 0.8, 1: 0.85, 2: -math.inf}, "higher")
    assert list(d) == pytest.approx([0.1, 0.8 - 0.85, 0.0])  # -inf -> the worst finite value seen (0.8)
    d = judge.paired_differences({0: 5.0, 1: math.inf}, {0: 7.0, 1: 3.0}, "lower", cap=100.0)
    assert list(d) == [2.0, 3.0 - 100.0]
    assert judge.paired_differences({0: math.nan}, {0: 1.0}, "lower").size == 0


def test_tiers_are_aggregated_separately_and_never_pooled():
    assert judge.aggregate([judge.BETTER, judge.BETTER], 2) == "better (2 better; 2 of 2 in the paper's regime)"
    assert judge.aggregate([judge.BETTER, judge.WORSE]).startswith("mixed")
    assert judge.aggregate([judge.CONSISTENT, judge.INCONSISTENT]).startswith("mixed")
    assert judge.aggregate([judge.BETTER, judge.INCONCLUSIVE]).startswith("inconclusive")
    assert judge.aggregate([judge.BETTER, judge.OUTSIDE]) == "better (1 better, 1 outside the claim's regime)"
    assert judge.aggregate([judge.OUTSIDE, judge.PRECONDITION]).startswith(judge.OUTSIDE)
    assert judge.aggregate([judge.PRECONDITION, judge.NOT_MEASURED]).startswith(judge.PRECONDITION)
    assert judge.aggregate([judge.NOT_MEASURED]) == judge.NOT_MEASURED


def test_every_verdict_kind_is_a_documented_string():
    assert set(judge.VERDICTS) == {"better", "equivalent", "worse", "inconclusive", "consistent at stand-in scale",
                                   "inconsistent at stand-in scale", "precondition not met",
                                   "outside the claim's regime", "not measured"}
    fields = {f.name for f in dataclasses.fields(judge.Comparison)}
    assert {"instance", "tier", "row", "verdict", "n", "mean", "median", "low", "high", "p_wilcoxon", "p_holm",
            "band", "collapsed", "deterministic", "note"} <= fields
    assert {f.name for f in dataclasses.fields(judge.Verdict)} == {"claim", "comparisons", "tiers"}


def test_the_report_prints_every_verdict_with_effect_interval_and_n(tmp_path):
    _store(tmp_path, _accuracy(0.02))
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=None) / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| AdaBelief") and "Image classification" in line)
    # the shipped image claim: the ResNet is the papers' kind, but 10 steps are far outside 200 epochs
    assert "fmnist_resnet: +0.02" in row and "n = 10" in row and "outside the claim's regime" in row
    assert "Benchmark version" in md


def test_profiles_use_only_instances_every_optimizer_ran_and_right_ratios_for_maximised_metrics(tmp_path):
    def value(run):
        return {"adam": 0.90, "adabelief": 0.88}[run.optimizer] if run.instance == "fmnist_cnn" else 0.5
    res = _store(tmp_path, value, tasks=("fmnist_cnn", {"name": "fmnist_mlp", "optimizers": ["adam"]}))
    keys, ratios = analysis.profile_ratios(res, "final", "B")
    assert keys == ["fmnist_cnn"]  # fmnist_mlp: adabelief did not run it; it is no loss of adabelief's
    assert ratios["adam"][0] == 1.0 and ratios["adabelief"][0] == pytest.approx(1 + 0.02 / 0.9)
    assert analysis.algoperf_score(ratios["adam"]) == pytest.approx(1.0)
    assert 0.9 < analysis.algoperf_score(ratios["adabelief"]) < 1.0


def test_chains_of_one_run_are_paired_chain_by_chain(tmp_path):
    """A counterexample run of n chains gives each chain's values; the judge pairs chain i of the claimed
    optimizer with chain i of the baseline (the same seed gives both the same gradient streams): one run each
    gives n pairs, and the comparison says that n counts chains."""
    from adamkit.bench.executors import LocalExecutor
    from adamkit.bench.sweep import run_sweep

    suite = parse_suite({"name": "chains", "optimizers": ["adam", "adopt"], "protocol": {"final_seeds": [1000]},
                         "problems": [{"name": "adopt_counterexample", "label": "adopt_counterexample_long",
                                       "params": {"k": 10, "beta2": 0.1, "schedule": "constant", "chains": 6},
                                       "steps": 3000, "eval_every": 1000, "tune": False,
                                       "hparams": {"lr": 0.01}}]})
    store = ResultStore(tmp_path / "r.sqlite")
    run_sweep(suite, store, LocalExecutor(1))
    store.close()
    res = analysis.load(tmp_path / "r.sqlite")
    finals = [f for f in res.finals.values() if f]
    assert finals and all(len(f["theta_avg_chains"]) == 6 and
                          f["theta_avg"] == pytest.approx(np.mean(f["theta_avg_chains"])) for f in finals)
    claim = next(c for c in load_claims() if c.id == "adopt_counterexample")
    comp = judge.judge_claim(claim, res).comparisons[0]
    assert comp.n == 6 and "chains" in comp.note
    assert comp.verdict in (judge.OUTSIDE, judge.PRECONDITION)  # 3,000 steps < the claim's 10^6
    inst = res.instance("adopt_counterexample_long")
    a = judge.values_of(res, inst, judge.arm_of(res, inst, claim.optimizer), "theta_avg", "lower")
    assert sorted(a) == [(1000, i) for i in range(6)]


# ------------------------------------------------------------------------------- the practitioner's question


def _adam_agd_adabelief(run):
    """adabelief (each of its arms) 0.02 better than adam with its own noise; agd exactly adam: 0 on every seed."""
    base = _accuracy(0.02)(run)
    return base if run.optimizer != "agd" else _accuracy(0.02)(dataclasses.replace(run, optimizer="adam"))


def test_every_tuned_alternative_is_compared_with_adam_on_the_tasks_metric(tmp_path):
    res = _store(tmp_path, _adam_agd_adabelief, optimizers=("adam", "adabelief", "agd"),
                 problems=({"name": "beale"},))
    compared = judge.against_reference(res)
    assert list(compared) == ["fmnist_resnet"]  # Tier B only: the Tier A problem is not a practitioner's task
    rows = dict(compared["fmnist_resnet"])
    # the main arms of every other optimizer, then the paper configurations the claims run on this task
    assert list(rows)[:2] == ["adabelief", "adabelief@cnn"] and "agd" in rows and "adam" not in rows
    assert all(c.arms[1] == "adam fixed" and c.band == 0.005 and c.experiment == "paper" for c in rows.values())
    better = rows["adabelief"]
    inst = res.instance("fmnist_resnet")
    a, b = (judge.values_of(res, inst, res.arm("fmnist_resnet", o, "fixed"), "test_accuracy", "higher")
            for o in ("adabelief", "adam"))
    d = np.array([a[s] - b[s] for s in sorted(a)])
    assert (better.mean, better.low, better.high) == pytest.approx(_stats.t_interval(d)) and better.n == SEEDS
    assert better.verdict == judge.BETTER
    # Holm over the task's alternatives: the adjusted p is at least the raw one, and at least twice the smallest
    tested = [c for c in rows.values() if c.p_band is not None]
    assert len(tested) >= 2 and all(c.p_holm >= c.p_band for c in tested)
    assert min(c.p_holm for c in tested) == pytest.approx(min(1.0, len(tested) * min(c.p_band for c in tested)))
    # agd ties adam on every seed: no interval, and equal within the band
    assert rows["agd"].verdict == judge.EQUIVALENT and rows["agd"].low is None and rows["agd"].mean == 0.0


def test_the_practitioners_verdicts_need_ten_pairs_and_say_stand_in(tmp_path):
    few = judge.against_reference(_store(tmp_path / "few", _accuracy(0.02), seeds=5))
    assert dict(few["fmnist_resnet"])["adabelief"].verdict == judge.INCONCLUSIVE
    stand_in = judge.against_reference(_store(tmp_path / "s", _accuracy(0.02), tasks=("fmnist_cnn",)))
    c = dict(stand_in["fmnist_cnn"])["adabelief"]
    assert c.experiment == "stand-in" and c.verdict == "better at stand-in scale"
    assert judge.at_stand_in_scale(judge.INCONCLUSIVE, "stand-in") == judge.INCONCLUSIVE


def test_a_paper_arm_run_at_another_configurations_rate_is_no_alternative(tmp_path):
    res = _store(tmp_path, _accuracy(0.02))
    inst = res.instance("fmnist_resnet")
    assert "adabelief@cnn" in dict(judge.alternatives(res, inst, "adam"))  # untuned task: its fixed hparams
    tuned = dataclasses.replace(inst, tune=True)  # a tuned task whose store has no search of adabelief@cnn
    assert "adabelief@cnn" not in dict(judge.alternatives(res, tuned, "adam"))
    res.searches[("fmnist_resnet", "adabelief@cnn")] = object()  # its own search: tuned like its rivals
    assert "adabelief@cnn" in dict(judge.alternatives(res, tuned, "adam"))
