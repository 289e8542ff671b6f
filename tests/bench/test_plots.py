"""The report's figures from small stores: the forest plot, the time-to-target profile (its numbers too), the
curves with the paper arms and a zoomed last third, the β2 heat maps (and a clean skip without a β2 sweep)."""
from __future__ import annotations

import numpy as np
import pytest

from _report_store import EVAL, RISE, STEPS, accuracy_curve, load, make_store
from adamkit.bench import analysis, plots
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.store import ResultStore
from adamkit.bench.suite import parse_suite
from adamkit.bench.sweep import run_sweep


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    return load(make_store(tmp_path_factory.mktemp("plots") / "r.sqlite"))


@pytest.fixture
def figures(monkeypatch):
    """Every figure saved, kept open for inspection: {file name: figure}."""
    kept = {}

    def save(fig, path, rect=None, tight_box=False):
        kept[path.name] = fig
        fig.savefig(path)
        return path
    monkeypatch.setattr(plots, "_save", save)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept.values():
        plt.close(fig)


def test_time_to_target_profile_on_reference_targets(res, tmp_path):
    ttt = analysis.time_to_target(res, "B")
    assert ttt.instances == ["fmnist_cnn", "fmnist_mlp"] and ttt.reference == "adam"
    adam = res.arm("fmnist_cnn", "adam", "fixed")
    assert ttt.targets["fmnist_cnn"] == pytest.approx(np.median(adam.values))  # Adam's median final value
    f = ttt.fractions
    # AGD's curve gets to its (higher) final value at RISE["agd"] of the budget: its first evaluation at or after
    # the point where it passes Adam's median; Adam reaches its own median only at the end, on the seeds at or
    # above it (3 of 5)
    steps, values = accuracy_curve("agd", 1000)
    first = next(s for s, v in zip(steps, values) if v >= ttt.targets["fmnist_cnn"]) / STEPS
    assert RISE["agd"] <= first < RISE["agd"] + EVAL / STEPS
    agd = ttt.curves["agd"]
    assert agd[f < first - 1e-9].max() == 0.0 and agd[f >= first].min() == 1.0
    share_at_end = np.mean([v >= ttt.targets["fmnist_cnn"] for v in adam.values])
    assert ttt.curves["adam"][-1] == pytest.approx(share_at_end) and ttt.curves["adam"][:-1].max() == 0.0
    assert ttt.score("agd") > ttt.score("adabelief") >= 0.0
    path = plots.plot_time_to_target(ttt, tmp_path, "B")
    assert path.name == "time_to_target_B.png" and path.stat().st_size > 1000


def test_counterexamples_never_count_in_the_time_to_target_profile(res):
    assert analysis.time_to_target(res, "B", keep=lambda inst: inst.key != "fmnist_mlp").instances == ["fmnist_cnn"]
    assert analysis.time_to_target(res, "A").instances == []


def test_forest_plot_one_panel_per_claim_with_band_and_deterministic_points(tmp_path, figures):
    rows = [{"group": "c1", "label": "a · tuned", "mean": 0.01, "low": 0.004, "high": 0.016, "band": 0.005,
             "verdict": "better", "deterministic": False},
            {"group": "c1", "label": "b · tuned", "mean": 0.001, "low": -0.002, "high": 0.004, "band": 0.005,
             "verdict": "equivalent", "deterministic": False},
            {"group": "c2", "label": "reddi · tuned", "mean": 1.5, "low": None, "high": None, "band": None,
             "verdict": "better", "deterministic": True}]
    path = plots.plot_forest(rows, tmp_path, "claims_B", "t")
    assert path.stat().st_size > 1000
    fig = figures["forest_claims_B.png"]
    first, second = fig.axes[:2]
    assert [t.get_text() for t in first.get_yticklabels()] == ["a · tuned", "b · tuned"]
    assert first.patches and first.patches[0].get_facecolor()[:3] == pytest.approx((0x2c / 255, 0x7b / 255, 0xb6 / 255))
    intervals = [line for line in first.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] != 0.0]
    assert len(intervals) == 2  # an interval per comparison
    assert not [line for line in second.get_lines() if len(line.get_xdata()) == 2 and line.get_xdata()[0] == 1.5]
    assert plots.plot_forest([], tmp_path, "empty", "t") is None


