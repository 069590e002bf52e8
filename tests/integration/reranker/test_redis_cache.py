"""RedisScoreCache against a real redis-server: MGET/SET/TTL, exact round trips, outages and recovery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from operations.redis_server import RedisServer, RedisTls
from reranker_service.cache.redis import RedisScoreCache
from tests.pki import make_pki


@pytest.fixture
async def cache(redis_server: RedisServer) -> AsyncIterator[RedisScoreCache]:
    adapter = RedisScoreCache(redis_server.url, ttl_seconds=120)
    yield adapter
    await adapter.close()


@pytest.fixture
def doomed_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to be killed."""
    with RedisServer() as server:
        yield server


async def test_put_then_get_many_in_order_with_a_ttl(
    cache: RedisScoreCache, redis_server: RedisServer
) -> None:
    values = {"t1:a": float(np.float32(0.1)), "t1:b": float(np.float32(-3.75)), "t1:c": 12.5}
    await cache.put_many(values)
    assert await cache.get_many(["t1:c", "t1:missing", "t1:a", "t1:b"]) == [12.5, None, values["t1:a"], -3.75]
    assert await cache.get_many([]) == []
    inspector = redis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        assert 0 < inspector.ttl("t1:a") <= 120
    finally:
        inspector.close()
    assert cache.errors == 0


async def test_a_password_protected_server() -> None:
    with RedisServer(password="correct horse") as server:
        right = RedisScoreCache(
            f"redis://127.0.0.1:{server.port}/0", ttl_seconds=60, password="correct horse"
        )
        wrong = RedisScoreCache(f"redis://127.0.0.1:{server.port}/0", ttl_seconds=60, password="nope")
        try:
            await right.put_many({"k": 1.0})
            assert await right.get_many(["k"]) == [1.0]
            assert await wrong.get_many(["k"]) == [None]  # auth failure: a counted miss, not an exception
            assert wrong.errors == 1
        finally:
            await right.close()
            await wrong.close()


async def test_outage_is_bypassed_and_counted_then_recovers(doomed_redis: RedisServer) -> None:
    cache = RedisScoreCache(doomed_redis.url, ttl_seconds=60, retry_after_seconds=0.0)
    try:
        await cache.put_many({"k": 2.0})
        doomed_redis.kill()
        assert await cache.get_many(["k", "j"]) == [None, None]
        await cache.put_many({"j": 1.0})
        assert cache.errors == 2
        doomed_redis.start()  # same port, empty (no persistence)
        await cache.put_many({"k": 3.0})
        assert await cache.get_many(["k"]) == [3.0]
        assert cache.errors == 2
    finally:
        await cache.close()


async def test_after_a_failure_the_cache_is_skipped_for_a_while(doomed_redis: RedisServer) -> None:
    cache = RedisScoreCache(doomed_redis.url, ttl_seconds=60, retry_after_seconds=60.0)
    try:
        doomed_redis.kill()
        assert await cache.get_many(["k"]) == [None]
        doomed_redis.start()
        assert await cache.get_many(["k"]) == [None]  # skipped without a round trip, still counted
        assert cache.errors == 2
    finally:
        await cache.close()


async def test_a_tls_only_server_with_auth(tmp_path: Path) -> None:
    """rediss:// with the CA of --redis-ca-file and AUTH round-trips; trusting another CA, no connection."""
    pki = make_pki(tmp_path / "pki")
    tls = RedisTls(pki.server_cert, pki.server_key, pki.ca)
    with RedisServer(password="s3cret", tls=tls) as server:
        assert server.url.startswith("rediss://")
        cache = RedisScoreCache(server.url, ttl_seconds=60, password="s3cret", ca_file=pki.ca)
        await cache.put_many({"k": 1.5})
        assert await cache.get_many(["k"]) == [1.5]
        await cache.close()
        untrusting = RedisScoreCache(server.url, ttl_seconds=60, password="s3cret", ca_file=pki.other_ca)
        assert await untrusting.get_many(["k"]) == [None]  # bypassed: the handshake fails
        assert untrusting.errors == 1
        await untrusting.close()


async def test_after_a_restart_one_failure_drops_every_stale_pooled_connection(
    doomed_redis: RedisServer,
) -> None:
    cache = RedisScoreCache(doomed_redis.url, ttl_seconds=60, retry_after_seconds=0.0)
    try:
        # Concurrent callers leave several connections in the pool; a restart kills them all.
        await asyncio.gather(*(cache.get_many([f"k{i}"]) for i in range(8)))
        doomed_redis.kill()
        doomed_redis.start()
        assert await cache.get_many(["k"]) == [None]  # meets a dead connection: one bypass
        errors = cache.errors
        await cache.put_many({"k": 1.0})
        # A burst needs the pool's other connections: none of them may be a dead one left behind.
        answers = await asyncio.gather(*(cache.get_many(["k"]) for _ in range(8)))
        assert answers == [[1.0]] * 8
        assert cache.errors == errors
    finally:
        await cache.close()
