"""FSDP2 with ``ignored_params``: some parameters stay plain (replicated) tensors, so one param group mixes
DTensor shards and plain tensors, which adamkit steps on every path.

    torchrun --standalone --nproc-per-node 2 examples/train_fsdp_ignored.py --lr 1e-2 --option foreach=True

The output layer is left out of sharding (``fully_shard(model, ignored_params=...)``): every rank keeps all of
it, and FSDP2 neither gathers nor reduces it, so its gradients are averaged here by hand (an ``all_reduce``). The
param groups of ``adamkit.param_groups_weight_decay`` then hold the sharded hidden layers' DTensors beside the
output layer's plain tensors. adamkit steps each parameter's local tensor, so the loop, foreach and fused paths
all take such a group (``torch.optim``'s foreach and fused AdamW refuse it: "got mixed torch.Tensor and
DTensor"). The model and data are those of ``train_fsdp.py``; the printed losses are averaged over the ranks.
"""
from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import adamkit
from train_fsdp import add_training_arguments, batch, build_model, optimizer_options, setup, shutdown


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_training_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rank, world, device = setup(args.init_method)
    mesh = init_device_mesh(device, (world,))
    model = build_model(args.seed).to(device)
    head = model[-1]
    ignored = set(head.parameters())  # replicated on every rank, not sharded
    for layer in model[:-1]:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh, ignored_params=ignored)
    groups = adamkit.param_groups_weight_decay(model, weight_decay=0.01)
    opt = adamkit.create_optimizer(args.optimizer, groups, **optimizer_options(args))
    if rank == 0:
        for i, group in enumerate(opt.param_groups):
            kinds = sorted({type(p).__name__ for p in group["params"]})
            print(f"param group {i}: {len(group['params'])} parameters ({', '.join(kinds)})", flush=True)

    for step in range(1, args.steps + 1):
        x, y = batch(step, args.seed, args.batch_size)
        x, y = x.chunk(world)[rank].to(device), y.chunk(world)[rank].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()                      # FSDP2 averages the sharded parameters' gradients over the ranks...
        for p in head.parameters():          # ...and leaves the ignored ones to us
            dist.all_reduce(p.grad)
            p.grad.div_(world)
        opt.step()
        global_loss = adamkit.distributed.reduce_loss(loss)
        if rank == 0:
            print(f"step {step:5d}  loss {global_loss.item():.10e}", flush=True)
    shutdown()


if __name__ == "__main__":
    main()