def test_forest_plot_draws_each_paired_difference_and_a_collapsed_one_at_the_edge(tmp_path, figures):
    """Per comparison its paired differences as dots (a mean pulled by one collapsed seed shows); the panel's
    range comes from the intervals and the band, so one far-off difference sits at the edge as a triangle and
    does not squash the intervals; a deterministic point draws no dots."""
    diffs = (0.004, 0.006, 0.005, 0.007, 0.003, 0.006, 0.005, 0.004, 0.006, -0.6)  # the last seed collapsed
    rows = [{"group": "c1", "label": "a · tuned", "mean": float(np.mean(diffs)), "low": -0.11, "high": 0.02,
             "band": 0.005, "verdict": "inconclusive", "deterministic": False, "differences": diffs},
            {"group": "c1", "label": "b · tuned", "mean": 0.001, "low": -0.002, "high": 0.004, "band": 0.005,
             "verdict": "equivalent", "deterministic": False, "differences": (0.001, 0.0, 0.002)},
            {"group": "c2", "label": "reddi · tuned", "mean": 1.5, "low": None, "high": None, "band": None,
             "verdict": "better", "deterministic": True, "differences": (1.5,)}]
    plots.plot_forest(rows, tmp_path, "dots", "t")
    first, second = figures["forest_dots.png"].axes[:2]
    lo, hi = first.get_xlim()
    assert lo < -0.11 and hi > 0.02 and lo > -0.6  # set by the intervals and the band, not by the collapsed seed
    dots = [line for line in first.get_lines() if line.get_marker() == "."]
    assert sorted(x for line in dots for x in line.get_xdata()) == pytest.approx(sorted(diffs[:-1] + (0.001, 0.0, 0.002)))
    edge, = [line for line in first.get_lines() if line.get_marker() == "<"]
    assert list(edge.get_xdata()) == pytest.approx([lo])
    assert not [line for line in second.get_lines() if line.get_marker() in (".", "<", ">")]


def test_curves_draw_the_paper_arms_and_a_zoomed_last_third(res, tmp_path, figures):
    inst = res.instance("fmnist_cnn")
    main = res.arm("fmnist_cnn", "adabelief", "fixed")
    # the paper arms as the planner names them (their runs: here the main arm's, for the drawing)
    res.arms[("fmnist_cnn", "adabelief", "paper:cnn")] = main
    res.arms[("fmnist_cnn", "adabelief", "paper-lr:cnn")] = main
    try:
        assert plots.curve_arms(res, inst)[-3:] == [("adabelief", "fixed", "-"), ("adabelief", "paper-lr:cnn", ":"),
                                                    ("adabelief", "paper:cnn", "--")]
        assert plots.plot_curves(res, inst, tmp_path).name == "curve_fmnist_cnn.png"
        assert plots.plot_train_loss(res, inst, tmp_path).name == "train_fmnist_cnn.png"
    finally:
        del res.arms[("fmnist_cnn", "adabelief", "paper:cnn")], res.arms[("fmnist_cnn", "adabelief", "paper-lr:cnn")]
    for name in ("curve_fmnist_cnn.png", "train_fmnist_cnn.png"):
        whole, zoom = figures[name].axes
        labels = [line.get_label() for line in whole.get_lines()]
        assert any(label.startswith("adabelief paper:cnn") for label in labels)
        assert any(label.startswith("adabelief paper-lr:cnn") for label in labels)
        styles = {line.get_label().split(" (")[0]: line.get_linestyle() for line in whole.get_lines()}
        assert styles["adabelief paper:cnn"] == "--" and styles["adabelief paper-lr:cnn"] == ":"
        lo, hi = zoom.get_xlim()
        assert lo == pytest.approx(STEPS * 2 / 3 - 0.02 * STEPS) and hi == pytest.approx(STEPS * 1.02)
    # the zoomed panel's y-range fits the last third: narrower than the whole run's (which starts untrained)
    whole, zoom = figures["curve_fmnist_cnn.png"].axes
    assert np.diff(zoom.get_ylim())[0] < np.diff(whole.get_ylim())[0] / 2


