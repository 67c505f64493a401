"""shared/batching.py: the micro-batcher's guarantees over random interleavings and sizes
(hypothesis), with a model that is a pure function of each row, so every answer can be checked;
then a model server with batching on, in process and over HTTP."""

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx2
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from shared.batching import MicroBatcher, Overloaded
from shared.catalogue import REPO_ROOT
from shared.model import Predictor, create_model_service
from shared.settings import ModelServiceSettings
from shared.testing import pattern_running, requests_counted, served, wait_until
from tests.conftest import ModelServer, model_servers

MODEL_DIR = REPO_ROOT / "models" / "iris"
POISON = -1.0  # a row holding it makes the model fail, as a row a real model cannot take


@dataclass
class Model:
    """y = 2x + 1 per row, slow enough (seconds per call) for requests to pile up behind it.
    Records every batch it is given; fails on a batch holding a POISON row."""

    seconds: float = 0.002
    batches: list[list[float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        with self.lock:
            self.batches.append(x[:, 0].tolist())
        time.sleep(self.seconds)
        if (x == POISON).any():
            raise ValueError("the model cannot take these rows")
        return {"y": 2 * x + 1, "first": x[:, :1]}


def batcher(model: Model, max_batch_size: int = 8, **bounds: Any) -> MicroBatcher:
    return MicroBatcher(
        model,
        max_batch_size=max_batch_size,
        max_wait_seconds=bounds.get("max_wait_seconds", 30.0),
        max_queue=bounds.get("max_queue", 10_000),
        service="test",
    )


def rows_of(caller: int, n: int) -> np.ndarray:
    """n rows, each unique to its caller and position: caller.row in column 0."""
    return np.array([[caller * 1000 + i, i] for i in range(n)], dtype=np.float64)


requests = st.lists(
    st.tuples(st.integers(1, 12), st.floats(0, 0.004)),  # (rows, delay before sending)
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=requests, max_batch_size=st.integers(1, 16))
def test_every_caller_gets_exactly_its_own_rows_in_order_and_batches_respect_the_size(
    requests: list[tuple[int, float]], max_batch_size: int
) -> None:
    model = Model()

    async def scenario() -> list[dict[str, np.ndarray]]:
        batch = batcher(model, max_batch_size)

        async def call(i: int, n: int, delay: float) -> dict[str, np.ndarray]:
            await asyncio.sleep(delay)
            return await batch({"x": rows_of(i, n)})

        try:
            return await asyncio.gather(*(call(i, n, d) for i, (n, d) in enumerate(requests)))
        finally:
            await batch.close()

    answers = asyncio.run(scenario())

    for i, ((n, _), answer) in enumerate(zip(requests, answers, strict=True)):
        assert answer["y"].tolist() == (2 * rows_of(i, n) + 1).tolist()
        assert answer["first"].ravel().tolist() == rows_of(i, n)[:, 0].tolist()
    sizes = {n for n, _ in requests}
    for batch_rows in model.batches:
        # Never more than max_batch_size rows, unless one request alone brings more.
        assert len(batch_rows) <= max_batch_size or len(batch_rows) in sizes
        callers = {int(value) // 1000 for value in batch_rows}
        if len(callers) > 1:
            assert len(batch_rows) <= max_batch_size
    assert sum(len(b) for b in model.batches) == sum(n for n, _ in requests)  # none twice


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=requests, cancelled=st.sets(st.integers(0, 24)))
def test_a_caller_that_leaves_while_it_waits_has_its_rows_dropped_and_changes_no_answer(
    requests: list[tuple[int, float]], cancelled: set[int]
) -> None:
    model = Model(seconds=0.004)

    async def scenario() -> dict[int, Any]:
        batch = batcher(model, 6)
        # Keep the model busy, so that the others wait in the queue.
        first = asyncio.ensure_future(batch({"x": rows_of(999, 1)}))
        await asyncio.sleep(0)
        tasks = {
            i: asyncio.ensure_future(batch({"x": rows_of(i, n)}))
            for i, (n, _) in enumerate(requests)
        }
        await asyncio.sleep(0)  # every one of them queued
        for i in cancelled & set(tasks):
            tasks[i].cancel()
        results = await asyncio.gather(first, *tasks.values(), return_exceptions=True)
        await batch.close()
        return dict(zip(tasks, results[1:], strict=True))

    results = asyncio.run(scenario())

    for i, result in results.items():
        if i in cancelled:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result["y"].tolist() == (2 * rows_of(i, requests[i][0]) + 1).tolist()
    computed = {int(value) // 1000 for b in model.batches for value in b}
    assert not computed & cancelled  # the rows of those gone never reached the model


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=requests, poisoned=st.sets(st.integers(0, 24), min_size=1))
def test_rows_the_model_fails_on_fail_only_their_own_request(
    requests: list[tuple[int, float]], poisoned: set[int]
) -> None:
    model = Model()

    async def scenario() -> list[Any]:
        batch = batcher(model, 16)

        async def call(i: int, n: int, delay: float) -> Any:
            rows = rows_of(i, n)
            if i in poisoned:
                rows[-1, 1] = POISON
            await asyncio.sleep(delay)
            return await batch({"x": rows})

        try:
            return await asyncio.gather(
                *(call(i, n, d) for i, (n, d) in enumerate(requests)), return_exceptions=True
            )
        finally:
            await batch.close()

    results = asyncio.run(scenario())

    for i, result in enumerate(results):
        if i in poisoned:
            assert isinstance(result, ValueError)
        else:
            assert result["y"].tolist() == (2 * rows_of(i, requests[i][0]) + 1).tolist()


def test_a_lone_request_is_not_held_for_the_wait() -> None:
    model = Model(seconds=0)

    async def scenario() -> float:
        batch = batcher(model, 64, max_wait_seconds=5.0)
        await batch({"x": rows_of(0, 1)})  # the thread and the worker started
        started = time.perf_counter()
        for i in range(20):
            await batch({"x": rows_of(i, 1)})
        took = (time.perf_counter() - started) / 20
        await batch.close()
        return took

    assert asyncio.run(scenario()) < 0.05  # far below the 5 s it may wait
    assert all(len(b) == 1 for b in model.batches)


def test_requests_that_arrive_while_the_model_is_busy_are_gathered() -> None:
    model = Model(seconds=0.05)

    async def scenario() -> None:
        batch = batcher(model, 64)
        first = asyncio.ensure_future(batch({"x": rows_of(0, 1)}))
        while not model.batches:  # the model has started on it, alone
            await asyncio.sleep(0.001)
        await asyncio.gather(first, *(batch({"x": rows_of(i, 1)}) for i in range(1, 30)))
        await batch.close()

    asyncio.run(scenario())

    assert model.batches == [[0.0], [i * 1000.0 for i in range(1, 30)]]


def test_a_full_queue_is_refused_at_once() -> None:
    model = Model(seconds=0.2)

    async def scenario() -> list[Any]:
        batch = batcher(model, 1, max_queue=3)
        calls = [asyncio.ensure_future(batch({"x": rows_of(i, 1)})) for i in range(6)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batch.close()
        return results

    results = asyncio.run(scenario())

    refused = [r for r in results if isinstance(r, Overloaded)]
    assert len(refused) == 2  # the first goes to the model at once, three wait, two are refused
    assert "requests already wait for the model" in str(refused[0])


def test_a_request_that_would_wait_past_its_bound_is_refused_at_once() -> None:
    model = Model(seconds=0.05)

    async def scenario() -> tuple[float, Any]:
        batch = batcher(model, 1, max_wait_seconds=0.12)
        await batch({"x": rows_of(0, 1)})  # measures the model: 50 ms a row
        busy = [asyncio.ensure_future(batch({"x": rows_of(i, 1)})) for i in range(1, 4)]
        await asyncio.sleep(0)
        started = time.perf_counter()
        try:
            await batch({"x": rows_of(9, 1)})
            refusal: Any = None
        except Overloaded as exc:
            refusal = exc
        took = time.perf_counter() - started
        await asyncio.gather(*busy, return_exceptions=True)
        await batch.close()
        return took, refusal

    took, refusal = asyncio.run(scenario())

    assert isinstance(refusal, Overloaded)
    assert "more than the 120 ms allowed" in str(refusal)
    assert took < 0.02  # at once, not after waiting


def test_a_request_still_queued_at_its_bound_is_refused_then() -> None:
    model = Model(seconds=0.3)

    async def scenario() -> list[Any]:
        batch = batcher(model, 1, max_wait_seconds=0.1)
        # No estimate yet (no batch done): both are queued; the second waits past 100 ms.
        calls = [asyncio.ensure_future(batch({"x": rows_of(i, 1)})) for i in range(2)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        await batch.close()
        return results

    first, second = asyncio.run(scenario())

    assert first["y"].tolist() == [[1.0, 1.0]]
    assert isinstance(second, Overloaded)
    assert "waited more than 100 ms" in str(second)


# A model server with batching on


def test_batching_on_gives_the_answers_of_batching_off() -> None:
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [6.0, 2.9, 4.5, 1.5]]
    off = Predictor(MODEL_DIR)
    on = Predictor(MODEL_DIR)
    on.batcher = MicroBatcher(on.run_all, 4, 1.0, 100, "test")

    async def batched() -> list[Any]:
        try:
            return list(await asyncio.gather(*(on.apredict([row]) for row in rows * 3)))
        finally:
            await on.batcher.close()  # type: ignore[union-attr]

    on_answers = [a[0] for a in asyncio.run(batched())]
    off_answers = off.predict(rows * 3)
    assert [a["label"] for a in on_answers] == [a["label"] for a in off_answers]
    # Equal up to float32 rounding: onnxruntime computes one row and many rows by different
    # kernels (a vector product, a matrix product), and the first request went alone.
    assert np.allclose(_probabilities(on_answers), _probabilities(off_answers), rtol=1e-5)


def _probabilities(answers: list[dict[str, Any]]) -> list[list[float]]:
    return [list(a["probabilities"].values()) for a in answers]


def test_a_batched_row_the_model_cannot_score_fails_only_its_request() -> None:
    on = Predictor(MODEL_DIR)
    on.batcher = MicroBatcher(on.run_all, 8, 1.0, 100, "test")

    async def batched() -> list[Any]:
        calls = [on.apredict([[5.1, 3.5, 1.4, 0.2]]), on.apredict([[3e38, -3e38, 3e38, -3e38]])]
        try:
            return list(await asyncio.gather(*calls * 3, return_exceptions=True))
        finally:
            await on.batcher.close()  # type: ignore[union-attr]

    results = asyncio.run(batched())

    assert [type(r).__name__ for r in results] == ["list", "UnscorableRows"] * 3


def test_a_model_server_with_batching_on_serves_predict_and_v2_and_shows_its_metrics() -> None:
    settings = ModelServiceSettings(model_dir=str(MODEL_DIR), max_batch_size=16)
    app, model = create_model_service("batched-server", settings)

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> Any:  # as the patterns' routes call the model
        return await model.require().apredict(body["data"])

    with served(app) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="ready")
        v2 = {
            "inputs": [
                {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}
            ]
        }

        async def burst() -> list[httpx2.Response]:
            async with httpx2.AsyncClient(base_url=url) as client:
                calls = [
                    client.post("/predict", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
                    for _ in range(20)
                ]
                calls += [client.post("/v2/models/iris/infer", json=v2) for _ in range(20)]
                return await asyncio.gather(*calls)

        answers = asyncio.run(burst())
        metrics = httpx2.get(f"{url}/metrics").text

    assert {a.status_code for a in answers} == {200}
    alone = Predictor(MODEL_DIR).predict([[5.1, 3.5, 1.4, 0.2]])[0]
    for answer in answers[:20]:
        # The same up to float32 rounding: onnxruntime computes one row and many rows by
        # different kernels (a vector product, a matrix product).
        assert answer.json()[0]["label"] == alone["label"]
        got = list(answer.json()[0]["probabilities"].values())
        assert np.allclose(got, list(alone["probabilities"].values()), rtol=1e-5, atol=1e-7)
    assert 'model_batch_rows_count{service="batched-server"}' in metrics
    assert 'model_batch_queue_wait_seconds_count{service="batched-server"}' in metrics
    assert 'model_batch_queue_depth{service="batched-server"}' in metrics


def test_a_client_that_leaves_while_its_request_waits_for_a_batch_is_dropped() -> None:
    settings = ModelServiceSettings(model_dir=str(MODEL_DIR), max_batch_size=4)
    app, model = create_model_service("batched-leaving", settings)

    @app.post("/predict")
    async def predict(body: dict[str, Any]) -> Any:
        return await model.require().apredict(body["data"])

    with served(app) as url:
        wait_until(lambda: httpx2.get(f"{url}/ready").status_code == 200, what="ready")
        batcher = model.require().batcher
        assert batcher is not None
        run, seen, release = batcher.run, [], threading.Event()

        def held_model(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            seen.append(feeds["X"][:, 0].tolist())
            if len(seen) == 1:  # the model is busy until the test lets it go: the next waits
                release.wait(timeout=60)
            return run(feeds)

        batcher.run = held_model
        busy = _send(url, 5.5)
        wait_until(lambda: seen, what="the first batch running")
        leaving = _send(url, 6.5)
        wait_until(
            lambda: _gauge(url, "model_batch_queue_depth", "batched-leaving") == 1, what="it queued"
        )
        port = leaving.getsockname()[1]
        leaving.close()  # gone before its turn
        wait_until(lambda: not _server_holds(port), what="the server to see the client gone")
        release.set()
        wait_until(lambda: _answered_499(url), what="the leaving request cancelled")
        answers = [_answer(busy), _answer(_send(url, 6.0))]  # FIFO: after where it stood

    assert [b"200 OK" in a for a in answers] == [True, True]
    assert seen == [[5.5], [6.0]]  # 6.5, the leaving client's row, never reached the model


def _server_holds(client_port: int) -> bool:
    """Whether this process (the in-thread server) still holds a connection from that port."""
    return any(
        c.raddr and c.raddr.port == client_port for c in psutil.Process().net_connections("tcp")
    )


def _send(url: str, first: float) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"data": [[first, 3.5, 1.4, 0.2]]}).encode()
    connection = socket.create_connection((host, int(port)))
    connection.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return connection


def _answer(connection: socket.socket) -> bytes:
    with connection:
        connection.settimeout(10)
        return connection.recv(65536)


def _gauge(url: str, name: str, service: str) -> float | None:
    text = httpx2.get(f"{url}/metrics").text
    samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
    return next(
        (s.value for s in samples if (s.name, s.labels) == (name, {"service": service})), None
    )


def _answered_499(url: str) -> bool:
    text = httpx2.get(f"{url}/metrics").text
    return requests_counted(text, service="batched-leaving", status="499") > 0


# Every model server, switched on by configuration


def _servers_by_pattern() -> list[list[ModelServer]]:
    by_pattern: dict[str, list[ModelServer]] = {}
    for server in model_servers():
        by_pattern.setdefault(server.entry.slug, []).append(server)
    return list(by_pattern.values())


def _burst(url: str) -> tuple[list[httpx2.Response], str]:
    """24 concurrent /predict calls of the server's sample, and its /metrics after them."""
    sample = httpx2.get(f"{url}/metadata").json()["sample_input"]

    async def burst() -> list[httpx2.Response]:
        async with httpx2.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json=sample) for _ in range(24)))

    answers = asyncio.run(burst())
    return answers, httpx2.get(f"{url}/metrics").text


@pytest.mark.e2e
@pytest.mark.parametrize(
    "servers", _servers_by_pattern(), ids=lambda servers: servers[0].entry.slug
)
def test_every_model_server_batches_when_its_compose_setting_says_so(
    servers: list[ModelServer],
) -> None:
    # One start of the pattern with every model server of it switched on.
    switches = {}
    for server in servers:
        switch = next((k for k in server.environment if k.endswith("_MAX_BATCH_SIZE")), None)
        assert switch, f"{server}: its compose file does not pass <PREFIX>_MAX_BATCH_SIZE through"
        switches[switch] = "16"

    with pattern_running(servers[0].entry.path, **switches) as pattern:
        bursts = [(server, _burst(pattern.url(server.service))) for server in servers]

    for server, (answers, metrics) in bursts:
        assert {a.status_code for a in answers} == {200}, f"{server}: {answers[0].text}"
        assert len({json.dumps(a.json()["predictions"][0]["label"]) for a in answers}) == 1
        batches = [
            s
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.name == "model_batch_rows_count"
        ]
        assert batches and batches[0].value >= 1, f"{server}: no batch counted: batching is off"
