"""The parts every service shares (shared/service.py), on a minimal app."""

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.logs import RequestIdFilter
from shared.service import create_service
from shared.settings import ServiceSettings


@pytest.fixture
def app() -> FastAPI:
    app = create_service("probe", ServiceSettings(max_body_bytes=100))

    @app.post("/echo")
    async def echo(payload: dict[str, str]) -> dict[str, str]:
        return payload

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        yield client


def test_a_body_over_the_limit_without_a_length_is_refused_as_it_streams(
    client: TestClient,
) -> None:
    chunks = (b'{"a": "' + b"x" * 60 + b'"}' for _ in range(3))  # no Content-Length: chunked

    response = client.post("/echo", content=chunks, headers={"content-type": "application/json"})

    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 100 bytes"}


def test_a_body_under_the_limit_passes(client: TestClient) -> None:
    response = client.post("/echo", json={"a": "b"})

    assert response.status_code == 200
    assert response.json() == {"a": "b"}


def test_ready_lists_every_failing_check_and_is_503(app: FastAPI, client: TestClient) -> None:
    async def redis_down() -> str | None:
        return "redis: connection refused"

    app.state.readiness["redis"] = redis_down
    app.state.readiness["model"] = lambda: None

    response = client.get("/ready")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json() == {
        "status": "not ready",
        "reasons": {"redis": "redis: connection refused"},
    }


def test_unknown_paths_share_one_metrics_label(client: TestClient) -> None:
    for path in ("/a", "/b", "/c"):
        assert client.get(path).status_code == 404

    metrics = client.get("/metrics").text

    assert 'route="unmatched",service="probe",status="404"} 3.0' in metrics
    assert 'route="/a"' not in metrics


def test_an_unhandled_error_is_a_500_that_carries_the_request_id_as_does_its_log_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.handler.addFilter(RequestIdFilter())  # what the JSON log handler does
    response = client.get("/bug", headers={"X-Request-ID": "trace-me-123"})

    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}
    assert response.headers["x-request-id"] == "trace-me-123"
    [logged] = [r for r in caplog.records if r.exc_info and r.name == "shared.service"]
    assert "RuntimeError: a bug" in caplog.text
    assert logged.getMessage() == "unhandled error in GET /bug"
    assert logged.request_id == "trace-me-123"  # type: ignore[attr-defined]
