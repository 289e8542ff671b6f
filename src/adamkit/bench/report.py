"""``adamkit bench report DIR``: a folder a person opens — report.md, a self-contained report.html, PNG plots.

Everything is recomputed from the store alone (the runs, their evaluation curves, the suite and the
benchmark record stored with them): the claims table by the generic judge (:mod:`adamkit.bench.judge`),
the figures by :mod:`adamkit.bench.plots`, the document by :mod:`adamkit.bench.document`.
"""
from __future__ import annotations

import functools
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _stats
from . import analysis, judge, protocol, registry
from .claims import Ref
from .document import Doc
from .plots import (_budget, _fmt, _hp, _metric_label, plot_beta2, plot_curves, plot_forest, plot_lr_sensitivity,
                    plot_profiles, plot_samples, plot_theta, plot_time_to_target, plot_train_loss, plot_trajectories,
                    plot_variants)


def _seeds_text(seeds: tuple[int, ...], kind: str) -> str:
    """``5 final seeds (1000–1004)``, ``1 tuning seed (0)``."""
    noun = f"{kind} seed" + ("s" if len(seeds) != 1 else "")
    if len(seeds) > 2 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{len(seeds)} {noun} ({seeds[0]}–{seeds[-1]})"
    return f"{len(seeds)} {noun} ({', '.join(map(str, seeds))})"


def protocol_summary(suite) -> list[str]:
    """One line per distinct protocol of the suite's problems: trials, tuning and final seeds, and which problems."""
    groups: dict[str, list[str]] = {}
    for inst in suite.problems:
        if inst.tune:
            defaults = " + defaults" if suite.defaults_arm else ""
            key = (f"{inst.trials} trials{defaults} on {_seeds_text(inst.tune_seeds, 'tuning')}"
                   + (f" at {_tuning_budget(inst)}" if inst.multi_fidelity else "")
                   + f", {_seeds_text(inst.final_seeds, 'final')}")
        else:
            key = f"no tuning (fixed hyperparameters), {_seeds_text(inst.final_seeds, 'final')}"
        names = groups.setdefault(key, [])
        if inst.group not in names:
            names.append(inst.group)
    return [f"{key}: {', '.join(names)}" for key, names in groups.items()]


def _tuning_budget(inst) -> str:
    """``1 epoch`` or ``300 steps``: the trials' budget of a multi-fidelity instance, against the final one."""
    steps, epochs, _ = inst.tune_budget
    short = f"{epochs} epoch{'s' if epochs != 1 else ''}" if epochs else f"{steps} steps"
    return f"{short} (final arms {_budget(inst)})"


def _target_text(inst) -> str:
    return f"{'≥' if inst.maximize else '≤'} {_fmt(inst.target)}"


def tuning_gains(res) -> list[list[str]]:
    rows = []
    for inst in res.instances:
        if not inst.tune:
            continue
        direction = "higher" if inst.maximize else "lower"
        row, any_cell = [inst.key], False
        for o in res.suite.optimizers:
            tuned, default = res.arm(inst.key, o, "tuned"), res.arm(inst.key, o, "defaults")
            if tuned is None or default is None:
                row.append("")
                continue
            d = judge.paired_differences(dict(zip(tuned.seeds, tuned.values)), dict(zip(default.seeds, default.values)),
                                         direction)
            if d.size == 0:
                row.append("–")
                continue
            row.append(gain_text(d))
            any_cell = True
        if any_cell:
            rows.append(row)
    return rows


def gain_text(d: np.ndarray) -> str:
    """Paired differences as the tuned-against-defaults table prints them: the mean, its 95 % paired t interval
    (the judge's) and n; the same difference on every pair (the tuning chose the defaults, or every seed ends
    alike) without an interval, never as a zero-width one."""
    if d.size >= 2 and np.all(d == d[0]):
        return f"{d[0]:+.3g} on all {d.size} pairs (no interval)"
    if d.size < 2:
        return f"{d[0]:+.3g} n=1"
    mean, low, high = _stats.t_interval(d)
    return f"{mean:+.3g} [{low:.3g}, {high:.3g}] n={d.size}"


#: the newest committed run of the ``full`` suite (a folder of the repository, which the tests check), to which a
#: report of another suite points for the claims it does not measure
NEWEST_FULL_RUN = "results/2026-12-05-full"

#: a row of the wall-clock table whose runs come from sweep sessions with machine probes further apart than this
#: ratio is marked: its cells were timed at different machine speeds
PROBE_SPREAD = 1.25


def run_probes(res) -> dict[str, float]:
    """hash -> the machine probe (µs per step, ``sweep.machine_probe``) of the sweep session each finished run was
    stored in (the last session that started before it finished); runs of a store without sessions are left out."""
    sessions = sorted((s["started"], s["probe_us_per_step"]) for s in res.store.sessions()
                      if s.get("started") and s.get("probe_us_per_step"))
    out = {}
    for h, finished in res.store.finish_times().items():
        before = [probe for started, probe in sessions if started <= finished]
        if before:
            out[h] = before[-1]
    return out


def step_costs(res) -> list[list[str]]:
    """Per Tier B instance, the median ms per step of each optimizer's main arm; an instance whose runs were timed
    in sessions of machine speeds more than :data:`PROBE_SPREAD` apart is marked with the range of their probes."""
    seconds = res.store.durations()
    probes = run_probes(res)
    rows = []
    for inst in res.instances:
        if inst.tier != "B":
            continue
        row, any_cell, speeds = [inst.key], False, []
        for o in res.suite.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            timed = [h for h in (arm.hashes if arm else []) if h in seconds and (res.finals.get(h) or {}).get("steps")]
            per = [seconds[h] / res.finals[h]["steps"] * 1e3 for h in timed]
            speeds += [probes[h] for h in timed if h in probes]
            row.append(f"{analysis.quantile(per, 0.5):.3g}" if per else "")
            any_cell |= bool(per)
        if speeds and max(speeds) > PROBE_SPREAD * min(speeds):
            row[0] += f" (†: machine probes {min(speeds):.0f}–{max(speeds):.0f} µs/step)"
        if any_cell:
            rows.append(row)
    return rows


def version_text(res) -> str:
    """The benchmark version of the runs and of this analysis, and the suite by name and content hash."""
    b = res.bench
    suite_hash = b.get("suite_sha256") or res.suite.content_hash()
    text = (f"**Benchmark version** of the runs: {res.version}"
            + ("" if b else " (the store predates recorded versions)")
            + f"; of this analysis: {protocol.BENCH_VERSION}. Suite `{res.suite.name}` (content sha256 "
            f"`{suite_hash}`)" + (f", claims file `{b['claims_sha256']}`" if b.get("claims_sha256") else "")
            + (f", adamkit {b['adamkit']}" if b.get("adamkit") else "") + ".")
    if res.version < protocol.BENCH_VERSION:
        text += (f" **This report was made by newer analysis (version {protocol.BENCH_VERSION}) than its runs "
                 f"(version {res.version}: {protocol.BENCH_VERSIONS.get(res.version, '?')})**; its runs are read "
                 "with their own version's rules.")
    return text


