"""The uvicorn protocol every service runs with (shared/server.py): bounds on request heads."""

import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from shared.server import Protocol
from shared.testing import read_until_closed, served


class Strict(Protocol):
    header_timeout_seconds = 0.5
    max_header_bytes = 1000


@pytest.fixture
def address() -> Iterator[tuple[str, int]]:
    app = FastAPI()

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"status": "ok"}

    with served(app, http=Strict) as url:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        yield parts.hostname, parts.port


def test_a_connection_that_sends_nothing_gets_408_and_is_closed(address: tuple[str, int]) -> None:
    started = time.monotonic()
    with socket.create_connection(address, timeout=10) as sock:
        answer = read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert answer.endswith(b"request head not received within 0.5 s")
    assert time.monotonic() - started < 5


def test_headers_sent_a_byte_at_a_time_are_cut_at_the_header_timeout(
    address: tuple[str, int],
) -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
    started = time.monotonic()
    with socket.create_connection(address, timeout=0.05) as sock:
        answer = b""
        for byte in head:  # a byte every 50 ms: each is quick, the head would take 11 s
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if answer:
                break

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < 3


def test_a_request_head_over_the_limit_gets_431(address: tuple[str, int]) -> None:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        answer = read_until_closed(sock)

    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"request head larger than 1000 bytes")


def test_keep_alive_requests_within_the_bounds_are_served(address: tuple[str, int]) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(address, timeout=10) as sock:
        answers = []
        for _ in range(3):  # each within the header timeout, together well past it
            sock.sendall(request)
            answers.append(sock.recv(4096))
            time.sleep(0.3)

    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") for a in answers)
