"""Adding an algorithm costs one declaration: a test-only algorithm, declared as docs/adding-an-algorithm.md shows,
gets the loop, foreach and compiled paths, the registry and the generic contract tests of test_contract.py for
free."""
from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

import adamkit
import test_contract as contract
from adamkit.core import checks
from adamkit.core.declaration import Coefficients, Hyperparameter as H
from adamkit.core.hyperparameters import FOREACH, FUSED, MAXIMIZE, PARAM_ROUNDING, STATE_DTYPE, learning_rate
from adamkit.kernels import compiled, implementation_of
from adamkit.optim.base import AdamkitOptimizer
from backend_paths import paths
from optimizer_table import OptimizerInfo, _same


# ---------------------------------------------------------------- the one module
class LionFlags(NamedTuple):
    decoupled_decay: bool


class LionScalars(NamedTuple):
    beta1: float
    beta2: float
    decay_factor: float
    lr: float


class ToyLion(AdamkitOptimizer):
    r"""Lion (Chen et al. 2023), as a test of the declarations: ``c = β1·m + (1-β1)·g``,
    ``θ ← θ·(1 - α·λ) - α·sign(c)``, ``m ← β2·m + (1-β2)·g``."""

    name = "toy-lion"
    hyperparameters = {
        "lr": learning_rate(1e-4),
        "betas": H((0.9, 0.99), checks.betas, "(β1, β2), each in [0, 1)"),
        "weight_decay": H(0.0, checks.non_negative, "λ, decoupled"),
        "maximize": MAXIMIZE,
        "foreach": FOREACH,
        "fused": FUSED,
        "state_dtype": STATE_DTYPE,
        "param_rounding": PARAM_ROUNDING,
    }
    Flags, Scalars = LionFlags, LionScalars
    state_formats = {"exp_avg": "signed"}  # how each state is stored under state_dtype (docs/low-precision.md)

    def state_names(self, group):
        return ("exp_avg",)

    def coefficients(self, group, step, loss):
        beta1, beta2 = group["betas"]
        lr, wd = float(group["lr"]), group["weight_decay"]
        return Coefficients(LionFlags(decoupled_decay=wd != 0.0), LionScalars(beta1, beta2, 1.0 - lr * wd, lr))

    @staticmethod
    def update(param, grad, state, c):
        f, s = c
        exp_avg = state["exp_avg"]
        if f.decoupled_decay:
            param.mul_(s.decay_factor)
        direction = exp_avg.mul(s.beta1).add_(grad.mul(1 - s.beta1)).sign()
        param.sub_(direction.mul(s.lr))
        exp_avg.mul_(s.beta2).add_(grad.mul(1 - s.beta2))


# ------------------------------------------------------------- the one table row
# (weight_decay stands in for eps in the generic check of a non-negative hyperparameter's message)
TOY = OptimizerInfo("toy-lion", ToyLion, None, _same, ({}, {"weight_decay": 0.1}), eps_name="weight_decay")
VARIANTS = [pytest.param(v, id=f"toy-{i}") for i, v in enumerate(TOY.variants)]
#: every path but the fused kernel (the toy has no C body) and Triton's interpreter (slow)
PATHS = [pytest.param(options, id=name) for name, options in paths(exclude=("fused", "triton")).items()]


@pytest.fixture(autouse=True)
def cheap_compiles(monkeypatch):
    """The compiled path traced by dynamo without code generation (inductor is tested in tests/kernels/test_compiled.py)."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")


@pytest.fixture
def registered():
    adamkit.registry.register(ToyLion)
    yield
    adamkit.registry.unregister(ToyLion.name)


def test_it_is_registered_and_created_by_name(registered):
    assert "toy-lion" in adamkit.list_optimizers()
    opt = adamkit.create_optimizer("toy-lion", [torch.zeros(2)], lr=1e-3, weight_decay=0.1)
    assert type(opt) is ToyLion and opt.defaults["weight_decay"] == 0.1
    with pytest.raises(ValueError, match="unknown argument"):
        adamkit.create_optimizer("toy-lion", [torch.zeros(2)], eps=1e-8)
    assert adamkit.registry.optimizer_arguments("toy-lion")["lr"] == 1e-4  # the declared default


def test_the_update_is_lion():
    p = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    p.grad = torch.tensor([0.5, 0.0, -4.0], dtype=torch.float64)
    ToyLion([p], lr=0.1, weight_decay=0.5).step()
    expected = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) * (1 - 0.05) - 0.1 * torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(p, expected.double(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("variant", VARIANTS)
def test_paths_agree(variant, path):
    contract.test_every_path_agrees_with_the_loop(TOY, variant, path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_generic_contract_per_path(variant, path):
    contract.test_resume_is_bit_exact(TOY, variant, path)
    contract.test_grad_is_never_modified(TOY, variant, path)
    contract.test_complex_params_are_stepped_as_their_real_view(TOY, variant, path)
    for dtype in (torch.float16, torch.bfloat16):
        contract.test_half_precision_params_step_in_float32(TOY, variant, path, dtype)
    contract.test_params_without_grad_are_skipped_and_late_joiners_start_their_own_schedule(TOY, path)


def test_generic_contract():
    for check in (contract.test_state_dict_keeps_flags_and_state_dtypes, contract.test_load_state_dict_converts_tensor_steps,
                  contract.test_sparse_gradients_are_refused, contract.test_first_step_moves_as_the_algorithm_says,
                  contract.test_maximize_equals_minimising_the_negated_gradient,
                  contract.test_closure_is_evaluated_with_grad_and_its_loss_returned,
                  contract.test_per_group_hyperparameters_and_add_param_group,
                  contract.test_lr_scheduler_drives_the_optimizer, contract.test_invalid_eps_and_range_in_message,
                  contract.test_foreach_and_fused_together_refused):
        check(TOY)
    for arg, value, match in contract.BAD_COMMON:
        contract.test_invalid_hyperparameters_raise_naming_the_argument(TOY, arg, value, match)


def test_no_fused_kernel_declared_means_the_default_is_the_loop_and_fused_true_says_so():
    p = torch.randn(3)
    p.grad = torch.randn(3)
    opt = ToyLion([p])
    assert implementation_of(opt, opt.param_groups[0], [p]) == "loop"
    with pytest.raises(RuntimeError, match="no fused implementation"):
        ToyLion([p], fused=True).step()


def test_the_compile_recipe_builds_one_graph():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    p = torch.randn(4, dtype=torch.float64)
    opt = ToyLion([p], lr=torch.tensor(1e-3, dtype=torch.float64), foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t))
    step = torch.compile(lambda: opt.step(), backend="eager")
    for _ in range(6):
        p.grad = torch.randn(4, dtype=torch.float64)
        step()
        sched.step()
    assert counters["stats"]["unique_graphs"] == 1