def device_text(res) -> str:
    """Where the runs computed: each kind of device (the CPU, or one GPU model) with its stored runs and what its
    records say (name, torch; on CUDA: the CUDA and cuDNN versions, the compute capability, deterministic and TF32
    settings). Runs stored before devices were recorded ran on the CPU, and the text says their record is missing."""
    from . import devices

    records = res.store.run_devices()
    kinds: dict[str, list] = {}
    for record in records.values():
        kinds.setdefault(devices.identity(record), []).append(record)
    parts = []
    for kind, recs in sorted(kinds.items()):
        known = [r for r in recs if r]
        if not known:
            parts.append(f"{kind}: {len(recs)} runs (stored before devices were recorded)")
            continue
        r = known[-1]
        if kind == "cpu":  # every CPU capability the runs saw, with its runs (torch picks its kernels by it)
            capabilities = Counter(str(x.get("cpu_capability", "?")) for x in known)
            detail = f"{r.get('name', '?')}, " + (
                next(iter(capabilities)) if len(capabilities) == 1 else
                ", ".join(f"{c}: {k} runs" for c, k in sorted(capabilities.items())))
        else:
            detail = (f"CUDA {r.get('cuda', '?')}, cuDNN {r.get('cudnn', '?')}, compute capability "
                      f"{r.get('capability', '?')}, deterministic algorithms {'on' if r.get('deterministic') else 'off'}"
                      f", TF32 {'on' if r.get('tf32') else 'off'}")
        torches = sorted({str(x.get("torch", "?")) for x in known})
        missing = len(recs) - len(known)
        parts.append(f"{kind}: {len(recs)} runs ({detail}; torch {', '.join(torches)}"
                     + (f"; {missing} stored before devices were recorded" if missing else "") + ")")
    return "**Device.** " + ("; ".join(parts) if parts else "no runs stored") + "."


def sessions_text(res) -> str:
    """One line on the sweep sessions that made the store: when each started, its jobs, and the machine probe
    (``sweep.machine_probe``: µs per step of a fixed tiny loop), which says how fast the machine ran then."""
    sessions = res.store.sessions()
    if not sessions:
        return ""
    parts = [f"{s.get('started', '?').replace('T', ' ')[:16]} ({s.get('jobs')} job(s), probe "
             f"{s.get('probe_us_per_step', float('nan')):.0f} µs/step"
             + (f", CPU {s['cpu_capability']}" if s.get("cpu_capability") else "") + ")" for s in sessions]
    capabilities = {s["cpu_capability"] for s in sessions if s.get("cpu_capability")}
    mixed = (f" The sessions ran on CPUs of {len(capabilities)} capabilities ({', '.join(sorted(capabilities))}): "
             "torch chooses its CPU kernels by it, so runs of one spec may differ in float rounding between them."
             if len(capabilities) > 1 else "")
    return (f"**Sweep sessions** ({len(sessions)}; the probe times a fixed tiny training loop, lower is faster: "
            "wall-clock figures of runs made in different sessions compare only as far as the probes agree): "
            + "; ".join(parts) + "." + mixed)


def protocol_text(res) -> str:
    suite = res.suite
    if res.version >= 2 and suite.problems and not any(p.tune for p in suite.problems):
        return ("No tuning: every optimizer runs its fixed hyperparameters (per problem below, on each optimizer's "
                "defaults) on the final seeds, the same for every optimizer (paired)"
                + ("; so does each variant arm" if suite.variants else "")
                + ". Numbers are medians over the final seeds with the 25–75 % range. Per problem:")
    if res.version >= 2:
        return ("Every optimizer gets the same search on every problem: a grid of log-spaced learning rates over "
                "the problem's range times the optimizer's own scale, extended by a decade while the best rate sits "
                "at an edge, then its ε/δ at the ends of its own range at the best rate"
                + (f", plus its defaults ({defaults_source(suite.optimizers)}) as one more candidate"
                   if suite.defaults_arm else "")
                + f", each on the tuning seeds; selection on the mean of the last {suite.smooth} evaluations of the "
                "validation metric"
                + ("; where a problem below names a shorter tuning budget, the trials run that budget (the "
                   "learning-rate schedule scaled to it) and only the final arms run the full one"
                   if any(p.multi_fidelity for p in suite.problems if p.tune) else "")
                + ". The winner re-runs on the final seeds, disjoint from the tuning seeds and the "
                "same for every optimizer (paired)" + ("; so do the defaults" if suite.defaults_arm else "")
                + " and each paper configuration a claim names (`paper:<arm>`, the winner's learning rate). "
                "Numbers are medians over the final seeds with the 25–75 % range. Per problem:")
    return ("(version 1) random-search trials (a Latin hypercube over the problem's learning-rate range, ε/δ on "
            "each optimizer's scale), selection on the final validation value of the tuning seeds, re-run on the "
            "final seeds. Per problem:")


def _signed(v: float) -> str:
    return _fmt(v) if math.isnan(v) or v < 0 else "+" + _fmt(v)


