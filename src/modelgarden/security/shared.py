"""Per-key limits shared by every gateway process and replica, counted in Redis.

Without a shared store each process counts a key's requests, tokens and concurrent
requests in its own memory (:class:`~modelgarden.security.keys.Key`), so N replicas allow
N times a limit. With ``GARDEN_REDIS_URL`` (Redis or Valkey) :class:`SharedLimits` counts
them once for all:

- **one round trip to admit a request**: a Lua script checks the key's concurrency, its
  tokens-per-minute debt and its requests per minute, and takes a request and a
  concurrency lease, atomically;
- **nothing else on the request's path**: releasing the lease and spending the answer's
  tokens are queued and written by a background flush (every 50 ms, one pipeline), which
  also renews the leases of requests still running;
- **leases expire**: a concurrency slot is a member of a sorted set scored by its expiry;
  a process renews its own every ``lease_ttl / 3`` seconds, so a replica that dies frees
  its slots within ``lease_ttl`` (default 30 s);
- **degraded, never open**: when Redis cannot be reached (or answers slower than
  ``timeout``) the process falls back to its local limits, says so once in the log and in
  ``garden_shared_limits_up``, and tries Redis again every ``retry`` seconds. Keys
  themselves are checked from the database as always: an unreachable Redis never lets in
  a request without a valid key.

Rates use the generic cell-rate algorithm (one timestamp per limit: the theoretical
arrival time), which behaves as the local token buckets do: bursts up to the per-minute
limit, then one request per ``60 / rpm`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelgarden.errors import RateLimited
from modelgarden.tasks import cancel_and_wait

log = structlog.get_logger(__name__)
WINDOW_MS = 60_000

#: KEYS: rpm, tpm, concurrency. ARGV: now ms, rpm, tpm, max concurrent, lease id, lease
#: expiry ms. Returns {1} when admitted, else {0, what, retry after ms}.
ADMIT = """
local now = tonumber(ARGV[1])
local maxc = tonumber(ARGV[4])
if maxc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= maxc then return {0, 'c', 1000} end
end
local tpm = tonumber(ARGV[3])
if tpm > 0 then
  local debt = tonumber(redis.call('GET', KEYS[2]) or '0') - now
  if debt > 60000 - 60000 / tpm then return {0, 't', math.ceil(debt - 60000 + 60000 / tpm)} end
end
local rpm = tonumber(ARGV[2])
if rpm > 0 then
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) + 60000 / rpm
  if tat - now > 60000 then return {0, 'r', math.ceil(tat - now - 60000)} end
  redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
if maxc > 0 then
  redis.call('ZADD', KEYS[3], tonumber(ARGV[6]), ARGV[5])
  redis.call('PEXPIRE', KEYS[3], math.ceil(tonumber(ARGV[6]) - now) + 1000)
