"""API keys through the whole app, in-process: who gets in, on which routes and models, and
how often (per-key limits on a fake clock), with the keys in the gateway's own database.

The first key is made the way an operator makes it: ``POST /garden/keys`` while the gateway
is still open (it listens on loopback and has no key yet); from then on it asks for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelgarden.security.keys import PREFIX, Bucket
from tests.fakes import (
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    FakeBackend,
    FakeClock,
    Garden,
    fast_app,
    fast_settings,
)

HI = [{"role": "user", "content": "hi"}]


@dataclass
class Keyed:
    """A gateway with an admin key, and what a test needs to make more."""

    garden: Garden
    backend: FakeBackend
    clock: FakeClock
    admin: str

    @property
    def client(self) -> httpx.AsyncClient:
        return self.garden.client

    async def make(self, name: str, **fields: Any) -> tuple[str, str]:
        """A new key (its secret and id), made with the admin key."""
        body = {"name": name, **fields}
        response = await self.client.post("/garden/keys", json=body, headers=bearer(self.admin))
        assert response.status_code == 201, response.text
        made: dict[str, Any] = response.json()
        return str(made["key"]), str(made["id"])


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def chat(
    client: httpx.AsyncClient, secret: str | None, model: str = "m", path: str = "/api/chat"
) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": HI, "stream": False}
    if path == "/v1/messages":
        body["max_tokens"] = 5
    async with asyncio.timeout(5):  # a request left waiting is a failure, not a hang
        return await client.post(path, json=body, headers=bearer(secret) if secret else {})


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    clock = FakeClock()
    backend = FakeBackend("fake", ["m", "mini:1b", "other"])
    async with fast_app(fast_settings(tmp_path), [backend], clock) as garden:
        assert (await chat(garden.client, None)).status_code == 200  # open: no key yet
        first = {"name": "root", "scope": "admin"}
        response = await garden.client.post("/garden/keys", json=first)
        assert response.status_code == 201, response.text
        yield Keyed(garden, backend, clock, str(response.json()["key"]))


async def test_once_a_key_exists_a_request_without_one_is_refused_in_its_familys_shape(
    keyed: Keyed,
) -> None:
    client = keyed.client
    ollama = await chat(client, None)
    openai = await chat(client, None, path="/v1/chat/completions")
    anthropic = await chat(client, None, path="/v1/messages")
    wrong = await chat(client, PREFIX + "x" * 43)
    assert ollama.status_code == openai.status_code == anthropic.status_code == 401
    assert ollama.headers["www-authenticate"] == "Bearer"
    assert ollama.json()["error"].startswith("this gateway needs an API key")
    assert openai.json()["error"]["type"] == "authentication_error"
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "authentication_error"
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid API key"})
    assert (await client.get("/health")).status_code == 200  # public routes stay open
    assert (await client.get("/api/tags")).status_code == 401
    assert len(keyed.backend.sent) == 1  # the one request made while it was open


async def test_a_user_key_is_refused_admin_routes_and_models_outside_its_globs(
    keyed: Keyed,
) -> None:
    client = keyed.client
    user, _ = await keyed.make("app", models=["m*"])
    assert (await chat(client, user)).status_code == 200
    assert (await chat(client, user, "mini:1b")).status_code == 200
    refused = await chat(client, user, "other")
    assert (refused.status_code, refused.json()) == (
        403,
        {"error": "this API key may not use model 'other'"},
    )
    openai = await chat(client, user, "other", "/v1/chat/completions")
    assert openai.status_code == 403 and openai.json()["error"]["type"] == "permission_error"
    tags = (await client.get("/api/tags", headers=bearer(user))).json()
    assert [m["name"] for m in tags["models"]] == ["m:latest", "mini:1b"]
    for method, path in (("GET", "/garden/keys"), ("GET", "/garden/backends"), ("GET", "/metrics")):
        response = await client.request(method, path, headers=bearer(user))
        assert response.status_code == 403, path
        assert response.json() == {"error": f"{method} {path} needs an admin key"}
    # The Anthropic clients send their key as X-API-Key.
    anthropic = await client.post(
        "/v1/messages",
        json={"model": "m", "messages": HI, "max_tokens": 5},
        headers={"x-api-key": user},
    )
    assert anthropic.status_code == 200
    assert [r.model for r in keyed.backend.sent][1:] == ["m:latest", "mini:1b", "m:latest"]


async def test_an_admin_lists_keys_without_secrets_and_a_revoked_key_stops_at_once(
    keyed: Keyed,
) -> None:
    client = keyed.client
    user, user_id = await keyed.make("app")
    listed = await client.get("/garden/keys", headers=bearer(keyed.admin))
    assert listed.status_code == 200
    keys = listed.json()["keys"]
    assert [(k["name"], k["scope"], k["state"]) for k in keys] == [
        ("root", "admin", "active"),
        ("app", "user", "active"),
    ]
    assert user not in listed.text and keyed.admin not in listed.text
    assert (await chat(client, user)).status_code == 200
    revoked = await client.delete(f"/garden/keys/{user_id}", headers=bearer(keyed.admin))
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    refused = await chat(client, user)
    assert (refused.status_code, refused.json()) == (401, {"error": "API key has been revoked"})
    missing = await client.delete("/garden/keys/nobody", headers=bearer(keyed.admin))
    assert (missing.status_code, missing.json()) == (404, {"error": "no key 'nobody'"})


async def test_requests_per_minute_refill_on_the_clock(keyed: Keyed) -> None:
    client = keyed.client
    user, _ = await keyed.make("app", rpm=2)
    assert [(await chat(client, user)).status_code for _ in range(2)] == [200, 200]
    refused = await chat(client, user)
    assert refused.status_code == 429
    assert refused.json() == {"error": "rate limit exceeded: 2 requests per minute for this key"}
    assert refused.headers["retry-after"] == "30"  # one request's worth at 2 a minute
    keyed.clock.advance(29)
    assert (await chat(client, user)).status_code == 429
    keyed.clock.advance(1)
    assert (await chat(client, user)).status_code == 200
    assert (await chat(client, keyed.admin)).status_code == 200  # other keys are not counted


async def test_tokens_per_minute_count_each_answers_tokens(keyed: Keyed) -> None:
    client = keyed.client
    per_answer = PROMPT_TOKENS + COMPLETION_TOKENS
    user, _ = await keyed.make("app", tpm=per_answer + 1)
    # Admitted while a token is left; each answer then spends its own count.
    assert [(await chat(client, user)).status_code for _ in range(2)] == [200, 200]
    refused = await chat(client, user)
    assert refused.status_code == 429
    assert "tokens per minute" in refused.json()["error"]
    # 5 a minute; two answers of 4 left the bucket at -3: one more token takes 4 / (5/60) s.
    assert (per_answer, refused.headers["retry-after"]) == (4, "48")
    keyed.clock.advance(47)
    assert (await chat(client, user)).status_code == 429
    keyed.clock.advance(1)
    assert (await chat(client, user)).status_code == 200


async def test_concurrent_requests_per_key_are_bounded_until_the_answer_ends(
    keyed: Keyed,
) -> None:
    client = keyed.client
    user, _ = await keyed.make("app", max_concurrent=1)
    keyed.backend.gate = gate = asyncio.Event()
    keyed.backend.arrived.clear()
    first = asyncio.create_task(chat(client, user))
    await asyncio.wait_for(keyed.backend.arrived.wait(), 5)
    refused = await chat(client, user)
    assert refused.status_code == 429
    assert "too many concurrent requests" in refused.json()["error"]
    gate.set()
    assert (await first).status_code == 200
    assert (await chat(client, user)).status_code == 200


async def test_a_gateway_exposed_beyond_loopback_refuses_everyone_without_keys(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path, host="0.0.0.0:11434")
    backend = FakeBackend("fake", ["m"])
    async with fast_app(settings, [backend]) as garden:
        refused = await chat(garden.client, None)
        assert refused.status_code == 401
        assert "listens beyond loopback" in refused.json()["error"]
        assert (await garden.client.get("/health")).status_code == 200
    assert backend.sent == []


def test_a_bucket_admits_once_the_wait_it_announced_has_passed() -> None:
    clock = FakeClock()
    bucket = Bucket(5, clock)
    bucket.take(8)  # two answers of 4 tokens at 5 a minute: 3 in debt
    assert bucket.wait() == pytest.approx(48)
    clock.advance(47)
    assert bucket.wait() == pytest.approx(1)  # asked a second early: 11/12 of a token
    clock.advance(1)  # the two refills add up to a hair under 4 tokens in floats
    assert bucket.wait() == 0.0
    bucket.take(1)
    assert bucket.wait() == pytest.approx(12)
