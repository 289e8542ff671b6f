"""Every optimizer, variant and implementation path under DDP, ZeroRedundancyOptimizer and FSDP2, and
resumed from torch.distributed.checkpoint (DCP) checkpoints, against single-process runs.

One gloo process group of 2 CPU processes runs everything (tests/_dist_worker.py; a file:// rendezvous,
gloo on the loopback interface). The tests below compare what each rank saw with the same training run
in this process:
  * DDP, ZeRO, FSDP2 vs one process: max |Δ| <= 1e-6 · max |θ| per tensor (float32 rounding of the
    gradient averages; the optimizers themselves step shards exactly);
  * DCP save on 2 ranks, resume on 2 ranks: bit-exact with the run that was not interrupted;
  * DCP save on 1 rank -> resume on 2, save on 2 -> resume on 1: 1e-6 against one process.
ADAMKIT_TEST_COMPILED=1 adds the torch.compile path (fused="compiled") for the first variant of each
optimizer; it compiles for minutes, so it is not on by default.

Low-precision state (state_dtype=torch.bfloat16 and "int8", a few configs, W.LOW_PRECISION): the rounding
bits of an element come from its index in the memory of the state tensor the engine steps, which under
FSDP2 is the rank's local shard, so rank 1's rows draw other bits than in one process. The FSDP2 runs are
therefore compared bit-close (1e-6, the float32 gradient averages) with a one-process *emulation* of the
shards (each rank's rows as parameters of their own optimizer, same seeds), and with the one-process run
only as closely as the rounding noise allows (test_low_precision_close_to_single_process). Resharded DCP
resumes are compared with an emulation that concatenates or splits the state by rows at the save: that int8
row blocks survive resharding is exactly what this checks.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest
import torch

import _dist_worker as W
from _dist_launch import launch
import adamkit

HERE = Path(__file__).resolve().parent
TOL = 1e-6  # max |Δ| / max |θ|, per tensor
BF16_TOL = 2.0**-7  # one bfloat16 rounding

CONFIGS = W.configs()
KEYS = [c.key for c in CONFIGS]
LOW = W.low_precision_configs()
LOW_KEYS = [c.key for c in LOW]
BY_KEY = {c.key: c for c in CONFIGS + LOW}
SAVED = [c.key for c in CONFIGS if c.checkpointable]
RESHARDED = [c.key for c in CONFIGS if c.resharded]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What ranks 0 and 1 recorded (one launch for the whole module)."""
    out = tmp_path_factory.mktemp("dist_out")
    ckpt = tmp_path_factory.mktemp("dist_ckpt")
    store = tmp_path_factory.mktemp("dist_store") / "rendezvous"
    launch([sys.executable, str(HERE / "_dist_worker.py"), str(out), str(ckpt), f"file://{store}"])
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@functools.lru_cache(maxsize=None)
def reference(key: str, kind: str = "float32") -> tuple[torch.Tensor, ...]:
    """The same training run in one process, no process group."""
    cfg = BY_KEY[key]
    model = {"float32": W.make_model, "bf16": lambda: W.make_model(torch.bfloat16),
             "complex": W.ComplexModel}[kind]()
    x, y = W.data()
    W.train(model, cfg.make(model.parameters()), x, y, W.STEPS)
    return tuple(p.detach().clone() for p in model.parameters())