def _swept(spec: dict, path):
    """The results of ``spec`` (a suite as a dict) really run into the store ``path``."""
    store = ResultStore(path)
    run_sweep(parse_suite(spec), store, LocalExecutor(1))
    store.close()
    return load(path)


@pytest.fixture(scope="module")
def counter(tmp_path_factory):
    """ADOPT's counterexample over (k, β2), two optimizers and ADOPT's unclipped paper arm, really run (short)."""
    return _swept({"name": "b2", "optimizers": ["adam", "adopt"], "protocol": {"final_seeds": [1000]},
                   "problems": [{"name": "adopt_counterexample", "grid": {"k": [10, 50], "beta2": [0.1, 0.9]},
                                 "params": {"schedule": "constant"}, "steps": 200, "eval_every": 50,
                                 "tune": False, "hparams": {"lr": 0.01}}]},
                  tmp_path_factory.mktemp("b2") / "r.sqlite")


def test_beta2_heat_map_per_arm_over_k_and_beta2(counter, tmp_path, figures):
    sweeps = plots.beta2_sweeps(counter)
    assert list(sweeps) == ["adopt_counterexample, 200 steps"]  # one budget: beta2_adopt_counterexample.png
    rows = sweeps["adopt_counterexample, 200 steps"]["rows"]
    assert {(dict(r[0])["k"], r[1]) for r in rows} == {(10, 0.1), (10, 0.9), (50, 0.1), (50, 0.9)}
    (path, caption), = plots.plot_beta2(counter, tmp_path)
    assert path.name == "beta2_adopt_counterexample.png" and path.stat().st_size > 1000 and "time-averaged θ" in caption
    labels = list(dict.fromkeys(r[2] for r in rows))
    assert labels[:1] == ["adam"] and "adopt" in labels
    # each panel is one arm's heat map: rows k, columns β2, each cell that arm's outcome there
    panels = [ax for ax in figures[path.name].axes if ax.images]
    assert [ax.get_title() for ax in panels] == labels
    for ax, label in zip(panels, labels):
        grid = np.asarray(ax.images[0].get_array())
        assert grid.shape == (2, 2)
        for other, b, lab, arm in rows:
            if lab == label:
                value, what = plots.theta_outcome(counter, arm)
                assert what == "time-averaged θ" and -1.0 <= value <= 1.0
                assert grid[[10, 50].index(dict(other)["k"]), [0.1, 0.9].index(b)] == pytest.approx(value)


