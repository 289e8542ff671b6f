"""Until adamkit's optimizers take ``state_dtype`` (issue 13, being added in adamkit.optim), the bench's view of
them is given the option so that the ``precision`` suite loads and plans: its value is checked with the real
checker and then dropped (the run is float32). Nothing is patched once the optimizers accept it, so the tests
then run against the real option. Remove this file when ``state_dtype`` is in every optimizer's signature."""
from __future__ import annotations

import pytest

import adamkit
from adamkit.bench import optimizers as bench_optimizers


def state_dtype_supported() -> bool:
    return all("state_dtype" in bench_optimizers.arguments(n) for n in adamkit.list_optimizers())


@pytest.fixture(autouse=True)
def _state_dtype_option(monkeypatch):
    if state_dtype_supported():
        yield
        return
    from adamkit.optim.state_format import check_state_dtype

    real_arguments, real_create = bench_optimizers.arguments, bench_optimizers.create

    def arguments(name):
        names = real_arguments(name)
        return names if name in bench_optimizers.BASELINES else names + ["state_dtype"]

    def create(name, params, **hparams):
        if "state_dtype" in hparams and name not in bench_optimizers.BASELINES:
            check_state_dtype("state_dtype", hparams.pop("state_dtype"))
        return real_create(name, params, **hparams)

    monkeypatch.setattr(bench_optimizers, "arguments", arguments)
    monkeypatch.setattr(bench_optimizers, "create", create)
    from adamkit.bench import suite

    monkeypatch.setattr(suite, "_REJECTIONS", {})  # (memoised answers of the unpatched optimizers)
    yield
