"""Train a small model with FSDP2 and any adamkit optimizer; checkpoint with DCP and resume.

    torchrun --standalone --nproc-per-node 2 examples/train_fsdp.py --optimizer adabelief --lr 1e-2 --steps 20
    torchrun --standalone --nproc-per-node 2 examples/train_fsdp.py --optimizer adabelief --lr 1e-2 --steps 40 --resume

CPU and gloo (CUDA and nccl when GPUs are there). Without torchrun it runs as one process.
Every rank trains on its share of each batch; FSDP2 (``fully_shard``) shards the parameters,
the gradients and, through them, the optimizer state (DTensors) over the ranks; DCP
(``torch.distributed.checkpoint``) writes each rank's shards to ``--checkpoint-dir``, and
``--resume`` continues from the latest checkpoint, on the same or another number of ranks.
The batches depend only on ``--seed`` and the step, so a resumed run sees the same data as an
uninterrupted one.

The loss printed, and passed to ``step(loss=...)``, is averaged over the ranks
(``adamkit.distributed.reduce_loss``): a loss-aware optimizer must see the same loss on
every rank. The other optimizers ignore it.
"""
from __future__ import annotations

import argparse
import ast
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import adamkit

IN, HIDDEN = 16, 32


def build_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(IN, HIDDEN), torch.nn.GELU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.GELU(),
        torch.nn.Linear(HIDDEN, 1),
    )


def batch(step: int, seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: a fixed nonlinear teacher plus noise, the same on every rank."""
    teacher = torch.Generator().manual_seed(seed + 1_000_003)
    w1, w2 = torch.randn(IN, 8, generator=teacher), torch.randn(8, 1, generator=teacher)
    g = torch.Generator().manual_seed(seed * 1_000_000 + step)
    x = torch.randn(size, IN, generator=g)
    y = torch.tanh(x @ w1) @ w2 / 8**0.5 + 0.1 * torch.randn(size, 1, generator=g)
    return x, y


def parse_options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values as Python literals (``betas=(0.9,0.99)``, ``amsgrad=True``)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option takes key=value, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value  # a plain string, e.g. win_z_init=params
    return options


def setup(init_method: str | None) -> tuple[int, int, str]:
    """Join the process group (torchrun's, through env://; or ``init_method``); return rank, world size, device.

    Without torchrun (no RANK in the environment) this process is a group of one,
    joined through a file in a temporary directory.
    """
    if "RANK" not in os.environ:  # plain `python examples/train_fsdp.py`
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        init_method = init_method or f"file://{tempfile.mkdtemp(prefix='train_fsdp-')}/rendezvous"
    device = "cpu"
    if torch.cuda.is_available():
        device = "cuda"
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    backend = "nccl" if device == "cuda" else "gloo"
    if init_method is None:
        dist.init_process_group(backend)  # env://, as torchrun sets it up
    else:
        dist.init_process_group(backend, init_method=init_method, rank=int(os.environ["RANK"]),
                                world_size=int(os.environ["WORLD_SIZE"]))
    return dist.get_rank(), dist.get_world_size(), device


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of every FSDP2 example: the optimizer and its options, the steps, the batch, the seed, the
    rendezvous."""
    parser.add_argument("--optimizer", default="adamw", choices=adamkit.list_optimizers())
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="another optimizer argument, e.g. --option weight_decay=0.01 (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="train until this step")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size (split over the ranks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init-method", default=None,
                        help="torch.distributed init_method, e.g. file:///tmp/rdzv (default: env://, set by torchrun)")


def optimizer_options(args: argparse.Namespace) -> dict:
    """The optimizer's keyword arguments: ``--option`` pairs and ``--lr``."""
    options = parse_options(args.option)
    if args.lr is not None:
        options["lr"] = args.lr
    return options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(parser)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints/train_fsdp"))
    parser.add_argument("--checkpoint-every", type=int, default=10, help="also checkpoint at the last step")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    rank, world, device = setup(args.init_method)
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of the number of ranks ({world})")
    mesh = init_device_mesh(device, (world,))
    model = build_model(args.seed).to(device)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = adamkit.create_optimizer(args.optimizer, model.parameters(), **optimizer_options(args))

    def checkpoint_state(step: int) -> dict:
        model_state, optim_state = get_state_dict(model, opt)
        return {"model": model_state, "optim": optim_state, "meta": {"step": step, "optimizer": args.optimizer}}

    start = 0
    latest = args.checkpoint_dir / "latest"
    if args.resume:
        if not latest.exists():
            raise SystemExit(f"--resume: no checkpoint in {args.checkpoint_dir}")
        path = args.checkpoint_dir / latest.read_text().strip()
        # a fresh optimizer's state as its first step() would make it, without stepping (see adamkit.distributed)
        adamkit.distributed.init_state(opt)
        state = checkpoint_state(0)
        dcp.load(state, checkpoint_id=path)
        if state["meta"]["optimizer"] != args.optimizer:
            raise SystemExit(f"{path} was written by --optimizer {state['meta']['optimizer']}, not {args.optimizer}")
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        start = state["meta"]["step"]
        if rank == 0:
            print(f"resumed from {path} at step {start} on {world} rank(s)", flush=True)

    for step in range(start + 1, args.steps + 1):
        x, y = batch(step, args.seed, args.batch_size)
        x, y = x.chunk(world)[rank].to(device), y.chunk(world)[rank].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)  # the mean over this rank's share
        loss.backward()  # FSDP2 averages the gradients over the ranks
        global_loss = adamkit.distributed.reduce_loss(loss)  # the same value on every rank
        opt.step(loss=global_loss)
        if rank == 0:
            print(f"step {step:5d}  loss {global_loss.item():.10e}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            name = f"step-{step:06d}"
            dcp.save(checkpoint_state(step), checkpoint_id=args.checkpoint_dir / name)
            dist.barrier()
            if rank == 0:
                latest.write_text(name + "\n")
    shutdown()


def shutdown() -> None:
    """Leave the process group.

    gloo frees the tensors of a finished collective on its own worker thread, which needs the
    GIL for that; a process that goes straight on to exit can start interpreter shutdown first,
    and that thread then aborts the process ("terminate called without an active exception",
    seen with torch 2.13 on CPU). A last barrier and a moment without the GIL let it finish.
    """
    dist.barrier()
    time.sleep(0.05)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