def test_a_run_of_independent_chains_is_summarised_chain_by_chain(tmp_path):
    """The counterexamples' outcome table and β2 cells take the median over every chain of every seed, and
    'reached' counts chains, not runs (one run of 4 chains is 4 outcomes, not 1)."""
    from adamkit.bench import report

    res = _swept({"name": "ch", "optimizers": ["adam"], "protocol": {"final_seeds": [1000, 1001]},
                  "problems": [{"name": "adopt_counterexample", "params": {"k": 10, "beta2": 0.9, "chains": 4},
                                "steps": 300, "eval_every": 100, "tune": False, "hparams": {"lr": 0.05}}]},
                 tmp_path / "r.sqlite")
    inst = res.instances[0]
    arm = res.arm(inst.key, "adam", res.main_arm(inst))
    per_chain = analysis.chain_values(res, arm, "theta_avg")
    assert len(per_chain) == 8 and len(set(per_chain)) > 1  # 2 seeds x 4 chains, each its own stream
    value, what = plots.theta_outcome(res, arm)
    assert what == "time-averaged θ" and value == pytest.approx(float(np.median(per_chain)))
    finals = analysis.chain_values(res, arm, "theta")
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=None) / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith(f"| {inst.key} | adam |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[-1] == "2 × 4 chains"
    assert cells[-2] == f"{float(np.median(analysis.chain_values(res, arm, 'share_end'))):.0%}"
    assert cells[-3] == f"{sum(v <= -0.5 for v in finals) / 8:.0%}"
    assert cells[-4].startswith(plots._fmt(value))


def test_an_arm_that_jumps_between_the_ends_is_told_apart_from_one_that_settles(tmp_path):
    """Reddi's problem runs at β1 = 0, where AdaBelief's belief (g − m)² is 0: its denominator is √(ε/(1 − β2))
    and θ jumps from end to end. Its last iterate can sit at −1 ('reached') while a third of its steps are there:
    the outcome table says so beside it, from each run's ``share_end``, and the counterexamples' score does not
    count it solved."""
    from adamkit.bench import report

    res = _swept({"name": "bang", "optimizers": ["adam", "adabelief"], "protocol": {"final_seeds": [1000]},
                  "problems": [{"name": "reddi_counterexample", "params": {"beta2": 0.9}, "steps": 301,
                                "eval_every": 100, "tune": False, "hparams": {"lr": 0.1}}]},
                 tmp_path / "r.sqlite")
    inst = res.instances[0]
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=None) / "report.md").read_text()
    for o in ("adam", "adabelief"):
        arm = res.arm(inst.key, o, res.main_arm(inst))
        (final,) = [res.finals[h] for h in arm.hashes]
        row = next(line for line in md.splitlines() if line.startswith(f"| {inst.key} | {o} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[-2] == f"{final['share_end']:.0%}"
    assert final["theta"] == -1.0 and final["share_end"] < 0.5 and final["theta_avg"] > 0  # adabelief, jumping
    # nor is it scored as solving the problem: the counterexamples' score reads the time-averaged θ
    assert report.counterexamples_solved(res)["adabelief"] == (0, 1)
    row = next(line for line in md.splitlines() if line.startswith("| counterexamples (fixed rate) |"))
    assert "adabelief 0 of 1" in row


def test_without_a_beta2_sweep_the_report_says_so(counter, tmp_path):
    from adamkit.bench import report

    res = _swept({"name": "b1", "optimizers": ["adam"], "protocol": {"final_seeds": [1000]},
                  "problems": [{"name": "reddi_counterexample", "steps": 30, "tune": False, "hparams": {"lr": 0.01}}]},
                 tmp_path / "r.sqlite")
    assert plots.beta2_sweeps(res) == {} and plots.plot_beta2(res, tmp_path) == []
    md = (report.write_report(tmp_path / "r.sqlite", tmp_path / "rep", log=None) / "report.md").read_text()
    assert "This store has no β2 sweep" in md and "## Counterexamples (fixed-rate toy problems)" in md


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """AdaBelief's toy-speed problem |x|+|y| selected on steps to its target, with the claim's paper arm
    (``adabelief@toy``: tuned as its own, and at the paper's rate)."""
    return _swept({"name": "s", "optimizers": ["adam", "adabelief"], "protocol": {"trials": 8, "final_seeds": [1000, 1001]},
                   "problems": [{"name": "abs_sum", "steps": 300, "eval_every": 10,
                                 "selection_metric": "steps_to_target"}]},
                  tmp_path_factory.mktemp("toy") / "r.sqlite")


def test_lr_sensitivity_of_a_steps_to_target_instance_plots_its_selection_scores(toy, tmp_path, figures):
    """An instance selected on steps to its target gets its learning-rate figure: every tuning run at its
    steps score (the protocol's own), the budget drawn dashed, runs that never reach the target above it."""
    res = toy
    inst = res.instance("abs_sum")
    path = plots.plot_lr_sensitivity(res, inst, tmp_path)
    assert path is not None and path.name == "lr_abs_sum.png"
    ax = figures[path.name].axes[0]
    assert ax.get_ylabel().startswith("steps to ")
    budget = [line for line in ax.get_lines() if list(line.get_ydata()) == [300, 300]]
    scores = {r.hash: res.lookup.steps_score(r.hash, inst) for o in inst.optimizers for r in res.tuning_runs("abs_sum", o)}
    low, high = ax.get_ylim()
    assert any(s < 300 for s in scores.values()) and any(s > 300 for s in scores.values())  # both kinds in this sweep
    assert len(budget) == 1 or not low < 300 < high
    # the grid runs' dots are their steps scores, clipped to the range
    drawn = sorted(float(y) for coll in ax.collections for _, y in coll.get_offsets())
    grid = {r.hash for o in inst.optimizers for r in res.tuning_runs("abs_sum", o)
            if next(k for t, _, k in res.searches[("abs_sum", o)].candidates if t == r.trial) == "grid"}
    expected = sorted(min(max(scores[h], low), high) for h in grid)
    assert drawn == pytest.approx(expected)


def test_trajectories_draw_every_arm_the_toy_claim_uses_with_time_marks(toy, tmp_path, figures):
    """A panel per arm of the curve figures (the paper configuration the toy-speed verdict uses included), each
    seed's path with a dot at each tenth of the budget, and the arm's median steps to the target in its title."""
    res = toy
    inst = res.instance("abs_sum")
    arms = plots.curve_arms(res, inst)
    assert ("adabelief", "paper:toy", "--") in arms and ("adam", "tuned", "-") in arms
    path = plots.plot_trajectories(res, inst, tmp_path)
    panels = [ax for ax in figures[path.name].axes if ax.axison]
    assert len(panels) == len(arms)
    for ax, (o, arm_name, _) in zip(panels, arms):
        arm = res.arm("abs_sum", o, arm_name)
        assert ax.get_title().startswith(plots._arm_label(res, inst, o, arm_name) + "\n")
        reach = np.mean([np.isfinite(v) for v in arm.steps_to_target])
        assert f"reach gap ≤ 0.01: {reach:.0%}" in ax.get_title() and f"end there: {arm.converged:.0%}" in ax.get_title()
        if np.isfinite(arm.median_steps):
            assert f"(median step {plots._fmt(arm.median_steps)})" in ax.get_title()
        marks = [line for line in ax.get_lines() if line.get_marker() == "."]
        assert len(marks) == len(arm.seeds)  # one set of time marks per path
        for line, h in zip(marks, arm.hashes):
            steps = np.array(res.store.curve(h)["step"], float)
            # the marks sit at the first evaluation at or after each tenth of the 300 steps
            want = sorted({int(np.searchsorted(steps, k * 30)) for k in range(1, 10)} - {steps.size})
            assert list(line.get_xdata()) == pytest.approx(list(np.array(res.store.curve(h)["x"], float)[want]))


def test_the_ring_gan_keeps_its_final_samples_and_the_report_draws_them_per_arm(tmp_path, figures):
    """gan_ring8 keeps 200 of its final evaluation's samples (final metrics only, not the curve); the samples
    figure draws, per arm (the paper configuration included), those of the arm's median seed over the modes."""
    res = _swept({"name": "g", "optimizers": ["adam", "adabelief"], "protocol": {"final_seeds": [1000, 1001, 1002]},
                  "tasks": [{"name": "gan_ring8", "steps": 40, "eval_every": 20, "tune": False}]}, tmp_path / "r.sqlite")
    inst = res.instance("gan_ring8")
    some = res.arm("gan_ring8", "adam", "fixed").hashes[0]
    assert len(res.finals[some]["samples_xy"]) == 400 and "samples_xy" not in res.store.curve(some)
    path = plots.plot_samples(res, inst, tmp_path)
    assert path.name == "samples_gan_ring8.png"
    arms = [(o, a) for o, a, _ in plots.curve_arms(res, inst)]
    assert ("adabelief", "paper:gan") in arms
    panels = [ax for ax in figures[path.name].axes if ax.axison]
    assert len(panels) == len(arms)
    for ax, (o, a) in zip(panels, arms):
        arm = res.arm("gan_ring8", o, a)
        median_seed_value = sorted(arm.values)[1]  # of 3 seeds
        assert ax.get_title().startswith(plots._arm_label(res, inst, o, a) + f"\nfd {plots._fmt(median_seed_value)}")
        h = arm.hashes[arm.values.index(median_seed_value)]
        xy = np.array(res.finals[h]["samples_xy"]).reshape(-1, 2)
        dots, = [line for line in ax.get_lines() if line.get_marker() == "."]
        inside = np.all(np.abs(xy) <= ax.get_xlim()[1] + 1e-12, axis=1)
        assert list(dots.get_xdata()) == pytest.approx(list(xy[inside, 0]))
    # a task without kept samples draws no such figure
    other = load(make_store(tmp_path / "other.sqlite"))
    assert plots.plot_samples(other, other.instance("fmnist_cnn"), tmp_path) is None


def test_a_fashion_gan_keeps_its_final_images_and_the_report_draws_them_per_arm(tmp_path, figures):
    """A Fashion-MNIST GAN keeps 8 of its final evaluation's images as grey levels 0–255 (final metrics only);
    the samples figure shows, per arm, the grid of those of the arm's median seed."""
    params = {"synthetic": True, "width": 8, "eval_samples": 100, "classifier_steps": 3, "ref_size": 100,
              "n_critic": 2}
    res = _swept({"name": "w", "optimizers": ["adam", "adabelief"], "protocol": {"final_seeds": [1000, 1001, 1002]},
                  "tasks": [{"name": "wgan_clip_fmnist", "steps": 4, "eval_every": 2, "tune": False,
                             "params": params}]}, tmp_path / "r.sqlite")
    inst = res.instance("wgan_clip_fmnist")
    some = res.arm(inst.key, "adam", "fixed").hashes[0]
    grey = np.array(res.finals[some]["samples_images"])
    assert grey.size == 8 * 28 * 28 and "samples_images" not in res.store.curve(some)
    assert np.all((grey >= 0) & (grey <= 255) & (grey == np.round(grey))) and grey.std() > 0
    path = plots.plot_samples(res, inst, tmp_path)
    assert path.name == "samples_wgan_clip_fmnist.png"
    arms = [(o, a) for o, a, _ in plots.curve_arms(res, inst)]
    panels = [ax for ax in figures[path.name].axes if ax.get_images()]
    assert len(panels) == len(arms) >= 2
    for ax, (o, a) in zip(panels, arms):
        arm = res.arm(inst.key, o, a)
        median_seed_value = sorted(arm.values)[1]  # of 3 seeds
        assert ax.get_title().startswith(plots._arm_label(res, inst, o, a) + f"\nfd {plots._fmt(median_seed_value)}")
        h = arm.hashes[arm.values.index(median_seed_value)]
        drawn = np.ma.filled(ax.get_images()[0].get_array(), np.nan)
        np.testing.assert_array_equal(drawn, plots.image_grid(res.finals[h]["samples_images"]))


def test_an_image_grid_places_each_image_with_a_blank_line_between():
    images = np.arange(5 * 4, dtype=float).repeat(1).reshape(5, 2, 2)  # 5 images of 2×2, values 0..19
    grid = plots.image_grid(images.reshape(-1).tolist(), columns=3, side=2)
    assert grid.shape == (2 * 3 - 1, 3 * 3 - 1)
    for i, image in enumerate(images):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(grid[3 * r:3 * r + 2, 3 * c:3 * c + 2], image)
    assert np.isnan(grid[2, :]).all() and np.isnan(grid[:, 2]).all() and np.isnan(grid[:, 5]).all()
    assert np.isnan(grid[3:, 6:]).all()  # the sixth slot: no image
