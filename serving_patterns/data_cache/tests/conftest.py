"""Fixtures of the data cache pattern's tests: a fresh records database per test, on SQLite and
PostgreSQL (shared.pytest_plugin's postgres_url: skipped, saying so, where none answers)."""

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'records.db'}"
    return str(request.getfixturevalue("postgres_url"))
