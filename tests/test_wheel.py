"""The wheel: built as `make wheel` builds it, installed into a fresh virtual environment with torch and no C
compiler on PATH, it steps with its prebuilt kernel (the highest variant this CPU runs), without a warning,
and each of its variants computes the bits this checkout's first-use builds compute."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

import adamkit
from adamkit.kernels.fused import build as fused_build, cpu_variants

ROOT = Path(__file__).resolve().parents[1]

#: a fixed workload of fused steps (float32, bfloat16 with int8 state, bfloat16 state, float64) and the sha256
#: of the parameters after it: run here and in the wheel's environment
DIGEST = """
def digest():
    import hashlib, torch, adamkit
    h = hashlib.sha256()
    g = torch.Generator().manual_seed(0)
    for cls, dtype, state_dtype in ((adamkit.AdaBelief, torch.float32, None), (adamkit.AGD, torch.bfloat16, "int8"),
                                    (adamkit.Adam, torch.float32, torch.bfloat16), (adamkit.ADOPT, torch.float64, None)):
        params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in ((37, 300), (1000,), (5,))]
        opt = cls(params, fused=True, **({} if state_dtype is None else {"state_dtype": state_dtype}))
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(dtype)
            opt.step()
        for p in params:
            h.update(p.detach().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
"""

#: run in the wheel's environment: what a user without a compiler gets
IN_THE_WHEEL = DIGEST + """
import json, shutil, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import adamkit
    from adamkit.kernels import implementation_of
    from adamkit.kernels.fused import build as fused_build, check as fused_check
    params = [torch.nn.Parameter(torch.randn(100)) for _ in range(20)]  # a kept table and its per-step check
    opt = adamkit.AdaBelief(params, fused=True)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(100)
        opt.step()
    build = fused_build.loaded_build()
    digests = {}
    for variant in fused_build.runnable_variants():
        with fused_build.using(variant):
            digests[variant] = digest()
print(json.dumps({
    "compilers": [c for c in ("cc", "gcc", "clang", "c++", "g++") if shutil.which(c)],
    "warnings": [str(w.message) for w in caught], "adamkit": adamkit.__file__,
    "implementation": implementation_of(opt),
    "variant": build.variant, "origin": build.origin, "path": str(build.path), "threads": build.threads,
    "native_check": fused_check._library.value is not None, "digests": digests,
}))
"""


def _run(args, timeout=900, **kwargs):
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert out.returncode == 0, f"{' '.join(map(str, args))}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of this checkout, built as `make wheel` builds it."""
    project = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", cpu_variants.PREBUILT_DIR))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    dist = project / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "-w", str(dist)])
    (found,) = dist.glob("adamkit-*.whl")
    return found


def test_the_wheel_holds_every_variant_and_is_tagged_for_any_python(wheel):
    platform_tag = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform_tag}.whl"), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    prebuilt = f"adamkit/kernels/fused/{cpu_variants.PREBUILT_DIR}/"
    assert {prebuilt + cpu_variants.library_name(v) for v in cpu_variants.variants()} <= names
    manifest = json.loads(zipfile.ZipFile(wheel).read(prebuilt + cpu_variants.MANIFEST))
    assert manifest["abi_version"] == fused_build.ABI_VERSION and set(manifest["variants"]) == set(cpu_variants.variants())
    # the sources of a first-use build (ADAMKIT_KERNEL_VARIANT=native)
    sources = cpu_variants.source_files(fused_build.SOURCE.parent)
    assert {"adamkit/kernels/fused/" + p.relative_to(fused_build.SOURCE.parent).as_posix() for p in sources} <= names


@pytest.mark.skipif(not fused_build.available() or sys.platform == "win32", reason="no fused kernel here to compare")
def test_the_wheel_steps_with_its_prebuilt_kernel_without_a_compiler(wheel, tmp_path):
    env_dir = tmp_path / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    python = env_dir / "bin" / "python"
    torch_pin = f"torch=={torch.__version__.split('+')[0]}"  # from local disk where it lies there
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", torch_pin,
          str(wheel)])
    only_python = tmp_path / "bin"  # PATH: a folder holding python and nothing else; no CC, no CXX
    only_python.mkdir()
    (only_python / "python").symlink_to(python)
    env = {"PATH": str(only_python), "HOME": str(tmp_path / "home"), "ADAMKIT_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONNOUSERSITE": "1", "LANG": os.environ.get("LANG", "C.UTF-8")}
    got = json.loads(_run([str(python), "-c", IN_THE_WHEEL], env=env, cwd=tmp_path).strip().splitlines()[-1])
    assert got["compilers"] == [] and got["warnings"] == [], got
    assert Path(got["adamkit"]).is_relative_to(env_dir)
    assert got["implementation"] == "fused" and got["origin"] == fused_build.PREBUILT_ORIGIN
    assert got["variant"] == fused_build.runnable_variants()[-1] and Path(got["path"]).is_relative_to(env_dir)
    assert got["threads"] == "pthreads" and not got["native_check"]  # the wheel's default: the Python check
    assert not (tmp_path / "cache").exists()  # nothing was compiled
    scope: dict = {}
    exec(DIGEST, scope)
    here = {}
    for variant in fused_build.runnable_variants():
        with fused_build.using(variant):
            here[variant] = scope["digest"]()
    assert got["digests"] == here  # each prebuilt variant computes this checkout's bits, and all the same bits
    assert len(set(here.values())) == 1
    assert adamkit.__file__  # (this process's adamkit is the checkout's)
