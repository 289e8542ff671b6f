"""Lightning with an adamkit optimizer: ``configure_optimizers`` returns the optimizer and its scheduler.

    python examples/train_lightning.py --optimizer adopt --steps 100

A ``LightningModule`` regresses a fixed nonlinear teacher; ``configure_optimizers`` builds any adamkit optimizer
over the module's param groups and a warm-up + cosine schedule stepped every step (``"interval": "step"``).
Lightning calls ``optimizer.step(closure)`` with a closure that runs the forward and backward passes: adamkit's
optimizers evaluate it, as ``torch.optim``'s do, and return its loss.
"""
from __future__ import annotations

import argparse
import math
import tempfile

import lightning
import torch
import torch.nn.functional as F

import adamkit

FEATURES = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="adamw", choices=adamkit.list_optimizers())
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class Regressor(lightning.LightningModule):
    def __init__(self, optimizer: str, lr: float, steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(FEATURES, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
        self.losses: list[float] = []

    def training_step(self, batch, batch_index):
        x, y = batch
        loss = F.mse_loss(self.net(x), y)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        groups = adamkit.param_groups_weight_decay(self, weight_decay=0.01)
        opt = adamkit.create_optimizer(self.hparams.optimizer, groups, lr=self.hparams.lr)
        warmup, total = max(1, self.hparams.steps // 10), self.hparams.steps

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def dataset(size: int, seed: int) -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(FEATURES, 1, generator=generator)
    x = torch.randn(size, FEATURES, generator=generator)
    return torch.utils.data.TensorDataset(x, torch.tanh(x @ teacher))


def main(argv: list[str] | None = None) -> Regressor:
    args = parse_args(argv)
    lightning.seed_everything(args.seed, verbose=False)
    module = Regressor(args.optimizer, args.lr, args.steps)
    loader = torch.utils.data.DataLoader(dataset(args.batch_size * args.steps, args.seed),
                                         batch_size=args.batch_size, shuffle=True)
    with tempfile.TemporaryDirectory(prefix="train_lightning-") as scratch:
        trainer = lightning.Trainer(max_steps=args.steps, accelerator="cpu", devices=1, logger=False,
                                    enable_checkpointing=False, enable_progress_bar=False,
                                    enable_model_summary=False, default_root_dir=scratch)
        trainer.fit(module, loader)
    first, last = module.losses[: 10], module.losses[-10:]
    print(f"{args.optimizer}: mean loss of the first 10 steps {sum(first) / len(first):.4f}, "
          f"of the last 10 {sum(last) / len(last):.4f}", flush=True)
    return module


if __name__ == "__main__":
    main()
