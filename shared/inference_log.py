"""Every model server records its own predictions: a queue (a Redis stream) into an inference
table (SQLite or PostgreSQL), so that a report can join what each model answered to one request.

The QA patterns (shadow and online A/B tests) run two models on the same traffic; the proxy in
front of them never needs to see B's answer, because each model server writes what it answered:

    model server --record() (in memory, never waits)--> flusher --XADD--> Redis stream
        --XREADGROUP--> recorder --INSERT .. ON CONFLICT DO NOTHING--> inferences --XACK

- In a model server (`shared.predict_route.serve_model(..., record=settings.recording())`),
  `InferenceLog.record` appends to a bounded in-memory buffer and returns; a background task
  sends the buffer with XADD (MAXLEN ~ a bound). Redis slow or down delays only that task: it
  retries, and what arrives beyond the buffer is dropped, counted
  (`inference_log_records_total{outcome="dropped"}`) and logged, never waited for.
- The recorder (`python -m <pattern>.recorder`, a few lines over `run_recorder`) reads the stream
  in a consumer group, writes a batch, then acknowledges it. A recorder that dies between the
  write and the ack leaves its entries pending; another one claims them (XAUTOCLAIM, once they
  have been idle `claim_idle_seconds`) and writes them again, which the table's primary key
  (request_id, variant) turns into nothing: at-least-once delivery, exactly-once rows.
- `read_inferences(engine, ...)` gives the rows back as `InferenceRecord`s, for reports and tests.

SQLAlchemy is imported only by the recorder's half (functions below): a model server that
records needs a Redis client, not a database driver. Redis is imported where it is used too:
a service that only reads these settings (a proxy's settings module beside them) needs neither.
"""

import asyncio
import functools
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, Field, ValidationError

from shared.heartbeat import Heartbeat
from shared.logs import configure_logging
from shared.schemas import Prediction
from shared.settings import ModelServiceSettings, ServiceSettings

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine, Table

logger = logging.getLogger(__name__)

REDIS_URL = "redis://127.0.0.1:6379/0"
STREAM = "inferences"  # the Redis stream the model servers append to
GROUP = "recorders"  # the recorders' consumer group on it
FIELD = b"record"  # each stream entry holds one field: the record as JSON


class InferenceRecord(BaseModel):
    """One model server's answer to one request, as it recorded it."""

    request_id: str = Field(description="The request's X-Request-ID, the same at every variant")
    variant: str = Field(description="Which model server answered (a, b, ...)")
    model_version: str
    rows: list[list[float]] = Field(description="The input rows, as the request sent them")
    predictions: list[Prediction] = Field(description="The answer's items, one per row")
    latency_ms: float = Field(description="Time the server spent on /predict, model and delay")
    recorded_at: datetime


# ---------------------------------------------------------------------------------------------
# The model server's half: record without waiting.

RECORDS = Counter(
    "inference_log_records_total",
    "Predictions recorded, by what became of them: sent (XADD acknowledged by Redis) or "
    "dropped (the buffer was full while Redis could not take them)",
    ["variant", "outcome"],
)
BUFFERED = Gauge(
    "inference_log_buffered", "Records waiting in memory for Redis to take them", ["variant"]
)


@dataclass(frozen=True)
class Recording:
    """Where and how a model server records its predictions."""

    variant: str
    redis_url: str = REDIS_URL
    stream: str = STREAM
    buffer: int = 10_000  # records held in memory while Redis cannot take them
    max_stream_length: int = 1_000_000  # XADD MAXLEN ~: the stream's bound if no recorder reads
    timeout_seconds: float = 0.5  # longest wait for Redis per send
    retry_seconds: float = 0.5  # pause after a failed send before the next try
    batch: int = 500  # most records in one pipelined send


