"""A remote backend's breaker and concurrency limit through the whole app, in-process.

The backend is the real :class:`OllamaBackend` (replicas, breakers, limiter) on a fake
clock, relaying to a :class:`~tests.fakes.FakeUpstream` daemon in the test's event loop;
nothing sleeps: the breaker's cool-down passes when the test moves the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelgarden.backends import remote as remote_module
from modelgarden.backends.remote import OllamaBackend
from modelgarden.errors import SERVER_BUSY
from tests.fakes import (
    FakeBackend,
    FakeClock,
    FakeUpstream,
    fast_app,
    fast_settings,
    replica_pair,
    upstream,
)

HI = [{"role": "user", "content": "hi"}]

UP = """
[[backends]]
name = "up"
kind = "ollama"
urls = ["{url}"]
models = ["m"]
health_interval = 0
retries = 0
breaker_failures = 2
breaker_cooldown = 10
max_concurrency = {concurrency}
max_queue = {queue}
{fallbacks}
"""
FALLBACK = """
[fallbacks]
"m" = ["backup"]
"""


def up_toml(daemon: FakeUpstream, *, fallback: bool, concurrency: int = 8, queue: int = 8) -> str:
    return UP.format(
        url=daemon.url, concurrency=concurrency, queue=queue, fallbacks=FALLBACK if fallback else ""
    )


async def chat(client: httpx.AsyncClient, path: str = "/api/chat") -> httpx.Response:
    body: dict[str, Any] = {"model": "m", "messages": HI, "stream": False}
    if path == "/v1/messages":
        body["max_tokens"] = 5
    async with asyncio.timeout(5):  # a request left waiting is a failure, not a hang
        return await client.post(path, json=body)


def answered_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["message"]["content"])


async def breaker_of(client: httpx.AsyncClient) -> str:
    """The ``up`` backend's one replica's breaker, as the admin route shows it."""
    backends = (await client.get("/garden/backends")).json()["backends"]
    (up,) = [b for b in backends if b["name"] == "up"]
    return str(up["replicas"][0]["breaker"])


async def test_a_backend_whose_breaker_opens_is_skipped_until_a_probe_closes_it(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    backup = FakeBackend("backup", ["backup"])
    async with upstream("up", status=500) as daemon:
        settings = fast_settings(tmp_path, up_toml(daemon, fallback=True))
        remote = OllamaBackend(settings.backends[0], clock)
        async with fast_app(settings, [remote, backup]) as garden:
            client = garden.client
            for failures in (1, 2):  # each failure is the client's, answered by the fallback
                assert answered_by(await chat(client)) == "from backup"
                assert len(daemon.received) == failures
            assert await breaker_of(client) == "open"
            daemon.status = 200  # back, but the breaker does not know it yet
            clock.advance(9.9)
            assert answered_by(await chat(client)) == "from backup"
            assert len(daemon.received) == 2  # skipped: never reached the daemon
            clock.advance(0.1)
            assert await breaker_of(client) == "half_open"
            assert answered_by(await chat(client)) == "from up"  # the probe
            assert await breaker_of(client) == "closed"
            assert answered_by(await chat(client)) == "from up"
    assert len(daemon.received) == 4 and len(backup.sent) == 3


async def test_a_failed_probe_opens_the_breaker_for_another_cooldown(tmp_path: Path) -> None:
    clock = FakeClock()
    async with upstream("up", status=502) as daemon:
        settings = fast_settings(tmp_path, up_toml(daemon, fallback=False))
        remote = OllamaBackend(settings.backends[0], clock)
        async with fast_app(settings, [remote]) as garden:
            client = garden.client
            for _ in range(2):
                assert (await chat(client)).status_code == 502
            refused = await chat(client)  # open, and no fallback: the client is told when
            assert refused.status_code == 502 and refused.headers["retry-after"] == "10"
            assert "circuit open" in refused.json()["error"]
            clock.advance(10)
            assert (await chat(client)).status_code == 502  # the probe fails
            assert await breaker_of(client) == "open"
            clock.advance(9)
            reopened = await chat(client)
            assert "circuit open" in reopened.json()["error"]
            assert reopened.headers["retry-after"] == "1"  # what is left of the cooldown
            assert len(daemon.received) == 3


async def until(check: Callable[[], bool]) -> None:
    """Let the other tasks run until ``check`` holds (a bounded number of turns, no sleep)."""
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def held(client: httpx.AsyncClient, daemon: FakeUpstream) -> asyncio.Task[httpx.Response]:
    """A request that the daemon holds (its limiter slot taken) until ``daemon.hold`` is set."""
    task = asyncio.create_task(chat(client))
    await asyncio.wait_for(daemon.arrived.wait(), 5)
    daemon.arrived.clear()
    return task


async def test_a_full_backend_queues_to_its_bound_then_refuses_in_each_familys_shape(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()
    async with upstream("up", hold=release) as daemon:
        settings = fast_settings(tmp_path, up_toml(daemon, fallback=False, concurrency=1, queue=1))
        remote = OllamaBackend(settings.backends[0])
        async with fast_app(settings, [remote]) as garden:
            client = garden.client
            first = await held(client, daemon)
            queued = asyncio.create_task(chat(client))
            await until(lambda: remote.limiter.waiting == 1)  # the next one waits its turn
            ollama = await chat(client)
            openai = await chat(client, "/v1/chat/completions")
            anthropic = await chat(client, "/v1/messages")
            state = (await client.get("/garden/backends")).json()["backends"][0]
            release.set()
            assert answered_by(await first) == "from up"
            assert answered_by(await queued) == "from up"
            assert answered_by(await chat(client)) == "from up"  # slots are given back
    assert (ollama.status_code, ollama.json()) == (503, {"error": SERVER_BUSY})
    assert ollama.headers["retry-after"] == "1"
    assert openai.status_code == 503
    assert openai.json()["error"]["type"] == "overloaded_error"
    assert anthropic.status_code == 529
    assert anthropic.json()["error"]["type"] == "overloaded_error"
    assert (state["active"], state["waiting"], state["rejected"]) == (1, 1, 3)
    assert len(daemon.received) == 3


async def test_a_full_backend_sends_its_overflow_to_the_fallback(tmp_path: Path) -> None:
    release = asyncio.Event()
    backup = FakeBackend("backup", ["backup"])
    async with upstream("up", hold=release) as daemon:
        toml = up_toml(daemon, fallback=True, concurrency=1, queue=0)
        settings = fast_settings(tmp_path, toml)
        async with fast_app(settings, [OllamaBackend(settings.backends[0]), backup]) as garden:
            first = await held(garden.client, daemon)
            assert answered_by(await chat(garden.client)) == "from backup"
            release.set()
            assert answered_by(await first) == "from up"
    assert len(backup.sent) == 1


async def test_a_replica_that_fails_before_answering_is_retried_on_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoffs: list[int] = []

    def no_pause(attempt: int) -> float:
        backoffs.append(attempt)
        return 0.0

    monkeypatch.setattr(remote_module, "backoff", no_pause)
    async with (
        upstream("a", status=503) as a,
        upstream("b") as b,
        replica_pair(tmp_path, a, b, retries=1) as garden,
    ):
        assert answered_by(await chat(garden.client)) == "from b"
        b.status = 500
        both = await chat(garden.client)  # the retries spent: the last failure is told
        state = (await garden.client.get("/garden/backends")).json()["backends"][0]
    assert (both.status_code, both.json()) == (502, {"error": "b failed"})
    assert backoffs == [0, 0]
    assert (len(a.received), len(b.received)) == (2, 2)
    assert [r["consecutive_failures"] for r in state["replicas"]] == [2, 1]


async def test_a_model_that_refused_think_is_sent_without_it_once_known() -> None:
    """Claude Code sends thinking with every request: an Ollama upstream whose model cannot
    think refuses it once; later requests go once, without ``think``, until that is old."""
    from modelgarden.backends.base import Api, BackendRequest, BackendResponse
    from modelgarden.backends.remote import THINKLESS_FOR, RelaxedThink
    from modelgarden.errors import BadRequest

    clock = FakeClock()
    relaxed = RelaxedThink(clock)
    sent: list[bool] = []

    async def upstream_send(request: BackendRequest) -> BackendResponse:
        sent.append("think" in request.body)
        if "think" in request.body:
            raise BadRequest('"m" does not support thinking')
        return BackendResponse(200, "application/json", _empty(), Api.OLLAMA)

    ask = BackendRequest(Api.OLLAMA, "chat", "m", {"think": True}, False, 0, relax_think=True)
    await relaxed.send(upstream_send, ask)
    assert sent == [True, False]  # refused, then sent again without it
    await relaxed.send(upstream_send, ask)
    assert sent == [True, False, False]  # known: one request
    clock.advance(THINKLESS_FOR + 1)
    await relaxed.send(upstream_send, ask)
    assert sent[3:] == [True, False]  # asked again once the knowledge is old
    strict = BackendRequest(Api.OLLAMA, "chat", "m", {"think": True}, False, 0)
    with pytest.raises(BadRequest):  # a client that asked for think itself is told
        await relaxed.send(upstream_send, strict)


async def _empty() -> AsyncIterator[bytes]:
    yield b"{}"
