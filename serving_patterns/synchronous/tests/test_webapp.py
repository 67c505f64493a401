"""In-process tests of the web app: the branch on the prediction, error mapping, the deadline.

The follow-up choice and the mapping of the predictor's answers are pure logic, tested directly.
Some behaviours need a predictor that misbehaves on the wire (trickling bytes, stalling a burst)
or counts its connections, which the real predictor cannot do: a small stdlib HTTP server
stands in for it.
"""

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from serving_patterns.synchronous.settings import WebappSettings
from serving_patterns.synchronous.webapp import FOLLOW_UPS, create_app, follow_up
from shared.http import read_answer
from shared.schemas import Prediction, PredictResponse
from shared.testing import OrphanedConnection, served, wait_until

SETOSA = [5.1, 3.5, 1.4, 0.2]
ANSWER = {
    "predictions": [
        {"label": "setosa", "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0}}
    ],
    "model_version": "1.0.0",
    "request_id": "r-1",
}


def prediction(label: str, confidence: float) -> Prediction:
    others = dict.fromkeys(("setosa", "versicolor", "virginica"), (1 - confidence) / 2)
    return Prediction(label=label, probabilities={**others, label: confidence})


@pytest.mark.parametrize(
    ("label", "action"),
    [("setosa", "offer_seeds"), ("versicolor", "offer_bulbs"), ("virginica", "book_nursery_visit")],
)
def test_follow_up_branches_on_the_predicted_class(label: str, action: str) -> None:
    assert follow_up(prediction(label, 0.9), min_confidence=0.6).action == action


def test_follow_up_asks_for_a_photo_when_the_prediction_is_unsure() -> None:
    step = follow_up(prediction("virginica", 0.51), min_confidence=0.6)

    assert step.action == "ask_for_photo"
    assert "virginica (51% sure)" in step.message


def test_follow_up_asks_for_a_photo_for_a_class_it_has_no_step_for() -> None:
    unknown = Prediction(label="germanica", probabilities={"germanica": 0.99})

    assert "germanica" not in FOLLOW_UPS
    assert follow_up(unknown, min_confidence=0.6).action == "ask_for_photo"


def test_read_answer_parses_a_good_answer() -> None:
    answer = read_answer(httpx2.Response(200, json=ANSWER), PredictResponse)

    assert answer.predictions[0].label == "setosa"


@pytest.mark.parametrize(
    ("upstream", "status", "words"),
    [
        (
            httpx2.Response(422, json={"detail": [{"msg": "expected 4 features"}]}),
            422,
            "4 features",
        ),
        (httpx2.Response(413, json={"detail": "request body larger"}), 413, "body larger"),
        (httpx2.Response(503, json={"detail": "model loading"}), 503, "not ready: model loading"),
        (httpx2.Response(500, text="Internal Server Error"), 502, "answered 500"),
        (httpx2.Response(200, json={"predictions": "junk"}), 502, "does not fit"),
        (httpx2.Response(200, text="<html>"), 502, "does not fit"),
    ],
)
def test_read_answer_maps_predictor_failures_to_clear_errors(
    upstream: httpx2.Response, status: int, words: str
) -> None:
    with pytest.raises(HTTPException) as caught:
        read_answer(upstream, PredictResponse)

    assert caught.value.status_code == status
    assert words in str(caught.value.detail)


def webapp(predictor_url: str, timeout_seconds: float = 5.0) -> TestClient:
    settings = WebappSettings(predictor_url=predictor_url, timeout_seconds=timeout_seconds)
    return TestClient(create_app(settings))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"data": [[5.1, "tall", 1.4, 0.2]]}, "valid number"),
        ({"data": []}, "at least 1 item"),
        ({"rows": [SETOSA]}, "Field required"),
        ([SETOSA], "valid dictionary"),
        # Near the body limit; re-serialised (1 -> 1.0) it would pass the predictor's.
        ({"data": [[1, 1, 1, 1]] * 95_000}, "at most 100 rows per request, got 95000"),
    ],
    ids=["not a number", "empty", "no data", "not an object", "too many rows"],
)
def test_predict_rejects_bad_input_without_calling_the_predictor(
    payload: object, problem: str
) -> None:
    # No predictor listens: a 422 (not a 503) shows the web app judged the input itself.
    with webapp(f"http://127.0.0.1:{closed_port()}") as client:
        response = client.post("/predict", json=payload)

    assert response.status_code == 422
    assert problem in response.text


