"""Tier B tasks: one very short run of every task (real data when present, else skipped with the
command that fetches it), the same on the tiny synthetic fallbacks (always), and behaviour checks."""
import math

import numpy as np
import pytest
import torch

import adamkit
from adamkit.bench.data import store
from adamkit.bench.registry import create_problem, list_problems

#: task -> (steps, params of a very short run, optimizer hyperparameters)
SMOKE = {
    "fmnist_mlp": (20, {"eval_size": 500}),
    "fmnist_mlp_nodecay": (10, {"eval_size": 500}),
    "fmnist_cnn": (8, {"eval_size": 300}),
    "fmnist_cnn_nodecay": (4, {"eval_size": 300}),
    "digits_mlp": (20, {}),
    "mnist1d_mlp": (20, {"eval_size": 500}),
    "mnist1d_cnn": (20, {"eval_size": 500}),
    "char_lstm1": (4, {"eval_chars": 2000, "hidden": 32}),
    "char_lstm2": (3, {"eval_chars": 2000, "hidden": 32}),
    "tiny_gpt_b8": (4, {"eval_chars": 2000}),
    "tiny_gpt_b64": (3, {"eval_chars": 2000}),
    "fm_movielens": (10, {}),
    "deepfm_movielens": (10, {}),
    "fm_synthetic_ctr": (5, {"n_train": 5000, "n_eval": 2000}),
    "deepfm_synthetic_ctr": (5, {"n_train": 5000, "n_eval": 2000}),
    "cartpole_ppo": (3, {"rollout": 128, "minibatch": 64, "eval_episodes": 1}),
    "pendulum_ppo": (2, {"rollout": 128, "minibatch": 64, "eval_episodes": 1}),
    "dcgan_fmnist": (2, {"width": 8, "eval_samples": 200, "classifier_steps": 30, "ref_size": 1000}),
    "wgan_fmnist": (1, {"width": 8, "eval_samples": 200, "classifier_steps": 30, "ref_size": 1000, "n_critic": 2}),
    "gan_ring8": (10, {"eval_samples": 500}),
    "fmnist_resnet": (4, {"eval_size": 300}),
    "fmnist_resnet_nodecay": (2, {"eval_size": 300}),
    "vae_fmnist": (5, {"eval_size": 500}),
    "gpt_noclip_b8": (3, {"eval_chars": 1000}),
    "gpt_noclip_b64": (2, {"eval_chars": 1000}),
    "word_lstm1": (3, {"eval_tokens": 1000}),
    "word_lstm2": (2, {"eval_tokens": 1000}),
    "word_lstm3": (2, {"eval_tokens": 1000}),
    "fm_criteo": (3, {"n_train": 5000, "n_eval": 2000, "buckets": 1000}),
    "deepfm_criteo": (3, {"n_train": 5000, "n_eval": 2000, "buckets": 1000}),
    "halfcheetah_ppo": (2, {"rollout": 128, "minibatch": 64, "eval_episodes": 1}),
    "hopper_ppo": (2, {"rollout": 128, "minibatch": 64, "eval_episodes": 1}),
    "fmnist_resnet_wd_aug": (2, {"eval_size": 300, "depth": 8}),
    "wgan_clip_fmnist": (1, {"width": 8, "eval_samples": 200, "classifier_steps": 30, "ref_size": 1000, "n_critic": 2}),
}

#: tasks that need the mujoco wheel (the `tasks` extra); skipped without it
MUJOCO = {"halfcheetah_ppo", "hopper_ppo"}


