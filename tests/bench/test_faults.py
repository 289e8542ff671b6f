"""Issue 14 ("never silent"): faults of the results store, the suite files and the sweep's environment end in one
line naming the file, key or argument and what to do (exit status 2), never a traceback; nothing is lost."""
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the _faults helpers)

from _faults import read_only, read_only_file, tiny_filesystem  # noqa: E402

from adamkit.bench import sweep as sweep_module  # noqa: E402
from adamkit.bench.executors import LocalExecutor  # noqa: E402
from adamkit.bench.store import ResultStore  # noqa: E402
from adamkit.bench.suite import load_suite  # noqa: E402
from adamkit.bench.sweep import run_sweep  # noqa: E402
from adamkit.cli import main  # noqa: E402

SUITE = """
name = "faults"
optimizers = ["adam", "adopt"]
[protocol]
trials = 2
final_seeds = 2
[[problems]]
name = "rosenbrock"
steps = 30
"""


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "faults.toml"
    path.write_text(SUITE)
    return path


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert err.startswith("adamkit bench: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def _stored_sweep(folder: Path, suite_file: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with ResultStore.open_results(folder) as store:
        run_sweep(load_suite(suite_file), store, LocalExecutor(1))
    return folder


# ------------------------------------------------------------------ item 11: the store's faults


def test_a_garbage_results_store_is_one_line_error(tmp_path, suite_file, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.sqlite").write_bytes(os.urandom(4096))
    assert main(["bench", "run", str(suite_file), "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, str(out / "results.sqlite"), "not an adamkit results store")
    assert main(["bench", "report", str(out)]) == 2
    _one_line_error(capsys, str(out / "results.sqlite"), "not an adamkit results store")


def test_a_truncated_results_store_is_one_line_error(tmp_path, suite_file, capsys):
    out = _stored_sweep(tmp_path / "out", suite_file)
    db = out / "results.sqlite"
    data = db.read_bytes()
    for name in ("results.sqlite-wal", "results.sqlite-shm"):
        (out / name).unlink(missing_ok=True)
    db.write_bytes(data[: len(data) // 2])
    assert main(["bench", "run", str(suite_file), "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, str(db), "damaged", "move it away")
    assert main(["bench", "report", str(out)]) == 2
    _one_line_error(capsys, str(db), "damaged")


def test_a_read_only_out_folder_is_one_line_error(tmp_path, suite_file, capsys):
    with read_only(tmp_path / "ro") as ro:
        assert main(["bench", "run", str(suite_file), "--out", str(ro), "--quiet"]) == 2
        _one_line_error(capsys, str(ro), "writable --out")
        assert main(["bench", "run", str(suite_file), "--out", str(ro / "sub"), "--quiet"]) == 2
        _one_line_error(capsys, str(ro / "sub"), "writable --out")
    stored = _stored_sweep(tmp_path / "stored", suite_file)
    with read_only(stored):  # a finished sweep in a read-only folder: resuming it cannot write
        assert main(["bench", "run", str(suite_file), "--out", str(stored), "--quiet"]) == 2
        _one_line_error(capsys, "results.sqlite", "writable --out")


def test_a_full_disk_mid_sweep_is_one_line_error_and_keeps_the_stored_runs(tmp_path, suite_file, capsys,
                                                                           monkeypatch):
    """The write of the fourth run fails with ENOSPC: the sweep stops with one line, the three runs are kept."""
    out = tmp_path / "out"
    real_put = ResultStore.put
    calls = []

    def put(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "put", put)
    assert main(["bench", "run", str(suite_file), "--out", str(out), "--quiet", "--jobs", "1"]) == 2
    _one_line_error(capsys, "results.sqlite", "no space left", "run the same command again")
    monkeypatch.undo()
    with ResultStore.open_results(out) as store:
        assert store.count() == {"done": 3}


def test_a_full_filesystem_mid_sweep_is_one_line_error(tmp_path, suite_file, capsys):
    """The same on a real full filesystem: a tmpfs too small for the sweep's store."""
    with tiny_filesystem(tmp_path / "tiny", kib=96) as tiny:
        code = main(["bench", "run", str(suite_file), "--out", str(tiny / "out"), "--quiet", "--jobs", "1"])
        assert code == 2
        _one_line_error(capsys, "out", "full")


def _fault_after_puts(monkeypatch, count: int, fault):
    """``fault()`` (a context manager, entered until the test ends) just before the store's ``count``-th result."""
    real_put = ResultStore.put
    calls, stack = [], contextlib.ExitStack()

    def put(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            stack.enter_context(fault())
        return real_put(self, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "put", put)
    return stack


@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_store_made_read_only_mid_sweep_stops_it_in_one_line_and_the_same_command_resumes(
        tmp_path, suite_file, capsys, monkeypatch, what):
    """Issue 25 item 5: the store (or its folder) made read-only while the sweep runs. SQLite keeps its files open
    and went on writing, or failed later with a bare "OperationalError: disk I/O error"; the sweep stops at its
    next write, naming the store and how to resume, and the runs stored before are kept."""
    out = tmp_path / "out"
    args = ["bench", "run", str(suite_file), "--out", str(out), "--quiet", "--jobs", "1"]
    if what == "folder":
        fault = lambda: read_only(out)  # noqa: E731
    else:  # the file alone: a read-only bind mount of it (root), or its mode
        fault = lambda: read_only_file(out / "results.sqlite")  # noqa: E731
    with _fault_after_puts(monkeypatch, 3, fault):
        assert main(args) == 2
        err = _one_line_error(capsys, str(out / "results.sqlite"), "cannot write", "read-only",
                              "run the same command again to resume")
        assert "2 runs are stored" in err
    monkeypatch.undo()
    with ResultStore.open_results(out) as store:
        assert store.count() == {"done": 2}
    assert main(args) == 0  # writable again: the same command resumes
    assert main(["bench", "run", str(suite_file), "--out", str(tmp_path / "straight"), "--quiet", "--jobs", "1"]) == 0
    capsys.readouterr()
    with ResultStore.open_results(out) as store, ResultStore.open_results(tmp_path / "straight") as straight:
        assert store.count() == straight.count() and store.count()["done"] > 2  # every run a straight sweep makes


def test_a_store_removed_mid_sweep_stops_it_in_one_line(tmp_path, suite_file, capsys, monkeypatch):
    """The store removed (or replaced by a copy) while the sweep runs: SQLite went on writing the removed file, and
    the sweep reported its runs done while they were lost with it."""
    out = tmp_path / "out"

    @contextlib.contextmanager
    def removed():
        (out / "results.sqlite").rename(out / "moved.sqlite")
        yield

    with _fault_after_puts(monkeypatch, 3, removed):
        assert main(["bench", "run", str(suite_file), "--out", str(out), "--quiet", "--jobs", "1"]) == 2
    _one_line_error(capsys, str(out / "results.sqlite"), "cannot write", "removed, moved or replaced",
                    "run the same command again")


def test_a_disk_io_error_of_the_store_says_it_cannot_be_written_and_how_to_resume(tmp_path):
    """SQLite's "disk I/O error" (SQLITE_IOERR: a store whose files were made unwritable or removed under it, or a
    failing disk) was passed on as a bare "OperationalError: disk I/O error"."""
    from adamkit.bench.store import store_error

    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorname = "SQLITE_IOERR_WRITE"
    for error in (exc, sqlite3.OperationalError("disk I/O error"), OSError(errno.EIO, os.strerror(errno.EIO))):
        message = str(store_error(tmp_path / "results.sqlite", error))
        assert message.startswith(f"cannot write {tmp_path / 'results.sqlite'} (") and "\n" not in message
        assert "run the same command again to resume" in message, message


def test_report_into_a_read_only_folder_is_one_line_error(tmp_path, suite_file, capsys):
    stored = _stored_sweep(tmp_path / "stored", suite_file)
    with read_only(tmp_path / "ro") as ro:
        assert main(["bench", "report", str(stored), "--out", str(ro)]) == 2
        _one_line_error(capsys, str(ro), "writable folder")
    with read_only(stored):  # the default report folder, RESULTS/report, in a read-only results folder
        assert main(["bench", "report", str(stored)]) == 2
        _one_line_error(capsys, str(stored / "report"), "--out")


# ------------------------------------------------------------------ item 17


def test_report_on_a_missing_folder_does_not_create_it(tmp_path, capsys):
    missing = tmp_path / "no" / "such"
    assert main(["bench", "report", str(missing)]) == 2
    _one_line_error(capsys, str(missing), "no sweep stored here")
    assert not (tmp_path / "no").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["bench", "report", str(empty)]) == 2
    _one_line_error(capsys, "no sweep stored here")
    assert list(empty.iterdir()) == [], "no empty store is created"


# ------------------------------------------------------------------ item 12: suite values checked at load time

@pytest.mark.parametrize("entry, key, message", [
    ("hparams = { lr = -1.0 }", "problems[0].hparams.lr", "lr must be a finite number >= 0"),
    ("hparams = { betas = [0.9] }", "problems[0].hparams.betas", "betas must be a pair"),
    ("hparams = { betas = [0.9, 1.5] }", "problems[0].hparams.betas", "betas[1] must be in [0, 1)"),
    ("hparams = { eps = -1e-8 }", "problems[0].hparams.eps", "eps must be a finite number >= 0"),
    ("hparams = { lr = nan }", "problems[0].hparams.lr", "lr must be a finite number >= 0, got nan"),
    ("timeout = -1", "problems[0].timeout", "expected seconds >= 0"),
])
def test_suite_values_are_checked_when_the_suite_loads(tmp_path, capsys, entry, key, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'optimizers = ["adam", "adopt"]\n[[problems]]\nname = "rosenbrock"\nsteps = 5\n{entry}\n')
    from adamkit.bench.suite import SuiteError

    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert str(err.value).startswith(f"suite {str(path)!r}: {key}: ") and message in str(err.value), str(err.value)
    out = tmp_path / "out"
    assert main(["bench", "run", str(path), "--out", str(out), "--quiet"]) == 2
    _one_line_error(capsys, key, message)
    assert not out.exists(), "nothing is run or stored"


def test_every_shipped_suite_passes_the_value_checks():
    from adamkit.bench.suite import SHIPPED

    for name in SHIPPED:
        assert load_suite(name).problems


# ------------------------------------------------------------------ item 16: concurrent sweeps share the work


def test_two_concurrent_sweeps_on_one_store_never_do_the_same_run(tmp_path, suite_file, monkeypatch):
    import threading
    import time
    from collections import Counter

    from adamkit.bench import executors
    from adamkit.bench.protocol import run_hash as protocol_hash

    executed = Counter()
    real = executors.execute

    def slow_execute(spec):
        executed[protocol_hash(spec)] += 1
        time.sleep(0.02)  # long enough for the two sweeps to overlap all along
        return real(spec)

    monkeypatch.setattr(executors, "execute", slow_execute)
    suite = load_suite(suite_file)
    db = tmp_path / "r.sqlite"
    ResultStore(db).close()
    stats, errors = {}, []

    def sweep(name):
        try:
            with ResultStore(db) as store:
                stats[name] = run_sweep(suite, store, LocalExecutor(1))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with ResultStore(db) as store:
        stored = store.statuses()
        assert set(stored.values()) == {"done"}
    assert set(executed) == set(stored) and max(executed.values()) == 1, "no run was done twice"
    assert stats["a"].done + stats["b"].done == len(stored)
    assert stats["a"].done and stats["b"].done, "both sweeps worked"
    assert stats["a"].shared + stats["b"].shared >= 1


def test_claims_of_a_dead_or_expired_sweep_are_taken_over(tmp_path):
    import socket

    from adamkit.bench.store import owner_alive

    with ResultStore(tmp_path / "r.sqlite") as store:
        other_host = "elsewhere:1:abc"
        assert store.claim("h1", other_host, lease=60) == "claimed"
        assert store.claim("h1", "me:2:def", lease=60, alive=owner_alive) == "busy"  # live lease elsewhere
        assert store.claim("h2", other_host, lease=-1) == "claimed"  # expired at once
        assert store.claim("h2", "me:2:def", lease=60, alive=owner_alive) == "claimed"
        dead = f"{socket.gethostname()}:{2 ** 22 + 12345}:x"  # no such pid on this host
        assert not owner_alive(dead) and owner_alive(f"{socket.gethostname()}:{os.getpid()}:y")
        assert store.claim("h3", dead, lease=600) == "claimed"
        assert store.claim("h3", "me:2:def", lease=60, alive=owner_alive) == "claimed"  # its owner died (kill -9)
        store.put("h4", {"problem": "p", "optimizer": "adam", "seed": 0}, {"status": "done", "final": {}})
        assert store.claim("h4", "me:2:def", lease=60) == "stored"
        store.release_owner("me:2:def")
        assert store.claim("h3", other_host, lease=60, alive=owner_alive) == "claimed"


# ------------------------------------------------------------------ item 19: a missing package skips, never fails


def test_a_task_whose_package_is_missing_is_skipped_with_the_install_command(tmp_path, capsys, monkeypatch):
    path = tmp_path / "rl.toml"
    path.write_text('optimizers = ["adam"]\n[protocol]\ntrials = 1\nfinal_seeds = 1\n'
                    '[[problems]]\nname = "rosenbrock"\nsteps = 10\n'
                    '[[tasks]]\nname = "cartpole_ppo"\nsteps = 2\n'
                    'params = { rollout = 64, minibatch = 32, eval_episodes = 1 }\n')
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` raises ModuleNotFoundError
    out = tmp_path / "out"
    assert main(["bench", "run", str(path), "--out", str(out), "--jobs", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "cartpole_ppo" in text and "pip install 'adamkit[tasks]'" in text and "gymnasium" in text
    with ResultStore.open_results(out) as store:
        runs = store.runs()
    assert runs and all(r["status"] == "done" and r["problem"] == "rosenbrock" for r in runs), "never stored"


def test_a_ray_instance_that_would_listen_beyond_loopback_is_refused_in_one_line(tmp_path, suite_file, capsys,
                                                                                monkeypatch):
    """Issue 14 item 20: the refusal of the Ray executor is a one-line CLI error too."""
    pytest.importorskip("ray")
    from adamkit.bench import executors

    def exposed(jobs):
        raise executors.ExecutorError("the local Ray instance would listen beyond 127.0.0.1 (gcs on 192.0.2.2); "
                                      "refusing to run")

    monkeypatch.setattr(executors, "start_local_ray", exposed)
    assert main(["bench", "run", str(suite_file), "--out", str(tmp_path / "out"), "--executor", "ray",
                 "--quiet"]) == 2
    _one_line_error(capsys, "beyond 127.0.0.1", "refusing to run")


# ------------------------------------------------------------------ item 1: a sweep never runs on damaged data


def test_a_sweep_skips_a_task_whose_cached_data_is_damaged(tmp_path, monkeypatch):
    from adamkit.bench.data import store as data_store
    from adamkit.bench.sweep import missing_data

    cache = tmp_path / "cache"
    (cache / "fashion-mnist").mkdir(parents=True)
    for fname in data_store.ARTEFACTS["fashion-mnist"].files:
        (cache / "fashion-mnist" / fname).write_bytes(b"\x1f\x8b" + os.urandom(100))  # present, but damaged
    monkeypatch.setenv(data_store.ENV_VAR, str(cache))
    path = tmp_path / "t.toml"
    path.write_text('optimizers = ["adam"]\n[[tasks]]\nname = "fmnist_mlp"\nsteps = 2\ntune = false\n')
    assert missing_data(load_suite(path)) == {"fmnist_mlp": "adamkit data prepare fashion-mnist"}
