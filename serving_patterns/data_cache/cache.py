"""The data cache's mechanics in Redis: per record id, the preprocessed row and the revision it
was made from.

- An entry is a hash, `<prefix>:record:<id>` -> {revision, features}, written with a TTL.
- `fill` keeps an entry only if Redis holds no newer revision of the record; the comparison and
  the write are one Lua script, so they cannot interleave with another writer's.
- `invalidate`, on a change, replaces the entry by a marker: the new revision, no features. A
  read of the marker is a miss, and the check in `fill` refuses the old values that a request
  may still be carrying from the database (it read the record just before it changed), so the
  next read after the change always goes to the database and sees the new values.
- `warm` is the warmer's write: a batch of entries and its watermark (the last revision warmed)
  in one MULTI/EXEC, so the watermark never runs ahead of what is in the cache. The watermark
  lives in the same Redis as the entries: a Redis that restarts empty has lost it too, and the
  warmer fills the whole cache again.
- `RedisOutage`: after a Redis failure the proxy skips Redis for `retry_seconds`, so a Redis
  that hangs costs one request its timeout, not every request.
"""

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# KEYS[1] the entry; ARGV revision, features (JSON), TTL in ms. 1 when written, 0 when refused.
FILL = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision'))
if stored and stored > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'revision', ARGV[1], 'features', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1] the entry; ARGV the new revision, TTL in ms. A newer or equal entry stays (the warmer
# may have stored the new values already).
INVALIDATE = """
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision'))
if stored and stored >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'revision', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Entry:
    revision: int
    features: list[float]


class RecordCache:
    """Preprocessed records in Redis. Every method raises RedisError when Redis fails: the
    proxy falls back to the database (through RedisOutage), the warmer tries again later."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, round(ttl_seconds * 1000))
        self.watermark_key = f"{prefix}:warmed-revision"
        self._fill = redis.register_script(FILL)
        self._invalidate = redis.register_script(INVALIDATE)

    def key(self, record_id: int) -> str:
        return f"{self.prefix}:record:{record_id}"

    async def get(self, record_id: int) -> Entry | None:
        """The cached row, or None: never cached, expired, evicted or invalidated."""
        # bytes: the client does not decode (redis-py's types say bytes | str).
        revision, features = cast(
            list[bytes | None],
            await self.redis.hmget(self.key(record_id), ["revision", "features"]),
        )
        if revision is None or features is None:
            return None
        try:
            return Entry(int(revision), [float(v) for v in json.loads(features)])
        except (ValueError, TypeError):  # not written by this code: a miss, filled again
            logger.warning("unreadable cache entry for record %d, reading it again", record_id)
            return None

    async def fill(self, record_id: int, revision: int, features: list[float]) -> bool:
        """Store the row made from `revision`; False when Redis holds a newer revision."""
        args: list[str | int] = [revision, json.dumps(features), self.ttl_ms]
        return bool(await self._fill(keys=[self.key(record_id)], args=args))

    async def invalidate(self, record_id: int, revision: int) -> bool:
        """The record has changed to `revision`: its cached row must not be served again."""
        return bool(
            await self._invalidate(keys=[self.key(record_id)], args=[revision, self.ttl_ms])
        )

    async def warmed_revision(self) -> int:
        """The last revision the warmer has put in the cache (0: none, or Redis restarted)."""
        value = await self.redis.get(self.watermark_key)
        return int(value) if value is not None else 0

    async def warm(self, entries: Sequence[tuple[int, int, list[float]]], watermark: int) -> None:
        """Fill (record id, revision, row) entries and move the watermark, all or nothing."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for record_id, revision, features in entries:
                args: list[str | int] = [revision, json.dumps(features), self.ttl_ms]
                await self._fill(keys=[self.key(record_id)], args=args, client=pipe)
            pipe.set(self.watermark_key, watermark)  # no TTL: volatile-lru never evicts it
            await pipe.execute()


class RedisOutage:
    """Whether to ask Redis at all: not for `retry_seconds` after it failed."""

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self._skip_until = 0.0
        self.failing = False

    def skipping(self) -> bool:
        return time.monotonic() < self._skip_until

    def failed(self, exc: RedisError) -> None:
        self._skip_until = time.monotonic() + self.retry_seconds
        if not self.failing:  # once per outage, not once per request
            logger.warning("redis unavailable, reading records from the database: %r", exc)
        self.failing = True

    def answered(self) -> None:
        if self.failing:
            logger.info("redis answers again: caching resumes")
        self.failing = False