def _needs(name):
    if name in MUJOCO:
        pytest.importorskip("mujoco", reason=f"{name} needs the mujoco wheel: pip install 'adamkit[tasks]'")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The runner trains with one thread; so do these tests (the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_task_is_registered_and_smoked():
    tasks = set(list_problems("B"))
    assert set(SMOKE) <= tasks
    assert not (tasks - set(SMOKE)), f"tasks without a smoke run: {tasks - set(SMOKE)}"


def run(name, steps, params, seed=0, optimizer="adam", **hparams):
    torch.manual_seed(seed)
    problem = create_problem(name, params)
    instance = problem.make(seed)
    hp = {**problem.optimizer_overrides(optimizer), **hparams}
    opt = adamkit.create_optimizer(optimizer, instance.parameters(), **hp)
    scheduler = instance.lr_scheduler(opt, steps)
    first = instance.evaluate()
    losses = []
    for step in range(steps):
        losses.append(instance.train_step(opt, step))
        if scheduler is not None:
            scheduler.step()
    return problem, instance, first, instance.evaluate(), losses, opt


def _check(name, problem, first, last, losses):
    assert problem.tier == "B"
    assert all(math.isfinite(x) for x in losses), losses
    assert problem.selection_metric in last and problem.selection_metric in first
    # a float per metric, or a list of floats for what only the final metrics keep (``<metric>_chains``, the ring
    # GAN's ``samples_xy``)
    assert all(isinstance(v, float) or (isinstance(v, list) and all(isinstance(x, float) for x in v))
               for v in last.values())
    assert isinstance(last[problem.selection_metric], float)
    assert math.isfinite(last[problem.selection_metric])


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_short_run_on_real_data(name):
    _needs(name)
    for artefact in store.artefacts_for(name):
        if store.status(artefact) == "missing":
            pytest.skip(f"{artefact} not in {store.cache_dir()}; fetch it with: adamkit data prepare {name}")
    steps, params = SMOKE[name]
    problem, _, first, last, losses, _ = run(name, steps, params)
    _check(name, problem, first, last, losses)


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_short_run_on_synthetic_fallback(name, tmp_path, monkeypatch):
    _needs(name)
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path))  # empty cache: only the fallback can work
    steps, params = SMOKE[name]
    problem, _, first, last, losses, _ = run(name, 2, {**params, "synthetic": True})
    _check(name, problem, first, last, losses)
    assert problem.config()["synthetic"] is True  # synthetic runs are labelled


def test_unknown_task_argument():
    with pytest.raises(ValueError, match="unknown argument"):
        create_problem("digits_mlp", {"no_such_option": 1})


def test_same_seed_same_run():
    a = run("digits_mlp", 15, {})[4]
    b = run("digits_mlp", 15, {})[4]
    c = run("digits_mlp", 15, {}, seed=1)[4]
    assert a == b and a != c


def test_digits_mlp_learns_and_decays_lr():
    _, inst, first, last, _, opt = run("digits_mlp", 120, {}, lr=3e-3)
    assert first["val_accuracy"] < 0.3 and last["val_accuracy"] > 0.85 and last["test_accuracy"] > 0.85
    assert math.isclose(opt.param_groups[0]["lr"], 3e-4)  # x0.1 at 75% of training


def test_nodecay_variant_keeps_lr():
    _, _, _, _, _, opt = run("fmnist_mlp_nodecay", 4, {"synthetic": True, "eval_size": 100}, lr=3e-3)
    assert opt.param_groups[0]["lr"] == 3e-3


def test_gan_trains_two_optimizers_of_the_same_kind():
    _, inst, _, _, _, opt = run("gan_ring8", 5, {"eval_samples": 200}, optimizer="adabelief", lr=1e-3)
    assert type(inst.d_opt) is type(opt) and inst.d_opt is not opt
    assert inst.d_opt.param_groups[0]["betas"] == (0.5, 0.999) == opt.param_groups[0]["betas"]
    d_params = {id(p) for p in inst.D.parameters()}
    assert d_params.isdisjoint(id(p) for p in inst.parameters())
    assert all(len(inst.d_opt.state[p]) > 0 for p in inst.D.parameters())


def test_gan_uses_a_factory_when_the_runner_gives_one():
    problem = create_problem("gan_ring8", {"eval_samples": 200})
    inst = problem.make(0)
    built = []
    inst.optimizer_factory = lambda params: built.append(1) or adamkit.AdamW(params, lr=1e-3)
    inst.train_step(adamkit.AdamW(inst.parameters(), lr=1e-3), 0)
    assert built == [1] and isinstance(inst.d_opt, adamkit.AdamW)


def test_synthetic_ctr_reports_the_planted_optimum():
    _, _, _, last, _, _ = run("fm_synthetic_ctr", 60, {"n_train": 20000, "n_eval": 5000}, lr=1e-2)
    assert 0.8 < last["best_test_auc"] < 0.95
    assert 0.55 < last["test_auc"] < last["best_test_auc"]
    assert math.isclose(last["auc_gap"], last["best_test_auc"] - last["test_auc"])


def test_cartpole_ppo_improves():
    _, _, first, last, _, _ = run("cartpole_ppo", 64, {"rollout": 256, "minibatch": 64, "eval_episodes": 1}, lr=3e-3)
    assert last["train_return"] > 35 and last["env_steps"] == 256 * 4


# ----------------------------------------------------------------------------- issue 14 item 13: derived models

