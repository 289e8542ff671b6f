"""A plain PyTorch training loop with an adamkit optimizer, automatic mixed precision and a scheduler.

    python examples/train_amp.py --optimizer adabelief --steps 200
    python examples/train_amp.py --optimizer adamw --state-dtype int8 --steps 200

The forward and backward passes run under ``torch.autocast`` in bfloat16 (on CPU, or CUDA where there is a GPU);
the parameters, their gradients and the optimizer's math stay float32, so no gradient scaler is needed (float16
would need ``torch.amp.GradScaler``). The learning rate warms up linearly, then follows a cosine; weight decay
skips biases and norm weights (``adamkit.param_groups_weight_decay``); gradients are clipped by norm. The data is
a fixed random classification problem, so the example needs nothing but torch.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import adamkit

FEATURES, CLASSES = 32, 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--optimizer", default="adamw", choices=adamkit.list_optimizers())
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20, help="steps of linear warm-up")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--state-dtype", default="float32", choices=["float32", "bfloat16", "int8"],
                        help="how the optimizer stores its moments")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def data(seed: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of a fixed problem: the label is the arg-max of a fixed random linear map of the features."""
    teacher = torch.randn(FEATURES, CLASSES, generator=torch.Generator().manual_seed(seed))
    x = torch.randn(size, FEATURES, generator=generator)
    return x, (x @ teacher).argmax(dim=1)


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(FEATURES, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
                                torch.nn.Linear(128, CLASSES)).to(device)
    state_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": "int8"}[args.state_dtype]
    groups = adamkit.param_groups_weight_decay(model, weight_decay=0.01)
    opt = adamkit.create_optimizer(args.optimizer, groups, lr=args.lr, state_dtype=state_dtype)
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=args.warmup)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, args.steps - args.warmup))
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [warmup, cosine], milestones=[args.warmup])

    generator = torch.Generator().manual_seed(args.seed + 1)
    losses = []
    for step in range(1, args.steps + 1):
        x, y = data(args.seed, args.batch_size, generator)
        x, y = x.to(device), y.to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            logits = model(x)                      # bfloat16 activations
            loss = F.cross_entropy(logits, y)      # autocast computes the loss in float32
        loss.backward()                            # float32 gradients of the float32 parameters
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps:
            print(f"step {step:4d}  loss {loss.item():.4f}  lr {sched.get_last_lr()[0]:.2e}", flush=True)
    return losses


if __name__ == "__main__":
    main()
