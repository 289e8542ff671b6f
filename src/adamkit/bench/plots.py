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
        return "its defaults"
    return ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in hparams.items())




def _budget(inst) -> str:
    if inst.steps:
        return f"{inst.steps} steps"
    if inst.epochs:
        return f"{inst.epochs} epoch{'s' if inst.epochs != 1 else ''}"
    return "default budget"



# ----------------------------------------------------------------------------------------------- plots


def plot_trajectories(res: Results, inst, out: Path) -> Path | None:
    """A 2-D problem's paths over its contours: a panel per arm a curve figure draws (:func:`curve_arms`: each
    optimizer's main arm, and its paper configurations, which the claims' verdicts use), every final seed's path
    from its start (•) to its end (×), small dots every tenth of the budget (so that speed shows: a faster arm's
    dots gather at the minimum sooner), dotted when the run never reaches the target; each panel's title gives
    the share of starts that reach the target, their median steps to it, and the share that end there (a
    non-smooth problem's path can reach the target and leave it)."""
    problem = registry.create_problem(inst.problem, inst.params)
    if getattr(problem, "dim", None) != 2 or not hasattr(problem, "f"):
        return None
    import torch

    arms = curve_arms(res, inst)
    if not arms:  # (a sweep not finished yet: no final runs)
        return None
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
    ncol = 4
    nrow = math.ceil(len(arms) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.0 * nrow + 0.7), squeeze=False)
    for ax in axes.flat[len(arms):]:
        ax.axis("off")
    budget = inst.steps
    for ax, (o, arm_name, _) in zip(axes.flat, arms):
        arm = res.arm(inst.key, o, arm_name)
        ax.contourf(gx, gy, z, levels=30, cmap="Greys_r", alpha=0.55)
        ax.contour(gx, gy, z, levels=15, colors="k", linewidths=0.3, alpha=0.4)
        for m in problem.minimizers:
            ax.plot(m[0], m[1], marker="*", color="gold", markersize=13, markeredgecolor="k", zorder=5)
        for h, reached in zip(arm.hashes, arm.steps_to_target):
            c = res.store.curve(h)
            if not c.get("x"):
                continue
            x, y = np.array(c["x"], float), np.array(c["y"], float)
            ok = math.isfinite(reached)
            ax.plot(x, y, color=_color(o), lw=1.1, alpha=0.9 if ok else 0.5, ls="-" if ok else ":")
            steps = np.array(c.get("step") or [], float)
            if budget and steps.size == x.size:
                marks = sorted({int(np.searchsorted(steps, k * budget / 10)) for k in range(1, 10)} - {x.size})
                ax.plot(x[marks], y[marks], ".", color=_color(o), markersize=3.5, markeredgecolor="k",
                        markeredgewidth=0.3, zorder=4)
            ax.plot(x[0], y[0], "o", color=_color(o), markersize=4, markeredgecolor="k", markeredgewidth=0.5)
            ax.plot(x[-1], y[-1], "x", color="k", markersize=5)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        reach = np.mean([math.isfinite(v) for v in arm.steps_to_target]) if arm.steps_to_target else math.nan
        speed = f" (median step {_fmt(arm.median_steps)})" if math.isfinite(arm.median_steps) else ""
        ax.set_title(f"{_arm_label(res, inst, o, arm_name)}\nreach gap ≤ {_fmt(inst.target)}: {reach:.0%}{speed}; "
                     f"end there: {arm.converged:.0%}", fontsize=7.5)
        ax.tick_params(labelsize=7)
    n_starts = max(len(res.arm(inst.key, o, a).seeds) for o, a, _ in arms)
    fig.suptitle(f"{inst.key}: {problem.description}\npaths from {n_starts} random starts (•) to the end (×), "
                 f"small dots every tenth of the {budget} steps; ★ global minima; dotted: never reached the target\n"
                 f"each optimizer {'tuned' if inst.tune else 'at its fixed hyperparameters'}, its paper "
                 f"configurations in panels of their own", fontsize=8.5)
    return _save(fig, out / f"traj_{_safe(inst.key)}.png")


