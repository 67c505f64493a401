"""The cache's mechanics against a private redis-server: revision-guarded fills, invalidation
that a late reader cannot undo, the warmer's all-or-nothing write, the TTL."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from serving_patterns.data_cache.cache import Entry, RecordCache
from shared.redis_client import connect
from shared.testing import RedisServer

T = TypeVar("T")
OLD, NEW = [5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]


def on_cache(url: str, use: Callable[[RecordCache], Awaitable[T]], ttl: float = 60) -> T:
    async def main() -> T:
        redis = connect(url, 1.0, max_connections=10)
        try:
            return await use(RecordCache(redis, "test", ttl))
        finally:
            await redis.aclose()

    return asyncio.run(main())


def test_a_filled_row_is_read_back_with_its_revision(redis_server: RedisServer) -> None:
    async def use(cache: RecordCache) -> tuple[Entry | None, Entry | None]:
        before = await cache.get(7)
        await cache.fill(7, 3, OLD)
        return before, await cache.get(7)

    before, after = on_cache(redis_server.url, use)

    assert before is None
    assert after == Entry(3, OLD)


def test_a_fill_older_than_the_stored_revision_is_refused(redis_server: RedisServer) -> None:
    async def use(cache: RecordCache) -> tuple[bool, bool, Entry | None]:
        newer = await cache.fill(7, 5, NEW)
        older = await cache.fill(7, 4, OLD)
        return newer, older, await cache.get(7)

    assert on_cache(redis_server.url, use) == (True, False, Entry(5, NEW))


def test_after_an_invalidation_a_late_reader_cannot_put_the_old_row_back(
    redis_server: RedisServer,
) -> None:
    # A request read revision 1 from the database; the record changes to revision 2 and is
    # invalidated; the request's fill of revision 1 lands after it. The next read must miss.
    async def use(cache: RecordCache) -> tuple[Entry | None, bool, Entry | None, Entry | None]:
        await cache.fill(7, 1, OLD)
        await cache.invalidate(7, 2)
        after_invalidation = await cache.get(7)
        late = await cache.fill(7, 1, OLD)
        after_late_fill = await cache.get(7)
        await cache.fill(7, 2, NEW)  # the next reader, from the database
        return after_invalidation, late, after_late_fill, await cache.get(7)

    after_invalidation, late, after_late_fill, refilled = on_cache(redis_server.url, use)

    assert after_invalidation is None
    assert late is False
    assert after_late_fill is None
    assert refilled == Entry(2, NEW)


def test_an_invalidation_keeps_a_row_already_at_the_new_revision(
    redis_server: RedisServer,
) -> None:
    # The warmer stored revision 2 before the proxy's invalidation for it arrived.
    async def use(cache: RecordCache) -> tuple[bool, Entry | None]:
        await cache.fill(7, 2, NEW)
        return await cache.invalidate(7, 2), await cache.get(7)

    assert on_cache(redis_server.url, use) == (False, Entry(2, NEW))


def test_the_warmer_writes_its_rows_and_watermark_together(redis_server: RedisServer) -> None:
    async def use(cache: RecordCache) -> tuple[int, int, list[Entry | None]]:
        start = await cache.warmed_revision()
        await cache.fill(2, 9, NEW)  # a newer row already there stays
        await cache.warm([(1, 3, OLD), (2, 4, OLD)], watermark=4)
        return start, await cache.warmed_revision(), [await cache.get(1), await cache.get(2)]

    start, watermark, rows = on_cache(redis_server.url, use)

    assert start == 0
    assert watermark == 4
    assert rows == [Entry(3, OLD), Entry(9, NEW)]


def test_entries_expire_after_their_ttl_but_the_watermark_does_not(
    redis_server: RedisServer,
) -> None:
    async def use(cache: RecordCache) -> tuple[int, int]:
        await cache.warm([(1, 1, OLD)], watermark=1)
        return await cache.redis.pttl(cache.key(1)), await cache.redis.pttl(cache.watermark_key)

    entry_ms, watermark_ms = on_cache(redis_server.url, use, ttl=0.5)

    assert 0 < entry_ms <= 500
    assert watermark_ms == -1  # no TTL: volatile-lru never evicts it


def test_an_entry_written_by_something_else_is_a_miss(redis_server: RedisServer) -> None:
    async def use(cache: RecordCache) -> Entry | None:
        await cache.redis.hset(cache.key(7), mapping={"revision": "1", "features": "not json"})
        return await cache.get(7)

    assert on_cache(redis_server.url, use) is None
