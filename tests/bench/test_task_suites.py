"""Tier B tasks in the shipped suites, the sweep's handling of missing data, and the task rows of the
report (filled from a small stored result set: no training); the claims' verdicts are tested in test_judge."""
from __future__ import annotations

import json
import math

import pytest

from adamkit.bench import analysis, protocol, report
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.registry import list_problems
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import SHIPPED, load_suite, parse_suite
from adamkit.bench.sweep import bench_record, run_sweep


#: the Tier B tasks of `full`: four cheap ones every optimizer runs, and one of each family of tasks at the papers'
#: kind of scale (image classification with batch norm, word- and character-level LSTM, unclipped transformer,
#: VAE, MuJoCo control, Criteo-shaped click log, GAN with mode-coverage metrics) with the optimizers their claims
#: compare; the near-duplicate and heavy ones are in `paper` (see the comments in full.toml). `quick` also runs
#: CartPole (in no claim; `full` leaves it to `paper` for time).
IN_FULL = {"mnist1d_mlp", "mnist1d_cnn", "fm_movielens", "deepfm_movielens", "gan_ring8", "fmnist_resnet",
           "char_lstm1", "gpt_noclip_b8", "vae_fmnist", "fm_criteo"}
IN_QUICK = IN_FULL | {"cartpole_ppo", "word_lstm1", "hopper_ppo"}


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_shipped_suite_runs_every_task(name):
    suite = load_suite(name)
    tasks = {i.problem for i in suite.problems if i.tier == "B"}
    expected = {"full": IN_FULL, "quick": IN_QUICK}.get(name, set(list_problems("B")))
    assert tasks == expected if name in ("full", "quick") else tasks >= expected, (name, tasks ^ expected)
    assert {i.problem for i in suite.problems if i.tier == "A"}, "the Tier A content stays"


#: (claim, task) pairs `full` leaves to `paper` for time (full.toml says so at each task): the image claims are
#: measured on mnist1d_cnn in `full`, EAdam's LSTM claim on char_lstm1 (its word-level one only in `paper`)
DEFERRED_TO_PAPER: set = set()


def test_full_runs_each_task_with_the_optimizers_its_claims_compare():
    """A task at the papers' scale runs the optimizers of every claim that names it (the baseline and the
    claimed optimizer, without their paper-arm suffix), but for the pairs left to `paper`; the cheap ones run
    every optimizer and SGD."""
    from adamkit.bench import claims as claim_data

    suite = load_suite("full")
    by_task = {i.problem: i for i in suite.problems if i.tier == "B"}
    for claim in claim_data.load_claims():
        for task in set(claim.instances) & set(by_task):
            opts = set(by_task[task].optimizers)
            measured = {claim.optimizer.optimizer, claim.baseline.optimizer} <= opts
            assert measured != ((claim.id, task) in DEFERRED_TO_PAPER), (claim.id, task, opts)
    for task in ("mnist1d_mlp", "mnist1d_cnn", "fm_movielens", "deepfm_movielens"):
        assert set(by_task[task].optimizers) == set(suite.optimizers) and "sgd" in suite.optimizers
    # every task is tuned at its final budget (benchmark version 3)
    assert not any(i.multi_fidelity for i in by_task.values())
    assert by_task["gpt_noclip_b8"].params["clip"] == 0.0  # the transformer trains without gradient clipping


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
    # at least 8 learning rates and 5 paired final seeds per task arm: what a verdict needs
    assert all(i.tune and i.trials >= 8 and len(i.final_seeds) >= 10 and len(i.tune_seeds) >= 2 for i in full.values())
    assert all(i.tune and i.trials >= 8 and len(i.final_seeds) >= 10 and len(i.tune_seeds) >= 2 for i in paper.values())
    for name, inst in full.items():
        assert inst.trials <= paper[name].trials
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
    store.set_meta("bench", json.dumps(bench_record(suite)))
    for run in protocol.plan(suite, protocol.Lookup({})).runs:
        final = {**FINALS[run.spec["problem"]][run.optimizer], "diverged": False, "steps": 10}
        store.put(run.hash, run.spec, {"status": "done", "final": final, "curve": None, "seconds": 0.1})
    store.close()
    return analysis.load(path)


def test_report_states_each_problems_protocol_and_the_direction_of_its_target(tmp_path):
    lines = report.protocol_summary(load_suite("full"))
    by_tasks = {line.split(": ", 1)[1]: line.split(": ", 1)[0] for line in lines}
    cnn = next(k for names, k in by_tasks.items() if "mnist1d_cnn" in names.split(", "))
    assert cnn == "8 trials + defaults on 2 tuning seeds (0, 1), 10 final seeds (1000–1009)"
    resnet = next(k for names, k in by_tasks.items() if "fmnist_resnet" in names.split(", "))
    assert resnet == "8 trials + defaults on 2 tuning seeds (0, 1), 10 final seeds (1000–1009)"  # at the final budget
    assert any(k.startswith("no tuning") and "adopt_counterexample" in names for names, k in by_tasks.items())
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


