"""The results store: one SQLite file, one row per run keyed by the hash of its full configuration.

Only the sweep's main process writes, and it commits each run as soon as its result arrives, so a
sweep killed at any moment loses at most the runs that were in flight; re-running the same suite
finds every stored run by its hash and skips it. Failed runs are stored with their error (and not
retried unless asked: ``--retry-failed``).

Tables:

- ``runs``: ``hash`` (primary key), ``status`` (done | failed), ``problem``, ``optimizer``, ``seed``,
  ``spec`` (the full configuration, JSON), ``final`` (final metrics, JSON), ``error``, ``seconds``,
  ``worker``, ``finished_at``;
- ``curves``: the per-step metrics of each run, columnar (zlib-compressed JSON, 7 significant digits):
  ``{"train_step": [...], "loss": [...], "eval_step": [...], "eval:gap": [...], ...}`` — read them with
  :meth:`ResultStore.curve`;
- ``meta``: key/value: ``suite`` (the suite of the sweep, as JSON, its file by name only) and ``bench``
  (JSON: the benchmark version, the suite's name and content hash, the claims file's hash: see
  :meth:`ResultStore.bench_record`);
- ``claims``: ``hash``, ``owner`` (``host:pid:token`` of a running sweep), ``expires`` (Unix time): the runs
  a sweep is doing right now, so that two sweeps on one store never do the same run (:meth:`ResultStore.claim`).
  A sweep renews its claims while it lives (a heartbeat); the claims of a sweep that died — killed, even with
  ``kill -9`` — are taken over at once when its pid is gone on this host, else when their lease expires.

Faults never surface as a bare ``sqlite3`` or ``OSError`` traceback: every error of the database (a file that
is not a store, a damaged or truncated one, a read-only folder, a full disk) is a :class:`StoreError` whose
one-line message names the file and what to do. A store is checked (``PRAGMA quick_check``) when opened.

:meth:`ResultStore.compact` (``adamkit bench compact``) thins a store's curves for committing or sharing, first
keeping each run's exact steps to its instances' targets in its final metrics (``steps_to_target``).

Schema migrations (applied when a store is opened, additive): ``runs.bench_version`` (INTEGER, the benchmark
version of the sweep that made the run; NULL in stores written before it: version 1); ``runs.device`` (JSON: where
the run computed, :func:`adamkit.bench.devices.describe`: the device, its name, torch's version and on CUDA the
CUDA and cuDNN versions; NULL in stores written before it: the CPU).

Devices: the ``device`` meta entry records the device of the store's sweeps (the sweep's ``--device``, described
in the main process); :meth:`ResultStore.check_device` refuses a sweep on another kind of device (the CPU against
a GPU, or another GPU model), so the results of different devices are never pooled in one store.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any, Iterable


class StoreError(RuntimeError):
    """The results store cannot be opened, read or written; the message names the file and what to do."""


#: how a sweep stopped by a fault of its store resumes (every finished run is committed as it arrives)
RESUME = "run the same command again to resume (the runs stored so far are kept)"


def _sqlite_code(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def store_error(path: Path, exc: BaseException) -> StoreError:
    """The :class:`StoreError` (one line: the file, the cause, what to do) of a sqlite3 or OS error on ``path``."""
    code, text = _sqlite_code(exc), str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    err_no = getattr(exc, "errno", None)
    if code == "SQLITE_NOTADB" or "file is not a database" in text:
        return StoreError(f"{path} is not an adamkit results store ({text}): give another --out (or --store), "
                          "or move that file away")
    if code.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return StoreError(f"{path} is damaged ({text}): restore it from a copy, or move it away and run the same "
                          "command again to redo its runs")
    if code.startswith("SQLITE_FULL") or err_no == errno.ENOSPC or "disk is full" in text:
        return StoreError(f"cannot write {path}: no space left on the device (disk is full); free some space and "
                          f"{RESUME}")
    if (code.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
            or err_no in (errno.EROFS, errno.EACCES, errno.EPERM) or "readonly" in text):
        return StoreError(f"cannot write {path} ({text}): the store or its folder is read-only or not ours; make "
                          f"it writable and {RESUME}, or give a writable --out (or --store)")
    if code.startswith("SQLITE_IOERR") or err_no == errno.EIO or "disk I/O error" in text:
        return StoreError(f"cannot write {path} ({text}): the store or its folder became unwritable (made "
                          f"read-only, removed or moved, or a failing disk); make it writable and {RESUME}, or give "
                          "another --out (or --store)")
    if code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text:
        return StoreError(f"{path} stayed locked by another process for over a minute ({text}): wait for it, or "
                          "stop it, then run the same command again")
    return StoreError(f"{path}: {type(exc).__name__}: {text}")


@contextlib.contextmanager
def _translated(path: Path):
    try:
        yield
    except StoreError:
        raise
    except (sqlite3.Error, OSError) as exc:
        raise store_error(path, exc) from None


class _Cursor:
    """A sqlite3 cursor whose errors (raised while rows are read, too) are :class:`StoreError`."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path):
        self._cursor, self._path = cursor, path

    def __iter__(self):
        while True:
            with _translated(self._path):
                row = self._cursor.fetchone()
            if row is None:
                return
            yield row

    def fetchone(self):
        with _translated(self._path):
            return self._cursor.fetchone()

    def fetchall(self):
        with _translated(self._path):
            return self._cursor.fetchall()

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class _Connection:
    """A sqlite3 connection whose errors are :class:`StoreError` naming the file (``with`` = one transaction)."""

    def __init__(self, connection: sqlite3.Connection, path: Path):
        self._con, self._path = connection, path

    def execute(self, *args) -> _Cursor:
        with _translated(self._path):
            return _Cursor(self._con.execute(*args), self._path)

    def executemany(self, *args) -> _Cursor:
        with _translated(self._path):
            return _Cursor(self._con.executemany(*args), self._path)

    def executescript(self, script: str) -> _Cursor:
        with _translated(self._path):
            return _Cursor(self._con.executescript(script), self._path)

    def commit(self) -> None:
        with _translated(self._path):
            self._con.commit()

    def __enter__(self):
        self._con.__enter__()
        return self

    def __exit__(self, *exc):
        with _translated(self._path):
            return self._con.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._con, name)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    hash TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    problem TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    seed INTEGER NOT NULL,
    spec TEXT NOT NULL,
    final TEXT,
    error TEXT,
    seconds REAL,
    worker TEXT,
    finished_at TEXT
);
CREATE TABLE IF NOT EXISTS curves (hash TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS claims (hash TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
"""

DEFAULT_NAME = "results.sqlite"
#: per-step training curves longer than this are thinned to about this many points when stored (every k-th
#: step and the last; the runs' metrics, loss spikes included, are computed before); evaluation curves are
#: kept whole: every figure and number of a report is recomputed from them
MAX_TRAIN_POINTS = 2000


def thin_training_curve(curve: dict[str, list]) -> dict[str, list]:
    """``curve`` with its ``train_step`` / ``loss`` series thinned to about :data:`MAX_TRAIN_POINTS` points."""
    steps = curve.get("train_step") or []
    if len(steps) <= MAX_TRAIN_POINTS:
        return curve
    k = -(-len(steps) // MAX_TRAIN_POINTS)
    keep = list(range(0, len(steps), k))
    if keep[-1] != len(steps) - 1:
        keep.append(len(steps) - 1)
    out = dict(curve)
    for key in ("train_step", "loss"):
        if key in curve:
            out[key] = [curve[key][i] for i in keep]
    return out


#: what :meth:`ResultStore.compact` keeps of a run's curves (for a store to commit or share): about this many
#: evaluation points (the first, the last :data:`COMPACT_TAIL`, evenly spaced ones between) and training points
COMPACT_EVAL_POINTS = 100
COMPACT_TRAIN_POINTS = 200
#: the last evaluations every compacted curve keeps whole: what a selection averages (a suite's ``smooth``)
COMPACT_TAIL = 10


def thin_indices(n: int, points: int, tail: int = 0) -> list[int]:
    """The indices of a series of ``n`` points that thinning to about ``points`` keeps: the first, evenly
    spaced ones, and the last ``tail`` (at least the last one)."""
    if n <= points:
        return list(range(n))
    tail = max(1, min(tail, n))
    k = -(-(n - tail) // max(1, points - tail))
    return sorted(set(range(0, n - tail, k)) | set(range(n - tail, n)))


def target_key(metric: str, target: float, maximize: bool) -> str:
    """The key under which a compacted run's final metrics keep its exact steps to a target:
    ``"gap<=0.001"``, ``"test_accuracy>=0.91"``."""
    return f"{metric}{'>=' if maximize else '<='}{target!r}"


def first_step_reaching(steps: list, values: list, target: float, maximize: bool) -> float | None:
    """The first evaluation step whose value reaches ``target`` (None: never)."""
    for step, value in zip(steps, values):
        if isinstance(value, (int, float)) and not math.isnan(value) and (
                value >= target if maximize else value <= target):
            return float(step)
    return None


def _short(v):
    return float(f"{v:.7g}") if isinstance(v, float) else v


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


def owner_alive(owner: str) -> bool:
    """Whether the sweep ``owner`` (``host:pid:token``) may still be running: False only when it ran on this host
    and its process is gone (or a zombie); on another host its lease decides."""
    import os
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class ResultStore:
    """A results database: created when missing (``create=True``, for writing), else opened as it is (for
    reading: nothing is created, and a store in a read-only folder is opened read-only). ``read_only=True``
    (a report's reading) opens an existing store without writing a byte of it: no migration, no journal
    change, so a committed store stays as committed."""

    def __init__(self, path: str | Path, create: bool = True, read_only: bool = False):
        self.path = Path(path)
        if (read_only or not create) and not (self.path.is_file() and self.path.stat().st_size):
            what = "the file is empty" if self.path.is_file() else "no results store"
            raise StoreError(f"{self.path}: no sweep stored here ({what}; run `adamkit bench run SUITE --out DIR` "
                             f"first)")
        self._identity = None  # (device, inode) of the file this store writes; None: opened read-only
        if read_only:
            self.db = self._open_read_only()
            return
        try:
            self.db = self._open(create)
        except StoreError as exc:
            if create or "read-only" not in str(exc):
                raise
            self.db = self._open_read_only()
        else:
            with _translated(self.path):
                st = self.path.stat()
            self._identity = (st.st_dev, st.st_ino)

    def _open(self, create: bool) -> _Connection:
        with _translated(self.path):
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = _Connection(sqlite3.connect(str(self.path), timeout=60), self.path)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._check(db)
            db.executescript(SCHEMA)
            self._migrate(db)
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _open_read_only(self) -> _Connection:
        """A store opened for reading only: a store in a folder this process cannot write, or a report's reading
        (its readers still work). A store with no write-ahead log beside it (nobody is writing it) is read into
        memory, so that no ``-wal``/``-shm`` file appears beside a committed store; one being written is read
        through SQLite's read-only mode, which sees the log."""
        if hasattr(sqlite3.Connection, "deserialize") and not self.path.with_name(self.path.name + "-wal").exists():
            with _translated(self.path):
                image = bytearray(self.path.read_bytes())
                if image[18:20] == b"\x02\x02":  # a write-ahead-log store: its image read as a rollback-journal one
                    image[18:20] = b"\x01\x01"
                con = sqlite3.connect(":memory:")
                con.deserialize(bytes(image))
            db = _Connection(con, self.path)
            self._check(db)
            return db
        last = None
        for query in ("mode=ro", "immutable=1"):  # (a WAL store without its -shm file needs immutable)
            try:
                con = sqlite3.connect(f"{self.path.resolve().as_uri()}?{query}", uri=True, timeout=60)
                db = _Connection(con, self.path)
                self._check(db)
                return db
            except StoreError as exc:
                last = exc
        raise last

    def _check(self, db: _Connection) -> None:
        problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is damaged ({problems[0]}): restore it from a copy, or move it away and "
                             "run the same command again to redo its runs")

    @staticmethod
    def _migrate(db: _Connection) -> None:
        """Bring an older store to this schema (additive: new columns, nothing rewritten). A store opened
        read-only is not migrated: its readers take a missing column as the older version."""
        if not ResultStore._has_versions(db):
            db.execute("ALTER TABLE runs ADD COLUMN bench_version INTEGER")
        if not ResultStore._has_column(db, "device"):
            db.execute("ALTER TABLE runs ADD COLUMN device TEXT")

    @staticmethod
    def _has_versions(db: _Connection) -> bool:
        return ResultStore._has_column(db, "bench_version")

    @staticmethod
    def _has_column(db: _Connection, column: str) -> bool:
        return column in {row[1] for row in db.execute("PRAGMA table_info(runs)").fetchall()}

    @classmethod
    def open_results(cls, where: str | Path, create: bool = True, read_only: bool = False) -> "ResultStore":
        """The store of a results directory (its ``results.sqlite``) or a store file itself; ``create=False``
        opens an existing one only (for reading: a missing folder is not created); ``read_only=True`` writes
        nothing to it."""
        where = Path(where)
        if where.is_dir() or not where.suffix:
            where = where / DEFAULT_NAME
        return cls(where, create=create, read_only=read_only)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check_writable(self) -> None:
        """Raise :class:`StoreError` unless the store can still be written where it was opened: the same file
        (not removed, moved or replaced since) in a writable folder.

        A sweep checks before each of its writes (claims and results). SQLite keeps its files open, so a store
        made read-only while a sweep runs (``chmod``, a read-only remount of its folder) or removed would
        otherwise go on taking the sweep's results (into a removed file, or a store that cannot be opened for
        writing again), or fail later with a bare "disk I/O error"; this way the sweep stops at its next write
        saying so, and the same command resumes it once the store is writable again.
        """
        if self._identity is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise store_error(self.path, exc) from None
        if st is None or (st.st_dev, st.st_ino) != self._identity:
            raise StoreError(f"cannot write {self.path}: the store was removed, moved or replaced while this run "
                             f"was writing it; put it back and {RESUME}, or run the same command again to start "
                             f"a new store there")
        for where in (self.path, self.path.parent):
            if not os.access(where, os.W_OK):
                kept = ""
                with contextlib.suppress(StoreError):
                    kept = f" ({sum(self.count().values())} runs are stored)"
                raise StoreError(f"cannot write {self.path}: {'the store' if where == self.path else 'its folder'} "
                                 f"became read-only during the run{kept}; make it writable and {RESUME}, or give "
                                 f"another --out (or --store)")

    # ------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def sessions(self) -> list[dict[str, Any]]:
        """The ``sessions`` meta record: one entry per sweep session that wrote this store (``sweep.record_session``;
        [] in stores written before it, or if the record is unreadable)."""
        try:
            sessions = json.loads(self.get_meta("sessions") or "[]")
        except ValueError:
            return []
        return sessions if isinstance(sessions, list) else []

    def bench_record(self) -> dict[str, Any]:
        """The ``bench`` meta record ({} in stores written before it: benchmark version 1)."""
        text = self.get_meta("bench")
        return json.loads(text) if text else {}

    def device_record(self) -> dict[str, Any] | None:
        """The ``device`` meta record: the device of this store's sweeps (None in stores written before devices
        were recorded, whose runs all ran on the CPU)."""
        text = self.get_meta("device")
        return json.loads(text) if text else None

    def check_device(self, record: dict[str, Any], device: str) -> None:
        """Before a sweep on ``device`` (its ``--device``; ``record``: :func:`adamkit.bench.devices.describe` of
        it): refuse it, with what to do, when this store holds runs of another kind of device
        (:func:`adamkit.bench.devices.identity`: the CPU, or one GPU model); else record ``record`` as the
        store's device. A store written before devices were recorded holds CPU runs."""
        from . import devices

        stored = self.device_record()
        has_runs = bool(self.db.execute("SELECT 1 FROM runs LIMIT 1").fetchone())
        if has_runs and devices.identity(stored) != devices.identity(record):
            was = devices.identity(stored)
            again = "cpu" if was == "cpu" else "cuda"
            raise StoreError(
                f"{self.path} holds runs made on {was}, and this sweep would run on {devices.identity(record)} "
                f"(--device {device}); results of different devices are not pooled: give another --out (or "
                f"--store) for these runs, or resume this store on {was} (--device {again})")
        if stored is None or not has_runs:
            self.set_meta("device", _dumps(record))

    def run_devices(self) -> dict[str, dict[str, Any] | None]:
        """hash -> where each stored run computed (None: a run stored before devices were recorded: the CPU)."""
        if not self._has_column(self.db, "device"):  # an older store opened read-only
            return {h: None for (h,) in self.db.execute("SELECT hash FROM runs")}
        return {h: (json.loads(d) if d else None) for h, d in self.db.execute("SELECT hash, device FROM runs")}

    def run_versions(self) -> dict[int | None, int]:
        """benchmark version -> number of stored runs made with it (None: before versions were recorded)."""
        if not self._has_versions(self.db):  # an older store opened read-only
            return dict(self.db.execute("SELECT NULL, COUNT(*) FROM runs").fetchall())
        return dict(self.db.execute("SELECT bench_version, COUNT(*) FROM runs GROUP BY bench_version").fetchall())

    # ------------------------------------------------------------------ runs
    def put(self, run_hash: str, spec: dict[str, Any], result: dict[str, Any]) -> None:
        """Store one run and its per-step metrics in one transaction (replacing an earlier attempt)."""
        curve = result.get("curve")
        if curve:
            curve = thin_training_curve(curve)
        self.check_writable()
        with self.db:
            self.db.execute("DELETE FROM curves WHERE hash = ?", (run_hash,))
            self.db.execute(
                "INSERT OR REPLACE INTO runs (hash, status, problem, optimizer, seed, spec, final, error, seconds, "
                "worker, finished_at, bench_version, device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_hash, result["status"], spec["problem"], spec["optimizer"], int(spec["seed"]), _dumps(spec),
                 _dumps(result.get("final")) if result.get("final") is not None else None, result.get("error"),
                 result.get("seconds"), result.get("worker"), time.strftime("%Y-%m-%dT%H:%M:%S"),
                 result.get("bench_version"), _dumps(result["device"]) if result.get("device") else None),
            )
            if curve:
                packed = {k: [_short(v) for v in values] for k, values in curve.items()}
                self.db.execute("INSERT INTO curves (hash, data) VALUES (?, ?)",
                                (run_hash, zlib.compress(_dumps(packed).encode(), 6)))

    def statuses(self) -> dict[str, str]:
        """hash -> status of every stored run."""
        return dict(self.db.execute("SELECT hash, status FROM runs"))

    def durations(self) -> dict[str, float]:
        """hash -> seconds of every finished (done) run."""
        return dict(self.db.execute("SELECT hash, seconds FROM runs WHERE status = 'done' AND seconds IS NOT NULL"))

    def finish_times(self) -> dict[str, str]:
        """hash -> when each finished (done) run was stored (ISO 8601, local time of the sweep's machine)."""
        return dict(self.db.execute("SELECT hash, finished_at FROM runs WHERE status = 'done' "
                                    "AND finished_at IS NOT NULL"))

    def finals(self, hashes: Iterable[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """hash -> final metrics (None for a failed run) of the stored runs."""
        out = {}
        for h, status, final in self.db.execute("SELECT hash, status, final FROM runs"):
            out[h] = json.loads(final) if (status == "done" and final) else None
        if hashes is not None:
            wanted = set(hashes)
            out = {h: v for h, v in out.items() if h in wanted}
        return out

    def specs(self) -> dict[str, dict[str, Any]]:
        """hash -> configuration of every stored run."""
        return {h: json.loads(s) for h, s in self.db.execute("SELECT hash, spec FROM runs")}

    def run(self, run_hash: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT hash, status, problem, optimizer, seed, spec, final, error, seconds, worker, finished_at "
            "FROM runs WHERE hash = ?", (run_hash,)).fetchone()
        if row is None:
            return None
        keys = ("hash", "status", "problem", "optimizer", "seed", "spec", "final", "error", "seconds", "worker",
                "finished_at")
        out = dict(zip(keys, row))
        out["spec"] = json.loads(out["spec"])
        out["final"] = json.loads(out["final"]) if out["final"] else None
        if self._has_column(self.db, "device"):
            text = self.db.execute("SELECT device FROM runs WHERE hash = ?", (run_hash,)).fetchone()[0]
            out["device"] = json.loads(text) if text else None
        return out

    def runs(self) -> list[dict[str, Any]]:
        return [self.run(h) for (h,) in self.db.execute("SELECT hash FROM runs ORDER BY rowid")]

    def raw_curve(self, run_hash: str) -> dict[str, list[float]] | None:
        row = self.db.execute("SELECT data FROM curves WHERE hash = ?", (run_hash,)).fetchone()
        return json.loads(zlib.decompress(row[0])) if row else None

    def curve(self, run_hash: str, kind: str = "eval") -> dict[str, list[float]]:
        """The per-step metrics of one run: {"step": [...], metric: [...]} of the evaluations (``kind="eval"``)
        or of the training loss (``kind="train"``); empty lists when the run has none."""
        raw = self.raw_curve(run_hash) or {}
        if kind == "train":
            return {"step": raw.get("train_step", []), "loss": raw.get("loss", [])}
        out = {"step": raw.get("eval_step", [])}
        out.update({k[5:]: v for k, v in raw.items() if k.startswith("eval:")})
        return out

    def compact(self, targets: dict[str, list[tuple[str, float, bool]]] | None = None,
                eval_points: int = COMPACT_EVAL_POINTS, train_points: int = COMPACT_TRAIN_POINTS,
                tail: int = COMPACT_TAIL) -> dict[str, int]:
        """Thin every stored curve for a store to commit or share, keeping every number a report computes.

        First, for each run in ``targets`` (hash -> [(metric, target, maximize), ...]: the targets of the
        instances that use it), the first evaluation step that reaches each target is computed from the whole
        curve and kept in the run's final metrics under ``steps_to_target`` (:func:`target_key` -> step, None:
        never reached), where the analysis reads it. Then each evaluation curve keeps about ``eval_points``
        points (the first, the last ``tail``: what a selection averages, and evenly spaced ones) and each
        training curve about ``train_points``; a thinned curve records its length before (``"thinned"``), and
        is never thinned again or used to compute steps to a target. Returns counts; the file is vacuumed
        and its write-ahead log folded in.
        """
        if eval_points < tail + 2 or train_points < 2 or tail < 1:
            raise ValueError(f"compact needs eval_points >= tail + 2, train_points >= 2 and tail >= 1; got "
                             f"{eval_points}, {train_points}, {tail}")
        targets = targets or {}
        counts = {"runs": 0, "thinned": 0, "targets": 0}
        try:
            rows = self.db.execute("SELECT c.hash, c.data, r.final FROM curves c JOIN runs r ON r.hash = c.hash"
                                   ).fetchall()
            with self.db:
                for run_hash, data, final_text in rows:
                    counts["runs"] += 1
                    curve = json.loads(zlib.decompress(data))
                    final = json.loads(final_text) if final_text else None
                    if "thinned" in curve:
                        continue
                    eval_steps = curve.get("eval_step") or []
                    if final is not None and targets.get(run_hash):
                        reached = dict(final.get("steps_to_target") or {})
                        for metric, target, maximize in targets[run_hash]:
                            key = target_key(metric, target, maximize)
                            if key not in reached:
                                reached[key] = first_step_reaching(eval_steps, curve.get(f"eval:{metric}") or [],
                                                                   target, maximize)
                                counts["targets"] += 1
                        final["steps_to_target"] = reached
                        self.db.execute("UPDATE runs SET final = ? WHERE hash = ?", (_dumps(final), run_hash))
                    keep_eval = thin_indices(len(eval_steps), eval_points, tail)
                    train_steps = curve.get("train_step") or []
                    keep_train = thin_indices(len(train_steps), train_points, 1)
                    if len(keep_eval) == len(eval_steps) and len(keep_train) == len(train_steps):
                        continue
                    thin = {"thinned": {"eval": len(eval_steps), "train": len(train_steps)}}
                    for key, values in curve.items():
                        if key == "eval_step" or key.startswith("eval:"):
                            thin[key] = [values[i] for i in keep_eval if i < len(values)]
                        elif key in ("train_step", "loss"):
                            thin[key] = [values[i] for i in keep_train if i < len(values)]
                        else:
                            thin[key] = values
                    self.db.execute("UPDATE curves SET data = ? WHERE hash = ?",
                                    (zlib.compress(_dumps(thin).encode(), 9), run_hash))
                    counts["thinned"] += 1
            self.db.execute("VACUUM")
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file itself shrinks (the log folded in)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from None
        return counts

    def failed_attempts(self) -> dict[str, str]:
        """hash -> finished_at of every failed run (what a sweep with ``--retry-failed`` means to replace)."""
        return dict(self.db.execute("SELECT hash, finished_at FROM runs WHERE status = 'failed'"))

    # ------------------------------------------------------------------ claims (concurrent sweeps)
    def claim(self, run_hash: str, owner: str, lease: float, redo: str | None = None, alive=None) -> str:
        """Claim a run for the sweep ``owner`` for ``lease`` seconds, atomically; returns

        - ``"stored"``: its result is in the store (done, or failed and not to be redone: ``redo`` is the
          ``finished_at`` of the failed attempt the sweep means to replace, which does not count);
        - ``"busy"``: another sweep holds an unexpired claim and (``alive(owner)``, if given) still lives;
        - ``"claimed"``: it is now this sweep's to run.
        """
        self.check_writable()
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")  # read and write under one lock: two sweeps cannot both claim
            row = self.db.execute("SELECT status, finished_at FROM runs WHERE hash = ?", (run_hash,)).fetchone()
            if row is not None and (row[0] == "done" or row[1] != redo):
                return "stored"
            held = self.db.execute("SELECT owner, expires FROM claims WHERE hash = ?", (run_hash,)).fetchone()
            if held is not None and held[0] != owner and held[1] > now and (alive is None or alive(held[0])):
                return "busy"
            self.db.execute("INSERT OR REPLACE INTO claims (hash, owner, expires) VALUES (?, ?, ?)",
                            (run_hash, owner, now + lease))
            return "claimed"

    def claim_holder(self, run_hash: str) -> str | None:
        row = self.db.execute("SELECT owner FROM claims WHERE hash = ?", (run_hash,)).fetchone()
        return row[0] if row else None

    def renew(self, owner: str, lease: float) -> None:
        """Extend every claim of ``owner`` by ``lease`` seconds from now (the sweep's heartbeat)."""
        with self.db:
            self.db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease, owner))

    def release(self, run_hash: str, owner: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM claims WHERE hash = ? AND owner = ?", (run_hash, owner))

    def release_owner(self, owner: str) -> None:
        """Drop every claim of ``owner`` (a sweep that ends, or is interrupted)."""
        with self.db:
            self.db.execute("DELETE FROM claims WHERE owner = ?", (owner,))

    def count(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
