"""The fused kernel's builds and threads: instruction-set variants that agree bit for bit, the choice among them,
a wheel's prebuilt libraries (verified, refused when stale or mismatched), and the kernel's own thread pool
(the same bits at any thread count, one OpenMP runtime at most in a process that also runs torch)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch

import adamkit
from adamkit import _integrity
from adamkit.kernels.fused import build as fused_build, cpu_variants, launch as fused_launch
from optimizer_table import BY_NAME, OPTIMIZERS, variant_id

pytestmark = pytest.mark.skipif(not fused_build.available(), reason="the fused CPU kernel is unavailable here")

VARIANTS = fused_build.runnable_variants() if fused_build.available() else []
#: this process's cache of first-use builds (a fresh process that uses it compiles nothing)
BUILDS = fused_build.cache_dir()
SHAPES = ((37, 300), (1000,), (5,), (3, 4, 65))  # int8 rows of whole and partial blocks, a bfloat16 vector


def bits(t: torch.Tensor) -> torch.Tensor:
    """The bytes of a tensor (NaN compares equal to the same NaN)."""
    return t.detach().reshape(-1).contiguous().view(torch.uint8)


def run(info, dtype=torch.float32, state_dtype=None, steps=3, **kwargs) -> list[torch.Tensor]:
    """A few fused steps of seeded tensors; the parameters and every state tensor after them."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in SHAPES]
    if state_dtype is not None:
        kwargs["state_dtype"] = state_dtype
    opt = info.make(params, fused=True, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return params + [v for p in params for v in opt.state[p].values() if isinstance(v, torch.Tensor)]


def assert_same_bits(results: dict, what: str) -> None:
    first, *others = results
    for other in others:
        for k, (a, b) in enumerate(zip(results[first], results[other])):
            assert torch.equal(bits(a), bits(b)), f"{what}: tensor {k} differs between {first} and {other}"


# ------------------------------------------------------------------------------------------------ variants
CONFIGS = [(info, kwargs) for info in OPTIMIZERS for kwargs in info.variants]


@pytest.mark.skipif(len(VARIANTS) < 2, reason="this CPU runs one build of the kernel only")
@pytest.mark.parametrize("info,kwargs", CONFIGS, ids=[variant_id(i, k) for i, k in CONFIGS])
def test_every_variant_steps_every_branch_alike_in_float32(info, kwargs):
    results = {}
    for variant in VARIANTS:
        with fused_build.using(variant):
            results[variant] = run(info, **kwargs)
    assert_same_bits(results, f"{info.name} {kwargs}")


DTYPES = [(torch.float64, None), (torch.float16, None), (torch.bfloat16, None),
          (torch.float32, torch.bfloat16), (torch.float32, "int8"), (torch.bfloat16, "int8"),
          (torch.float16, torch.bfloat16)]


@pytest.mark.skipif(len(VARIANTS) < 2, reason="this CPU runs one build of the kernel only")
@pytest.mark.parametrize("dtype,state_dtype", DTYPES, ids=[f"{d}-{s}" for d, s in DTYPES])
@pytest.mark.parametrize("info", OPTIMIZERS, ids=[i.name for i in OPTIMIZERS])
def test_every_variant_steps_every_dtype_and_state_format_alike(info, dtype, state_dtype):
    """The half-precision conversions (F16C or not) and the bfloat16 and int8 codecs (AVX2 or portable loops)
    give the same bits in every build."""
    results = {}
    for variant in VARIANTS:
        with fused_build.using(variant):
            results[variant] = run(info, dtype, state_dtype)
    assert_same_bits(results, f"{info.name} {dtype} {state_dtype}")


def _fresh(monkeypatch, tmp_path):
    """A process that has loaded no build yet, with an empty cache."""
    monkeypatch.setattr(fused_build._kernel, "value", None)
    monkeypatch.setattr(fused_build._kernel, "error", None)
    monkeypatch.setattr(fused_build, "_opened", {})
    monkeypatch.setattr(fused_build, "_warned_prebuilt", False)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(fused_build.VARIANT_ENV, raising=False)
    monkeypatch.delenv("ADAMKIT_DISABLE_FUSED", raising=False)


def test_the_environment_chooses_a_build(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(BUILDS))  # this process's builds: no compiling
    monkeypatch.setenv(fused_build.VARIANT_ENV, VARIANTS[0])
    assert fused_build.loaded_build().variant == VARIANTS[0]
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(BUILDS))
    assert fused_build.loaded_build().variant == VARIANTS[-1]  # unset: the highest this CPU runs