def _classifier(data_dir):
    from adamkit.bench.tasks import gan

    gan._FEATURES.clear()  # a new process, as far as the cache is concerned
    return gan.feature_classifier(data_dir, synthetic=True, steps=3, ref_size=100)


def test_a_damaged_cached_gan_classifier_is_detected_and_retrained(tmp_path):
    from adamkit import _integrity

    _, mu, _, accuracy = _classifier(tmp_path)
    path = tmp_path / "derived" / "fmnist_classifier_v1_s3_synthetic.pt"
    assert path.is_file() and _integrity.problem(path) is None, "written with its size+hash record"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # truncated
    with pytest.warns(RuntimeWarning, match=f"retraining the GAN feature classifier: {path}.*truncated"):
        _, mu2, _, accuracy2 = _classifier(tmp_path)  # no torch zip error: retrained
    assert accuracy2 == accuracy and (mu2 == mu).all()
    assert _integrity.problem(path) is None, "the retrained classifier replaced the damaged file"
    path.write_bytes(bytes(len(raw)))  # same size, garbage
    with pytest.warns(RuntimeWarning, match="changed since it was written"):
        _, mu3, _, _ = _classifier(tmp_path)
    assert (mu3 == mu).all() and _integrity.problem(path) is None


def test_a_read_only_data_cache_does_not_lose_a_gan_run(tmp_path, monkeypatch):
    from _faults import read_only  # tests/ is on the path (pyproject: pythonpath)

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    with read_only(tmp_path / "data") as data:
        _, mu, _, _ = _classifier(data)  # trained, cached in the user cache instead
        fallback = tmp_path / "user-cache" / "adamkit" / "derived" / "fmnist_classifier_v1_s3_synthetic.pt"
        assert fallback.is_file() and not (data / "derived").exists()
        mtime = fallback.stat().st_mtime_ns
        _, mu2, _, _ = _classifier(data)
        assert (mu2 == mu).all() and fallback.stat().st_mtime_ns == mtime, "found there, not retrained"
        # a whole GAN run on the read-only cache
        _, _, _, last, losses, _ = run("dcgan_fmnist", 2, {"width": 8, "eval_samples": 200, "classifier_steps": 3,
                                                           "ref_size": 100, "synthetic": True, "data_dir": str(data)})
        assert math.isfinite(last["fd"]) and all(math.isfinite(v) for v in losses)
    with read_only(tmp_path / "nowhere") as nowhere:  # no writable cache at all: trained and kept in memory
        monkeypatch.setenv("XDG_CACHE_HOME", str(nowhere))
        with pytest.warns(RuntimeWarning, match="kept in memory"):
            _, mu3, _, _ = _classifier(nowhere)
        assert (mu3 == mu).all() and not any(nowhere.iterdir())


def test_spike_counter_rule():
    from adamkit.bench.tasks._common import SpikeCounter

    counter = SpikeCounter(window=5, factor=1.3)
    for loss in [2.0, 2.1, 1.9, 2.0, 2.0]:  # fills the window: nothing counts yet
        counter.add(loss)
    assert counter.spikes == 0
    counter.add(2.5)  # 2.5 < 1.3 x median 2.0 = 2.6: not a spike
    assert counter.spikes == 0 and counter.max_ratio == pytest.approx(1.25)
    counter.add(2.7)  # > 2.6
    counter.add(float("nan"))  # a non-finite loss always counts
    assert counter.spikes == 2 and counter.max_ratio == pytest.approx(2.7 / 2.0)
    with pytest.raises(ValueError, match="spike_factor"):
        SpikeCounter(window=5, factor=1.0)


def test_stability_gpt_never_clips_gradients(monkeypatch):
    with pytest.raises(ValueError, match="without gradient clipping"):
        create_problem("gpt_noclip_b8", {"clip": 1.0})
    problem = create_problem("gpt_noclip_b8", {"synthetic": True, "eval_chars": 500})
    assert problem.config()["clip"] == 0.0 and problem.batch_size == 8
    assert create_problem("gpt_noclip_b64", {"synthetic": True}).batch_size == 64

    def no_clipping(*args, **kwargs):
        raise AssertionError("gradient clipping was called")

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", no_clipping)
    inst = problem.make(0)
    assert 0.7e6 < sum(p.numel() for p in inst.parameters()) < 1.2e6  # about 1 M parameters (synthetic vocab)
    opt = adamkit.Adam(inst.parameters(), lr=1e-3)
    losses = [inst.train_step(opt, s) for s in range(3)]
    assert all(math.isfinite(x) for x in losses) and "loss_spikes" in inst.evaluate()


