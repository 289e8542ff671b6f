"""``adamkit bench report DIR``: a folder a person opens — report.md, a self-contained report.html, PNG plots.

Everything is recomputed from the store alone (the runs, their evaluation curves, the suite and the
benchmark record stored with them): the claims table by the generic judge (:mod:`adamkit.bench.judge`),
the figures by :mod:`adamkit.bench.plots`, the document by :mod:`adamkit.bench.document`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from . import analysis, judge, protocol, registry
from .document import Doc
from .plots import (_budget, _fmt, _hp, _metric_label, plot_beta2, plot_curves, plot_lr_sensitivity,
                    plot_profiles, plot_theta, plot_train_loss, plot_trajectories, plot_variants)


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
            effect, low, high = judge.paired_bootstrap(d)
            row.append(f"{effect:+.3g} [{low:.3g}, {high:.3g}] n={d.size}")
            any_cell = True
        if any_cell:
            rows.append(row)
    return rows


def step_costs(res) -> list[list[str]]:
    seconds = res.store.durations()
    rows = []
    for inst in res.instances:
        if inst.tier != "B":
            continue
        row, any_cell = [inst.key], False
        for o in res.suite.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            per = [seconds[h] / res.finals[h]["steps"] * 1e3 for h in (arm.hashes if arm else [])
                   if h in seconds and (res.finals.get(h) or {}).get("steps")]
            row.append(f"{analysis.quantile(per, 0.5):.3g}" if per else "")
            any_cell |= bool(per)
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
                + (", plus its paper defaults as one more candidate" if suite.defaults_arm else "")
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


def write_report(where: str | Path, out: str | Path | None = None, log=print) -> Path:
    """Write report.md, report.html and plots/ for the sweep in ``where``; returns the report folder."""
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
    doc = Doc()
    doc.h(1, f"adamkit bench — suite `{suite.name}`")
    doc.p(suite.description)
    doc.p(f"{counts.get('done', 0)} runs finished, {counts.get('failed', 0)} failed; report written "
          f"{time.strftime('%Y-%m-%d %H:%M')}. Optimizers: {', '.join(suite.optimizers)}.")
    doc.p(version_text(res))
    sessions = sessions_text(res)
    if sessions:
        doc.p(sessions)
    doc.p("**Protocol.** " + protocol_text(res))
    doc.bullets(protocol_summary(suite))
    missing = sum(a.missing for a in res.arms.values())
    if missing:
        doc.p(f"**Incomplete sweep:** {missing} final runs are not in the store yet; re-run `adamkit bench run` "
              f"with the same suite and folder to finish it.")

    # claims
    doc.h(2, "Paper claims vs what we measured")
    doc.p("One generic judge (`adamkit.bench.judge`) over the claims data file (`adamkit/bench/claims/claims.toml`): "
          "per instance, paired differences over the final seeds (> 0: the way the claim says), their mean and a "
          f"95 % paired-bootstrap interval ({judge.RESAMPLES} resamples, fixed seed), n = paired seeds. "
          f"*supported* / *contradicted*: the interval excludes 0; *inconclusive*: it contains 0 or n < "
          f"{judge.MIN_SEEDS}; *outside the claim's regime*: the budget is below what the claim is about. Tier A "
          "toy problems and Tier B tasks are aggregated separately, never pooled.")
    rows = []
    for v in judge.judge_all(res):
        c = v.claim
        per = "; ".join(x.text(c) for x in v.comparisons) or "not measured: the suite has none of " + \
            ", ".join(c.instances)
        tiers = "; ".join(f"Tier {t}: {s}" for t, s in v.tiers.items()) or judge.NOT_MEASURED
        rows.append([c.paper, c.claim, f"{c.optimizer.label} vs {c.baseline.label}, {c.metric} "
                     f"({c.direction} is better)" + (f", margin {c.margin:g}" if c.margin else ""), per, tiers])
    doc.table(["paper", "claim", "comparison", "per instance: effect [95 % interval], n → verdict", "verdict"],
              rows)

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
            cell = f"{_fmt(a.median)} ({a.converged:.0%})" if inst.target is not None else _fmt(a.median)
            if a.failed:
                cell += f" [{a.failed} failed]"
            row.append(f"**{cell}**" if best is not None and a.median == best else cell)
        rows.append(row)
    doc.table(header, rows)

    # scores
    doc.h(2, "Scores")
    doc.p("AlgoPerf-style: per instance, each optimizer's performance ratio to the best optimizer there (steps to "
          "the target; or the final value, maximised metrics as 1 + relative shortfall), over the instances "
          "**every** optimizer ran; score = ∫₁⁴ ρ(τ) dτ / 3 (1: best everywhere). The headline is Tier B (tasks); "
          "Tier A toy problems are a diagnostic battery, scored apart.")
    rows = []
    for tier in ("B", "A"):
        for measure in ("steps", "final"):
            keys, ratios = analysis.profile_ratios(res, measure, tier)
            if not keys:
                continue
            ranked = sorted(ratios.items(), key=lambda kv: -analysis.algoperf_score(kv[1]))
            rows.append([f"Tier {tier}" + (" (headline)" if tier == "B" and measure == "steps" else ""),
                         "time to target" if measure == "steps" else "final value", str(len(keys)),
                         ", ".join(f"{o} {analysis.algoperf_score(r):.2f}" for o, r in ranked)])
    if rows:
        doc.table(["tier", "measure", "instances all ran", "score per optimizer (best first)"], rows)
    else:
        doc.p("No instance was run by every optimizer: no scores.")
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

    # tuning gains and cost per step
    gains = tuning_gains(res)
    if gains:
        doc.h(2, "Tuned against defaults")
        doc.p("Per instance and optimizer: the tuned arm's gain over its own paper defaults on the final seeds (paired "
              "differences, > 0: tuning helped; mean [95 % paired-bootstrap interval], n). A negative gain means the "
              "selection on the tuning seeds did not carry over to the final seeds.")
        doc.table(["instance"] + list(suite.optimizers), gains)
    costs = step_costs(res)
    if costs:
        doc.h(2, "Wall-clock per step")
        doc.p("Median milliseconds per optimizer step of the main arm's final runs (run time / steps, evaluation "
              "included), one thread per run, measured on the machine that ran the sweep.")
        doc.table(["instance"] + list(suite.optimizers), costs)

    # profiles
    doc.h(2, "Performance profiles")
    for path, caption in plot_profiles(res, plots):
        doc.img(path, caption)
    # beta2
    b2 = plot_beta2(res, plots)
    if b2:
        doc.h(2, "Counterexamples: the β2 sweep")
        for path, caption in b2:
            doc.img(path, caption)

    # per problem
    doc.h(2, "Problems")
    for inst in res.instances:
        doc.h(3, inst.key)
        try:
            desc = registry.get_problem_class(inst.problem).description
        except ValueError:
            desc = ""
        budget = _budget(inst)
        doc.p(f"{desc} — settings {inst.params or 'default'}; budget {budget}; selection on `{inst.selection_metric}`; "
              + (f"target `{inst.target_metric}` {_target_text(inst)}; " if inst.target is not None else "")
              + f"lr range {list(inst.lr_range)}.")
        rows = []
        for o in inst.optimizers:
            papers = sorted({k[2] for k in res.arms if k[0] == inst.key and k[1] == o and k[2].startswith("paper:")})
            variants = [f"variant:{v}" for v in suite.variants]
            for arm_name in ("tuned", "fixed", "defaults", *papers, *variants):
                a = res.arm(inst.key, o, arm_name)
                if a is None:
                    continue
                q = a.quantiles()
                rows.append([o, arm_name, _hp(a.hparams), f"{_fmt(q[1])} [{_fmt(q[0])}, {_fmt(q[2])}]",
                             _fmt(float(np.nanmedian(a.dists))) if any(not math.isnan(d) for d in a.dists) else "–",
                             *((f"{a.converged:.0%}", _fmt(a.median_steps)) if inst.target is not None
                               else ("–", "–")),  # a task without a target: no share, no steps to it
                             f"{a.failed} failed, {a.diverged} diverged" if (a.failed or a.diverged) else ""])
        doc.table(["optimizer", "arm", "hyperparameters", f"final {inst.target_metric} median [25 %, 75 %]",
                   "distance to minimiser", "reached target", "median steps to target", "problems"], rows)
        for fn in (plot_trajectories, plot_curves, plot_theta, plot_train_loss, plot_lr_sensitivity):
            try:
                path = fn(res, inst, plots)
            except Exception as exc:  # a plot that cannot be drawn must not lose the report
                doc.p(f"(plot {fn.__name__} failed: {type(exc).__name__}: {exc})")
                continue
            if path is not None:
                caption = {"plot_trajectories": "Trajectories over the contours (log scale where marked).",
                           "plot_curves": f"{_metric_label(inst.target_metric)} over steps, median and 25–75 % "
                                          "band over the final seeds.",
                           "plot_train_loss": "training loss of every step (loss spikes show here).",
                           "plot_theta": "θ over steps and its running time average (thick), per arm; a paper arm "
                                         "dashed. A clipped ADOPT that ends like the unclipped one with a worse "
                                         "time average shows the clip schedule t^¼ at work early on.",
                           "plot_lr_sensitivity": "Final validation metric of every tuning trial against its "
                                                  "learning rate."}[fn.__name__]
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
