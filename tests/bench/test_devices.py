"""The GPU tier (issue 22, item 6): ``adamkit bench run --device cpu|cuda|cuda:N``, where each run computed
recorded in the store, no pooling of devices in one store, the tasks of the tier (a ResNet with weight decay and
augmentation, a WGAN with weight clipping), the ``gpu_smoke`` and ``gpu`` suites and ``scripts/gpu_bench.sh``.

Everything here runs on the CPU; the tests marked ``cuda`` run only where torch sees a GPU (scripts/gpu_bench.sh
runs them first on the GPU machine)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import adamkit
from adamkit.bench import devices, executors
from adamkit.bench import protocol
from adamkit.bench.executors import LocalExecutor
from adamkit.bench.registry import create_problem
from adamkit.bench.store import ResultStore, StoreError
from adamkit.bench.suite import SHIPPED, load_suite, parse_suite
from adamkit.bench.sweep import run_sweep
from adamkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_bench.sh runs it)")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _one_line_error(capsys, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.err + captured.out
    assert err.startswith("adamkit bench: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


TINY_SUITE = """
name = "tiny"
optimizers = ["adam"]
[protocol]
final_seeds = 1
[[problems]]
name = "rosenbrock"
steps = 5
tune = false
[[tasks]]
name = "digits_mlp"
steps = 2
eval_every = 1
tune = false
params = { synthetic = true }
"""


@pytest.fixture
def tiny_suite(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SUITE)
    return path


# ------------------------------------------------------------------------------------------------ the option

@pytest.mark.parametrize("text, expected", [("cpu", "cpu"), ("cuda", "cuda"), ("cuda:0", "cuda:0"),
                                            ("cuda:3", "cuda:3"), (" CUDA:01 ", "cuda:1")])
def test_device_strings_are_normalised(text, expected):
    assert devices.parse(text) == expected


@pytest.mark.parametrize("bad", ["gpu", "cuda:", "cuda:-1", "cuda:x", "cpu:0", "mps", "", None, 0])
def test_a_bad_device_is_refused_naming_the_option_and_the_valid_values(bad):
    with pytest.raises(devices.DeviceError, match=r"--device must be cpu, cuda or cuda:N"):
        devices.parse(bad)


def test_the_cli_refuses_a_bad_device_in_one_line_before_anything_is_written(tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "run", str(tiny_suite), "--out", str(out), "--device", "gpu", "--quiet"]) == 2
    _one_line_error(capsys, "--device must be cpu, cuda or cuda:N", "'gpu'")
    assert not out.exists()


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_refused_with_what_to_do(device, tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "run", str(tiny_suite), "--out", str(out), "--device", device, "--quiet"]) == 2
    _one_line_error(capsys, f"--device {device}: no CUDA device is available here", "use --device cpu")
    assert not out.exists(), "nothing is run or stored"


def test_the_default_device_is_the_cpu(tiny_suite, tmp_path, capsys):
    args = __import__("adamkit.cli", fromlist=["build_parser"]).build_parser().parse_args(
        ["bench", "run", str(tiny_suite), "--out", str(tmp_path)])
    assert args.device == "cpu"


# ------------------------------------------------------------------------------------------------ executors, runner

def test_executors_give_each_run_the_sweep_device(monkeypatch):
    calls = []
    monkeypatch.setattr(executors, "execute", lambda spec, **kw: calls.append(kw) or {"status": "done"})
    list(LocalExecutor(1, "cuda:1").map([("h1", {"a": 1})]))
    list(LocalExecutor(1).map([("h2", {"a": 2})]))
    assert calls == [{"device": "cuda:1"}, {}], "a CPU sweep calls execute(spec) as before devices"
    assert executors.make_executor("local", 2, None, "cuda").device == "cuda"
    with pytest.raises(devices.DeviceError, match="--device"):
        executors.make_executor("local", 1, None, "tpu")


def test_problems_that_take_no_device_stay_on_the_cpu_under_a_gpu_sweep():
    # Tier A problems (Python-bound scalar loops) and CPU-bound tasks run on the CPU workers of a GPU sweep
    assert devices.for_problem(create_problem("rosenbrock"), "cuda:0") == torch.device("cpu")
    assert devices.for_problem(create_problem("cartpole_ppo"), "cuda") == torch.device("cpu")
    for name in ("fmnist_resnet_wd_aug", "wgan_clip_fmnist", "word_lstm1", "gpt_noclip_b8", "gpt_noclip_b64",
                 "fmnist_cnn", "vae_fmnist", "dcgan_fmnist", "char_lstm1"):
        assert create_problem(name).supports_device, name
        assert devices.for_problem(create_problem(name), "cpu") == torch.device("cpu")


# ------------------------------------------------------------------------------------------------ the store

def test_each_run_records_its_device_and_the_store_its_sweeps_device(tiny_suite, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "run", str(tiny_suite), "--out", str(out), "--device", "cpu", "--quiet", "--jobs", "1"]) == 0
    with ResultStore.open_results(out, create=False) as store:
        runs = store.runs()
        assert len(runs) == 2
        for run in runs:
            assert run["device"]["device"] == "cpu" and run["device"]["torch"] == torch.__version__
            assert run["device"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
        assert set(store.run_devices()) == {r["hash"] for r in runs}
        assert store.device_record()["device"] == "cpu"


def _cuda_record(name="NVIDIA H200", index=0):
    return {"device": f"cuda:{index}", "name": name, "torch": "2.13.0", "cuda": "12.8", "cudnn": 91000,
            "capability": "9.0", "deterministic": True, "tf32": False}


def _put(store, h="a" * 64, device=None):
    spec = {"problem": "rosenbrock", "optimizer": "adam", "seed": 0}
    store.put(h, spec, {"status": "done", "final": {"gap": 1.0}, "curve": None, "seconds": 0.1,
                        "worker": "w", "device": device})


def test_a_failed_or_gpu_run_keeps_its_device_record(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        _put(store, "b" * 64, _cuda_record())
        assert store.run("b" * 64)["device"] == _cuda_record()
        _put(store, "c" * 64, None)  # a result without a record (older executors): NULL, read as None
        assert store.run("c" * 64)["device"] is None


def test_a_store_of_cpu_runs_refuses_a_gpu_sweep_and_the_reverse(tmp_path):
    cpu = devices.describe(torch.device("cpu"))
    with ResultStore(tmp_path / "cpu.sqlite") as store:
        store.check_device(cpu, "cpu")
        _put(store, device=cpu)
        with pytest.raises(StoreError) as err:
            store.check_device(_cuda_record(), "cuda")
        message = str(err.value)
        assert "holds runs made on cpu" in message and "cuda (NVIDIA H200)" in message
        assert "not pooled" in message and "another --out" in message and "--device cpu" in message
        store.check_device(cpu, "cpu")  # resuming on the CPU is fine
    with ResultStore(tmp_path / "gpu.sqlite") as store:
        store.check_device(_cuda_record(), "cuda")
        _put(store, device=_cuda_record())
        store.check_device(_cuda_record(index=1), "cuda:1")  # another GPU of the same model pools
        for other, device in ((cpu, "cpu"), (_cuda_record("NVIDIA H100 80GB HBM3"), "cuda")):
            with pytest.raises(StoreError, match=r"holds runs made on cuda \(NVIDIA H200\).*--device cuda\)$"):
                store.check_device(other, device)
        assert store.device_record() == _cuda_record(), "the first sweep's record is kept"


def test_runs_on_several_gpu_models_are_named():
    cpu = devices.describe(torch.device("cpu"))
    records = [cpu, None, _cuda_record(), _cuda_record(index=1)]
    assert devices.gpu_models(records) == ["cuda (NVIDIA H200)"]
    assert devices.gpu_models(records + [_cuda_record("NVIDIA H100 80GB HBM3")]) == [
        "cuda (NVIDIA H100 80GB HBM3)", "cuda (NVIDIA H200)"]


def test_a_store_written_before_devices_were_recorded_holds_cpu_runs(tmp_path):
    with ResultStore(tmp_path / "old.sqlite") as store:
        _put(store)  # no meta record, no run record: as an older store
        assert store.device_record() is None
        with pytest.raises(StoreError, match="holds runs made on cpu"):
            store.check_device(_cuda_record(), "cuda")
        store.check_device(devices.describe(torch.device("cpu")), "cpu")


def test_an_empty_store_takes_the_device_of_its_first_sweep(tmp_path):
    with ResultStore(tmp_path / "r.sqlite") as store:
        store.check_device(devices.describe(torch.device("cpu")), "cpu")
        store.check_device(_cuda_record(), "cuda")  # nothing stored yet: nothing to pool with
        assert store.device_record() == _cuda_record()


def test_the_cli_refuses_to_resume_a_cpu_store_on_a_gpu(tiny_suite, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main(["bench", "run", str(tiny_suite), "--out", str(out), "--quiet", "--jobs", "1"]) == 0
    capsys.readouterr()
    # a GPU as far as the CLI's checks go (no run starts: the refusal comes first)
    monkeypatch.setattr(devices, "check_available", lambda device: None)
    monkeypatch.setattr(devices, "torch_device", lambda device: torch.device("cpu"))
    monkeypatch.setattr(devices, "describe", lambda dev: _cuda_record())
    with ResultStore.open_results(out, create=False) as store:
        before = len(store.runs())
    assert main(["bench", "run", str(tiny_suite), "--out", str(out), "--device", "cuda", "--quiet"]) == 2
    _one_line_error(capsys, "holds runs made on cpu", "cuda (NVIDIA H200)", "--device cuda", "another --out")
    with ResultStore.open_results(out, create=False) as store:
        assert len(store.runs()) == before and store.device_record()["device"] == "cpu"


# ------------------------------------------------------------------------------------------------ the new tasks

def _steps(name, params, steps=2, optimizer="adam", **hparams):
    torch.manual_seed(0)
    problem = create_problem(name, params)
    inst = problem.make(0)
    accepted = set(__import__("adamkit.bench.optimizers", fromlist=["arguments"]).arguments(optimizer))
    hp = {k: v for k, v in problem.optimizer_overrides(optimizer).items() if k in accepted}
    opt = adamkit.create_optimizer(optimizer, inst.parameters(), **{**hp, **hparams})
    losses = [inst.train_step(opt, s) for s in range(steps)]
    return problem, inst, opt, losses, inst.evaluate()


def test_the_resnet_with_weight_decay_and_augmentation_trains_a_few_steps_on_the_cpu():
    problem, inst, opt, losses, last = _steps("fmnist_resnet_wd_aug", {"synthetic": True, "depth": 8,
                                                                       "eval_size": 100})
    assert all(math.isfinite(x) for x in losses) and math.isfinite(last["val_accuracy"])
    assert problem.experiment == "paper" and problem.maximize_metric
    group = opt.param_groups[0]
    assert group["weight_decay"] == 5e-4 and group["decoupled_weight_decay"] is False  # coupled, as the papers
    from adamkit.bench.tasks.resnet_aug import CifarResNet

    assert sum(p.numel() for p in CifarResNet(20, 16).parameters()) == 272_186  # ResNet-20, 0.27 M
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        create_problem("fmnist_resnet_wd_aug", {"depth": 10})
    with pytest.raises(ValueError, match="crop_pad must be an integer in \\[0, 8\\]"):
        create_problem("fmnist_resnet_wd_aug", {"crop_pad": -1})


@pytest.mark.parametrize("optimizer, expected", [
    ("adam", {"weight_decay": 5e-4, "decoupled_weight_decay": False}),
    ("adabelief", {"weight_decay": 5e-4, "weight_decouple": False}),
    ("agd", {"weight_decay": 5e-4, "weight_decouple": False}),
    ("adopt", {"weight_decay": 5e-4, "decouple": False}),
    ("eadam", {"weight_decay": 5e-4}),
    ("sgd", {"weight_decay": 5e-4}),
    ("adamw", {"weight_decay": 1e-2}),  # the papers' AdamW: its own decoupled decay
])
def test_every_optimizer_gets_the_papers_weight_decay(optimizer, expected):
    from adamkit.bench.runner import optimizer_kwargs

    problem = create_problem("fmnist_resnet_wd_aug", {"synthetic": True})
    assert optimizer_kwargs(problem, optimizer, {"lr": 1e-3}) == {**expected, "lr": 1e-3}


def test_augmentation_crops_and_flips_per_image_from_its_generator():
    from adamkit.bench.tasks.resnet_aug import augment

    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    same = augment(x, torch.Generator().manual_seed(0), pad=0, flip=False, fill=-1.0)
    assert torch.equal(same, x)
    a = augment(x, torch.Generator().manual_seed(3), pad=2, flip=True, fill=-1.0)
    b = augment(x, torch.Generator().manual_seed(3), pad=2, flip=True, fill=-1.0)
    assert torch.equal(a, b) and a.shape == x.shape
    # every output image is a shifted (and maybe mirrored) window of its own padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    for i in range(2):
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in windows)
    outs = {tuple(augment(x, torch.Generator().manual_seed(s), 2, True, -1.0).flatten().tolist()) for s in range(8)}
    assert len(outs) > 1, "the crops and flips vary with the generator"


def test_the_wgan_clips_every_critic_weight_and_scores_honestly():
    problem, inst, opt, losses, last = _steps(
        "wgan_clip_fmnist", {"synthetic": True, "width": 8, "eval_samples": 100, "classifier_steps": 3,
                             "ref_size": 100, "n_critic": 2}, steps=2, lr=1e-2)
    assert problem.experiment == "stand-in"  # other data and a proxy metric than the paper's: never firm
    assert all(p.abs().max() <= 0.01 + 1e-9 for p in inst.D.parameters())
    assert any(p.abs().max() > 0.01 for p in inst.G.parameters()), "the generator is not clipped"
    assert {"fd", "classes_covered", "class_entropy", "d_loss"} <= set(last) and math.isfinite(last["fd"])
    assert inst.d_opt.param_groups[0]["betas"] == (0.5, 0.999)
    for bad in ({"clip_value": 0}, {"n_critic": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            create_problem("wgan_clip_fmnist", bad)


# ------------------------------------------------------------------------------------------------ the suites

#: task -> the settings of its tiny CPU run on synthetic data
TINY = {
    "fmnist_resnet_wd_aug": {"depth": 8, "width": 4, "eval_size": 50},
    "word_lstm1": {"embed": 16, "hidden": 16, "eval_tokens": 200, "batch_size": 4},
    "gpt_noclip_b8": {"d_model": 16, "layers": 1, "heads": 2, "eval_chars": 300},
    "gpt_noclip_b64": {"d_model": 16, "layers": 1, "heads": 2, "eval_chars": 300, "batch_size": 8},
    "wgan_clip_fmnist": {"width": 4, "eval_samples": 50, "classifier_steps": 3, "ref_size": 50, "n_critic": 2},
}


def tiny_variant(raw: dict) -> dict:
    """A shipped suite at a tiny size on synthetic data: every entry 2 steps (Tier A: 5), tiny models."""
    import copy

    raw = copy.deepcopy(raw)
    for entry in raw.get("problems", []):
        entry.update(steps=5, eval_every=1)
    for entry in raw.get("tasks", []):
        entry.pop("epochs", None)
        entry.update(steps=2, eval_every=1, timeout=300)
        entry["params"] = {**entry.get("params", {}), **TINY[entry["name"]], "synthetic": True}
        for key in ("eval_tokens", "eval_chars", "eval_samples", "eval_size"):
            if key in entry["params"] and key not in TINY[entry["name"]]:
                del entry["params"][key]
    return raw


def _raw(name):
    import tomllib

    return tomllib.loads((ROOT / "src/adamkit/bench/suites" / f"{name}.toml").read_text())


def test_the_gpu_suites_are_shipped_and_plan():
    assert {"gpu", "gpu_smoke"} <= set(SHIPPED)
    for name in ("gpu_smoke", "gpu"):
        suite = load_suite(name)
        plan = protocol.plan(suite, protocol.Lookup({}))
        assert {r.instance for r in plan.runs} == {i.key for i in suite.problems}, name
        assert set(TINY) <= {i.problem for i in suite.problems}, "every task of the GPU tier is in both"


def test_the_gpu_suite_runs_the_papers_regimes_with_the_protocol_a_verdict_needs():
    by_task = {i.problem: i for i in load_suite("gpu").problems}
    assert set(by_task) == set(TINY)
    for inst in by_task.values():
        assert inst.tune and inst.trials >= 8 and len(inst.tune_seeds) >= 2 and len(inst.final_seeds) >= 10
        assert not inst.multi_fidelity, "tuned at the final budget"
        assert not inst.params.get("synthetic")
    assert by_task["fmnist_resnet_wd_aug"].epochs >= 30
    assert by_task["word_lstm1"].steps >= 5000
    assert by_task["gpt_noclip_b8"].steps >= 5000 and by_task["gpt_noclip_b64"].steps >= 5000
    assert by_task["gpt_noclip_b8"].params["batch_size"] == 8 and by_task["gpt_noclip_b64"].params["batch_size"] == 64
    assert by_task["wgan_clip_fmnist"].steps >= 10_000


def test_the_tiny_variant_of_gpu_smoke_runs_on_the_cpu_through_the_sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMKIT_DATA_DIR", str(tmp_path / "empty"))  # synthetic data only
    suite = parse_suite(tiny_variant(_raw("gpu_smoke")), "gpu_smoke (tiny)")
    store = ResultStore(tmp_path / "r.sqlite")
    stats = run_sweep(suite, store, LocalExecutor(1))
    assert stats.failed == 0 and stats.done > 0 and not stats.no_data, stats.failures
    runs = store.runs()
    assert {r["problem"] for r in runs} == {i.problem for i in suite.problems}
    assert all(r["device"]["device"] == "cpu" for r in runs)


def test_the_tiny_variant_of_the_gpu_suite_loads():
    suite = parse_suite(tiny_variant(_raw("gpu")), "gpu (tiny)")
    assert all(i.steps == 2 for i in suite.problems if i.tier == "B")


# ------------------------------------------------------------------------------------------------ the script

def test_the_gpu_bench_script_passes_bash_n_and_make_has_its_target():
    script = ROOT / "scripts" / "gpu_bench.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for needed in ('SUITES="${SUITES:-gpu_smoke gpu}"', "bench run", "bench report", "--device", "nvidia-smi", "OUT",
                   '--time-limit "$soft"', "3) say"):
        assert needed in text, needed
    makefile = (ROOT / "Makefile").read_text()
    assert "\ngpu-bench:" in makefile and "scripts/gpu_bench.sh" in makefile


def test_the_gpu_bench_script_refuses_clearly_without_a_gpu(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_bench.sh"), "--check"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                            "PYTHONPATH": str(ROOT / "src"), "OUT": str(tmp_path / "out"),
                                            "HOME": str(tmp_path)}, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no CUDA device is available" in result.stderr
    assert (tmp_path / "out" / "environment.txt").is_file(), "the environment is recorded before the refusal"


# ------------------------------------------------------------------------------------------------ on a GPU only

@cuda
@pytest.mark.parametrize("name, params", [
    ("fmnist_resnet_wd_aug", {"synthetic": True, "depth": 8, "eval_size": 100}),
    ("wgan_clip_fmnist", {"synthetic": True, "width": 8, "eval_samples": 100, "classifier_steps": 3,
                          "ref_size": 100, "n_critic": 2}),
    ("word_lstm1", {"synthetic": True, "eval_tokens": 500}),
    ("gpt_noclip_b8", {"synthetic": True, "eval_chars": 500}),
    ("vae_fmnist", {"synthetic": True, "eval_size": 100}),
])
def test_a_task_on_cuda_computes_there_from_the_cpu_initialisation(name, params):
    from adamkit.bench.runner import execute

    spec = {"problem": name, "params": params, "optimizer": "adam", "hparams": {}, "seed": 0, "steps": 3,
            "epochs": None, "eval_every": 1, "record_every": 1, "timeout": 0}
    on_gpu, on_cpu = execute(spec, "cuda"), execute(spec)
    assert on_gpu["status"] == "done", on_gpu["error"]
    assert on_gpu["device"]["device"].startswith("cuda:") and on_gpu["device"]["deterministic"]
    assert not on_gpu["device"]["tf32"]
    # the same initial weights: the untrained model scores alike on both devices (on a continuous metric: an
    # accuracy could flip on a near tie; a different initialisation would differ by far more than float rounding)
    metric = {"fmnist_resnet_wd_aug": "val_loss"}.get(name, create_problem(name, params).selection_metric)
    first_gpu, first_cpu = on_gpu["curve"][f"eval:{metric}"][0], on_cpu["curve"][f"eval:{metric}"][0]
    assert math.isclose(first_gpu, first_cpu, rel_tol=1e-2, abs_tol=1e-4), (first_gpu, first_cpu)
    again = execute(spec, "cuda")
    assert again["final"][metric] == on_gpu["final"][metric], "repeatable on the GPU"
