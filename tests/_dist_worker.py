"""One process of the gloo process groups started by tests/test_distributed.py.

Run as ``python tests/_dist_worker.py OUT_DIR CHECKPOINT_DIR INIT_METHOD`` with RANK and WORLD_SIZE
set (the test starts two of them; INIT_METHOD is a ``file://`` rendezvous, so that nothing listens on
a TCP port, and GLOO_SOCKET_IFNAME=lo keeps gloo's connections on 127.0.0.1). Every
optimizer of tests/optimizer_table.py, every variant and every implementation path
is trained for a few steps under DDP, ZeroRedundancyOptimizer and FSDP2 in this one
launch (process start-up costs seconds, the runs milliseconds); each rank writes
what it saw to ``OUT_DIR/rank{RANK}.pt`` and the test compares it with single-process
runs of the same configurations (``make_model``, ``data``, ``train`` below are shared
with the test, so the two sides train the very same problem).

Sharded checkpoints: the FSDP2 runs are saved with torch.distributed.checkpoint after
SAVE_AT steps on 2 ranks and on 1 rank (rank 0 alone in a sub-group) and resumed on
2 ranks (2 -> 2, 1 -> 2) and on 1 rank (2 -> 1).
"""
from __future__ import annotations

import copy
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from optimizer_table import OPTIMIZERS  # noqa: E402

import adamkit  # noqa: E402
from adamkit.kernels import BACKENDS  # noqa: E402

STEPS = 4
SAVE_AT = 2
LR = 1e-2
BATCH = 8
#: every backend, by the options that choose it (the test names the path)
PATHS = {name: dict(backend.options) for name, backend in BACKENDS.items()}
#: the torch.compile path costs many seconds of compilation per process: only on request, first variants only
WITH_COMPILED = os.environ.get("ADAMKIT_TEST_COMPILED") == "1"
if WITH_COMPILED:  # one process steps every optimizer and shard shape: more graphs than dynamo's default 8
    torch._dynamo.config.recompile_limit = 256


# ----------------------------------------------------------------- shared with the test
def make_model(dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A small MLP whose shapes shard unevenly over 2 ranks (5 rows: 3 + 2; 1 row: 1 + 0, an empty shard)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).to(dtype)


class ComplexModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(6, 3, dtype=torch.complex64) * 0.5)

    def forward(self, x):
        return (x.to(torch.complex64) @ self.w).abs().sum(dim=1, keepdim=True)


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 1, generator=g)


def train(model, opt, x, y, steps: int, part: int = 0, parts: int = 1) -> None:
    """``steps`` steps on this rank's share (``part`` of ``parts``) of the batch: the mean loss of the share."""
    x, y = x.chunk(parts)[part], y.chunk(parts)[part]
    dtype = next(model.parameters()).dtype
    if not dtype.is_complex:
        x = x.to(dtype)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.mse_loss(model(x).float(), y).backward()
        opt.step()


