"""The claims data: every shipped claim states the paper's regime with a citation, a band and valid references;
bad files are refused with the claim and the key named; every problem declares its kind of experiment."""
from __future__ import annotations

import copy

import pytest

from adamkit.bench import protocol
from adamkit.bench.claims import ClaimsError, load_claims, paper_arms, parse_claims
from adamkit.bench.suite import parse_suite

ROW = {"id": "a", "paper": "p", "claim": "c", "optimizer": "adam", "baseline": "sgd", "instances": ["abs_sum"],
       "metric": "gap", "direction": "lower", "band": 0.1,
       "regime": {"source": "PAPERS.md §1", "model": "m", "data": "d", "budget": "300 steps", "hyperparameters": "h",
                  "steps": 300}}


def _parse(**changes):
    row = copy.deepcopy(ROW)
    for k, v in changes.items():
        if v is None:
            row.pop(k, None)
        else:
            row[k] = v
    return parse_claims({"claims": [row]})


def test_a_valid_row_parses_with_its_regime_band_and_kind():
    (c,) = _parse()
    assert c.band == 0.1 and c.kind == "better" and c.margin == 0.0 and c.precondition is None
    assert c.regime.unit == "steps" and c.regime.paper_budget == 300 and c.regime.in_regime == 0.25
    assert "300 steps" in c.regime.text() and "PAPERS.md §1" in c.regime.text()
    (c,) = _parse(kind="as good as")
    assert c.margin == 0.1
    # the band from the file's [bands] table, unless the row gives one
    row = {k: v for k, v in ROW.items() if k != "band"}
    (c,) = parse_claims({"bands": {"gap": 0.2}, "claims": [row]})
    assert c.band == 0.2


@pytest.mark.parametrize("changes, message", [
    ({"optimizer": "adabelief@x"}, r"claims\[0\].optimizer: adabelief declares no paper configuration 'x'"),
    ({"direction": "down"}, r"claims\[0\].direction: expected 'higher' or 'lower'"),
    ({"kind": "faster"}, r"claims\[0\].kind: expected one of 'better', 'as good as'"),
    ({"band": None}, r"claims\[0\].band: no equivalence band for metric 'gap'"),
    ({"band": -1.0}, r"claims\[0\].band: expected a number in \[0, inf\)"),
    ({"regime": None}, r"claims\[0\].regime: expected a table"),
    ({"regime": {**ROW["regime"], "source": ""}}, r"claims\[0\].regime.source: expected a non-empty string"),
    ({"regime": {**ROW["regime"], "epochs": 200}}, r"claims\[0\].regime: give the paper's budget as epochs or as"),
    ({"regime": {**ROW["regime"], "in_regime": 1.5}}, r"claims\[0\].regime.in_regime: expected a number in \(0, 1\]"),
    ({"regime": {**ROW["regime"], "min_steps": 3}}, r"claims\[0\].regime.min_steps: unknown key"),
    ({"precondition": {"arm": "both", "metric": "m", "min": 0, "text": "t"}},
     r"claims\[0\].precondition.arm: expected 'baseline' or 'optimizer'"),
    ({"precondition": {"arm": "baseline", "metric": "m", "text": "t"}}, r"claims\[0\].precondition: give min"),
    ({"margin": 0.1}, r"claims\[0\].margin: unknown key"),
])
def test_bad_rows_are_refused_naming_the_claim_and_the_key(changes, message):
    with pytest.raises(ClaimsError, match=message):
        _parse(**changes)


def test_every_shipped_claim_states_the_papers_regime_with_a_citation():
    claims = load_claims()
    assert len({c.id for c in claims}) == len(claims) >= 15
    for c in claims:
        r = c.regime
        assert "PAPERS.md §1." in r.source, c.id  # the section of PAPERS.md the regime comes from
        assert all(getattr(r, k) for k in ("model", "data", "budget", "hyperparameters")), c.id
        assert c.band > 0 and c.kind in ("better", "as good as") and c.direction in ("higher", "lower"), c.id
        if r.unit is None:  # a budget PAPERS.md does not know is said so, and never verified
            assert not r.verified and "not" in r.budget, c.id
    by_id = {c.id: c for c in claims}
    # the papers' budgets, not the budgets run: CIFAR 200 epochs, PTB 200 epochs, GPT-2 50k steps
    assert by_id["adabelief_image"].regime.epochs == 200 and by_id["adabelief_word_lstm"].regime.epochs == 200
    assert by_id["agd_transformer"].regime.steps == 50_000
    # the counterexamples need their baseline to fail; the spikes claim needs Adam's spikes
    assert by_id["adopt_small_batch"].precondition.metric == "loss_spikes"
    assert by_id["reddi_counterexample"].precondition.arm == "baseline"
    assert by_id["adabelief_like_sgd"].kind == "as good as"


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


def test_every_problem_declares_its_kind_of_experiment():
    from adamkit.bench.registry import get_problem_class, list_problems

    kinds = {}
    for name in list_problems():
        cls = get_problem_class(name)
        declared = next((k.__dict__["experiment"] for k in cls.__mro__ if "experiment" in k.__dict__), None)
        assert declared in ("paper", "stand-in"), f"{name}: experiment = {declared!r}"
        kinds[name] = declared
    # the papers' kinds of experiment, and stand-ins for them (science review 3, §2.5)
    assert {kinds[n] for n in ("fmnist_resnet", "word_lstm1", "hopper_ppo", "fm_criteo", "adopt_counterexample",
                               "reddi_counterexample", "abs_sum")} == {"paper"}
    assert {kinds[n] for n in ("gan_ring8", "char_lstm1", "vae_fmnist", "mnist1d_cnn", "gpt_noclip_b8",
                               "fmnist_cnn")} == {"stand-in"}
    assert get_problem_class("reddi_counterexample").deterministic is True


def test_paper_arms_are_planned_where_a_claim_names_them():
    suite = parse_suite({"name": "p", "optimizers": ["adam", "adabelief", "eadam"], "protocol": {"final_seeds": 2},
                         "tasks": [{"name": "fmnist_cnn", "steps": 5, "tune": False},
                                   {"name": "char_lstm1", "steps": 5, "tune": False}]})
    cnn, lstm = suite.problems
    assert dict(paper_arms(cnn, "adabelief"))["cnn"] == {"rectify": False, "weight_decouple": False, "eps": 1e-8,
                                                         "lr": 1e-3}
    assert dict(paper_arms(lstm, "eadam")) == {"lstm": {"eps": 1e-16, "lr": 1e-3}}
    assert paper_arms(cnn, "adam") == []
    plan = protocol.plan(suite, protocol.Lookup({}))
    arms = {(r.instance, r.optimizer, r.arm) for r in plan.final}
    assert ("fmnist_cnn", "adabelief", "paper:cnn") in arms and ("char_lstm1", "eadam", "paper:lstm") in arms
    assert not any(a.startswith("paper:") for i, o, a in arms if o == "adam")
