"""Repo-wide checks run over every implemented pattern, so a new pattern is covered on arrival."""

import importlib
import os
from contextlib import ExitStack
from dataclasses import dataclass

import httpx2

from shared.catalogue import Entry, entries
from shared.localmode import load_compose
from shared.testing import LocalPattern, pattern_running


def implemented() -> list[Entry]:
    return [entry for entry in entries() if entry.implemented]


def http_patterns() -> list[Entry]:
    """The implemented patterns with an HTTP service (a uvicorn app): a training job and its
    MLflow server alone have no API of the project's to check."""
    return [
        entry
        for entry in implemented()
        if any(
            service.command[:1] == ["uvicorn"]
            for service in load_compose(entry.path / "compose.yaml", os.environ).values()
        )
    ]


@dataclass(frozen=True)
class ModelServer:
    entry: Entry
    service: str
    environment: dict[str, str]  # what its compose file passes it

    def __str__(self) -> str:
        return f"{self.entry.slug}-{self.service}"


def model_servers() -> list[ModelServer]:
    """Every compose service of an implemented pattern that runs a model server: a uvicorn app
    factory whose app serves the Open Inference Protocol's GET /v2, as every app built on
    shared.model.create_model_service does. Found, not listed: a new one is covered on arrival."""
    found = []
    for entry in implemented():
        for name, service in load_compose(entry.path / "compose.yaml", os.environ).items():
            command = service.command
            if command[:1] != ["uvicorn"] or "--factory" not in command:
                continue
            module, _, factory = command[1].partition(":")
            app = getattr(importlib.import_module(module), factory)()
            if any(getattr(route, "path", None) == "/v2" for route in app.routes):
                found.append(ModelServer(entry, name, service.environment))
    return found


def openapi_services(pattern: LocalPattern) -> dict[str, str]:
    """name -> base URL of each port of a running pattern that serves /openapi.json (not a gRPC
    port, a database, or a service without a schema)."""
    found = {}
    for name, ports in pattern.addresses.ports.items():
        for port in ports:
            base = pattern.url(name, port)
            try:
                answer = httpx2.get(f"{base}/openapi.json", timeout=5)
            except httpx2.HTTPError:  # not HTTP at all (gRPC, Redis, PostgreSQL)
                continue
            if answer.status_code == 404:
                continue
            assert answer.status_code == 200, f"{base}/openapi.json answered {answer.status_code}"
            found[f"{name}:{port}" if len(ports) > 1 else name] = base
    return found


class LastPattern:
    """The last pattern started, kept running for the next test that asks for the same one (and
    stopped when a test asks for another, or at close). With the tests of one pattern in one
    xdist_group, they run one after the other on one worker: one start for all of them."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._running: tuple[Entry, LocalPattern] | None = None

    def get(self, entry: Entry) -> LocalPattern:
        if self._running is None or self._running[0] != entry:
            self.close()
            self._running = (entry, self._stack.enter_context(pattern_running(entry.path)))
        return self._running[1]

    def close(self) -> None:
        self._running = None
        self._stack.close()