def variants_section(doc, res, plots) -> None:
    """The suite's variants against each optimizer's main arm: a non-inferiority table, counts, a figure."""
    suite = res.suite
    rows = judge.judge_variants(res)
    doc.h(2, "Variants against the main arm (non-inferiority)")
    described = "; ".join(f"`variant:{name}` = the main arm with {_hp(hp)}" for name, hp in suite.variants.items())
    margins = ", ".join(f"`{m}`: " + (f"{v:g} absolute" if k == "absolute" else f"{v * 100:g} % of the reference "
                                      "arm's mean") for m, (k, v) in suite.margins.items())
    doc.p(f"{described}. Each runs on the same final seeds as the optimizer's main arm (the reference: tuned "
          "winner, or the fixed hyperparameters), and the same seed gives the same initialisation and data order, "
          "so the runs are paired. Per (optimizer, instance, variant): the paired differences variant − reference "
          "of the final target metric, signed so that > 0 means the variant is better (for a metric where lower "
          f"is better: reference − variant), their mean and a 95 % paired-bootstrap interval ({judge.RESAMPLES} "
          f"resamples, fixed seed), n = paired seeds. Non-inferiority margins ({margins}): **no worse** when the "
          "whole interval lies above −margin, **worse** when it lies wholly below, else **inconclusive** (and "
          f"always when n < {judge.MIN_SEEDS}).")
    seconds = res.store.durations()

    def ms_per_step(arm) -> str:
        per = [seconds[h] / res.finals[h]["steps"] * 1e3 for h in (arm.hashes if arm else [])
               if h in seconds and (res.finals.get(h) or {}).get("steps")]
        return _fmt(analysis.quantile(per, 0.5)) if per else "–"

    table = []
    for c in rows:
        ref = res.arm(c.instance, c.optimizer, c.reference_arm)
        var = res.arm(c.instance, c.optimizer, f"variant:{c.variant}")
        table.append([c.optimizer, c.instance, c.variant, f"{c.metric} ({c.direction} is better)",
                      (f"{_fmt(c.reference_median)} ({_hp(ref.hparams)})" if ref is not None else "–"),
                      _fmt(c.variant_median),
                      f"{_signed(c.effect)} [{_fmt(c.low)}, {_fmt(c.high)}]" if c.n else "–", str(c.n),
                      c.margin_text or "–", f"**{c.verdict}**" + (f"; {c.note}" if c.note else ""),
                      f"{ms_per_step(ref)} / {ms_per_step(var)}"])
    doc.table(["optimizer", "instance", "variant", "metric", "reference median (its hyperparameters)",
               "variant median", "difference [95 % interval]", "n", "margin", "verdict",
               "ms/step reference / variant"], table)
    doc.p("ms/step: median run time per optimizer step (evaluations included, one thread per run) on the machine "
          "that ran the sweep; descriptive only (other work on the machine moves it).")
    columns = list(dict.fromkeys((c.instance, c.variant) for c in rows))
    matrix = []
    for opt in dict.fromkeys(c.optimizer for c in rows):
        cells = {(c.instance, c.variant): c for c in rows if c.optimizer == opt}
        matrix.append([opt] + [cells[k].verdict if k in cells else "" for k in columns])
    doc.p("At a glance (each cell: the verdict of that optimizer's variant on that instance):")
    doc.table(["optimizer"] + [f"{i} · {v}" for i, v in columns], matrix)
    counts = []
    for name in suite.variants:
        here = [c.verdict for c in rows if c.variant == name]
        per = {v: here.count(v) for v in (judge.NO_WORSE, judge.WORSE, judge.INCONCLUSIVE, judge.NOT_MEASURED)}
        counts.append([name, str(len(here))] + [str(per[v]) for v in per])
    doc.table(["variant", "comparisons", judge.NO_WORSE, judge.WORSE, judge.INCONCLUSIVE, judge.NOT_MEASURED],
              counts)
    try:
        path = plot_variants(rows, plots)
    except Exception as exc:  # a plot that cannot be drawn must not lose the report
        doc.p(f"(plot plot_variants failed: {type(exc).__name__}: {exc})")
        return
    if path is not None:
        doc.img(path, "Paired difference of each variant against the main arm, in units of the margin (mean and "
                      "95 % interval); left of the dashed line at −1 is worse than the margin allows.")


# ------------------------------------------------------------------------------- the judge's comparisons


#: verdict words that are firm (a stand-in task never shows one: :func:`shown`)
FIRM_FOR = ("better", "supported", "equivalent")
FIRM_AGAINST = ("worse", "contradicted")
NOT_MEASURED_WORD = "not measured"
STAND_IN_FOR, STAND_IN_AGAINST = "consistent at stand-in scale", "inconsistent at stand-in scale"
_STEPS_VS_EPOCHS = re.compile(r"budget \d+ steps? < the claim's \d+ epochs?|budget \d+ epochs? < the claim's \d+ "
                              r"steps?")


@dataclass
class Shown:
    """One comparison of the judge as the report prints it (the judge's ``Comparison`` read field by field, with
    defaults where an older judge lacks a field): ``low``/``high`` None when there is no interval."""

    claim: Any
    instance: str
    tier: str
    row: str
    verdict: str
    n: int
    mean: float
    median: float | None
    low: float | None
    high: float | None
    p_wilcoxon: float | None
    p_holm: float | None
    band: float | None
    collapsed: tuple | None
    deterministic: bool
    note: str
    differences: tuple[float, ...] = ()  # the paired differences (none printed when deterministic)


def _num_or_none(v) -> float | None:
    return None if v is None or not isinstance(v, (int, float)) or math.isnan(v) else float(v)


def shown(claim, comparison, inst=None) -> Shown:
    """The judge's comparison as printed. The judge decides the verdict; three rules only keep the printed text
    honest whatever judge made it: a deterministic comparison prints as n = 1 without an interval, and one whose
    n > 1 differences are all equal (a zero-width interval) prints its n without an interval; a firm verdict on a
    task that declares itself a stand-in prints as consistent / inconsistent at stand-in scale, saying what the
    judge said; a note comparing a budget in steps with a regime in epochs (or back) is replaced by a sentence
    saying they do not compare."""
    c = comparison
    g = lambda name, default=None: getattr(c, name, default)  # noqa: E731
    mean = _num_or_none(g("mean", g("effect")))
    low, high = _num_or_none(g("low")), _num_or_none(g("high"))
    n = int(g("n", 0) or 0)
    deterministic = bool(g("deterministic", False))
    notes = [g("note", "") or ""]
    if not deterministic and n > 1 and low is not None and high is not None and low == high:
        notes.append(f"all {n} paired differences are equal: no sampling variation, no interval")
        low, high = None, None
    if deterministic:
        n, low, high = min(n, 1), None, None
    verdict = str(g("verdict", ""))
    if inst is not None and analysis.is_stand_in(inst) and verdict in FIRM_FOR + FIRM_AGAINST:
        margin = getattr(claim, "margin", 0.0) or 0.0
        toward = verdict in ("better", "supported") or (verdict == "equivalent" and margin > 0)
        notes.append(f"the judge said {verdict}; a stand-in task gives no firm verdict")
        verdict = STAND_IN_FOR if toward else STAND_IN_AGAINST
    note = "; ".join(x for x in notes if x)
    note = _STEPS_VS_EPOCHS.sub("the budget is in steps and the claim's regime in epochs (or back): not compared "
                                "here", note)
    band = _num_or_none(g("band"))
    collapsed = g("collapsed")
    return Shown(claim, str(g("instance", "")), str(g("tier", "")), str(g("row", "tuned") or "tuned"), verdict, n,
                 math.nan if mean is None else mean, _num_or_none(g("median")), low, high,
                 _num_or_none(g("p_wilcoxon")), _num_or_none(g("p_holm")), band,
                 tuple(collapsed) if collapsed is not None else None, deterministic, note,
                 () if deterministic else tuple(float(x) for x in (g("differences") or ())))


