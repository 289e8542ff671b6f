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
BY_KEY = {c.key: c for c in CONFIGS}
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
