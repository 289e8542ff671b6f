"""Tier B tasks in the shipped suites, the sweep's handling of missing data, and the task rows of the
report's claims table (filled from a small stored result set: no training)."""
from __future__ import annotations

import math

import pytest

from adamkit.bench import analysis, protocol, report
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.registry import list_problems
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import SHIPPED, load_suite, parse_suite
from adamkit.bench.sweep import run_sweep


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_shipped_suite_runs_every_task(name):
    suite = load_suite(name)
    tasks = {i.problem for i in suite.problems if i.tier == "B"}
    assert tasks == set(list_problems("B")), f"{name} lacks {set(list_problems('B')) - tasks}"
    assert {i.problem for i in suite.problems if i.tier == "A"}, "the Tier A content stays"


def test_smoke_and_quick_task_runs_are_short_and_full_tunes():
    for name, most in (("smoke", 20), ("quick", 300)):
        for inst in load_suite(name).problems:
            if inst.tier == "B":
                assert not inst.tune and inst.steps is not None and inst.steps <= most, (name, inst.key)
                assert len(inst.final_seeds) == 1
    quick = [i for i in load_suite("quick").problems if i.tier == "B"]
    # the optimizers the task claims compare are in every quick task run
    assert all({"adam", "eadam", "adabelief", "adopt", "agd"} <= set(i.optimizers) for i in quick)
    # `full` tunes every task at 2-core budgets; `paper` at paper-scale budgets (more trials, seeds, steps)
    full = {i.problem: i for i in load_suite("full").problems if i.tier == "B"}
    paper = {i.problem: i for i in load_suite("paper").problems if i.tier == "B"}
    assert all(i.tune and i.trials >= 2 and len(i.final_seeds) >= 2 for i in full.values())
    assert all(i.tune and i.trials >= 8 and len(i.final_seeds) >= 3 for i in paper.values())
    for name, inst in full.items():
        assert inst.trials <= paper[name].trials and len(inst.final_seeds) <= len(paper[name].final_seeds)
        # the final seeds of RL tasks are several, in both
        if name.endswith("_ppo"):
            assert len(inst.final_seeds) >= 4 and len(paper[name].final_seeds) >= 5
    assert "tasks_quick" in SHIPPED and {i.problem for i in load_suite("tasks_quick").problems} == set(
        list_problems("B"))


def test_a_task_without_data_is_skipped_with_the_command_that_fetches_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMKIT_DATA_DIR", str(tmp_path / "empty"))
    suite = parse_suite({
        "name": "t", "optimizers": ["adam"], "protocol": {"final_seeds": 1},
        "problems": [{"name": "rosenbrock", "steps": 5, "tune": False}],
        "tasks": [{"name": "fmnist_mlp", "steps": 2, "tune": False},
                  {"name": "digits_mlp", "steps": 2, "tune": False}],
    })
    store = ResultStore(tmp_path / "r.sqlite")
    stats = run_sweep(suite, store, LocalExecutor(1))
    assert stats.no_data == {"fmnist_mlp": "adamkit data prepare fashion-mnist"}
    assert stats.failed == 0 and stats.done == 2  # rosenbrock and digits (packaged data) ran
    assert {r["problem"] for r in store.runs()} == {"rosenbrock", "digits_mlp"}
    res = analysis.load(tmp_path / "r.sqlite")
    assert res.arm("fmnist_mlp", "adam", "fixed").missing == 1  # the report sees it as not run yet


TASKS = ["fmnist_cnn", "fmnist_cnn_nodecay", "dcgan_fmnist", "tiny_gpt_b8", "tiny_gpt_b64", "fm_movielens",
         "fm_synthetic_ctr"]
OPTS = ["adam", "eadam", "adabelief", "adopt", "agd"]

#: the stored final metrics: task -> optimizer -> metrics
FINALS = {
    "fmnist_cnn": {o: {"test_accuracy": v, "val_accuracy": v} for o, v in
                   zip(OPTS, [0.90, 0.905, 0.91, 0.90, 0.89])},
    "fmnist_cnn_nodecay": {o: {"test_accuracy": v, "val_accuracy": v} for o, v in
                           zip(OPTS, [0.88, 0.89, 0.905, 0.88, 0.88])},
    "dcgan_fmnist": {o: {"fd": v} for o, v in zip(OPTS, [40.0, 45.0, 30.0, 50.0, 60.0])},
    "tiny_gpt_b8": {o: {"loss_spikes": s, "test_bpc": 2.5, "val_bpc": 2.5} for o, s in
                    zip(OPTS, [6.0, 5.0, 4.0, 1.0, 3.0])},
    "tiny_gpt_b64": {o: {"loss_spikes": 0.0, "test_bpc": 2.4, "val_bpc": 2.4} for o in OPTS},
    "fm_movielens": {o: {"test_auc": v, "val_auc": v} for o, v in zip(OPTS, [0.75, 0.75, 0.76, 0.74, 0.78])},
    "fm_synthetic_ctr": {o: {"test_auc": v, "val_auc": v} for o, v in zip(OPTS, [0.80, 0.80, 0.80, 0.80, 0.79])},
}


