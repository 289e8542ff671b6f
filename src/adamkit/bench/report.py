"""``adamkit bench report DIR``: a folder a person opens — report.md, a self-contained report.html, PNG plots.

Plots (matplotlib, Agg): trajectories over the contours of each 2-D function, loss curves with seed
bands, learning-rate sensitivity of the tuning trials, performance profiles, the β2 sweeps of the
counterexamples; and the table "paper claim vs what we measured", filled from the results.
"""
from __future__ import annotations

import base64
import html
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import analysis, registry
from .analysis import Results

COLORS = {"adam": "#1f77b4", "adamw": "#17becf", "amsgrad": "#9467bd", "eadam": "#8c564b",
          "adabelief": "#d62728", "adopt": "#2ca02c", "agd": "#ff7f0e"}
ADABELIEF_FUNCTIONS = ["abs_sum", "abs_rotated", "quad_rotated", "abs_scaled"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8})
    return plt


def _color(name: str) -> str:
    return COLORS.get(name, "#333333")


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _hp(hparams: dict[str, Any]) -> str:
    if not hparams:
        return "paper defaults"
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in hparams.items())


# ----------------------------------------------------------------------------------------------- plots


def plot_trajectories(res: Results, inst, out: Path) -> Path | None:
    problem = registry.create_problem(inst.problem, inst.params)
    if getattr(problem, "dim", None) != 2 or not hasattr(problem, "f"):
        return None
    import torch

    plt = _plt()
    box = problem.plot_box or problem.box
    lo, hi = np.array(box[0], float), np.array(box[1], float)
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs, ys = np.linspace(lo[0], hi[0], 220), np.linspace(lo[1], hi[1], 220)
    gx, gy = np.meshgrid(xs, ys)
    with torch.no_grad():
        z = problem.f(torch.tensor(np.stack([gx, gy]))).numpy() - problem.f_star
    z = np.log10(np.maximum(z, 0) + 1e-3) if problem.log_contours else z
    arm_name = res.main_arm(inst)
    opts = [o for o in res.suite.optimizers if res.arm(inst.key, o, arm_name)]
    ncol = 4
    nrow = math.ceil(len(opts) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow + 0.6), squeeze=False)
    for ax in axes.flat[len(opts):]:
        ax.axis("off")
    for ax, o in zip(axes.flat, opts):
        arm = res.arm(inst.key, o, arm_name)
        ax.contourf(gx, gy, z, levels=30, cmap="Greys_r", alpha=0.55)
        ax.contour(gx, gy, z, levels=15, colors="k", linewidths=0.3, alpha=0.4)
        for m in problem.minimizers:
            ax.plot(m[0], m[1], marker="*", color="gold", markersize=13, markeredgecolor="k", zorder=5)
        for h, final in zip(arm.hashes, arm.values):
            c = res.store.curve(h)
            if not c.get("x"):
                continue
            x, y = np.array(c["x"], float), np.array(c["y"], float)
            ok = inst.target is not None and final <= inst.target
            ax.plot(x, y, color=_color(o), lw=1.1, alpha=0.9 if ok else 0.5, ls="-" if ok else ":")
            ax.plot(x[0], y[0], "o", color=_color(o), markersize=4, markeredgecolor="k", markeredgewidth=0.5)
            ax.plot(x[-1], y[-1], "x", color="k", markersize=5)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_title(f"{o}: {arm.converged:.0%} of starts reach gap ≤ {_fmt(inst.target)}", fontsize=8.5)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{inst.key}: {problem.description}\npaths from {len(arm.seeds)} random starts (•) to the end (×), "
                 f"each optimizer with its tuned hyperparameters; ★ global minima; dotted: missed the target",
                 fontsize=9)
    return _save(fig, out / f"traj_{_safe(inst.key)}.png")