class RecordingSettings(ModelServiceSettings):
    """A model server that records its predictions; a pattern subclasses it with its prefix."""

    variant: str = Field(
        "a", pattern=r"^[a-z0-9_-]{1,32}$", description="The name its records carry (a, b)"
    )
    record: bool = Field(True, description="Record every prediction into the inference log")
    redis_url: str = Field(REDIS_URL, description="Redis holding the inference log's stream")
    record_stream: str = Field(STREAM, description="Redis stream the records are appended to")
    record_buffer: int = Field(
        10_000,
        gt=0,
        description="Records held in memory while Redis is slow or down; beyond, dropped and "
        "counted",
    )
    record_max_stream_length: int = Field(
        1_000_000, gt=0, description="XADD MAXLEN ~: the stream's bound when no recorder reads it"
    )
    record_timeout_seconds: float = Field(
        0.5, gt=0, description="Longest wait for Redis per send (in the background)"
    )

    def recording(self) -> Recording | None:
        """serve_model's `record=`: None when recording is off."""
        if not self.record:
            return None
        return Recording(
            variant=self.variant,
            redis_url=self.redis_url,
            stream=self.record_stream,
            buffer=self.record_buffer,
            max_stream_length=self.record_max_stream_length,
            timeout_seconds=self.record_timeout_seconds,
        )


class InferenceLog:
    """The model server's recorder: `record()` from the request, `running()` in the lifespan."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording
        self._buffer: deque[InferenceRecord] = deque()
        self._wake: asyncio.Event | None = None  # made in running(), in the server's event loop
        self._sent = RECORDS.labels(recording.variant, "sent")
        self._dropped = RECORDS.labels(recording.variant, "dropped")
        self._buffered = BUFFERED.labels(recording.variant)
        self._dropped_since_log = 0
        self._last_drop_log = float("-inf")
        self._failing = False

    def record(self, record: InferenceRecord) -> None:
        """Keep the record for the flusher and return at once; drop it if the buffer is full."""
        if len(self._buffer) >= self.recording.buffer:
            self._dropped.inc()
            self._dropped_since_log += 1
            now = time.monotonic()
            if now - self._last_drop_log >= 10:  # a line per 10 s, not one per request
                logger.warning(
                    "inference log buffer full (%d records): dropped %d since the last report",
                    self.recording.buffer,
                    self._dropped_since_log,
                )
                self._dropped_since_log, self._last_drop_log = 0, now
            return
        self._buffer.append(record)
        self._buffered.set(len(self._buffer))
        if self._wake is not None:
            self._wake.set()

    def record_answer(
        self,
        request_id: str,
        model_version: str,
        rows: list[list[float]],
        predictions: list[dict[str, Any]],
        latency_ms: float,
    ) -> None:
        """record() for a /predict answer."""
        self.record(
            InferenceRecord.model_construct(
                request_id=request_id,
                variant=self.recording.variant,
                model_version=model_version,
                rows=rows,
                predictions=[Prediction.model_construct(**p) for p in predictions],
                latency_ms=latency_ms,
                recorded_at=datetime.now(UTC),
            )
        )

    @property
    def pending(self) -> int:
        """Records not yet taken by Redis."""
        return len(self._buffer)

    @asynccontextmanager
    async def running(self, drain_seconds: float = 2.0) -> AsyncIterator[None]:
        """Send the buffer in the background while the server runs; on the way out, try for up
        to `drain_seconds` to send what is left (then it is lost, and logged)."""
        from shared.redis_client import connect as connect_redis

        redis = connect_redis(
            self.recording.redis_url, self.recording.timeout_seconds, max_connections=2
        )
        wake = self._wake = asyncio.Event()
        task = asyncio.create_task(self._flush(redis, wake), name="inference-log")
        try:
            yield
        finally:
            with suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    while self._buffer and not task.done():
                        await asyncio.sleep(0.01)
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            if self._buffer:
                logger.warning("inference log: %d records not sent at exit", len(self._buffer))
            self._wake = None
            await redis.aclose()

    async def _flush(self, redis: Any, wake: asyncio.Event) -> None:
        from redis.exceptions import RedisError

        recording = self.recording
        while True:
            if not self._buffer:
                wake.clear()
                await wake.wait()
            batch = [self._buffer[i] for i in range(min(recording.batch, len(self._buffer)))]
            try:
                pipe = redis.pipeline(transaction=False)
                for record in batch:
                    pipe.xadd(
                        recording.stream,
                        {FIELD: record.model_dump_json()},
                        maxlen=recording.max_stream_length,
                        approximate=True,
                    )
                await pipe.execute()
            except (RedisError, OSError) as exc:
                # Kept, and sent again: a batch Redis took in part is sent whole, and the
                # recorder's (request_id, variant) key writes its repeats nothing.
                if not self._failing:
                    logger.warning("inference log: Redis not taking records, retrying: %r", exc)
                    self._failing = True
                await asyncio.sleep(recording.retry_seconds)
                continue
            if self._failing:
                logger.info("inference log: Redis takes records again")
                self._failing = False
            for _ in batch:  # record() only appends, so the batch is still the buffer's head
                self._buffer.popleft()
            self._sent.inc(len(batch))
            self._buffered.set(len(self._buffer))


# ---------------------------------------------------------------------------------------------
# The recorder's half: the stream into the inferences table.


class RecorderSettings(ServiceSettings):
    """The recorder process; a pattern subclasses it with its env prefix."""

    redis_url: str = Field(REDIS_URL, description="Redis holding the inference log's stream")
    database_url: str = Field(
        "sqlite:///.local/inferences.db",
        description="SQLAlchemy URL of the inference database (SQLite file or PostgreSQL)",
    )
    stream: str = Field(STREAM, description="Redis stream the model servers append to")
    group: str = Field(GROUP, description="Consumer group the recorders read it in")
    batch_size: int = Field(500, gt=0, description="Most records written in one transaction")
    block_seconds: float = Field(
        1.0, gt=0, le=30, description="Longest wait for new records in one read"
    )
    claim_idle_seconds: float = Field(
        30.0,
        ge=0,
        description="Records a recorder read and has not acknowledged for this long (it died) "
        "are claimed and written by another",
    )
    heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often the recorder's loop beats; unhealthy after 3 missed"
    )


@functools.cache
def inferences_table() -> "Table":
    """The table every recorded prediction lands in: one row per (request id, variant)."""
    from sqlalchemy import JSON, Column, DateTime, Float, MetaData, String, Table

    return Table(
        "inferences",
        MetaData(),
        Column("request_id", String(128), primary_key=True),
        Column("variant", String(32), primary_key=True),
        Column("model_version", String(64), nullable=False),
        Column("rows", JSON, nullable=False),
        Column("predictions", JSON, nullable=False),
        Column("latency_ms", Float, nullable=False),
        Column("recorded_at", DateTime(timezone=True), nullable=False, index=True),
    )


def connect_database(database_url: str) -> "Engine":
    """The inference database, with its table created if missing."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from shared.database import sqlalchemy_url

    url = make_url(sqlalchemy_url(database_url))
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    try:
        inferences_table().metadata.create_all(engine)
    except SQLAlchemyError:
        engine.dispose()
        raise
    return engine


