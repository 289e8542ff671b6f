"""The report: the practitioner table first, the judge's comparisons rendered honestly (no zero-width interval with
n > 1, a deterministic comparison as n = 1, never a firm verdict on a stand-in, never steps against epochs), only
what was measured in the headline, and the same files byte for byte from the same store."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from _report_store import SEEDS, Comparison, Verdict, claim, load, make_store, paired
from adamkit.bench import analysis, judge, registry, report
from adamkit.cli import main


def _write(store, out, verdicts=None, monkeypatch=None):
    if verdicts is not None:
        monkeypatch.setattr(judge, "judge_all", lambda res: verdicts)
    return (report.write_report(store, out, log=None) / "report.md").read_text()


def _sections(md: str) -> list[str]:
    return [line[3:] for line in md.splitlines() if line.startswith("## ")]


def _section(md: str, title: str) -> str:
    start = md.index(f"## {title}")
    nxt = md.find("\n## ", start + 3)
    return md[start:] if nxt < 0 else md[start:nxt]


def _better(res):
    """AGD against Adam on both tasks, as a judge would report it: the paired differences' mean and a t-like
    interval around it (the report renders whatever the judge gives)."""
    out = []
    for inst in ("fmnist_cnn", "fmnist_mlp"):
        d = paired(res, inst, "agd", "adam")
        out.append(Comparison(inst, "B", "tuned", "better", int(d.size), float(d.mean()), float(d.mean()),
                              float(d.mean()) - 0.002, float(d.mean()) + 0.002, 0.06, 0.12, 0.005, (0, 0)))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("rep") / "r.sqlite")


def test_the_first_section_is_the_practitioner_table(store, tmp_path, monkeypatch):
    """Every tuned alternative against tuned Adam on each task's own metric, by the judge's statistics, whatever
    the claims say (here the injected claim verdicts say nothing about the table)."""
    res = load(store)
    monkeypatch.setattr(judge, "experiment_of", lambda inst: ("paper", ""))  # tasks of the papers' kind: firm
    md = _write(store, tmp_path / "rep", [Verdict(claim(), [])], monkeypatch)
    assert _sections(md)[0] == "What to use: the practitioner table"
    first = _section(md, "What to use: the practitioner table")
    rows = [line for line in first.splitlines() if line.startswith("| image classification")]
    assert len(rows) == 2  # one row per task, grouped by family
    d = paired(res, "fmnist_cnn", "agd", "adam")  # +0.01 on every seed: more than the 0.005 band
    cnn = next(r for r in rows if "fmnist_cnn (10 steps, not tuned)" in r)  # every arm at fixed hyperparameters
    assert "**agd** (lr " in cnn and "**better**" in cnn  # better beyond the band: use the alternative
    assert f"agd: +{d.mean():.3g} test_accuracy" in cnn and f"n = {SEEDS}" in cnn
    assert "adabelief -0.005" in cnn  # the other alternatives, with their effects and verdicts
    adam = res.arm("fmnist_cnn", "adam", "fixed")
    assert f"| {adam.median:.3g} | not tuned |" in cnn  # Adam at its defaults; no tuned Adam on this task
    assert "not measured" not in first
    # where no alternative is better, the table says to use Adam with its rate
    without_agd = make_store(tmp_path / "no_agd.sqlite", optimizers=("adam", "adabelief"))
    first = _section(_write(without_agd, tmp_path / "eq"), "What to use: the practitioner table")
    rows = [r for r in first.splitlines() if r.startswith("| image classification")]
    assert len(rows) == 2 and all("**adam** (lr 0.001)" in r and "adabelief: -0.005" in r for r in rows)


def test_only_measured_claims_are_listed_and_the_rest_are_named_once(store, tmp_path, monkeypatch):
    res = load(store)
    absent = Verdict(claim("adabelief_lstm", "adabelief", instances=("char_lstm1",)),
                     [Comparison("char_lstm1", "B", "tuned", "not measured", note="no such instance")])
    md = _write(store, tmp_path / "rep", [Verdict(claim(), _better(res)), absent], monkeypatch)
    claims = _section(md, "Paper claims vs what we measured")
    table = [line for line in claims.splitlines() if line.startswith("| Paper")]
    assert len(table) == 2 and not any("not measured" in line for line in table)
    assert "1 of the 2 claims are not measured by this suite" in claims and "- `adabelief_lstm` (Paper)" in claims
    # each unmeasured claim names the shipped suites that run it (char_lstm1 with AdaBelief and Adam: full, paper)
    listed = next(line for line in claims.splitlines() if line.startswith("- `adabelief_lstm`"))
    assert "Run by: " in listed and "`full`" in listed and "`paper`" in listed and "`smoke`" not in listed
    assert (f"The newest committed `full` run, `{report.NEWEST_FULL_RUN}/` in the repository, measures the claims "
            "`full` runs") in claims
    root = Path(__file__).resolve().parents[2]  # the run it names is committed, complete, with its README
    assert (root / report.NEWEST_FULL_RUN / "results.sqlite").is_file()
    assert (root / report.NEWEST_FULL_RUN / "README.md").read_text().startswith("# `full` run")
    assert "not measured" not in _section(md, "What to use: the practitioner table")
    # a claim whose arms the suite plans but whose final runs are not stored yet is "not measured yet", apart
    pending = Verdict(claim("agd_ctr", instances=("fmnist_mlp",)),
                      [Comparison("fmnist_mlp", "B", "tuned", "not measured", note="no finished agd arm yet",
                                  pending=True)])
    claims = _section(_write(store, tmp_path / "pending", [Verdict(claim(), _better(res)), absent, pending],
                             monkeypatch), "Paper claims vs what we measured")
    assert "1 of the 3 claims are **not measured yet**" in claims and "1 of the 3 claims are not measured by" in claims
    yet = claims[claims.index("**not measured yet**"):claims.index("are not measured by")]
    assert "- `agd_ctr` (Paper)" in yet and "adabelief_lstm" not in yet
    # the real judge on this store: nothing "not measured" in any table either
    monkeypatch.undo()
    md = (report.write_report(store, tmp_path / "real", log=None) / "report.md").read_text()
    assert not [line for line in md.splitlines() if line.startswith("|") and "not measured" in line]


_INTERVAL = re.compile(r"\[([-+0-9.e]+), ([-+0-9.e]+)\], n = (\d+)")


def test_no_zero_width_interval_with_n_above_one_and_deterministic_as_n_1(store, tmp_path, monkeypatch):
    old_style = Comparison("fmnist_cnn", "B", "tuned", "supported", 5, 0.5, 0.5, 0.5, 0.5)  # an older judge's
    deterministic = Comparison("fmnist_mlp", "B", "tuned", "worse", 1, -0.25, deterministic=True)
    md = _write(store, tmp_path / "rep", [Verdict(claim(), [old_style, deterministic])], monkeypatch)
    for low, high, n in _INTERVAL.findall(md):
        assert not (low == high and int(n) > 1), (low, high, n)
    assert "fmnist_cnn: +0.5 test_accuracy, n = 5 (no interval)" in md  # equal differences: not "deterministic"
    assert "all 5 paired differences are equal: no sampling variation, no interval" in md
    assert "fmnist_mlp: -0.25 test_accuracy, n = 1 (deterministic: no interval)" in md


def test_the_tuned_against_defaults_gain_has_a_t_interval_and_none_when_every_pair_is_alike():
    from adamkit import _stats

    assert report.gain_text(np.zeros(10)) == "+0 on all 10 pairs (no interval)"  # the tuning chose the defaults
    assert report.gain_text(np.full(4, -0.5)) == "-0.5 on all 4 pairs (no interval)"
    assert report.gain_text(np.array([0.25])) == "+0.25 n=1"
    d = np.array([0.1, 0.3, 0.2, 0.5])
    mean, low, high = _stats.t_interval(d)
    assert low < mean < high and report.gain_text(d) == f"{mean:+.3g} [{low:.3g}, {high:.3g}] n=4"


def test_an_arm_with_no_finished_run_shows_no_share_of_seeds_and_no_steps(tmp_path):
    """An unfinished sweep: an arm whose runs are not stored yet has no median, so no '0%' of seeds reaching the
    target and no '∞' steps to it (it has not failed to reach it: it has not run)."""
    import sqlite3

    path = make_store(tmp_path / "r.sqlite")
    with sqlite3.connect(path) as db:
        assert db.execute("DELETE FROM runs WHERE problem = 'fmnist_mlp' AND optimizer = 'agd'").rowcount == SEEDS
    md = (report.write_report(path, tmp_path / "rep", log=None) / "report.md").read_text()
    overview = next(line for line in md.splitlines() if line.startswith("| fmnist_mlp | test_accuracy"))
    assert "– (0%)" not in overview and "(100%)" in overview  # the others reached it
    mlp = md[md.index("### fmnist_mlp"):]
    row = next(line for line in mlp.splitlines() if line.startswith("| agd | fixed |"))
    assert row.split("|")[6:8] == [" – ", " – "], row
    assert "Incomplete sweep" in md


def test_an_unfinished_sweep_says_its_practitioner_table_is_not_there_yet(tmp_path):
    import sqlite3

    path = make_store(tmp_path / "r.sqlite")
    with sqlite3.connect(path) as db:  # only Adam's runs finished: no alternative to compare with
        gone = db.execute("DELETE FROM runs WHERE optimizer != 'adam'").rowcount
    res = load(path)
    assert res.missing_final_runs() == res.missing_final_runs("B") == gone and res.missing_final_runs("A") == 0
    md = (report.write_report(path, tmp_path / "rep", log=None) / "report.md").read_text()
    first = _section(md, "What to use: the practitioner table")
    assert "Nothing here to act on yet" in first and f"{gone} final runs of Tier B tasks are not stored" in first
    assert f"**Incomplete sweep:** {gone} final runs are not in the store yet" in md


def test_a_stand_in_task_never_shows_a_firm_verdict(store, tmp_path, monkeypatch):
    res = load(store)
    for name in ("fmnist_cnn", "fmnist_mlp"):
        monkeypatch.setattr(registry.get_problem_class(name), "experiment", "stand-in", raising=False)
    worse = [Comparison(**{**x.__dict__, "verdict": "worse", "mean": -x.mean}) for x in _better(res)]
    md = _write(store, tmp_path / "rep", [Verdict(claim(), _better(res)), Verdict(claim("eadam_image", "eadam"),
                                                                                  worse)], monkeypatch)
    firm = ("better", "worse", "supported", "contradicted", "equivalent")
    for line in md.splitlines():
        if line.startswith("|") and ("fmnist_cnn" in line or "fmnist_mlp" in line):
            verdicts = re.findall(r"\*\*([a-z' -]+)\*\*", line)
            assert not set(verdicts) & set(firm), line
    assert "**consistent at stand-in scale**" in md and "**inconsistent at stand-in scale**" in md
    assert "the judge said better; a stand-in task gives no firm verdict" in md
    first = _section(md, "What to use: the practitioner table")
    assert "fmnist_cnn (10 steps, stand-in, not tuned)" in first and "**adam** (lr 0.001)" in first  # no switch


def test_a_budget_in_steps_is_never_compared_with_a_regime_in_epochs(store, tmp_path, monkeypatch):
    res = load(store)
    c = _better(res)[0]
    c.verdict, c.note = "outside the claim's regime", "budget 10 steps < the claim's 3 epochs"
    md = _write(store, tmp_path / "rep", [Verdict(claim(), [c])], monkeypatch)
    assert not re.search(r"\d+ steps? < the claim's \d+ epochs?", md)
    assert "the budget is in steps and the claim's regime in epochs (or back): not compared here" in md


def test_the_forest_time_to_target_and_curve_figures_are_in_the_report(store, tmp_path, monkeypatch):
    res = load(store)
    out = tmp_path / "rep"
    md = _write(store, out, [Verdict(claim(), _better(res))], monkeypatch)
    for name in ("forest_claims_B.png", "time_to_target_B.png", "curve_fmnist_cnn.png", "train_fmnist_cnn.png"):
        assert (out / "plots" / name).stat().st_size > 1000 and f"plots/{name}" in md
    assert "This store has no β2 sweep" not in md  # no counterexample at all: no counterexample section


def test_the_report_is_the_same_byte_for_byte_from_the_same_store(store, tmp_path):
    assert main(["bench", "report", str(store), "--out", str(tmp_path / "a")]) == 0
    assert main(["bench", "report", str(store), "--out", str(tmp_path / "b")]) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".png"]) >= 4
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    md = (a / "report.md").read_text()
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", md.split("**Sweep sessions**")[0])  # no time of writing


def test_the_report_says_where_the_runs_computed(store, tmp_path):
    """Runs stored without a device record (before devices were recorded) read as the CPU's; recorded CPU and GPU
    runs are counted per kind of device with what their records say."""
    from adamkit.bench.store import ResultStore

    n = load(store).store.count()["done"]
    md = (report.write_report(store, tmp_path / "old", log=None) / "report.md").read_text()
    assert f"**Device.** cpu: {n} runs (stored before devices were recorded)." in md
    gpu = {"device": "cuda:0", "torch": "2.13.0+cu128", "name": "NVIDIA H200", "cuda": "12.8", "cudnn": 91002,
           "capability": "9.0", "memory_gib": 139.8, "deterministic": True, "tf32": False}
    cpu = {"device": "cpu", "torch": "2.13.0", "name": "x86_64", "cpu_capability": "AVX2"}
    recorded = tmp_path / "recorded.sqlite"
    recorded.write_bytes(store.read_bytes())
    with ResultStore(recorded) as s:
        for i, run in enumerate(s.runs()):
            s.put(run["hash"], run["spec"], {**run, "device": gpu if i % 3 == 0 else cpu})
    text = report.device_text(load(recorded))
    on_gpu = len(range(0, n, 3))
    assert text.startswith(f"**Device.** cpu: {n - on_gpu} runs (x86_64, AVX2; torch 2.13.0); cuda (NVIDIA H200): "
                           f"{on_gpu} runs (")
    assert "CUDA 12.8, cuDNN 91002, compute capability 9.0, deterministic algorithms on, TF32 off" in text
    # CPU runs of two capabilities (a store resumed on another machine): each with its runs, not the last one's
    avx512 = {**cpu, "cpu_capability": "AVX512"}
    with ResultStore(recorded) as s:
        for i, run in enumerate(s.runs()):
            s.put(run["hash"], run["spec"], {**run, "device": avx512 if i % 3 == 1 else cpu})
    text = report.device_text(load(recorded))
    mixed = len(range(1, n, 3))
    assert text == f"**Device.** cpu: {n} runs (x86_64, AVX2: {n - mixed} runs, AVX512: {mixed} runs; torch 2.13.0)."


def test_a_wall_clock_row_timed_at_different_machine_speeds_is_marked(store, tmp_path):
    """A store resumed on a faster machine: a task whose runs were timed in sessions whose probes differ by more
    than PROBE_SPREAD is marked with the probes' range; one timed in one session is not."""
    import json
    import sqlite3

    copy = tmp_path / "resumed.sqlite"
    copy.write_bytes(store.read_bytes())
    db = sqlite3.connect(copy)
    hashes = [h for (h,) in db.execute("SELECT hash FROM runs ORDER BY hash")]
    db.execute("UPDATE runs SET finished_at = '2026-01-01T10:00:00'")
    db.execute("INSERT OR REPLACE INTO meta VALUES ('sessions', ?)", (json.dumps([
        {"started": "2026-01-01T09:00:00", "probe_us_per_step": 260.0},
        {"started": "2026-01-02T09:00:00", "probe_us_per_step": 106.0}]),))
    db.commit()
    one = report.step_costs(load(copy))
    assert one and not any("†" in row[0] for row in one)  # every run in the first session
    db.executemany("UPDATE runs SET finished_at = '2026-01-02T10:00:00' WHERE hash = ?",
                   [(h,) for h in hashes[::2]])  # half of them in the second, faster one
    db.commit()
    db.close()
    marked = [row[0] for row in report.step_costs(load(copy))]
    assert marked and all(key.endswith(" (†: machine probes 106–260 µs/step)") for key in marked), marked


