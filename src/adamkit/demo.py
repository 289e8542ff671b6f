"""``adamkit demo``: train one small model with every optimizer and print a comparison table."""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from .registry import create_optimizer, list_optimizers

#: learning rates for the demo (AGD wants about 1/10 of Adam's, the authors say)
DEMO_LR = {"agd": 1e-3}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=300, help="training steps per optimizer (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate, AGD gets a tenth (default 1e-2)")


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 20, generator=g)
    teacher = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 1))
    with torch.no_grad():
        for p in teacher.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        y = teacher(x) + 0.05 * torch.randn(2048, 1, generator=g)
    return x[:1536], y[:1536], x[1536:], y[1536:]


def train(name: str, steps: int, seed: int, lr: float) -> dict[str, float]:
    """Train a two-layer MLP on a teacher-student regression with optimizer ``name``."""
    xt, yt, xv, yv = _data(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 1))
    opt = create_optimizer(name, model.parameters(), lr=DEMO_LR.get(name, lr) if lr == 1e-2 else lr)
    g = torch.Generator().manual_seed(seed + 1)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, xt.shape[0], (64,), generator=g)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(xt[idx]), yt[idx])
        loss.backward()
        opt.step()
    elapsed = time.perf_counter() - start
    with torch.no_grad():
        train_loss = nn.functional.mse_loss(model(xt), yt).item()
        val_loss = nn.functional.mse_loss(model(xv), yv).item()
    return {"train": train_loss, "val": val_loss, "seconds": elapsed}


def run(args: argparse.Namespace) -> int:
    print(f"adamkit demo: MLP 20-64-1 on a teacher-student regression, {args.steps} steps, batch 64, seed {args.seed}")
    print("(learning rate {:g}; AGD {:g}; paper defaults otherwise)\n".format(args.lr, DEMO_LR["agd"]))
    rows = []
    for name in list_optimizers():
        result = train(name, args.steps, args.seed, args.lr)
        rows.append((name, result))
    best = min(r["val"] for _, r in rows)
    print(f"| optimizer | train MSE | validation MSE | vs best | time (s) |")
    print(f"|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['train']:.4f} | {r['val']:.4f} | {r['val'] / best:.2f}x | {r['seconds']:.2f} |")
    return 0
