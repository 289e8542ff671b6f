"""The `adamkit` command."""
from __future__ import annotations

import subprocess
import sys

from adamkit import cli


def test_demo_prints_a_row_per_optimizer(capsys):
    assert cli.main(["demo", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    for name in ("adam", "adamw", "amsgrad", "eadam", "adabelief", "adopt", "agd"):
        assert f"| {name} |" in out


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "adamkit.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout


def test_a_reader_that_goes_away_ends_the_command_quietly(monkeypatch):
    """``adamkit bench plan full | head -1``: the closed pipe ends the command with 141 (128 + SIGPIPE), no
    traceback, and stdout is left on the null device so that the flush at exit does not raise again."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone away: every write raises BrokenPipeError
    stream = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", stream)
    assert cli.main(["bench", "plan", "quick"]) == 141
    print("more output goes nowhere")  # and raises nothing
    stream.close()


def test_version_comes_from_one_place_and_the_changelog_has_its_section():
    """``adamkit --version``, ``adamkit.__version__`` and the package metadata (pyproject's dynamic version) all
    read ``adamkit/_version.py``; CHANGELOG.md has a section for that version."""
    import re
    from pathlib import Path

    import adamkit
    from adamkit import _version

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "adamkit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"adamkit {_version.__version__}"
    assert adamkit.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", _version.__version__)
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "adamkit._version.__version__"}
    changelog = (root / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(_version.__version__)}\b", changelog, re.M), "CHANGELOG.md lacks this version"
