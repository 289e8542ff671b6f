"""``adamkit bench``: list problems and suites, run a suite (resumable), write a report.

    adamkit bench list
    adamkit bench run SUITE --out DIR [--jobs N]   (or: --suite SUITE) [--executor local|ray] [--address ADDR] [--store FILE]
                      [--device cpu|cuda|cuda:N]
    adamkit bench report DIR [--out REPORT_DIR]
    adamkit bench plan SUITE [--jobs N]          (what a suite costs, by the planner's cost model)
"""
from __future__ import annotations

import argparse
import errno
import json
import math
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="the registered problems and tasks, and the shipped suites")
    p.add_argument("--tier", choices=("A", "B"), help="only this tier")
    p = sub.add_parser("run", help="run a suite (a shipped name or a TOML file) into a results folder; resumable")
    p.add_argument("suite", nargs="?", help="smoke, quick, full, tasks_quick, paper, precision, gpu_smoke, gpu, or "
                   "the path of a suite TOML file (or give it as --suite)")
    p.add_argument("--suite", dest="suite_option", metavar="SUITE", help="the same as the positional SUITE")
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="cpu (default), cuda or cuda:N: where the runs of tasks that support a device compute (the "
                        "other problems run on the CPU); the --jobs workers share the GPU. A store holds the runs of "
                        "one kind of device")
    p.add_argument("--out", required=True, help="results folder (holds results.sqlite; re-run to resume)")
    p.add_argument("--store", help="the SQLite results file (default: OUT/results.sqlite)")
    p.add_argument("--jobs", type=int, default=None, help="parallel runs (default: the number of CPUs, at most 2)")
    p.add_argument("--executor", choices=("local", "ray"), default="local", help="where runs execute (default local)")
    p.add_argument("--address", help="Ray cluster address (with --executor ray); default: start a local Ray")
    p.add_argument("--retry-failed", action="store_true", help="run failed runs again")
    p.add_argument("--time-limit", metavar="DURATION",
                   help="start no run after DURATION (seconds, or such as 90m or 2h30m): the runs under way finish "
                        "and are stored, and the command exits with status 3 while runs are left; run it again to "
                        "resume")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p = sub.add_parser("plan", help="what a suite costs by the planner's cost model (CPU-hours per entry), "
                       "before running it")
    p.add_argument("suite", help="a shipped suite name or the path of a suite TOML file")
    p.add_argument("--jobs", type=int, default=2, help="parallel runs the wall time is given for (default 2)")
    p.add_argument("--out", help="a results folder of this suite's sweep: print what is stored there and what "
                   "is left of the sweep (what `adamkit bench run SUITE --out OUT` would still run)")
    p.add_argument("--store", help="the SQLite results file (default: OUT/results.sqlite)")
    p = sub.add_parser("report", help="write report.md, report.html and PNG plots for a results folder")
    p.add_argument("results", help="the results folder of `adamkit bench run` (or its SQLite file)")
    p.add_argument("--out", help="report folder (default: RESULTS/report)")
    p = sub.add_parser("compact", help="thin a results folder's stored curves for committing or sharing; every "
                       "number of its report stays the same (its figures are drawn from the thinned curves)")
    p.add_argument("results", help="the results folder of `adamkit bench run` (or its SQLite file)")
    p.add_argument("--eval-points", type=int, default=None, help="evaluation points kept per run (default 100)")
    p.add_argument("--train-points", type=int, default=None, help="training-loss points kept per run (default 200)")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "run": _run, "report": _report, "compact": _compact,
            "plan": _plan}[args.bench_command](args)


def _fail(message: str) -> int:
    """Every error of ``adamkit bench``: one line on stderr, exit status 2."""
    print(f"adamkit bench: {message}", file=sys.stderr)
    return 2


_OS_REASONS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EPERM: "operation not permitted", errno.ENOSPC: "no space left on the device",
               errno.EDQUOT: "disk quota exceeded", errno.EEXIST: "a file is in the way",
               errno.ENOTDIR: "a file is in the way"}


