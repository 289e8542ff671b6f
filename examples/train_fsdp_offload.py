"""FSDP2 with CPU offload: the sharded parameters, gradients and optimizer state live on the CPU, and an adamkit
optimizer steps them there with its fused C kernel.

    torchrun --standalone --nproc-per-node 2 examples/train_fsdp_offload.py --optimizer adabelief --lr 1e-2 --steps 20

``fully_shard(..., offload_policy=CPUOffloadPolicy())`` keeps each rank's shards in host memory; FSDP2 copies
them to the accelerator for the forward and backward passes and the gradients back, so ``optimizer.step()``
runs on CPU tensors: the local shards of the DTensor parameters. ``fused=True`` makes the choice explicit: the
step raises, saying why, unless adamkit's fused CPU kernel steps every shard. The state (a DTensor placed like
its parameter) stays on the CPU as well, in any ``state_dtype``.

With GPUs this is the real use (nccl; the shards in pinned host memory). Without one it runs the same code on
CPU with gloo: the offload copies are then no-ops, and host memory is not pinned (pinning needs an accelerator).
The model and data are those of ``train_fsdp.py``; the printed losses are averaged over the ranks.
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, fully_shard

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
    model = build_model(args.seed)  # on the CPU: fully_shard keeps the shards there and computes on `device`
    offload = CPUOffloadPolicy(pin_memory=device != "cpu")
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh, offload_policy=offload)
    fully_shard(model, mesh=mesh, offload_policy=offload)
    options = optimizer_options(args)
    opt = adamkit.create_optimizer(args.optimizer, model.parameters(), fused=True, **options)

    for step in range(1, args.steps + 1):
        x, y = batch(step, args.seed, args.batch_size)
        x, y = x.chunk(world)[rank].to(device), y.chunk(world)[rank].to(device)
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()                      # the gradients' shards arrive on the CPU, averaged over the ranks
        opt.step()                           # the fused C kernel, on the CPU shards
        global_loss = adamkit.distributed.reduce_loss(loss)
        if rank == 0:
            print(f"step {step:5d}  loss {global_loss.item():.10e}", flush=True)
    if rank == 0:
        shard = next(model.parameters())
        print(f"parameters: {type(shard).__name__} with {shard.to_local().device.type} shards; "
              f"state: {type(opt.state[shard]['exp_avg']).__name__} on {opt.state[shard]['exp_avg'].device.type}",
              flush=True)
    shutdown()


if __name__ == "__main__":
    main()