def test_an_unknown_build_is_refused_naming_the_choices(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv(fused_build.VARIANT_ENV, "avx3")
    with pytest.raises(fused_build.FusedKernelUnavailable, match=r"ADAMKIT_KERNEL_VARIANT='avx3'.*choose from auto, "):
        fused_build.load()


def test_a_build_this_cpu_cannot_run_is_refused(monkeypatch, tmp_path):
    beyond = [v for v in cpu_variants.variants() if v not in VARIANTS]
    if not beyond:
        pytest.skip("this CPU runs every variant")
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(BUILDS))
    monkeypatch.setenv(fused_build.VARIANT_ENV, beyond[0])
    with pytest.raises(fused_build.FusedKernelUnavailable, match=f"this CPU does not run the {beyond[0]} build"):
        fused_build.load()


# ------------------------------------------------------------------------------------------ prebuilt builds
def fake_wheel(monkeypatch, tmp_path, variants=None, **manifest):
    """A prebuilt folder as a wheel holds it (this process's builds, recorded in a manifest), in use from now
    on by a process that has loaded no build yet."""
    cc = fused_build._compiler()
    folder = tmp_path / "prebuilt"
    folder.mkdir()
    recorded = {}
    for variant in variants or VARIANTS:
        target = folder / cpu_variants.library_name(variant)
        shutil.copy(fused_build._build(cc, variant), target)
        recorded[variant] = {"file": target.name, "sha256": _integrity.sha256_file(target),
                             "size": target.stat().st_size}
    record = {"abi_version": fused_build.ABI_VERSION, "source_sha256": cpu_variants.source_digest(fused_build.SOURCE.parent),
              "variants": recorded, **manifest}
    (folder / cpu_variants.MANIFEST).write_text(json.dumps(record))
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setattr(fused_build, "PREBUILT", folder)
    return folder


def no_compiler(monkeypatch):
    monkeypatch.setattr(fused_build, "_compiler", lambda: None)


