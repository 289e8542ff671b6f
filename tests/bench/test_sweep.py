"""Sweeps: resumable after a kill, failures recorded, the report written, the CLI, the Ray executor."""
from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from adamkit.bench import analysis, protocol
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.registry import list_problems
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import load_suite
from adamkit.bench.sweep import WorkEstimate, missing_data, run_sweep

TINY = """
name = "tiny"
description = "a test suite"
optimizers = ["adam", "adabelief", "adopt", "agd"]
[protocol]
trials = 2
final_seeds = 2
[[problems]]
name = "rosenbrock"
steps = {steps}
[[problems]]
name = "adopt_counterexample"
grid = {{ beta2 = [0.1, 0.999] }}
steps = 60
eval_every = 10
tune = false
hparams = {{ lr = 0.01 }}
optimizers = ["adam", "adopt"]
"""


def _suite(tmp_path, steps=40):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(steps=steps))
    return path


def _all_planned(suite, store):
    plan = protocol.plan(suite, protocol.Lookup(store.finals(), store.curve, suite.smooth))
    assert plan.complete
    return {r.hash for r in plan.runs}


def test_sweep_stores_every_run_once_and_resumes_without_redoing(tmp_path):
    suite = load_suite(_suite(tmp_path))
    store = ResultStore(tmp_path / "r.sqlite")
    calls = []
    stats = run_sweep(suite, store, LocalExecutor(1), progress=lambda *a, **k: calls.append((a, k)))
    # no connection of the sweep outlives it (the heartbeat's closed: the store file is whole once it returns)
    assert not [t for t in threading.enumerate() if t.name == "adamkit-sweep-heartbeat"]
    planned = _all_planned(suite, store)
    assert stats.failed == 0 and stats.done == len(planned) == len(store.statuses())
    # progress after every run, with the sweep's own estimate of the time left: 0 once nothing is left
    per_run = [(a, k) for a, k in calls if not k.get("final")]
    assert [a[1] for a, _ in per_run] == list(range(1, len(planned) + 1))
    assert all(k["eta"] >= 0 for _, k in per_run) and per_run[-1][1]["eta"] == 0
    assert calls[-1][1].get("final") and calls[-1][0][1] == len(planned)  # the closing line
    assert set(store.statuses()) == planned
    before = {r["hash"]: (r["finished_at"], r["seconds"]) for r in store.runs()}
    again = run_sweep(suite, store, LocalExecutor(1))
    assert again.done == 0 and again.skipped == len(planned)
    # each sweep session is recorded with the machine's speed then (a probe), and nothing that names the host
    import json
    import socket
    sessions = json.loads(store.get_meta("sessions"))
    assert len(sessions) == 2 and all(s["probe_us_per_step"] > 0 and s["jobs"] == 1 for s in sessions)
    # and the CPU capability torch's kernels run with (their float rounding depends on it)
    assert all(s["cpu_capability"] == torch.backends.cpu.get_cpu_capability() for s in sessions)
    assert socket.gethostname() not in store.get_meta("sessions")
    assert {r["hash"]: (r["finished_at"], r["seconds"]) for r in store.runs()} == before
    # per-step metrics are stored with each run
    some = next(iter(planned))
    assert len(store.curve(some)["step"]) >= 2 and store.curve(some, "train")["loss"]


def test_a_time_limit_starts_no_run_after_it_and_the_same_call_resumes(tmp_path):
    """``time_limit``: the runs started before it are stored whole, no run starts after it, nothing stays claimed,
    and running again completes the sweep with the same runs as one sweep without a limit."""
    suite = load_suite(_suite(tmp_path))
    whole = ResultStore(tmp_path / "whole.sqlite")
    run_sweep(suite, whole, LocalExecutor(1))
    store = ResultStore(tmp_path / "r.sqlite")
    nothing = run_sweep(suite, store, LocalExecutor(1), time_limit=0)
    assert nothing.stopped and nothing.done == 0 and nothing.left > 0 and store.statuses() == {}
    # each stored run takes at least 0.3 s here (a slow progress callback), so a 0.5 s limit stops after 1 to 3
    stopped = run_sweep(suite, store, LocalExecutor(1), time_limit=0.5,
                        progress=lambda *a, **k: None if k.get("final") else time.sleep(0.3))
    assert stopped.stopped and 1 <= stopped.done <= 3 and stopped.left > 0
    assert len(store.statuses()) == stopped.done and set(store.statuses().values()) == {"done"}
    assert store.db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0  # nothing left claimed
    rest = run_sweep(suite, store, LocalExecutor(1))
    assert not rest.stopped and rest.skipped == stopped.done and rest.left == 0
    assert store.finals() == whole.finals()
    with pytest.raises(ValueError, match="time_limit must be a number of seconds >= 0"):
        run_sweep(suite, store, LocalExecutor(1), time_limit=-1)