def plot_curves(res: Results, inst, out: Path) -> Path | None:
    plt = _plt()
    arm_name = res.main_arm(inst)
    metric = inst.target_metric
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = False
    for o in res.suite.optimizers:
        arm = res.arm(inst.key, o, arm_name)
        if arm is None:
            continue
        series = [res.store.curve(h) for h in arm.hashes]
        series = [c for c in series if c.get(metric)]
        if not series:
            continue
        length = max(len(c["step"]) for c in series)
        steps = next(c["step"] for c in series if len(c["step"]) == length)
        mat = np.full((len(series), length), np.nan)
        for i, c in enumerate(series):
            v = np.array(c[metric], float)
            mat[i, :len(v)] = v
            if len(v) < length:  # a diverged run: it stays where it blew up
                mat[i, len(v):] = np.inf
        mat = np.where(np.isfinite(mat), mat, np.nan if inst.maximize else 1e300)
        if not inst.maximize:
            mat = np.maximum(mat, 1e-16)
        with np.errstate(all="ignore"):
            med = np.nanmedian(mat, axis=0)
            q25, q75 = np.nanquantile(mat, 0.25, axis=0), np.nanquantile(mat, 0.75, axis=0)
        ax.plot(steps, med, color=_color(o), lw=1.5, label=f"{o} ({_hp(arm.hparams)})")
        ax.fill_between(steps, q25, q75, color=_color(o), alpha=0.18, lw=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if not inst.maximize:
        ax.set_yscale("log")
        top = ax.get_ylim()[1]
        ax.set_ylim(top=min(top, 1e12))
    if inst.target is not None:
        ax.axhline(inst.target, color="k", ls="--", lw=0.8, label=f"target {_fmt(inst.target)}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_metric_label(metric))
    n = len(inst.final_seeds)
    ax.set_title(f"{inst.key}: median over {n} seeds, band = 25–75 %" if n > 1 else f"{inst.key}: one seed")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=6.5, loc="best")
    return _save(fig, out / f"curve_{_safe(inst.key)}.png")


def plot_train_loss(res: Results, inst, out: Path) -> Path | None:
    """Tier B: the training loss of every step (first final seed of each optimizer's main arm): spikes show."""
    if inst.tier != "B":
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    drawn = False
    for o in res.suite.optimizers:
        arm = res.arm(inst.key, o, res.main_arm(inst))
        if arm is None:
            continue
        c = next((c for c in (res.store.curve(h, "train") for h in arm.hashes) if c.get("loss")), None)
        if c is None:
            continue
        ax.plot(c["step"], c["loss"], color=_color(o), lw=0.8, alpha=0.85, label=o)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (mini-batch)")
    ax.set_title(f"{inst.key}: training loss per step, first final seed", fontsize=9)
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / f"train_{_safe(inst.key)}.png")


def plot_lr_sensitivity(res: Results, inst, out: Path) -> Path | None:
    if not inst.tune:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    metric = inst.selection_metric
    worst = []
    points = {}
    for o in inst.optimizers:
        pts = []
        for r in res.tuning_runs(inst.key, o):
            final = res.finals.get(r.hash)
            v = analysis._metric(final, metric) if r.hash in res.finals else math.nan
            lr = r.spec["hparams"].get("lr", 1e-3)
            pts.append((lr, v, r.trial))
        points[o] = pts
        worst += [v for _, v, _ in pts if math.isfinite(v)]
    if not worst:
        plt.close(fig)
        return None
    ceiling = max(worst) * 10 if max(worst) > 0 else 1.0
    for o, pts in points.items():
        trials = sorted((lr, v) for lr, v, t in pts if t >= 0)
        if trials:
            lrs = [p[0] for p in trials]
            vals = [v if math.isfinite(v) else ceiling for _, v in trials]
            ax.plot(lrs, vals, "-o", color=_color(o), ms=3.5, lw=1.0, label=o)
        for lr, v, t in pts:
            if t < 0:
                ax.plot([lr], [v if math.isfinite(v) else ceiling], "D", color=_color(o), mfc="none", ms=7)
        win = res.winners.get((inst.key, o))
        if win:
            v = win["score"]
            lr = win["hparams"].get("lr", 1e-3)
            if math.isfinite(v):
                ax.plot([lr], [-v if inst.maximize else v], "*", color=_color(o), ms=11, mec="k", mew=0.5)
    ax.set_xscale("log")
    if not inst.maximize and min(worst) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("learning rate (log-uniform random search; ε/δ drawn on each optimizer's own scale)")
    ax.set_ylabel(f"final {_metric_label(metric)} (tuning seeds)")
    ax.set_title(f"{inst.key}: learning-rate sensitivity — ★ selected, ◇ paper defaults; failures drawn at the top",
                 fontsize=8.5)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out / f"lr_{_safe(inst.key)}.png")