def test_the_tuned_family_spread_counts_the_tuned_paper_configurations_and_not_sgd():
    """On the ResNet most of the Adam family runs as paper configurations tuned as their own (adabelief@cnn, ...):
    their medians belong to the family's spread; SGD's arm and the untuned paper-lr arms do not."""
    from types import SimpleNamespace as NS

    inst = NS(key="fmnist_resnet")
    arm = lambda median, n=10: NS(median=median, n=n)  # noqa: E731
    res = NS(main_arm=lambda i: "tuned", arms={
        ("fmnist_resnet", "adam", "tuned"): arm(0.915), ("fmnist_resnet", "adam", "defaults"): arm(0.912),
        ("fmnist_resnet", "agd", "paper:cnn"): arm(0.916), ("fmnist_resnet", "agd", "paper-lr:cnn"): arm(0.930),
        ("fmnist_resnet", "sgd", "tuned"): arm(0.900), ("fmnist_resnet", "adopt", "tuned"): arm(float("nan"), 0),
        ("mnist1d_cnn", "adam", "tuned"): arm(0.95)})
    assert sorted(report.family_medians(res, inst)) == [0.915, 0.916]


def test_the_defaults_are_said_to_be_the_papers_and_a_baselines_the_benchs():
    """SGD has no paper here: its defaults are the bench's, and the report says which (they are not 'paper
    defaults')."""
    from adamkit.bench.optimizers import BASELINES

    assert report.defaults_source(["adam", "adabelief"]) == "its paper's"
    lr, momentum = BASELINES["sgd"][1]["lr"], BASELINES["sgd"][1]["momentum"]
    assert report.defaults_source(["adam", "sgd"]) == f"its paper's; sgd's are the bench's, lr={lr}, momentum={momentum}"


