"""The fixtures every pattern's tests may ask for, loaded for the whole suite (pyproject's
`-p shared.pytest_plugin`): a private redis-server, and a PostgreSQL database of the test's own.

A fixture skips only when what it needs is not on the machine, and says so; any other failure
is an error of the test run, shown as one.
"""

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from shared.localmode import NoPostgres, RedisServer
from shared.testing import postgres_database


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, on a free port, that the test may stop or restart."""
    server = RedisServer(["redis-server"], None)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards, on the PostgreSQL server that
    DATABASE_URL names (else postgres@127.0.0.1:5432). Skips, saying why, where none answers."""
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database("test"))
        except NoPostgres as exc:
            pytest.skip(f"{exc}: set DATABASE_URL to a server's URL to run these tests")
        yield url
