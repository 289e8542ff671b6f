"""examples/train_fsdp.py: trains on 2 ranks with FSDP2, checkpoints with DCP, resumes on 1 rank; the losses it
prints are those of the same training in this process (no process group, no sharding)."""
from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from _dist_launch import launch
import adamkit

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_fsdp.py"


def _example_module():
    spec = importlib.util.spec_from_file_location("train_fsdp_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(log: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in re.findall(r"^step\s+(\d+)\s+loss\s+(\S+)$", log, re.MULTILINE)}


def test_train_fsdp_example_checkpoints_and_resumes(tmp_path):
    name, lr, batch, seed = "adabelief", 1e-2, 16, 3
    args = [sys.executable, str(EXAMPLE), "--optimizer", name, "--lr", str(lr), "--option", "weight_decay=0.01",
            "--batch-size", str(batch), "--seed", str(seed), "--checkpoint-dir", str(tmp_path / "ckpt")]
    first = launch(args + ["--steps", "3", "--init-method", f"file://{tmp_path}/rdzv1"], world=2)
    second = launch(args + ["--steps", "5", "--resume", "--init-method", f"file://{tmp_path}/rdzv2"], world=1)
    assert "resumed from" in second[0] and "at step 3 on 1 rank(s)" in second[0], second[0]
    losses = {**_losses(first[0]), **_losses(second[0])}
    assert sorted(losses) == [1, 2, 3, 4, 5], (first[0], second[0])
    assert not _losses(first[1])  # only rank 0 prints

    example = _example_module()
    model = example.build_model(seed)
    opt = adamkit.create_optimizer(name, model.parameters(), lr=lr, weight_decay=0.01)
    for step in range(1, 6):
        x, y = example.batch(step, seed, batch)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step(loss=loss)
        assert abs(losses[step] - loss.item()) <= 1e-5 * abs(loss.item()), (step, losses[step], loss.item())