def _stored(tmp_path, tasks):
    suite = parse_suite({"name": "claims", "optimizers": OPTS, "protocol": {"final_seeds": 2},
                         "tasks": [{"name": t, "steps": 10, "tune": False} for t in tasks]})
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    for run in protocol.plan_first_phase(suite):
        final = {**FINALS[run.spec["problem"]][run.optimizer], "diverged": False, "steps": 10}
        store.put(run.hash, run.spec, {"status": "done", "final": final, "curve": None, "seconds": 0.1})
    store.close()
    return analysis.load(path)


def _row(rows, paper, claim_start):
    found = [r for r in rows if r["paper"].startswith(paper) and r["claim"].startswith(claim_start)]
    assert len(found) == 1, [(r["paper"], r["claim"][:30]) for r in rows]
    return found[0]


def test_claims_table_has_the_task_rows_filled_from_the_store(tmp_path):
    rows = report.claims(_stored(tmp_path, TASKS))
    ab = _row(rows, "AdaBelief", "Image classification")
    assert "fmnist_cnn (10 steps): adabelief 0.91 vs adam 0.9 (2 seeds)" in ab["measured"]
    assert ab["verdict"].startswith("supported")
    ea = _row(rows, "EAdam", "Image classification")
    assert "eadam 0.905 vs adam 0.9" in ea["measured"] and ea["verdict"].startswith("supported")
    gan = _row(rows, "AdaBelief", "GANs")
    assert "dcgan_fmnist (10 steps): adabelief 30 vs adam 40" in gan["measured"] and gan["verdict"].startswith("supported")
    spikes = _row(rows, "ADOPT", "Small-batch GPT-2")
    assert "tiny_gpt_b8 (10 steps): adam 6 spikes" in spikes["measured"] and "adopt 1 spikes" in spikes["measured"]
    assert "tiny_gpt_b64 (10 steps): adam 0 spikes" in spikes["measured"] and spikes["verdict"] == "supported"
    agd = _row(rows, "AGD", "Click-through")
    # better on MovieLens, worse on the synthetic log: mixed
    assert "fm_movielens (10 steps): agd 0.78 vs adam 0.75" in agd["measured"] and "fm_synthetic_ctr" in agd["measured"]
    assert agd["verdict"].startswith("mixed")
    decay = _row(rows, "AdamL", "Vanilla CNNs")
    assert "fmnist_cnn: adam 0.88 vs 0.9" in decay["measured"]
    assert "at most 0.02" in decay["verdict"]
    # the Tier A claims do not count the task runs
    assert _row(rows, "EAdam", "Adding ε")["verdict"].startswith("not measured")


def test_claim_rows_say_no_data_when_the_suite_did_not_run_the_task(tmp_path):
    rows = report.claims(_stored(tmp_path, ["fmnist_cnn"]))
    assert _row(rows, "AdaBelief", "Image classification")["verdict"].startswith("supported")
    for paper, claim in (("AdaBelief", "GANs"), ("ADOPT", "Small-batch"), ("AGD", "Click-through"),
                         ("AdamL", "Vanilla CNNs")):
        row = _row(rows, paper, claim)
        assert row["measured"].startswith("no data") and row["verdict"] == "not measured in this suite"
    res = _stored(tmp_path / "b", ["fmnist_cnn"])
    inst = res.instance("fmnist_cnn")
    assert report.task_metric(res, inst, "adabelief", "test_accuracy", higher=True) == (0.91, 2)
    value, n = report.task_metric(res, inst, "adam", "fd", higher=False)  # a metric the task does not report
    assert math.isnan(value) and n == 0


