"""Fixtures of the batch pattern's tests: a fresh database per test, on SQLite and PostgreSQL.

PostgreSQL is the one on DATABASE_URL's server, else 127.0.0.1:5432 (user postgres, trust): each
test gets a database of its own, dropped afterwards. Where none answers, those cases skip.
"""

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from shared.localmode import NoPostgres
from shared.testing import postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batch.db'}"
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database("batch_test"))
        except NoPostgres as exc:
            pytest.skip(str(exc))
        yield url