def test_bench_run_time_limit_exits_3_with_what_is_left_and_rejects_a_bad_duration(tmp_path, capsys):
    from adamkit.bench.cli import parse_duration
    from adamkit.cli import main

    assert [parse_duration(t) for t in ("5400", "90m", "2h30m", "1h5m30s", "0.5", "45s")] == \
        [5400, 5400, 9000, 3930, 0.5, 45]
    assert [parse_duration(t) for t in ("", "-5", "2d", "h", "nan", "1m2h")] == [None] * 6
    suite = str(_suite(tmp_path))
    assert main(["bench", "run", suite, "--out", str(tmp_path / "o"), "--time-limit", "0", "--jobs", "1", "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "the time limit (0) is reached:" in out and "planned run(s) not started" in out \
        and "run the same command again to resume" in out
    assert main(["bench", "run", suite, "--out", str(tmp_path / "o"), "--time-limit", "soon"]) == 2
    assert capsys.readouterr().err.strip() == \
        "adamkit bench: --time-limit: expected seconds or a duration such as 90m or 2h30m, got 'soon'"
    assert main(["bench", "run", suite, "--out", str(tmp_path / "o"), "--time-limit", "1h", "--jobs", "1", "--quiet"]) == 0


def test_plan_against_a_store_counts_what_is_stored_and_what_is_left(tmp_path, capsys):
    """``estimate(suite, lookup, durations)`` / ``adamkit bench plan SUITE --out DIR``: the plan's stored runs
    with their measured seconds, and what is left: the runs planned and not stored, and for a search not settled
    its final arms and ε/δ grid, still to be planned."""
    from adamkit.cli import main

    path = _suite(tmp_path)
    suite = load_suite(path)
    fresh = protocol.estimate(suite)
    nothing = protocol.estimate(suite, protocol.Lookup({}), {})
    assert (nothing.runs, nothing.seconds, nothing.stored) == (fresh.runs, fresh.seconds, {})
    store = ResultStore.open_results(tmp_path / "o")
    run_sweep(suite, store, LocalExecutor(1))
    planned = _all_planned(suite, store)
    durations = store.durations()

    def against():
        return protocol.estimate(suite, protocol.Lookup(store.finals(), store.curve, suite.smooth),
                                 store.durations())
    done = against()
    assert done.runs == 0 and done.by_group == {}
    assert sum(n for n, _ in done.stored.values()) == len(planned) == len(durations)
    assert sum(sec for _, sec in done.stored.values()) == pytest.approx(sum(durations.values()))
    assert main(["bench", "plan", str(path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert f"stored: {len(planned)} runs of this plan" in out and "left: nothing (the sweep is complete)" in out
    # the tuned final arm of one search taken out of the store: exactly its runs are left
    plan = protocol.plan(suite, protocol.Lookup(store.finals(), store.curve, suite.smooth))
    finals = [r for r in plan.final if (r.instance, r.optimizer, r.arm) == ("rosenbrock", "adam", "tuned")]
    assert len(finals) == 2
    store.db.executemany("DELETE FROM runs WHERE hash = ?", [(r.hash,) for r in finals])
    store.db.commit()
    left = against()
    assert (left.runs, set(left.by_group)) == (2, {"rosenbrock"})
    assert sum(n for n, _ in left.stored.values()) == len(planned) - 2
    assert left.seconds == pytest.approx(sum(protocol.run_seconds(r.spec)[0] for r in finals))
    # paced: the model's figure times what the entry's stored runs took over the model's figure for them
    kept = {r.hash: r for r in plan.runs if r.instance == "rosenbrock" and r.hash not in {f.hash for f in finals}}
    kept = list(kept.values())  # (a run two arms share, such as the defaults, is one run)
    pace = sum(durations[r.hash] for r in kept) / sum(protocol.run_seconds(r.spec)[0] for r in kept)
    assert left.scale["rosenbrock"] == pytest.approx(pace) and pace != pytest.approx(1.0)
    assert left.measured_seconds == pytest.approx(left.seconds * pace)
    assert main(["bench", "plan", str(path), "--out", str(tmp_path / "o"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "left: 2 runs, about 0.0 CPU-hours (about 0.0 h of wall time at --jobs 1)" in out
    # a learning-rate trial taken out: that search is open again, so its final arm (its winner unknown) and
    # its ε grid are counted as still to come, beside the trial itself
    search = plan.searches[("rosenbrock", "adam")]
    grid = {t for t, _, kind in search.candidates if kind == "grid"}
    trial = next(r for r in plan.tuning if (r.instance, r.optimizer) == ("rosenbrock", "adam") and r.trial in grid)
    store.db.execute("DELETE FROM runs WHERE hash = ?", (trial.hash,))
    store.db.commit()
    reopened = against()
    eps = sum(1 for name, (low, high) in protocol.search_space(suite, "adam").items()
              for v in protocol.eps_grid(low, high, suite.eps_trials)
              if not math.isclose(v, protocol.bench_optimizers.defaults("adam")[name], rel_tol=1e-6))
    assert eps > 0
    assert reopened.runs == 1 + 2 + eps * len(suite.problems[0].tune_seeds)
    # the store of another suite is refused, in one line
    assert main(["bench", "plan", "quick", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "holds a sweep of suite 'tiny', not 'quick': name that suite, or give the results folder of this one")
    # a changed suite is noted: a corrected description (prose) leaves the runs as they were, a changed table not
    path.write_text(path.read_text().replace('description = "a test suite"', 'description = "a tiny test suite"'))
    assert main(["bench", "plan", str(path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "note: only the suite's description changed" in out and "tables changed" not in out
    path.write_text(path.read_text().replace("trials = 2", "trials = 3"))
    assert main(["bench", "plan", str(path), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "note: the suite's tables changed since this sweep started" in out and "description changed" not in out


def test_time_left_weighs_each_pending_run_by_the_cost_of_its_own_problem():
    work = WorkEstimate()
    work.start -= 10.0  # the sweep has run for 10 s of wall time ...
    for _ in range(4):
        work.observe("cheap", 1.0)
    work.observe("costly", 16.0)  # ... and got through 20 s of runs: 2 runs at a time
    work.add_pending({f"c{i}": "cheap" for i in range(10)} | {"x1": "costly", "x2": "costly"})
    assert work.eta() == pytest.approx((10 * 1.0 + 2 * 16.0) / 2.0, rel=1e-3)
    # a finished run leaves the pending set; an instance never seen costs the mean run so far
    work.observe("cheap", 1.0, run_hash="c0")
    work.later = {"unseen": 3}
    mean = (5 * 1.0 + 16.0) / 6
    assert work.eta() == pytest.approx((9 * 1.0 + 2 * 16.0 + 3 * mean) / (21.0 / 10.0), rel=1e-3)
    # with the planner's cost model, an instance not started costs what the model gives its runs, at this
    # machine's speed against the model: here the finished runs took half what it gives them (21 s for 42)
    work.model("cheap", 2.0)
    work.model("costly", 32.0)
    work.model("unseen", 100.0)
    assert work.eta() == pytest.approx((9 * 1.0 + 2 * 16.0 + 3 * 100.0 * 21.0 / 42.0) / (21.0 / 10.0), rel=1e-3)
    # runs stored by an earlier sweep teach costs but are not work done in this one
    fresh = WorkEstimate()
    fresh.observe("cheap", 5.0, here=False)
    fresh.add_pending({"a": "cheap"})
    assert fresh.eta() != fresh.eta()  # nothing done here yet: no rate, no estimate (nan)


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    suite = load_suite(_suite(tmp_path))
    store = ResultStore(tmp_path / "r.sqlite")
    monkeypatch.setenv("ADAMKIT_BENCH_FAIL", "agd")
    stats = run_sweep(suite, store, LocalExecutor(1))
    runs = store.runs()
    failed = [r for r in runs if r["status"] == "failed"]
    assert failed and all(r["optimizer"] == "agd" for r in failed)
    assert "failure injected" in failed[0]["error"]
    assert stats.failed == len(failed) and stats.done == len(runs) - len(failed) > 0
    # failed runs are not retried by default, and are with retry_failed once the cause is gone
    monkeypatch.delenv("ADAMKIT_BENCH_FAIL")
    assert run_sweep(suite, store, LocalExecutor(1)).done == 0
    retry = run_sweep(suite, store, LocalExecutor(1), retry_failed=True)
    assert retry.failed == 0 and retry.done >= len(failed)
    assert all(r["status"] == "done" for r in store.runs())


def _cli(*args):
    return [sys.executable, "-m", "adamkit.cli", "bench", *args]


def test_killed_sweep_resumes_where_it_stopped(tmp_path):
    suite_path = _suite(tmp_path, steps=400)
    out = tmp_path / "out"
    db = out / "results.sqlite"
    proc = subprocess.Popen(_cli("run", str(suite_path), "--out", str(out), "--jobs", "1", "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    with sqlite3.connect(db) as con:
                        n = con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
                if n >= 8:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        assert n >= 8, "the sweep did not store runs in time"
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    store = ResultStore(db)
    before = {r["hash"]: (r["finished_at"], r["seconds"], r["worker"]) for r in store.runs()}
    suite = load_suite(suite_path)
    assert 8 <= len(before) < len(protocol.plan(suite, protocol.Lookup({})).runs), "killed mid-sweep"
    stats = run_sweep(suite, store, LocalExecutor(1))
    after = {r["hash"]: (r["finished_at"], r["seconds"], r["worker"]) for r in store.runs()}
    assert stats.skipped == len(before), "every finished run is found"
    assert {h: after[h] for h in before} == before, "no finished run was redone"
    assert set(after) == _all_planned(suite, store), "no run is lost"
    assert stats.done == len(after) - len(before) and all(r["status"] == "done" for r in store.runs())


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """`adamkit bench run smoke` through the CLI, with the process pool (as `make test` runs it)."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    done = subprocess.run(_cli("run", "smoke", "--out", str(out), "--jobs", "2"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout + done.stderr


def test_bench_run_smoke(smoke_results):
    out, text = smoke_results
    assert "runs done, 0 failed" in text and "median final target metric" in text
    res = analysis.load(out)
    # every Tier B task ran through the sweep, except those whose data is missing here: skipped, with the command
    no_data = missing_data(res.suite)
    for key, command in no_data.items():
        assert key in text and command.split()[-1] in text and "adamkit data prepare" in text
    assert {i.problem for i in res.instances if i.tier == "B" and i.key not in no_data} | {
        res.instance(k).problem for k in no_data} == set(list_problems("B"))
    assert not any(a.failed for a in res.arms.values())
    for inst in res.instances:
        for o in inst.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            assert arm.n == (0 if inst.key in no_data else len(inst.final_seeds)), inst.key
            assert arm.missing == (len(inst.final_seeds) if inst.key in no_data else 0)
    # a second run finds everything stored
    again = subprocess.run(_cli("run", "smoke", "--out", str(out), "--jobs", "1", "--quiet"), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "0 runs done" in again.stdout


def test_report_is_written_with_its_plots(smoke_results, tmp_path):
    out, _ = smoke_results
    done = subprocess.run(_cli("report", str(out), "--out", str(tmp_path / "rep")), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    rep = tmp_path / "rep"
    md, html = (rep / "report.md").read_text(), (rep / "report.html").read_text()
    plots = sorted(p.name for p in (rep / "plots").glob("*.png"))
    for expected in ("traj_rosenbrock.png", "traj_abs_sum.png", "curve_rosenbrock.png", "lr_rosenbrock.png",
                     "profile_A_final.png", "beta2_adopt_counterexample.png",
                     "curve_digits_mlp.png", "train_digits_mlp.png"):  # (a task on packaged data: always run)
        assert expected in plots
        assert (rep / "plots" / expected).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{expected}" in md
    assert html.count("data:image/png;base64,") == len(plots), "the html embeds every plot"
    assert "nan%" not in md  # a task without a target (the GAN ring) shows no share of seeds reaching one
    assert "Paper claims vs what we measured" in md and "ADOPT (Taniguchi et al. 2024)" in html
    assert "Click-through prediction: AGD" in md
    # smoke is a check that everything runs, not a measurement: no claim gets a firm verdict
    table = md.split("## Paper claims vs what we measured")[1].split("\n## ")[0]
    table += md.split("## Counterexamples (fixed-rate toy problems)")[1].split("\n## ")[0]
    # the comparison rows (10 cells; the report lists only what the suite measured)
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| paper")
            and line.count(" | ") >= 9]
    assert len(rows) >= 3
    for row in rows:
        verdict = row.rstrip(" |").rsplit(" | ", 1)[1]
        assert "supported" not in verdict.replace("not supported", "") and "contradicted" not in verdict \
            and "mixed" not in verdict, row
        assert any(w in verdict for w in ("inconclusive", "not measured", "outside the claim's regime",
                                          "precondition not met", "at stand-in scale")), row
    # self-contained: no script and no link out (the embedded images' base64 text may spell "http" by chance)
    body = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html.split("<body>")[1])
    assert "<script" not in html and "http" not in body, "self-contained"


def test_report_of_an_empty_folder_fails_clearly(tmp_path, capsys):
    from adamkit.cli import main

    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "no sweep stored here" in capsys.readouterr().err


def test_bench_list_and_bad_suite(tmp_path, capsys):
    from adamkit.cli import main

    assert main(["bench", "list"]) == 0
    text = capsys.readouterr().out
    for name in ("rosenbrock", "adopt_counterexample", "logreg_breast_cancer", "smoke", "quick", "full",
                 "tasks_quick", "paper", "fmnist_cnn"):
        assert name in text
    (tmp_path / "bad.toml").write_text('[[problems]]\nname = "rosenbrok"\n')
    assert main(["bench", "run", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "problems[0].name: unknown problem 'rosenbrok'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    """The Ray instance the Ray executor starts for itself (``start_local_ray``), shared by the tests below."""
    ray = pytest.importorskip("ray")
    from adamkit.bench.executors import start_local_ray

    if ray.is_initialized():
        ray.shutdown()
    start_local_ray(2)
    yield ray
    ray.shutdown()


def test_ray_executor_stores_the_same_results_as_local(tmp_path, local_ray):
    from adamkit.bench.executors import RayExecutor

    suite = load_suite(_suite(tmp_path, steps=30))
    local = ResultStore(tmp_path / "local.sqlite")
    run_sweep(suite, local, LocalExecutor(1))
    ray_store = ResultStore(tmp_path / "ray.sqlite")
    stats = run_sweep(suite, ray_store, RayExecutor(jobs=2))
    assert stats.failed == 0
    assert local.finals() == ray_store.finals()
    assert set(local.statuses()) == set(ray_store.statuses())


def _loopback(host: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(host.strip("[]"))
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, host, port) of every listening TCP socket of ``pids`` (Linux: /proc/net/tcp{,6})."""
    import ipaddress

    listening = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hexaddr, hexport = fields[1].split(":")
            raw = bytes.fromhex(hexaddr)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))  # each 32-bit word little-endian
            listening[fields[9]] = (str(ipaddress.ip_address(raw)), int(hexport, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                out.append((pid, *listening[target[8:-1]]))
    return out


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the listening sockets from /proc")
def test_the_local_ray_instance_listens_only_on_loopback(local_ray):
    """Issue 14 item 20: GCS, raylet, object manager, runtime-env agent, workers and driver: 127.0.0.1 only."""
    ray = local_ray
    from adamkit.bench.executors import ray_addresses

    @ray.remote(num_cpus=1)
    def where():
        import ray as r

        return r._private.worker.global_worker.node_ip_address, os.getpid()

    worker_hosts = ray.get([where.remote() for _ in range(2)])  # (so that workers run)
    assert all(host == "127.0.0.1" for host, _ in worker_hosts), worker_hosts
    assert all(_loopback(host) for host in ray_addresses().values()), ray_addresses()
    assert all(n["NodeManagerAddress"] == "127.0.0.1" for n in ray.nodes())
    sockets = _listening_sockets(_descendants(os.getpid()))
    exposed = [s for s in sockets if not _loopback(s[1])]
    assert not exposed, f"Ray components listen beyond loopback: {exposed}"
    assert len({pid for pid, _, _ in sockets}) >= 4, sockets  # driver, GCS, raylet, a worker at least
    assert {pid for _, pid in worker_hosts} <= {pid for pid, _, _ in sockets}, "the workers' servers were seen"
    # what the session logs say ("Listening to address ...", "Initializing worker at address: HOST:PORT")
    import re

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    text = "\n".join(p.read_text(errors="replace") for p in logs.glob("*") if p.is_file())
    listening = re.findall(r"Listening to address (\S+?),", text)
    workers = re.findall(r"Initializing worker at address: (\S+?):\d+", text)
    assert listening and workers, "the session logs name the addresses"
    assert all(_loopback(h) for h in listening + workers), (listening, workers)


def test_the_sweep_runs_the_search_in_stages_until_it_is_bracketed_or_out_of_extensions(tmp_path):
    from adamkit.bench.suite import parse_suite

    suite = parse_suite({"name": "stages", "optimizers": ["adam"],
                         "protocol": {"trials": 3, "extend": 1, "final_seeds": 1},
                         "problems": [{"name": "rosenbrock", "steps": 10, "lr": [1e-6, 1e-5]}]})
    store = ResultStore(tmp_path / "r.sqlite")
    stats = run_sweep(suite, store, LocalExecutor(1))
    res = analysis.load(tmp_path / "r.sqlite")
    search = res.searches[("rosenbrock", "adam")]
    # rates far too small: the best is the highest, the grid grows by a decade (2 rates at half-decade spacing)
    assert search.extensions == ["high"] and search.bracketed is False
    assert len(search.lr_grid) == 5 and search.lr_grid[-1] > 5e-5
    assert stats.failed == 0 and stats.done == len(store.statuses()) == len(_all_planned(suite, store))
    assert res.arm("rosenbrock", "adam", "tuned").n == 1 and res.version == protocol.BENCH_VERSION


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers' parent-death signal is Linux's")
def test_a_killed_sweep_leaves_no_worker_running(tmp_path):
    """SIGKILL gives the sweep no chance to stop its process pool: the workers end with it (PR_SET_PDEATHSIG)
    instead of finishing their runs, which nobody would store, for minutes."""
    suite_path = tmp_path / "long.toml"
    suite_path.write_text('name = "long"\noptimizers = ["adam"]\n[protocol]\ntrials = 2\nfinal_seeds = 1\n'
                          '[[problems]]\nname = "rosenbrock"\nsteps = 2000000\neval_every = 100000\n')
    proc = subprocess.Popen(_cli("run", str(suite_path), "--out", str(tmp_path / "out"), "--jobs", "2", "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and len(workers) < 2:  # the pool's workers, busy with their runs
            workers = [c for c in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
            assert proc.poll() is None
            time.sleep(0.2)
        assert len(workers) >= 2, "the sweep did not start its workers in time"
        time.sleep(3)  # past the workers' initialiser
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:  # (do not leave them behind if the test fails)
        os.kill(w, signal.SIGKILL)
    assert not alive, "workers outlived the killed sweep"


def test_the_report_names_each_sessions_cpu_capability_and_warns_when_they_differ():
    from types import SimpleNamespace

    from adamkit.bench.report import sessions_text

    def res(*caps):
        sessions = [{"started": "2026-12-02T03:27:51", "jobs": 2, "probe_us_per_step": 289.0,
                     **({"cpu_capability": c} if c else {})} for c in caps]
        return SimpleNamespace(store=SimpleNamespace(sessions=lambda: sessions))

    one = sessions_text(res("AVX512"))
    assert "probe 289 µs/step, CPU AVX512)" in one and "capabilities" not in one
    assert "CPU" not in sessions_text(res(None))  # a store recorded before the field: as it was
    mixed = sessions_text(res("AVX2", "AVX512"))
    assert "CPUs of 2 capabilities (AVX2, AVX512)" in mixed and "float rounding" in mixed
