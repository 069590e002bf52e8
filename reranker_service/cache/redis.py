"""Redis score cache: one MGET per lookup, one pipelined batch of SET ... EX per write-back.

A cache outage must never fail a request: any Redis error (refused, reset, timeout, auth) makes the
operation a miss or a skipped write, counts it in `errors`, and logs at most once per `log_every_seconds`.
After a failure the cache is skipped (and counted) for `retry_after_seconds`, so a dead Redis costs one
connect timeout per interval rather than one per request; then the client simply tries again and, once
Redis is back, its connection pool reconnects by itself.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

_FLOAT32 = struct.Struct("<f")


def encode_score(value: float) -> bytes:
    """Scores are float32 end to end, so 4 bytes hold one exactly: a hit returns the identical score."""
    return _FLOAT32.pack(value)


def decode_score(raw: bytes | None) -> float | None:
    if raw is None or len(raw) != _FLOAT32.size:
        return None
    return float(_FLOAT32.unpack(raw)[0])


class RedisScoreCache:
    """`ScoreCache` over redis.asyncio.

    Args:
        url: `redis://host:port/db`, or `rediss://...` for TLS.
        ttl_seconds: every score expires this long after it was written.
        password: AUTH password (kept out of the URL so it stays out of logs).
        ca_file: CA bundle verifying a `rediss://` server.
        timeout_seconds: connect and per-command socket timeout.
        retry_after_seconds: how long the cache is skipped after a failure.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: int,
        password: str | None = None,
        ca_file: Path | None = None,
        timeout_seconds: float = 0.25,
        retry_after_seconds: float = 1.0,
        log_every_seconds: float = 30.0,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        options: dict[str, Any] = {
            "socket_timeout": timeout_seconds,
            "socket_connect_timeout": timeout_seconds,
            "retry_on_timeout": False,
            "health_check_interval": 30,
        }
        if password:
            options["password"] = password
        if ca_file is not None and url.startswith("rediss://"):
            options["ssl_ca_certs"] = str(ca_file)
        self._client = aioredis.Redis.from_url(url, **options)
        self._ttl = ttl_seconds
        self._retry_after = retry_after_seconds
        self._log_every = log_every_seconds
        self._skip_until = 0.0
        self._last_log = float("-inf")
        self._errors = 0

    @property
    def errors(self) -> int:
        return self._errors

    def _available(self) -> bool:
        if time.monotonic() < self._skip_until:
            self._errors += 1
            return False
        return True

    async def _failed(self, operation: str, exc: BaseException) -> None:
        """Counts and (rate-limited) logs a failure, opens a bypass window, and drops idle connections."""
        self._errors += 1
        now = time.monotonic()
        self._skip_until = now + self._retry_after
        if now - self._last_log >= self._log_every:
            self._last_log = now
            logger.warning(
                "redis score cache %s failed (%s); bypassing the cache, %d bypasses so far",
                operation,
                type(exc).__name__,
                self._errors,
            )
        await self._drop_idle_connections()

    async def _drop_idle_connections(self) -> None:
        """After a failure, closes the pooled connections no call is using.

        A Redis restart leaves every pooled connection dead, and each would fail once, at the next burst
        that reaches it, starting another bypass window each time: under load that stretched the outage for
        tens of seconds after Redis was back (bench/results/faults.md). Reconnecting costs one round trip.
        """
        try:
            await self._client.connection_pool.disconnect(inuse_connections=False)
        except (RedisError, OSError) as exc:
            logger.debug("dropping idle redis connections failed: %s", exc)

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except (RedisError, OSError) as exc:
            await self._failed("ping", exc)
            return False

    async def get_many(self, keys: Sequence[str]) -> list[float | None]:
        if not keys:
            return []
        if not self._available():
            return [None] * len(keys)
        try:
            raw = await self._client.mget(list(keys))
        except (RedisError, OSError, TimeoutError) as exc:
            await self._failed("MGET", exc)
            return [None] * len(keys)
        return [decode_score(value if isinstance(value, bytes) else None) for value in raw]

    async def put_many(self, items: Mapping[str, float]) -> None:
        if not items or not self._available():
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, encode_score(value), ex=self._ttl)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            await self._failed("SET pipeline", exc)

    async def close(self) -> None:
        await self._client.aclose()