def effect_text(s: Shown, unit: str = "") -> str:
    """``+0.0106 [0.0081, 0.0131], n = 10`` or ``+0.5 (deterministic, n = 1: no interval)``."""
    unit = f" {unit}" if unit else ""
    if s.deterministic or s.low is None or s.high is None:
        return f"{_signed(s.mean)}{unit}, n = {s.n}" + (" (deterministic: no interval)" if s.deterministic else
                                                       " (no interval)")
    return f"{_signed(s.mean)}{unit} [{_fmt(s.low)}, {_fmt(s.high)}], n = {s.n}"


def _unit(claim) -> str:
    return "steps" if claim.metric == "steps_to_target" else claim.metric


def measured(res, verdicts) -> list[Shown]:
    """Every measured comparison of ``verdicts`` as printed, in the claims file's order and the suite's."""
    insts = {i.key: i for i in res.instances}
    out = []
    for v in verdicts:
        for c in v.comparisons:
            s = shown(v.claim, c, insts.get(getattr(c, "instance", "")))
            if s.verdict != NOT_MEASURED_WORD:
                out.append(s)
    return out


def _counterexample(res, s: Shown) -> bool:
    inst = next((i for i in res.instances if i.key == s.instance), None)
    return inst is not None and analysis.is_counterexample(inst)


def _lr_of(arm, optimizer: str) -> str:
    from . import optimizers as bench_optimizers

    lr = (arm.hparams or {}).get("lr") if arm is not None else None
    return _fmt(float(lr if lr is not None else bench_optimizers.default_lr(optimizer)))


def practitioner_rows(res) -> list[list[str]]:
    """The practitioner table: per Tier B task (grouped by family), the reference optimizer (Adam) at its
    defaults and tuned (its rate), the spread of the tuned family, which optimizer to use and its tuned rate, the
    best alternative against the tuned reference with its interval, n and verdict, and the other alternatives.
    Every tuned alternative the task ran is compared on the task's own metric (:func:`judge.against_reference`),
    whether or not a claim names it; a task without the reference's arm or any measured alternative is left out."""
    ref = analysis.reference_optimizer(res)
    compared = judge.against_reference(res)
    rows = []
    order = {f: i for i, f in enumerate(dict.fromkeys(analysis.family(i) for i in res.instances))}
    for inst in sorted((i for i in res.instances if i.key in compared), key=lambda i: order[analysis.family(i)]):
        here = [(label, shown(None, c)) for label, c in compared[inst.key] if c.n > 0 and not math.isnan(c.mean)]
        if not here:
            continue
        here.sort(key=lambda x: (-x[1].mean, x[0]))
        better = [x for x in here if x[1].verdict == judge.BETTER]
        label, best = (better or here)[0]
        main = res.arm(inst.key, ref, res.main_arm(inst))
        defaults = res.arm(inst.key, ref, "defaults")
        if defaults is None and main is not None and not main.hparams:
            defaults = main
        family = family_medians(res, inst)
        name, _, arm = label.partition("@")
        use = (f"**{label}** (lr {_lr_of(judge.arm_of(res, inst, Ref(name, arm or None)), name)})" if better
               else f"**{ref}** (lr {_lr_of(main, ref)})")
        others = "; ".join(f"{other} {_signed(s.mean)} ({s.verdict})" for other, s in here if other != label) or "–"
        stand_in = compared[inst.key][0][1].experiment == "stand-in"
        regime = _budget(inst) + (", stand-in" if stand_in else "") + ("" if inst.tune else ", not tuned")
        tuned = (f"{_fmt(main.median)} (lr {_lr_of(main, ref)})" if inst.tune else "not tuned") if main is not None \
            else "–"
        rows.append([analysis.family(inst), f"{inst.key} ({regime})",
                     f"{inst.target_metric} ({'higher' if inst.maximize else 'lower'} is better)",
                     _fmt(defaults.median) if defaults is not None else "–", tuned,
                     _spread(family), use, f"{label}: " + effect_text(best, inst.target_metric),
                     f"**{best.verdict}**", others])
    return rows


def family_medians(res, inst) -> list[float]:
    """The medians of every tuned configuration of the Adam family on ``inst``: each optimizer's main arm and each
    paper configuration tuned as an optimizer of its own (``paper:<arm>``), SGD's and the untuned ``paper-lr``
    arms left out (on the ResNet the family is mostly paper configurations)."""
    out = []
    for (key, o, arm), a in res.arms.items():
        if key != inst.key or o == "sgd" or not (arm == res.main_arm(inst) or arm.startswith("paper:")):
            continue
        if a is not None and a.n and math.isfinite(a.median):
            out.append(a.median)
    return out


def _spread(values: list[float]) -> str:
    """``0.9156–0.9163``: the range with as many digits as it takes to tell its ends apart (up to 6)."""
    if not values:
        return "–"
    lo, hi = min(values), max(values)
    for digits in range(3, 7):
        a, b = _fmt(lo, digits), _fmt(hi, digits)
        if a != b:
            break
    return f"{a}–{b}"


def practitioner_section(doc, res) -> None:
    ref = analysis.reference_optimizer(res)
    doc.h(2, "What to use: the practitioner table")
    rows = practitioner_rows(res)
    if not rows:
        missing = res.missing_final_runs("B")
        if missing:
            doc.p(f"Nothing here to act on yet: no task (Tier B) has tuned {ref} and a tuned alternative finished on "
                  f"the same seeds, and {missing} final runs of Tier B tasks are not stored (the sweep is "
                  "incomplete); the claims below say what it did measure.")
        else:
            doc.p(f"This suite ran no task (Tier B) with tuned {ref} and a tuned alternative on the same seeds, so "
                  "there is nothing here to act on; the claims below say what it did measure.")
        return
    doc.p(f"Per task, grouped by family, at this suite's budget (the regime: steps or epochs, and whether the task is "
          f"a stand-in for the papers' experiment): {ref} at its defaults and tuned (with its tuned learning rate), "
          f"the spread of the tuned Adam family's medians (every tuned configuration but SGD's, the paper "
          f"configurations tuned as optimizers of their own included), which optimizer to use, and the best alternative against "
          f"tuned {ref} on the same seeds (tuned against tuned, on the task's own metric; > 0: the alternative is "
          f"better) with its interval, n and verdict, then the other alternatives. Every tuned configuration the task "
          f"ran is an alternative (`name@arm`: a paper configuration tuned as an optimizer of its own), whether or "
          f"not a claim names it; the verdicts use the claims' statistics and bands, Holm-adjusted over the task's "
          f"alternatives, and need {judge.MIN_PAIRS} paired seeds. Use an alternative only where the verdict is "
          f"*better* (on a stand-in task it reads *better at stand-in scale*, and the table keeps {ref}); elsewhere "
          f"use {ref} and tune its learning rate: the first two value columns show what tuning bought. A task marked "
          f"*not tuned* ran every optimizer at fixed hyperparameters (its defaults: "
          f"{defaults_source(res.suite.optimizers)}): its comparisons are of "
          f"untuned arms, alike for every optimizer, and say nothing of tuned ones.")
    doc.table(["family", "task (regime)", "metric (the value columns)", f"{ref} at defaults", f"tuned {ref} (lr)",
               "tuned family spread", "use (lr)", f"best alternative vs tuned {ref}", "verdict",
               "other alternatives measured"], rows)


