"""adamkit speed --device cuda, planned and checked on the CPU: the layouts, the byte arithmetic of the roofline,
the dry run, the error without CUDA, the measurement's rows (on CPU tensors), the targets and the GPU script."""
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

from adamkit import cli
from adamkit.bench import speed_cuda

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")
N_BIG = 8192 * 8192


def _speed(capsys, *argv):
    code = cli.main(["speed", *argv])
    return code, capsys.readouterr().out


def test_the_decoder_layout_has_about_a_billion_parameters_and_scales_down():
    shapes = speed_cuda.decoder_shapes()
    d, vocab, f = 2048, 50304, 8192
    assert sum(math.prod(s) for s in shapes) == 2 * vocab * d + 16 * (4 * d * d + 2 * d * f + 2 * d) + d
    assert abs(sum(math.prod(s) for s in shapes) / 1e9 - 1) < 0.02
    assert len(shapes) == 2 + 16 * 8 + 1
    for scale in (0.5, 0.1, 0.01):
        n = sum(math.prod(s) for s in speed_cuda.decoder_shapes(scale))
        assert abs(n / (scale * 1.011e9) - 1) < 0.15, (scale, n)  # widths rounded to multiples of 64
    for bad in (0, -1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"--scale must be in \(0, 1\]"):
            speed_cuda.decoder_shapes(bad)
    assert speed_cuda.layout_shapes("one-big") == [(8192, 8192)]
    assert len(speed_cuda.layout_shapes("resnet18")) == 62 and len(speed_cuda.layout_shapes("many-small")) == 2000


def test_bytes_per_step_are_the_hand_computed_ones():
    big = [(8192, 8192)]
    # float32: parameter read and written (8), gradient read (4), two state tensors read and written (16)
    assert speed_cuda.step_bytes("adam", big)["bytes_per_step"] == 28 * N_BIG
    assert speed_cuda.step_bytes("amsgrad", big)["bytes_per_step"] == 36 * N_BIG  # max_exp_avg_sq too
    assert speed_cuda.step_bytes("adam", big, "bfloat16")["bytes_per_step"] == 20 * N_BIG
    # int8: one byte a code, one float32 scale per block of 256 elements of a row (32 blocks a row of 8192)
    int8 = speed_cuda.step_bytes("adamw", big, "int8")
    assert int8["state_bytes"] == 2 * (N_BIG + 4 * 8192 * 32)
    assert int8["bytes_per_step"] == 12 * N_BIG + 2 * int8["state_bytes"]
    assert abs(int8["bytes_per_step"] / N_BIG - 16.0625) < 1e-12
    # vectors keep bfloat16 state in "int8" mode; a row of 300 elements has two blocks
    mixed = speed_cuda.step_bytes("adam", [(10, 300), (7,)], "int8")
    assert mixed["state_bytes"] == 2 * (3000 + 4 * 10 * 2 + 2 * 7)
    assert mixed["stored_formats"] == {"int8": 3000, "bfloat16": 7}
    assert speed_cuda.step_bytes("adam", [(4,)], param_dtype=torch.bfloat16)["bytes_per_step"] == 4 * (2 * 2 + 2 + 16)
    with pytest.raises(ValueError, match="state_dtype must be one of"):
        speed_cuda.step_bytes("adam", big, "float16")


