"""The Redis client of a service that must not wait on Redis: a cache that falls back to the work
it saves (the prediction cache, the data cache) when Redis is away or hung.

    redis = connect("redis://127.0.0.1:6379/0", timeout_seconds=0.5, max_connections=50)
"""

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError


def connect(url: str, timeout_seconds: float, max_connections: int) -> Redis:
    """A pooled Redis client that fails fast: no call waits on Redis longer than about
    `timeout_seconds` (for a connection from the pool, to connect, for each answer)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        # One immediate retry on a broken connection (after a Redis restart the pooled ones are
        # stale), none on a timeout, no back-off: redis-py's default retries with back-off would
        # make an outage cost seconds per request instead of a fast fall-back.
        retry=Retry(NoBackoff(), retries=1, supported_errors=(ConnectionError,)),
    )
    return Redis.from_pool(pool)