def test_small_resnet_has_batch_norm_and_a_residual_block():
    from adamkit.bench.tasks.vision import ResidualBlock, small_resnet

    net = small_resnet(16)
    assert sum(p.numel() for p in net.parameters()) == 225_530
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, ResidualBlock) for m in net.modules())
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    _, _, _, _, _, opt = run("fmnist_resnet", 4, {"synthetic": True, "eval_size": 100}, lr=3e-3)
    assert math.isclose(opt.param_groups[0]["lr"], 3e-4)  # the late decay
    _, _, _, _, _, opt = run("fmnist_resnet_nodecay", 4, {"synthetic": True, "eval_size": 100}, lr=3e-3)
    assert opt.param_groups[0]["lr"] == 3e-3


def test_vae_neg_elbo_is_per_image_and_falls():
    _, inst, first, last, losses, _ = run("vae_fmnist", 40, {"synthetic": True}, lr=3e-3)
    assert first["val_neg_elbo"] > last["val_neg_elbo"] and first["test_neg_elbo"] > last["test_neg_elbo"]
    assert 100 < first["val_neg_elbo"] < 784 * 1.0  # nats per 784-pixel image, about 543 (784 ln 2) at the start
    assert inst.evaluate() == inst.evaluate()  # fixed evaluation noise: the same parameters, the same value


def test_word_tokens_and_vocabulary():
    from adamkit.bench.tasks.wordlm import tokenize

    assert tokenize("Thou art, my Lord.\n\n  O'er the hill!") == [
        "thou", "art", ",", "my", "lord", ".", "<eos>", "o'er", "the", "hill", "!", "<eos>"]
    problem = create_problem("word_lstm2", {"synthetic": True, "vocab_size": 8, "eval_tokens": 200})
    inst = problem.make(0)
    assert inst.vocab == 8 and int(inst.train.max()) < 8 and inst.train.shape[0] == 20  # 20 BPTT streams
    assert inst.model.lstm.num_layers == 2 and inst.model.decoder.weight is inst.model.embed.weight  # tied
    opt = adamkit.Adam(inst.parameters(), lr=1e-2)
    state_before = inst.state
    inst.train_step(opt, 0)
    assert state_before is None and inst.state is not None and inst.pos == inst.pos  # state carried (truncated BPTT)
    assert 1 < inst.evaluate()["val_ppl"] < 8 * 2


def test_criteo_shaped_log():
    from adamkit.bench.data.generated import criteo_cardinalities, synthetic_criteo
    from adamkit.bench.tasks._common import roc_auc

    x_cat, x_num, y, p = synthetic_criteo(20_000, buckets=1000, seed=5)
    assert x_cat.shape == (20_000, 26) and x_num.shape == (20_000, 13)
    assert ((x_cat // 1000) == np.arange(26)).all()  # field f uses buckets [f*1000, (f+1)*1000)
    assert (x_num >= 0).all() and (x_num == 0).mean() > 0.2  # missing values (20%) are 0
    assert 0.18 < y.mean() < 0.34  # Criteo's click rate is about 26%
    assert 0.75 < roc_auc(y, p) < 0.95
    card = criteo_cardinalities()
    assert card.min() <= 10 and card.max() > 1_000_000  # from a handful of ids to millions per field
    counts = np.bincount(x_cat[:, 0] - 0)
    assert counts.max() > 50 * np.median(counts[counts > 0])  # long-tailed frequencies
    again = synthetic_criteo(20_000, buckets=1000, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((x_cat, x_num, y, p), again))
    _, _, _, last, _, _ = run("deepfm_criteo", 30, {"n_train": 20000, "n_eval": 5000, "buckets": 1000}, lr=3e-3)
    assert 0.55 < last["test_auc"] < last["best_test_auc"] and math.isfinite(last["test_logloss"])


def test_mujoco_ppo_normalises_observations():
    pytest.importorskip("mujoco", reason="needs the mujoco wheel: pip install 'adamkit[tasks]'")
    _, inst, _, last, _, _ = run("halfcheetah_ppo", 4, {"rollout": 256, "minibatch": 64, "eval_episodes": 1},
                                 lr=3e-4)
    assert inst.normalize and inst._obs_n == 256 and inst.env_steps == 256
    obs = inst._obs(inst.obs)
    assert obs.shape == (17,) and obs.abs().max() <= 10 and math.isfinite(last["eval_return"])
    assert not create_problem("cartpole_ppo", {}).make(0).normalize  # the classic-control tasks are unchanged
