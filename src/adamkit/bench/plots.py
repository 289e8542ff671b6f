"""The report's figures (matplotlib, Agg): trajectories over contours, curves with seed bands, learning-rate
sensitivity, performance profiles, counterexample β2 sweeps. Each optimizer's colour is its BenchSpec's.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import analysis, registry
from . import optimizers as bench_optimizers
from .analysis import Results


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8})
    return plt


def _color(name: str) -> str:
    return bench_optimizers.color(name)


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




def _budget(inst) -> str:
    if inst.steps:
        return f"{inst.steps} steps"
    if inst.epochs:
        return f"{inst.epochs} epoch{'s' if inst.epochs != 1 else ''}"
    return "default budget"



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
    if not opts:  # (a sweep not finished yet: no final runs)
        return None
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
    shown: list[float] = []
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
        # a diverged run is drawn off the top (1e30: far above any readable range, still finite in log space)
        mat = np.where(np.isfinite(mat), mat, np.nan if inst.maximize else 1e30)
        if not inst.maximize:
            mat = np.clip(mat, 1e-16, 1e30)
        with np.errstate(all="ignore"):
            med = np.nanmedian(mat, axis=0)
            q25, q75 = np.nanquantile(mat, 0.25, axis=0), np.nanquantile(mat, 0.75, axis=0)
        ax.plot(steps, med, color=_color(o), lw=1.5, label=f"{o} ({_hp(arm.hparams)})")
        ax.fill_between(steps, q25, q75, color=_color(o), alpha=0.18, lw=0)
        shown += [float(v) for v in med if np.isfinite(v) and v < 1e29]
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if not inst.maximize:
        ax.set_yscale("log")
    if shown:  # a readable range: a diverged run (drawn at 1e300) must not set the axis (nor overflow its ticks)
        ax.set_ylim(*_readable_range(shown + ([inst.target] if inst.target else []), log=not inst.maximize))
    if inst.target is not None:
        ax.axhline(inst.target, color="k", ls="--", lw=0.8, label=f"target {_fmt(inst.target)}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_metric_label(metric))
    n = len(inst.final_seeds)
    ax.set_title(f"{inst.key}: median over {n} seeds, band = 25–75 %" if n > 1 else f"{inst.key}: one seed")
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=6.5, loc="best")
    return _save(fig, out / f"curve_{_safe(inst.key)}.png")


def plot_theta(res: Results, inst, out: Path) -> Path | None:
    """Counterexamples: θ over steps on a linear axis, and its running time average, per arm (paper arms too)."""
    if inst.problem not in ("adopt_counterexample", "reddi_counterexample"):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.8, 4.0))
    drawn = False
    for o in inst.optimizers:
        names = [res.main_arm(inst)] + sorted(k[2] for k in res.arms if k[0] == inst.key and k[1] == o
                                               and k[2].startswith("paper:"))
        for arm_name in names:
            arm = res.arm(inst.key, o, arm_name)
            if arm is None:
                continue
            curves = [c for c in (res.store.curve(h) for h in arm.hashes) if c.get("theta")]
            if not curves:
                continue
            n = min(len(c["step"]) for c in curves)
            steps = np.array(curves[0]["step"][:n], float)
            theta = np.median(np.array([c["theta"][:n] for c in curves], float), axis=0)
            label = o if arm_name == res.main_arm(inst) else f"{o}@{arm_name[6:]}"
            ls = "-" if "@" not in label else "--"
            ax.plot(steps, theta, ls, color=_color(o), lw=1.0, alpha=0.6, label=f"{label}: θ")
            if all(c.get("theta_avg") for c in curves):
                avg = np.median(np.array([c["theta_avg"][:n] for c in curves], float), axis=0)
                ax.plot(steps, avg, ls, color=_color(o), lw=2.2, label=f"{label}: time average")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.axhline(-1, color="k", lw=0.8, ls=":")
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("step")
    ax.set_ylabel("θ (median over seeds; optimum −1)")
    ax.set_title(f"{inst.key}: θ and its time average, linear axis", fontsize=9)
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, out / f"theta_{_safe(inst.key)}.png")


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


def _readable_range(values: list[float], log: bool) -> tuple[float, float]:
    """A y-range that shows the good region: from the best value to at most 6 decades (log) above it, or
    the 5–95 % range padded (linear); values beyond are drawn at the edge."""
    vals = np.array([v for v in values if math.isfinite(v)], dtype=float)
    if log:
        vals = vals[vals > 0]
        if vals.size == 0:
            return 1e-3, 1.0
        low = float(vals.min())
        high = float(min(vals.max(), low * 1e6))
        return low / 2, max(high * 2, low * 10)
    lo, hi = (float(np.quantile(vals, 0.05)), float(np.quantile(vals, 0.95))) if vals.size else (0.0, 1.0)
    lo, hi = min(lo, float(vals.max()) if vals.size else lo), max(hi, float(vals.max()) if vals.size else hi)
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def plot_lr_sensitivity(res: Results, inst, out: Path) -> Path | None:
    """Every tuning run (a dot per seed) against its learning rate, the selection score per rate (line), the ε/δ
    trials (×), the defaults (◇) and the selected rate (★), on a y-range clipped to the readable part."""
    if not inst.tune:
        return None
    plt = _plt()
    metric = inst.selection_metric
    points: dict[str, list[tuple[float, float, int, str]]] = {}
    allv = []
    for o in inst.optimizers:
        search = res.searches.get((inst.key, o))
        kinds = {t_: k for t_, _, k in search.candidates} if search else {}
        pts = []
        for r in res.tuning_runs(inst.key, o):
            v = analysis._metric(res.finals.get(r.hash), metric, inst.maximize) if r.hash in res.finals else math.nan
            lr = r.spec["hparams"].get("lr", bench_optimizers.default_lr(o))
            pts.append((lr, v, r.trial, kinds.get(r.trial, "grid")))
        points[o] = pts
        allv += [v for _, v, _, _ in pts]
    if not any(math.isfinite(v) for v in allv):
        return None
    log = not inst.maximize and min(v for v in allv if math.isfinite(v)) > 0
    low, high = _readable_range(allv, log)
    worst_edge = low if inst.maximize else high

    def clip(v):
        if not math.isfinite(v):
            return worst_edge
        return min(max(v, low), high)

    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    for o, pts in points.items():
        c = _color(o)
        grid = sorted((lr, v) for lr, v, _, k in pts if k == "grid")
        if grid:
            ax.scatter([lr for lr, _ in grid], [clip(v) for _, v in grid], s=9, color=c, alpha=0.55, lw=0)
        search = res.searches.get((inst.key, o))
        if search:
            line = sorted((hp["lr"], search.scores.get(t_, math.nan)) for t_, hp, k in search.candidates
                          if k == "grid" and "lr" in hp)
            ys = [clip(-s if inst.maximize else s) for _, s in line]
            flag = "" if search.bracketed is not False else " (not bracketed)"
            ax.plot([lr for lr, _ in line], ys, "-", color=c, lw=1.1, label=o + flag)
            win = search.winner_hparams
            if win is not None:
                s = search.scores.get(search.winner, math.nan)
                ax.plot([win.get("lr", bench_optimizers.default_lr(o))], [clip(-s if inst.maximize else s)], "*",
                        color=c, ms=12, mec="k",
                        mew=0.5, zorder=5)
        for lr, v, _, k in pts:
            if k == "eps":
                ax.plot([lr], [clip(v)], "x", color=c, ms=6)
            elif k == "defaults":
                ax.plot([lr], [clip(v)], "D", color=c, mfc="none", ms=7)
    ax.set_xscale("log")
    if log:
        ax.set_yscale("log")
    ax.set_ylim(low, high)
    ax.set_xlabel("learning rate (grid on each optimizer's own scale)")
    steps, epochs, _ = inst.tune_budget
    at = ("" if not inst.multi_fidelity else
          f", {epochs} epoch{'s' if epochs != 1 else ''}" if epochs else f", {steps} steps")
    ax.set_ylabel(f"{_metric_label(metric)} (tuning seeds{at})")
    ax.set_title(f"{inst.key}: learning-rate sensitivity — dots: runs, line: selection score, ★ selected,\n"
                 f"◇ defaults, × ε/δ trials; failures and values off the range at the {'bottom' if inst.maximize else 'top'}",
                 fontsize=8)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, out / f"lr_{_safe(inst.key)}.png")


def plot_profiles(res: Results, out: Path) -> list[tuple[Path, str]]:
    """Per tier and measure: AlgoPerf-style profiles on τ ∈ [1, 4] over the instances every optimizer ran."""
    plt = _plt()
    taus = np.linspace(1.0, 4.0, 301)
    paths = []
    for tier in ("B", "A"):
        for measure, title, what in (
            ("steps", "time to target", "median steps to reach each instance's target (fewer than half reach = ∞)"),
            ("final", "final value", "median final target metric (maximised: 1 + shortfall relative to the best)"),
        ):
            keys, ratios = analysis.profile_ratios(res, measure, tier)
            if not keys:
                continue
            fig, ax = plt.subplots(figsize=(6.4, 4.0))
            for o, r in ratios.items():
                y = analysis.profile(r, taus)
                ax.step(taus, y, where="post", color=_color(o), lw=1.6,
                        label=f"{o}: score {analysis.algoperf_score(r):.2f}, best on {np.mean(r <= 1.0):.0%}")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlim(1.0, 4.0)
            ax.set_xlabel("τ: within this factor of the best optimizer on an instance")
            ax.set_ylabel("share of instances")
            role = "headline" if tier == "B" else "diagnostic battery (not in the headline score)"
            ax.set_title(f"Tier {tier}, {role}: {title}, {len(keys)} instances all ran", fontsize=9)
            ax.grid(alpha=0.3, lw=0.4)
            ax.legend(fontsize=7, loc="lower right")
            fig.text(0.01, 0.01, f"ratio = {what}; score = ∫₁⁴ ρ(τ) dτ / 3", fontsize=6.5)
            path = _save(fig, out / f"profile_{tier}_{measure}.png", rect=(0, 0.03, 1, 1))
            paths.append((path, f"Tier {tier}, {title}: performance profile over the {len(keys)} instances every "
                                f"optimizer ran; {what}."))
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
            arms = [(o, res.main_arm(inst))] + sorted(
                (f"{o}@{k[2][6:]}", k[2]) for k in res.arms if k[0] == inst.key and k[1] == o
                and k[2].startswith("paper:"))
            for label, arm_name in arms:
                arm = res.arm(inst.key, o, arm_name)
                if arm is not None:
                    g["rows"].append((other, inst.params["beta2"], label, arm))
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
            opts = list(dict.fromkeys(r[2] for r in rows))
            width = 0.8 / max(len(opts), 1)
            for k, o in enumerate(opts):
                xs, med, lo, hi, avg = [], [], [], [], []
                for _, b, oo, arm in rows:
                    if oo != o:
                        continue
                    q = arm.quantiles()
                    # theta = gap - 1
                    xs.append(pos[b] - 0.4 + width * (k + 0.5))
                    med.append(q[1] - 1)
                    lo.append(q[1] - q[0])
                    hi.append(q[2] - q[1])
                    ta = [analysis._metric(res.finals.get(h), "theta_avg") for h in arm.hashes]
                    avg.append(analysis.quantile([v for v in ta if not math.isnan(v)], 0.5))
                base = o.split("@")[0]
                ax.errorbar(xs, med, yerr=[lo, hi], fmt="o" if "@" not in o else "s", color=_color(base), ms=5,
                            capsize=2, label=o, mfc=None if "@" not in o else "white")
                if any(not math.isnan(v) for v in avg):
                    ax.plot(xs, avg, "_", color=_color(base), ms=12, mew=2)
            ax.axhline(-1, color="k", lw=0.8, ls="--")
            ax.text(len(betas) - 0.5, -0.97, "optimum θ* = -1", ha="right", va="bottom", fontsize=7)
            ax.axhline(1, color="grey", lw=0.6, ls=":")
            ax.set_xticks(range(len(betas)))
            ax.set_xticklabels([str(b) for b in betas])
            ax.set_xlim(-0.5, len(betas) - 0.5)  # each β2's slot whole, also when there is only one
            ax.set_ylim(-1.1, 1.1)
            ax.set_xlabel("β2")
            ax.set_ylabel("θ: final (dot, 25–75 % bar), time average (dash)")
            label = ", ".join(f"{k}={v}" for k, v in other)
            ax.set_title(f"{data['problem']} {label}".strip(), fontsize=9)
            ax.grid(alpha=0.3, lw=0.4)
        axes.flat[0].legend(fontsize=7, loc="center left")
        fig.suptitle(f"{group}: θ across β2, linear axis (start 0, optimum −1: lower is better)\n"
                     "squares: paper configurations (e.g. ADOPT unclipped)", fontsize=8.5)
        path = _save(fig, out / f"beta2_{_safe(group)}.png", rect=(0, 0, 1, 0.9))  # room for the 2-line title
        paths.append((path, f"β2 sweep on {data['problem']}: final θ (median, 25–75 %) and time-averaged θ (dash) per "
                            "optimizer and paper arm; converging means θ ≈ -1. Where the clipped and unclipped ADOPT "
                            "end alike but their time averages differ, the difference is the clip schedule: a "
                            "threshold t^¼ below k² clips the rare large gradient, so the expected step points the "
                            "wrong way until t^¼ exceeds the normalised gradient."))
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




def plot_variants(comparisons, out: Path) -> Path | None:
    """The variants' paired differences against the main arm, in units of each row's non-inferiority margin:
    one panel per instance, one row per optimizer, one marker and colour per variant (mean and 95 % interval).
    Left of the dashed line at −1 (the margin) is *worse*; an interval wholly right of it is *no worse*."""
    rows = [c for c in comparisons if math.isfinite(c.effect) and math.isfinite(c.margin) and c.margin > 0]
    if not rows:
        return None
    plt = _plt()
    instances = list(dict.fromkeys(c.instance for c in rows))
    variants = list(dict.fromkeys(c.variant for c in comparisons))
    n_opts = max(len({c.optimizer for c in rows if c.instance == key}) for key in instances)
    markers, colors = "osD^v<>", ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
    fig, axes = plt.subplots(1, len(instances), figsize=(3.6 * len(instances) + 0.8, 0.42 * n_opts + 1.4),
                             squeeze=False)
    for ax, key in zip(axes[0], instances):
        here = [c for c in rows if c.instance == key]
        opts = list(dict.fromkeys(c.optimizer for c in here))
        for c in here:
            k = variants.index(c.variant)
            y = opts.index(c.optimizer) + (k - (len(variants) - 1) / 2) * 0.25
            lo, hi, mid = c.low / c.margin, c.high / c.margin, c.effect / c.margin
            ax.errorbar([mid], [y], xerr=[[mid - lo], [hi - mid]], fmt=markers[k % len(markers)], ms=4,
                        color=colors[k % len(colors)], capsize=2, lw=1)
        ax.axvline(-1.0, color="#aa0000", ls="--", lw=0.9)
        ax.axvline(0.0, color="#555555", lw=0.6)
        ax.set_yticks(range(len(opts)))
        ax.set_yticklabels(opts)
        ax.set_ylim(len(opts) - 0.5, -0.5)
        ax.set_title(f"{key} ({here[0].metric}; margin {here[0].margin_text})", fontsize=8)
        ax.set_xlabel("paired difference / margin (> 0: variant better)", fontsize=8)
        ax.grid(alpha=0.3, lw=0.4)
    handles = [plt.Line2D([], [], marker=markers[k % len(markers)], color=colors[k % len(colors)], ls="", label=v)
               for k, v in enumerate(variants)]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="lower right")
    return _save(fig, out / "variants.png")