def plot_profiles(res: Results, out: Path) -> list[tuple[Path, str]]:
    plt = _plt()
    taus = np.logspace(0, 3, 200)
    paths = []
    for measure, title, what in (
        ("steps", "steps to the target", "median steps to reach each problem's target (never reached = ∞)"),
        ("final", "final value", "median final suboptimality/metric, floored at 1e-12"),
    ):
        prof = analysis.performance_profile(res, measure, taus)
        n = int(prof.pop("_n")[0])
        if n == 0:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for o, y in prof.items():
            ax.step(taus, y, where="post", color=_color(o), lw=1.6, label=f"{o} (best on {y[0]:.0%})")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("τ: within this factor of the best optimizer on a problem")
        ax.set_ylabel("share of problems")
        ax.set_title(f"Performance profile, {title} ({n} problems)")
        ax.grid(alpha=0.3, which="both", lw=0.4)
        ax.legend(fontsize=7, loc="lower right")
        fig.text(0.01, 0.01, f"cost = {what}; higher and further left is better", fontsize=6.5)
        path = _save(fig, out / f"profile_{measure}.png", rect=(0, 0.03, 1, 1))
        paths.append((path, f"Performance profile on {title}: {what}."))
    return paths


def beta2_sweeps(res: Results) -> dict[str, dict[str, Any]]:
    """group -> {"param_sets": [...], per optimizer: {(other params, β2): ArmSummary}} for the counterexamples."""
    out: dict[str, dict[str, Any]] = {}
    for inst in res.instances:
        if "beta2" not in inst.params or inst.problem not in ("adopt_counterexample", "reddi_counterexample"):
            continue
        g = out.setdefault(inst.group, {"problem": inst.problem, "rows": []})
        other = tuple((k, v) for k, v in sorted(inst.params.items()) if k not in ("beta2", "beta1", "schedule"))
        for o in inst.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            if arm is not None:
                g["rows"].append((other, inst.params["beta2"], o, arm))
    return out


def plot_beta2(res: Results, out: Path) -> list[tuple[Path, str]]:
    plt = _plt()
    paths = []
    for group, data in beta2_sweeps(res).items():
        others = sorted({r[0] for r in data["rows"]})
        fig, axes = plt.subplots(1, len(others), figsize=(max(6.4, 4.6 * len(others)), 4.0), squeeze=False)
        for ax, other in zip(axes.flat, others):
            rows = [r for r in data["rows"] if r[0] == other]
            betas = sorted({r[1] for r in rows})
            pos = {b: i for i, b in enumerate(betas)}
            opts = [o for o in res.suite.optimizers if any(r[2] == o for r in rows)]
            width = 0.8 / max(len(opts), 1)
            for k, o in enumerate(opts):
                xs, med, lo, hi = [], [], [], []
                for _, b, oo, arm in rows:
                    if oo != o:
                        continue
                    q = arm.quantiles()
                    # theta = gap - 1
                    xs.append(pos[b] - 0.4 + width * (k + 0.5))
                    med.append(q[1] - 1)
                    lo.append(q[1] - q[0])
                    hi.append(q[2] - q[1])
                ax.errorbar(xs, med, yerr=[lo, hi], fmt="o", color=_color(o), ms=5, capsize=2, label=o)
            ax.axhline(-1, color="k", lw=0.8, ls="--")
            ax.text(len(betas) - 0.5, -0.97, "optimum θ* = -1", ha="right", va="bottom", fontsize=7)
            ax.axhline(1, color="grey", lw=0.6, ls=":")
            ax.set_xticks(range(len(betas)))
            ax.set_xticklabels([str(b) for b in betas])
            ax.set_ylim(-1.1, 1.1)
            ax.set_xlabel("β2")
            ax.set_ylabel("final θ (median, bar = 25–75 % over seeds)")
            label = ", ".join(f"{k}={v}" for k, v in other)
            ax.set_title(f"{data['problem']} {label}".strip(), fontsize=9)
            ax.grid(alpha=0.3, lw=0.4)
        axes.flat[0].legend(fontsize=7, loc="center left")
        fig.suptitle(f"{group}: final θ across β2 (started at 0; the optimum is -1, lower is better)", fontsize=9.5)
        path = _save(fig, out / f"beta2_{_safe(group)}.png")
        paths.append((path, f"β2 sweep on {data['problem']}: final θ per optimizer; converging means θ ≈ -1."))
    return paths


def _metric_label(metric: str) -> str:
    return {"gap": "suboptimality f − f*", "dist": "distance to the minimiser", "val_loss": "validation loss",
            "test_accuracy": "test accuracy", "test_bpc": "test bits per character", "test_auc": "test AUC",
            "fd": "Fréchet distance (lower is better)", "eval_return": "evaluation return (deterministic policy)",
            "modes_covered": "modes covered"}.get(
        metric, metric)