def fused_available(info) -> bool:
    """Whether ``fused=True`` builds and steps for this optimizer in this build of adamkit."""
    p = torch.zeros(3, requires_grad=True)
    p.grad = torch.ones(3)
    try:
        info.make([p], lr=LR, fused=True).step()
    except (RuntimeError, ValueError, NotImplementedError, TypeError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Config:
    key: str
    name: str
    variant: int
    path: str
    #: None: the optimizer's default (float32 state)
    state_dtype: Any = None

    @property
    def info(self):
        return next(info for info in OPTIMIZERS if info.name == self.name)

    def kwargs(self) -> dict[str, Any]:
        extra = {} if self.state_dtype is None else {"state_dtype": self.state_dtype}
        return {"lr": LR, **self.info.variants[self.variant], **PATHS[self.path], **extra}

    @property
    def checkpointable(self) -> bool:
        """A callable hyperparameter (ADOPT's clip_lambda as a lambda) cannot be pickled into a checkpoint."""
        return not any(callable(v) for v in self.info.variants[self.variant].values())

    @property
    def resharded(self) -> bool:
        """Resumed on another number of ranks too: every variant on the loop path, the first on every path."""
        return self.checkpointable and (self.path == "loop" or self.variant == 0)

    def make(self, params):
        return self.info.make(params, **self.kwargs())


def configs() -> list[Config]:
    out = []
    for info in OPTIMIZERS:
        paths = ["loop", "foreach"] + (["fused"] if fused_available(info) else [])
        for index in range(len(info.variants)):
            for path in paths + (["compiled"] if WITH_COMPILED and index == 0 else []):
                out.append(Config(f"{info.name}-{index}-{path}", info.name, index, path))
    return out


#: low-precision state (issue 13): a first-moment/second-moment algorithm with a running maximum ("upper"),
#: AdaBelief's s with its maximum, AGD's z initialised from the parameters; loop and foreach (and ADOPT on
#: the fused C kernel where it stores these formats)
LOW_PRECISION = (("adamw", 1, "loop"), ("adabelief", 3, "foreach"), ("agd", 6, "loop"))
STATE_DTYPES = {"bf16": torch.bfloat16, "int8": "int8"}


def fused_takes_low_precision() -> bool:
    """Whether ``fused=True`` steps bfloat16 and int8 state in this build (the C kernel's storage formats)."""
    p = torch.zeros(2, 3, requires_grad=True)
    p.grad = torch.ones(2, 3)
    try:
        for dtype in STATE_DTYPES.values():
            adamkit.ADOPT([p], lr=LR, fused=True, state_dtype=dtype).step()
    except (RuntimeError, ValueError, NotImplementedError, TypeError):
        return False
    return True


def low_precision_configs() -> list[Config]:
    chosen = LOW_PRECISION + ((("adopt", 0, "fused"),) if fused_takes_low_precision() else ())
    return [Config(f"{name}-{index}-{path}-{sd}", name, index, path, dtype)
            for name, index, path in chosen for sd, dtype in STATE_DTYPES.items()]


# ----------------------------------------------------------------- the distributed runs
def _full(params) -> list[torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return [(p.full_tensor() if isinstance(p, DTensor) else p).detach().clone() for p in params]


def _fsdp(model, mesh):
    from torch.distributed.fsdp import fully_shard

    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _state_is_sharded_like_params(opt) -> bool:
    """Every state tensor a DTensor placed like its parameter; int8 scales ``scale_shape(p.shape)``, their rows
    sharded with the parameter's rows; ``step`` and ``rounding_seed`` ints; stored dtypes as the format says."""
    from torch.distributed.tensor import DTensor

    from adamkit.core import state_format

    for group in opt.param_groups:
        fmt_of = group.get("state_dtype", torch.float32)
        for p in group["params"]:
            fmt = state_format.tensor_format(fmt_of, p)
            state = opt.state[p]
            if ("rounding_seed" in state) != (fmt != "float32"):
                return False
            for key, value in state.items():
                if key in ("step", "rounding_seed"):
                    if type(value) is not int:
                        return False
                elif key.endswith(state_format.SCALE_SUFFIX):
                    if fmt != "int8" or not (
                            isinstance(value, DTensor) and value.placements == p.placements
                            and tuple(value.shape) == state_format.scale_shape(p.shape)
                            and value.dtype == torch.float32
                            and value.to_local().shape[0] == p.to_local().shape[0]):
                        return False
                else:
                    want = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.uint8}[fmt]
                    if not (isinstance(value, DTensor) and value.placements == p.placements
                            and value.shape == p.shape and value.dtype == want
                            and (fmt != "int8" or state_format.scale_name(key) in state)):
                        return False
    return True


def _steps(opt) -> list:
    return [opt.state[p].get("step") for g in opt.param_groups for p in g["params"]]


def run_ddp(cfgs, x, y, rank, world, out):
    from torch.nn.parallel import DistributedDataParallel as DDP

    for cfg in cfgs:
        model = make_model()
        ddp = DDP(model)
        train(ddp, cfg.make(ddp.parameters()), x, y, STEPS, rank, world)
        out["ddp"][cfg.key] = _full(model.parameters())


def run_zero(cfgs, x, y, rank, world, out):
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    def build(state=None):
        model = make_model()
        if state is not None:
            model.load_state_dict(state)
        ddp = DDP(model)
        params = list(model.parameters())
        # the defaults go in as keyword arguments; the second group goes through add_param_group
        zero = ZeroRedundancyOptimizer(params[:2], optimizer_class=cfg.info.cls, **cfg.kwargs())
        zero.add_param_group({"params": params[2:]})
        return model, ddp, zero

    for cfg in cfgs:
        model, ddp, zero = build()
        train(ddp, zero, x, y, SAVE_AT, rank, world)
        if cfg.checkpointable:
            zero.consolidate_state_dict(to=0)
            # deep copies: the state dict holds the live state tensors, which the next steps change
            saved = [copy.deepcopy(zero.state_dict()) if rank == 0 else None,
                     {k: v.clone() for k, v in model.state_dict().items()}]
            dist.broadcast_object_list(saved, src=0)
        train(ddp, zero, x, y, STEPS - SAVE_AT, rank, world)
        out["zero"][cfg.key] = _full(model.parameters())
        if cfg.checkpointable:
            model, ddp, zero = build(saved[1])
            zero.load_state_dict(saved[0])
            out["checks"][f"zero-steps-{cfg.key}"] = _steps(zero.optim)
            train(ddp, zero, x, y, STEPS - SAVE_AT, rank, world)
            out["zero_resumed"][cfg.key] = _full(model.parameters())


def run_fsdp(cfgs, x, y, rank, world, ckpt, out):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    solo = dist.new_group([0])  # rank 0 alone: the 1-rank job of the resharding checks
    flat = StateDictOptions(flatten_optimizer_state_dict=True)
    saved = [c for c in cfgs if c.checkpointable]
    resharded = [c for c in cfgs if c.resharded]

    def resume(saved, mesh, path, options, group, part, parts, use_init_state):
        """Fresh models and optimizers, loaded from one checkpoint of all configs, trained to STEPS."""
        runs, states = {}, {}
        for cfg in saved:
            model = _fsdp(make_model(), mesh)
            opt = cfg.make(model.parameters())
            before = [p.to_local().clone() for p in model.parameters()]
            if use_init_state:
                adamkit.distributed.init_state(opt)
            # on an optimizer without state, this runs DCP's step with zero gradients and lr=0
            msd, osd = get_state_dict(model, opt, options=options)
            moved = any(not torch.equal(b, p.to_local()) for b, p in zip(before, model.parameters()))
            out["checks"][f"init-moved-{use_init_state}-{cfg.key}"] = moved
            out["checks"][f"init-steps-{use_init_state}-{cfg.key}"] = _steps(opt)
            runs[cfg.key], states[cfg.key] = (model, opt), {"model": msd, "optim": osd}
        dcp.load(states, checkpoint_id=path, process_group=group)
        result = {}
        for cfg in saved:
            model, opt = runs[cfg.key]
            set_state_dict(model, opt, model_state_dict=states[cfg.key]["model"],
                           optim_state_dict=states[cfg.key]["optim"], options=options)
            out["checks"][f"resumed-steps-{path.name}-{cfg.key}"] = _steps(opt)
            out["checks"][f"resumed-sharded-{path.name}-{cfg.key}"] = _state_is_sharded_like_params(opt)
            train(model, opt, x, y, STEPS - SAVE_AT, part, parts)
            result[cfg.key] = _full(model.parameters())
        return result

    # 1 rank: train to SAVE_AT and save (flattened optimizer state dict)
    if rank == 0:
        mesh1 = DeviceMesh.from_group(solo, "cpu")
        states = {}
        for cfg in resharded:
            model = _fsdp(make_model(), mesh1)
            opt = cfg.make(model.parameters())
            train(model, opt, x, y, SAVE_AT)
            msd, osd = get_state_dict(model, opt, options=flat)
            states[cfg.key] = {"model": msd, "optim": osd}
        dcp.save(states, checkpoint_id=ckpt / "n1", process_group=solo)
    dist.barrier()

    # 2 ranks: train to SAVE_AT, save, train on to STEPS
    runs, states = {}, {}
    for cfg in cfgs:
        model = _fsdp(make_model(), mesh)
        opt = cfg.make(model.parameters())
        train(model, opt, x, y, SAVE_AT, rank, world)
        out["checks"][f"sharded-{cfg.key}"] = _state_is_sharded_like_params(opt)
        runs[cfg.key] = model, opt
        if cfg.checkpointable:
            msd, osd = get_state_dict(model, opt)
            states[cfg.key] = {"model": msd, "optim": osd}
    dcp.save(states, checkpoint_id=ckpt / "n2")
    for cfg in cfgs:
        model, opt = runs[cfg.key]
        train(model, opt, x, y, STEPS - SAVE_AT, rank, world)
        out["fsdp"][cfg.key] = _full(model.parameters())
    del runs, states

    out["fsdp_2to2"] = resume(saved, mesh, ckpt / "n2", None, None, rank, world, use_init_state=False)
    out["fsdp_1to2"] = resume(resharded, mesh, ckpt / "n1", flat, None, rank, world, use_init_state=True)
    if rank == 0:
        out["fsdp_2to1"] = resume(resharded, DeviceMesh.from_group(solo, "cpu"), ckpt / "n2", None, solo, 0, 1,
                                  use_init_state=False)
    dist.barrier()


def run_fsdp_dtypes(cfgs, x, y, rank, world, out):
    """bfloat16 and complex64 parameters under FSDP2 (the first variant of each optimizer, every path)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for cfg in cfgs:
        if cfg.variant != 0:
            continue
        model = _fsdp(make_model(torch.bfloat16), mesh)
        opt = cfg.make(model.parameters())
        train(model, opt, x, y, STEPS, rank, world)
        out["fsdp_bf16"][cfg.key] = _full(model.parameters())
        out["checks"][f"bf16-state-{cfg.key}"] = [
            v.dtype for p in model.parameters() for k, v in opt.state[p].items() if k != "step"
        ]
        model = fully_shard(ComplexModel(), mesh=mesh)
        opt = cfg.make(model.parameters())
        train(model, opt, x, y, STEPS, rank, world)
        out["fsdp_complex"][cfg.key] = _full(model.parameters())


#: a chain of conversions (convert_state_dtype of an FSDP2 optimizer's state dict), one step in each format
CONVERSION = (("adamw-1-loop", "adamw-1-loop-int8", "adamw-1-loop-bf16", "adamw-1-loop"),)


def run_conversion(x, y, rank, world, out):
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    by_key = {c.key: c for c in configs() + low_precision_configs()}
    chain = [by_key[k] for k in CONVERSION[0]]
    model = _fsdp(make_model(), mesh)
    opt = chain[0].make(model.parameters())
    train(model, opt, x, y, 1, rank, world)
    sharded = []
    for cfg in chain[1:]:
        converted = adamkit.convert_state_dtype(opt.state_dict(), cfg.state_dtype or torch.float32)
        opt = cfg.make(model.parameters())
        opt.load_state_dict(converted)
        sharded.append(_state_is_sharded_like_params(opt))
        train(model, opt, x, y, 1, rank, world)
    out["checks"]["converted-sharded"] = sharded
    out["converted"] = _full(model.parameters())


def run_wrong_format_loads(rank, world, ckpt, out):
    """A DCP checkpoint of one state_dtype loaded into an optimizer of another: what each refusal says.

    ``ckpt / "n2"`` holds the float32-state runs, ``ckpt / "low_precision" / "n2"`` the low-precision ones."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    by_key = {c.key: c for c in configs() + low_precision_configs()}
    for saved, into, path in [("adamw-1-loop-int8", "adamw-1-loop", ckpt / "low_precision" / "n2"),
                              ("adamw-1-loop-bf16", "adamw-1-loop-int8", ckpt / "low_precision" / "n2"),
                              ("adamw-1-loop", "adamw-1-loop-int8", ckpt / "n2")]:
        model = _fsdp(make_model(), mesh)
        opt = adamkit.distributed.init_state(by_key[into].make(model.parameters()))
        before = {id(p): {k: v.to_local().clone() if hasattr(v, "to_local") else v for k, v in opt.state[p].items()}
                  for p in model.parameters()}
        try:
            msd, osd = get_state_dict(model, opt)
            states = {saved: {"model": msd, "optim": osd}}
            dcp.load(states, checkpoint_id=path)
            set_state_dict(model, opt, model_state_dict=states[saved]["model"], optim_state_dict=states[saved]["optim"])
            outcome = None
        except (Exception, CheckpointException) as exc:  # noqa: BLE001 - what the user would see
            outcome = f"{type(exc).__name__}: {str(exc)[-1500:]}"
        unchanged = all(
            all(torch.equal(v.to_local(), before[id(p)][k]) if hasattr(v, "to_local") else v == before[id(p)][k]
                for k, v in opt.state[p].items()) and set(opt.state[p]) == set(before[id(p)])
            for p in model.parameters())
        out["checks"][f"wrong-format-{saved}-into-{into}"] = (outcome, unchanged)


def run_zero_conversion(x, y, rank, world, out):
    """A consolidated ZeRO checkpoint of float32 state, converted (convert_state_dtype; ZeRO's groups carry
    no algorithm marker, so ``algorithm=`` names it) and loaded into an int8 ZeRO optimizer."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    by_key = {c.key: c for c in configs() + low_precision_configs()}
    source, target = by_key["adamw-1-loop"], by_key["adamw-1-loop-int8"]
    model = make_model()
    ddp = DDP(model)
    zero = ZeroRedundancyOptimizer(list(model.parameters()), optimizer_class=source.info.cls, **source.kwargs())
    train(ddp, zero, x, y, SAVE_AT, rank, world)
    zero.consolidate_state_dict(to=0)
    saved = [copy.deepcopy(zero.state_dict()) if rank == 0 else None]
    dist.broadcast_object_list(saved, src=0)
    zero = ZeroRedundancyOptimizer(list(model.parameters()), optimizer_class=target.info.cls, **target.kwargs())
    zero.load_state_dict(adamkit.convert_state_dtype(saved[0], "int8", algorithm=target.info.cls))
    out["checks"]["zero-converted-formats"] = sorted(
        {(str(g["state_dtype"]), p.dim(), str(zero.optim.state[p]["exp_avg"].dtype))
         for g in zero.optim.param_groups for p in g["params"]})
    train(ddp, zero, x, y, STEPS - SAVE_AT, rank, world)
    out["zero_converted"] = _full(model.parameters())


def run_low_precision(cfgs, x, y, rank, world, ckpt, out):
    """ZeRO and FSDP2 (with its DCP saves and resumes) for ``state_dtype`` bfloat16 and "int8"."""
    low = low_precision_configs()
    sub: dict[str, Any] = {k: {} for k in ("zero", "zero_resumed", "fsdp", "checks")}
    run_zero(low, x, y, rank, world, sub)
    run_fsdp(low, x, y, rank, world, ckpt / "low_precision", sub)
    run_conversion(x, y, rank, world, sub)
    run_wrong_format_loads(rank, world, ckpt, sub)
    run_zero_conversion(x, y, rank, world, sub)
    sub["configs"] = [c.key for c in low]
    out["low_precision"] = sub


def main(out_dir: str, ckpt_dir: str, init_method: str) -> None:
    import torch.distributed as dist

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    torch.set_num_threads(1)
    cfgs = configs()
    x, y = data()
    out: dict[str, Any] = {k: {} for k in ("ddp", "zero", "zero_resumed", "fsdp", "fsdp_bf16", "fsdp_complex",
                                           "checks")}
    out["configs"] = [c.key for c in cfgs]
    out["checks"]["reduce_loss"] = adamkit.distributed.reduce_loss(torch.tensor(1.5 + rank)).item()
    out["seconds"] = {}
    for name, run, args in [("ddp", run_ddp, ()), ("zero", run_zero, ()), ("fsdp", run_fsdp, (Path(ckpt_dir),)),
                            ("fsdp_dtypes", run_fsdp_dtypes, ()),
                            ("low_precision", run_low_precision, (Path(ckpt_dir),))]:
        start = time.perf_counter()
        run(cfgs, x, y, rank, world, *args, out)
        out["seconds"][name] = round(time.perf_counter() - start, 2)
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.barrier()
    # gloo frees a finished collective's tensors on its worker thread, which needs the GIL: give it the
    # moment it needs before interpreter shutdown, or it may abort the process (see examples/train_fsdp.py)
    time.sleep(0.05)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
