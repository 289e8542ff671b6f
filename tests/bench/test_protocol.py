"""The protocol gives every optimizer the same budget; suites are validated with errors naming the key."""
from __future__ import annotations

import math

import numpy as np
import pytest

import adamkit
from adamkit.bench import protocol
from adamkit.bench.suite import SuiteError, load_suite, parse_suite


def _settled(suite, score_of, max_stages=30):
    """Run the adaptive search to its end on synthetic results: ``score_of(run) -> final metrics``."""
    finals = {}
    for _ in range(max_stages):
        plan = protocol.plan(suite, protocol.Lookup(finals))
        new = {r.hash: r for r in plan.runs if r.hash not in finals}
        if not new:
            return plan, finals
        for h, r in new.items():
            finals[h] = score_of(r)
    raise AssertionError("the search did not settle")


def _bowl(best_lr, metric="gap"):
    """A validation metric that is smallest at ``best_lr`` (log scale) for every optimizer."""
    def final(run):
        lr = run.spec["hparams"].get("lr", 1e-3)
        return {metric: (math.log10(lr) - math.log10(best_lr)) ** 2, "diverged": False}
    return final


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_every_optimizer_gets_the_same_search_and_paired_seeds(name):
    suite = load_suite(name)
    plan = protocol.plan(suite, protocol.Lookup({}))
    budget = protocol.budget(plan.runs)
    for inst in suite.problems:
        own = [o for o in inst.optimizers if o not in inst.paper_only]
        for arm in ("tune", "defaults", "fixed"):
            per_opt = {o: budget.get((inst.key, o, arm)) for o in own}
            assert len({str(b) for b in per_opt.values()}) == 1, (inst.key, arm, per_opt)
        if inst.tune:
            b = budget[(inst.key, own[0], "tune")]
            assert b["candidates"] == inst.trials + (1 if suite.defaults_arm else 0)  # before any result
            assert b["runs"] == b["candidates"] * len(inst.tune_seeds)
            assert not set(inst.tune_seeds) & set(inst.final_seeds)  # selection never sees a final seed
        for arm in ("tune", "defaults", "fixed"):
            seeds = {o: sorted(r.seed for r in plan.runs if r.instance == inst.key and r.optimizer == o
                               and r.arm == arm) for o in own}
            assert len({tuple(s) for s in seeds.values()}) == 1


