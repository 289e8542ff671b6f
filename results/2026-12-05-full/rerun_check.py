"""Re-run a sample of this store's runs with the code checked out now and compare their final metrics with the
stored ones: whether runs made by the sweep's earlier sessions (earlier commits, other machines) are what the
final code computes.

    python results/2026-12-05-full/rerun_check.py results/2026-12-05-full [--per-session 6] [--max-seconds 6]

Per sweep session (the store's ``sessions`` record; a run belongs to the session in which it finished), it takes
up to ``--per-session`` finished runs of distinct problems whose stored time is under ``--max-seconds`` (the
first by hash: the sample is fixed by the store), re-runs each spec with ``adamkit.bench.runner.execute`` on the
CPU, and prints per session how many came back bit-identical and the largest relative difference of any final
metric (steps to each target computed from the fresh curve, as ``bench compact`` computed the stored ones), and
for each run that differs, the metric that differs most. Runs
made on a CPU of another capability than this one (AVX2 against AVX-512) may differ in float
rounding where torch's vectorised kernels differ; a run on the same capability should come back identical.
Exits 1 if a re-run fails or a run on this machine's capability differs.
"""
from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path

import torch

from adamkit.bench import runner
from adamkit.bench.store import first_step_reaching


def flat(d, prefix=""):
    """The final metrics as {dotted key: number} (nested dicts such as steps_to_target flattened)."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        elif isinstance(v, bool) or v is None:
            out[prefix + k] = v
        elif isinstance(v, (int, float)):
            out[prefix + k] = float(v)
    return out


def with_steps_to_target(final: dict, stored: dict, curve: dict | None) -> dict:
    """A fresh run's final metrics with the steps to each target that the stored run keeps (``bench compact``
    computes them from the whole evaluation curve; the runner does not), computed alike from its curve."""
    final = dict(final)
    keys = (stored.get("steps_to_target") or {}).keys()
    if keys:
        final["steps_to_target"] = {}
    for key in keys:
        maximize = ">=" in key
        metric, target = key.split(">=" if maximize else "<=")
        final["steps_to_target"][key] = first_step_reaching(
            (curve or {}).get("eval_step") or [], (curve or {}).get(f"eval:{metric}") or [], float(target), maximize)
    return final


def rel(a, b) -> float:
    if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return 0.0
    if not isinstance(a, float) or not isinstance(b, float):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--per-session", type=int, default=6)
    ap.add_argument("--max-seconds", type=float, default=6.0)
    args = ap.parse_args()
    db = sqlite3.connect(f"file:{args.folder / 'results.sqlite'}?immutable=1", uri=True)  # writes nothing beside it
    sessions = json.loads(db.execute("select value from meta where key = 'sessions'").fetchone()[0])
    here = torch.backends.cpu.get_cpu_capability()
    starts = [s["started"] for s in sessions] + ["9999"]
    bad = 0
    for i, s in enumerate(sessions):
        rows = db.execute("select hash, problem, spec, final from runs where status = 'done' and seconds < ? "
                          "and finished_at >= ? and finished_at < ? order by hash",
                          (args.max_seconds, starts[i], starts[i + 1])).fetchall()
        picked, seen = [], set()
        for h, problem, spec, final in rows:
            if problem not in seen:
                seen.add(problem)
                picked.append((h, problem, json.loads(spec), json.loads(final)))
            if len(picked) == args.per_session:
                break
        same, worst, notes = 0, 0.0, []
        for h, problem, spec, final in picked:
            result = runner.execute(spec)
            if result["status"] != "done":
                bad += 1
                notes.append(f"{problem} {h[:10]} failed: {result['error'].splitlines()[0]}")
                continue
            old, new = flat(final), flat(with_steps_to_target(result["final"], final, result["curve"]))
            diff, key = max(((rel(old.get(k), new.get(k)), k) for k in set(old) | set(new)), default=(0.0, ""))
            same += diff == 0.0
            worst = max(worst, diff)
            if diff:
                notes.append(f"{problem} {h[:10]}: largest difference in {key}: {old.get(key)!r} stored, "
                             f"{new.get(key)!r} now")
            if diff and s.get("cpu_capability") == here:
                bad += 1
                notes.append(f"{problem} {h[:10]} differs on this machine's capability ({diff:.2g})")
        print(f"session {s['started'][:16]} ({s.get('cpu_capability', '?')}): {len(picked)} runs re-run "
              f"({', '.join(p for _, p, _, _ in picked)}); {same} bit-identical; largest relative difference "
              f"{worst:.2g}" + ("".join(f"\n  {n}" for n in notes)))
    print(f"this machine: {here}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
