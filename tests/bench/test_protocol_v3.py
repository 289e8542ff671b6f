"""Protocol version 3: paper configurations tuned as optimizers of their own, the paper's own rate untuned, ε/δ
bracketed, steps-to-target selection, ≥ 2 tuning seeds and ≥ 10 final seeds in the shipped suites."""
from __future__ import annotations

import math

import pytest

from adamkit.bench import optimizers as bench_optimizers
from adamkit.bench import protocol
from adamkit.bench.suite import SuiteError, load_suite, parse_suite
from test_protocol import _settled


def _cnn_suite():
    return parse_suite({"name": "p", "optimizers": ["adam", "adabelief"], "protocol": {"trials": 8},
                        "problems": [{"name": "rosenbrock", "label": "mnist1d_cnn", "steps": 10, "lr": [1e-4, 1e-1]}]})


def test_a_paper_configuration_gets_its_own_search_and_is_selected_by_it():
    """adabelief@cnn (rectify off) is best at a rate 10x below rectified AdaBelief's: its arm runs its own
    winner, not the rate tuned for the other configuration (version 2's transplant)."""
    suite = _cnn_suite()

    def final(run):
        hp = run.spec["hparams"]
        best = 1e-3 if hp.get("rectify") is False else 1e-2
        return {"gap": (math.log10(hp.get("lr", 1e-3)) - math.log10(best)) ** 2, "diverged": False}
    plan, _ = _settled(suite, final)
    main = plan.searches[("mnist1d_cnn", "adabelief")]
    paper = plan.searches[("mnist1d_cnn", "adabelief@cnn")]
    assert paper.arm == "cnn" and paper.label == "adabelief@cnn" and len(paper.lr_grid) >= 8
    assert all(hp.get("rectify") is False and hp.get("eps") == 1e-8 for _, hp, _ in paper.candidates)  # held
    assert not any(k == "eps" for _, _, k in paper.candidates)  # ε is fixed by the configuration: not searched
    assert main.winner_hparams["lr"] == pytest.approx(1e-2, rel=0.5)
    won = paper.winner_hparams.get("lr", bench_optimizers.default_lr("adabelief"))  # (the defaults candidate: 1e-3)
    assert won == pytest.approx(1e-3, rel=0.5)
    arm = [r for r in plan.final if r.arm == "paper:cnn"]
    assert arm and {r.spec["hparams"].get("lr", 1e-3) for r in arm} == {won}
    assert {r.seed for r in arm} == set(suite.problems[0].final_seeds)
    trials = [r for r in plan.tuning if r.arm == "tune:cnn"]
    assert trials and {r.seed for r in trials} == set(suite.problems[0].tune_seeds)


def test_the_paper_lr_arm_runs_the_papers_rate_untuned():
    suite = _cnn_suite()
    plan, _ = _settled(suite, lambda r: {"gap": abs(math.log10(r.spec["hparams"].get("lr", 1e-3)) + 2.0),
                                         "diverged": False})
    lr = bench_optimizers.spec("adabelief").paper_configs["cnn"]["lr"]
    arm = [r for r in plan.final if r.arm == "paper-lr:cnn"]
    assert arm and all(r.trial == -1 for r in arm)  # not a search's winner
    hp = arm[0].spec["hparams"]
    assert hp["rectify"] is False and hp["eps"] == 1e-8 and hp.get("lr", bench_optimizers.default_lr("adabelief")) == lr
    # a configuration without a rate (adabelief@toy) has no paper-lr arm
    assert not any(r.arm.startswith("paper-lr:") and r.arm != "paper-lr:cnn" for r in plan.final)


def test_a_held_key_at_the_optimizers_default_shares_the_optimizers_own_runs():
    """eadam@cnn holds ε = 1e-8, EAdam's default: its grid runs are EAdam's own (the same hashes, stored once)."""
    suite = parse_suite({"name": "p", "optimizers": ["eadam"], "protocol": {"trials": 8},
                         "problems": [{"name": "rosenbrock", "label": "mnist1d_cnn", "steps": 10}]})
    plan = protocol.plan(suite, protocol.Lookup({}))
    own = {r.hash for r in plan.tuning if r.arm == "tune"}
    paper = {r.hash for r in plan.tuning if r.arm == "tune:cnn"}
    assert paper and paper <= own