def _p_text(s: Shown) -> str:
    if s.p_wilcoxon is None and s.p_holm is None:
        return "–"
    return f"{_fmt(s.p_wilcoxon) if s.p_wilcoxon is not None else '–'} / {_fmt(s.p_holm) if s.p_holm is not None else '–'}"


def _row_label(res, s: Shown) -> str:
    """The judge's row, said as run: the ``tuned`` row of an instance that tunes nothing compares arms at fixed
    hyperparameters (a counterexample's one learning rate), so it reads ``fixed``."""
    inst = next((i for i in res.instances if i.key == s.instance), None)
    return "fixed" if s.row == "tuned" and inst is not None and not inst.tune else s.row


def _claim_rows(res, comparisons: list[Shown]) -> list[list[str]]:
    rows = []
    for s in comparisons:
        c = s.claim
        rows.append([c.paper, c.claim, f"{c.optimizer.label} vs {c.baseline.label}, {c.metric} ({c.direction} is "
                     "better)" + (f", margin {c.margin:g}" if getattr(c, "margin", 0) else ""), _row_label(res, s),
                     f"{s.instance}: {effect_text(s, _unit(c))}", _fmt(s.median) if s.median is not None else "–",
                     _p_text(s), _fmt(s.band) if s.band else "–",
                     (f"{s.collapsed[0]} / {s.collapsed[1]}" if s.collapsed else "–"),
                     f"**{s.verdict}**" + (f"; {s.note}" if s.note else "")])
    return rows


CLAIM_HEADER = ["paper", "claim", "comparison", "row", "instance: mean effect [95 % interval], n",
                "median difference", "p: Wilcoxon / beyond the band (Holm)", "band", "collapsed seeds", "verdict"]


def _forest_rows(res, comparisons: list[Shown]) -> list[dict[str, Any]]:
    return [{"group": f"{s.claim.id}: {s.claim.optimizer.label} vs {s.claim.baseline.label} ({_unit(s.claim)})",
             "label": f"{s.instance} · {_row_label(res, s)}" + (f" (n={s.n})" if s.n else ""), "mean": s.mean,
             "low": s.low, "high": s.high, "band": s.band, "verdict": s.verdict, "deterministic": s.deterministic,
             "differences": s.differences}
            for s in comparisons]


def claims_section(doc, res, verdicts, comparisons: list[Shown], plots: Path) -> None:
    doc.h(2, "Paper claims vs what we measured")
    doc.p("One generic judge (`adamkit.bench.judge`) over the claims data file (`adamkit/bench/claims/claims.toml`): "
          "per instance and row (`tuned`: the claimed configuration tuned as an optimizer of its own against the "
          "baseline's main arm; `paper-lr`: the configuration at the paper's own learning rate; `fixed`: an instance "
          "that tunes nothing, its arms at fixed hyperparameters), paired differences "
          "over the final seeds (> 0: the way the claim says), their mean with a 95 % interval, the median "
          "difference, the Wilcoxon signed-rank p beside the p of the t test that the mean lies beyond the "
          "equivalence band (Holm-adjusted within the claim's tier and row), the band and the collapsed seeds of "
          "each arm, where the judge gives them. *Better* / *worse* need both p below 0.05; *equivalent* is TOST, "
          "whose note gives the 90 % interval it rests on (inside the band; the 95 % interval may reach past it). "
          "A deterministic problem is one run: n = 1 and no interval. The verdicts are the judge's; Tier A toy "
          "problems and Tier B tasks are never pooled; the counterexamples have their own section below.")
    stats = [s for s in comparisons if not _counterexample(res, s)]
    if stats:
        doc.table(CLAIM_HEADER, _claim_rows(res, stats))
        tiers = []
        for v in verdicts:
            mine = [s for s in stats if s.claim is v.claim]
            if mine:
                tiers.append([v.claim.id, "; ".join(f"Tier {t}: {w}" for t, w in sorted(v.tiers.items())
                                                      if not str(w).startswith(NOT_MEASURED_WORD))])
        doc.p("Per claim and tier, the judge's aggregate:")
        doc.table(["claim", "verdict per tier"], tiers)
        for tier in ("B", "A"):
            rows = _forest_rows(res, [s for s in stats if s.tier == tier])
            try:
                path = plot_forest(rows, plots, f"claims_{tier}", f"Tier {tier}: every measured comparison of the "
                                   "claims, effect with its 95 % interval")
            except Exception as exc:  # a plot that cannot be drawn must not lose the report
                doc.p(f"(plot plot_forest failed: {type(exc).__name__}: {exc})")
                continue
            if path is not None:
                doc.img(path, f"Tier {tier} forest plot: per comparison the mean effect (> 0: the way the claim says) "
                              "and its 95 % interval, coloured by the judge's verdict; the shaded region is the "
                              "equivalence band; ◆ marks a deterministic comparison (n = 1, no interval).")
    else:
        doc.p("This suite measured no claim outside the counterexamples.")
    unshown = [v for v in verdicts if not any(s.claim is v.claim for s in comparisons)]
    pending = [v.claim for v in unshown if any(c.pending for c in v.comparisons)]
    absent = [v.claim for v in unshown if not any(c.pending for c in v.comparisons)]
    if pending:
        doc.p(f"{len(pending)} of the {len(verdicts)} claims are **not measured yet**: this suite runs their "
              "instances and arms, but the store holds no finished final runs of them (a search still running, or "
              "an incomplete sweep; re-run `adamkit bench run` with the same suite and folder):")
        doc.bullets([f"`{c.id}` ({c.paper}): {c.claim}" for c in pending])
    if absent:
        doc.p(f"{len(absent)} of the {len(verdicts)} claims are not measured by this suite (it runs none of their "
              "instances, or not their arms); per claim, the shipped suites that run them (`adamkit bench list` "
              "describes each)" + ("" if res.suite.name == "full" else
                                   f". The newest committed `full` run, `{NEWEST_FULL_RUN}/` in the repository, "
                                   "measures the claims `full` runs, with its own report and a README claim by claim")
              + ":")
        doc.bullets([f"`{c.id}` ({c.paper}): {c.claim} Run by: "
                     + (", ".join(f"`{name}`" for name in suites_running(c, exclude=res.suite.name)) or "no shipped suite")
                     for c in absent])


