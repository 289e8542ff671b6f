"""Hugging Face Accelerate with an adamkit optimizer: ``accelerator.prepare(model, opt, loader, sched)``.

    python examples/train_accelerate.py --optimizer eadam --steps 100

``Accelerator`` wraps the model, the optimizer, the data loader and the scheduler for the processes it was
launched on (one here), with bfloat16 autocast (``mixed_precision="bf16"``);
``accelerator.backward`` replaces ``loss.backward()``. The wrapped optimizer calls the adamkit optimizer's
``step``, and the wrapped scheduler steps once per optimizer step.
"""
from __future__ import annotations

import argparse

import accelerate
import torch
import torch.nn.functional as F

import adamkit

FEATURES = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="adamw", choices=adamkit.list_optimizers())
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    accelerator = accelerate.Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16")
    accelerate.utils.set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    teacher = torch.randn(FEATURES, 1, generator=generator)
    x = torch.randn(args.batch_size * args.steps, FEATURES, generator=generator)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.tanh(x @ teacher)),
                                         batch_size=args.batch_size, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = adamkit.create_optimizer(args.optimizer, model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps)
    model, opt, loader, sched = accelerator.prepare(model, opt, loader, sched)

    losses = []
    for step, (inputs, targets) in enumerate(loader, start=1):
        opt.zero_grad()
        with accelerator.autocast():
            loss = F.mse_loss(model(inputs).float(), targets)
        accelerator.backward(loss)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if accelerator.is_main_process and (step % 25 == 0 or step == args.steps):
            print(f"step {step:4d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}", flush=True)
    accelerator.end_training()
    return losses


if __name__ == "__main__":
    main()
