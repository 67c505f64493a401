"""The proxy's shadow in-process: copies to B never hold the request, are bounded and counted.
Model B here is a stand-in client whose calls hang, fail or answer as the test says."""

import asyncio
from typing import Any

import httpx2
import pytest
from fastapi import HTTPException

from qa_patterns.shadow_ab_test.proxy import Shadow
from shared.http import ServiceClient
from shared.logs import request_id_var


class StandInB:
    """What Shadow uses of a ServiceClient: call() and base_url."""

    base_url = "http://model-b"

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[bytes | None, str]] = []
        self.release = asyncio.Event()

    async def call(self, method: str, path: str, content: bytes | None = None) -> httpx2.Response:
        self.calls.append((content, request_id_var.get()))
        if self.behaviour == "hang":
            await self.release.wait()
        if self.behaviour == "timeout":
            raise HTTPException(504, "model B did not answer within 1 s")
        if self.behaviour == "down":
            raise HTTPException(503, "model B is unreachable (ConnectError)")
        return httpx2.Response(500 if self.behaviour == "fail" else 200, json={})


def shadow(b: StandInB, max_in_flight: int = 10, enabled: bool = True) -> Shadow:
    client: Any = b  # duck-typed: the two members Shadow uses
    typed: ServiceClient = client
    return Shadow(typed, enabled, max_in_flight)


async def settle(s: Shadow) -> None:
    while s.state().in_flight:
        await asyncio.sleep(0.001)


def test_a_copy_returns_at_once_while_b_hangs_and_carries_the_request_id() -> None:
    async def scenario() -> None:
        b = StandInB("hang")
        s = shadow(b)
        request_id_var.set("r-1")
        s.send(b'{"data": [[1, 2, 3, 4]]}')  # returns without waiting: no await here
        await asyncio.sleep(0.01)
        assert s.state().in_flight == 1
        assert b.calls == [(b'{"data": [[1, 2, 3, 4]]}', "r-1")]
        b.release.set()
        await settle(s)
        assert s.state().copies == {"answered": 1}

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [("ok", "answered"), ("fail", "failed"), ("timeout", "timeout"), ("down", "unreachable")],
)
def test_each_copy_is_counted_by_what_became_of_it(behaviour: str, outcome: str) -> None:
    async def scenario() -> None:
        s = shadow(StandInB(behaviour))
        for _ in range(3):
            s.send(b"{}")
        await settle(s)
        assert s.state().copies == {outcome: 3}

    asyncio.run(scenario())


def test_copies_beyond_the_bound_are_skipped_and_counted() -> None:
    async def scenario() -> None:
        b = StandInB("hang")
        s = shadow(b, max_in_flight=2)
        for _ in range(5):
            s.send(b"{}")
        await asyncio.sleep(0.01)
        assert len(b.calls) == 2
        assert s.state().copies == {"skipped": 3}
        await s.close()  # let go of the hanging ones
        assert s.state().in_flight == 0

    asyncio.run(scenario())


def test_out_of_the_shadow_nothing_is_sent() -> None:
    async def scenario() -> None:
        b = StandInB("ok")
        s = shadow(b, enabled=False)
        s.send(b"{}")
        await asyncio.sleep(0.01)
        assert b.calls == [] and s.state().copies == {}

    asyncio.run(scenario())
