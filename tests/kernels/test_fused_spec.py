"""The fused kernel's seam is generated from the declarations: the committed C block, the packer, the check."""
from __future__ import annotations

import re
from typing import NamedTuple

import pytest
import torch

import adamkit
from adamkit.core.declaration import Coefficients, FusedKernel
from adamkit.kernels.fused import spec as fused_spec
from adamkit.registry import algorithm_classes

REGISTERED = fused_spec.kernel_classes(algorithm_classes())


def test_committed_block_is_what_the_declarations_generate():
    assert fused_spec.committed_block() == fused_spec.generate(REGISTERED), (
        "kernel.c is stale: run `python -m adamkit.kernels.fused.spec --write`")


def test_every_kernel_has_one_body_and_one_range_function_in_its_own_file():
    source = fused_spec.SOURCE.read_text()
    for body in REGISTERED:
        text = (fused_spec.SOURCE.parent / fused_spec.BODIES / f"{body}.h").read_text()
        assert len(re.findall(rf"^#define {body.upper()}_BODY\(", text, re.M)) == 1, body
        assert len(re.findall(rf"^#define RANGE_{body}\(", text, re.M)) == 1, body
        assert len(re.findall(rf"RANGE_HEAD\({body}, ", text)) == 1, body
        assert f'#include "{fused_spec.BODIES}/{body}.h"' in fused_spec.committed_block(), body
    assert "TABLE[N_KERNELS]" in source and "algo >= N_KERNELS" in source


def test_ids_follow_the_registry_and_variants_share_their_base_kernel():
    assert list(fused_spec.ALGORITHMS) == list(REGISTERED)
    assert adamkit.AdamW.fused_kernel is adamkit.Adam.fused_kernel is adamkit.AMSGrad.fused_kernel


def test_packer_puts_each_flag_in_its_field_and_scalars_in_declared_order():
    p = torch.zeros(3)
    opt = adamkit.AGD([p], amsgrad=True, win=True, weight_decay=0.1)
    group = opt.param_groups[0]
    c = opt.coefficients(group, 0, None)
    call = fused_spec.kernel_call(adamkit.AGD, c, opt.state_names(group), maximize=True)
    fields = fused_spec.layout_of(adamkit.AGD).flags
    bits = fused_spec.FLAG_BITS
    unpacked = {name: (call.flags >> (bits * i)) & ((1 << bits) - 1) for i, name in enumerate(fields)}
    assert unpacked == {"maximize": 1, **{k: int(v) for k, v in c.flags._asdict().items()}}
    assert unpacked["first_step"] == 1 and unpacked["win"] == 1 and unpacked["amsgrad"] == 1
    assert call.scalars == tuple(c.scalars) and call.names == ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "z")
    no_ams = adamkit.AGD([torch.zeros(2)], win=True)
    call = fused_spec.kernel_call(adamkit.AGD, no_ams.coefficients(no_ams.param_groups[0], 3, None),
                                  no_ams.state_names(no_ams.param_groups[0]), maximize=False)
    assert call.names == ("exp_avg", "exp_avg_sq", None, "z")  # z keeps its slot


def test_a_declaration_out_of_step_with_the_c_source_is_refused():
    class Scalars(NamedTuple):  # Adam's scalars in another order
        beta2: float
        beta1: float
        eps: float
        decay_factor: float
        coupled_decay: float
        step_size: float
        sqrt_bc2: float

    class Reordered(adamkit.Adam):
        pass

    Reordered.Scalars = Scalars
    c = Coefficients(adamkit.Adam.Flags(False, False, False), Scalars(0.999, 0.9, 1e-8, 1.0, 0.0, 1e-3, 1.0))
    with pytest.raises(RuntimeError, match="differs from kernel.c's layout"):
        fused_spec.kernel_call(Reordered, c, ("exp_avg", "exp_avg_sq"), False)

    class Unknown(adamkit.Adam):
        fused_kernel = FusedKernel("nonesuch")

    with pytest.raises(RuntimeError, match="no kernel body 'nonesuch'"):
        fused_spec.kernel_call(Unknown, c, ("exp_avg",), False)