def _os_message(exc: OSError, where: Path, fix: str) -> str:
    """One line for an OSError while writing under ``where``: the file, the reason, what to do."""
    reason = _OS_REASONS.get(exc.errno, exc.strerror or str(exc))
    target = exc.filename or where
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space and run the same command again (the runs stored so far are kept)"
    return f"cannot write {target}: {reason}; {fix}"


def _list(args) -> int:
    from . import registry
    from .suite import list_suites

    print("Problems and tasks (name, tier, description):")
    for name in registry.list_problems(args.tier):
        cls = registry.get_problem_class(name)
        print(f"  {name:<26} {cls.tier}  {cls.description or cls.stands_for}")
        if getattr(cls, "cost", ""):
            print(f"  {'':<26}    cost: {cls.cost}")
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
    from .executors import ExecutorError
    from .store import StoreError

    out = Path(args.out)
    try:
        return _run_sweep(args, out)
    except (StoreError, ExecutorError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(_os_message(exc, out, "give a writable --out"))


def _run_sweep(args, out: Path) -> int:
    from . import devices
    from .executors import make_executor
    from .store import ResultStore
    from .suite import SuiteError, load_suite
    from .sweep import Progress, run_sweep

    given = [v for v in (args.suite, getattr(args, "suite_option", None)) if v]
    if not given:
        return _fail("name the suite to run: adamkit bench run SUITE --out DIR (a shipped name such as quick, or a "
                     "TOML file)")
    if len(set(given)) > 1:
        return _fail(f"two suites given ({given[0]!r} and --suite {given[1]!r}); give one")
    device = getattr(args, "device", None) or "cpu"
    try:
        device = devices.parse(device)
        devices.check_available(device)
    except devices.DeviceError as exc:
        return _fail(str(exc))
    try:
        suite = load_suite(given[0])
    except SuiteError as exc:
        return _fail(str(exc))
    jobs = args.jobs or _default_jobs()
    time_limit = None
    if getattr(args, "time_limit", None) is not None:
        time_limit = parse_duration(args.time_limit)
        if time_limit is None:
            return _fail(f"--time-limit: expected seconds or a duration such as 90m or 2h30m, got "
                         f"{args.time_limit!r}")
    try:
        executor = make_executor(args.executor, jobs, args.address, device)
    except (RuntimeError, ValueError) as exc:
        return _fail(str(exc))
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(args.store) if args.store else ResultStore.open_results(out)
    if args.store:
        (out / "store.txt").write_text(str(Path(args.store).resolve()) + "\n")
    store.check_device(devices.describe(devices.torch_device(device)), device)
    n_inst = len(suite.problems)
    tuned = sum(1 for p in suite.problems if p.tune)
    search = (f"{suite.trials} trials + defaults each" if tuned == n_inst
              else "no tuning (fixed hyperparameters)" if tuned == 0
              else f"{suite.trials} trials + defaults each on {tuned} of them (fixed hyperparameters on the others)")
    short = sum(1 for p in suite.problems if p.tune and p.multi_fidelity)
    if short:
        search += f" ({short} tuned at a shorter budget than their final arms)"
    where = "" if device == "cpu" else f" on {devices.identity(store.device_record())} ({device}: the tasks that " \
        "support a device; the other problems on the CPU)"
    print(f"suite {suite.name!r}: {n_inst} problem instances, optimizers {', '.join(suite.optimizers)}; "
          f"{search}; {args.executor} executor, {jobs} job(s){where}; results in {store.path}")
    try:
        stats = run_sweep(suite, store, executor, retry_failed=args.retry_failed,
                          progress=None if args.quiet else Progress(), check_data=args.executor == "local",
                          notify=lambda line: print(line, file=sys.stderr), time_limit=time_limit)
    except KeyboardInterrupt:
        counts = store.count()
        print(f"\ninterrupted: {counts.get('done', 0)} runs are stored; run the same command again to resume",
              file=sys.stderr)
        return 130
    shared = f", {stats.shared} done by another `bench run` on this store" if stats.shared else ""
    print(f"{stats.done} runs done, {stats.failed} failed, {stats.skipped} already stored{shared}, "
          f"in {stats.seconds:.0f} s")
    if stats.no_package:
        missing = ", ".join(f"{key} (needs {module})" for key, (module, _) in stats.no_package.items())
        commands = " ".join(sorted({command for _, command in stats.no_package.values()}))
        print(f"skipped {len(stats.no_package)} task instance(s) whose Python package is not installed "
              f"({missing}); install it with: {commands}, then run the same command again")
    if stats.no_data:
        names = sorted({c.split()[-1] for c in stats.no_data.values()})
        print(f"skipped {len(stats.no_data)} task instance(s) whose data is missing or damaged in the cache "
              f"({', '.join(stats.no_data)}); fetch it with: adamkit data prepare {' '.join(names)} "
              f"(or `make data`), then run the same command again")
    for line in stats.failures[:10]:
        print(f"  failed: {line}")
    if len(stats.failures) > 10:
        print(f"  ... and {len(stats.failures) - 10} more (see the report)")
    gpus = devices.gpu_models(store.run_devices().values())
    if len(gpus) > 1:  # a Ray cluster of several GPU models: each run's record says which (never pooled silently)
        print(f"note: the runs of this store computed on {len(gpus)} GPU models ({', '.join(gpus)}); their "
              "wall-clock figures are not comparable, and their results agree only up to float rounding")
    _summary(store.path)
    if stats.stopped:
        print(f"\nthe time limit ({args.time_limit}) is reached: {stats.left} planned run(s) not started (more are "
              "planned once the searches they wait for are finished); run the same command again to resume")
        return 3
    print(f"\nnext: adamkit bench report {out}")
    return 0 if not stats.failed else 1


def parse_duration(text: str) -> float | None:
    """Seconds of a duration given as seconds (``5400``, ``90.5``) or with units (``90m``, ``2h30m``, ``1h5m30s``);
    None when ``text`` is neither, or is negative."""
    import re

    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?", text)
        if not text or m is None:
            return None
        h, mi, se = (float(g) if g else 0.0 for g in m.groups())
        seconds = 3600 * h + 60 * mi + se
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


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
    if res.suite.variants:
        from . import judge

        rows = judge.judge_variants(res)
        print("\nvariants against the main arm (non-inferiority; the report has each row):")
        for name in res.suite.variants:
            verdicts = [c.verdict for c in rows if c.variant == name]
            counts = ", ".join(f"{verdicts.count(v)} {v}" for v in (judge.NO_WORSE, judge.WORSE, judge.INCONCLUSIVE,
                                                                    judge.NOT_MEASURED) if verdicts.count(v))
            print(f"  {name}: {counts}")


def _report(args) -> int:
    from .report import write_report
    from .store import StoreError

    results = Path(args.results)
    out = Path(args.out) if args.out else (results if results.is_dir() else results.parent) / "report"
    try:
        write_report(args.results, args.out)
    except (ValueError, StoreError) as exc:
        return _fail(str(exc))
    except OSError as exc:
        default = "" if args.out else f" (by default the report goes to {out})"
        return _fail(_os_message(exc, out, f"give a writable folder with --out{default}"))
    return 0


def _compact(args) -> int:
    """Thin the store's curves (:meth:`ResultStore.compact`), first keeping each run's exact steps to the
    target of every instance of the stored suite that uses it."""
    from . import analysis, store as store_module
    from .store import StoreError

    eval_points = args.eval_points if args.eval_points is not None else store_module.COMPACT_EVAL_POINTS
    train_points = args.train_points if args.train_points is not None else store_module.COMPACT_TRAIN_POINTS
    if eval_points < store_module.COMPACT_TAIL + 2:
        return _fail(f"--eval-points must be at least {store_module.COMPACT_TAIL + 2} (the last "
                     f"{store_module.COMPACT_TAIL} evaluations, what a selection averages, are always kept); "
                     f"got {eval_points}")
    if train_points < 2:
        return _fail(f"--train-points must be at least 2, got {train_points}")
    try:
        res = analysis.load(args.results)
        targets: dict[str, list[tuple[str, float, bool]]] = {}
        insts = {i.key: i for i in res.instances}
        for planned in res.phase1 + res.phase2:
            inst = insts.get(planned.instance)
            if inst is not None and inst.target is not None:
                entry = (inst.target_metric, float(inst.target), inst.maximize)
                if entry not in targets.setdefault(planned.hash, []):
                    targets[planned.hash].append(entry)
        path = res.store.path
        before = path.stat().st_size
        res.store.close()
        with store_module.ResultStore(path, create=False) as store:
            counts = store.compact(targets, eval_points=eval_points, train_points=train_points)
        after = path.stat().st_size
    except (ValueError, StoreError) as exc:
        return _fail(str(exc))
    print(f"compacted {path}: {counts['thinned']} of {counts['runs']} runs' curves thinned to about {eval_points} "
          f"evaluation and {train_points} training points, {counts['targets']} steps-to-target kept exactly; "
          f"{before / 2**20:.1f} MB -> {after / 2**20:.1f} MB")
    return 0


def _plan(args) -> int:
    """``adamkit bench plan SUITE [--out DIR]``: the suite's runs and CPU-hours by the planner's cost model, or,
    against the store of a sweep under way, what is stored and what is left."""
    from .protocol import BENCH_VERSION, Lookup, estimate
    from .store import ResultStore, StoreError
    from .suite import SuiteError, load_suite
    from .sweep import check_version

    try:
        suite = load_suite(args.suite)
    except SuiteError as exc:
        return _fail(str(exc))
    if args.jobs < 1:
        return _fail(f"--jobs must be at least 1, got {args.jobs}")
    where = args.store or args.out
    if where is None:
        print(f"suite {suite.name!r} (benchmark version {BENCH_VERSION}): {len(suite.problems)} problem instances")
        for line in estimate(suite).lines(args.jobs):
            print(line)
        return 0
    try:
        with ResultStore.open_results(where, create=False, read_only=True) as store:
            check_version(store)
            bench = store.bench_record()
            if bench.get("suite") not in (None, suite.name):
                return _fail(f"{store.path} holds a sweep of suite {bench['suite']!r}, not {suite.name!r}: name "
                             "that suite, or give the results folder of this one")
            changed = bench.get("suite_sha256") not in (None, suite.content_hash())
            prose = False
            if changed:  # the description is prose: the runs change only with the tables
                try:
                    stored = json.loads(store.get_meta("suite") or "{}").get("suite", {})
                except ValueError:
                    stored = {}
                prose = {k: v for k, v in stored.items() if k != "description"} == \
                    {k: v for k, v in suite.raw.items() if k != "description"}
            lookup = Lookup(store.finals(), store.curve, suite.smooth)
            est = estimate(suite, lookup, store.durations())
            path = store.path
    except (StoreError, OSError, ValueError) as exc:
        return _fail(str(exc))
    print(f"suite {suite.name!r} (benchmark version {BENCH_VERSION}) against {path}: {len(suite.problems)} "
          "problem instances")
    if changed and prose:
        print(f"note: only the suite's description changed since this sweep started (content {bench['suite_sha256']} "
              f"in the store, {suite.content_hash()} now); its tables, and so its runs, are the same")
    elif changed:
        print(f"note: the suite's tables changed since this sweep started (content {bench['suite_sha256']} in the "
              f"store, {suite.content_hash()} now): what is left is what the suite as it is now would run")
    for line in est.lines(args.jobs):
        print(line)
    return 0