def suites_running(claim, exclude: str = "") -> list[str]:
    """The shipped suites (but ``exclude``) with an instance of ``claim`` that runs both the claimed optimizer and
    its baseline (a paper arm also needs the suite's ``paper_arms``)."""
    refs = (claim.optimizer, claim.baseline)
    out = []
    for name, suite in _shipped_suites():
        if name == exclude:
            continue
        if any(claim.matches(inst) and all(r.optimizer in inst.optimizers for r in refs)
               and (suite.paper_arms or not any(r.arm for r in refs)) for inst in suite.problems):
            out.append(name)
    return out


@functools.lru_cache(maxsize=1)
def _shipped_suites() -> tuple:
    """(name, suite) of every shipped suite that loads, read once per process."""
    from .suite import SHIPPED, SuiteError, load_suite

    out = []
    for name in SHIPPED:
        try:
            out.append((name, load_suite(name)))
        except (SuiteError, FileNotFoundError):
            continue
    return tuple(out)


def counterexample_section(doc, res, comparisons: list[Shown], plots: Path) -> None:
    """The fixed-rate counterexamples apart from the statistical table: the claims on them, their outcome per arm
    and the β2 figure."""
    counter = [s for s in comparisons if _counterexample(res, s)]
    insts = [i for i in res.instances if analysis.is_counterexample(i)]
    if not insts:
        return
    doc.h(2, "Counterexamples (fixed-rate toy problems)")
    doc.p("Problems built to break adaptive methods (ADOPT's and Reddi's): each optimizer runs at one fixed learning "
          "rate, so they are scored here, apart from the claims table and from the Tier A profile. Reddi's problem "
          "is deterministic (one run, no interval); ADOPT's draws its gradients at random (n counts independent "
          "chains where the judge says so).")
    if counter:
        doc.table(CLAIM_HEADER, _claim_rows(res, counter))
    rows = []
    for inst in insts:
        for o in inst.optimizers:
            names = [res.main_arm(inst)] + sorted(k[2] for k in res.arms if k[0] == inst.key and k[1] == o
                                                   and k[2].startswith(("paper:", "paper-lr:")))
            for name in names:
                arm = res.arm(inst.key, o, name)
                if arm is None or not arm.n:
                    continue
                value, what = plots_theta_outcome(res, arm)
                finals = analysis.chain_values(res, arm, "theta")  # each chain's final θ, where the runs have chains
                if inst.target is None:
                    reached = "–"
                elif finals:  # gap = θ + 1 of each chain against the target, as arm.converged reads each run's
                    reached = f"{sum(v + 1.0 <= inst.target for v in finals) / len(finals):.0%}"
                else:
                    reached = f"{arm.converged:.0%}"
                # the share of the last 10 % of steps each run (chain) spent at the optimum's end: an arm whose
                # last iterate sits at −1 while θ jumps between the ends shows it here, not in 'reached'
                ends = analysis.chain_or_run_values(res, arm, "share_end")
                at_end = f"{float(np.median(ends)):.0%}" if ends else "–"
                count = str(arm.n)
                if finals:
                    count += (f" × {len(finals) // arm.n} chains" if len(finals) % arm.n == 0
                              else f" ({len(finals)} chains)")
                rows.append([inst.key, o if name == res.main_arm(inst) else f"{o} {name}", _hp(arm.hparams),
                             f"{_fmt(value)} ({what})", reached, at_end, count])
    doc.p("Outcome per arm: the median over seeds (and over each run's independent chains) of θ's time average (or "
          "of the final θ); −1 is the optimum, 0 the start, +1 the worst point; 'reached' is the share of seeds "
          "(chains) whose last iterate is at θ ≤ −0.5; 'last 10 % at −1' is the median share of the last 10 % of "
          "steps spent at θ ≤ −0.99 (an arm jumping between the ends can finish at −1 and still spend most of its "
          "steps away from it).")
    doc.table(["instance", "arm", "hyperparameters", "θ (median)", "reached", "last 10 % at −1", "seeds"], rows)
    b2 = plot_beta2(res, plots)
    if b2:
        for path, caption in b2:
            doc.img(path, caption)
    else:
        doc.p("This store has no β2 sweep (no counterexample run at two or more β2, and no task instances differing "
              "in β2 alone): no β2 figure.")


def counterexamples_solved(res) -> dict[str, tuple[int, int]]:
    """{optimizer: (solved, ran)} over the fixed-rate counterexamples with a target: an instance is solved when
    the main arm's median time-averaged θ (:func:`plots.theta_outcome`) is within the target of the optimum −1."""
    out: dict[str, tuple[int, int]] = {}
    for inst in res.instances:
        if not analysis.is_counterexample(inst) or inst.target is None:
            continue
        for o in inst.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            if arm is None or not arm.n:
                continue
            value, _ = plots_theta_outcome(res, arm)
            k, n = out.get(o, (0, 0))
            out[o] = (k + int(math.isfinite(value) and value + 1.0 <= inst.target), n + 1)
    return out


def plots_theta_outcome(res, arm):
    from .plots import theta_outcome

    return theta_outcome(res, arm)


