"""Every example of examples/ runs at a tiny size, and does what its page says.

The single-process examples run in this process (their frameworks are in the ``examples`` extra; without one its
test is skipped, naming the extra). The FSDP2 examples run in one launch of 2 gloo processes
(tests/_examples_dist.py) and print the same losses as the same training in one process. examples/train_fsdp.py
has its own test (tests/test_distributed_example.py).
"""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import adamkit
from _dist_launch import launch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EXTRA = "install the examples' frameworks: pip install 'adamkit[examples]'"


def example(name: str):
    """Import examples/<name>.py (examples/ on the path, as when it runs as a script)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requires(module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed; {EXTRA}")


def _improved(losses: list[float], factor: float = 0.8) -> bool:
    head, tail = losses[:5], losses[-5:]
    return sum(tail) / len(tail) < factor * sum(head) / len(head)


def test_amp_example_trains_under_bfloat16_autocast_with_its_schedule(monkeypatch):
    amp = example("train_amp")
    seen = []
    original = torch.autocast.__init__

    def recording(self, device_type, dtype=None, *args, **kwargs):
        seen.append((device_type, dtype))
        original(self, device_type, dtype, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", recording)
    losses = amp.main(["--optimizer", "adamw", "--steps", "40", "--warmup", "5", "--state-dtype", "int8"])
    assert len(losses) == 40 and _improved(losses), losses
    assert seen and all(dtype == torch.bfloat16 for _, dtype in seen)


def test_hf_trainer_example_steps_the_adamkit_optimizer_and_scheduler(monkeypatch):
    _requires("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    trainer = example("train_hf_trainer").main(["--optimizer", "adamw", "--steps", "24"])
    inner = getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate wraps it
    assert isinstance(inner, adamkit.AdamW)
    assert [g["weight_decay"] for g in inner.param_groups] == [0.01, 0.0]
    assert trainer.lr_scheduler.optimizer is inner and trainer.state.global_step == 24
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < 0.9 * losses[0], losses
    assert inner.param_groups[0]["lr"] < 1e-4 < 3e-3  # the cosine schedule ran to its end
    assert all(inner.state[p]["step"] == 24 for p in trainer.model.parameters())


def test_lightning_example_uses_configure_optimizers():
    _requires("lightning")
    module = example("train_lightning").main(["--optimizer", "adopt", "--steps", "40"])
    (opt,) = module.trainer.optimizers
    assert isinstance(opt, adamkit.ADOPT)
    assert len(module.losses) == 40 and _improved(module.losses), module.losses
    assert all(opt.state[p]["step"] == 40 for p in module.parameters())
    assert opt.param_groups[0]["lr"] < 1e-4  # stepped every step ("interval": "step") to the cosine's end


def test_accelerate_example_trains_through_the_prepared_optimizer():
    _requires("accelerate")
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # the Trainer of another test made one (a singleton)
    try:
        losses = example("train_accelerate").main(["--optimizer", "eadam", "--steps", "40"])
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert len(losses) == 40 and _improved(losses), losses


def _losses(log: str) -> dict[str, dict[int, float]]:
    out, current = {}, None
    for line in log.splitlines():
        if line.startswith("== "):
            current = out.setdefault(line[3:].strip(), {})
        match = re.match(r"^step\s+(\d+)\s+loss\s+(\S+)$", line)
        if match and current is not None:
            current[int(match.group(1))] = float(match.group(2))
    return out


def test_fsdp2_offload_and_ignored_params_examples_match_one_process(tmp_path):
    worker = Path(__file__).with_name("_examples_dist.py")
    logs = launch([sys.executable, str(worker), str(tmp_path)], world=2)
    import _examples_dist as runs

    log = logs[0]
    assert "parameters: DTensor with cpu shards; state: DTensor on cpu" in log, log
    assert log.count("(DTensor, Parameter)") == 2 * 2, log  # both groups mix shards and plain tensors, both runs
    losses = _losses(log)
    assert sorted(losses) == sorted(runs.RUNS), log

    fsdp = example("train_fsdp")
    for name, (module, arguments) in runs.RUNS.items():
        args = module.parse_args(arguments)
        model = fsdp.build_model(runs.SEED)
        options = fsdp.optimizer_options(args)
        options.pop("foreach", None), options.pop("fused", None)  # one process: the default path
        params = (adamkit.param_groups_weight_decay(model, weight_decay=0.01) if module.__name__.endswith("ignored")
                  else model.parameters())
        opt = adamkit.create_optimizer(args.optimizer, params, **options)
        for step in range(1, runs.STEPS + 1):
            x, y = fsdp.batch(step, runs.SEED, runs.BATCH)
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            got = losses[name][step]
            assert abs(got - loss.item()) <= 1e-5 * abs(loss.item()), (name, step, got, loss.item())
