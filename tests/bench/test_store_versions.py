"""The store records its sweep without machine paths, migrates older stores, and reads them by their own rules."""
from __future__ import annotations

import json
import sqlite3

from adamkit.bench import analysis, protocol, report
from adamkit.bench.store import MAX_TRAIN_POINTS, ResultStore, thin_training_curve
from adamkit.bench.suite import load_suite, parse_suite
from adamkit.bench.sweep import bench_record

OLD_SCHEMA = """
CREATE TABLE runs (hash TEXT PRIMARY KEY, status TEXT NOT NULL, problem TEXT NOT NULL, optimizer TEXT NOT NULL,
    seed INTEGER NOT NULL, spec TEXT NOT NULL, final TEXT, error TEXT, seconds REAL, worker TEXT, finished_at TEXT);
CREATE TABLE curves (hash TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def test_an_old_store_is_migrated_and_read_by_the_version_1_rules(tmp_path):
    suite = parse_suite({"name": "old", "optimizers": ["adam", "adopt"], "protocol": {"final_seeds": 2},
                         "problems": [{"name": "rosenbrock", "steps": 5, "trials": 2}]})
    path = tmp_path / "results.sqlite"
    con = sqlite3.connect(path)
    con.executescript(OLD_SCHEMA)
    con.execute("INSERT INTO meta VALUES ('suite', ?)",
                (json.dumps({"source": "/home/someone/suites/old.toml", "suite": suite.raw}),))
    inst = suite.problems[0]
    for opt in ("adam", "adopt"):  # a version-1 sweep: two random trials + defaults on seed 0, finals on 1000, 1001
        for trial, hp in enumerate([{"lr": 0.002}, {"lr": 0.03}, {}]):
            for seed, arm in [(0, "tune"), (1000, "final"), (1001, "final")]:
                if arm == "final" and hp.get("lr") == 0.002:
                    continue  # the losing trial has no final runs
                spec = protocol.make_spec(inst, opt, hp, seed)
                gap = {0.002: 1.0, 0.03: 0.1}.get(hp.get("lr"), 0.5) + seed * 1e-6
                con.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                            (protocol.run_hash(spec), "done", "rosenbrock", opt, seed, json.dumps(spec),
                             json.dumps({"gap": gap, "dist": gap, "diverged": False, "steps": 5}), None, 0.1, "w",
                             "2026-11-22T00:00:00"))
    con.commit()
    con.close()
    stored = path.read_bytes()
    res = analysis.load(path)
    assert res.version == 1 and res.bench == {}
    assert path.read_bytes() == stored  # reading (a report) leaves the store as it was: a committed one stays clean
    assert res.suite.optimizers == ("adam", "adopt")  # no baseline in a version-1 sweep
    tuned = res.arm("rosenbrock", "adam", "tuned")
    assert tuned.hparams == {"lr": 0.03} and tuned.n == 2 and tuned.missing == 0
    assert res.arm("rosenbrock", "adopt", "defaults").n == 2
    text = report.version_text(res)
    assert f"newer analysis (version {protocol.BENCH_VERSION}) than its runs (version 1" in text
    ResultStore(path).close()  # a writer (a resumed sweep) brings it to this schema: additive columns only
    assert {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(runs)")} >= {"bench_version", "device"}
    assert analysis.load(path).arm("rosenbrock", "adam", "tuned").hparams == {"lr": 0.03}


def test_a_sweep_records_its_suite_by_name_and_hash_and_its_benchmark_version(tmp_path):
    suite = load_suite("smoke")
    stored = json.loads(suite.to_json())
    assert stored["source"] == "smoke.toml" and "/" not in stored["source"]
    record = bench_record(suite)
    assert record["version"] == protocol.BENCH_VERSION and record["suite"] == "smoke"
    assert record["suite_sha256"] == load_suite("smoke").content_hash() and len(record["claims_sha256"]) == 12
    changed = parse_suite({**suite.raw, "description": "other"}, "x.toml")
    assert changed.content_hash() != suite.content_hash()
    store = ResultStore(tmp_path / "r.sqlite")
    spec = {"problem": "p", "optimizer": "adam", "seed": 0}
    store.put("h", spec, {"status": "done", "final": {"gap": 1.0}, "seconds": 1.0, "bench_version": 2,
                          "curve": {"train_step": list(range(1, 5001)), "loss": [1.0] * 5000, "eval_step": [0, 5000],
                                    "eval:gap": [2.0, 1.0]}})
    assert store.run_versions() == {2: 1}
    assert len(store.curve("h", "train")["step"]) <= MAX_TRAIN_POINTS + 1 and store.curve("h")["gap"] == [2.0, 1.0]


def test_thinning_keeps_the_last_point_and_leaves_short_curves_alone():
    short = {"train_step": [1, 2], "loss": [1.0, 0.5]}
    assert thin_training_curve(short) is short
    long = thin_training_curve({"train_step": list(range(1, 4002)), "loss": list(range(4001))})
    assert long["train_step"][0] == 1 and long["train_step"][-1] == 4001 and len(long["loss"]) == len(long["train_step"])


def test_reading_a_store_writes_nothing_beside_it_nor_in_it(tmp_path):
    """A report's reading (``read_only=True``) of a write-ahead-log store leaves its folder as it was: no schema
    change, no ``-wal``/``-shm`` file beside a committed store; a store being written is still read whole."""
    path = tmp_path / "results.sqlite"
    store = ResultStore(path)
    store.put("h", {"problem": "p", "optimizer": "adam", "seed": 0},
              {"status": "done", "final": {"gap": 1.0}, "seconds": 1.0, "curve": None})
    store.close()
    assert path.read_bytes()[18:20] == b"\x02\x02"  # the store keeps a write-ahead log
    stored = path.read_bytes()
    with ResultStore(path, read_only=True) as reader:
        assert [r["hash"] for r in reader.runs()] == ["h"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.sqlite"] and path.read_bytes() == stored
    with ResultStore(path) as writer:  # a sweep writing it: its reader sees the log's rows
        writer.put("g", {"problem": "p", "optimizer": "adam", "seed": 1},
                   {"status": "done", "final": {"gap": 2.0}, "seconds": 1.0, "curve": None})
        with ResultStore(path, read_only=True) as reader:
            assert sorted(r["hash"] for r in reader.runs()) == ["g", "h"]


def test_an_empty_store_file_is_no_sweep_in_one_line(tmp_path, capsys):
    from adamkit.cli import main

    (tmp_path / "results.sqlite").write_bytes(b"")
    assert main(["bench", "report", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("adamkit bench: ") and "\n" not in err
    assert "no sweep stored here (the file is empty; run `adamkit bench run SUITE --out DIR` first)" in err
    assert (tmp_path / "results.sqlite").read_bytes() == b""  # and it is left as it was