def assert_close(got, ref, tol, what):
    assert len(got) == len(ref), what
    for index, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: tensor {index} {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        scale = b.abs().max().item()
        err = (a - b).abs().max().item()
        assert err <= tol * scale, f"{what}: tensor {index}: max |Δ| {err:.3e} > {tol:g} · max |θ| ({scale:.3e})"


def assert_equal(got, ref, what):
    for index, (a, b) in enumerate(zip(got, ref)):
        assert torch.equal(a, b), f"{what}: tensor {index} differs (max |Δ| {(a - b).abs().max().item():.3e})"


# ------------------------------------------------------------------------------------- the launch
def test_every_config_ran(ranks):
    assert ranks[0]["configs"] == KEYS == ranks[1]["configs"]
    assert {c.name for c in CONFIGS} == set(adamkit.list_optimizers())
    assert {c.path for c in CONFIGS} >= {"loop", "foreach"}


# ------------------------------------------------------------------------ DDP, ZeRO, FSDP2 vs 1 process
@pytest.mark.parametrize("kind", ["ddp", "zero", "fsdp"])
@pytest.mark.parametrize("key", KEYS)
def test_matches_single_process(ranks, key, kind):
    for rank in range(2):
        assert_close(ranks[rank][kind][key], reference(key), TOL, f"{kind} {key} rank {rank}")
    # replicas (DDP, ZeRO after its broadcast) and gathered shards (FSDP2) agree across ranks bit for bit
    assert_equal(ranks[1][kind][key], ranks[0][kind][key], f"{kind} {key}: rank 1 vs rank 0")


@pytest.mark.parametrize("key", KEYS)
def test_fsdp_state_is_sharded_like_the_parameters(ranks, key):
    """State tensors are DTensors with the parameter's placements (so DCP saves them sharded); steps are ints."""
    for rank in range(2):
        assert ranks[rank]["checks"][f"sharded-{key}"], f"rank {rank}"


@pytest.mark.parametrize("kind", ["bf16", "complex"])
@pytest.mark.parametrize("key", [k for k in KEYS if BY_KEY[k].variant == 0])
def test_fsdp_low_precision_and_complex(ranks, key, kind):
    got = ranks[0][f"fsdp_{kind}"][key]
    assert_close(got, reference(key, kind), BF16_TOL if kind == "bf16" else TOL, f"fsdp {kind} {key}")
    if kind == "bf16":  # float32 state for bfloat16 parameters, as on one process
        assert set(ranks[0]["checks"][f"bf16-state-{key}"]) == {torch.float32}


# --------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("key", SAVED)
def test_zero_resume_is_bit_exact(ranks, key):
    for rank in range(2):
        assert_equal(ranks[rank]["zero_resumed"][key], ranks[rank]["zero"][key], f"zero resume {key} rank {rank}")
    steps = ranks[0]["checks"][f"zero-steps-{key}"] + ranks[1]["checks"][f"zero-steps-{key}"]
    assert steps and all(type(s) is int and s == W.SAVE_AT for s in steps), steps


@pytest.mark.parametrize("key", SAVED)
def test_dcp_resume_on_same_ranks_is_bit_exact(ranks, key):
    for rank in range(2):
        assert_equal(ranks[rank]["fsdp_2to2"][key], ranks[rank]["fsdp"][key], f"DCP 2 -> 2 {key} rank {rank}")


@pytest.mark.parametrize("change", ["1to2", "2to1"])
@pytest.mark.parametrize("key", RESHARDED)
def test_dcp_resume_on_other_number_of_ranks(ranks, key, change):
    assert_close(ranks[0][f"fsdp_{change}"][key], reference(key), TOL, f"DCP {change} {key}")


@pytest.mark.parametrize("key", SAVED)
def test_dcp_restores_int_steps_and_sharded_state(ranks, key):
    """Per-parameter int step counters survive DCP (nested and flattened state dicts) and resharding."""
    for rank, path in [(0, "n2"), (1, "n2")] + ([(0, "n1"), (1, "n1")] if key in RESHARDED else []):
        steps = ranks[rank]["checks"][f"resumed-steps-{path}-{key}"]
        assert all(type(s) is int for s in steps) and steps == [W.SAVE_AT] * len(steps), (rank, path, steps)
        assert ranks[rank]["checks"][f"resumed-sharded-{path}-{key}"], (rank, path)


@pytest.mark.parametrize("key", SAVED)
def test_init_state_is_what_dcp_needs(ranks, key):
    """adamkit.distributed.init_state gives DCP a fresh state without stepping: parameters untouched, steps 0.

    Without it, DCP steps with zero gradients and lr=0 (step counters 1, and the parameters move for the
    lr-independent decays); that is harmless when the model is loaded afterwards, as in the resumes above.
    """
    for rank in range(2):
        assert set(ranks[rank]["checks"][f"init-steps-False-{key}"]) == {1}
        if key in RESHARDED:  # the 1 -> 2 resume starts with init_state
            assert not ranks[rank]["checks"][f"init-moved-True-{key}"]
            assert set(ranks[rank]["checks"][f"init-steps-True-{key}"]) == {0}


@pytest.mark.parametrize("key", KEYS)
def test_init_state_then_training_is_unchanged(key):
    cfg = BY_KEY[key]
    x, y = W.data()
    model = W.make_model()
    opt = adamkit.distributed.init_state(cfg.make(model.parameters()))
    assert all(opt.state[p]["step"] == 0 for p in model.parameters())
    W.train(model, opt, x, y, W.STEPS)
    assert_equal([p.detach() for p in model.parameters()], reference(key), f"init_state {key}")


# --------------------------------------------------------------------------------- loss-aware
def test_reduce_loss(ranks):
    assert ranks[0]["checks"]["reduce_loss"] == ranks[1]["checks"]["reduce_loss"] == (1.5 + 2.5) / 2


def test_reduce_loss_without_process_group():
    out = adamkit.distributed.reduce_loss(torch.tensor(2.5, requires_grad=True) * 2)
    assert out.dtype == torch.float64 and not out.requires_grad and out.item() == 5.0
    assert adamkit.distributed.reduce_loss(3).item() == 3.0
    with pytest.raises(ValueError, match="scalar"):
        adamkit.distributed.reduce_loss(torch.ones(2))


# --------------------------------------------------------------------------- low-precision state
LOW_RESHARDED = [c.key for c in LOW if c.resharded]


def _rows(n: int, parts: int, r: int) -> slice:
    """The rows of rank ``r`` of ``parts`` under FSDP2's dim-0 sharding (chunks of ceil(n / parts), maybe empty)."""
    c = -(-n // parts)
    return slice(min(r * c, n), min((r + 1) * c, n))


@functools.lru_cache(maxsize=None)
def emulated(key: str, schedule: tuple[tuple, ...] = ((2, W.STEPS),)) -> tuple[torch.Tensor, ...]:
    """FSDP2's low-precision run in one process: for each (parts, steps) of ``schedule``, each of ``parts`` ranks'
    rows of every parameter is a parameter of that rank's own optimizer (so its state tensors are the local
    shards, with the rank-local element indices and the same seeds), stepped with the rows of the
    full-batch gradient. Between phases the state is concatenated by rows and split again (a DCP resume on
    another number of ranks); a phase (parts, steps, other key) on as many parts instead converts each
    shard's state dict to the other config's state_dtype (``convert_state_dtype``) and goes on with it."""
    import torch.nn.functional as F

    model = W.make_model()
    x, y = W.data()
    params = list(model.parameters())
    state, opts, shards = None, None, None
    for phase in schedule:
        parts, count = phase[:2]
        cfg = BY_KEY[phase[2] if len(phase) > 2 else key]
        if opts is not None and parts == len(opts):  # the same shards: convert each one's state dict
            new = []
            for r, opt in enumerate(opts):
                target = cfg.make(shards[r])
                target.load_state_dict(adamkit.convert_state_dtype(opt.state_dict(), cfg.state_dtype or torch.float32))
                new.append(target)
            opts = new
        else:
            shards = [[p.detach()[_rows(p.shape[0], parts, r)].clone().requires_grad_() for p in params]
                      for r in range(parts)]
            opts = [cfg.make(s) for s in shards]
            if state is not None:
                for r, opt in enumerate(opts):
                    for i, (sp, p) in enumerate(zip(shards[r], params)):
                        opt.state[sp] = {k: v[_rows(p.shape[0], parts, r)].clone() if torch.is_tensor(v) else v
                                         for k, v in state[i].items()}
        for _ in range(count):
            model.zero_grad(set_to_none=True)
            F.mse_loss(model(x).float(), y).backward()
            for r, opt in enumerate(opts):
                for sp, p in zip(shards[r], params):
                    sp.grad = p.grad[_rows(p.shape[0], parts, r)].clone()
                opt.step()
            with torch.no_grad():
                for i, p in enumerate(params):
                    p.copy_(torch.cat([shards[r][i].detach() for r in range(parts)]))
        state = [{k: torch.cat([opts[r].state[shards[r][i]][k] for r in range(parts)]) if torch.is_tensor(v) else v
                  for k, v in opts[0].state[shards[0][i]].items()} for i in range(len(params))]
    return tuple(p.detach().clone() for p in params)


def test_low_precision_configs_ran(ranks):
    assert ranks[0]["low_precision"]["configs"] == LOW_KEYS == ranks[1]["low_precision"]["configs"]
    assert {c.state_dtype for c in LOW} == {torch.bfloat16, "int8"}


@pytest.mark.parametrize("key", LOW_KEYS)
def test_low_precision_fsdp_matches_the_emulated_shards(ranks, key):
    """FSDP2 steps each rank's shard as a tensor of its own: bit-close to the one-process emulation of that."""
    for rank in range(2):
        assert_close(ranks[rank]["low_precision"]["fsdp"][key], emulated(key), TOL, f"fsdp {key} rank {rank}")
    assert_equal(ranks[1]["low_precision"]["fsdp"][key], ranks[0]["low_precision"]["fsdp"][key], key)


@pytest.mark.parametrize("kind", ["fsdp", "zero"])
@pytest.mark.parametrize("key", LOW_KEYS)
def test_low_precision_close_to_single_process(ranks, key, kind):
    """Against one process only as close as the rounding noise: rank 1's rows (FSDP2) and the parameters of
    ZeRO's rank 1 (other positions in its optimizer, so other seeds) round with other bits. Two runs that
    differ only in their rounding bits differ by about as much as either differs from float32 state, so
    the bound is 3 · max |θ(state_dtype) − θ(float32 state)| of one process, over all parameters (a tensor
    of 5 elements alone is too few for a maximum)."""
    ref, exact = reference(key), reference(key.rsplit("-", 1)[0])
    noise = max((b - c).abs().max().item() for b, c in zip(ref, exact))
    for rank in range(2):
        got = ranks[rank]["low_precision"][kind][key]
        err = max((a - b).abs().max().item() for a, b in zip(got, ref))
        assert err <= 3 * noise, f"{kind} {key} rank {rank}: max |Δ| {err:.3e} > 3 · {noise:.3e} (the rounding noise)"
        assert all(torch.isfinite(a).all() for a in got)


@pytest.mark.parametrize("key", LOW_KEYS)
def test_low_precision_state_is_sharded_like_the_parameters(ranks, key):
    """Codes, scales and bfloat16 state are DTensors placed like the parameter; the scales' rows are sharded
    with the parameter's rows; step and rounding_seed are ints (also after each DCP resume)."""
    for rank in range(2):
        checks = ranks[rank]["low_precision"]["checks"]
        assert checks[f"sharded-{key}"], f"rank {rank}"
        assert checks[f"resumed-sharded-n2-{key}"], f"rank {rank}"
        if key in LOW_RESHARDED:
            assert checks[f"resumed-sharded-n1-{key}"], f"rank {rank}"
            assert checks[f"resumed-steps-n1-{key}"] == [W.SAVE_AT] * 4


@pytest.mark.parametrize("key", LOW_KEYS)
def test_low_precision_dcp_resume_on_same_ranks_is_bit_exact(ranks, key):
    for rank in range(2):
        low = ranks[rank]["low_precision"]
        assert_equal(low["fsdp_2to2"][key], low["fsdp"][key], f"DCP 2 -> 2 {key} rank {rank}")


@pytest.mark.parametrize("key", LOW_KEYS)
def test_low_precision_zero_resume_is_bit_exact(ranks, key):
    for rank in range(2):
        low = ranks[rank]["low_precision"]
        assert_equal(low["zero_resumed"][key], low["zero"][key], f"zero resume {key} rank {rank}")


@pytest.mark.parametrize("change", ["1to2", "2to1"])
@pytest.mark.parametrize("key", LOW_RESHARDED)
def test_low_precision_dcp_resume_on_other_number_of_ranks(ranks, key, change):
    """The int8 blocks lie within rows, so a checkpoint resharded along dim 0 holds whole blocks: the resumed
    run equals the emulation whose state is cut or joined by rows at the save."""
    before, after = (1, 2) if change == "1to2" else (2, 1)
    want = emulated(key, ((before, W.SAVE_AT), (after, W.STEPS - W.SAVE_AT)))
    assert_close(ranks[0]["low_precision"][f"fsdp_{change}"][key], want, TOL, f"DCP {change} {key}")


def test_low_precision_conversion_of_sharded_state(ranks):
    """convert_state_dtype on FSDP2 optimizer state dicts (DTensors), float32 -> int8 -> bfloat16 -> float32, one
    step between: each shard is converted on its rank (codes and scales stay DTensors placed like the
    parameters), as the emulation converts each rank's shard state."""
    want = emulated(W.CONVERSION[0][0], tuple((2, 1, key) for key in W.CONVERSION[0]))
    for rank in range(2):
        low = ranks[rank]["low_precision"]
        assert low["checks"]["converted-sharded"] == [True] * (len(W.CONVERSION[0]) - 1), rank
        assert_close(low["converted"], want, TOL, f"converted rank {rank}")


@pytest.mark.parametrize("saved,into,says", [
    ("adamw-1-loop-int8", "adamw-1-loop", r'state_dtype="int8", .*state_dtype=torch\.float32.*convert_state_dtype'),
    ("adamw-1-loop-bf16", "adamw-1-loop-int8", r"Missing key in checkpoint state_dict: .*exp_avg_finite_absmax"),
    ("adamw-1-loop", "adamw-1-loop-int8", r"Missing key in checkpoint state_dict: .*rounding_seed"),
])
def test_low_precision_dcp_checkpoint_of_another_state_dtype_is_refused(ranks, saved, into, says):
    """A DCP checkpoint of another state_dtype raises, never loads silently: into float32 placeholders DCP
    copies int8 codes in place (it loads into the live state tensors) and load_state_dict refuses the group's
    state_dtype; into int8 placeholders DCP itself misses the scales or seeds and changes nothing."""
    import re

    for rank in range(2):
        outcome, unchanged = ranks[rank]["low_precision"]["checks"][f"wrong-format-{saved}-into-{into}"]
        assert outcome is not None and re.search(says, outcome), (rank, outcome)
        if into.endswith("int8"):
            assert unchanged, rank


def test_low_precision_zero_checkpoint_converts(ranks):
    """ZeroRedundancyOptimizer.load_state_dict writes state and group keys straight into each rank's optimizer
    (adamkit's load_state_dict, and its checks, do not run there): a consolidated float32 checkpoint goes
    into an int8 ZeRO optimizer converted first; it then keeps int8 state and trains as closely to one
    process as the rounding noise allows."""
    key = "adamw-1-loop-int8"
    ref, exact = reference(key), reference("adamw-1-loop")
    noise = max((b - c).abs().max().item() for b, c in zip(ref, exact))
    for rank in range(2):
        low = ranks[rank]["low_precision"]
        formats = low["checks"]["zero-converted-formats"]
        assert formats and all(sd == "int8" for sd, _, _ in formats), formats
        assert all(dtype == ("torch.uint8" if dim >= 2 else "torch.bfloat16") for _, dim, dtype in formats), formats
        err = max((a - b).abs().max().item() for a, b in zip(low["zero_converted"], ref))
        assert err <= 3 * noise, (rank, err, noise)
