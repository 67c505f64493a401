"""The result sink: moves finished predictions from Redis into the inference table.

The variant of the pattern where the result goes to a database and whoever needs it reads it
there; the submitter never polls. Workers append each finished job to the Redis list `results`
(in the same atomic step that records the job, jobs.FINISH); this loop copies the list's head
into the `inferences` table in batches, then trims what it wrote.

Written before trimmed, and keyed by job id: a sink that dies between the two writes the same
rows again at its next start, and the database keeps one row per job. One sink runs at a time
(two would trim each other's rows).

    python -m serving_patterns.asynchronous.sink
"""

import json
import logging
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import JSON, Column, DateTime, Engine, MetaData, String, Table, create_engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from serving_patterns.asynchronous import jobs
from serving_patterns.asynchronous.settings import SinkSettings
from shared.heartbeat import Heartbeat
from shared.logs import configure_logging

logger = logging.getLogger(__name__)

metadata = MetaData()
inferences = Table(
    "inferences",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("request_id", String(128), nullable=False),
    Column("predictions", JSON, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("worker", String(255), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False, index=True),
)


def connect(database_url: str) -> Engine:
    """The inference database, with its table created if missing."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=True)
    try:
        metadata.create_all(engine)
    except SQLAlchemyError:
        engine.dispose()
        raise
    return engine


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def write(engine: Engine, records: list[dict[str, Any]]) -> None:
    """Insert the records; a job already in the table is skipped (one row per job)."""
    rows = [
        {**r, "submitted_at": _when(r["submitted_at"]), "finished_at": _when(r["finished_at"])}
        for r in records
    ]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(inferences).on_conflict_do_nothing(index_elements=["job_id"])
    with engine.begin() as connection:
        connection.execute(statement, rows)


def drain_once(redis: Redis, engine: Engine, batch_size: int) -> int:
    """Copy up to batch_size finished jobs into the table, then drop them from Redis."""
    raw = redis.lrange(jobs.RESULTS, 0, batch_size - 1)
    if raw:
        write(engine, [json.loads(item) for item in raw])
        # Workers only append (RPUSH) at the other end, so the head we wrote is still the head.
        redis.ltrim(jobs.RESULTS, len(raw), -1)
    return len(raw)


ENV_PREFIX = "ASYNCHRONOUS_SINK_"  # SinkSettings' prefix: the healthcheck's argument


def run(settings: SinkSettings, stop: threading.Event) -> None:
    redis = Redis.from_url(settings.redis_url)
    engine: Engine | None = None
    heartbeat = Heartbeat(ENV_PREFIX, settings.heartbeat_seconds)
    while not stop.is_set():
        try:
            if engine is None:
                # In the loop: a database still starting (or down) is a pause, not the end.
                engine = connect(settings.database_url)
                where = engine.url.render_as_string(hide_password=True)
                logger.info("writing finished jobs to %s", where)
            written = drain_once(redis, engine, settings.batch_size)
            # Alive (healthcheck) while a round reaches Redis (and the database, with rows).
            heartbeat.beat()
        except ArgumentError:
            raise  # a URL that can never work (unknown driver, malformed): stop and say so
        except (RedisError, SQLAlchemyError) as exc:
            # Nothing was trimmed: the same rows are tried again once both answer.
            logger.warning("sink paused, will retry: %s", exc)
            written = 0
            stop.wait(1.0)
        if written < settings.batch_size:
            stop.wait(settings.poll_seconds)
    if engine is not None:
        engine.dispose()
    redis.close()


def main() -> None:
    settings = SinkSettings()
    configure_logging("asynchronous-sink", settings.log_level)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(settings, stop)


if __name__ == "__main__":
    main()
