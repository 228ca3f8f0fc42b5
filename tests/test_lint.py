"""Static checks run with the tests (and so by .ci/run): ruff lint, ruff's formatter and mypy (strict, as
configured in pyproject.toml) must all pass on the whole project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def check(*command: str) -> None:
    tool = BIN / command[0]
    assert tool.exists(), f"{command[0]} is not installed in this environment: pip install -e '.[dev]'"
    proc = subprocess.run([str(tool), *command[1:]], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


@pytest.mark.parametrize(
    "command", [["ruff", "check", "."], ["ruff", "format", "--check", "."]], ids=["check", "format"]
)
def test_ruff_passes(command: list[str]) -> None:
    check(*command)


@pytest.mark.minute(4)  # CPU-bound for minutes under the suite's load: started first of all (tests/conftest.py)
def test_mypy_strict_passes() -> None:
    check("mypy")