def curve_arms(res: Results, inst) -> list[tuple[str, str, str]]:
    """(optimizer, arm, line style) of every arm a curve figure draws: each optimizer's main arm (solid), its
    paper configurations tuned as optimizers of their own (``paper:<arm>``, dashed) and at the paper's own
    learning rate (``paper-lr:<arm>``, dotted), in the suite's order of optimizers and sorted arm names."""
    out = []
    for o in res.suite.optimizers:
        if res.arm(inst.key, o, res.main_arm(inst)) is not None:
            out.append((o, res.main_arm(inst), "-"))
        extra = sorted(k[2] for k in res.arms if k[0] == inst.key and k[1] == o
                       and k[2].startswith(("paper:", "paper-lr:")))
        out += [(o, a, "--" if a.startswith("paper:") else ":") for a in extra]
    return out


def _arm_label(res: Results, inst, optimizer: str, arm: str) -> str:
    """``adam`` (the main arm) or ``adabelief paper:cnn`` / ``adabelief paper-lr:cnn``."""
    return optimizer if arm == res.main_arm(inst) else f"{optimizer} {arm}"


def _median_band(series: list[dict], metric: str, maximize: bool):
    """(steps, median, 25 %, 75 %) over the seeds' curves of ``metric``; a diverged run (a shorter curve) stays
    where it blew up, drawn off the top."""
    length = max(len(c["step"]) for c in series)
    steps = np.array(next(c["step"] for c in series if len(c["step"]) == length), dtype=float)
    mat = np.full((len(series), length), np.nan)
    for i, c in enumerate(series):
        v = np.array(c[metric], float)
        mat[i, :len(v)] = v
        if len(v) < length:
            mat[i, len(v):] = np.inf
    # a diverged run is drawn off the top (1e30: far above any readable range, still finite in log space)
    mat = np.where(np.isfinite(mat), mat, np.nan if maximize else 1e30)
    if not maximize:
        mat = np.clip(mat, 1e-16, 1e30)
    with np.errstate(all="ignore"):
        return (steps, np.nanmedian(mat, axis=0), np.nanquantile(mat, 0.25, axis=0),
                np.nanquantile(mat, 0.75, axis=0))


def _zoom_range(lines: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], start: float, log: bool
                ) -> tuple[float, float] | None:
    """The y-range of the curves' points at steps ≥ ``start`` (medians and bands), padded."""
    vals = [float(v) for steps, med, lo, hi in lines for arr in (med, lo, hi)
            for x, v in zip(steps, arr) if x >= start and np.isfinite(v) and v < 1e29]
    if log:
        vals = [v for v in vals if v > 0]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if log:
        return lo / 1.15, hi * 1.15
    pad = 0.08 * (hi - lo or abs(hi) or 1.0)
    return lo - pad, hi + pad


def plot_curves(res: Results, inst, out: Path) -> Path | None:
    """The target metric over steps (median and 25–75 % band over the final seeds) of every arm
    :func:`curve_arms` names, the whole run on the left and its last third zoomed on the right."""
    metric = inst.target_metric
    lines = []
    for o, arm_name, ls in curve_arms(res, inst):
        arm = res.arm(inst.key, o, arm_name)
        series = [c for c in (res.store.curve(h) for h in arm.hashes) if c.get(metric)]
        if series:
            lines.append((o, arm_name, ls, arm, _median_band(series, metric, inst.maximize)))
    if not lines:
        return None
    plt = _plt()
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11.0, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    shown: list[float] = []
    for o, arm_name, ls, arm, (steps, med, q25, q75) in lines:
        label = f"{_arm_label(res, inst, o, arm_name)} ({_hp(arm.hparams)})"
        for a in (ax, zoom):
            a.plot(steps, med, ls, color=_color(o), lw=1.5, label=label if a is ax else None, marker="." if
                   len(steps) <= 12 else None)
            a.fill_between(steps, q25, q75, color=_color(o), alpha=0.14 if ls == "-" else 0.07, lw=0)
        shown += [float(v) for v in med if np.isfinite(v) and v < 1e29]
    log = not inst.maximize
    for a in (ax, zoom):
        if log:
            a.set_yscale("log")
        if inst.target is not None:
            a.axhline(inst.target, color="k", ls="--", lw=0.8, label=f"target {_fmt(inst.target)}" if a is ax else None)
        a.set_xlabel("optimizer step")
        a.grid(alpha=0.3, which="both", lw=0.4)
    if shown:  # a readable range: a diverged run (drawn at 1e30) must not set the axis (nor overflow its ticks)
        ax.set_ylim(*_readable_range(shown + ([inst.target] if inst.target else []), log=log))
    last = max(float(steps[-1]) for *_, (steps, _, _, _) in lines)
    start = last * 2.0 / 3.0
    zoom.set_xlim(start - 0.02 * last, last + 0.02 * last)
    window = _zoom_range([band for *_, band in lines], start, log)
    if window is not None:
        zoom.set_ylim(*window)
    ax.set_ylabel(_metric_label(metric))
    n = len(inst.final_seeds)
    ax.set_title(f"{inst.key}: median over {n} seeds, band = 25–75 %" if n > 1 else f"{inst.key}: one seed",
                 fontsize=9)
    zoom.set_title("last third of training (zoomed)", fontsize=9)
    ax.legend(fontsize=6.5, loc="best")
    return _save(fig, out / f"curve_{_safe(inst.key)}.png")


