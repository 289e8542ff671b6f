"""A sweep: run a suite's protocol on an executor, storing every run as it finishes; resumable.

Phase 1 runs the tuning trials and the paper-defaults arm; phase 2 selects each optimizer's winner
from the stored tuning results and re-runs it on the paired final seeds. Runs already in the store
(by hash) are skipped, so a sweep that was interrupted — Ctrl-C, a kill, a crash — continues where
it stopped when the same command runs again.

Two sweeps on one store (two ``bench run`` on one ``--out``, or on several machines sharing a ``--store``)
share the work: a sweep claims each run in the store just before it starts it (:meth:`ResultStore.claim`),
skips the runs another live sweep holds, and waits at the end of each phase for those to be stored (or for
their claims to be dropped: a sweep that dies, even by ``kill -9``, loses them at once on this host, else
when their lease runs out), so no run is done twice. A run whose task needs a Python package that is not
installed is not stored: its instance is skipped and listed with the install command.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, TextIO

from . import protocol
from .store import ResultStore, StoreError, owner_alive
from .suite import Suite

#: seconds a claim lasts without renewal (a sweep renews its claims every LEASE / 4 seconds)
LEASE = 60.0
#: seconds between two looks at the runs another sweep is doing
POLL = 0.5

#: the extra of adamkit's package that brings each third-party module a problem or task imports
EXTRA_OF_MODULE = {"gymnasium": "tasks", "pandas": "tasks", "pyarrow": "tasks", "mnist1d": "tasks",
                   "sklearn": "tasks", "matplotlib": "bench", "scipy": "bench", "ray": "ray"}


def install_command(module: str) -> str:
    """The command that installs a missing module: ``pip install 'adamkit[tasks]'`` for the tasks' packages."""
    extra = EXTRA_OF_MODULE.get(module)
    return f"pip install 'adamkit[{extra}]'" if extra else f"pip install {module}"


@dataclass
class SweepStats:
    planned: int = 0
    skipped: int = 0  # found in the store
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    #: instances left out because their data is not in the cache: instance key -> fetch command
    no_data: dict[str, str] = field(default_factory=dict)
    #: instances left out because a Python package is missing: instance key -> (module, install command)
    no_package: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: runs another sweep on the same store did while this one ran (not done twice)
    shared: int = 0
    #: the sweep reached its time limit and started no run after it (``left``: the planned runs not run; more
    #: are planned once the searches they wait for are finished)
    stopped: bool = False
    left: int = 0


