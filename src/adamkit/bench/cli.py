"""``adamkit bench``: list problems and suites, run a suite (resumable), write a report.

    adamkit bench list
    adamkit bench run SUITE --out DIR [--jobs N] [--executor local|ray] [--address ADDR] [--store FILE]
    adamkit bench report DIR [--out REPORT_DIR]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="the registered problems and tasks, and the shipped suites")
    p.add_argument("--tier", choices=("A", "B"), help="only this tier")
    p = sub.add_parser("run", help="run a suite (a shipped name or a TOML file) into a results folder; resumable")
    p.add_argument("suite", help="smoke, quick, full, tasks_quick, paper, or the path of a suite TOML file")
    p.add_argument("--out", required=True, help="results folder (holds results.sqlite; re-run to resume)")
    p.add_argument("--store", help="the SQLite results file (default: OUT/results.sqlite)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: the number of CPUs, at most 2)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where runs execute (default local)")
    p.add_argument("--address", help="Ray cluster address (with --executor ray); default: start a local Ray")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p = sub.add_parser("report", help="write report.md, report.html and PNG plots for a results folder")
    p.add_argument("results", help="the results folder of `adamkit bench run` (or its SQLite file)")
    p.add_argument("--out", help="report folder (default: RESULTS/report)")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "run": _run, "report": _report}[args.bench_command](args)


def _list(args) -> int:
    from . import registry
    from .suite import list_suites

    print("Problems and tasks (name, tier, description):")
    for name in registry.list_problems(args.tier):
        cls = registry.get_problem_class(name)
        print(f"  {name:<26} {cls.tier}  {cls.description or cls.stands_for}")
    for module, error in registry.IMPORT_ERRORS.items():
        print(f"  (module {module} could not be imported: {error})")
    print("\nShipped suites (adamkit bench run NAME --out DIR):")
    for name, description in list_suites():
        print(f"  {name:<12} {description}")
    return 0


def _default_jobs() -> int:
    import os

    return max(1, min(2, os.cpu_count() or 1))


def _run(args) -> int:
    from .executors import make_executor
    from .store import ResultStore
    from .suite import SuiteError, load_suite
    from .sweep import Progress, run_sweep

    try:
        suite = load_suite(args.suite)
    except SuiteError as exc:
        print(f"adamkit bench: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(args.store) if args.store else ResultStore.open_results(out)
    if args.store:
        (out / "store.txt").write_text(str(Path(args.store).resolve()) + "\n")
    jobs = args.jobs or _default_jobs()
    try:
        executor = make_executor(args.executor, jobs, args.address)
    except (RuntimeError, ValueError) as exc:
        print(f"adamkit bench: {exc}", file=sys.stderr)
        return 2
    n_inst = len(suite.problems)
    print(f"suite {suite.name!r}: {n_inst} problem instances, optimizers {', '.join(suite.optimizers)}; "
          f"{suite.trials} trials + defaults each; {args.executor} executor, {jobs} job(s); results in {store.path}")
    try:
        stats = run_sweep(suite, store, executor, retry_failed=args.retry_failed,
                          progress=None if args.quiet else Progress(), check_data=args.executor == "local")
    except KeyboardInterrupt:
        counts = store.count()
        print(f"\ninterrupted: {counts.get('done', 0)} runs are stored; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(f"{stats.done} runs done, {stats.failed} failed, {stats.skipped} already stored, in {stats.seconds:.0f} s")
    if stats.no_data:
        names = sorted({c.split()[-1] for c in stats.no_data.values()})
        print(f"skipped {len(stats.no_data)} task instance(s) whose data is not in the cache "
              f"({', '.join(stats.no_data)}); fetch it with: adamkit data prepare {' '.join(names)} "
              f"(or `make data`), then run the same command again")
    for line in stats.failures[:10]:
        print(f"  failed: {line}")
    if len(stats.failures) > 10:
        print(f"  ... and {len(stats.failures) - 10} more (see the report)")
    _summary(store.path)
    print(f"\nnext: adamkit bench report {out}")
    return 0 if not stats.failed else 1


def _summary(where) -> None:
    """The table at the end of a run: per problem, each optimizer's median final value (tuned)."""
    from . import analysis
    from .plots import _fmt

    res = analysis.load(where)
    opts = list(res.suite.optimizers)
    width = max(10, *(len(o) for o in opts))
    key_w = min(44, max(len(i.key) for i in res.instances))
    print("\nmedian final target metric over the final seeds (share of seeds reaching the target); * = best")
    print(f"{'problem':<{key_w}} " + " ".join(f"{o:>{width + 7}}" for o in opts))
    for inst in res.instances:
        arm = res.main_arm(inst)
        cells, meds = [], {}
        for o in opts:
            a = res.arm(inst.key, o, arm)
            meds[o] = a.median if a is not None else math.nan
        finite = [v for v in meds.values() if not math.isnan(v)]
        best = (max if inst.maximize else min)(finite) if finite else None
        for o in opts:
            a = res.arm(inst.key, o, arm)
            if a is None:
                cells.append(f"{'':>{width + 7}}")
                continue
            star = "*" if best is not None and meds[o] == best else " "
            conv = "" if math.isnan(a.converged) else f"({a.converged:.0%})"
            cells.append(f"{_fmt(a.median) + star:>{width + 1}}{conv:>6}")
        print(f"{inst.key[:key_w]:<{key_w}} " + " ".join(cells))


def _report(args) -> int:
    from .report import write_report

    try:
        write_report(args.results, args.out)
    except ValueError as exc:
        print(f"adamkit bench: {exc}", file=sys.stderr)
        return 2
    return 0
