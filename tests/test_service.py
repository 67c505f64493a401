"""The parts every service shares (shared/service.py), on a minimal app."""

import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx2
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.logs import RequestIdFilter
from shared.service import Check, access_level, create_service
from shared.settings import ServiceSettings
from shared.testing import read_until_closed, requests_counted, served, wait_until


@pytest.fixture
def app() -> FastAPI:
    app = create_service("probe", ServiceSettings(max_body_bytes=100, body_timeout_seconds=0.5))

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


def test_ready_lists_every_failing_check_and_is_503() -> None:
    async def redis_down() -> str | None:
        return "redis: connection refused"

    checks: dict[str, Check] = {"redis": redis_down, "model": lambda: None}
    app = create_service("probe", ServiceSettings(), readiness=checks)
    with TestClient(app) as client:
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


@pytest.mark.parametrize(
    ("content_type", "problem"),
    [
        ("text/plain", "Content-Type must be application/json, not text/plain"),
        (None, "Content-Type must be application/json; the request has none"),
        ("application/json; charset=latin-1", "JSON bodies are UTF-8, not charset latin-1"),
    ],
)
def test_a_body_that_is_not_declared_json_gets_415(
    client: TestClient, content_type: str | None, problem: str
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    response = client.post("/echo", content=b'{"a": "b"}', headers=headers)

    assert response.status_code == 415
    assert response.json() == {"detail": problem}


@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json"])
def test_json_media_types_pass(client: TestClient, content_type: str) -> None:
    response = client.post("/echo", content=b'{"a": "b"}', headers={"content-type": content_type})

    assert response.status_code == 200


def test_malformed_json_gets_422_naming_the_problem_and_its_position(client: TestClient) -> None:
    response = client.post(
        "/echo", content=b'{"a": "b",}', headers={"content-type": "application/json"}
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid"
    # What: json's words, which differ between Python versions; where: the same in all.
    assert error["msg"].startswith("Invalid JSON: ")
    assert error["msg"].endswith(" at line 1 column 10") or error["msg"].endswith(" column 11")


def test_a_body_that_is_not_utf8_gets_400_naming_the_byte(client: TestClient) -> None:
    response = client.post(
        "/echo", content=b'{"a": "\xff"}', headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "body is not UTF-8: invalid start byte at byte 7"}


# What an in-process client cannot send: bodies that stall, trickle or stop halfway.


@pytest.fixture
def address(app: FastAPI) -> Iterator[tuple[str, int]]:
    with served(app) as url:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port


def _half_sent(address: tuple[str, int], declared: int = 50) -> socket.socket:
    sock = socket.create_connection(address, timeout=10)
    sock.sendall(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b'Content-Length: %d\r\n\r\n{"a": ' % declared
    )
    return sock


def test_a_stalled_body_gets_408_and_the_connection_is_closed(address: tuple[str, int]) -> None:
    started = time.monotonic()
    with _half_sent(address) as sock:
        answer = read_until_closed(sock)  # returns only once the server closed the connection

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"request body not received within 0.5 s" in answer
    assert time.monotonic() - started < 5  # the body timeout, not the client's patience


def test_a_trickled_body_is_cut_at_the_body_timeout(address: tuple[str, int]) -> None:
    started = time.monotonic()
    with _half_sent(address, declared=90) as sock:
        sock.settimeout(0.1)
        answer = b""
        # One byte every 50 ms: each read would be quick, the whole body takes 4 s.
        while not answer and time.monotonic() - started < 5:
            try:
                sock.sendall(b" ")
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3


def test_many_half_sent_requests_are_all_answered_and_closed(address: tuple[str, int]) -> None:
    socks = [_half_sent(address) for _ in range(200)]
    try:
        answers = [read_until_closed(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()

    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)


def _count(metrics: str, status: int) -> float:
    return requests_counted(metrics, service="probe", route="unmatched", status=str(status))


def test_a_client_that_leaves_mid_body_is_not_a_server_error(
    address: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://{address[0]}:{address[1]}/metrics"
    before = httpx2.get(url).text  # the registry is the process's: other tests count too

    _half_sent(address).close()

    after = wait_until(
        lambda: text if _count(text := httpx2.get(url).text, 499) > _count(before, 499) else None,
        what="the disconnect counted",
    )
    assert _count(after, 500) == _count(before, 500)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_503_is_logged_as_a_warning_and_other_5xx_as_errors() -> None:
    # A shed or not-ready 503 is a refusal on purpose: an overload must not flood the error log.
    assert [access_level(s) for s in (200, 404, 499, 500, 502, 503, 504)] == [
        logging.DEBUG, logging.INFO, logging.INFO, logging.ERROR, logging.ERROR,
        logging.WARNING, logging.ERROR,
    ]  # fmt: skip
