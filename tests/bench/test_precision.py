"""The ``precision`` suite (issue 13): low-precision optimizer state against float32 as suite variants, paired
seeds, and the non-inferiority verdicts of the judge and the report."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import adamkit
from adamkit.bench import analysis, judge, protocol, registry, report
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import SuiteError, load_suite, parse_suite
from adamkit.bench.sweep import bench_record

DTYPES = {"float32", "bfloat16", "int8"}


def test_the_precision_suite_covers_every_registered_optimizer_on_a_cnn_an_lstm_and_a_transformer():
    suite = load_suite("precision")
    assert suite.optimizers == tuple(adamkit.list_optimizers()) and "sgd" not in suite.optimizers
    assert [i.problem for i in suite.problems] == ["mnist1d_cnn", "char_lstm1", "tiny_gpt_b8"]
    assert all(not i.tune and i.tier == "B" and len(i.final_seeds) == 5 for i in suite.problems)
    assert suite.variants == {"bfloat16": {"state_dtype": "bfloat16"}, "int8": {"state_dtype": "int8"}}
    assert {i.target_metric for i in suite.problems} <= set(suite.margins)
    assert suite.margins == {"test_accuracy": ("absolute", 0.01), "test_bpc": ("relative", 0.01)}


def test_the_three_state_dtypes_of_a_seed_differ_in_state_dtype_only():
    suite = load_suite("precision")
    plan = protocol.plan(suite, protocol.Lookup({}))
    assert plan.complete and not plan.tuning
    n = len(suite.optimizers) * len(suite.problems) * 5 * 3
    assert len(plan.final) == n == 315 and len({r.hash for r in plan.final}) == n
    assert f"{n} runs" in suite.description  # the description's budget counts the runs the suite has
    groups: dict[tuple, dict[str, dict]] = {}
    for r in plan.final:
        assert r.arm in ("fixed", "variant:bfloat16", "variant:int8")
        groups.setdefault((r.instance, r.optimizer, r.seed), {})[r.spec["hparams"]["state_dtype"]] = r.spec
    assert len(groups) == n // 3
    for specs in groups.values():
        assert set(specs) == DTYPES
        strip = [{**s, "hparams": {k: v for k, v in s["hparams"].items() if k != "state_dtype"}}
                 for s in specs.values()]
        assert all(s == strip[0] for s in strip), "only state_dtype may differ between the three arms of a seed"
        assert strip[0]["hparams"] == {}, "fixed hyperparameters: each optimizer's own defaults"


class _ZeroStep(torch.optim.Optimizer):
    """Changes nothing; with ``draw`` it consumes the global generator as a stochastic rounding could."""

    def __init__(self, params, draw: bool):
        super().__init__(params, {})
        self.draw = draw

    def step(self, closure):
        loss = closure()
        if self.draw:
            torch.rand(1000)
        return loss


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_seed_fixes_the_initialisation_and_the_data_order_whatever_the_optimizer_draws(index):
    """Paired seeds: the three arms of a seed start from the same weights and see the same batches, even if an
    optimizer draws random bits from the global generator (the tasks draw their batches from their own)."""
    inst_spec = load_suite("precision").problems[index]
    losses, weights = [], []
    for draw in (False, True):
        problem = registry.create_problem(inst_spec.problem, {**inst_spec.params, "synthetic": True})
        torch.manual_seed(1000)
        inst = problem.make(1000)
        weights.append(torch.cat([p.detach().flatten() for p in inst.parameters()]))
        opt = _ZeroStep(inst.parameters(), draw)
        losses.append([inst.train_step(opt, s) for s in range(6)])
    assert torch.equal(weights[0], weights[1])
    assert losses[0] == losses[1] and len(set(losses[0])) > 1  # the same batches, and not one batch repeated


# ---------------------------------------------------------------------------------------- the verdict logic


def _d(mean, spread, n=5):
    return np.asarray(mean + spread * np.linspace(-1, 1, n))


@pytest.mark.parametrize("d, margin, verdict", [
    (_d(-0.002, 0.002), 0.01, judge.NO_WORSE),      # a small loss, well within the margin
    (_d(+0.010, 0.004), 0.01, judge.NO_WORSE),      # better than the reference
    (_d(-0.030, 0.004), 0.01, judge.WORSE),         # the whole interval beyond the margin
    (_d(-0.010, 0.020), 0.01, judge.INCONCLUSIVE),  # the interval straddles -margin
    (_d(-0.001, 0.001, n=4), 0.01, judge.INCONCLUSIVE),  # n < 5, however clear
    (_d(-0.5, 0.01, n=3), 0.01, judge.INCONCLUSIVE),     # n < 5, even when clearly worse
])
def test_noninferiority_verdicts(d, margin, verdict):
    v, effect, low, high = judge.noninferiority(d, margin)
    assert v == verdict and effect == pytest.approx(float(np.mean(d)))
    assert low <= effect <= high


def test_the_verdict_is_decided_by_where_the_interval_lies_against_the_margin():
    d = _d(-0.02, 0.002)
    _, _, low, high = judge.noninferiority(d, 0.0)
    assert judge.noninferiority(d, abs(low) * 1.01)[0] == judge.NO_WORSE  # margin just beyond the interval
    assert judge.noninferiority(d, abs(high) * 0.99)[0] == judge.WORSE   # margin just inside it
    assert judge.noninferiority(d, 0.02)[0] == judge.INCONCLUSIVE
    with pytest.raises(ValueError, match="margin"):
        judge.noninferiority(d, -0.01)


def test_margins_absolute_and_relative_to_the_reference_mean():
    assert judge.margin_value("absolute", 0.01, [0.5, 0.7]) == 0.01
    assert judge.margin_value("relative", 0.01, [3.0, 3.4, math.inf]) == pytest.approx(0.032)
    assert math.isnan(judge.margin_value("relative", 0.01, [math.inf]))
    assert judge.margin_text("relative", 0.01, 0.032) == "1 % of the reference (0.032)"


# ------------------------------------------------------------------------------------- suite declarations

BASE = {"name": "v", "optimizers": ["adam"], "protocol": {"final_seeds": 5},
        "tasks": [{"name": "mnist1d_cnn", "steps": 5, "tune": False}]}


def _with(**proto):
    return {**BASE, "protocol": {**BASE["protocol"], **proto}}


@pytest.mark.parametrize("proto, key, message", [
    ({"variants": {"int8": {"state_dtype": "int8"}}}, "protocol.margins", "no margin for 'test_accuracy'"),
    ({"variants": {"half": {"state_dtype": "float16"}}, "margins": {"test_accuracy": {"absolute": 0.01}}},
     "protocol.variants.half.state_dtype", "adam rejects it"),
    ({"variants": {"x": {"no_such": 1}}, "margins": {"test_accuracy": {"absolute": 0.01}}},
     "protocol.variants.x.no_such", "not an argument of adam"),
    ({"variants": {"Int8": {"state_dtype": "int8"}}}, "protocol.variants.Int8", "[a-z0-9_]+"),
    ({"variants": {"x": {}}}, "protocol.variants.x", "non-empty table"),
    ({"margins": {"test_accuracy": {"percent": 1}}}, "protocol.margins.test_accuracy", "absolute = a"),
    ({"margins": {"test_accuracy": {"absolute": -0.1}}}, "protocol.margins.test_accuracy.absolute", "positive"),
])
def test_variant_and_margin_errors_name_the_key(proto, key, message):
    with pytest.raises(SuiteError) as err:
        parse_suite(_with(**proto), "v.toml")
    assert f"suite 'v.toml': {key}" in str(err.value) and message in str(err.value)


def test_variants_run_on_top_of_a_tuned_winner_too():
    suite = parse_suite({"name": "t", "optimizers": ["adam"],  # (a task: Tier A's float64 takes no int8 state)
                         "protocol": {"trials": 2, "final_seeds": 2, "variants": {"int8": {"state_dtype": "int8"}},
                                      "margins": {"test_accuracy": {"absolute": 0.01}}},
                         "tasks": [{"name": "mnist1d_mlp", "steps": 5}]})
    empty = protocol.plan(suite, protocol.Lookup({}))
    assert not [r for r in empty.final if r.arm.startswith("variant:")]  # not before the search has a winner
    finals: dict = {}
    plan = empty
    while not plan.complete:  # the search is adaptive: store each stage's trials, plan again
        finals.update({r.hash: {"val_accuracy": 0.9 - 0.1 * abs(r.trial - 1), "diverged": False}
                       for r in plan.tuning})
        plan = protocol.plan(suite, protocol.Lookup(finals))
    tuned = [r for r in plan.final if r.arm == "tuned"]
    var = [r for r in plan.final if r.arm == "variant:int8"]
    assert len(var) == len(tuned) == 2
    for t, v in zip(tuned, var):
        assert v.seed == t.seed and v.spec["hparams"] == {**t.spec["hparams"], "state_dtype": "int8"}


# -------------------------------------------------------------------------------------- the report's table


def _store(tmp_path, effect):
    """A small stored precision-like sweep: ``effect(optimizer, variant)`` shifts the variant's metric (in the
    metric's better direction) from the float32 arm's on the same seed."""
    suite = parse_suite({
        "name": "p", "optimizers": ["adam", "adopt"],
        "protocol": {"final_seeds": 5, "paper_arms": False,
                     "variants": {"bfloat16": {"state_dtype": "bfloat16"}, "int8": {"state_dtype": "int8"}},
                     "margins": {"test_accuracy": {"absolute": 0.01}, "test_bpc": {"relative": 0.01}}},
        "tasks": [{"name": "mnist1d_cnn", "steps": 10, "tune": False, "hparams": {"state_dtype": "float32"}},
                  {"name": "char_lstm1", "steps": 10, "tune": False, "hparams": {"state_dtype": "float32"}}]})
    path = tmp_path / "r.sqlite"
    store = ResultStore(path)
    store.set_meta("suite", suite.to_json())
    store.set_meta("bench", json.dumps(bench_record(suite)))
    rng = np.random.default_rng(0)
    noise = {s: float(rng.normal(0, 0.003)) for s in range(1000, 1010)}
    for run in protocol.plan(suite, protocol.Lookup({})).runs:
        variant = run.arm.partition(":")[2] or None
        shift = effect(run.optimizer, variant) if variant else 0.0
        jitter = noise[run.seed + 1] * 0.3 if variant else 0.0
        if run.instance == "mnist1d_cnn":
            v = 0.8 + noise[run.seed] + shift + jitter
            final = {"test_accuracy": v, "val_accuracy": v}
        else:
            v = 3.0 + 10 * noise[run.seed] - 3.0 * (shift + jitter)
            final = {"test_bpc": v, "val_bpc": v}
        final.update({"diverged": False, "steps": 10, "budget_steps": 10})
        store.put(run.hash, run.spec, {"status": "done", "final": final, "curve": None, "seconds": 0.1,
                                       "error": None})
    store.close()
    return path


def test_judge_and_report_give_one_row_per_optimizer_task_and_low_precision_dtype(tmp_path):
    path = _store(tmp_path, lambda opt, variant: -0.05 if (opt, variant) == ("adopt", "int8") else 0.0)
    rows = judge.judge_variants(analysis.load(path))
    assert [(c.instance, c.optimizer, c.variant) for c in rows] == [
        (i, o, v) for i in ("mnist1d_cnn", "char_lstm1") for o in ("adam", "adopt") for v in ("bfloat16", "int8")]
    by = {(c.instance, c.optimizer, c.variant): c for c in rows}
    for key, c in by.items():
        assert c.n == 5 and c.reference_arm == "fixed"
        assert c.verdict == (judge.WORSE if key[1:] == ("adopt", "int8") else judge.NO_WORSE), key
    bad = by[("char_lstm1", "adopt", "int8")]  # bits per character: lower is better, the difference is signed
    assert bad.direction == "lower" and bad.effect == pytest.approx(-0.15, abs=0.01)
    assert bad.margin == pytest.approx(0.01 * 3.0, rel=0.05)  # 1 % of the float32 arm's mean (3.0 ± noise)
    assert by[("mnist1d_cnn", "adam", "int8")].margin == 0.01

    out = report.write_report(path, tmp_path / "rep", log=None)
    md = (out / "report.md").read_text()
    assert "## Variants against the main arm (non-inferiority)" in md
    assert "`test_accuracy`: 0.01 absolute" in md and "`test_bpc`: 1 % of the reference arm's mean" in md
    table = [line for line in md.splitlines() if line.startswith("| adopt | char_lstm1 | int8 |")]
    assert len(table) == 1 and "**worse**" in table[0] and "| 5 |" in table[0]
    assert "| int8 | 4 | 2 | 2 | 0 | 0 |" in md and "| bfloat16 | 4 | 4 | 0 | 0 | 0 |" in md
    assert (out / "plots" / "variants.png").stat().st_size > 1000


def test_fewer_than_five_paired_seeds_are_inconclusive_in_the_report(tmp_path):
    path = _store(tmp_path, lambda opt, variant: 0.0)
    store = ResultStore(path)
    res = analysis.load(path)
    arm = res.arm("mnist1d_cnn", "adam", "variant:int8")
    spec = next(r.spec for r in res.phase2 if r.hash == arm.hashes[0])
    store.put(arm.hashes[0], spec, {"status": "failed", "final": None, "curve": None, "seconds": 0.1, "error": "x"})
    store.close()
    rows = {(c.instance, c.optimizer, c.variant): c for c in judge.judge_variants(analysis.load(path))}
    c = rows[("mnist1d_cnn", "adam", "int8")]
    assert c.n == 4 and c.verdict == judge.INCONCLUSIVE and c.note == "n < 5"
    assert rows[("mnist1d_cnn", "adam", "bfloat16")].verdict == judge.NO_WORSE


def test_bench_run_takes_the_suite_as_an_option_too(tmp_path, capsys):
    from adamkit.cli import main

    assert main(["bench", "run", "--out", str(tmp_path / "o")]) == 2
    assert "name the suite to run" in capsys.readouterr().err
    assert main(["bench", "run", "smoke", "--suite", "quick", "--out", str(tmp_path / "o")]) == 2
    assert "two suites given" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text('[[problems]]\nname = "rosenbrok"\n')
    assert main(["bench", "run", "--suite", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "problems[0].name: unknown problem 'rosenbrok'" in capsys.readouterr().err


def test_bench_run_and_report_of_a_variant_suite_end_to_end(tmp_path, capsys):
    """A tiny variant suite through the CLI: every arm runs on the paired seeds, the run's summary counts the
    verdicts and the report has the table."""
    from adamkit.cli import main

    (tmp_path / "v.toml").write_text('''
name = "v"
optimizers = ["adam", "adopt"]
[protocol]
final_seeds = 5
[protocol.variants]
bfloat16 = { state_dtype = "bfloat16" }
int8 = { state_dtype = "int8" }
[protocol.margins]
test_accuracy = { absolute = 0.05 }
[[tasks]]
name = "mnist1d_cnn"
params = { synthetic = true }
steps = 20
eval_every = 10
tune = false
''')
    out = tmp_path / "out"
    assert main(["bench", "run", "--suite", str(tmp_path / "v.toml"), "--out", str(out), "--jobs", "1",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "30 runs done, 0 failed" in text
    assert "no tuning (fixed hyperparameters)" in text and "trials + defaults" not in text
    assert "variants against the main arm" in text and "  int8: " in text and "  bfloat16: " in text
    res = analysis.load(out)
    assert {k[2] for k in res.arms} == {"fixed", "variant:bfloat16", "variant:int8"}
    assert all(a.n == 5 for a in res.arms.values())
    assert main(["bench", "report", str(out)]) == 0
    md = (out / "report" / "report.md").read_text()
    assert "| adopt | mnist1d_cnn | int8 | test_accuracy (higher is better) |" in md
    assert "**Protocol.** No tuning: every optimizer runs its fixed hyperparameters" in md
    assert "a grid of log-spaced learning rates" not in md  # an untuned suite is not described as searched
