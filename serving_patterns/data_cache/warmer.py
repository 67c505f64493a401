"""Data cache pattern, the pre-warm job: preprocesses every new or changed record into the cache
before anyone asks for it (the catalogue's "prepare data cache").

It runs beside the proxy and follows the records table by revision: each pass reads the records
written after the last revision it warmed (its watermark, kept in Redis beside the entries),
preprocesses them and writes them, and the new watermark, to Redis in one transaction. Then the
first request for a new record is already a hit.

Why a job over new rows rather than the records API enqueuing a warm-up: it warms records
however they reach the database (the seed's bulk load, another service's writes, a hand-run
SQL fix), needs no queue, and catches up by itself after an outage: while Redis or the database
is away it warms nothing and keeps its watermark, then carries on where it stopped. A Redis that
comes back empty has lost the watermark with the entries, so the warmer fills it all again.

    .venv/bin/python -m serving_patterns.data_cache.warmer
"""

import asyncio
import logging
import sys

from redis.exceptions import RedisError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from serving_patterns.data_cache import records
from serving_patterns.data_cache.cache import RecordCache
from serving_patterns.data_cache.preprocessing import preprocess
from serving_patterns.data_cache.settings import WarmerSettings
from shared.heartbeat import Heartbeat
from shared.logs import configure_logging
from shared.redis_client import connect

logger = logging.getLogger(__name__)

PREFIX = "DATA_CACHE_WARMER_"


def preprocessed_since(
    engine: Engine, revision: int, limit: int, delay_seconds: float
) -> list[tuple[int, int, list[float]]]:
    """(id, revision, row) of the records written after `revision` (blocking: in a thread)."""
    return [
        (record.id, record.revision, preprocess(record, delay_seconds))
        for record in records.changed_since(engine, revision, limit)
    ]


async def warm_once(engine: Engine, cache: RecordCache, settings: WarmerSettings) -> int:
    """One pass: how many records it put in the cache. Raises when Redis or the database fails."""
    since = await cache.warmed_revision()
    entries = await asyncio.to_thread(
        preprocessed_since, engine, since, settings.batch_size, settings.preprocess_delay_seconds
    )
    if entries:
        await cache.warm(entries, watermark=entries[-1][1])
        logger.info("warmed %d records, up to revision %d", len(entries), entries[-1][1])
    return len(entries)


async def run(settings: WarmerSettings) -> None:
    engine = records.connect(settings.database_url, settings.database_timeout_seconds, 1)
    redis = connect(settings.redis_url, settings.redis_timeout_seconds, max_connections=2)
    cache = RecordCache(redis, settings.key_prefix, settings.ttl_seconds)
    heartbeat = Heartbeat(PREFIX, settings.heartbeat_seconds)
    failing = False
    try:
        while True:
            try:
                warmed = await warm_once(engine, cache, settings)
            except (RedisError, SQLAlchemyError) as exc:
                if not failing:  # once per outage
                    logger.warning(
                        "cannot warm, trying again every %gs: %r", settings.poll_seconds, exc
                    )
                failing = True
                await asyncio.sleep(settings.poll_seconds)
                continue
            if failing:
                logger.info("warming again")
            failing = False
            # Beats only after a pass that reached both the database and Redis.
            heartbeat.beat()
            if warmed < settings.batch_size:  # caught up: wait for new writes
                await asyncio.sleep(settings.poll_seconds)
    finally:
        await redis.aclose()
        engine.dispose()


def main() -> int:
    settings = WarmerSettings()
    configure_logging("data-cache-warmer", settings.log_level)
    try:
        asyncio.run(run(settings))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
