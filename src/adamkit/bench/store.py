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
  :meth:`ResultStore.bench_record`).

Schema migrations (applied when a store is opened, additive): ``runs.bench_version`` (INTEGER, the benchmark
version of the sweep that made the run; NULL in stores written before it: version 1).
"""
from __future__ import annotations

import json
import math
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any, Iterable

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


def _short(v):
    return float(f"{v:.7g}") if isinstance(v, float) else v


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, allow_nan=True)


class ResultStore:
    """A results database (created when missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self._migrate()
        self.db.commit()

    def _migrate(self) -> None:
        """Bring an older store to this schema (additive: new columns, nothing rewritten)."""
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
        if "bench_version" not in columns:
            self.db.execute("ALTER TABLE runs ADD COLUMN bench_version INTEGER")

    @classmethod
    def open_results(cls, where: str | Path) -> "ResultStore":
        """The store of a results directory (its ``results.sqlite``) or a store file itself."""
        where = Path(where)
        if where.is_dir() or not where.suffix:
            where = where / DEFAULT_NAME
        return cls(where)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ meta
    def set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def bench_record(self) -> dict[str, Any]:
        """The ``bench`` meta record ({} in stores written before it: benchmark version 1)."""
        text = self.get_meta("bench")
        return json.loads(text) if text else {}

    def run_versions(self) -> dict[int | None, int]:
        """benchmark version -> number of stored runs made with it (None: before versions were recorded)."""
        return dict(self.db.execute("SELECT bench_version, COUNT(*) FROM runs GROUP BY bench_version"))

    # ------------------------------------------------------------------ runs
    def put(self, run_hash: str, spec: dict[str, Any], result: dict[str, Any]) -> None:
        """Store one run and its per-step metrics in one transaction (replacing an earlier attempt)."""
        curve = result.get("curve")
        if curve:
            curve = thin_training_curve(curve)
        with self.db:
            self.db.execute("DELETE FROM curves WHERE hash = ?", (run_hash,))
            self.db.execute(
                "INSERT OR REPLACE INTO runs (hash, status, problem, optimizer, seed, spec, final, error, seconds, "
                "worker, finished_at, bench_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_hash, result["status"], spec["problem"], spec["optimizer"], int(spec["seed"]), _dumps(spec),
                 _dumps(result.get("final")) if result.get("final") is not None else None, result.get("error"),
                 result.get("seconds"), result.get("worker"), time.strftime("%Y-%m-%dT%H:%M:%S"),
                 result.get("bench_version")),
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

    def count(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"))
