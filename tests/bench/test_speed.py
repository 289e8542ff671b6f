"""adamkit speed: the layouts it measures and the report it writes (timing itself is not asserted)."""
import argparse

import pytest

from adamkit.bench import speed


def test_layouts_have_the_documented_sizes():
    resnet = speed.layout_shapes("resnet18")
    assert len(resnet) == 62
    total = sum(__import__("math").prod(s) for s in resnet)
    assert total == 11_689_512  # torchvision's resnet18 parameter count
    small = speed.layout_shapes("many-small")
    assert len(small) == 2000 and all(1024 <= s[0] <= 4096 for s in small)
    assert speed.layout_shapes("one-big") == [(8192, 8192)]  # 64M elements, 2-D so that int8 state applies
    assert speed.layout_shapes("many-small-new-grads") == small
    with pytest.raises(ValueError):
        speed.layout_shapes("nope")


def test_options_and_markdown():
    parser = argparse.ArgumentParser()
    speed.configure(parser)
    args = parser.parse_args(["--layouts", "resnet18", "--algorithms", "adopt,agd", "--quick"])
    assert args.layouts == ["resnet18"] and args.algorithms == ["adopt", "agd"] and args.quick
    with pytest.raises(SystemExit):
        parser.parse_args(["--algorithms", "sgd"])
    row = dict(layout="resnet18", library="adamkit", optimizer="adopt", path="default", implementation="fused",
               step_ms=10.0, step_ms_spread=[9.0, 12.0], ratio_to_torch_fused_adamw=0.9, ratio_spread=[0.8, 1.1],
               reference="torch adamw fused", ratio_to_reference=0.9, ratio_to_reference_spread=[0.8, 1.1],
               bandwidth_gbs=20.0, bandwidth_share=0.5, state_bytes_per_param=8.0, peak_extra_share=0.01, repeats=3,
               ratio_interval=[0.88, 0.8, 0.97], ratio_to_reference_interval=[0.88, 0.8, 0.97])
    text = speed.markdown(dict(machine=speed.machine_info(1e10), rows=[row]))
    assert ("| resnet18 | adamkit | adopt | default (fused) | 10.0 (9.0-12.0) | 0.90 (0.80-1.10) | 0.88 [0.80-0.97] "
            "| 0.88 [0.80-0.97] |") in text


def test_ratio_intervals_are_the_bootstrap_of_the_geometric_mean():
    import math

    ratios = [0.8, 0.9, 1.0, 0.85, 0.95, 0.9]
    mean, low, high = speed._ratio_interval(ratios)
    assert math.isclose(mean, math.exp(sum(map(math.log, ratios)) / len(ratios)))
    assert min(ratios) <= low < mean < high <= max(ratios) and high < 1.0
    assert speed._ratio_interval(ratios) == [mean, low, high]  # fixed seed: the same interval
    assert speed._ratio_interval([1.0, 1.0]) == [1.0, 1.0, 1.0] and speed._ratio_interval([]) is None


def test_measure_times_amsgrad_against_torchs_fused_amsgrad(monkeypatch):
    monkeypatch.setattr(speed, "layout_shapes", lambda name: [(256,), (64, 3)])
    real_probe = speed.stream_bandwidth
    monkeypatch.setattr(speed, "stream_bandwidth", lambda: real_probe(nbytes=2**20, repeats=1))
    result = speed.measure(["tiny"], ["adam", "amsgrad"], paths=["default"], torch_paths=["fused"], repeats=2,
                           steps=1, third_party=False, log=lambda msg: None)
    rows = {(r["library"], r["optimizer"], r["path"]): r for r in result["rows"]}
    assert set(rows) == {("torch", "adamw", "fused"), ("torch", "amsgrad", "fused"),
                         ("adamkit", "adam", "default"), ("adamkit", "amsgrad", "default")}
    assert rows["adamkit", "amsgrad", "default"]["reference"] == rows["torch", "amsgrad", "fused"]["reference"]
    assert rows["adamkit", "amsgrad", "default"]["reference"] != rows["adamkit", "adam", "default"]["reference"]
    assert rows["torch", "adamw", "fused"]["ratio_to_torch_fused_adamw"] == 1.0
    assert rows["torch", "amsgrad", "fused"]["ratio_to_reference"] == 1.0
    assert rows["torch", "adamw", "fused"]["ratio_interval"] == [1.0, 1.0, 1.0]
    low, high = rows["adamkit", "adam", "default"]["ratio_interval"][1:]
    assert 0 < low <= high
    assert rows["adamkit", "amsgrad", "default"]["state_bytes_per_param"] == 12


def test_new_gradients_layout_replaces_the_gradients_before_each_timed_step(monkeypatch):
    """many-small-new-grads: zero_grad(set_to_none=True) and new gradient tensors before every timed step."""
    seen = []

    class Spy:
        def __init__(self, params):
            self.params, self.state = params, {}

        def zero_grad(self, set_to_none=True):
            assert set_to_none
            for p in self.params:
                p.grad = None

        def step(self):
            seen.append([p.grad for p in self.params])  # kept alive: no id is reused

    import torch

    init = [torch.zeros(3), torch.zeros(2)]
    grads = [torch.ones(3), torch.ones(2)]
    cand = speed.Candidate("spy", "adam", "default", Spy)
    speed._time_candidate(cand, init, grads, steps=3, new_grads=True)
    ids = [tuple(id(g) for g in step) for step in seen]
    assert len(ids) == 4 and len(set(ids)) == 4 and ids[0] == tuple(id(g) for g in grads)
    seen.clear()
    speed._time_candidate(cand, init, grads, steps=3, new_grads=False)
    assert len({tuple(id(g) for g in step) for step in seen}) == 1