#: what a task keeps of its generator's final samples: the ring GAN's 2-D points, a Fashion-MNIST GAN's images
SAMPLE_KEYS = ("samples_xy", "samples_images")


def _kept_samples(final: dict | None) -> str | None:
    """The key of the samples a run's final metrics keep (:data:`SAMPLE_KEYS`), or None."""
    return next((k for k in SAMPLE_KEYS if (final or {}).get(k)), None)


def plot_samples(res: Results, inst, out: Path) -> Path | None:
    """A generator's samples at the end of training (a task that keeps them in its final metrics: the ring GAN's
    points ``samples_xy``, a Fashion-MNIST GAN's images ``samples_images``), a panel per arm of the curve figures:
    the run of the arm's median seed on the task's metric, titled with its value; the ring's points over the
    target modes (×, ring of 3σ) with the modes covered, the images as a grid."""
    arms = [(o, a) for o, a, _ in curve_arms(res, inst)]
    runs = []
    for o, a in arms:
        arm = res.arm(inst.key, o, a)
        kept = [(v, h) for h, v in zip(arm.hashes, arm.values)
                if math.isfinite(v) and _kept_samples(res.finals.get(h))]
        if kept:
            kept.sort(key=lambda vh: vh[0])
            runs.append((o, a, *kept[(len(kept) - 1) // 2]))  # the median seed (the lower one of an even count)
    if not runs:
        return None
    if _kept_samples(res.finals[runs[0][3]]) == "samples_images":
        return _plot_images(res, inst, runs, out)
    task = registry.create_problem(inst.problem, inst.params)
    centers = task.centers().numpy() if hasattr(task, "centers") else None
    plt = _plt()
    ncol = 4
    nrow = math.ceil(len(runs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.0 * ncol, 3.0 * nrow + 0.6), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    reach = 1.3 * float(np.abs(centers).max()) if centers is not None else None
    for ax, (o, a, value, h) in zip(axes.flat, runs):
        final = res.finals[h]
        xy = np.array(final["samples_xy"], float).reshape(-1, 2)
        if centers is not None:
            ax.add_patch(plt.Circle((0, 0), float(np.linalg.norm(centers[0])), fill=False, color="0.8", lw=0.6))
            for cx, cy in centers:
                ax.add_patch(plt.Circle((cx, cy), 3 * task.std, fill=False, color="k", lw=0.6))
            ax.plot(centers[:, 0], centers[:, 1], "x", color="k", ms=5)
        inside = np.all(np.abs(xy) <= reach, axis=1) if reach else np.ones(len(xy), bool)
        ax.plot(xy[inside, 0], xy[inside, 1], ".", color=_color(o), ms=2.5, alpha=0.7)
        if reach:
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        modes = final.get("modes_covered")
        ax.set_title(f"{_arm_label(res, inst, o, a)}\n{inst.target_metric} {_fmt(value)}"
                     + (f", {modes:g}/{len(centers)} modes" if modes is not None and centers is not None else "")
                     + (f"; {int((~inside).sum())} off the plot" if (~inside).any() else ""), fontsize=7.5)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"{inst.key}: {len(xy)} generated samples at the end of training, of each arm's median seed on "
                 f"{inst.target_metric}; × and black circles: the target modes (3σ)", fontsize=8.5)
    return _save(fig, out / f"samples_{_safe(inst.key)}.png")


IMAGE_SIDE = 28  # the Fashion-MNIST GANs' images


def image_grid(grey: list[float], columns: int = 4, side: int = IMAGE_SIDE) -> np.ndarray:
    """Kept images (``samples_images``: images of ``side``×``side``, row by row) as one array of ``columns``
    images a row, a 1-pixel NaN line between them (drawn blank); a last row short of images is left blank."""
    images = np.asarray(grey, float).reshape(-1, side, side)
    rows = math.ceil(len(images) / columns)
    grid = np.full((rows * (side + 1) - 1, columns * (side + 1) - 1), np.nan)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (side + 1):r * (side + 1) + side, c * (side + 1):c * (side + 1) + side] = image
    return grid


def _plot_images(res: Results, inst, runs, out: Path) -> Path:
    """:func:`plot_samples` for image samples: a grid of each arm's kept images (grey levels 0–255; a NaN pixel
    blank)."""
    plt = _plt()
    ncol = min(4, len(runs))
    nrow = math.ceil(len(runs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.9 * ncol, 1.9 * nrow + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    count = 0
    for ax, (o, a, value, h) in zip(axes.flat, runs):
        grey = res.finals[h]["samples_images"]
        count = len(grey) // IMAGE_SIDE ** 2
        ax.imshow(image_grid(grey), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        classes = res.finals[h].get("classes_covered")
        ax.set_title(f"{_arm_label(res, inst, o, a)}\n{inst.target_metric} {_fmt(value)}"
                     + (f", {classes:g}/10 classes" if classes is not None else ""), fontsize=7.5)
    fig.suptitle(f"{inst.key}: {count} generated images at the end of training (the same latent points for every "
                 f"arm), of each arm's median seed on {inst.target_metric}", fontsize=8.5)
    return _save(fig, out / f"samples_{_safe(inst.key)}.png")


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
    """Tier B: the training loss of every step (first final seed of each arm :func:`curve_arms` names): spikes
    show; the last third of training zoomed on the right."""
    if inst.tier != "B":
        return None
    lines = []
    for o, arm_name, ls in curve_arms(res, inst):
        arm = res.arm(inst.key, o, arm_name)
        c = next((c for c in (res.store.curve(h, "train") for h in arm.hashes) if c.get("loss")), None)
        if c is not None:
            lines.append((o, arm_name, ls, np.array(c["step"], float), np.array(c["loss"], float)))
    if not lines:
        return None
    plt = _plt()
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11.0, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    for o, arm_name, ls, steps, loss in lines:
        for a in (ax, zoom):
            a.plot(steps, loss, ls, color=_color(o), lw=0.8, alpha=0.85,
                   label=_arm_label(res, inst, o, arm_name) if a is ax else None)
    last = max(float(steps[-1]) for *_, steps, _ in lines if steps.size)
    start = last * 2.0 / 3.0
    zoom.set_xlim(start - 0.02 * last, last + 0.02 * last)
    window = _zoom_range([(steps, loss, loss, loss) for *_, steps, loss in lines], start, log=False)
    if window is not None:
        zoom.set_ylim(*window)
    for a in (ax, zoom):
        a.set_xlabel("optimizer step")
        a.grid(alpha=0.3, lw=0.4)
    ax.set_ylabel("training loss (mini-batch)")
    ax.set_title(f"{inst.key}: training loss per step, first final seed", fontsize=9)
    zoom.set_title("last third of training (zoomed)", fontsize=9)
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
    trials (×), the defaults (◇) and the selected rate (★), on a y-range clipped to the readable part.

    An instance selected on steps to its target plots each run's selection score
    (:meth:`protocol.Lookup.steps_score`): its first step at the target, or, above the dashed line at the
    budget, the budget stretched by its final distance to the target."""
    if not inst.tune:
        return None
    plt = _plt()
    metric = inst.selection_metric
    by_steps = metric == "steps_to_target"
    if by_steps and res.lookup is None:
        return None

    def value(run_hash: str) -> float:
        if run_hash not in res.finals:
            return math.nan
        if by_steps:
            return res.lookup.steps_score(run_hash, inst)
        return analysis._metric(res.finals.get(run_hash), metric, inst.maximize)
    points: dict[str, list[tuple[float, float, int, str]]] = {}
    allv = []
    for o in inst.optimizers:
        search = res.searches.get((inst.key, o))
        kinds = {t_: k for t_, _, k in search.candidates} if search else {}
        pts = []
        for r in res.tuning_runs(inst.key, o):
            v = value(r.hash)
            lr = r.spec["hparams"].get("lr", bench_optimizers.default_lr(o))
            pts.append((lr, v, r.trial, kinds.get(r.trial, "grid")))
        points[o] = pts
        allv += [v for _, v, _, _ in pts]
    if not any(math.isfinite(v) for v in allv):
        return None
    higher_better = inst.maximize and not by_steps
    log = not higher_better and min(v for v in allv if math.isfinite(v)) > 0
    low, high = _readable_range(allv, log)
    worst_edge = low if higher_better else high

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
            ys = [clip(-s if higher_better else s) for _, s in line]
            flag = "" if search.bracketed is not False else " (not bracketed)"
            ax.plot([lr for lr, _ in line], ys, "-", color=c, lw=1.1, label=o + flag)
            win = search.winner_hparams
            if win is not None:
                s = search.scores.get(search.winner, math.nan)
                ax.plot([win.get("lr", bench_optimizers.default_lr(o))], [clip(-s if higher_better else s)], "*",
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
    if by_steps:
        budget = steps or None
        if budget and low < budget < high:
            ax.axhline(budget, color="0.4", ls="--", lw=0.8)
        relation = "≥" if inst.maximize else "≤"
        ax.set_ylabel(f"steps to {_metric_label(inst.target_metric)} {relation} {inst.target:g} (tuning seeds{at})")
    else:
        ax.set_ylabel(f"{_metric_label(metric)} (tuning seeds{at})")
    ax.set_title(f"{inst.key}: learning-rate sensitivity — dots: runs, line: selection score, ★ selected,\n"
                 f"◇ defaults, × ε/δ trials; failures and values off the range at the "
                 f"{'bottom' if higher_better else 'top'}"
                 + ("; above the dashed budget: never reached" if by_steps else ""),
                 fontsize=8)
    ax.grid(alpha=0.3, which="both", lw=0.4)
    ax.legend(fontsize=6.5, ncol=2)
    return _save(fig, out / f"lr_{_safe(inst.key)}.png")


def plot_profiles(res: Results, out: Path, tiers=("B", "A"), keep=None) -> list[tuple[Path, str]]:
    """Per tier and measure: AlgoPerf-style profiles on τ ∈ [1, 4] over the instances every optimizer ran
    (``keep(inst)``: which instances count, e.g. no counterexamples)."""
    plt = _plt()
    taus = np.linspace(1.0, 4.0, 301)
    paths = []
    for tier in tiers:
        for measure, title, what in (
            ("steps", "time to target", "median steps to reach each instance's target (fewer than half reach = ∞)"),
            ("final", "final value", "median final target metric (maximised: 1 + shortfall relative to the best)"),
        ):
            keys, ratios = analysis.profile_ratios(res, measure, tier, keep=keep)
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
    """The counterexamples' β2 sweeps: ``"<problem>, <budget>"`` -> {"problem", "budget", "rows": [(other
    settings, β2, arm label, ArmSummary)]}, one sweep per problem and budget over its instances (whatever their
    labels), with every optimizer's main arm and paper arms; only sweeps over at least two β2."""
    out: dict[str, dict[str, Any]] = {}
    for inst in res.instances:
        if "beta2" not in inst.params or not analysis.is_counterexample(inst):
            continue
        name = f"{inst.problem}, {_budget(inst)}"
        g = out.setdefault(name, {"problem": inst.problem, "budget": _budget(inst), "rows": []})
        other = tuple((k, v) for k, v in sorted(inst.params.items())
                      if k not in ("beta2", "beta1", "schedule", "chains"))
        for o in inst.optimizers:
            arms = [(o, res.main_arm(inst))] + sorted(
                (f"{o} {k[2]}", k[2]) for k in res.arms if k[0] == inst.key and k[1] == o
                and k[2].startswith(("paper:", "paper-lr:")))
            for label, arm_name in arms:
                arm = res.arm(inst.key, o, arm_name)
                if arm is not None and arm.n:
                    g["rows"].append((other, float(inst.params["beta2"]), label, arm))
    return {k: v for k, v in sorted(out.items()) if len({r[1] for r in v["rows"]}) >= 2}


def theta_outcome(res: Results, arm) -> tuple[float, str]:
    """(value, what): the median over the arm's seeds (and over each run's independent chains, where it has
    them) of θ's time average (``theta_avg``, stored by the counterexamples) or, without it, of the final θ
    (= gap − 1)."""
    chains = [v for v in analysis.chain_values(res, arm, "theta_avg") if math.isfinite(v)]
    if chains:
        return analysis.quantile(chains, 0.5), "time-averaged θ"
    avg = [analysis._metric(res.finals.get(h), "theta_avg") for h in arm.hashes]
    avg = [v for v in avg if math.isfinite(v)]
    if avg:
        return analysis.quantile(avg, 0.5), "time-averaged θ"
    final = [v - 1.0 for v in arm.values if math.isfinite(v)]
    return analysis.quantile(final, 0.5), "final θ"


def beta2_effects(res: Results) -> dict[tuple[str, str], list[tuple[float, Any]]]:
    """Tasks and toy problems with a β2 sweep: (problem and its other settings, optimizer) -> [(β2, main arm)],
    from instances that differ in their ``beta2`` setting alone (counterexamples apart); only ≥ 2 β2."""
    out: dict[tuple[str, str], list[tuple[float, Any]]] = {}
    for inst in res.instances:
        if "beta2" not in inst.params or analysis.is_counterexample(inst):
            continue
        other = ", ".join(f"{k}={v}" for k, v in sorted(inst.params.items()) if k != "beta2")
        name = f"{inst.problem}" + (f" ({other})" if other else "") + f", {_budget(inst)}"
        for o in inst.optimizers:
            arm = res.arm(inst.key, o, res.main_arm(inst))
            if arm is not None and arm.n:
                out.setdefault((name, o), []).append((float(inst.params["beta2"]), arm))
    return {k: sorted(v, key=lambda x: x[0]) for k, v in sorted(out.items()) if len({b for b, _ in v}) >= 2}


def plot_beta2(res: Results, out: Path) -> list[tuple[Path, str]]:
    """The β2 figures: per counterexample sweep, one small heat map per arm of its outcome over (setting, β2)
    with the value written in each cell; per task sweep, the final metric against β2 per optimizer."""
    plt = _plt()
    paths = []
    sweeps = beta2_sweeps(res)
    for name, data in sweeps.items():
        rows = data["rows"]
        labels = list(dict.fromkeys(r[2] for r in rows))
        others = sorted({r[0] for r in rows})
        betas = sorted({r[1] for r in rows})
        ncol = min(4, len(labels))
        nrow = math.ceil(len(labels) / ncol)
        fig, axes = plt.subplots(nrow, ncol, figsize=(0.75 * len(betas) * ncol + 1.8, 0.5 * len(others) * nrow
                                                      + 1.3 * nrow + 0.6), squeeze=False)
        what = "θ"
        image = None
        for ax in axes.flat[len(labels):]:
            ax.axis("off")
        for ax, label in zip(axes.flat, labels):
            grid = np.full((len(others), len(betas)), np.nan)
            for other, b, lab, arm in rows:
                if lab == label:
                    grid[others.index(other), betas.index(b)], what = theta_outcome(res, arm)
            image = ax.imshow(grid, cmap="RdYlGn_r", vmin=-1.0, vmax=1.0, aspect="auto")
            for i in range(len(others)):
                for j in range(len(betas)):
                    v = grid[i, j]
                    ax.text(j, i, "–" if math.isnan(v) else f"{v:+.2f}", ha="center", va="center", fontsize=7,
                            color="k")
            ax.set_xticks(range(len(betas)))
            ax.set_xticklabels([f"{b:g}" for b in betas], fontsize=7)
            ax.set_yticks(range(len(others)))
            ax.set_yticklabels([", ".join(f"{k}={v}" for k, v in o) or "–" for o in others], fontsize=7)
            ax.set_xlabel("β2", fontsize=7)
            ax.set_title(label, fontsize=8, color=_color(label.split(" ")[0]))
        fig.subplots_adjust(hspace=0.75, wspace=0.35)
        if image is not None:
            fig.colorbar(image, ax=list(axes.flat), shrink=0.8, label=f"{what} (−1: the optimum; 0: the start)")
        fig.suptitle(f"{name}: {what} per arm over (setting, β2), median over seeds (green: converges to −1)",
                     fontsize=9)
        budgets = sum(1 for d in sweeps.values() if d["problem"] == data["problem"])
        path = out / (f"beta2_{_safe(data['problem'])}.png" if budgets == 1 else
                      f"beta2_{_safe(data['problem'])}_{_safe(data['budget'])}.png")
        _save(fig, path, tight_box=True)
        paths.append((path, f"{name}: {what} per arm (one panel each: the optimizer's main arm and its paper arms) "
                            "over the problem's settings (rows) and β2 (columns), the median over seeds written in "
                            "each cell; −1 is the optimum, 0 the start, +1 the worst point."))
    effects = beta2_effects(res)
    if effects:
        names = list(dict.fromkeys(k[0] for k in effects))
        fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), squeeze=False)
        for ax, name in zip(axes.flat, names):
            metric = None
            for (n, o), pts in effects.items():
                if n != name:
                    continue
                q = [arm.quantiles() for _, arm in pts]
                xs = [b for b, _ in pts]
                ax.errorbar(xs, [m for _, m, _ in q], yerr=[[m - lo for lo, m, _ in q], [hi - m for _, m, hi in q]],
                            fmt="o-", color=_color(o), ms=4, capsize=2, label=o)
            ax.set_xscale("logit") if all(0 < b < 1 for (n, _), pts in effects.items() if n == name
                                          for b, _ in pts) else None
            ax.set_xlabel("β2")
            ax.set_ylabel("final target metric, median (25–75 %)")
            ax.set_title(name, fontsize=8)
            ax.grid(alpha=0.3, lw=0.4)
            ax.legend(fontsize=7)
        path = _save(fig, out / "beta2_tasks.png")
        paths.append((path, "The effect of β2 where the store has a β2 sweep outside the counterexamples: each "
                            "optimizer's median final target metric (25–75 % bar) against β2."))
    return paths