def scores_section(doc, res, plots: Path) -> None:
    """The profiles: Tier B time to targets set from reference runs (the headline), Tier A without the
    counterexamples, and the counterexamples apart; paired win rates per tier."""
    doc.h(2, "Scores")
    ttt = analysis.time_to_target(res, "B")
    if ttt.instances:
        doc.p(f"**Tier B (headline): time to the reference target.** Per task, the target is the median final "
              f"{ttt.reference} value of its main arm (set from the reference runs); each run's time to target is "
              "its first evaluation at the target, as a fraction of the budget; the profile is the share of the "
              f"{len(ttt.instances)} tasks every optimizer ran at the target against that fraction (each task weighs "
              "1, its seeds share it); score = the area under it (1: at the target from the first evaluation).")
        doc.table(["optimizer", "score", "share at the target at the end"],
                  [[o, f"{ttt.score(o):.2f}", f"{ttt.curves[o][-1]:.0%}"]
                   for o in sorted(ttt.curves, key=lambda o: (-ttt.score(o), o))])
        path = plot_time_to_target(ttt, plots, "B")
        if path is not None:
            doc.img(path, f"Tier B time-to-target profile over {len(ttt.instances)} tasks: share at the reference "
                          "target against the fraction of the budget, per optimizer.")
    rows = []
    for measure in ("steps", "final"):
        keys, ratios = analysis.profile_ratios(res, measure, "A", keep=lambda i: not analysis.is_counterexample(i))
        if keys:
            ranked = sorted(ratios.items(), key=lambda kv: (-analysis.algoperf_score(kv[1]), kv[0]))
            rows.append(["Tier A without counterexamples", "time to target" if measure == "steps" else "final value",
                         str(len(keys)), ", ".join(f"{o} {analysis.algoperf_score(r):.2f}" for o, r in ranked)])
    solved = counterexamples_solved(res)
    if solved:
        ranked = sorted(solved.items(), key=lambda kv: (-kv[1][0] / kv[1][1], kv[0]))
        rows.append(["counterexamples (fixed rate)", "solved: median time-averaged θ within the target of −1",
                     "–", ", ".join(f"{o} {k} of {n}" for o, (k, n) in ranked)])
    if rows:
        doc.p("**Tier A** (a diagnostic battery, not the headline), AlgoPerf-style: per instance each optimizer's ratio "
              "to the best there (steps to the declared target; or the final value, maximised metrics as 1 + relative "
              "shortfall), over the instances every optimizer ran; score = ∫₁⁴ ρ(τ) dτ / 3. The fixed-rate "
              "counterexamples are scored apart, per optimizer over the instances it ran: how many it solves, its "
              "median time-averaged θ within the instance's target of the optimum −1. (A ratio to the best means "
              "nothing where several arms reach −1 exactly, and a last iterate or a first hit can sit at −1 while θ "
              "jumps between the ends.)")
        doc.table(["instances", "measure", "instances all ran", "score per optimizer (best first)"], rows)
        for path, caption in plot_profiles(res, plots, tiers=("A",), keep=lambda i: not analysis.is_counterexample(i)):
            doc.img(path, caption + " Counterexamples left out.")
    for tier in ("B", "A"):
        names, rate, count = analysis.paired_win_rates(res, [i.key for i in res.instances if i.tier == tier])
        if np.nansum(count) > 0:
            doc.h(3, f"Paired win rates, Tier {tier}")
            doc.p(f"Share of paired runs (same instance, same seed) of Tier {tier} in which the row optimizer ends "
                  "with a better final target metric than the column optimizer (ties count ½); descriptive, the "
                  "claims table has the statistics.")
            doc.table(["row beats column"] + names,
                      [[a] + ["" if i == j else (f"{rate[i, j]:.0%}" if count[i, j] else "–")
                              for j in range(len(names))] for i, a in enumerate(names)])


def generalisation_gap(res, arm) -> float:
    """The median over an arm's finished runs of the final test loss minus the final training loss (the mean
    over the last training batches), where a task records both (the image classifiers); nan otherwise."""
    gaps = [f["test_loss"] - f["train_loss"] for f in (res.finals.get(h) for h in arm.hashes)
            if f and isinstance(f.get("test_loss"), float) and isinstance(f.get("train_loss"), float)]
    gaps = [g for g in gaps if math.isfinite(g)]
    return float(np.median(gaps)) if gaps else math.nan


def defaults_source(optimizers) -> str:
    """Where the defaults of ``optimizers`` come from: each paper's, and the bench's for a baseline (with them)."""
    from .optimizers import BASELINES

    bench = [f"{o}'s are the bench's, {_hp(BASELINES[o][1])}" for o in optimizers if o in BASELINES]
    return "its paper's" + "".join(f"; {b}" for b in bench)


