"""Shared per-key limits without a reachable Redis: each process falls back to its own
counts, says so, and tries again only after the retry delay (an injected clock)."""

from __future__ import annotations

import pytest
import redis.exceptions

from modelgarden.errors import RateLimited
from modelgarden.security.keys import Key, KeyRing
from modelgarden.security.shared import SharedLimits, SharedLimitsCollector, Unreachable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_an_unreachable_store_falls_back_to_local_limits_and_says_so() -> None:
    clock = Clock()
    shared = SharedLimits("redis://127.0.0.1:1/0", timeout=0.2, retry=5.0, clock=clock)
    ring = KeyRing(shared=shared)
    key = Key("key_1", "two", "user", [], 0.0, rpm=2)
    assert await ring.admit(key) is None and await ring.admit(key) is None
    with pytest.raises(RateLimited, match="2 requests per minute"):
        await ring.admit(key)  # the local bucket: 2 a minute in this process
    assert shared.up is False
    (gauge,) = SharedLimitsCollector(shared).collect()
    assert gauge.samples[0].value == 0
    with pytest.raises(Unreachable):  # within the retry delay: not even tried
        await shared.admit("key_1", 2, None, None)
    clock.now += 5.0
    with pytest.raises(Unreachable):  # tried again, still down
        await shared.admit("key_1", 2, None, None)
    await shared.close()


async def test_keys_without_limits_never_ask_the_store() -> None:
    shared = SharedLimits("redis://127.0.0.1:1/0", timeout=0.2)
    ring = KeyRing(shared=shared)
    free = Key("key_2", "free", "user", [], 0.0)
    assert await ring.admit(free) is None
    assert shared.up is True  # it was never asked
    await shared.close()


async def test_tokens_spent_while_the_store_is_down_are_kept_for_when_it_is_back() -> None:
    shared = SharedLimits("redis://127.0.0.1:1/0", timeout=0.2)
    shared.spend("key_1", 30, 100)
    with pytest.raises(redis.exceptions.ConnectionError):
        await shared._flush()
    shared.spend("key_1", 5, 100)
    assert shared._pending.spent == {"key_1": (35, 100)}  # neither batch lost
    await shared.close()