def test_a_classifier_s_table_gives_each_arm_s_test_minus_training_loss(tmp_path):
    """Where the final metrics hold a test and a training loss, each arm's row gives the median gap between
    them (the train/test gap behind "generalises like SGD"); a task without them has no such column."""
    path = make_store(tmp_path / "r.sqlite", tasks=("fmnist_cnn",), losses=True)
    res = load(path)
    seeds = res.arm("fmnist_cnn", "adam", "fixed").seeds
    want = {o: float(np.median([0.40 + 0.01 * (s % 3) + (0.1 if o == "agd" else 0.0) - 0.25 for s in seeds]))
            for o in ("adam", "agd", "adabelief")}
    for o, gap in want.items():
        assert report.generalisation_gap(res, res.arm("fmnist_cnn", o, "fixed")) == pytest.approx(gap)
    table = _section(_write(path, tmp_path / "rep"), "Problems")
    assert "| test − training loss, median |" in table
    for o, gap in want.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {o} | fixed |"))
        assert row.split(" | ")[4] == report._fmt(gap)
    plain = _section(_write(make_store(tmp_path / "p.sqlite", tasks=("fmnist_cnn",)), tmp_path / "p"), "Problems")
    assert "test − training loss" not in plain


def test_the_tuned_row_of_an_instance_that_tunes_nothing_reads_fixed():
    """A counterexample runs each arm at its one learning rate: its comparisons are the judge's `tuned` row, but
    the table and the forest plot must not call them tuned."""
    from types import SimpleNamespace as NS
    res = NS(instances=[NS(key="reddi[beta2=0.1]", tune=False), NS(key="fmnist_cnn", tune=True)])
    assert report._row_label(res, NS(instance="reddi[beta2=0.1]", row="tuned")) == "fixed"
    assert report._row_label(res, NS(instance="fmnist_cnn", row="tuned")) == "tuned"
    assert report._row_label(res, NS(instance="fmnist_cnn", row="paper-lr")) == "paper-lr"


def test_a_task_s_own_default_length_is_not_shown_as_a_setting_when_the_suite_sets_the_budget(store, tmp_path):
    """The problem sections give the budget that ran; the task's default ``steps`` (what it would run without a
    budget) printed beside it read as a second, contradicting length."""
    md = (report.write_report(store, tmp_path / "rep", log=None) / "report.md").read_text()
    res = analysis.load(store)
    for inst in res.instances:
        assert inst.steps and "steps" in inst.params  # the store's tasks set a budget; the task has a default
        section = _section(md, "Problems").split(f"### {inst.key}\n", 1)[1]
        line = next(ln for ln in section.splitlines() if " — settings " in ln)
        assert "'steps'" not in line and f"budget {inst.steps} steps" in line
