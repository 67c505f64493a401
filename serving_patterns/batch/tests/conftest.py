"""Fixtures of the batch pattern's tests: a fresh database per test, on SQLite and PostgreSQL.

PostgreSQL is the one on DATABASE_URL's server, else 127.0.0.1:5432 (user postgres, trust): each
test gets a database of its own, dropped afterwards. Where none answers, those cases skip.
"""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

SERVER = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test: its URL, then it is dropped."""
    server = make_url(SERVER).set(drivername="postgresql")
    admin_url = server.set(database="postgres").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answering at {server.host}:{server.port}: {exc}")
    name = f"batch_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'batch.db'}"
        return
    with postgres_database() as url:
        yield url
