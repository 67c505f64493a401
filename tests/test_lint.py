"""The code passes the linters `make lint` runs, so CI enforces them too."""

import subprocess
import sys
from pathlib import Path

from shared.catalogue import REPO_ROOT

BIN = Path(sys.executable).parent


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [BIN / "ruff", "check", "."], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout


def test_code_is_formatted() -> None:
    result = subprocess.run(
        [BIN / "ruff", "format", "--check", "."], cwd=REPO_ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stdout


def test_the_code_type_checks_strictly() -> None:
    result = subprocess.run([BIN / "mypy"], cwd=REPO_ROOT, capture_output=True, text=True)

    assert result.returncode == 0, result.stdout