def _save(fig, path: Path, rect=None) -> Path:
    """Lay out, write and close a figure; returns its path."""
    fig.tight_layout(**({} if rect is None else {"rect": rect}))
    fig.savefig(path)
    import matplotlib.pyplot as plt  # loaded already: the figure came from it

    plt.close(fig)
    return path


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_")


# ----------------------------------------------------------------------------------------------- claims


def claims(res: Results) -> list[dict[str, str]]:
    rows = []
    sweeps = beta2_sweeps(res)

    def per_group(problem: str, optimizers: tuple[str, ...]):
        """{(group, optimizer): (β2 converged, β2 failed)} — converged: the median run ends at θ ≤ target − 1."""
        out = {}
        for group, g in sweeps.items():
            if g["problem"] != problem:
                continue
            several = len({row[0] for row in g["rows"]}) > 1  # e.g. k = 10 and k = 50: name them
            for other, b, o, arm in g["rows"]:
                if o in optimizers:
                    ok, bad = out.setdefault((group, o), ([], []))
                    (ok if arm.converged >= 0.5 else bad).append((other if several else (), b))
        return out

    def failed_at(bad) -> str:
        """``k=10: β2 = 0.1, 0.5; k=50: β2 = 0.1`` (β2 alone where the sweep has one setting of the rest)."""
        parts = []
        for other in sorted({o for o, _ in bad}):
            label = ", ".join(f"{k}={v}" for k, v in other)
            betas = ", ".join(map(str, sorted(b for o, b in bad if o == other)))
            parts.append((f"{label}: " if label else "") + f"β2 = {betas}")
        return "; ".join(parts)

    def describe(results):
        return "; ".join(f"{o} in {group}: {len(ok)}/{len(ok) + len(bad)}"
                         + (f" (not at {failed_at(bad)})" if bad else "")
                         for (group, o), (ok, bad) in results.items())

    def goal(problem):
        inst = next((i for i in res.instances if i.problem == problem), None)
        return f"θ ≤ {_fmt(inst.target - 1)}" if inst is not None and inst.target is not None else "the target"

    # ADOPT
    r = per_group("adopt_counterexample", ("adopt", "adam", "amsgrad"))
    adopt = {k: v for k, v in r.items() if k[1] == "adopt"}
    others = {k: v for k, v in r.items() if k[1] != "adopt"}
    if adopt and others:
        # per setting of the rest of the grid (k = 10, k = 50) of each group (clipped ADOPT, unclipped ADOPT)
        passing, failing, others_fail = [], [], False
        for (group, _), (ok, bad) in adopt.items():
            for setting in sorted({o for o, _ in ok + bad}):
                label = " ".join([group] + [f"{k}={v}" for k, v in setting])
                (failing if any(o == setting for o, _ in bad) else passing).append(label)
                for (other_group, _), (_, other_bad) in others.items():
                    others_fail |= other_group == group and any(o == setting for o, _ in other_bad)
        if not passing:
            verdict = "not reproduced within this budget"
        elif not others_fail:
            verdict = "partly: Adam/AMSGrad did not fail here"
        elif failing:
            verdict = f"supported in {', '.join(passing)}; not in {', '.join(failing)} (ADOPT fails at some β2)"
        else:
            verdict = "supported"
        measured = (f"β2 values at which the median run ends at {goal('adopt_counterexample')} (started at 0): "
                    + describe(r))
    else:
        verdict, measured = "not measured in this suite", "–"
    rows.append({"paper": "ADOPT (Taniguchi et al. 2024)",
                 "claim": "On f(θ)=θ with gradient k² w.p. 1/k, else −k, ADOPT converges for any β2, while Adam "
                          "(and AMSGrad) fail when β2 is small.",
                 "measured": measured, "verdict": verdict})
    # Reddi
    r = per_group("reddi_counterexample", ("adam", "amsgrad", "adopt", "adabelief"))
    adam = [v for k, v in r.items() if k[1] == "adam"]
    ams = [v for k, v in r.items() if k[1] == "amsgrad"]
    if adam and ams:
        adam_fails = any(bad for ok, bad in adam)
        ams_ok = all(not bad for ok, bad in ams)
        verdict = "supported" if adam_fails and ams_ok else "mixed" if adam_fails or ams_ok else "not reproduced"
        measured = f"β2 values at which the run ends at {goal('reddi_counterexample')}: " + describe(r)
    else:
        verdict, measured = "not measured in this suite", "–"
    rows.append({"paper": "AMSGrad (Reddi et al. 2018)",
                 "claim": "On the online problem Cθ / −θ, Adam converges to the worst point θ = +1 for small β2; "
                          "AMSGrad converges to the optimum.",
                 "measured": measured, "verdict": verdict})
    # AdaBelief
    per_fn = []
    fastest = faster_than_adam = n_fn = 0
    for inst in res.instances:
        if inst.problem not in ADABELIEF_FUNCTIONS or inst.params.get("noise", 0):
            continue
        arm = res.main_arm(inst)
        steps = {o: res.arm(inst.key, o, arm).median_steps for o in inst.optimizers if res.arm(inst.key, o, arm)}
        if "adabelief" not in steps:
            continue
        n_fn += 1
        best = min(steps.values())
        ab = steps["adabelief"]
        if math.isfinite(ab) and ab <= best:
            fastest += 1
        if "adam" in steps and ab < steps["adam"]:
            faster_than_adam += 1
        rank = 1 + sum(1 for v in steps.values() if v < ab)
        per_fn.append(f"{inst.key}: AdaBelief {_fmt(ab)} steps (rank {rank}/{len(steps)}), Adam "
                      f"{_fmt(steps.get('adam', math.nan))}, best {_fmt(best)}")
    if n_fn:
        verdict = ("supported" if fastest == n_fn else "partly" if faster_than_adam > n_fn / 2 else "not reproduced")
        measured = (f"median steps to the target (tuned, paired starts): fastest on {fastest}/{n_fn}, faster than "
                    f"Adam on {faster_than_adam}/{n_fn}. " + "; ".join(per_fn))
    else:
        verdict, measured = "not measured in this suite", "–"
    rows.append({"paper": "AdaBelief (Zhuang et al. 2020)",
                 "claim": "On |x|+|y|, |x+y|+|x−y|/10, (x+y)²+(x−y)²/10 and |x|/10+|y| AdaBelief reaches the "
                          "optimum fastest of the adaptive methods (Fig. 4).",
                 "measured": measured, "verdict": verdict})
    # AGD and EAdam: paired win rates over every instance
    names, rate, count = analysis.paired_win_rates(res, [i.key for i in res.instances if i.tier == "A"])
    idx = {n: i for i, n in enumerate(names)}

    def wr(a, b):
        if a not in idx or b not in idx or count[idx[a], idx[b]] == 0:
            return None
        return rate[idx[a], idx[b]], int(count[idx[a], idx[b]])

    def wr_text(a, b):
        w = wr(a, b)
        return f"{a} beats {b} on {w[0]:.0%} of {w[1]} paired runs" if w else None

    agd = [t for t in (wr_text("agd", "adam"), wr_text("agd", "adabelief"), wr_text("agd", "adamw")) if t]
    if agd:
        ws = [w[0] for w in (wr("agd", "adam"), wr("agd", "adabelief")) if w]
        verdict = ("supported" if all(w > 0.55 for w in ws) else "not supported" if all(w < 0.45 for w in ws)
                   else "mixed / no clear difference")
        measured = "; ".join(agd) + " (final target metric, tuned arm, Tier A problems)"
    else:
        verdict, measured = "not measured in this suite", "–"
    rows.append({"paper": "AGD (Yue et al. 2023)",
                 "claim": "AGD, preconditioning by the stepwise gradient difference with an automatic switch to SGD, "
                          "converges faster than Adam and AdaBelief (toy functions and real tasks).",
                 "measured": measured, "verdict": verdict + " (the toy functions; the real tasks have rows of their "
                                                            "own below)"})
    e = wr("eadam", "adam")
    if e:
        verdict = "supported" if e[0] > 0.55 else "not supported" if e[0] < 0.45 else "no clear difference"
        measured = wr_text("eadam", "adam") + " (final target metric, tuned arm)"
    else:
        verdict, measured = "not measured in this suite", "–"
    rows.append({"paper": "EAdam (Yuan & Gao 2020)",
                 "claim": "Adding ε to v at every step (ε inside the root) improves on Adam.",
                 "measured": measured, "verdict": verdict + " (Tier A problems; the paper's evidence is image "
                                                            "classification, NLP, detection: see the image "
                                                            "classification row)"})
    rows += task_claims(res)
    return rows


