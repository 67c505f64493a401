"""Fixtures of the batch pattern's tests: a fresh database per test, on SQLite and PostgreSQL.

PostgreSQL's is shared.pytest_plugin's postgres_url: a database of the test's own on the server
DATABASE_URL names (else 127.0.0.1:5432), dropped afterwards; where none answers, those cases
skip, saying so.
"""

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'batch.db'}"
    return str(request.getfixturevalue("postgres_url"))
