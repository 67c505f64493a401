"""Helpers for the patterns' end-to-end tests: start a pattern, wait with a deadline."""

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import psycopg
import pytest
import yaml
from sqlalchemy.engine import make_url

# What the patterns' tests use of local mode: its runner, the repository root, a free port,
# redis_server's type and where the machine's nginx is. Imported from here, so that local mode's
# insides can change freely.
from shared.localmode import REPO_ROOT as REPO_ROOT
from shared.localmode import LocalPattern as LocalPattern
from shared.localmode import NoPostgres
from shared.localmode import RedisServer as RedisServer
from shared.localmode import free_port as free_port
from shared.localmode import nginx_binary as nginx_binary

if TYPE_CHECKING:  # imported where used: benchmarks need these helpers, not Starlette's client
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


@contextmanager
def ready_client(app: "FastAPI") -> Iterator["TestClient"]:
    """An in-process client of `app`, once its /ready answers 200 (a service loads its model in
    the background, so a request sent at once may get 503)."""
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, what=f"{app.title} ready")
        yield client


@contextmanager
def served(app: "FastAPI", **config: object) -> Iterator[str]:
    """`app` behind a real uvicorn server on a free loopback port, in a thread: its base URL.

    For what an in-process client cannot do: sockets that stall, trickle or hang up.
    """
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_config=None, **config)  # type: ignore[arg-type]
    )
    thread = threading.Thread(target=server.run, name="served", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=30, what=f"{app.title} listening")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def requests_counted(metrics: str, **labels: str) -> float:
    """How many requests a /metrics text counts with these labels (http_requests_total)."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "http_requests_total"
        and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def read_until_closed(sock: "socket.socket") -> bytes:
    """Everything a server sends on `sock` until it closes the connection."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


class OrphanedConnection:
    """What httpcore 1.0.9 left in a pool: a slot that is neither idle, closed nor in use.

    Appended to a ServiceClient's pool, it makes the leak its liveness check looks for."""

    def is_idle(self) -> bool:
        return False

    def is_closed(self) -> bool:
        return False

    async def aclose(self) -> None:
        pass


# The PostgreSQL server tests make their databases on: DATABASE_URL's, else the usual local one.
POSTGRES_SERVER = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database(prefix: str = "test") -> Iterator[str]:
    """A new, empty database on POSTGRES_SERVER: its URL, then it is dropped. NoPostgres when
    no server answers."""
    server = make_url(POSTGRES_SERVER).set(drivername="postgresql")
    admin_url = server.set(database="postgres").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        raise NoPostgres(f"no PostgreSQL answering at {server.host}:{server.port}: {exc}") from exc
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def pattern_running(folder: str | Path, **variables: str) -> Iterator[LocalPattern]:
    """The pattern's compose file run through local mode, on free ports, with its own Redis and,
    where it has a PostgreSQL service, its own database (dropped afterwards).

    `variables` are what a shell would export for compose's ${VAR} substitution. REDIS_URL is
    left out unless given, so each test gets a private redis-server it may restart or stop.
    A pattern that needs PostgreSQL is skipped where none answers.
    """
    shell = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    with ExitStack() as stack:
        try:
            if "DATABASE_URL" not in variables and postgres_database_name(Path(folder)):
                variables["DATABASE_URL"] = stack.enter_context(postgres_database("pattern"))
            pattern = LocalPattern(folder, ports="free", variables={**shell, **variables})
            stack.callback(pattern.stop)
            pattern.start()
        except NoPostgres as exc:
            pytest.skip(str(exc))
        yield pattern


def postgres_database_name(folder: Path) -> str | None:
    """The database the pattern's PostgreSQL service makes (its POSTGRES_DB), which local mode
    uses on the machine's server; None for a pattern without one."""
    services = yaml.safe_load((folder / "compose.yaml").read_text())["services"].values()
    for service in services:
        if service.get("image", "").split("/")[-1].startswith("postgres"):
            return str((service.get("environment") or {}).get("POSTGRES_DB", "postgres"))
    return None