NO_DATA = "no data: the suite did not run this task (or its data was missing: `adamkit data prepare`)"


def task_metric(res: Results, inst, optimizer: str, metric: str, *, higher: bool) -> tuple[float, int]:
    """(median of ``metric`` over the finished final runs of the instance's main arm, number of those runs).

    A diverged run counts as the worst value (-inf when ``higher`` is better, else +inf), as in the overview;
    a failed run, or one that does not report ``metric``, is left out."""
    arm = res.arm(inst.key, optimizer, res.main_arm(inst))
    if arm is None:
        return math.nan, 0
    vals = []
    for final in (res.finals.get(h) for h in arm.hashes):
        if final is None:
            continue
        if final.get("diverged"):
            vals.append(-math.inf if higher else math.inf)
        elif isinstance(final.get(metric), (int, float)) and not math.isnan(final[metric]):
            vals.append(float(final[metric]))
    return analysis.quantile(vals, 0.5), len(vals)


def _compare(res: Results, tasks: tuple[str, ...], metric: str, better: str, baseline: str, higher: bool,
             margin: float, unit: str = "") -> tuple[str, str]:
    """Compare ``better`` with ``baseline`` on ``metric`` over every instance of ``tasks``: (measured, verdict).

    Verdict: "supported" when ``better`` beats the baseline by more than ``margin`` on every instance measured,
    "not supported" when it loses by more than ``margin`` on every one, else "mixed / no clear difference".
    """
    parts, signs, ran = [], [], []
    for inst in res.instances:
        if inst.problem not in tasks:
            continue
        ran.append(inst.key)
        if better not in inst.optimizers or baseline not in inst.optimizers:
            continue
        a, na = task_metric(res, inst, better, metric, higher=higher)
        b, nb = task_metric(res, inst, baseline, metric, higher=higher)
        if not (na and nb):
            continue
        diff = (a - b) if higher else (b - a)  # > 0: `better` is better
        signs.append(1 if diff > margin else -1 if diff < -margin else 0)
        parts.append(f"{inst.key} ({_budget(inst)}): {better} {_fmt(a)}{unit} vs {baseline} {_fmt(b)}{unit} ({min(na, nb)} seed"
                     f"{'s' if min(na, nb) > 1 else ''})")
    if not parts:
        if ran:
            return (f"no data for {better} and {baseline} together on {', '.join(ran)}",
                    "not measured in this suite")
        return NO_DATA, "not measured in this suite"
    verdict = ("supported" if all(x > 0 for x in signs) else "not supported" if all(x < 0 for x in signs)
               else "mixed / no clear difference")
    return f"median {metric}, " + "; ".join(parts), f"{verdict} ({len(parts)} task instance(s); margin {_fmt(margin)})"


