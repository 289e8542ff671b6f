"""The wheel's build step: the fused C kernel compiled into ``adamkit/kernels/fused/prebuilt/``.

Everything else is declared in pyproject.toml. The kernel (``kernel.c`` and the headers it includes) links
neither Python nor torch, so one wheel per platform serves every Python and torch version: it is tagged
``py3-none-<platform>``. Each instruction-set variant of :mod:`adamkit.kernels.fused.cpu_variants` is compiled
with the same flags as adamkit's first-use build, and recorded with its sha256 in ``prebuilt/manifest.json``,
with the kernel's interface version and the sha256 of the sources it was built from
(``cpu_variants.source_digest``); the loader checks all three before it loads one. An editable
install (``pip install -e .``) builds nothing here: a source checkout builds the kernel on first use.
``ADAMKIT_PREBUILD_KERNEL=0`` builds a wheel without the kernel (first use builds it, or the loop runs).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Command, Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build import build

KERNEL = Path(__file__).resolve().parent / "src" / "adamkit" / "kernels" / "fused"
SOURCE = KERNEL / "kernel.c"


def _variants_module():
    """adamkit.kernels.fused.cpu_variants, loaded by path (importing the package would import torch)."""
    spec = importlib.util.spec_from_file_location("_adamkit_cpu_variants", KERNEL / "cpu_variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prebuild() -> bool:
    """Whether the wheel holds the kernel (``ADAMKIT_PREBUILD_KERNEL=0``: not, a pure wheel)."""
    return os.environ.get("ADAMKIT_PREBUILD_KERNEL", "1") != "0"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile(cv, cc: str, alternatives, output: Path) -> tuple[list[str] | None, str]:
    """Compile one variant: the flags of the first alternative that compiles, or None and the errors."""
    errors = []
    for alt in alternatives:
        flags = list(cv.BASE_FLAGS) + list(alt)
        proc = subprocess.run(cv.command(cc, flags, str(SOURCE), str(output)), capture_output=True, text=True)
        if proc.returncode == 0:
            return flags, ""
        errors.append(f"{' '.join(flags)}: {proc.stderr.strip()[-400:]}")
    return None, "\n".join(errors)


class build_kernels(Command):
    """Compile the fused C kernel's instruction-set variants into the build's adamkit/kernels/fused/prebuilt."""

    description = __doc__
    user_options: list = []
    editable_mode = False  # set by setuptools for `pip install -e`: the kernel is then built on first use

    def initialize_options(self):
        self.build_lib = None
        self._outputs: list[str] = []

    def finalize_options(self):
        self.set_undefined_options("build", ("build_lib", "build_lib"))

    def run(self):
        if self.editable_mode or not _prebuild():
            return
        cv = _variants_module()
        cc = cv.find_compiler("CC", ["cc", "gcc", "clang"])
        if cc is None:
            raise SystemExit("adamkit: building the wheel compiles the fused C kernel, and no C compiler was found "
                             "(set $CC, or install gcc or clang; ADAMKIT_PREBUILD_KERNEL=0 builds a wheel without "
                             "it, which compiles it on first use)")
        abi = re.search(r"int adamkit_abi_version\(void\) \{ return (\d+); \}", SOURCE.read_text())
        if abi is None:
            raise SystemExit(f"adamkit: no adamkit_abi_version in {SOURCE}")
        out_dir = Path(self.build_lib) / "adamkit" / "kernels" / "fused" / cv.PREBUILT_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        table = cv.variants()
        lowest = next(iter(table))
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            jobs = {name: pool.submit(_compile, cv, cc, alternatives, Path(tmp) / cv.library_name(name))
                    for name, (_, alternatives) in table.items()}
            variants = {}
            for name, job in jobs.items():
                flags, errors = job.result()
                if flags is None:
                    if name == lowest:  # the build that runs everywhere: without it the wheel has no kernel
                        raise SystemExit(f"adamkit: the {name} build of the fused kernel failed:\n{errors}")
                    print(f"adamkit: the {name} build of the fused kernel is left out (the compiler refused it):\n"
                          f"{errors}")
                    continue
                target = out_dir / cv.library_name(name)
                os.replace(Path(tmp) / cv.library_name(name), target)
                variants[name] = {"file": target.name, "flags": flags, "sha256": _sha256(target),
                                  "size": target.stat().st_size}
                self._outputs.append(str(target))
        manifest = {"abi_version": int(abi.group(1)), "source_sha256": cv.source_digest(KERNEL), "compiler":
                    cv.compiler_version(cc), "variants": variants}
        (out_dir / cv.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        self._outputs.append(str(out_dir / cv.MANIFEST))
        print(f"adamkit: built the fused kernel's {', '.join(variants)} builds into {out_dir}")

    def get_outputs(self):
        return list(self._outputs)

    def get_output_mapping(self):
        return {}


class build_with_kernels(build):
    sub_commands = build.sub_commands + [("build_kernels", None)]


class PlatformDistribution(Distribution):
    """A distribution with a native library: installed into platlib, its wheel tagged for a platform."""

    def has_ext_modules(self):
        return _prebuild()


class bdist_wheel_py3(bdist_wheel):
    """A platform wheel for every Python: the kernel is a plain shared library (ctypes), no extension module."""

    def get_tag(self):
        python_tag, abi_tag, platform_tag = super().get_tag()
        return ("py3", "none", platform_tag) if _prebuild() else (python_tag, abi_tag, platform_tag)


setup(distclass=PlatformDistribution, cmdclass={"build_kernels": build_kernels, "build": build_with_kernels, "bdist_wheel": bdist_wheel_py3})