end
return {1, '', 0}
"""
#: KEYS: tpm. ARGV: now ms, tokens, tpm. The tokens are spent (a debt may build up).
SPEND = """
local now = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
tat = tat + tonumber(ARGV[2]) * 60000 / tonumber(ARGV[3])
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
return 1
"""
_WHAT = {
    "c": "too many concurrent requests for this key (limit {})",
    "t": "rate limit exceeded: {} tokens per minute for this key",
    "r": "rate limit exceeded: {} requests per minute for this key",
}


@dataclass
class _Pending:
    """Work the next flush writes: releases, token spends, leases to renew."""

    released: list[tuple[str, str]] = field(default_factory=list)
    spent: dict[str, tuple[int, int]] = field(default_factory=dict)


class SharedLimits:
    """Owns the per-key limits counted in Redis for every process, and the fallback to the
    local ones while Redis cannot be reached."""

    def __init__(
        self,
        url: str,
        *,
        lease_ttl: float = 30.0,
        timeout: float = 0.25,
        retry: float = 5.0,
        prefix: str = "garden:limits:",
        clock: Callable[[], float] = time.time,
    ) -> None:
        import redis.asyncio as redis

        self.client = redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self.lease_ttl = lease_ttl
        self.retry = retry
        self.prefix = prefix
        self.clock = clock
        self.up = True
        self._down_since = 0.0
        self._held: dict[str, str] = {}  # lease id -> key id, for renewals
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._admit: Any = self.client.register_script(ADMIT)
        self._spend: Any = self.client.register_script(SPEND)

    def _keys(self, key_id: str) -> list[str]:
        base = self.prefix + key_id
        return [base + ":rpm", base + ":tpm", base + ":conc"]

    async def start(self) -> None:
        """Start the background flush (leases, releases, spends)."""
        self._task = asyncio.create_task(self._flush_forever())

    async def close(self) -> None:
        """Write what is pending and stop."""
        await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):
            await self._flush()
        await self.client.aclose()

    # -- the request path ------------------------------------------------------------------

    async def admit(
        self, key_id: str, rpm: int | None, tpm: int | None, max_concurrent: int | None
    ) -> str | None:
        """Admit one request for a key (one round trip): its concurrency lease id, or
        ``None`` when it holds none; :class:`RateLimited` when over a limit. Raises
        :class:`Unreachable` when Redis cannot answer (then use the local limits)."""
        if not self._usable():
            raise Unreachable
        lease = secrets.token_hex(8) if max_concurrent else None
        now = int(self.clock() * 1000)
        args = [now, rpm or 0, tpm or 0, max_concurrent or 0, lease or "", now + self._ttl_ms]
        try:
            ok, what, wait = await self._admit(keys=self._keys(key_id), args=args)
        except Exception as exc:  # a connection error or a timeout: degrade, never 500
            self._went_down(exc)
            raise Unreachable from None
        self._came_back()
        if not ok:
            tag = what.decode() if isinstance(what, bytes) else str(what)
            limit = {"c": max_concurrent, "t": tpm, "r": rpm}[tag]
            retry_after = max(1, math.ceil(int(wait) / 1000))
            raise RateLimited(_WHAT[tag].format(limit), retry_after=retry_after)
        if lease is not None:
            self._held[lease] = key_id
        return lease

    def release(self, key_id: str, lease: str) -> None:
        """Free a concurrency lease (written by the next flush)."""
        self._held.pop(lease, None)
        self._pending.released.append((key_id, lease))
        self._wake.set()

    def spend(self, key_id: str, tokens: int, tpm: int) -> None:
        """Count an answer's tokens against the key's tokens per minute (next flush)."""
        before, _ = self._pending.spent.get(key_id, (0, tpm))
        self._pending.spent[key_id] = (before + tokens, tpm)
        self._wake.set()

    # -- the background flush --------------------------------------------------------------

    @property
    def _ttl_ms(self) -> int:
        return int(self.lease_ttl * 1000)

    async def _flush_forever(self) -> None:
        renew_every = self.lease_ttl / 3
        last_renewal = self.clock()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), renew_every)
            self._wake.clear()
            await asyncio.sleep(0.05)  # gather a few more into the same pipeline
            renew = self.clock() - last_renewal >= renew_every
            try:
                await self._flush(renew=renew)
            except Exception as exc:
                self._went_down(exc)
                continue
            if renew:
                last_renewal = self.clock()

    async def _flush(self, renew: bool = False) -> None:
        pending, self._pending = self._pending, _Pending()
        if not (pending.released or pending.spent or (renew and self._held)):
            return
        now = int(self.clock() * 1000)
        pipe = self.client.pipeline(transaction=False)
        for key_id, lease in pending.released:
            pipe.zrem(self._keys(key_id)[2], lease)
        for key_id, (tokens, tpm) in pending.spent.items():
            await self._spend(keys=[self._keys(key_id)[1]], args=[now, tokens, tpm], client=pipe)
        if renew:  # the set itself expires too: keep it while a lease in it lives
            for lease, key_id in self._held.items():
                conc = self._keys(key_id)[2]
                pipe.zadd(conc, {lease: now + self._ttl_ms}, xx=True)  # never one revived
                pipe.pexpire(conc, self._ttl_ms + 1000)
        try:
            await pipe.execute()
        except Exception:  # retried once Redis is back: releases, and the tokens spent
            self._pending.released.extend(pending.released)
            for key_id, (tokens, tpm) in pending.spent.items():
                self.spend(key_id, tokens, tpm)
            raise
        self._came_back()

    # -- up and down -----------------------------------------------------------------------

    def _usable(self) -> bool:
        return self.up or self.clock() - self._down_since >= self.retry

    def _went_down(self, exc: BaseException) -> None:
        self._down_since = self.clock()
        if self.up:
            self.up = False
            log.warning(
                "shared limits unreachable: counting per process until it is back",
                error=str(exc) or type(exc).__name__,
            )

    def _came_back(self) -> None:
        if not self.up:
            self.up = True
            log.info("shared limits reachable again")


class Unreachable(Exception):
    """Redis could not be asked: use the local limits."""


class SharedLimitsCollector(Collector):
    """``garden_shared_limits_up``: 1 while per-key limits are counted in Redis."""

    def __init__(self, limits: SharedLimits) -> None:
        self.limits = limits

    def collect(self) -> Iterable[Metric]:
        gauge = GaugeMetricFamily(
            "garden_shared_limits_up",
            "1 while per-key limits are counted in the shared store; 0: per process.",
        )
        gauge.add_metric([], 1 if self.limits.up else 0)
        return [gauge]

    def describe(self) -> Iterable[Metric]:
        return []
