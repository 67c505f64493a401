"""The inference log (shared/inference_log.py): model servers record every answer through a Redis
stream into the inferences table, against a real redis-server and SQLite and PostgreSQL.

What it must keep: a Redis restart loses nothing Redis acknowledged with XADD (nor what the
server still held), a recorder killed between its write and its ack writes nothing twice, and
Redis down or hung never slows or fails a prediction.
"""

import os
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import Engine

from shared.heartbeat import heartbeat_file
from shared.inference_log import (
    InferenceLog,
    InferenceRecord,
    Recorder,
    RecorderSettings,
    Recording,
    RecordingSettings,
    connect_database,
    read_inferences,
    run_recorder,
)
from shared.predict_route import serve_model
from shared.testing import RedisServer, ready_client, wait_until

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'inferences.db'}"
    else:
        url = request.getfixturevalue("postgres_url").replace(
            "postgresql://", "postgresql+psycopg://"
        )
    engine = connect_database(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _recorder(server: RedisServer, engine: Engine, claim_idle_seconds: float = 30.0) -> Recorder:
    settings = RecorderSettings(
        redis_url=server.url, block_seconds=0.05, claim_idle_seconds=claim_idle_seconds
    )
    return Recorder(Redis.from_url(server.url, socket_timeout=5), engine, settings)


def _model(server: RedisServer, variant: str = "a", **recording: float) -> TestClient:
    settings = RecordingSettings(model_dir="models/iris", variant=variant, redis_url=server.url)
    record = settings.recording()
    assert record is not None
    if recording:
        record = Recording(**{**record.__dict__, **recording})
    app = serve_model(f"recorded-{variant}", settings, record=record)
    return ready_client(app)  # type: ignore[return-value]


def _predict(client: TestClient, request_id: str) -> None:
    response = client.post(
        "/predict", json={"data": IRIS_ROWS}, headers={"X-Request-ID": request_id}
    )
    assert response.status_code == 200, response.text


def _log(client: TestClient) -> InferenceLog:
    log: InferenceLog = client.app.state.inference_log  # type: ignore[attr-defined]
    return log


def _record_all(recorder: Recorder, engine: Engine, expected: int) -> list[InferenceRecord]:
    def recorded() -> list[InferenceRecord] | None:
        recorder.step()
        found = read_inferences(engine)
        return found if len(found) >= expected else None

    return wait_until(recorded, timeout=30, what=f"{expected} records in the table")


def _stream_length(server: RedisServer) -> int:
    return int(Redis.from_url(server.url).xlen("inferences"))


def test_each_answer_is_recorded_once_with_its_request_id_and_variant(
    redis_server: RedisServer, engine: Engine
) -> None:
    recorder = _recorder(redis_server, engine)
    with _model(redis_server, "a") as a, _model(redis_server, "b") as b:
        for i in range(10):
            _predict(a, f"request-{i}")
            _predict(b, f"request-{i}")
        answer = a.post("/predict", json={"data": IRIS_ROWS}, headers={"X-Request-ID": "last"})
    records = _record_all(recorder, engine, 21)

    assert len(records) == 21
    assert {(r.request_id, r.variant) for r in records} == {
        *((f"request-{i}", v) for i in range(10) for v in "ab"),
        ("last", "a"),
    }
    last = read_inferences(engine, variant="a", request_ids=["last"])
    assert len(last) == 1
    assert last[0].rows == IRIS_ROWS
    assert [p.model_dump() for p in last[0].predictions] == answer.json()["predictions"]
    assert last[0].model_version == answer.json()["model_version"]
    assert last[0].latency_ms > 0
    assert last[0].recorded_at.tzinfo is not None
    assert len(read_inferences(engine, variant="b")) == 10


def test_a_redis_restart_loses_nothing_xadd_acknowledged_nor_what_the_server_held(
    engine: Engine,
) -> None:
    # Append-only, fsync before each answer: what XADD acknowledged is on disk.
    server = RedisServer(["redis-server", "--appendonly", "yes", "--appendfsync", "always"], None)
    try:
        with _model(server, retry_seconds=0.05) as model:
            for i in range(10):
                _predict(model, f"before-{i}")
            wait_until(lambda: _stream_length(server) == 10, what="10 entries XADDed")
            server.stop()
            for i in range(5):  # Redis down: held in the server's buffer
                _predict(model, f"during-{i}")
            assert _log(model).pending == 5
            server.start()  # same port and directory: Redis reloads its append-only file
            wait_until(lambda: _log(model).pending == 0, what="the held records sent")
        records = _record_all(_recorder(server, engine), engine, 15)
    finally:
        server.close()

    assert sorted(r.request_id for r in records) == sorted(
        [f"before-{i}" for i in range(10)] + [f"during-{i}" for i in range(5)]
    )


def test_a_recorder_killed_between_write_and_ack_duplicates_nothing(
    redis_server: RedisServer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _model(redis_server) as model:
        for i in range(8):
            _predict(model, f"request-{i}")
        wait_until(lambda: _stream_length(redis_server) == 8, what="8 entries XADDed")

    dying = _recorder(redis_server, engine)

    def killed(ids: list[bytes]) -> None:
        raise SystemExit("killed before XACK")

    monkeypatch.setattr(dying, "ack", killed)
    with pytest.raises(SystemExit):
        dying.step()
    assert len(read_inferences(engine)) == 8  # written, never acknowledged
    group = Redis.from_url(redis_server.url).xpending("inferences", "recorders")
    assert group["pending"] == 8

    # Another recorder claims what the dead one read, once idle past its bound (0 s here).
    survivor = _recorder(redis_server, engine, claim_idle_seconds=0)
    survivor.step()

    records = read_inferences(engine)
    assert sorted(r.request_id for r in records) == sorted(f"request-{i}" for i in range(8))
    assert Redis.from_url(redis_server.url).xpending("inferences", "recorders")["pending"] == 0


def _median_latency(client: TestClient, n: int) -> float:
    took = []
    for i in range(n):
        started = time.perf_counter()
        _predict(client, f"timed-{time.monotonic_ns()}-{i}")
        took.append(time.perf_counter() - started)
    return statistics.median(took)


@pytest.mark.parametrize("outage", ["stopped", "hung"])
def test_redis_down_or_hung_neither_slows_nor_fails_predict(
    redis_server: RedisServer, outage: str
) -> None:
    with _model(redis_server, timeout_seconds=0.5) as model:
        _median_latency(model, 10)  # warm up
        up = _median_latency(model, 30)
        assert redis_server.process is not None
        pid = redis_server.process.popen.pid
        if outage == "stopped":
            redis_server.stop()
        else:
            os.kill(pid, signal.SIGSTOP)  # answers nothing: every send waits its full timeout
        try:
            down = _median_latency(model, 30)
        finally:
            if outage == "hung":
                os.kill(pid, signal.SIGCONT)

    # A send waits up to 0.5 s on a hung Redis; a request that waited on it would take that long.
    assert down < 3 * up + 0.05, (
        f"median /predict {down * 1000:.1f} ms with Redis {outage}, {up * 1000:.1f} ms up"
    )


def test_a_full_buffer_drops_and_counts_and_sends_what_it_kept(
    redis_server: RedisServer, engine: Engine
) -> None:
    variant = f"v{uuid.uuid4().hex[:8]}"  # the counter is the process's: a variant of its own
    redis_server.stop()
    with _model(redis_server, variant, buffer=5, retry_seconds=0.05) as model:
        for i in range(12):
            _predict(model, f"request-{i}")
        metrics = model.get("/metrics").text
        assert _counted(metrics, variant, "dropped") == 7
        assert _counted(metrics, variant, "sent") == 0
        redis_server.start()
        wait_until(lambda: _log(model).pending == 0, what="the kept records sent")
    records = _record_all(_recorder(redis_server, engine), engine, 5)

    assert [r.request_id for r in records] == [f"request-{i}" for i in range(5)]


def _counted(metrics: str, variant: str, outcome: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "inference_log_records_total"
        and sample.labels == {"variant": variant, "outcome": outcome}
    )


def test_recording_off_leaves_the_server_as_it_was() -> None:
    settings = RecordingSettings(model_dir="models/iris", record=False)
    assert settings.recording() is None
    app = serve_model("unrecorded", settings)
    assert not hasattr(app.state, "inference_log")
    with ready_client(app) as client:
        assert client.post("/predict", json={"data": IRIS_ROWS}).status_code == 200


def test_the_recorder_loop_writes_and_beats_its_heartbeat(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    prefix = f"TEST_RECORDER_{uuid.uuid4().hex[:8].upper()}_"
    settings = RecorderSettings(redis_url=redis_server.url, database_url=url, block_seconds=0.1)
    stop = threading.Event()
    loop = threading.Thread(target=run_recorder, args=(settings, prefix, stop), daemon=True)
    loop.start()
    try:
        with _model(redis_server) as model:
            for i in range(3):
                _predict(model, f"request-{i}")
        engine = connect_database(url)
        try:
            wait_until(lambda: len(read_inferences(engine)) == 3, what="3 records in the table")
        finally:
            engine.dispose()
        assert heartbeat_file(prefix).exists()
    finally:
        stop.set()
        loop.join(timeout=10)
        heartbeat_file(prefix).unlink(missing_ok=True)
    assert not loop.is_alive()