def test_eps_is_bracketed_and_extended_at_an_edge():
    suite = parse_suite({"name": "e", "optimizers": ["adam"], "protocol": {"trials": 8, "extend": 2},
                         "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-3, 1.0]}]})

    def final(best_eps):
        def f(run):
            hp = run.spec["hparams"]
            return {"gap": (math.log10(hp.get("lr", 1e-3)) + 1.5) ** 2
                    + (math.log10(hp.get("eps", 1e-8)) - math.log10(best_eps)) ** 2, "diverged": False}
        return f
    plan, _ = _settled(suite, final(3e-9))  # inside Adam's range 1e-10..1e-6: bracketed, no extension
    s = plan.searches[("rosenbrock", "adam")]
    assert s.eps_bracketed["eps"] and s.eps_extensions["eps"] == [] and s.eps_grid["eps"] == [1e-10, 1e-8, 1e-6]
    plan, _ = _settled(suite, final(1e-4))  # above the range: grid steps (2 decades) added until one lies beyond it
    s = plan.searches[("rosenbrock", "adam")]
    assert s.eps_extensions["eps"] == ["high", "high"] and s.eps_bracketed["eps"]
    assert s.eps_grid["eps"][-1] == pytest.approx(1e-2) and s.winner_hparams["eps"] == pytest.approx(1e-4)
    plan, _ = _settled(suite, final(1e-30))  # far below: extended twice, then flagged
    s = plan.searches[("rosenbrock", "adam")]
    assert s.eps_extensions["eps"] == ["low", "low"] and s.eps_bracketed["eps"] is False
    assert s.eps_grid["eps"][0] == pytest.approx(1e-14)


def test_toy_speed_instances_select_on_steps_to_target():
    """A rate that reaches the target early wins over one that ends closer to it but later."""
    suite = parse_suite({"name": "s", "optimizers": ["adam"], "protocol": {"trials": 8, "smooth": 1},
                         "problems": [{"name": "abs_sum", "steps": 100, "lr": [1e-3, 1.0],
                                       "selection_metric": "steps_to_target"}]})
    inst = suite.problems[0]
    assert inst.selection_metric == "steps_to_target" and inst.target == 0.01
    curves = {}

    def final(run):
        lr = run.spec["hparams"].get("lr", 1e-3)
        fast = abs(math.log10(lr) + 1.0) < 0.2  # lr ≈ 0.1: reaches 0.01 at step 20, ends at 0.005
        slow = abs(math.log10(lr) + 2.0) < 0.2  # lr ≈ 0.01: reaches it at step 90, ends at 1e-6
        gaps = [1.0, 0.005, 0.005, 0.005, 0.005, 0.005] if fast else [1.0, 0.5, 0.3, 0.2, 0.1, 1e-6] if slow \
            else [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
        steps = [0, 20, 40, 60, 80, 90] if slow else [0, 20, 40, 60, 80, 100]
        curves[run.hash] = {"step": steps, "gap": gaps}
        return {"gap": gaps[-1], "diverged": False, "steps": 100}
    finals = {}
    for _ in range(30):
        plan = protocol.plan(suite, protocol.Lookup(finals, curves.get, smooth=1))
        new = {r.hash: r for r in plan.runs if r.hash not in finals}
        if not new:
            break
        for h, r in new.items():
            finals[h] = final(r)
    s = plan.searches[("abs_sum", "adam")]
    assert abs(math.log10(s.winner_hparams["lr"]) + 1.0) < 0.2  # the fast rate, not the lower final gap
    lookup = protocol.Lookup(finals, curves.get, smooth=1)
    never = next(h for h, c in curves.items() if c["gap"][-1] == 0.5)
    assert lookup.steps_score(never, inst) > 100  # never reached: ranked after every run that reaches it
    with pytest.raises(SuiteError, match=r"tasks\[0\].selection_metric: .*needs a target"):
        parse_suite({"name": "s", "optimizers": ["adam"], "tasks": [{"name": "fm_criteo", "steps": 5,
                                                                     "selection_metric": "steps_to_target"}]}, "s")


@pytest.mark.parametrize("name", ["smoke", "quick", "full", "paper"])
def test_shipped_suites_tune_on_at_least_two_seeds(name):
    for inst in load_suite(name).problems:
        if inst.tune:
            assert len(inst.tune_seeds) >= 2, inst.key


@pytest.mark.parametrize("name", ["full", "paper"])
def test_every_arm_a_verdict_uses_has_ten_paired_seeds(name):
    from adamkit.bench.claims import load_claims

    for inst in load_suite(name).problems:
        if not any(c.matches(inst) for c in load_claims()):
            continue
        deterministic = inst.problem == "reddi_counterexample"  # one run: no seed changes it
        chained = inst.params.get("chains", 1) >= 8  # one run of 8 paired chains
        assert deterministic or chained or len(inst.final_seeds) >= 10, inst.key
        assert not inst.multi_fidelity, inst.key  # tuned at the final budget


def test_full_runs_the_papers_regimes():
    full = {i.key: i for i in load_suite("full").problems}
    reddi = [i for i in full.values() if i.problem == "reddi_counterexample"]
    assert reddi and all(i.steps >= 100_000 for i in reddi)
    adopt = [i for i in full.values() if i.problem == "adopt_counterexample" and i.steps >= 1_000_000]
    assert len({(i.params["k"], i.params["beta2"]) for i in adopt}) >= 12
    assert any(i.params["k"] == 50 and i.steps > 6_000_000 for i in adopt)
    assert full["gpt_noclip_b8"].steps >= 2000 and full["vae_fmnist"].epochs >= 10
    assert {"eadam", "adopt", "agd"} <= set(full["fmnist_resnet"].optimizers)


def test_the_quick_suites_planned_cost_is_small():
    est = protocol.estimate(load_suite("quick"))
    assert est.cpu_hours < 0.3 and est.runs < 2000  # make demo: < 5 minutes on 2 cores with its report
    assert 14 < protocol.estimate(load_suite("full")).cpu_hours < 24


def test_eps_step_searches_every_optimizers_eps_at_the_same_resolution():
    """Without ``eps_step`` each optimizer's ε/δ grid is 3 points over its own range, extended by that grid's step:
    2 decades for Adam's ε (1e-10..1e-6), 4.5 for AGD's δ (1e-14..1e-5). With ``eps_step`` (decades) the points lie
    at most that far apart and one extension is exactly that far, for every optimizer alike."""
    def suite(**proto):
        return parse_suite({"name": "e", "optimizers": ["agd"], "protocol": {"trials": 8, "extend": 2, **proto},
                            "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-3, 1.0]}]})
    ln10 = math.log(10.0)
    grid, step = protocol.eps_search_grid(suite(), 1e-14, 1e-5)
    assert grid == pytest.approx([1e-14, 3.162e-10, 1e-5]) and step == pytest.approx(4.5 * ln10)
    grid, step = protocol.eps_search_grid(suite(), 1e-10, 1e-6)
    assert grid == pytest.approx([1e-10, 1e-8, 1e-6]) and step == pytest.approx(2 * ln10)
    grid, step = protocol.eps_search_grid(suite(eps_step=1), 1e-14, 1e-5)
    assert grid == pytest.approx([10.0 ** -e for e in range(14, 4, -1)]) and step == pytest.approx(ln10)
    grid, step = protocol.eps_search_grid(suite(eps_step=2), 1e-14, 1e-5)  # 9 decades: 6 points 1.8 apart
    assert len(grid) == 6 and grid[0] == 1e-14 and grid[-1] == 1e-5 and step == pytest.approx(2 * ln10)
    assert protocol.eps_search_grid(suite(eps_step=2), 1e-10, 1e-6)[0] == pytest.approx([1e-10, 1e-8, 1e-6])

    def final(run):  # best at lr 10^-1.5 and at δ = 1e-4, a decade above AGD's range
        hp = run.spec["hparams"]
        return {"gap": (math.log10(hp.get("lr", 1e-3)) + 1.5) ** 2 + (math.log10(hp.get("delta", 1e-5)) + 4.0) ** 2,
                "diverged": False}
    plan, _ = _settled(suite(), final)
    s = plan.searches[("rosenbrock", "agd")]
    assert s.eps_grid["delta"] == pytest.approx([1e-14, 3.162e-10, 1e-5, 0.3162])  # 1e-4 is never tried
    assert s.eps_bracketed["delta"] and s.winner_hparams.get("delta", 1e-5) == 1e-5
    plan, _ = _settled(suite(eps_step=1), final)
    s = plan.searches[("rosenbrock", "agd")]
    assert s.eps_grid["delta"] == pytest.approx([10.0 ** -e for e in range(14, 2, -1)])  # 1e-14 .. 1e-3
    assert s.eps_extensions["delta"] == ["high", "high"] and s.eps_bracketed["delta"]
    assert s.winner_hparams["delta"] == pytest.approx(1e-4)
    # the planner's look-ahead of a search not settled yet counts the same grid: its 10 points less the default
    fresh = protocol.plan(suite(eps_step=1), protocol.Lookup({}))
    ahead = protocol.unplanned_runs(suite(eps_step=1), suite(eps_step=1).problems[0],
                                    fresh.searches[("rosenbrock", "agd")])
    assert len([k for k, _ in ahead if k.startswith("eps:")]) == 9 * len(suite().problems[0].tune_seeds)


@pytest.mark.parametrize("bad", [0, -1, "1", True, float("inf")])
def test_eps_step_must_be_a_positive_number_of_decades(bad):
    with pytest.raises(SuiteError, match=r"protocol\.eps_step: expected a number of decades > 0"):
        parse_suite({"name": "e", "protocol": {"eps_step": bad}, "problems": [{"name": "rosenbrock"}]})


def test_eps_step_and_eps_trials_are_not_both_given():
    with pytest.raises(SuiteError, match=r"protocol\.eps_step: give eps_step or eps_trials, not both"):
        parse_suite({"name": "e", "protocol": {"eps_step": 1, "eps_trials": 5}, "problems": [{"name": "rosenbrock"}]})
