"""The generic judge: every verdict rule on synthetic results where the right verdict is known."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from adamkit.bench import analysis, judge, protocol, report
from adamkit.bench.claims import Claim, ClaimsError, Ref, load_claims, paper_arms, parse_claims
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import parse_suite
from adamkit.bench.sweep import bench_record

SEEDS = 5


def _store(tmp_path, value, *, steps=10, seeds=SEEDS, tasks=("fmnist_cnn",), optimizers=("adam", "adabelief"),
           stored=lambda run: True):
    """A stored sweep of fixed-hyperparameter task runs whose final metrics are ``value(run)`` (the runs
    ``stored(run)`` is false for are not in the store yet: an unfinished sweep)."""
    entries = [t if isinstance(t, dict) else {"name": t} for t in tasks]
    suite = parse_suite({"name": "j", "optimizers": list(optimizers), "protocol": {"final_seeds": seeds},
                         "tasks": [{"steps": steps, "tune": False, **e} for e in entries]})
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    store.set_meta("bench", json.dumps(bench_record(suite)))
    plan = protocol.plan(suite, protocol.Lookup({}))
    for run in plan.runs:
        if not stored(run):
            continue
        v = value(run)
        final = None if v is None else {"test_accuracy": v, "val_accuracy": v, "diverged": math.isinf(v),
                                        "steps": steps, "budget_steps": steps}
        store.put(run.hash, run.spec, {"status": "done" if final else "failed", "final": final, "curve": None,
                                       "seconds": 0.1, "error": None if final else "boom"})
    store.close()
    return analysis.load(path)


CLAIM = Claim("t", "Paper", "AdaBelief is more accurate", Ref("adabelief", "cnn"), Ref("adam"), ("fmnist_cnn",),
              "test_accuracy", "higher")


def _accuracy(effect, noise=0.002):
    rng = np.random.default_rng(1)
    offsets = {s: float(rng.normal(0, noise)) for s in range(1000, 1100)}

    def value(run):
        base = 0.9 + offsets[run.seed]  # the seed moves both arms alike: a paired design
        return base + (effect + offsets[run.seed + 1] * 0.5 if run.optimizer == "adabelief" else 0.0)
    return value


def test_supported_when_the_interval_lies_above_zero(tmp_path):
    v = judge.judge_claim(CLAIM, _store(tmp_path, _accuracy(0.01)))
    (c,) = v.comparisons
    assert c.verdict == judge.SUPPORTED and c.n == SEEDS and c.low > 0 and c.effect == pytest.approx(0.01, abs=3e-3)
    assert v.tiers == {"B": "supported (1 supported)"} and v.firm
    assert "n = 5 → **supported**" in c.text(CLAIM)


def test_contradicted_when_the_interval_lies_below_zero(tmp_path):
    (c,) = judge.judge_claim(CLAIM, _store(tmp_path, _accuracy(-0.01))).comparisons
    assert c.verdict == judge.CONTRADICTED and c.high < 0


def test_inconclusive_when_the_interval_contains_zero(tmp_path):
    (c,) = judge.judge_claim(CLAIM, _store(tmp_path, _accuracy(0.0, noise=0.01))).comparisons
    assert c.verdict == judge.INCONCLUSIVE and c.low < 0 < c.high and c.n == SEEDS
    assert "(interval contains 0)" in c.text(CLAIM)


def test_inconclusive_with_fewer_than_five_paired_seeds_however_large_the_effect(tmp_path):
    (c,) = judge.judge_claim(CLAIM, _store(tmp_path, _accuracy(0.05), seeds=4)).comparisons
    assert c.verdict == judge.INCONCLUSIVE and c.n == 4 and c.low > 0
    assert "(n < 5)" in c.text(CLAIM)
    # a failed run drops its pair: 5 seeds with one failure is n = 4 as well
    failed = _accuracy(0.05)
    res = _store(tmp_path / "f", lambda r: None if (r.seed == 1000 and r.optimizer == "adam") else failed(r))
    (c,) = judge.judge_claim(CLAIM, res).comparisons
    assert c.n == 4 and c.verdict == judge.INCONCLUSIVE


def test_outside_the_regime_when_the_budget_is_below_the_claims(tmp_path):
    claim = Claim(**{**CLAIM.__dict__, "regime": {"min_steps": 1000}})
    v = judge.judge_claim(claim, _store(tmp_path, _accuracy(0.01)))
    (c,) = v.comparisons
    assert c.verdict == judge.OUTSIDE and "10 steps < the claim's 1000" in c.note and c.low > 0  # numbers kept
    assert v.tiers["B"].startswith(judge.OUTSIDE) and not v.firm
    epochs = Claim(**{**CLAIM.__dict__, "regime": {"min_epochs": 3}})
    assert judge.judge_claim(epochs, _store(tmp_path / "e", _accuracy(0.01))).comparisons[0].verdict == judge.OUTSIDE


def test_not_measured_without_the_arms_or_the_instances(tmp_path):
    res = _store(tmp_path, _accuracy(0.01), optimizers=("adam",))
    (c,) = judge.judge_claim(CLAIM, res).comparisons
    assert c.verdict == judge.NOT_MEASURED and "adabelief@cnn" in c.note
    other = Claim(**{**CLAIM.__dict__, "instances": ("char_lstm1",)})
    v = judge.judge_claim(other, res)
    assert v.comparisons == [] and v.tiers == {}
    # the suite plans the arms but the sweep has not got to them (the searches are not finished): said so, not
    # "not in this suite"
    unfinished = _store(tmp_path / "u", _accuracy(0.01), tasks=({"name": "fmnist_cnn", "tune": True},),
                        stored=lambda run: False)
    (c,) = judge.judge_claim(CLAIM, unfinished).comparisons
    assert c.verdict == judge.NOT_MEASURED and c.note == "no finished adabelief@cnn and no finished adam arm yet"


def test_a_diverged_run_is_the_worst_value_and_two_infinities_tie():
    d = judge.paired_differences({0: 0.9, 1: -math.inf, 2: -math.inf}, {0: 0.8, 1: 0.85, 2: -math.inf}, "higher")
    assert list(d) == pytest.approx([0.1, 0.8 - 0.85, 0.0])  # -inf -> the worst finite value seen (0.8)
    d = judge.paired_differences({0: 5.0, 1: math.inf}, {0: 7.0, 1: 3.0}, "lower", cap=100.0)
    assert list(d) == [2.0, 3.0 - 100.0]
    assert judge.paired_differences({0: math.nan}, {0: 1.0}, "lower").size == 0


def test_bootstrap_is_reproducible_and_covers_the_mean():
    d = np.array([0.1, 0.2, 0.15, 0.12, 0.3])
    assert judge.paired_bootstrap(d) == judge.paired_bootstrap(d)
    mean, low, high = judge.paired_bootstrap(d)
    assert low < mean < high and mean == pytest.approx(d.mean())
    assert judge.verdict_of(np.full(5, 0.0))[0] == judge.INCONCLUSIVE  # no difference at all
    assert judge.verdict_of(np.full(5, -0.001), margin=0.005)[0] == judge.SUPPORTED  # within the margin
    assert judge.verdict_of(np.full(5, -0.01), margin=0.005)[0] == judge.CONTRADICTED
    # an "as good as" claim whose interval lies below 0 but straddles −margin: inconclusive, and it says why
    d = np.array([-0.0066, -0.0028, -0.0045, -0.005, -0.004])
    verdict, effect, low, high = judge.verdict_of(d, margin=0.005)
    assert verdict == judge.INCONCLUSIVE and high < 0 and low < -0.005 < high
    as_good = Claim(**{**CLAIM.__dict__, "margin": 0.005})
    text = judge.Comparison("fmnist_resnet", "B", verdict, d.size, effect, low, high).text(as_good)
    assert text.endswith("(interval contains −0.005, the margin)"), text


def test_tiers_are_aggregated_separately_and_never_pooled():
    assert judge.aggregate([judge.SUPPORTED, judge.SUPPORTED]) == "supported (2 supported)"
    assert judge.aggregate([judge.SUPPORTED, judge.CONTRADICTED]).startswith("mixed")
    assert judge.aggregate([judge.SUPPORTED, judge.INCONCLUSIVE]).startswith("inconclusive")
    assert judge.aggregate([judge.SUPPORTED, judge.OUTSIDE]) == "supported (1 supported; 1 outside the regime)"
    assert judge.aggregate([judge.NOT_MEASURED]) == judge.NOT_MEASURED


def test_the_shipped_claims_load_and_name_declared_paper_arms():
    claims = load_claims()
    assert len({c.id for c in claims}) == len(claims) >= 10
    for c in claims:
        assert c.direction in ("higher", "lower") and c.instances
    with pytest.raises(ClaimsError, match=r"claims\[0\].optimizer: adabelief declares no paper configuration 'x'"):
        parse_claims({"claims": [{"id": "a", "paper": "p", "claim": "c", "optimizer": "adabelief@x",
                                  "baseline": "adam", "instances": ["abs_sum"], "metric": "gap",
                                  "direction": "lower"}]})
    with pytest.raises(ClaimsError, match="direction"):
        parse_claims({"claims": [{"id": "a", "paper": "p", "claim": "c", "optimizer": "adam", "baseline": "sgd",
                                  "instances": ["abs_sum"], "metric": "gap", "direction": "down"}]})


def test_every_instance_a_shipped_claim_names_exists():
    """A claim naming an instance no suite has would read "not measured" for ever, silently."""
    from adamkit.bench.registry import list_problems
    from adamkit.bench.suite import SHIPPED, load_suite

    known = set(list_problems("A")) | set(list_problems("B"))
    for name in SHIPPED:
        for inst in load_suite(name).problems:
            known |= {inst.problem, inst.group, inst.key}
    for c in load_claims():
        assert set(c.instances) <= known, f"claim {c.id}: no problem, task or suite entry {set(c.instances) - known}"


def test_paper_arms_are_planned_where_a_claim_names_them(tmp_path):
    suite = parse_suite({"name": "p", "optimizers": ["adam", "adabelief", "eadam"], "protocol": {"final_seeds": 2},
                         "tasks": [{"name": "fmnist_cnn", "steps": 5, "tune": False},
                                   {"name": "char_lstm1", "steps": 5, "tune": False}]})
    cnn, lstm = suite.problems
    assert dict(paper_arms(cnn, "adabelief"))["cnn"] == {"rectify": False, "weight_decouple": False, "eps": 1e-8}
    assert dict(paper_arms(lstm, "eadam")) == {"lstm": {"eps": 1e-16}}
    assert paper_arms(cnn, "adam") == []
    plan = protocol.plan(suite, protocol.Lookup({}))
    arms = {(r.instance, r.optimizer, r.arm) for r in plan.final}
    assert ("fmnist_cnn", "adabelief", "paper:cnn") in arms and ("char_lstm1", "eadam", "paper:lstm") in arms
    assert not any(a.startswith("paper:") for i, o, a in arms if o == "adam")
    off = parse_suite({**suite.raw, "protocol": {**suite.raw["protocol"], "paper_arms": False}}, "off.toml")
    assert not any(r.arm.startswith("paper:") for r in protocol.plan(off, protocol.Lookup({})).final)


def test_the_report_prints_every_verdict_with_effect_interval_and_n(tmp_path):
    _store(tmp_path, _accuracy(0.01))
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=None) / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| AdaBelief") and "Image classification" in line)
    assert "fmnist_cnn: +0.01" in row and "n = 5" in row and "outside the claim's regime" in row
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
    assert analysis._ratio(498.0, 500.0, True) == pytest.approx(1.004)  # not infinitely worse
    assert analysis._ratio(-1400.0, -1290.0, True) == pytest.approx(1 + 110 / 1290)
    assert analysis._ratio(2e-3, 1e-3, False) == pytest.approx(2.0) and analysis._ratio(math.inf, 1.0, False) == math.inf
    assert analysis.algoperf_score(np.array([1.0, 2.0, math.inf])) == pytest.approx((1 + 2 / 3 + 0) / 3, abs=2e-3)


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
    assert comp.n == 6 and "chains" in comp.note and "outside" in comp.verdict  # 3,000 steps < the claim's 10^6
    a = judge.values_of(res, res.instance("adopt_counterexample_long"),
                        judge.arm_of(res, res.instance("adopt_counterexample_long"), claim.optimizer),
                        "theta_avg", "lower")
    assert sorted(a) == [(1000, i) for i in range(6)]
