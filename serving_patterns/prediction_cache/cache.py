"""The prediction cache's mechanics: the key, the store in Redis, one prediction per key at once.

- `cache_key`: a hash of the model version and of the input as the model sees it, so inputs
  written differently (5.1, 5.10, 51e-1) share an entry and an answer of one model version is
  never found under another.
- `PredictionStore`: GET and SET with a TTL in Redis (its maxmemory-policy evicts when it is
  full). A Redis failure is a miss, never an error: while Redis is away the proxy predicts
  uncached, and for `retry_seconds` after a failure it does not ask Redis at all, so a Redis
  that hangs costs one request a timeout, not every request.
- `SingleFlight`: requests for a key that arrive while its answer is being found share that
  one lookup and prediction, instead of each calling the predictor.
"""

import asyncio
import hashlib
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, cast

from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.redis_client import connect as connect  # the proxy's client, from here as before

logger = logging.getLogger(__name__)

LOOKUPS = Counter(
    "prediction_cache_lookups_total",
    "Cache lookups by outcome: hit, miss, or unavailable (Redis failed or is being skipped)",
    ["outcome"],
)
SHARED = Counter(
    "prediction_cache_shared_answers_total",
    "Requests answered by a lookup and prediction another request for the same key had started",
)

T = TypeVar("T")


def cache_key(prefix: str, model_version: str, rows: list[list[float]]) -> str:
    """The Redis key of a prediction: the model version and the rows, as float32, hashed.

    float32 is what the model computes on, so two inputs it cannot tell apart share a key;
    each row carries its length, so [[1, 2], [3, 4]] and [[1, 2, 3, 4]] do not.
    """
    version = model_version.encode()
    digest = hashlib.sha256(struct.pack("<I", len(version)) + version)
    for row in rows:
        # + 0.0 turns -0.0 into 0.0: the same number to the model, other bytes to a hash.
        digest.update(struct.pack(f"<I{len(row)}f", len(row), *(v + 0.0 for v in row)))
    return f"{prefix}:{digest.hexdigest()}"


class PredictionStore:
    """Cached predictions in Redis, each for `ttl_seconds`; any Redis failure reads as a miss."""

    def __init__(self, redis: Redis, ttl_seconds: float, retry_seconds: float) -> None:
        self.redis = redis
        self.ttl_ms = max(1, round(ttl_seconds * 1000))
        self.retry_seconds = retry_seconds
        self._skip_until = 0.0  # monotonic time before which Redis is not asked
        self.failing = False

    async def get(self, key: str) -> bytes | None:
        if time.monotonic() < self._skip_until:
            LOOKUPS.labels("unavailable").inc()
            return None
        try:
            # bytes: the client does not decode (redis-py's types say bytes | str).
            value = cast(bytes | None, await self.redis.get(key))
        except RedisError as exc:
            self._failed(exc)
            LOOKUPS.labels("unavailable").inc()
            return None
        self._answered()
        LOOKUPS.labels("miss" if value is None else "hit").inc()
        return value

    async def put(self, key: str, value: bytes) -> None:
        if time.monotonic() < self._skip_until:
            return
        try:
            await self.redis.set(key, value, px=self.ttl_ms)
        except RedisError as exc:
            self._failed(exc)
            return
        self._answered()

    def _failed(self, exc: RedisError) -> None:
        self._skip_until = time.monotonic() + self.retry_seconds
        if not self.failing:  # once per outage, not once per request
            logger.warning("redis unavailable, predicting uncached: %r", exc)
        self.failing = True

    def _answered(self) -> None:
        if self.failing:
            logger.info("redis answers again: caching resumes")
        self.failing = False


class SingleFlight(Generic[T]):
    """One call per key at a time: a caller that comes while it runs gets the same result."""

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Task[T]] = {}

    async def do(self, key: str, call: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._running[key] = task
            task.add_done_callback(lambda done: self._landed(key, done))
        else:
            SHARED.inc()
        # shield: a caller that goes away (its client hung up) must not cancel the others' call.
        return await asyncio.shield(task)

    def _landed(self, key: str, task: "asyncio.Task[T]") -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so that one no caller waited for is not logged