@pytest.mark.parametrize("algorithm", ["adam", "amsgrad", "agd", "adabelief"])
@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16", "int8"])
def test_the_planned_state_bytes_are_those_an_optimizer_keeps(algorithm, state_dtype):
    shapes = [(6, 300), (5,), (3, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = speed_cuda.get_optimizer_class(algorithm)(params, state_dtype=speed_cuda.STATE_DTYPES[state_dtype])
    opt.step()
    assert speed_cuda._state_bytes(opt) == speed_cuda.step_bytes(algorithm, shapes, state_dtype)["state_bytes"]


@pytest.mark.parametrize("layout", speed_cuda.LAYOUTS)
def test_dry_run_prints_the_plan_of_each_layout_without_a_gpu(capsys, layout):
    argv = ["--device", "cuda", "--dry-run", "--layouts", layout, "--algorithms", "adamw,amsgrad"]
    if layout == "decoder-1b":
        argv += ["--scale", "0.25"]
    code, out = _speed(capsys, *argv)
    assert code == 0
    shapes = speed_cuda.layout_shapes(layout, 0.25)
    n = sum(math.prod(s) for s in shapes)
    label = "decoder-1b x0.25" if layout == "decoder-1b" else layout
    assert f"layout {label}: {len(shapes)} tensors, {n:,} parameters" in out
    assert "roofline ms = bytes per step / peak bandwidth" in out
    rows = [line for line in out.splitlines() if line.startswith("| torch") or line.startswith("| adamkit")]
    # torch's fused AdamW and fused Adam(amsgrad=True), then default/foreach/triton/compiled of each algorithm,
    # and the low-precision state (default and triton paths) on one-big only
    expected = 2 + 2 * 4 + (2 * 2 * 2 if layout == "one-big" else 0)
    assert len(rows) == expected, out
    adamw = next(r for r in rows if r.startswith("| torch | adamw | fused | float32 |"))
    plan = speed_cuda.step_bytes("adamw", shapes)
    assert f"| {plan['bytes_per_step'] / 1e6:,.1f} MB | {plan['bytes_per_step'] / n:.3f} |" in adamw
    assert "| adamkit | amsgrad | triton | float32 | exp_avg,exp_avg_sq,max_exp_avg_sq |" in out


def test_without_cuda_the_command_says_what_to_do_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exc:
        cli.main(["speed", "--device", "cuda", "--layouts", "one-big"])
    message = str(exc.value.code)
    assert "\n" not in message and "no CUDA device" in message and "--dry-run" in message
    assert "scripts/gpu_check.sh" in message


@pytest.mark.parametrize("argv,match", [
    (["--device", "cuda", "--dry-run", "--paths", "fused"], "fused=True is the compiled path"),
    (["--device", "cuda", "--dry-run", "--scale", "2"], r"--scale must be in \(0, 1\]"),
    (["--device", "cuda", "--dry-run", "--layouts", "one-big", "--scale", "0.5"], "not in --layouts"),
    (["--device", "cuda", "--dry-run", "--layouts", "many-small-new-grads"], "choose from"),
    (["--device", "cuda", "--dry-run", "--kernels", "avx2"], "--kernels and --first-step"),
    (["--layouts", "decoder-1b"], "only with --device cuda"),
    (["--paths", "triton"], "only with --device cuda"),
    (["--dry-run"], "are for --device cuda"),
])
def test_options_of_one_device_are_refused_on_the_other(argv, match):
    with pytest.raises(SystemExit, match=match):
        cli.main(["speed", *argv])


def _tiny(name, scale=1.0):
    return [(64, 300), (64,), (5, 7, 3)]


def test_measure_rows_on_cpu_tensors():
    """The measurement itself (CUDA events on a GPU; the host clock on CPU tensors, for this test): every
    candidate's row, its ratios to the yardstick and to float32 state, and state bytes as planned."""
    result = speed_cuda.measure(["one-big"], ["adam", "amsgrad"], paths=["default", "foreach"],
                                state_layouts=["one-big"], state_dtypes=["float32", "int8"],
                                state_paths=["default"], repeats=2, steps=2, device="cpu", log=lambda m: None,
                                shapes_of=_tiny, bandwidth=1e10)
    rows = {(r["library"], r["optimizer"], r["path"], r["state_dtype"]): r for r in result["rows"]}
    assert set(rows) == {("torch", "adamw", "fused", "float32"), ("torch", "amsgrad", "fused", "float32")} | {
        ("adamkit", a, p, "float32") for a in ("adam", "amsgrad") for p in ("default", "foreach")} | {
        ("adamkit", a, "default", "int8") for a in ("adam", "amsgrad")}
    assert rows["torch", "adamw", "fused", "float32"]["ratio_interval"] == [1.0, 1.0, 1.0]
    assert rows["adamkit", "adam", "default", "float32"]["ratio_to_float32"] == 1.0
    assert rows["adamkit", "amsgrad", "foreach", "float32"]["implementation"] == "foreach"
    n = sum(math.prod(s) for s in _tiny(""))
    for r in result["rows"]:
        assert r["error"] is None and r["repeats"] == 2 and r["step_ms"] > 0
        assert r["state_bytes"] == r["planned_state_bytes"], r
        assert r["roofline_ms"] == pytest.approx(r["bytes_per_step"] / 1e10 * 1e3)
        assert r["roofline_share"] == pytest.approx(r["roofline_ms"] / r["step_ms"])
        assert r["peak_extra_bytes"] is None  # no allocator statistics on CPU
    # two state tensors, each read and written: codes (rows of 300: two blocks), bfloat16 vector, rows of 21
    assert rows["adamkit", "adam", "default", "int8"]["bytes_per_step"] == 12 * n + 2 * 2 * (
        64 * 300 + 4 * 64 * 2 + 2 * 64 + 105 + 4 * 5 * 1)
    text = speed_cuda.markdown(result)
    assert "| one-big | torch | adamw | fused |" in text and "| one-big | adam | default (fused) | int8 |" in text


def test_a_candidate_that_fails_gets_a_row_saying_why():
    def broken(params):
        raise RuntimeError("CUDA out of memory. Tried to allocate 4 GiB")

    cands = [speed_cuda.Candidate("torch", "adamw", "fused", make=lambda ps: torch.optim.AdamW(ps)),
             speed_cuda.Candidate("adamkit", "adam", "triton", make=broken)]
    original = speed_cuda.candidates
    try:
        speed_cuda.candidates = lambda *a, **k: cands
        result = speed_cuda.measure(["one-big"], ["adam"], repeats=2, steps=1, device="cpu", log=lambda m: None,
                                    shapes_of=_tiny, bandwidth=1e10)
    finally:
        speed_cuda.candidates = original
    bad = result["rows"][1]
    assert bad["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 4 GiB" and "step_ms" not in bad
    assert "failed: RuntimeError: CUDA out of memory" in speed_cuda.markdown(result)


def _row(layout, state="float32", ratio=1.0, share=0.9, peak=0.01, to_f32=None, path="default", label=None):
    return dict(layout=label or layout, layout_name=layout, library="adamkit", optimizer="adamw", path=path,
                implementation="triton", state_dtype=state, step_ms=1.0, step_ms_spread=[1.0, 1.0],
                ratio_to_torch_fused_adamw=ratio, ratio_interval=[ratio, ratio, ratio], roofline_ms=share,
                roofline_share=share, state_bytes_per_param=8.0, peak_extra_bytes=1, peak_extra_share=peak,
                ratio_to_float32=to_f32, ratio_to_float32_interval=None if to_f32 is None else [to_f32] * 3)


def test_targets_are_met_not_met_or_not_measured():
    rows = [_row(lay) for lay in ("resnet18", "one-big", "decoder-1b", "many-small")]
    rows += [_row("one-big", "int8", to_f32=0.7), _row("one-big", "bfloat16", to_f32=0.85)]
    bf16 = dict(final_loss={"float32": 0.1, "bfloat16-stochastic": 0.102, "bfloat16-nearest": 0.3}, tolerance=0.05)
    status = {t["key"]: t["status"] for t in speed_cuda.targets(dict(rows=rows), bf16)}
    assert status == dict.fromkeys(speed_cuda.TARGET_TEXT, "met")
    rows[1] = _row("one-big", ratio=1.2, share=0.5, peak=0.4)
    rows[4] = _row("one-big", "int8", to_f32=1.3)
    got = {t["key"]: t for t in speed_cuda.targets(dict(rows=rows), dict(bf16, final_loss={
        "float32": 0.1, "bfloat16-stochastic": 0.2}))}
    assert {k: t["status"] for k, t in got.items()} == dict(
        speed="not met", roofline="not met", **{"many-small": "met"}, int8="not met", bfloat16="met",
        memory="not met", **{"bf16-params": "not met"})
    assert "worst x1.2 (one-big adamw default (triton) float32)" in got["speed"]["evidence"]
    missing = {t["key"]: t["status"] for t in speed_cuda.targets(dict(rows=rows[:1]), {"skipped": "refused"})}
    assert missing["speed"] == missing["int8"] == missing["memory"] == missing["bf16-params"] == "not measured"
    assert {t["status"] for t in speed_cuda.targets(None, None)} == {"not measured"}


def test_the_readme_lists_every_section_test_table_and_target(tmp_path):
    result = speed_cuda.measure(["one-big"], ["adam"], paths=["default"], state_layouts=["one-big"],
                                state_dtypes=["float32", "bfloat16"], state_paths=["default"], repeats=1, steps=1,
                                device="cpu", log=lambda m: None, shapes_of=_tiny, bandwidth=1e10)
    (tmp_path / "speed.json").write_text(json.dumps(result))
    (tmp_path / "env.json").write_text(json.dumps(dict(date="2027-01-02", gpu="NVIDIA H100", driver="560.1",
                                                       torch="2.13.0+cu126", triton="3.9.0")))
    (tmp_path / "bf16.json").write_text(json.dumps(dict(skipped='AdamW refuses param_rounding="stochastic"')))
    (tmp_path / "sections.tsv").write_text("env\t0\t3\t20\ntests\t0\t50\t100\ntests-compiled\t124\t75\t75\n")
    (tmp_path / "tests.log").write_text(
        "tests/test_golden.py::test_golden_replay_cuda[adam-basic-loop] PASSED [ 50%]\n"
        "tests/test_golden.py::test_golden_replay_cuda[adam-basic-triton] FAILED [100%]\n"
        "tests/kernels/test_triton.py::test_cuda_kernels_compute_the_interpreters_bits SKIPPED (no) [100%]\n"
        "SKIPPED [1] tests/kernels/test_triton.py:410: no triton here\n")
    (tmp_path / "tests-compiled.log").write_text("tests/test_golden.py::test_golden_replay_cuda[adam-a-compiled] PASSED\n")
    text = speed_cuda.readme(str(tmp_path))
    assert text.startswith("# GPU check, 2027-01-02") and "- gpu: NVIDIA H100" and "- driver: 560.1" in text
    assert "| tests-compiled | 124 (timed out) | 75 | 75 |" in text
    assert "- tests: 1 failed, 1 passed, 1 skipped" in text
    assert "  - failed: tests/test_golden.py::test_golden_replay_cuda[adam-basic-triton]" in text
    assert "  - skipped (1): no triton here" in text and "- tests-compiled: 1 passed" in text
    assert "| one-big | adam | default (fused) | bfloat16 |" in text
    assert "bfloat16 parameters: skipped: AdamW refuses" in text
    for target in speed_cuda.TARGET_TEXT.values():
        assert target in text
    assert "| **not measured** |" in text  # decoder-1b and others were not measured here


def test_bf16_training_runs_or_says_why_it_is_skipped():
    result = speed_cuda.bf16_training("cpu", steps=20)
    if result.get("skipped"):  # an optimizer without param_rounding
        assert "param_rounding" in result["skipped"] and "skipped" in result["skipped"]
        assert speed_cuda.targets(None, result)[-1]["status"] == "not measured"
    else:
        assert set(result["final_loss"]) == {"float32", "bfloat16-stochastic", "bfloat16-nearest"}
        assert all(math.isfinite(v) for v in result["final_loss"].values())
    assert "bfloat16 parameters" in speed_cuda.bf16_markdown(result)


def test_the_gpu_script_parses_and_its_test_selection_collects_without_a_gpu():
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", SCRIPT, "--collect-only"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    counts = [int(n) for n in re.findall(r"^(\d+)/\d+ tests collected", out.stdout, re.M)]
    from optimizer_table import golden_cases

    cases = len(list(golden_cases()))
    # every golden case on loop, foreach and triton, then on the compiled path; and the kernels' own CUDA tests
    assert counts == [3 * cases + 7 + 1, cases + 1], out.stdout
    refused = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    if not torch.cuda.is_available():
        assert refused.returncode == 2 and "no CUDA device here" in refused.stderr
