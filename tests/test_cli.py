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
