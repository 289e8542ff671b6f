"""Issue 14 ("never silent"): faults of the results store, the suite files and the sweep's environment end in one
line naming the file, key or argument and what to do (exit status 2), never a traceback; nothing is lost."""
from __future__ import annotations

import errno
import os
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the _faults helpers)

from _faults import read_only, tiny_filesystem  # noqa: E402

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
    ("hparams = { lr = nan }", "problems[0].hparams.lr", "lr must not be NaN"),
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
