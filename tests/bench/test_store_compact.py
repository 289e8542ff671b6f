"""`adamkit bench compact`: a store thinned for committing keeps every number and figure of its report."""
from __future__ import annotations

import re

import pytest

from adamkit.bench import analysis, protocol
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.report import write_report
from adamkit.bench.store import ResultStore, target_key, thin_indices
from adamkit.bench.suite import load_suite
from adamkit.bench.sweep import run_sweep
from adamkit.cli import main

SUITE = """
name = "compact"
optimizers = ["adam", "adabelief"]
[protocol]
trials = 3
final_seeds = 2
[[problems]]
name = "rosenbrock"
steps = 300
target = 0.5
[[problems]]
name = "quadratic_deep"
steps = 120
eval_every = 2
"""


def _report_text(folder, out):
    md = (write_report(folder, out, log=lambda *a: None) / "report.md").read_text()
    return re.sub(r"report written \d{4}-\d\d-\d\d \d\d:\d\d", "report written <time>", md)


def test_thin_indices_keep_the_first_the_tail_and_about_the_asked_number():
    assert thin_indices(50, 100, 10) == list(range(50))
    keep = thin_indices(1001, 100, 10)
    assert keep[0] == 0 and keep[-10:] == list(range(991, 1001)) and 90 <= len(keep) <= 110
    assert keep == sorted(set(keep))


def test_a_compacted_store_gives_the_same_report_and_selection(tmp_path):
    suite_file = tmp_path / "compact.toml"
    suite_file.write_text(SUITE)
    folder = tmp_path / "out"
    with ResultStore.open_results(folder) as store:
        run_sweep(load_suite(suite_file), store, LocalExecutor(1))
    before = _report_text(folder, tmp_path / "before")
    assert "**Sweep sessions** (1;" in before and "µs/step" in before
    res = analysis.load(folder)
    winners = {k: (s.winner, s.scores) for k, s in res.searches.items()}
    steps_before = {k: a.steps_to_target for k, a in res.arms.items()}
    some = next(h for h in res.finals if res.store.curve(h)["step"][-1:] == [300])
    whole = res.store.curve(some)
    size = res.store.path.stat().st_size
    res.store.close()

    assert main(["bench", "compact", str(folder), "--eval-points", "40", "--train-points", "30"]) == 0
    res = analysis.load(folder)
    thinned = res.store.curve(some)
    assert 30 <= len(thinned["step"]) <= 50 and thinned["step"][0] == 0 and thinned["step"][-10:] == whole["step"][-10:]
    assert thinned["gap"][-10:] == whole["gap"][-10:]  # what a selection averages is kept whole
    assert len(res.store.curve(some, "train")["step"]) <= 40
    key = target_key("gap", 0.5, False)
    kept = res.finals[some]["steps_to_target"][key]
    first = next((s for s, v in zip(whole["step"], whole["gap"]) if v <= 0.5), None)
    assert kept == (None if first is None else float(first))  # exact, from the whole curve
    assert {k: (s.winner, s.scores) for k, s in res.searches.items()} == winners
    assert {k: a.steps_to_target for k, a in res.arms.items()} == steps_before
    assert res.store.path.stat().st_size < size
    res.store.close()
    assert _report_text(folder, tmp_path / "after") == before
    # compacting again changes nothing: a thinned curve is neither thinned again nor used for a target
    with ResultStore(folder / "results.sqlite") as store:
        assert store.compact({some: [("gap", 0.1, False)]})["thinned"] == 0
        assert target_key("gap", 0.1, False) not in (store.finals()[some].get("steps_to_target") or {})


def test_compact_errors_are_one_line(tmp_path, capsys):
    assert main(["bench", "compact", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adamkit bench: ") and "\n" not in err and "no sweep stored here" in err
    assert main(["bench", "compact", str(tmp_path), "--eval-points", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--eval-points must be at least 12" in err and "\n" not in err
    with pytest.raises(ValueError, match="eval_points"):
        ResultStore(tmp_path / "s.sqlite").compact({}, eval_points=3)
