"""Optimizers by name, from dicts and TOML files; the param-group helper."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import adamkit
from optimizer_table import OPTIMIZERS


def params():
    return [torch.zeros(2, requires_grad=True)]


def test_list_optimizers_names_every_class():
    assert adamkit.list_optimizers() == ["adam", "adamw", "amsgrad", "eadam", "adabelief", "adopt", "agd"]
    assert {info.name for info in OPTIMIZERS} == set(adamkit.list_optimizers())
    for info in OPTIMIZERS:
        assert adamkit.get_optimizer_class(info.name) is info.cls


def test_create_optimizer_by_name_with_arguments():
    opt = adamkit.create_optimizer("AdaBelief", params(), lr=0.1, eps=1e-8, betas=[0.8, 0.99])
    assert isinstance(opt, adamkit.AdaBelief)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[0]["betas"] == (0.8, 0.99)


def test_create_optimizer_errors_are_clear():
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; choose one of: adam, adamw"):
        adamkit.create_optimizer("sgd", params())
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['delta'\] for optimizer 'adam'"):
        adamkit.create_optimizer("adam", params(), delta=1e-5)
    with pytest.raises(ValueError, match="eps must be"):
        adamkit.create_optimizer("adam", params(), eps=-1)


def test_config_from_dict_and_optimizer_table():
    opt = adamkit.create_optimizer_from_config({"name": "agd", "lr": 1e-4, "delta": 1e-14}, params())
    assert isinstance(opt, adamkit.AGD) and opt.param_groups[0]["delta"] == 1e-14
    nested = {"optimizer": {"name": "adopt", "clip_lambda": None}}
    opt = adamkit.create_optimizer_from_config(nested, params())
    assert opt.param_groups[0]["clip_lambda"] is None


def test_config_from_toml_file(tmp_path):
    path = tmp_path / "opt.toml"
    path.write_text('name = "adabelief"\nlr = 1e-3\nbetas = [0.9, 0.999]\neps = 1e-8\nrectify = false\n')
    opt = adamkit.create_optimizer_from_config(path, params())
    assert isinstance(opt, adamkit.AdaBelief)
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["rectify"] is False
    assert adamkit.load_optimizer_config(str(path))["name"] == "adabelief"


@pytest.mark.parametrize(
    "text,match",
    [
        ('lr = 1e-3\n', "missing 'name'"),
        ('name = "nadam"\n', "unknown optimizer 'nadam'"),
        ('name = "adam"\nbeta = 0.9\n', r"unknown argument\(s\) \['beta'\]"),
        ('name = "adam"\nlr = -1.0\n', "lr must be a finite number >= 0"),
        ('name = "adam"\namsgrad = "yes"\n', "amsgrad must be True or False"),
        ('name = "adam"\nlr = \n', "not valid TOML"),
    ],
)
def test_config_file_errors_name_the_file_and_problem(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        adamkit.create_optimizer_from_config(path, params())
    assert "bad.toml" in str(err.value)


def test_config_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        adamkit.load_optimizer_config(tmp_path / "absent.toml")


def test_param_groups_weight_decay_excludes_biases_and_norms():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Conv1d(8, 8, 3), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model[4].weight.requires_grad_(False)
    groups = adamkit.param_groups_weight_decay(model, 0.05, no_decay=["2.weight"], lr=1e-3)
    decay, plain = groups
    assert decay["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert decay["lr"] == plain["lr"] == 1e-3
    assert [id(p) for p in decay["params"]] == [id(model[0].weight)]
    named = dict(model.named_parameters())
    expected_plain = {"0.bias", "1.weight", "1.bias", "2.weight", "2.bias", "3.weight", "3.bias", "4.bias"}
    assert {id(named[n]) for n in expected_plain} == {id(p) for p in plain["params"]}
    opt = adamkit.AdamW(groups)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    with pytest.raises(ValueError, match="no_decay names parameters the model does not have"):
        adamkit.param_groups_weight_decay(model, 0.05, no_decay=["head.weight"])