def task_claims(res: Results) -> list[dict[str, str]]:
    """The Tier B rows of the claims table, each filled from the stored runs of its tasks (or "no data")."""
    rows = []
    image = ("fmnist_cnn", "fmnist_mlp")
    for opt, paper in (("adabelief", "AdaBelief (Zhuang et al. 2020)"), ("eadam", "EAdam (Yuan & Gao 2020)")):
        measured, verdict = _compare(res, image, "test_accuracy", opt, "adam", higher=True, margin=0.002)
        rows.append({"paper": paper, "claim": f"Image classification: {opt} generalises better than Adam (higher "
                     "test accuracy of CNNs on CIFAR/ImageNet); here the Fashion-MNIST CNN and MLP.",
                     "measured": measured, "verdict": verdict})
    measured, verdict = _compare(res, ("dcgan_fmnist", "wgan_fmnist", "gan_ring8"), "fd", "adabelief", "adam",
                                 higher=False, margin=0.0)
    rows.append({"paper": "AdaBelief (Zhuang et al. 2020)",
                 "claim": "GANs: AdaBelief reaches a lower (better) FID than Adam on WGAN and SN-GAN; here the "
                          "Fréchet distance of DCGAN / WGAN-GP on Fashion-MNIST (classifier features) and of the "
                          "8-Gaussian ring.",
                 "measured": measured, "verdict": verdict})
    rows.append(_adopt_spikes(res))
    measured, verdict = _compare(res, ("fm_movielens", "deepfm_movielens", "fm_synthetic_ctr",
                                       "deepfm_synthetic_ctr"), "test_auc", "agd", "adam", higher=True, margin=0.001)
    rows.append({"paper": "AGD (Yue et al. 2023)",
                 "claim": "Click-through prediction: AGD reaches a higher test AUC than Adam (Criteo, Avazu); here "
                          "FM and DeepFM on MovieLens-100k and on a synthetic Criteo-like log.",
                 "measured": measured, "verdict": verdict})
    rows.append(_no_decay(res))
    return rows