@dataclass
class StandIn:
    """What the stand-in predictor does, and how many connections it has accepted."""

    url: str = ""
    trickle: bool = False
    delay_seconds: float = 0.0
    connections: int = 0


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """A stdlib HTTP/1.1 server on a free port, keeping connections alive as real servers do."""
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive

        def setup(self) -> None:
            super().setup()
            state.connections += 1

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            time.sleep(state.delay_seconds)
            if state.trickle:
                # A header line every 0.2 s: each read is fast, the whole answer takes 5 s.
                self.send_response(200)
                for i in range(25):
                    self.send_header(f"x-slow-{i}", "1")
                    self.flush_headers()
                    time.sleep(0.2)
                self.end_headers()
                return
            body = httpx2.Response(200, json=ANSWER).content
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 1024  # the stdlib's 5 would drop the connections of a burst

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_deadline_bounds_the_whole_call_when_the_predictor_trickles(stand_in: StandIn) -> None:
    # httpx2's per-read timeout alone (0.5 s) never fires here: bytes come every 0.2 s for 5 s.
    stand_in.trickle = True
    with webapp(stand_in.url, timeout_seconds=0.5) as client:
        started = time.perf_counter()
        response = client.post("/predict", json={"data": [SETOSA]})
        elapsed = time.perf_counter() - started
        stand_in.trickle = False
        after = client.post("/predict", json={"data": [SETOSA]})

    assert response.status_code == 504
    assert "did not answer within 0.5 s" in response.json()["detail"]
    assert 0.5 <= elapsed < 3.0  # cut at the deadline (room for a loaded machine), not at 5 s
    assert after.status_code == 200  # the call cut off mid-answer left the pool usable


def test_predictor_connections_are_reused_across_requests(stand_in: StandIn) -> None:
    with webapp(stand_in.url) as client:
        statuses = {client.post("/predict", json={"data": [SETOSA]}).status_code for _ in range(20)}

    assert statuses == {200}
    assert stand_in.connections == 1  # one pooled connection, not one per request


def test_after_a_burst_cut_by_the_deadline_the_web_app_serves_again(stand_in: StandIn) -> None:
    # The burst that once wedged the web app for good: every later call got 504 while the
    # predictor answered in 2 ms (httpcore leaked a pool slot per call cancelled in the pool).
    stand_in.delay_seconds = 2.0
    settings = WebappSettings(predictor_url=stand_in.url, timeout_seconds=0.5)

    async def burst(url: str, n: int) -> list[int]:
        limits = httpx2.Limits(max_connections=n)
        async with httpx2.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            calls = [client.post("/predict", json={"data": [SETOSA]}) for _ in range(n)]
            return [r.status_code for r in await asyncio.gather(*calls)]

    with served(create_app(settings)) as url:
        during = asyncio.run(burst(url, 1000))
        stand_in.delay_seconds = 0.0
        # By itself, soon: the wedged app never did (a loaded machine may need a second try).
        # One after another, so that each has the whole 0.5 s deadline to itself.
        after = wait_until(
            lambda: (codes := _one_by_one(url, 20)) == [200] * 20 and codes,
            timeout=30,
            what="20 calls in a row answered 200 after the burst",
        )
        health = httpx2.get(f"{url}/health")

    assert set(during) <= {503, 504} and 504 in during  # shed, or cut at the deadline
    assert after == [200] * 20
    assert health.status_code == 200


def _one_by_one(url: str, n: int) -> list[int]:
    with httpx2.Client(base_url=url, timeout=30) as client:
        return [client.post("/predict", json={"data": [SETOSA]}).status_code for _ in range(n)]


def test_health_fails_while_the_predictor_client_holds_leaked_connections(
    stand_in: StandIn,
) -> None:
    settings = WebappSettings(predictor_url=stand_in.url, leak_grace_seconds=0)
    with TestClient(create_app(settings)) as client:
        predictor = client.app.state.predictor  # type: ignore[attr-defined]
        healthy = client.get("/health")
        predictor.http._transport._pool._connections.append(OrphanedConnection())
        unhealthy = client.get("/health")

    assert healthy.status_code == 200
    assert unhealthy.status_code == 503
    assert unhealthy.json()["reasons"]["predictor client"].startswith(
        "client of the predictor: 1 of 100 pooled connections held by no call"
    )