def _metric_label(metric: str) -> str:
    return {"gap": "suboptimality f − f*", "dist": "distance to the minimiser", "val_loss": "validation loss",
            "test_accuracy": "test accuracy", "test_bpc": "test bits per character", "test_auc": "test AUC",
            "fd": "Fréchet distance (lower is better)", "eval_return": "evaluation return (deterministic policy)",
            "modes_covered": "modes covered"}.get(
        metric, metric)


def _save(fig, path: Path, rect=None, tight_box: bool = False) -> Path:
    """Lay out, write and close a figure; returns its path. ``tight_box``: no layout pass, the saved box fitted
    to the drawing instead (figures with a shared colour bar)."""
    if tight_box:
        fig.savefig(path, bbox_inches="tight")
    else:
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


#: the colour of each verdict in the forest plot (firm for the claim: green; against it: red; none: grey)
VERDICT_COLORS = {"better": "#1a9641", "supported": "#1a9641", "equivalent": "#2c7bb6",
                  "worse": "#d7191c", "contradicted": "#d7191c", "inconclusive": "#777777",
                  "consistent at stand-in scale": "#a6d96a", "inconsistent at stand-in scale": "#fdae61",
                  "precondition not met": "#bbbbbb", "outside the claim's regime": "#bbbbbb"}