def _budget(inst) -> str:
    if inst.steps:
        return f"{inst.steps} steps"
    if inst.epochs:
        return f"{inst.epochs} epoch{'s' if inst.epochs != 1 else ''}"
    return "default budget"


def _adopt_spikes(res: Results) -> dict[str, str]:
    parts, adam_small, adopt_small = [], [], []
    for inst in res.instances:
        if inst.problem not in ("tiny_gpt_b8", "tiny_gpt_b64"):
            continue
        cells = []
        for o in ("adam", "adopt"):
            spikes, n = task_metric(res, inst, o, "loss_spikes", higher=False)
            bpc, _ = task_metric(res, inst, o, "test_bpc", higher=False)
            if n:
                cells.append(f"{o} {_fmt(spikes)} spikes, {_fmt(bpc)} bits/char")
                if inst.problem == "tiny_gpt_b8":
                    (adam_small if o == "adam" else adopt_small).append(spikes)
        if cells:
            parts.append(f"{inst.key} ({_budget(inst)}): " + ", ".join(cells))
    if not parts:
        measured, verdict = NO_DATA, "not measured in this suite"
    else:
        measured = "median loss spikes per run (a loss above 1.3× the median of the previous 50), test bpc: " \
                   + "; ".join(parts)
        if not (adam_small and adopt_small):
            verdict = "not measured in this suite (needs Adam and ADOPT on tiny_gpt_b8)"
        elif max(adam_small) == 0:
            verdict = "not reproduced: Adam shows no loss spikes at batch 8 in this budget"
        else:
            verdict = "supported" if max(adopt_small) < min(adam_small) else "not supported"
    return {"paper": "ADOPT (Taniguchi et al. 2024)",
            "claim": "Small-batch GPT-2 training: ADOPT trains stably where Adam shows loss spikes; here a tiny GPT "
                     "at batch 8 against batch 64.",
            "measured": measured, "verdict": verdict}


def _no_decay(res: Results) -> dict[str, str]:
    by_task = {i.problem: i for i in res.instances}
    parts, gaps = [], []
    for with_decay in ("fmnist_cnn", "fmnist_mlp"):
        a, b = by_task.get(with_decay), by_task.get(with_decay + "_nodecay")
        if a is None or b is None:
            continue
        cells = []
        for o in a.optimizers:
            if o not in b.optimizers:
                continue
            dec, n1 = task_metric(res, a, o, "test_accuracy", higher=True)
            flat, n2 = task_metric(res, b, o, "test_accuracy", higher=True)
            if n1 and n2:
                cells.append(f"{o} {_fmt(flat)} vs {_fmt(dec)}")
                gaps.append(dec - flat)
        if cells:
            parts.append(f"{with_decay}: " + ", ".join(cells))
    if not parts:
        measured, verdict = NO_DATA, "not measured in this suite"
    else:
        measured = "median test accuracy without vs with the ×0.1 decay at 75 %: " + "; ".join(parts)
        worst = max(gaps)
        verdict = (f"AdamL is not in adamkit yet: baseline only. The decay is worth at most {_fmt(worst)} test "
                   f"accuracy to the optimizers measured here"
                   + (" (no clear need for it in this budget)" if worst <= 0.002 else ""))
    return {"paper": "AdamL (Xia & Massei 2023)",
            "claim": "Vanilla CNNs trained with AdamL need no manual learning-rate decay to reach their best test "
                     "accuracy; here fmnist_cnn / fmnist_mlp (lr ×0.1 at 75 %) against their _nodecay variants.",
            "measured": measured, "verdict": verdict}


# ----------------------------------------------------------------------------------------------- document


