"""Every registered optimizer declares what the bench needs, once, on its class."""
from __future__ import annotations

import pytest

import adamkit
from adamkit.core.benchspec import BenchSpec


@pytest.mark.parametrize("name", adamkit.list_optimizers())
def test_every_optimizer_declares_its_bench_spec(name):
    cls = adamkit.get_optimizer_class(name)
    spec = cls.bench
    assert isinstance(spec, BenchSpec)
    args = adamkit.registry.optimizer_arguments(name)
    if spec.eps_name is not None:
        assert spec.eps_name in args
        low, high = spec.eps_range
        assert low <= args[spec.eps_name] <= high, "the default lies in the searched range"
    for arm, config in spec.paper_configs.items():
        assert set(config) <= set(args), (arm, config)
    colors = {adamkit.get_optimizer_class(n).bench.color for n in adamkit.list_optimizers()}
    assert len(colors) == len(adamkit.list_optimizers()), "one colour per optimizer"


def test_bench_spec_checks_its_values():
    with pytest.raises(ValueError, match="paper_eps"):
        BenchSpec(color="#000000", eps_range=(1e-10, 1e-6), paper_eps=(1e-16,))
    with pytest.raises(ValueError, match="color"):
        BenchSpec(color="red", eps_range=(1e-10, 1e-6))
    with pytest.raises(ValueError, match="eps_name and eps_range"):
        BenchSpec(color="#000000", eps_name="eps")
    with pytest.raises(ValueError, match="lr_scale"):
        BenchSpec(color="#000000", eps_range=(1e-10, 1e-6), lr_scale=0)
    assert BenchSpec(color="#000000", eps_name="delta", eps_range=(1e-14, 1e-5)).search_space() == {
        "delta": (1e-14, 1e-5)}
