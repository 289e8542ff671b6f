"""The protocol gives every optimizer the same budget; suites are validated with errors naming the key."""
from __future__ import annotations

import math

import pytest

import adamkit
from adamkit.bench import protocol
from adamkit.bench.suite import SuiteError, load_suite, parse_suite


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_every_optimizer_gets_the_same_budget(name):
    suite = load_suite(name)
    runs = protocol.plan_first_phase(suite)
    # a selection in which every optimizer picked some trial: the final phase has the same shape for all
    winners = {(i.key, o): {"hparams": {"lr": 0.01}, "trial": 0, "score": 0.0, "complete": True}
               for i in suite.problems for o in i.optimizers}
    runs += protocol.plan_final_phase(suite, winners)
    budget = protocol.budget(runs)
    for inst in suite.problems:
        for arm in ("tune", "defaults", "tuned", "fixed"):
            per_opt = {o: budget.get((inst.key, o, arm)) for o in inst.optimizers}
            assert len({str(b) for b in per_opt.values()}) == 1, (inst.key, arm, per_opt)
        if inst.tune:
            b = budget[(inst.key, inst.optimizers[0], "tune")]
            assert b["candidates"] == inst.trials + (1 if suite.defaults_arm else 0)
            assert b["runs"] == b["candidates"] * len(inst.tune_seeds)
        # the same seeds (start points, noise) for every optimizer in every arm: paired
        for arm in ("tune", "defaults", "tuned", "fixed"):
            seeds = {o: sorted(r.seed for r in runs if r.instance == inst.key and r.optimizer == o and r.arm == arm)
                     for o in inst.optimizers}
            assert len({tuple(s) for s in seeds.values()}) == 1
            steps = {r.spec["steps"] for r in runs if r.instance == inst.key and r.arm == arm}
            assert len(steps) <= 1


def test_search_is_paired_and_on_each_optimizers_scale():
    suite = load_suite("quick")
    inst = next(i for i in suite.problems if i.key == "rosenbrock")
    trials = {o: protocol.trial_hparams(suite, inst, o) for o in adamkit.list_optimizers()}
    # the learning rates are the same draws for every optimizer (same range)
    lrs = {o: [t["lr"] for t in ts] for o, ts in trials.items()}
    assert len({tuple(v) for v in lrs.values()}) == 1
    assert all(inst.lr_range[0] <= lr <= inst.lr_range[1] for lr in lrs["adam"])
    # the learning rates cover the range: one draw in each fifth (a Latin hypercube), in log space
    lo, hi = map(math.log, inst.lr_range)
    cells = sorted(int((math.log(lr) - lo) / (hi - lo) * inst.trials) for lr in lrs["adam"])
    assert cells == list(range(inst.trials))
    # ε/δ on each optimizer's own scale
    for o, ts in trials.items():
        (key, (low, high)), = protocol.SEARCH_SPACES[o].items()
        assert all(low * 0.999 <= t[key] <= high * 1.001 for t in ts), (o, ts)
    assert max(t["eps"] for t in trials["adabelief"]) <= 1e-8
    assert min(t["delta"] for t in trials["agd"]) >= 1e-14 * 0.999
    assert all(1e-8 * 0.999 <= t["eps"] <= 1e-4 * 1.001 for t in trials["adopt"])
    # the same quantile of its own eps range for every optimizer
    def q(o):
        (key, (low, high)), = protocol.SEARCH_SPACES[o].items()
        return [round((math.log(t[key]) - math.log(low)) / (math.log(high) - math.log(low)), 3) for t in trials[o]]
    assert q("adabelief") == pytest.approx(q("agd"), abs=2e-3) and q("adam") == pytest.approx(q("adopt"), abs=2e-3)


def test_selection_picks_the_best_and_failures_lose():
    suite = load_suite("smoke")
    runs = [r for r in protocol.plan_first_phase(suite) if r.arm == "tune"]
    inst = suite.problems[0]
    finals = {}
    for r in runs:
        finals[r.hash] = {"gap": 1.0 + r.trial, "diverged": False}  # defaults (trial -1) would be best ...
    for r in runs:
        if r.trial == -1 and r.optimizer == "adam":
            finals[r.hash] = None  # ... but it failed for adam
        if r.trial == 1 and r.optimizer == "agd":
            finals[r.hash] = {"gap": math.nan, "diverged": True}
    winners = protocol.select(suite, finals)
    assert winners[(inst.key, "adam")]["trial"] == 0
    assert winners[(inst.key, "adabelief")]["trial"] == -1
    assert all(w["complete"] for w in winners.values())
    assert protocol.score(None, "gap", False) == math.inf
    assert protocol.score({"acc": 0.9}, "acc", True) == -0.9


def test_run_hash_is_stable_and_complete():
    suite = load_suite("smoke")
    r = protocol.plan_first_phase(suite)[0]
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
    ({"problems": [{"name": "bealee"}]}, "problems[0].name"),
    ({"problems": [{"name": "beale", "grid": {"noise": 0.1}}]}, "problems[0].grid.noise"),
    ({"problems": [{"name": "beale", "params": {"noise": -1}}]}, "problems[0].params"),
    ({"problems": [{"name": "beale", "steps": 0}]}, "problems[0].steps"),
    ({"problems": [{"name": "beale", "hparams": {"lrr": 0.1}}]}, "problems[0].hparams.lrr"),
    ({"problems": [{"name": "beale"}, {"name": "beale"}]}, "problems[1]"),
    ({"problems": []}, "problems"),
    ({"colour": 1}, "colour"),
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
