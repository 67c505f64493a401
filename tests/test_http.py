"""The client every proxy calls its upstreams with (shared/http.py), against a real server."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import HTTPException

from shared.http import KEEPALIVE_EXPIRY_SECONDS, ServiceClient
from shared.testing import OrphanedConnection

pytestmark = pytest.mark.anyio  # anyio's pytest plugin runs the async tests, on asyncio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def upstream(delay_seconds: float) -> AsyncIterator[str]:
    """A keep-alive HTTP/1.1 server on a free port: /slow answers after the delay, /fast at once."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while True:
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = await reader.read(4096)
                    if not chunk:
                        return
                    head += chunk
                if head.startswith(b"GET /slow"):
                    await asyncio.sleep(delay_seconds)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def _url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def outcome(client: ServiceClient, path: str) -> int:
    try:
        return (await client.call("GET", path)).status_code
    except HTTPException as exc:
        return exc.status_code


async def test_a_burst_cut_by_the_deadline_leaves_the_client_able_to_send() -> None:
    # The burst that wedged httpx 0.28 for good: 1,000 calls, each cancelled by the deadline
    # while most wait for one of 100 connections (39 slots leaked per burst there).
    async with upstream(delay_seconds=2.0) as url, ServiceClient("up", url, 0.3) as client:
        for _ in range(2):
            burst = await asyncio.gather(*(outcome(client, "/slow") for _ in range(1000)))
            assert set(burst) == {503, 504}  # shed at once past max_in_flight, or cut at 0.3 s
            assert burst.count(504) == client.max_in_flight

        # By itself, soon (the wedged client never did): 20 calls one after another, each with
        # the whole deadline, tried again for up to 10 s while the burst's cleanup takes the
        # loop on a slow machine.
        deadline = time.monotonic() + 10
        while True:
            after = [await outcome(client, "/fast") for _ in range(20)]
            if after == [200] * 20 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)

        assert after == [200] * 20
        assert client.leaked_slots() == 0
        assert client.liveness() is None


async def test_calls_past_max_in_flight_are_shed_at_once_with_retry_after() -> None:
    async with (
        upstream(delay_seconds=1.0) as url,
        ServiceClient("up", url, 5.0, max_connections=2, max_in_flight=4) as client,
    ):
        calls = [asyncio.create_task(client.call("GET", "/slow")) for _ in range(4)]
        await asyncio.sleep(0)  # let the four take their places
        started = time.monotonic()
        with pytest.raises(HTTPException) as shed:
            await client.call("GET", "/fast")
        shed_after = time.monotonic() - started
        answered = [r.status_code for r in await asyncio.gather(*calls)]

    assert shed.value.status_code == 503
    assert shed.value.headers == {"Retry-After": "1"}
    assert shed.value.detail == "up is saturated (calls in flight: 4)"
    assert shed_after < 0.5  # at once, not after the calls ahead of it (1 s or more)
    assert answered == [200] * 4  # the admitted ones wait for a connection and are served


async def test_an_unreachable_upstream_is_503_and_a_silent_one_504_at_the_deadline() -> None:
    answered = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Holds the writer: asyncio (3.13) hangs up a connection whose writer nobody holds.
        await answered.wait()
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with ServiceClient("up", f"http://127.0.0.1:{port}", 0.3) as client:
        started = time.monotonic()
        late = await outcome(client, "/fast")
        elapsed = time.monotonic() - started
        answered.set()
        silent.close()
        await silent.wait_closed()
        down = await outcome(client, "/fast")  # nothing listens now: refused

    assert (late, down) == (504, 503)
    assert 0.3 <= elapsed < 1.5


async def test_liveness_reports_a_slot_held_by_no_call_once_it_outlives_the_grace() -> None:
    async with upstream(delay_seconds=0) as url:
        client = ServiceClient("up", url, 1.0, max_connections=4, leak_grace_seconds=0.2)
        async with client:
            assert await outcome(client, "/fast") == 200
            client.http._transport._pool._connections.append(OrphanedConnection())  # type: ignore[attr-defined]

            first = client.liveness()  # might be a call finishing: not yet
            await asyncio.sleep(0.25)
            later = client.liveness()

    assert first is None
    assert later is not None
    assert later.startswith("client of up: 1 of 4 pooled connections held by no call for 0 s")


async def test_an_idle_connection_is_dropped_before_the_upstream_closes_it_under_a_call() -> None:
    # The upstream closes a connection idle for IDLE seconds, and a request that comes in that
    # instant is lost: modelled here as a server that closes, without an answer, a connection
    # whose next request comes IDLE seconds or more after its last answer (uvicorn's keep-alive
    # timeout firing as the request arrives). The client must not reuse such a connection.
    idle = KEEPALIVE_EXPIRY_SECONDS + 0.5
    assert idle <= uvicorn.Config("app:app").timeout_keep_alive  # the real one is longer still
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        answered = None
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):  # client gone
            while head := await reader.readuntil(b"\r\n\r\n"):
                if answered is not None and time.monotonic() - answered >= idle:
                    writer.close()  # closing as the request arrives: no answer
                    return
                assert head.startswith(b"GET /")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
                answered = time.monotonic()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server, ServiceClient("upstream", _url(server), 5.0) as client:
        assert await outcome(client, "/fast") == 200
        await asyncio.sleep(idle + 0.1)  # idle past the upstream's limit
        assert await outcome(client, "/fast") == 200  # not 503: a new connection
    assert connections == 2