def test_a_prebuilt_kernel_loads_without_a_compiler_or_a_warning(monkeypatch, tmp_path):
    fake_wheel(monkeypatch, tmp_path)
    no_compiler(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = torch.nn.Parameter(torch.randn(100))
        p.grad = torch.randn(100)
        adamkit.AdaBelief([p], fused=True).step()
    build = fused_build.loaded_build()
    assert (build.variant, build.origin, build.path.parent) == (VARIANTS[-1], "prebuilt", tmp_path / "prebuilt")
    assert not (tmp_path / "cache").exists()  # nothing compiled


def test_a_wheel_without_the_best_variant_loads_its_best(monkeypatch, tmp_path):
    fake_wheel(monkeypatch, tmp_path, variants=VARIANTS[:1])
    monkeypatch.setattr(fused_build, "_build", lambda cc, variant: pytest.fail("compiled despite a prebuilt build"))
    assert (fused_build.loaded_build().variant, fused_build.loaded_build().origin) == (VARIANTS[0], "prebuilt")


def test_a_damaged_prebuilt_kernel_is_never_loaded(monkeypatch, tmp_path):
    folder = fake_wheel(monkeypatch, tmp_path)
    target = folder / cpu_variants.library_name(VARIANTS[0])
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    no_compiler(monkeypatch)
    with pytest.raises(fused_build.FusedKernelUnavailable, match="prebuilt kernel is damaged.*no C compiler found"):
        fused_build.load()


def test_a_stale_prebuilt_kernel_is_rebuilt_from_the_source_saying_so(monkeypatch, tmp_path):
    """A source checkout whose kernel sources changed since its prebuilt folder was made."""
    fake_wheel(monkeypatch, tmp_path, source_sha256="0" * 64)
    monkeypatch.setenv("ADAMKIT_CACHE_DIR", str(BUILDS))  # this process's builds: no compiling
    with pytest.warns(RuntimeWarning, match="built from other kernel sources than these.*building the kernel "
                                            "from source instead"):
        fused_build.load()
    assert fused_build.loaded_build().origin == fused_build.FIRST_USE_ORIGIN


def test_a_prebuilt_kernel_of_another_interface_version_is_refused(monkeypatch, tmp_path):
    fake_wheel(monkeypatch, tmp_path, abi_version=fused_build.ABI_VERSION + 1)
    no_compiler(monkeypatch)
    with pytest.raises(fused_build.FusedKernelUnavailable, match="interface version"):
        fused_build.load()


def test_a_library_that_says_another_interface_version_is_refused(monkeypatch, tmp_path):
    """The manifest agrees with the Python, the library itself does not (its adamkit_abi_version is asked)."""
    fake_wheel(monkeypatch, tmp_path, abi_version=fused_build.ABI_VERSION + 1)
    monkeypatch.setattr(fused_build, "ABI_VERSION", fused_build.ABI_VERSION + 1)
    no_compiler(monkeypatch)
    with pytest.raises(fused_build.FusedKernelUnavailable, match="a stale build"):
        fused_build.load()


# ------------------------------------------------------------------------------------------------- threads
@pytest.fixture
def threads():
    """torch.set_num_threads for the test, restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("state_dtype", [None, torch.bfloat16, "int8"], ids=["float32", "bfloat16", "int8"])
@pytest.mark.parametrize("name", ["adabelief", "agd"])
def test_any_thread_count_gives_the_same_bits(monkeypatch, threads, name, state_dtype):
    """Shares of 64 elements (GRAIN lowered): rows, int8 blocks and tensors split between threads."""
    monkeypatch.setattr(fused_launch, "GRAIN", 64)
    results = {}
    for n in (1, 2, 8):
        threads(n)
        results[n] = run(BY_NAME[name], state_dtype=state_dtype, amsgrad=True)
    assert_same_bits(results, f"{name} {state_dtype}")


def test_steps_from_two_python_threads_at_once_give_the_serial_bits(monkeypatch, threads):
    """ctypes releases the GIL: a second caller finds the pool busy and steps on its own thread."""
    monkeypatch.setattr(fused_launch, "GRAIN", 64)
    threads(4)
    serial = [run(BY_NAME[name], steps=20) for name in ("adam", "adopt")]
    together = [None, None]

    def work(k, name):
        together[k] = run(BY_NAME[name], steps=20)

    workers = [threading.Thread(target=work, args=(k, name)) for k, name in enumerate(("adam", "adopt"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    for k in range(2):
        assert_same_bits({"serial": serial[k], "together": together[k]}, f"optimizer {k}")


#: one process that imports torch and adamkit, steps on the kernel's pool, forks a child that steps too, and
#: reports the OpenMP runtimes it holds (threadpoolctl) and the native libraries adamkit loaded
PROCESS = """
import json, os, torch, adamkit
from threadpoolctl import threadpool_info
from adamkit.kernels.fused import build as fused_build, check as fused_check, launch as fused_launch
from optimizer_table import BY_NAME
from test_builds import run
torch.set_num_threads(2)
fused_launch.GRAIN = 64
params = [torch.nn.Parameter(torch.randn(64)) for _ in range(300)]  # the check reads >= 256 on two threads
opt = adamkit.AdaBelief(params, fused=True)
for _ in range(3):
    for p in params:
        p.grad = torch.randn(64)
    opt.step()
parent = run(BY_NAME["adam"])  # the pool's worker is started
pid = os.fork()
if pid == 0:
    child = run(BY_NAME["adam"])  # the child has no worker: it starts its own
    os._exit(0 if all(torch.equal(a, b) for a, b in zip(parent, child)) else 3)
_, status = os.waitpid(pid, 0)
libs = [str(fused_build.loaded_build().path)] + ([fused_check._library.value._name] if fused_check._library.value is not None else [])
print(json.dumps({"openmp": [i["filepath"] for i in threadpool_info() if i["user_api"] == "openmp"], "libs": libs,
                  "child": os.waitstatus_to_exitcode(status)}))
"""


@pytest.fixture(scope="module")
def process():
    """What :data:`PROCESS` reported."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    pytest.importorskip("threadpoolctl")
    out = subprocess.run([sys.executable, "-c", PROCESS], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ADAMKIT_NATIVE_CHECK": "1", "PYTHONPATH": os.pathsep.join(
                             [str(Path(adamkit.__file__).parents[1]), str(Path(__file__).parents[1]),
                              str(Path(__file__).parent)])})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_forked_child_steps_with_a_pool_of_its_own(process):
    assert process["child"] == 0  # not hung, and the same bits as its parent


def elf_needed(path: str) -> list[str]:
    """The shared libraries an ELF64 little-endian file names as needed (DT_NEEDED)."""
    import struct

    data = Path(path).read_bytes()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + k * shentsize) for k in range(shnum)]
    needed = []
    for _, kind, _, _, offset, size, link, _, _, _ in sections:
        if kind == 6:  # SHT_DYNAMIC; its link is the string table
            strtab = sections[link][4]
            for pos in range(offset, offset + size, 16):
                tag, value = struct.unpack_from("<qQ", data, pos)
                if tag == 1:  # DT_NEEDED
                    needed.append(data[strtab + value:data.index(b"\0", strtab + value)].decode())
    return needed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads ELF files")
def test_a_process_with_torch_and_adamkit_holds_one_openmp_runtime_at_most(process):
    """The kernel and the native check link no OpenMP runtime (torch brings its own; the system's or another
    compiler's would be a second one: pytorch issue 133294)."""
    assert len(process["openmp"]) <= 1, process["openmp"]
    assert len(process["libs"]) == 2  # the kernel and the native check were both loaded
    for lib in process["libs"]:
        assert not [n for n in elf_needed(lib) if "omp" in n], (lib, elf_needed(lib))
    assert any(n.startswith("libc") for n in elf_needed(process["libs"][0]))  # the reader reads