class WorkEstimate:
    """The time left in a sweep, from what its runs have cost so far.

    Runs of one problem instance share a budget, so a pending run is expected to cost the mean of the
    finished runs of its instance (of any optimizer). While its instance has none, it costs what the planner's
    cost model gives its runs (:meth:`model`, :func:`protocol.run_seconds`), scaled by how the finished runs of
    the other instances compared with the model on this machine (or, without a model cost, the mean of all
    finished runs). That work divided by the rate at which this sweep has been getting through work (seconds
    of runs finished per second of wall time: the parallelism actually achieved) is the ETA. Counting runs
    instead would be off by the ratio of the costliest to the cheapest problem (100x in ``full``), and costing
    a problem not yet started at the mean of the others by as much.
    """

    def __init__(self):
        self.sums: dict[str, list[float]] = {}  # instance -> [seconds, runs] (finished here or stored earlier)
        self.all = [0.0, 0]  # the same over every instance
        self.pending: dict[str, str] = {}  # run hash -> instance
        self.pending_per_instance: Counter[str] = Counter()
        self.later: dict[str, int] = {}  # instance -> runs not planned yet (phase 2's winners)
        self.models: dict[str, list[float]] = {}  # instance -> [model seconds, runs] of its planned runs
        self.worked = 0.0  # run seconds finished in this sweep
        self.start = time.monotonic()

    def add_pending(self, runs: dict[str, str]) -> None:
        for run_hash, instance in runs.items():
            if run_hash not in self.pending:
                self.pending[run_hash] = instance
                self.pending_per_instance[instance] += 1

    def observe(self, instance: str, seconds: float, *, run_hash: str | None = None, here: bool = True) -> None:
        if seconds is not None and seconds == seconds:
            for acc in (self.sums.setdefault(instance, [0.0, 0]), self.all):
                acc[0] += float(seconds)
                acc[1] += 1
            if here:
                self.worked += float(seconds)
        if run_hash is not None and run_hash in self.pending:
            self.pending_per_instance[self.pending.pop(run_hash)] -= 1

    def model(self, instance: str, seconds: float) -> None:
        """One planned run of ``instance`` costs ``seconds`` by the planner's cost model."""
        acc = self.models.setdefault(instance, [0.0, 0])
        acc[0] += float(seconds)
        acc[1] += 1

    def _speed(self) -> float:
        """This machine against the cost model: the finished runs' seconds over what the model gives them (1
        while no instance has both)."""
        measured = modelled = 0.0
        for instance, (seconds, runs) in self.models.items():
            done = self.sums.get(instance)
            if runs and done and done[1]:
                measured += done[0]
                modelled += done[1] * seconds / runs
        return measured / modelled if modelled > 0 else 1.0

    def _mean(self, instance: str, speed: float) -> float:
        total, runs = self.sums.get(instance) or (0.0, 0)
        if runs:
            return total / runs
        model = self.models.get(instance)
        if model and model[1]:
            return model[0] / model[1] * speed
        total, runs = self.all
        return total / runs if runs else float("nan")

    def eta(self) -> float:
        """Seconds left; nan until a run has finished in this sweep. Costs O(instances), not O(runs)."""
        elapsed = time.monotonic() - self.start
        if self.worked <= 0 or elapsed <= 0:
            return float("nan")
        speed = self._speed()
        left = sum(n * self._mean(inst, speed) for counts in (self.pending_per_instance, self.later)
                   for inst, n in counts.items() if n)
        return left / (self.worked / elapsed)


class Progress:
    """One status line: runs done of the total, failures, elapsed time and ETA."""

    def __init__(self, stream: TextIO | None = sys.stderr, every: float = 1.0):
        self.stream, self.every = stream, every
        self.tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
        self.last = 0.0
        self.start = time.monotonic()

    def __call__(self, phase: str, done: int, total: int, failed: int, final: bool = False,
                 eta: float | None = None) -> None:
        """``eta``: seconds left as the sweep estimates them (:class:`WorkEstimate`); by default the mean
        time per run so far times the runs left."""
        if self.stream is None:
            return
        now = time.monotonic()
        if not final and now - self.last < (self.every if self.tty else max(self.every, 10.0)):
            return
        self.last = now
        elapsed = now - self.start
        if eta is None:
            eta = elapsed / done * (total - done) if done else float("nan")
        line = (f"[{phase}] {done}/{total} runs" + (f", {failed} failed" if failed else "")
                + f", {_clock(elapsed)} elapsed" + (f", ETA {_clock(eta)}" if done and done < total else ""))
        if self.tty:
            self.stream.write("\r" + line.ljust(78) + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    if seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60:02d}:{seconds % 60:02d}"


def missing_data(suite: Suite) -> dict[str, str]:
    """Instances of Tier B tasks whose data artefact is missing or damaged in the cache: key -> the command that
    fetches or repairs it.

    Checked on this machine (the cache of ``$ADAMKIT_DATA_DIR`` or the instance's ``data_dir``) as the loaders
    check it: present, and matching its pinned sha256 (hashed once per file). Synthetic instances need no data.
    """
    try:
        from .data.store import ARTEFACTS, ChecksumMismatch, DataMissing, locate
    except ImportError:  # pragma: no cover
        return {}
    out: dict[str, str] = {}
    for inst in suite.problems:
        if inst.tier != "B" or inst.params.get("synthetic"):
            continue
        for artefact in ARTEFACTS.values():
            if inst.problem not in artefact.tasks:
                continue
            try:
                locate(artefact.name, inst.params.get("data_dir"))
            except (DataMissing, ChecksumMismatch):
                out[inst.key] = artefact.fetch_command()
    return out