def verdict_color(verdict: str) -> str:
    return VERDICT_COLORS.get(verdict, "#777777")


def plot_forest(rows: list[dict[str, Any]], out: Path, name: str, title: str) -> Path | None:
    """A forest plot: per comparison (one line), the mean effect (> 0: the way the claim says) with its interval,
    coloured by the judge's verdict, the equivalence band ±band shaded; one panel per claim (each on its own
    scale: claims differ in metric), each paired difference a small grey dot on its line (so that a mean pulled by
    one collapsed seed shows; a dot beyond the panel's range, which the intervals and the band set, sits at its
    edge as a triangle). ``rows``: dicts with group, label, mean, low, high, band, verdict, deterministic (a
    point without an interval: n = 1) and optionally differences."""
    rows = [r for r in rows if r.get("mean") is not None and math.isfinite(r["mean"])]
    if not rows:
        return None
    plt = _plt()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    sizes = [sum(1 for r in rows if r["group"] == g) for g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8.6, 0.32 * sum(sizes) + 0.75 * len(groups) + 0.8),
                             gridspec_kw={"height_ratios": [s_ + 1.2 for s_ in sizes]}, squeeze=False)
    for ax, g in zip(axes[:, 0], groups):
        here = [r for r in rows if r["group"] == g]
        band = next((r["band"] for r in here if r.get("band")), None)
        if band:
            ax.axvspan(-band, band, color="#2c7bb6", alpha=0.12, lw=0)
        ax.axvline(0.0, color="#444444", lw=0.7)
        edges = [0.0] + ([-band, band] if band else []) + [
            v for r in here for v in (r["mean"], r.get("low"), r.get("high")) if v is not None and math.isfinite(v)]
        lo, hi = min(edges), max(edges)
        pad = 0.08 * (hi - lo or abs(hi) or 1.0)
        lo, hi = lo - pad, hi + pad
        for y, r in enumerate(here):
            c = verdict_color(r["verdict"])
            interval = (not r.get("deterministic") and r.get("low") is not None and r.get("high") is not None
                        and math.isfinite(r["low"]) and math.isfinite(r["high"]))
            diffs = np.array([d for d in r.get("differences") or () if math.isfinite(d)], float)
            if diffs.size and not r.get("deterministic"):
                ys = y + (np.linspace(-0.22, 0.22, diffs.size) if diffs.size > 1 else np.zeros(1))
                inside = (diffs >= lo) & (diffs <= hi)
                ax.plot(diffs[inside], ys[inside], ".", color="0.45", ms=2.5, zorder=1)
                for side, marker, edge in ((diffs < lo, "<", lo), (diffs > hi, ">", hi)):
                    if side.any():
                        ax.plot(np.full(int(side.sum()), edge), ys[side], marker, color="0.45", ms=3, zorder=1)
            if interval:
                ax.plot([r["low"], r["high"]], [y, y], color=c, lw=2.0, solid_capstyle="butt")
            ax.plot([r["mean"]], [y], "D" if r.get("deterministic") else "o", color=c, ms=5, mec="k", mew=0.4)
            ax.text(1.01, y, r["verdict"], transform=ax.get_yaxis_transform(), fontsize=7, va="center", color=c)
        ax.set_xlim(lo, hi)
        ax.set_yticks(range(len(here)))
        ax.set_yticklabels([r["label"] for r in here], fontsize=7)
        ax.set_ylim(len(here) - 0.5, -0.5)
        ax.set_title(g, fontsize=8, loc="left")
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3, lw=0.4, axis="x")
    axes[-1, 0].set_xlabel("effect (> 0: the way the claim says); bar: 95 % interval; grey dots: the paired "
                           "differences; shaded: the equivalence band; ◆: deterministic (n = 1)", fontsize=7.5)
    fig.suptitle(title, fontsize=9)
    return _save(fig, out / f"forest_{_safe(name)}.png", rect=(0, 0, 0.84, 0.98))


def plot_time_to_target(ttt, out: Path, tier: str) -> Path | None:
    """The time-to-target profile (:func:`adamkit.bench.analysis.time_to_target`): per optimizer, the share of
    instances reaching the reference target against the fraction of the budget."""
    if not ttt.instances:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for o, y in ttt.curves.items():
        ax.step(ttt.fractions, y, where="post", color=_color(o), lw=1.6,
                label=f"{o}: score {ttt.score(o):.2f}, at the end {y[-1]:.0%}")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("fraction of the budget (optimizer steps)")
    ax.set_ylabel("share of instances at the target")
    ax.set_title(f"Tier {tier}: time to the reference target ({ttt.reference}'s median final value), "
                 f"{len(ttt.instances)} instances", fontsize=9)
    ax.grid(alpha=0.3, lw=0.4)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, out / f"time_to_target_{tier}.png")
