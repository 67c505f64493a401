"""The fixtures every pattern's tests may ask for, loaded for the whole suite (pyproject's
`-p shared.pytest_plugin`): a private redis-server, a PostgreSQL database of the test's own, and
an MLflow tracking store of the test module's own.

A fixture skips only when what it needs is not on the machine, and says so; any other failure
is an error of the test run, shown as one.
"""

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from importlib.metadata import version
from pathlib import Path

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


# MLflow stores migrated once per machine and MLflow version: a new SQLite store migrates in
# 10 to 15 s, a copy opens in half a second.
MLFLOW_TEMPLATES = Path(
    os.environ.get("ML_PATTERNS_MLFLOW_CACHE", Path.home() / ".cache" / "ml-patterns-mlflow")
)


def _mlflow_template() -> Path:
    template = MLFLOW_TEMPLATES / f"mlflow-{version('mlflow')}.db"
    MLFLOW_TEMPLATES.mkdir(parents=True, exist_ok=True)
    with open(MLFLOW_TEMPLATES / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one migration, whatever the number of test workers
        if not template.exists():
            from shared import tracking

            partial = template.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            tracking.connect(f"sqlite:///{partial}").search_experiments()  # creates the tables
            partial.rename(template)
    return template


@pytest.fixture(scope="module")
def mlflow_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tracking (and registry) URI of an MLflow SQLite store of the test module's own, the
    client writing it itself: the store the server keeps, without the server's start. Without
    a server, artefacts go under ./mlruns: chdir to the test's tmp_path first."""
    store = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    shutil.copyfile(_mlflow_template(), store)
    return f"sqlite:///{store}"