class Doc:
    """Blocks rendered to Markdown and to HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]):
        self.blocks.append(("table", header, rows))

    def bullets(self, items: list[str]):
        self.blocks.append(("bullets", items))

    def img(self, path: Path, caption: str):
        self.blocks.append(("img", path, caption))

    def markdown(self, root: Path) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "table":
                out.append("| " + " | ".join(b[1]) + " |")
                out.append("|" + "---|" * len(b[1]))
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b[2]]
            elif b[0] == "bullets":
                out += [f"- {item}" for item in b[1]]
            elif b[0] == "img":
                out.append(f"![{b[2]}]({os.path.relpath(b[1], root)})\n\n*{b[2]}*")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
               "body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}"
               "table{border-collapse:collapse;margin:0.6em 0;font-size:0.85em}td,th{border:1px solid #ccc;"
               "padding:3px 6px;text-align:left;vertical-align:top}th{background:#f2f2f2}img{max-width:100%;"
               "border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}"
               "code{background:#f5f5f5;padding:0 3px}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in b[1]) + "</tr>")
                out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b[2]]
                out.append("</table>")
            elif b[0] == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b[1]) + "</ul>")
            elif b[0] == "img":
                data = base64.b64encode(Path(b[1]).read_bytes()).decode()
                out.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(b[2])}'>"
                           f"<figcaption>{_inline(b[2])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


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
            key = (f"{inst.trials} trials{defaults} on {_seeds_text(inst.tune_seeds, 'tuning')}, "
                   f"{_seeds_text(inst.final_seeds, 'final')}")
        else:
            key = f"no tuning (fixed hyperparameters), {_seeds_text(inst.final_seeds, 'final')}"
        names = groups.setdefault(key, [])
        if inst.group not in names:
            names.append(inst.group)
    return [f"{key}: {', '.join(names)}" for key, names in groups.items()]


def _target_text(inst) -> str:
    return f"{'≥' if inst.maximize else '≤'} {_fmt(inst.target)}"


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code`."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


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
    doc.p(f"{counts.get('done', 0)} runs finished, {counts.get('failed', 0)} failed, stored in "
          f"`{res.store.path}`; report written {time.strftime('%Y-%m-%d %H:%M')}. Optimizers: "
          f"{', '.join(suite.optimizers)}.")
    doc.p("**Protocol.** Every optimizer gets the same budget on every problem: random-search trials "
          "(log-uniform learning rate over the problem's range, the same for all; ε/δ log-uniform on each "
          "optimizer's own scale; trial i of every optimizer sits at the same quantiles)"
          + (", plus its paper defaults as one more candidate" if suite.defaults_arm else "")
          + ", each run on the tuning seeds. The candidate with the best validation metric is re-run on the final "
          "seeds (paired: the same seeds, i.e. the same start points and noise, for every optimizer)"
          + ("; the paper-defaults arm runs on them too" if suite.defaults_arm else "")
          + ". A problem without tuning runs its fixed hyperparameters on the final seeds. Numbers below are "
          "medians over the final seeds with the 25–75 % range. Per problem:")
    doc.bullets(protocol_summary(suite))
    missing = sum(a.missing for a in res.arms.values())
    if missing:
        doc.p(f"**Incomplete sweep:** {missing} final runs are not in the store yet; re-run `adamkit bench run` "
              f"with the same suite and folder to finish it.")

    # claims
    doc.h(2, "Paper claims vs what we measured")
    doc.table(["paper", "claim", "what we measured", "verdict"],
              [[c["paper"], c["claim"], c["measured"], c["verdict"]] for c in claims(res)])

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

    # win rates
    names, rate, count = analysis.paired_win_rates(res)
    if np.nansum(count) > 0:
        doc.h(2, "Paired win rates")
        doc.p("Share of paired runs (same problem, same seed) in which the row optimizer ends with a better final "
              "target metric than the column optimizer (ties count ½), over every problem of the suite.")
        doc.table(["row beats column"] + names,
                  [[a] + ["" if i == j else (f"{rate[i, j]:.0%}" if count[i, j] else "–") for j in range(len(names))]
                   for i, a in enumerate(names)])

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
            for arm_name in ("tuned", "fixed", "defaults"):
                a = res.arm(inst.key, o, arm_name)
                if a is None:
                    continue
                q = a.quantiles()
                rows.append([o, arm_name, _hp(a.hparams), f"{_fmt(q[1])} [{_fmt(q[0])}, {_fmt(q[2])}]",
                             _fmt(float(np.nanmedian(a.dists))) if any(not math.isnan(d) for d in a.dists) else "–",
                             f"{a.converged:.0%}", _fmt(a.median_steps),
                             f"{a.failed} failed, {a.diverged} diverged" if (a.failed or a.diverged) else ""])
        doc.table(["optimizer", "arm", "hyperparameters", f"final {inst.target_metric} median [25 %, 75 %]",
                   "distance to minimiser", "reached target", "median steps to target", "problems"], rows)
        for fn in (plot_trajectories, plot_curves, plot_train_loss, plot_lr_sensitivity):
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