def write_report(where: str | Path, out: str | Path | None = None, log=print) -> Path:
    """Write report.md, report.html and plots/ for the sweep in ``where``; returns the report folder.

    The report is a function of the store alone: the same store gives the same files, byte for byte (no time
    of writing, every order sorted or the suite's)."""
    started = time.monotonic()
    res = analysis.load(where)
    where = Path(where)
    out = Path(out) if out else (where if where.is_dir() else where.parent) / "report"
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    suite = res.suite
    counts = res.store.count()
    verdicts = judge.judge_all(res)
    comparisons = measured(res, verdicts)
    doc = Doc()
    doc.h(1, f"adamkit bench — suite `{suite.name}`")
    practitioner_section(doc, res)

    doc.h(2, "About this run")
    doc.p(suite.description)
    doc.p(f"{counts.get('done', 0)} runs finished, {counts.get('failed', 0)} failed. Optimizers: "
          f"{', '.join(suite.optimizers)}. This report is recomputed from the store alone.")
    doc.p(version_text(res))
    doc.p(device_text(res))
    sessions = sessions_text(res)
    if sessions:
        doc.p(sessions)
    doc.p("**Protocol.** " + protocol_text(res))
    doc.bullets(protocol_summary(suite))
    missing = res.missing_final_runs()
    if missing:
        doc.p(f"**Incomplete sweep:** {missing} final runs are not in the store yet; re-run `adamkit bench run` "
              f"with the same suite and folder to finish it.")

    claims_section(doc, res, verdicts, comparisons, plots)
    counterexample_section(doc, res, comparisons, plots)
    if suite.variants:
        variants_section(doc, res, plots)

    # the searches
    unbracketed = [(k, s) for k, s in sorted(res.searches.items()) if s.bracketed is False]
    extended = [(k, s) for k, s in sorted(res.searches.items()) if s.extensions]
    if res.searches:
        doc.h(2, "Learning-rate searches")
        n_lr = [len(s.lr_grid) for s in res.searches.values() if s.lr_grid]
        doc.p(f"{len(res.searches)} (instance, optimizer) searches; learning rates tried per search: "
              + (f"{min(n_lr)}–{max(n_lr)}" if n_lr else "–") + f"; grids extended by a decade: {len(extended)}; "
              + (f"optimum **not bracketed** (still at an edge after {suite.extend} extension(s) per side): "
                 if res.version >= 2 else "optimum at the lowest or highest rate tried (version 1: no extension), "
                 "**not bracketed**: ") + f"{len(unbracketed)}.")
        if unbracketed:
            doc.table(["instance", "optimizer", "rates tried", "extensions", "selected"],
                      [[k[0], k[1], f"{_fmt(s.lr_grid[0])} … {_fmt(s.lr_grid[-1])} ({len(s.lr_grid)})",
                        ", ".join(s.extensions) or "–", _hp(s.winner_hparams or {})] for k, s in unbracketed])

    # overview table
    doc.h(2, "Overview: median final value per problem (tuned)")
    doc.p("Each cell: median final target metric over the final seeds, and in brackets the share of seeds that "
          "reached the problem's target. **Bold**: the best median.")
    header = ["problem", "metric (target)"] + list(suite.optimizers)
    rows = []
    for inst in res.instances:
        arm = res.main_arm(inst)
        meds = {o: res.arm(inst.key, o, arm) for o in suite.optimizers}
        vals = {o: a.median for o, a in meds.items() if a is not None and not math.isnan(a.median)}
        best = (max if inst.maximize else min)(vals.values()) if vals else None
        row = [inst.key, f"{inst.target_metric} ({_target_text(inst)})" if inst.target is not None else inst.target_metric]
        for o in suite.optimizers:
            a = meds[o]
            if a is None:
                row.append("")
                continue
            cell = f"{_fmt(a.median)} ({a.converged:.0%})" if inst.target is not None and a.n else _fmt(a.median)
            if a.failed:
                cell += f" [{a.failed} failed]"
            row.append(f"**{cell}**" if best is not None and a.median == best else cell)
        rows.append(row)
    doc.table(header, rows)

    scores_section(doc, res, plots)

    # tuning gains and cost per step
    gains = tuning_gains(res)
    if gains:
        doc.h(2, "Tuned against defaults")
        doc.p("Per instance and optimizer: the tuned arm's gain over its own defaults "
              f"({defaults_source(suite.optimizers)}) on the final seeds (paired "
              "differences, > 0: tuning helped; mean [95 % paired t interval], n; the same difference on every pair, "
              "as where the tuning chose the defaults, has no interval). A negative gain means the selection on the "
              "tuning seeds did not carry over to the final seeds.")
        doc.table(["instance"] + list(suite.optimizers), gains)
    costs = step_costs(res)
    if costs:
        doc.h(2, "Wall-clock per step")
        doc.p("Median milliseconds per optimizer step of the main arm's final runs (run time / steps, evaluation "
              "included), one thread per run, timed on the machine of the sweep session that ran each. †: the row's "
              f"runs come from sessions whose machine probes (the Sweep sessions line) differ by more than "
              f"{PROBE_SPREAD:g}×, so its cells were timed at different machine speeds and do not compare.")
        doc.table(["instance"] + list(suite.optimizers), costs)

    # per problem
    doc.h(2, "Problems")
    for inst in res.instances:
        doc.h(3, inst.key)
        try:
            desc = registry.get_problem_class(inst.problem).description
        except ValueError:
            desc = ""
        budget = _budget(inst)
        # a task's own default length ('steps') is not what ran when the suite sets the budget: leave it out
        settings = {k: v for k, v in inst.params.items() if not (k == "steps" and (inst.steps or inst.epochs))}
        doc.p(f"{desc} — settings {settings or 'default'}; budget {budget}; selection on `{inst.selection_metric}`; "
              + (f"target `{inst.target_metric}` {_target_text(inst)}; " if inst.target is not None else "")
              + f"lr range {list(inst.lr_range)}.")
        rows, gaps = [], []
        for o in inst.optimizers:
            papers = sorted({k[2] for k in res.arms if k[0] == inst.key and k[1] == o
                             and k[2].startswith(("paper:", "paper-lr:"))})
            variants = [f"variant:{v}" for v in suite.variants]
            for arm_name in ("tuned", "fixed", "defaults", *papers, *variants):
                a = res.arm(inst.key, o, arm_name)
                if a is None:
                    continue
                q = a.quantiles()
                rows.append([o, arm_name, _hp(a.hparams), f"{_fmt(q[1])} [{_fmt(q[0])}, {_fmt(q[2])}]",
                             _fmt(float(np.nanmedian(a.dists))) if any(not math.isnan(d) for d in a.dists) else "–",
                             *((f"{a.converged:.0%}", _fmt(a.median_steps)) if inst.target is not None and a.n
                               else ("–", "–")),  # no target, or no finished run yet: no share, no steps to it
                             f"{a.failed} failed, {a.diverged} diverged" if (a.failed or a.diverged) else ""])
                gaps.append(generalisation_gap(res, a))
        header = ["optimizer", "arm", "hyperparameters", f"final {inst.target_metric} median [25 %, 75 %]",
                  "distance to minimiser", "reached target", "median steps to target", "problems"]
        if any(math.isfinite(g) for g in gaps):  # a classifier's train/test gap (AdaBelief: "generalises like SGD")
            header.insert(4, "test − training loss, median")
            rows = [r[:4] + [_fmt(g) if math.isfinite(g) else "–"] + r[4:] for r, g in zip(rows, gaps)]
        doc.table(header, rows)
        for fn in (plot_trajectories, plot_curves, plot_theta, plot_train_loss, plot_samples, plot_lr_sensitivity):
            try:
                path = fn(res, inst, plots)
            except Exception as exc:  # a plot that cannot be drawn must not lose the report
                doc.p(f"(plot {fn.__name__} failed: {type(exc).__name__}: {exc})")
                continue
            if path is not None:
                caption = {"plot_trajectories": "Trajectories over the contours (log scale where marked), a panel per "
                                                "arm (paper configurations included), dots every tenth of the "
                                                "budget.",
                           "plot_curves": f"{_metric_label(inst.target_metric)} over steps, median and 25–75 % "
                                          "band over the final seeds, each optimizer's main arm solid, its paper "
                                          "configurations tuned as their own (`paper:`) dashed and at the paper's "
                                          "learning rate (`paper-lr:`) dotted; right: the last third zoomed.",
                           "plot_samples": "what each arm's generator draws at the end of training (its median "
                                           "seed).",
                           "plot_train_loss": "training loss of every step (loss spikes show here); right: the "
                                              "last third zoomed.",
                           "plot_theta": "θ over steps and its running time average (thick), per arm; a paper arm "
                                         "dashed. A clipped ADOPT that ends like the unclipped one with a worse "
                                         "time average shows the clip schedule t^¼ at work early on.",
                           "plot_lr_sensitivity": ("Steps to the target (the selection score)"
                                                   if inst.selection_metric == "steps_to_target" else
                                                   "Final validation metric") + " of every tuning trial against "
                                                  "its learning rate."}[fn.__name__]
                doc.img(path, f"{inst.key}: {caption}")

    failures = [r for r in res.store.runs() if r["status"] == "failed"]
    if failures:
        doc.h(2, "Failed runs")
        doc.table(["problem", "optimizer", "seed", "error"],
                  [[f["problem"], f["optimizer"], str(f["seed"]), (f["error"] or "").splitlines()[0][:200]]
                   for f in failures[:200]])
    (out / "report.md").write_text(doc.markdown(out), encoding="utf-8")
    (out / "report.html").write_text(doc.html(f"adamkit bench — {suite.name}"), encoding="utf-8")
    if log:
        log(f"report written in {time.monotonic() - started:.0f} s: {out / 'report.html'} (and report.md, "
            f"{len(list(plots.glob('*.png')))} plots in {plots})")
    return out