class _Heartbeat(threading.Thread):
    """Renews a sweep's claims every ``LEASE / 4`` seconds, on its own connection, while the sweep lives."""

    def __init__(self, path, owner: str):
        super().__init__(daemon=True, name="adamkit-sweep-heartbeat")
        self.path, self.owner, self.stop = str(path), owner, threading.Event()

    def run(self) -> None:
        con = sqlite3.connect(self.path, timeout=LEASE / 4)
        try:
            while not self.stop.wait(LEASE / 4):
                try:
                    with con:
                        con.execute("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + LEASE, self.owner))
                except sqlite3.Error:  # busy or full: the next beat tries again (the main thread reports faults)
                    pass
        finally:
            con.close()


def run_sweep(suite: Suite, store: ResultStore, executor, *, retry_failed: bool = False,
              progress: Callable | None = None, check_data: bool = True,
              notify: Callable[[str], None] | None = None, time_limit: float | None = None) -> SweepStats:
    """Run ``suite`` on ``executor`` into ``store``; returns counts (planned, skipped, done, failed, shared).

    With ``check_data`` (the local executor: the workers share this machine's data cache), the instances of
    tasks whose data is missing are left out, not run and not stored, and listed in ``stats.no_data`` with
    the command that fetches their data: once it is fetched, the same command runs them. (On a cluster the
    check is off; a worker without the data stores the run as failed, the error naming that command.)
    A run that fails because a third-party module is missing is not stored either: its instance is left out
    and listed in ``stats.no_package`` with the install command. ``notify`` gets one-line notes (waiting for
    another sweep's runs).

    ``time_limit`` (seconds): no run is started after it; the runs already handed to the executor finish and
    are stored (the local executor holds up to two per worker), the sweep returns with ``stats.stopped`` and
    the count of planned runs left, and the same call resumes it.
    """
    if time_limit is not None and not (isinstance(time_limit, (int, float)) and time_limit >= 0):
        raise ValueError(f"time_limit must be a number of seconds >= 0 or None, got {time_limit!r}")
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    heartbeat = _Heartbeat(store.path, owner)
    heartbeat.start()
    try:
        return _sweep(suite, store, executor, owner, retry_failed=retry_failed, progress=progress,
                      check_data=check_data, notify=notify, time_limit=time_limit)
    finally:
        heartbeat.stop.set()
        # its connection is closed before this returns: the last connection to close folds the write-ahead log
        # into the store file, which must be whole once the sweep is over (copied, committed, truncated in tests)
        heartbeat.join(timeout=LEASE)
        try:
            store.release_owner(owner)
        except Exception:  # (the store's own error, if any, is already on its way up)
            pass


#: steps of the machine probe each sweep session starts with (:func:`machine_probe`; about 0.1-0.3 s)
PROBE_STEPS = 300


def machine_probe(steps: int = PROBE_STEPS) -> float:
    """Microseconds per step of a fixed tiny training loop (adamkit's Adam on two float64 numbers, autograd
    included, one torch thread): how fast this machine runs the Python-bound small runs of Tier A right now.
    The speed of the same machine has varied threefold between days; a store keeps one probe per sweep
    session (:func:`record_session`) so that a report can say which speed its wall-clock figures had."""
    import torch

    import adamkit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        opt = adamkit.Adam([x], lr=1e-2)
        best = math.inf
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(steps // 3):
                opt.zero_grad()
                ((x - 1.0) ** 2).sum().backward()
                opt.step()
            best = min(best, (time.perf_counter() - t) / (steps // 3))
        return round(best * 1e6, 1)
    finally:
        torch.set_num_threads(threads)


def record_session(store, executor) -> dict:
    """Append this sweep session (its start, the executor and its jobs, the machine probe, the CPU capability
    torch's kernels run with; no host names or paths) to the store's ``sessions`` meta entry; returns it.

    ``cpu_capability`` (``torch.backends.cpu.get_cpu_capability()``: "AVX512", "AVX2", "DEFAULT", ...) is
    recorded because torch picks its CPU kernels by it at run time: the same run spec on machines of
    different capabilities gives the same result only up to float rounding."""
    import platform

    import torch

    session = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "executor": getattr(executor, "name", "?"),
               "jobs": getattr(executor, "jobs", None), "cores": os.cpu_count(), "machine": platform.machine(),
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "probe_us_per_step": machine_probe()}
    store.set_meta("sessions", json.dumps(store.sessions() + [session], sort_keys=True))
    return session


def check_version(store: ResultStore) -> None:
    """Refuse to resume a store made by another benchmark version: its runs were planned by other rules
    (protocol version 3 tunes the paper arms, searches ε/δ on a grid, runs 2 tuning seeds), so mixing them
    with this version's would give a store that no version's rules read. Raises StoreError saying what to do."""
    stored = store.bench_record()
    runs = sum(store.count().values())
    if not runs:
        return
    version = int(stored.get("version", 1))
    if version != protocol.BENCH_VERSION:
        what = protocol.BENCH_VERSIONS.get(version, "unknown rules")
        raise StoreError(
            f"{store.path} holds {runs} runs of benchmark version {version} ({what}); this adamkit runs version "
            f"{protocol.BENCH_VERSION} ({protocol.BENCH_VERSIONS[protocol.BENCH_VERSION]}), whose runs are not "
            "mixed with an older version's: give a new --out (the old folder's report still reads by its own "
            "version's rules), or run it with the adamkit that made it")


def _sweep(suite, store, executor, owner, *, retry_failed, progress, check_data, notify, time_limit) -> SweepStats:
    check_version(store)
    store.set_meta("suite", suite.to_json())
    store.set_meta("bench", json.dumps(bench_record(suite), sort_keys=True))
    record_session(store, executor)
    stats = SweepStats()
    start = time.monotonic()
    deadline = None if time_limit is None else start + time_limit
    if check_data:
        stats.no_data = missing_data(suite)
    statuses = store.statuses()
    redo = store.failed_attempts() if retry_failed else {}
    total_done = [0]
    seen: set[str] = set()  # run hashes planned so far (each counted once as skipped or run)
    instance_of: dict[str, str] = {}
    work = WorkEstimate()
    durations = store.durations()

    def record(h, spec, result, phase, total):
        result = {**result, "bench_version": protocol.BENCH_VERSION}
        store.put(h, spec, result)
        store.release(h, owner)
        statuses[h] = result["status"]
        work.observe(instance_of[h], result.get("seconds"), run_hash=h)
        total_done[0] += 1
        if result["status"] == "done":
            stats.done += 1
        else:
            stats.failed += 1
            first = (result.get("error") or "").splitlines()[0] if result.get("error") else "?"
            stats.failures.append(f"{spec['problem']} {spec['optimizer']} seed {spec['seed']}: {first}")
        if progress:
            progress(phase, total_done[0], total, stats.failed, eta=work.eta())

    def execute(jobs, phase, total):
        remaining, waited = list(jobs), False
        while remaining:
            busy: list[tuple[str, dict]] = []

            def claimed():
                """The runs this sweep may start now, claimed one by one as the executor asks for them."""
                for i, (h, spec) in enumerate(remaining):
                    if deadline is not None and time.monotonic() >= deadline:
                        stats.stopped, stats.left = True, len(remaining) - i + len(busy)
                        return
                    if instance_of[h] in stats.no_package:
                        work.observe(instance_of[h], None, run_hash=h)
                        continue
                    state = store.claim(h, owner, LEASE, redo=redo.get(h), alive=owner_alive)
                    if state == "claimed":
                        yield h, spec
                    elif state == "busy":
                        busy.append((h, spec))
                    else:  # stored meanwhile by another sweep
                        row = store.run(h)
                        statuses[h] = row["status"]
                        stats.shared += 1
                        total_done[0] += 1
                        work.observe(instance_of[h], None, run_hash=h)
                        if progress:
                            progress(phase, total_done[0], total, stats.failed, eta=work.eta())

            for h, spec, result in executor.map(claimed()):
                module = result.get("missing_module")
                if module:  # not stored: the instance is skipped, with the install command
                    stats.no_package.setdefault(instance_of[h], (module, install_command(module)))
                    store.release(h, owner)
                    work.observe(instance_of[h], None, run_hash=h)
                    continue
                record(h, spec, result, phase, total)
            if stats.stopped:
                return
            remaining = busy
            if remaining:
                if notify and not waited:
                    holder = store.claim_holder(remaining[0][0])
                    notify(f"waiting for {len(remaining)} run(s) that another `adamkit bench run`"
                           + (f" ({holder}, host:pid)" if holder else "") + " is doing on this store")
                waited = True
                time.sleep(POLL)

    # The search is adaptive (a learning-rate grid is extended while its optimum is at an edge), so the sweep
    # runs in stages: plan from what is stored, run what is missing, plan again, until nothing is missing.
    # Each stage's plan is a deterministic function of the stored results: the report recomputes it.
    total = 0
    insts = {inst.key: inst for inst in suite.problems}
    while True:
        plan = protocol.plan(suite, protocol.Lookup(store.finals(), store.curve, suite.smooth))
        left_out = set(stats.no_data) | set(stats.no_package)
        runs = [r for r in plan.runs if r.instance not in left_out]
        jobs = []
        inst_by_hash = {r.hash: r.instance for r in runs}
        for h, spec in _unique(runs).items():
            if h in seen:
                if statuses.get(h) is None:
                    jobs.append((h, spec))
                continue
            seen.add(h)
            work.model(inst_by_hash[h], protocol.run_seconds(spec)[0])
            status = statuses.get(h)
            if status == "done" or (status == "failed" and not retry_failed):
                stats.skipped += 1
                if h in durations:
                    work.observe(inst_by_hash[h], durations[h], here=False)
            else:
                jobs.append((h, spec))
        retry_failed = False  # a failure retried once in this sweep is not retried again at the next stage
        if not jobs:
            break
        instance_of.update({r.hash: r.instance for r in runs})
        work.add_pending({h: instance_of[h] for h, _ in jobs})
        # runs still to be planned: the final arms and ε/δ grids of searches not finished yet
        work.later = {}
        for (key, _), s in plan.searches.items():
            if key not in left_out:
                later = protocol.unplanned_runs(suite, insts[key], s)
                if later:  # (costed like the instance's planned runs)
                    work.later[key] = work.later.get(key, 0) + len(later)
        total = total_done[0] + len(jobs) + sum(work.later.values())
        stats.planned = len(seen) + sum(work.later.values())
        execute(jobs, "tuning" if not plan.complete else "final", total)
        if stats.stopped:
            break
    stats.planned = len(seen)
    if progress:
        progress("final", total_done[0], total_done[0], stats.failed, final=True)
    stats.seconds = time.monotonic() - start
    return stats


def bench_record(suite: Suite) -> dict:
    """What a store records of its sweep: the benchmark version, the suite by name and content hash, the
    claims file's hash and the adamkit version (no machine paths)."""
    import adamkit

    from .claims import claims_hash

    return {"version": protocol.BENCH_VERSION, "suite": suite.name, "suite_sha256": suite.content_hash(),
            "claims_sha256": claims_hash(), "adamkit": adamkit.__version__}


def _unique(runs: list[protocol.PlannedRun]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in runs:
        out.setdefault(r.hash, r.spec)
    return out