def test_algorithms_and_references_come_from_the_declarations():
    import adamkit

    assert speed.ALGORITHMS == tuple(adamkit.list_optimizers())
    assert set(speed.STEP_DEPENDENT) == {"adabelief", "adopt", "agd"}
    ref = speed._torch_reference("amsgrad", fused=True)
    assert ref.label == "torch:amsgrad:fused" and speed._torch_reference("adam", fused=True) is None


def test_state_dtypes_report_bytes_per_parameter_and_the_ratio_to_float32_state(monkeypatch):
    monkeypatch.setattr(speed, "layout_shapes", lambda name: [(64, 3, 3, 3), (64,), (10, 512)])
    rows = speed.measure_state_dtypes(["tiny"], ["adam", "amsgrad"], repeats=2, steps=1, third_party=False,
                                      log=lambda msg: None)
    by = {(r["optimizer"], r["state_dtype"]): r for r in rows}
    assert set(by) == {(a, d) for a in ("adam", "amsgrad") for d in ("float32", "bfloat16", "int8")}
    numel = 64 * 27 + 64 + 5120
    assert by["adam", "float32"]["state_bytes_per_param"] == 8
    assert by["adam", "bfloat16"]["state_bytes_per_param"] == 4
    assert by["amsgrad", "bfloat16"]["state_bytes_per_param"] == 6
    # int8: one byte a code, 4 per block scale (rows of 27 and 512: one and two blocks), bfloat16 for the vector
    expected = 2 * (64 * 27 + 64 * 4 + 2 * 64 + 5120 + 10 * 2 * 4) / numel
    assert abs(by["adam", "int8"]["state_bytes_per_param"] - expected) < 1e-9
    assert by["adam", "float32"]["ratio_to_float32"] == 1.0
    assert all(r["ratio_to_float32"] > 0 and r["repeats"] == 2 for r in rows)
    assert by["adam", "float32"]["ratio_interval"] == [1.0, 1.0, 1.0]
    assert all(r["ratio_interval"][1] <= r["ratio_interval"][0] <= r["ratio_interval"][2] for r in rows)
    text = speed.markdown_state_dtypes(rows)
    assert "| tiny | adam | int8 |" in text and "state B/param" in text


def test_state_dtype_options():
    parser = argparse.ArgumentParser()
    speed.configure(parser)
    args = parser.parse_args([])
    assert args.state_dtypes == ["float32", "bfloat16", "int8"] and args.state_layouts == ["resnet18", "one-big"]
    assert parser.parse_args(["--state-dtypes", ""]).state_dtypes == []
    with pytest.raises(SystemExit):
        parser.parse_args(["--state-dtypes", "float16"])


def test_torchao_is_timed_as_the_declarations_name_it_where_it_steps_cpu_tensors(monkeypatch):
    """A stand-in torchao.optim: Adam and AdamW map to its 8-bit classes, AMSGrad to Adam8bit(amsgrad=True);
    algorithms without a torchao twin, and a class whose CPU step fails, are left out."""
    import sys
    import types

    import torch

    made = []

    def fake(name, fails=False):
        def factory(params, **kwargs):
            made.append((name, kwargs))
            opt = torch.optim.Adam(params, **kwargs)
            if fails:
                def broken(*args, **kw):
                    raise RuntimeError("CUDA only")
                opt.step = broken
            return opt
        return factory

    optim = types.ModuleType("torchao.optim")
    optim.Adam8bit, optim.AdamW8bit = fake("Adam8bit"), fake("AdamW8bit")
    package = types.ModuleType("torchao")
    package.optim = optim
    monkeypatch.setitem(sys.modules, "torchao", package)
    monkeypatch.setitem(sys.modules, "torchao.optim", optim)

    def torchao_candidates(algorithms):  # bitsandbytes, where installed, adds its own rows
        return [c for c in speed._eight_bit_candidates(algorithms) if c.library == "torchao"]

    cands = torchao_candidates(["adam", "adamw", "amsgrad", "adopt"])
    assert [(c.library, c.optimizer, c.path) for c in cands] == [
        ("torchao", "adam", "8bit"), ("torchao", "adamw", "8bit"), ("torchao", "amsgrad", "8bit")]
    made.clear()
    cands[2].make([torch.nn.Parameter(torch.zeros(3))])
    assert made == [("Adam8bit", {"amsgrad": True})]
    optim.AdamW8bit = fake("AdamW8bit", fails=True)
    assert [c.optimizer for c in torchao_candidates(["adamw"])] == []


def test_state_bytes_count_the_tensors_inside_a_state_subclass():
    """torchao keeps 8-bit state in a tensor subclass that presents float32: its codes and scales count."""
    import torch

    class Quantized(torch.Tensor):
        @staticmethod
        def __new__(cls, codes, scale, shape):
            return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=torch.float32)

        def __init__(self, codes, scale, shape):
            self.codes, self.scale = codes, scale

        def __tensor_flatten__(self):
            return ["codes", "scale"], None

        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            raise NotImplementedError(func)  # no operation is run on it here

    q = Quantized(torch.zeros(512, dtype=torch.uint8), torch.zeros(2), (512,))
    assert q.element_size() == 4 and speed._state_bytes(q) == 512 + 8
    assert speed._state_bytes(torch.zeros(5, dtype=torch.bfloat16)) == 10
