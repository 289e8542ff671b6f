"""A store of an older benchmark version is not resumed silently."""
from __future__ import annotations

import json

import pytest

from adamkit.bench import protocol
from adamkit.bench.store import ResultStore, StoreError
from adamkit.bench.suite import parse_suite
from adamkit.bench.sweep import check_version, run_sweep


def test_resuming_a_store_of_an_older_protocol_version_stops_with_what_to_do(tmp_path):
    store = ResultStore(tmp_path / "results.sqlite")
    check_version(store)  # an empty store: any version may start it
    spec = {"problem": "beale", "optimizer": "adam", "seed": 0, "hparams": {}, "steps": 5}
    store.put("h" * 20, spec, {"status": "done", "final": {"gap": 1.0}, "seconds": 0.1, "bench_version": 2})
    store.set_meta("bench", json.dumps({"version": 2}))
    suite = parse_suite({"name": "t", "optimizers": ["adam"], "problems": [{"name": "beale", "steps": 5}]})
    with pytest.raises(StoreError) as info:
        run_sweep(suite, store, executor=None)
    text = str(info.value)
    assert "benchmark version 2" in text and f"version {protocol.BENCH_VERSION}" in text and "new --out" in text
    store.set_meta("bench", json.dumps({"version": protocol.BENCH_VERSION}))
    check_version(store)  # the same version resumes