def write_records(engine: "Engine", records: Sequence[InferenceRecord]) -> None:
    """Insert the records in one transaction; a (request id, variant) already there is skipped."""
    if not records:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(inferences_table()).on_conflict_do_nothing(
        index_elements=["request_id", "variant"]
    )
    with engine.begin() as connection:
        # JSON for the rows and predictions; the time stays a datetime for the DateTime column.
        rows = [r.model_dump(mode="json") | {"recorded_at": r.recorded_at} for r in records]
        connection.execute(statement, rows)


def read_inferences(
    engine: "Engine",
    variant: str | None = None,
    request_ids: Iterable[str] | None = None,
    since: datetime | None = None,
) -> list[InferenceRecord]:
    """The recorded predictions, oldest first, optionally of one variant, some requests, or
    recorded at or after `since`."""
    from sqlalchemy import select

    table = inferences_table()
    query = select(table).order_by(table.c.recorded_at, table.c.request_id, table.c.variant)
    if variant is not None:
        query = query.where(table.c.variant == variant)
    if request_ids is not None:
        query = query.where(table.c.request_id.in_(list(request_ids)))
    if since is not None:
        query = query.where(table.c.recorded_at >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    records = []
    for row in rows:
        recorded_at = row["recorded_at"]
        if recorded_at.tzinfo is None:  # SQLite keeps no time zone: they were written in UTC
            recorded_at = recorded_at.replace(tzinfo=UTC)
        records.append(InferenceRecord.model_validate({**row, "recorded_at": recorded_at}))
    return records


class Recorder:
    """One consumer of the group: `step()` claims what dead consumers left, reads new records,
    writes them, acknowledges them."""

    def __init__(self, redis: "Redis", engine: "Engine", settings: RecorderSettings) -> None:
        self.redis = redis
        self.engine = engine
        self.settings = settings
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self._claimed_at = float("-inf")
        self._group_ready = False

    def ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        if self._group_ready:
            return
        try:
            self.redis.xgroup_create(
                self.settings.stream, self.settings.group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def step(self) -> int:
        """One round: the records written (claimed and new). Raises what Redis or the database
        raised; nothing unacknowledged is lost by it (it stays pending in the group)."""
        self.ensure_group()
        written = 0
        now = time.monotonic()
        if now - self._claimed_at >= max(self.settings.claim_idle_seconds / 2, 0.5):
            written += self.claim()
            self._claimed_at = now
        entries: Any = self.redis.xreadgroup(
            self.settings.group,
            self.consumer,
            {self.settings.stream: ">"},
            count=self.settings.batch_size,
            block=max(1, round(self.settings.block_seconds * 1000)),
        )
        for _stream, messages in entries or []:
            written += self.handle(messages)
        return written

    def claim(self) -> int:
        """Write and acknowledge the records that other (dead) consumers read and never acked."""
        written, start = 0, "0-0"
        while True:
            reply = self.redis.xautoclaim(
                self.settings.stream,
                self.settings.group,
                self.consumer,
                min_idle_time=round(self.settings.claim_idle_seconds * 1000),
                start_id=start,
                count=self.settings.batch_size,
            )
            start, messages = reply[0], reply[1]
            if messages:
                logger.info("claimed %d records a dead recorder left", len(messages))
                written += self.handle(messages)
            if start in (b"0-0", "0-0"):
                return written

    def handle(self, messages: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        records, ids = [], []
        for entry_id, fields in messages:
            ids.append(entry_id)
            try:
                records.append(InferenceRecord.model_validate_json(fields[FIELD]))
            except (KeyError, ValidationError) as exc:
                # Never writable: acknowledged with the rest, so it does not come back forever.
                logger.error("dropping unreadable stream entry %r: %s", entry_id, exc)
        write_records(self.engine, records)
        self.ack(ids)
        return len(records)

    def ack(self, ids: list[bytes]) -> None:
        if ids:
            self.redis.xack(self.settings.stream, self.settings.group, *ids)


def run_recorder(settings: RecorderSettings, env_prefix: str, stop: threading.Event) -> None:
    """The recorder's loop until `stop` is set: beats `env_prefix`'s heartbeat after each round
    that reached Redis (and the database, with records)."""
    from redis import Redis
    from redis.exceptions import RedisError
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    redis = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.block_seconds + 5,  # above the blocking read's own wait
        socket_connect_timeout=5,
    )
    engine: Engine | None = None
    recorder: Recorder | None = None
    heartbeat = Heartbeat(env_prefix, settings.heartbeat_seconds)
    while not stop.is_set():
        try:
            if recorder is None:
                # In the loop: a database still starting (or down) is a pause, not the end.
                engine = connect_database(settings.database_url)
                recorder = Recorder(redis, engine, settings)
                where = engine.url.render_as_string(hide_password=True)
                logger.info("recording %s into %s", settings.stream, where)
            recorder.step()
            heartbeat.beat()
        except ArgumentError:
            raise  # a URL that can never work (unknown driver, malformed): stop and say so
        except (RedisError, SQLAlchemyError, OSError) as exc:
            # Unacknowledged records stay pending: read again once both answer.
            logger.warning("recorder paused, will retry: %s", exc)
            if recorder is not None:
                recorder._group_ready = False  # a restarted Redis without its AOF lost it
            stop.wait(1.0)
    if engine is not None:
        engine.dispose()
    redis.close()


def main(settings: RecorderSettings, env_prefix: str, service: str) -> None:
    """A recorder process: `python -m <pattern>.recorder` is this, with the pattern's settings."""
    import signal

    configure_logging(service, settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_recorder(settings, env_prefix, stop)
