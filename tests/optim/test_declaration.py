"""Each algorithm is declared once: signature, defaults, checks and the coefficient records come from it."""
from __future__ import annotations

import enum
import inspect

import pytest
import torch

import adamkit
from adamkit.core.declaration import Coefficients, flag_fields
from optimizer_table import OPTIMIZERS

INFO_IDS = [info.name for info in OPTIMIZERS]


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_signature_and_defaults_come_from_the_declaration(info):
    cls = info.cls
    signature = inspect.signature(cls.__init__).parameters
    declared = cls.hyperparameters
    in_signature = [n for n, h in declared.items() if h.in_signature]
    assert list(signature)[2:] == in_signature
    for name in in_signature:
        assert signature[name].default == declared[name].default
        kind = inspect.Parameter.KEYWORD_ONLY if declared[name].keyword_only else inspect.Parameter.POSITIONAL_OR_KEYWORD
        assert signature[name].kind == kind, name
    opt = cls([torch.zeros(1)])
    assert opt.defaults == {n: h.check(n, h.default) for n, h in declared.items() if h.stored}
    for name, h in declared.items():
        if h.in_signature and h.doc:
            assert f"{name}: {h.doc}" in cls.__doc__  # the Args section is generated too


def test_variants_derive_from_adam():
    base = adamkit.Adam.hyperparameters
    for cls, changed in ((adamkit.AdamW, {"weight_decay", "decoupled_weight_decay"}), (adamkit.AMSGrad, {"amsgrad"})):
        assert cls.hyperparameters.keys() == base.keys()
        assert {n for n in base if cls.hyperparameters[n] is not base[n]} == changed
    assert adamkit.AdamW([torch.zeros(1)]).defaults["decoupled_weight_decay"] is True
    assert adamkit.AMSGrad([torch.zeros(1)]).defaults["amsgrad"] is True
    with pytest.raises(TypeError):
        adamkit.AdamW([torch.zeros(1)], decoupled_weight_decay=False)  # fixed by the variant: not an argument


@pytest.mark.parametrize("info", OPTIMIZERS, ids=INFO_IDS)
def test_coefficients_are_flags_and_scalars_and_flags_ignore_the_learning_rate(info):
    for variant in info.variants:
        flags_seen = []
        for lr in (1e-3, 0.5, torch.tensor(0.02)):
            opt = info.make([torch.zeros(2)], lr=lr, **variant)
            group = opt.param_groups[0]
            for step in (0, 1, 7):
                c = opt.coefficients(group, step, None)
                assert isinstance(c, Coefficients)
                assert type(c.flags) is info.cls.Flags and type(c.scalars) is info.cls.Scalars
                for name, kind in flag_fields(info.cls.Flags).items():
                    value = getattr(c.flags, name)
                    assert type(value) is bool if kind is bool else isinstance(value, enum.IntEnum), name
                assert all(type(x) is float for x in c.scalars), c.scalars
                flags_seen.append((step, c.flags))
        by_step = {}
        for step, flags in flags_seen:
            by_step.setdefault(step, set()).add(flags)
        assert all(len(v) == 1 for v in by_step.values()), by_step  # the learning rate never changes a flag