def test_the_grid_is_log_spaced_on_each_optimizers_own_scale():
    suite = parse_suite({"name": "g", "optimizers": ["adam", "agd", "sgd"], "protocol": {"trials": 8},
                         "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-3, 1.0]}]})
    inst = suite.problems[0]
    plan = protocol.plan(suite, protocol.Lookup({}))
    for opt, scale in (("adam", 1.0), ("agd", 0.1), ("sgd", 30.0)):
        lrs = sorted({r.spec["hparams"]["lr"] for r in plan.tuning if r.optimizer == opt and r.trial >= 0})
        assert len(lrs) == 8 and lrs[0] == pytest.approx(1e-3 * scale) and lrs[-1] == pytest.approx(scale)
        ratios = np.diff(np.log(lrs))
        assert np.allclose(ratios, ratios[0], rtol=1e-3)
    assert protocol.search_space(suite, "agd") == {"delta": (1e-14, 1e-5)}
    assert protocol.search_space(suite, "eadam")["eps"][0] <= 1e-16  # EAdam's LSTM value is in its range
    assert protocol.search_space(suite, "sgd") == {}


def test_an_optimum_inside_the_grid_is_bracketed_and_then_eps_is_tried_at_the_best_rate():
    suite = parse_suite({"name": "g", "optimizers": ["adam", "adabelief"], "protocol": {"trials": 8},
                         "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-3, 1.0]}]})
    plan, finals = _settled(suite, _bowl(0.03))
    s = plan.searches[("rosenbrock", "adabelief")]
    assert s.bracketed and s.extensions == [] and len(s.lr_grid) == 8
    eps = [hp for _, hp, kind in s.candidates if kind == "eps"]
    # AdaBelief's own ε grid (1e-16, 1e-12, 1e-8): its default 1e-16 is the rate's own run, the others new ...
    assert [hp["eps"] for hp in eps] == [1e-12, 1e-8] and s.eps_grid["eps"] == [1e-16, 1e-12, 1e-8]
    assert s.eps_bracketed["eps"] and s.eps_extensions["eps"] == []  # (a flat response is not an edge)
    best = min(s.lr_grid, key=lambda lr: abs(math.log(lr / 0.03)))
    assert all(hp["lr"] == best for hp in eps)  # ... at the best rate
    assert s.winner_hparams["lr"] == best and plan.complete
    tuned = [r for r in plan.final if r.optimizer == "adabelief" and r.arm == "tuned"]
    assert len(tuned) == len(suite.problems[0].final_seeds) and all(r.spec["hparams"]["lr"] == best for r in tuned)


def test_an_optimum_at_an_edge_extends_the_grid_by_decades_then_is_flagged_not_bracketed():
    suite = parse_suite({"name": "g", "optimizers": ["adam"], "protocol": {"trials": 8, "extend": 2},
                         "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-3, 1.0]}]})
    # the grid: 8 rates over 3 decades (3/7 decade apart), so a decade is 3 more rates at the same spacing
    plan, _ = _settled(suite, _bowl(5.0))  # above the range: one decade (2.7, 7.2, 19) brackets it
    s = plan.searches[("rosenbrock", "adam")]
    assert s.extensions == ["high"] and s.bracketed and s.winner_hparams["lr"] == pytest.approx(7.197, rel=1e-3)
    plan, _ = _settled(suite, _bowl(1e4))  # far above: two decades added, still at the edge
    s = plan.searches[("rosenbrock", "adam")]
    assert s.extensions == ["high", "high"] and s.bracketed is False
    assert s.lr_grid[-1] == pytest.approx(10 ** (18 / 7), rel=1e-3) and len(s.lr_grid) == 8 + 2 * 3
    plan, _ = _settled(suite, _bowl(1e-7))
    s = plan.searches[("rosenbrock", "adam")]
    assert s.extensions == ["low", "low"] and s.bracketed is False
    assert s.lr_grid[0] == pytest.approx(1e-3 / 10 ** (18 / 7), rel=1e-3)


def test_a_flat_response_is_not_an_edge():
    suite = parse_suite({"name": "g", "optimizers": ["adam"], "protocol": {"trials": 8},
                         "problems": [{"name": "rosenbrock", "steps": 10}]})
    plan, _ = _settled(suite, lambda r: {"gap": 0.0, "diverged": False})
    s = plan.searches[("rosenbrock", "adam")]
    assert s.extensions == [] and s.bracketed


def test_selection_smooths_over_the_last_evaluations_and_failures_lose():
    finals = {"a": {"gap": 0.1, "diverged": False}, "b": {"gap": 0.2, "diverged": False}, "c": None,
              "d": {"gap": math.nan, "diverged": True}}
    curves = {"a": {"step": [0, 1, 2, 3], "gap": [9.0, 0.5, 0.9, 0.1]}, "b": {"step": [0, 1], "gap": [0.3, 0.2]}}
    lookup = protocol.Lookup(finals, curves.get, smooth=3)
    assert lookup.score("a", "gap", False) == pytest.approx(0.5)  # mean of 0.5, 0.9, 0.1: a lucky last point
    assert lookup.score("b", "gap", False) == pytest.approx(0.2)  # ... loses to a steady run (step 0 left out)
    assert lookup.score("c", "gap", False) == math.inf and lookup.score("d", "gap", False) == math.inf
    assert protocol.Lookup(finals).score("a", "gap", False) == 0.1  # no curves: the final value
    assert protocol.score({"acc": 0.9}, "acc", True) == -0.9


def test_smoothing_never_averages_in_the_untrained_model_at_step_0():
    """A short curve (3 evaluations with the one at step 0) with smooth = 3: averaging the untrained value in
    would rank a run that trains well (0.95 accuracy at the end) below one that starts higher and trains worse."""
    finals = {"good": {"acc": 0.95, "diverged": False}, "poor": {"acc": 0.80, "diverged": False}}
    curves = {"good": {"step": [0, 100, 200], "acc": [0.05, 0.90, 0.95]},
              "poor": {"step": [0, 100, 200], "acc": [0.60, 0.78, 0.80]}}
    lookup = protocol.Lookup(finals, curves.get, smooth=3)
    assert lookup.score("good", "acc", True) == pytest.approx(-0.925)  # mean of 0.90 and 0.95 only
    assert lookup.score("poor", "acc", True) == pytest.approx(-0.79)
    assert lookup.score("good", "acc", True) < lookup.score("poor", "acc", True)
    old = protocol.Lookup(finals, curves.get, smooth=3, exclude_start=False)  # version 2's rule, for its stores
    assert old.score("good", "acc", True) > old.score("poor", "acc", True)  # the ranking step 0 turned round
    only_start = protocol.Lookup({"x": {"acc": 0.5, "diverged": False}}, {"x": {"step": [0], "acc": [0.1]}}.get)
    assert only_start.score("x", "acc", True) == -0.5  # nothing after step 0: the final value


def test_run_hash_is_stable_and_complete():
    suite = load_suite("smoke")
    r = protocol.plan(suite, protocol.Lookup({})).runs[0]
    assert protocol.run_hash(dict(r.spec)) == r.hash
    for key in ("problem", "params", "optimizer", "hparams", "seed", "steps", "eval_every"):
        changed = dict(r.spec)
        changed[key] = {"x": 1}
        assert protocol.run_hash(changed) != r.hash, key


BASE = {"name": "t", "problems": [{"name": "beale", "steps": 10}]}


@pytest.mark.parametrize("change, key", [
    ({"optimizers": ["adam", "adamm"]}, "optimizers[1]"),
    ({"protocol": {"trials": -1}}, "protocol.trials"),
    ({"protocol": {"lr": [1.0]}}, "protocol.lr"),
    ({"protocol": {"triasl": 3}}, "protocol.triasl"),
    ({"protocol": {"search": {"agd": {"eps": [1e-8, 1e-6]}}}}, "protocol.search.agd.eps"),
    ({"protocol": {"tune_seeds": [0, 1000]}}, "problems[0].final_seeds"),
    ({"protocol": {"smooth": 0}}, "protocol.smooth"),
    ({"problems": [{"name": "bealee"}]}, "problems[0].name"),
    ({"problems": [{"name": "beale", "grid": {"noise": 0.1}}]}, "problems[0].grid.noise"),
    ({"problems": [{"name": "beale", "params": {"noise": -1}}]}, "problems[0].params"),
    ({"problems": [{"name": "beale", "steps": 0}]}, "problems[0].steps"),
    ({"problems": [{"name": "beale", "hparams": {"lrr": 0.1}}]}, "problems[0].hparams.lrr"),
    ({"problems": [{"name": "beale"}, {"name": "beale"}]}, "problems[1]"),
    ({"problems": []}, "problems"),
    ({"colour": 1}, "colour"),
    ({"problems": [{"name": "beale", "steps": 10, "tune_steps": 20}]}, "problems[0].tune_steps"),

    ({"problems": [{"name": "beale", "steps": 10, "tune_epochs": 1}]}, "problems[0].tune_epochs"),
    ({"problems": [{"name": "beale", "tune_steps": 5}]}, "problems[0].tune_steps"),
    ({"problems": [{"name": "beale", "steps": 10, "tune_steps": 5, "tune_epochs": 1}]}, "problems[0].tune_epochs"),
    ({"problems": [{"name": "beale", "steps": 10, "tune_steps": 5, "tune_eval_every": 0}]},
     "problems[0].tune_eval_every"),
])
def test_suite_errors_name_the_key(change, key):
    with pytest.raises(SuiteError) as info:
        parse_suite({**BASE, **change}, "bad.toml")
    assert f"'bad.toml': {key}:" in str(info.value)


def test_user_suite_file_and_grid(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\noptimizers = ["adam", "adopt"]\n[protocol]\ntrials = 3\nfinal_seeds = [7, 8]\n'
                    '[[problems]]\nname = "adopt_counterexample"\ngrid = { k = [10, 50], beta2 = [0.1, 0.9] }\n'
                    'steps = 50\ntune = false\nhparams = { lr = 0.01 }\n[[tasks]]\nname = "booth"\nsteps = 20\n')
    suite = load_suite(path)
    keys = [i.key for i in suite.problems]
    assert keys[:4] == ["adopt_counterexample[k=10,beta2=0.1]", "adopt_counterexample[k=10,beta2=0.9]",
                        "adopt_counterexample[k=50,beta2=0.1]", "adopt_counterexample[k=50,beta2=0.9]"]
    assert suite.problems[-1].final_seeds == (7, 8) and suite.problems[0].trials == 0
    with pytest.raises(SuiteError, match="no suite"):
        load_suite(tmp_path / "missing.toml")
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(tmp_path / "broken.toml")


def test_a_shorter_tuning_budget_runs_the_trials_short_and_the_final_arms_full():
    """Multi-fidelity: the trials run ``tune_steps`` (evaluated every ``tune_eval_every``), every final arm the
    full budget; the selection is made on the short trials, the same for every optimizer."""
    suite = parse_suite({"name": "mf", "optimizers": ["adam", "adabelief"], "protocol": {"trials": 8},
                         "problems": [{"name": "rosenbrock", "steps": 300, "eval_every": 30, "tune_steps": 100,
                                       "tune_eval_every": 10, "lr": [1e-3, 1.0]}]})
    inst = suite.problems[0]
    assert inst.multi_fidelity and inst.tune_budget == (100, None, 10)
    plan, finals = _settled(suite, _bowl(0.03))
    assert plan.complete and plan.tuning and plan.final
    assert {(r.spec["steps"], r.spec["eval_every"]) for r in plan.tuning} == {(100, 10)}
    assert {(r.spec["steps"], r.spec["eval_every"]) for r in plan.final} == {(300, 30)}
    assert {r.arm for r in plan.final} >= {"tuned", "defaults"}
    s = plan.searches[("rosenbrock", "adabelief")]
    best = min(s.lr_grid, key=lambda lr: abs(math.log(lr / 0.03)))
    assert s.winner_hparams["lr"] == best  # selected on the short trials ...
    tuned = [r for r in plan.final if r.optimizer == "adabelief" and r.arm == "tuned"]
    assert tuned and all(r.spec["hparams"]["lr"] == best and r.spec["steps"] == 300 for r in tuned)  # ... run full
    # the same instance without a tuning budget runs the trials at the full budget, with unchanged run hashes
    same = parse_suite({"name": "mf", "optimizers": ["adam"], "protocol": {"trials": 8},
                        "problems": [{"name": "rosenbrock", "steps": 300, "eval_every": 30, "lr": [1e-3, 1.0]}]})
    assert not same.problems[0].multi_fidelity
    trial = protocol.plan(same, protocol.Lookup({})).tuning[0]
    assert trial.spec["steps"] == 300 and "tune_steps" not in trial.spec
    epochs = parse_suite({"name": "mf", "optimizers": ["adam"], "protocol": {"trials": 3},
                          "tasks": [{"name": "mnist1d_mlp", "epochs": 4, "tune_epochs": 1}]})
    runs = protocol.plan(epochs, protocol.Lookup({}))
    assert {r.spec["epochs"] for r in runs.tuning} == {1} and {r.spec["epochs"] for r in runs.final} == {4}
    # a final budget in epochs (the claims' regimes are in epochs) with trials of a number of steps
    mixed = parse_suite({"name": "mf", "optimizers": ["adam"], "protocol": {"trials": 3},
                         "tasks": [{"name": "mnist1d_mlp", "epochs": 4, "tune_steps": 50}]})
    runs = protocol.plan(mixed, protocol.Lookup({}))
    assert {(r.spec["steps"], r.spec["epochs"]) for r in runs.tuning} == {(50, None)}
    assert {(r.spec["steps"], r.spec["epochs"]) for r in runs.final} == {(None, 4)}


def test_a_low_precision_state_on_a_float64_problem_is_refused_when_the_suite_loads():
    """Tier A steps float64 parameters, which take no low-precision state: the suite names the key at load
    time instead of every run failing; on a task (float32 parameters) the same variant is accepted."""
    base = {"name": "t", "optimizers": ["adam"]}
    bf16 = {"variants": {"bf16": {"state_dtype": "bfloat16"}}}
    for table, key in (({"problems": [{"name": "beale", "hparams": {"state_dtype": "int8"}}]},
                        "problems[0].hparams.state_dtype"),
                       ({"problems": [{"name": "beale"}], "protocol": {**bf16, "margins": {"gap": {"absolute": 0.1}}}},
                        "protocol.variants.bf16.state_dtype")):
        with pytest.raises(SuiteError) as info:
            parse_suite({**base, **table}, "bad.toml")
        assert f"'bad.toml': {key}: adam rejects it" in str(info.value) and "float64" in str(info.value)
    ok = parse_suite({**base, "tasks": [{"name": "mnist1d_mlp"}],
                      "protocol": {**bf16, "margins": {"test_accuracy": {"absolute": 0.01}}}})
    assert [i.problem for i in ok.problems] == ["mnist1d_mlp"] and list(ok.variants) == ["bf16"]