def test_report_states_each_problems_protocol_and_the_direction_of_its_target(tmp_path):
    lines = report.protocol_summary(load_suite("full"))
    by_tasks = {line.split(": ", 1)[1]: line.split(": ", 1)[0] for line in lines}
    cnn = next(k for names, k in by_tasks.items() if "fmnist_cnn" in names.split(", "))
    assert cnn == "2 trials + defaults on 1 tuning seed (0), 2 final seeds (1000, 1001)"
    rl = next(k for names, k in by_tasks.items() if "cartpole_ppo" in names.split(", "))
    assert rl.endswith("4 final seeds (1000–1003)")
    assert any(k.startswith("no tuning") and "adopt_counterexample_noclip" in names for names, k in by_tasks.items())
    # every problem of the suite is named exactly once
    named = [n for names in by_tasks for n in names.split(", ")]
    assert sorted(named) == sorted({i.group for i in load_suite("full").problems})

    _stored(tmp_path, ["fmnist_cnn", "dcgan_fmnist"])
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=lambda *a: None) / "report.md").read_text()
    assert "| fmnist_cnn | test_accuracy (≥ 0.91) |" in md  # accuracy: higher is better
    row = next(line for line in md.splitlines() if line.startswith("| dcgan_fmnist |"))
    assert "nan" not in row and "%" not in row  # no target: no share of seeds reaching it
    assert "- no tuning (fixed hyperparameters), 2 final seeds (1000, 1001): fmnist_cnn, dcgan_fmnist" in md


def test_medians_interpolate_and_a_diverged_run_is_the_worst_value_in_either_direction():
    assert analysis.quantile([0.86, 0.88], 0.5) == pytest.approx(0.87)  # two seeds: their mean, not one of them
    assert analysis.quantile([3.0, 1.0, 2.0], 0.5) == 2.0 and math.isnan(analysis.quantile([], 0.5))
    assert analysis.quantile([1.0, math.inf], 0.5) == math.inf and analysis.quantile([math.inf] * 2, 0.5) == math.inf
    assert analysis.quantile([-math.inf, 0.5], 0.25) == -math.inf
    diverged = {"diverged": True, "test_accuracy": float("nan")}
    assert analysis._metric(diverged, "test_accuracy", maximize=True) == -math.inf  # not "the best accuracy"
    assert analysis._metric(diverged, "loss", maximize=False) == math.inf
    arm = analysis.ArmSummary("t", "adam", "tuned", {}, [0, 1], ["a", "b"], [0.9, -math.inf], [], [], 0, 0, 1,
                              target=0.85, maximize=True)
    assert arm.converged == 0.5 and arm.median == -math.inf


def test_claims_count_a_diverged_task_run_as_the_worst_value(tmp_path):
    res = _stored(tmp_path, ["fmnist_cnn"])
    inst = res.instance("fmnist_cnn")
    h = res.arm("fmnist_cnn", "adabelief", "fixed").hashes[0]
    res.finals[h] = {"diverged": True, "test_accuracy": float("nan"), "steps": 3}
    assert report.task_metric(res, inst, "adabelief", "test_accuracy", higher=True) == (-math.inf, 2)
    assert report.task_metric(res, inst, "adabelief", "loss_spikes", higher=False)[0] == math.inf


def test_adopt_claim_is_judged_per_setting_of_k(tmp_path):
    suite = parse_suite({
        "name": "ce", "optimizers": ["adam", "adopt"], "protocol": {"final_seeds": 1},
        "problems": [{"name": "adopt_counterexample", "grid": {"k": [10, 50], "beta2": [0.1, 0.999]},
                      "steps": 10, "tune": False, "hparams": {"lr": 0.01}}]})
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    for run in protocol.plan_first_phase(suite):
        k, beta2 = run.spec["params"]["k"], run.spec["params"]["beta2"]
        # ADOPT reaches θ = -1 at k = 10 for both β2 and nowhere at k = 50; Adam fails at β2 = 0.1 only
        ok = (k == 10) if run.optimizer == "adopt" else beta2 > 0.5
        final = {"gap": 0.0 if ok else 2.0, "dist": 0.0 if ok else 2.0, "diverged": False, "steps": 10}
        store.put(run.hash, run.spec, {"status": "done", "final": final, "curve": None, "seconds": 0.1})
    store.close()
    row = _row(report.claims(analysis.load(path)), "ADOPT", "On f(θ)=θ")
    assert row["verdict"] == ("supported in adopt_counterexample k=10; not in adopt_counterexample k=50 "
                              "(ADOPT fails at some β2)")
    assert "adopt in adopt_counterexample: 2/4 (not at k=50: β2 = 0.1, 0.999)" in row["measured"]
    assert "adam in adopt_counterexample: 2/4 (not at k=10: β2 = 0.1; k=50: β2 = 0.1)" in row["measured"]
