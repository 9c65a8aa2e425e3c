"""API keys, scopes and limits against a real gateway: every attempt that must fail, fails."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.conftest import (
    DEFAULT_MODEL,
    GardenServer,
    clean_env,
    free_port,
    start_server,
    stop_and_check,
)
from tests.integration.test_cli import garden_cmd
from tests.integration.test_lifecycle import COUNTING, LONG

QUIET = {"temperature": 0, "seed": 1, "num_predict": 4}
HELLO = [{"role": "user", "content": "hi"}]


@dataclass
class Keys:
    """The secured gateway and the keys made on it."""

    server: GardenServer
    admin: str
    user: str
    other: str


def make_key(server: GardenServer, *args: str, admin: str | None = None) -> str:
    env = {"GARDEN_API_KEY": admin} if admin else {}
    result = garden_cmd(server, "keys", "create", *args, **env)
    assert result.returncode == 0, result.stderr
    assert "cannot be shown again" in result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    server = start_server(tmp_path_factory.mktemp("keyed"))
    admin = make_key(server, "--name", "root", "--scope", "admin")  # open: no key yet
    user = make_key(server, "--name", "app", "--models", "smollm2*", admin=admin)
    other = make_key(server, "--name", "elsewhere", "--models", "llama*", admin=admin)
    yield Keys(server, admin, user, other)
    stop_and_check(server)


def get(keys: Keys, path: str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(keys.server.url + path, headers=headers)


def post(keys: Keys, path: str, body: object, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(keys.server.url + path, json=body, headers=headers, timeout=60)


def test_keys_are_stored_hashed_and_listed_without_secrets(keyed: Keys) -> None:
    listed = garden_cmd(keyed.server, "keys", "list", GARDEN_API_KEY=keyed.admin)
    assert listed.returncode == 0, listed.stderr
    for name in ("root", "app", "elsewhere"):
        assert name in listed.stdout
    assert keyed.user not in listed.stdout and keyed.admin not in listed.stdout
    body = get(keyed, "/garden/keys", keyed.admin).text
    assert keyed.user not in body and keyed.admin not in body
    database = (keyed.server.models / "garden.db").read_bytes()
    for secret in (keyed.admin, keyed.user, keyed.other):
        assert secret.encode() not in database


def test_without_a_key_only_public_routes_answer(keyed: Keys) -> None:
    for path in ("/", "/health", "/api/version"):
        assert get(keyed, path).status_code == 200, path
    refused = post(keyed, "/api/chat", {"model": DEFAULT_MODEL, "messages": HELLO})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "needs an API key" in refused.json()["error"]
    assert get(keyed, "/api/tags").status_code == 401
    v1 = get(keyed, "/v1/models")
    assert v1.status_code == 401 and v1.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("key", "message"),
    [("Bearer mg-not-a-key", "invalid API key"), ("Basic cm9vdDpyb290", "needs an API key")],
)
def test_a_wrong_key_is_refused(keyed: Keys, key: str, message: str) -> None:
    answer = httpx.get(keyed.server.url + "/api/tags", headers={"authorization": key})
    assert answer.status_code == 401 and message in answer.json()["error"]


def test_revoked_and_expired_keys_are_refused(keyed: Keys) -> None:
    doomed = make_key(keyed.server, "--name", "doomed", admin=keyed.admin)
    assert get(keyed, "/api/tags", doomed).status_code == 200
    revoked = garden_cmd(keyed.server, "keys", "revoke", "doomed", GARDEN_API_KEY=keyed.admin)
    assert revoked.returncode == 0, revoked.stderr
    answer = get(keyed, "/api/tags", doomed)
    assert answer.status_code == 401 and answer.json()["error"] == "API key has been revoked"

    brief = make_key(keyed.server, "--name", "brief", "--expires", "1s", admin=keyed.admin)
    time.sleep(1.2)
    answer = get(keyed, "/api/tags", brief)
    assert answer.status_code == 401 and answer.json()["error"] == "API key has expired"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/pull", {"model": "smollm2:360m"}),
        ("POST", "/api/copy", {"source": DEFAULT_MODEL, "destination": "mine"}),
        ("DELETE", "/api/delete", {"model": DEFAULT_MODEL}),
        ("POST", "/api/create", {"model": "x", "from": DEFAULT_MODEL}),
        ("POST", "/deploy", {"model": DEFAULT_MODEL}),
        ("DELETE", "/undeploy", {"model": DEFAULT_MODEL}),
        ("GET", "/status", None),
        ("GET", "/metrics", None),
        ("GET", "/garden/keys", None),
        ("POST", "/garden/keys", {"name": "sneaky", "scope": "admin"}),
        ("GET", "/ollama/api/tags", None),
    ],
)
def test_a_user_key_cannot_use_admin_routes(
    keyed: Keys, method: str, path: str, body: object
) -> None:
    answer = httpx.request(
        method,
        keyed.server.url + path,
        json=body,
        headers={"authorization": f"Bearer {keyed.user}"},
    )
    assert answer.status_code == 403, answer.text
    assert answer.json() == {"error": f"{method} {path} needs an admin key"}
    assert DEFAULT_MODEL in [
        m["name"] for m in get(keyed, "/api/tags", keyed.admin).json()["models"]
    ]


def test_a_key_only_sees_and_uses_its_models(keyed: Keys) -> None:
    assert (
        post(
            keyed, "/api/copy", {"source": DEFAULT_MODEL, "destination": "llama-copy"}, keyed.admin
        ).status_code
        == 200
    )
    mine = [m["name"] for m in get(keyed, "/api/tags", keyed.user).json()["models"]]
    theirs = [m["name"] for m in get(keyed, "/api/tags", keyed.other).json()["models"]]
    assert mine == [DEFAULT_MODEL] and theirs == ["llama-copy:latest"]
    assert [m["id"] for m in get(keyed, "/v1/models", keyed.user).json()["data"]] == [DEFAULT_MODEL]
    body = {"model": "llama-copy", "messages": HELLO, "stream": False, "options": QUIET}
    refused = post(keyed, "/api/chat", body, keyed.user)
    assert refused.status_code == 403
    assert refused.json()["error"] == "this API key may not use model 'llama-copy'"
    assert post(keyed, "/api/show", {"model": "llama-copy"}, keyed.user).status_code == 403
    assert post(keyed, "/api/chat", body, keyed.other).status_code == 200


def test_the_official_clients_send_keys(keyed: Keys) -> None:
    client = ollama.Client(host=keyed.server.url, headers={"authorization": f"Bearer {keyed.user}"})
    assert client.chat(DEFAULT_MODEL, messages=HELLO, options=QUIET).message.content is not None
    oa = openai.OpenAI(base_url=keyed.server.url + "/v1", api_key=keyed.user, max_retries=0)
    reply = oa.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content is not None
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=keyed.server.url + "/v1", api_key="mg-wrong", max_retries=0
        ).models.list()


def test_anthropic_clients_use_gateway_keys_through_x_api_key(keyed: Keys) -> None:
    """Claude Code and the anthropic SDK send ``x-api-key``: the gateway's own keys work
    there as through ``Authorization``, and every refusal is in Anthropic's shape."""
    url = keyed.server.url

    def claude(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)

    reply = claude(keyed.user).messages.create(model=DEFAULT_MODEL, max_tokens=2, messages=HELLO)  # type: ignore[arg-type]
    assert reply.content and reply.usage.output_tokens <= 2
    with pytest.raises(anthropic.AuthenticationError) as wrong:
        claude("mg-wrong").messages.create(model=DEFAULT_MODEL, max_tokens=2, messages=HELLO)  # type: ignore[arg-type]
    assert wrong.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        claude(keyed.other).messages.count_tokens(model=DEFAULT_MODEL, messages=HELLO)  # type: ignore[arg-type]
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    missing = httpx.post(url + "/v1/messages", json={"model": DEFAULT_MODEL, "messages": HELLO})
    assert missing.status_code == 401 and missing.json()["type"] == "error"
    responses = openai.OpenAI(base_url=url + "/v1", api_key=keyed.user, max_retries=0)
    assert responses.responses.create(model=DEFAULT_MODEL, input="hi", max_output_tokens=2).output
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="mg-wrong", max_retries=0).responses.create(
            model=DEFAULT_MODEL, input="hi"
        )
    limited = make_key(keyed.server, "--name", "rpm-claude", "--rpm", "1", admin=keyed.admin)
    claude(limited).messages.create(model=DEFAULT_MODEL, max_tokens=1, messages=HELLO)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as limit:
        claude(limited).messages.create(model=DEFAULT_MODEL, max_tokens=1, messages=HELLO)  # type: ignore[arg-type]
    assert limit.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limit.value.response.headers["retry-after"]) >= 1


def test_requests_per_minute(keyed: Keys) -> None:
    limited = make_key(keyed.server, "--name", "rpm", "--rpm", "2", admin=keyed.admin)
    body = {"model": DEFAULT_MODEL, "prompt": "1,", "raw": True, "stream": False, "options": QUIET}
    assert [post(keyed, "/api/generate", body, limited).status_code for _ in range(2)] == [200, 200]
    third = post(keyed, "/api/generate", body, limited)
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1
    assert "2 requests per minute" in third.json()["error"]
    oa = openai.OpenAI(base_url=keyed.server.url + "/v1", api_key=limited, max_retries=0)
    with pytest.raises(openai.RateLimitError):
        oa.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO, max_tokens=2)  # type: ignore[arg-type]
    assert get(keyed, "/api/tags", limited).status_code == 200  # listing is not counted


def test_tokens_per_minute(keyed: Keys) -> None:
    limited = make_key(keyed.server, "--name", "tpm", "--tpm", "20", admin=keyed.admin)
    body = {
        "model": DEFAULT_MODEL,
        "prompt": "Count: 1, 2, 3,",
        "raw": True,
        "stream": False,
        "options": {**QUIET, "num_predict": 24},
    }
    assert post(keyed, "/api/generate", body, limited).status_code == 200  # spends > 20 tokens
    deadline = time.monotonic() + 5
    while (answer := post(keyed, "/api/generate", body, limited)).status_code == 200:
        assert time.monotonic() < deadline, "the token debt was never charged"
        time.sleep(0.1)
    assert answer.status_code == 429 and "20 tokens per minute" in answer.json()["error"]


def test_concurrent_requests_per_key(keyed: Keys) -> None:
    limited = make_key(keyed.server, "--name", "one", "--max-concurrent", "1", admin=keyed.admin)
    long = {
        "model": DEFAULT_MODEL,
        "prompt": COUNTING,
        "raw": True,
        "options": LONG,
    }
    with httpx.stream(
        "POST",
        keyed.server.url + "/api/generate",
        json=long,
        headers={"authorization": f"Bearer {limited}"},
        timeout=60,
    ) as first:
        lines = first.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)  # streaming now
        second = post(keyed, "/api/generate", {**long, "stream": False}, limited)
        assert second.status_code == 429
        assert "too many concurrent requests" in second.json()["error"]
    assert (
        post(
            keyed, "/api/generate", {**long, "stream": False, "options": QUIET}, limited
        ).status_code
        == 200
    )


def test_concurrency_is_released_across_a_key_reload(keyed: Keys) -> None:
    """Keys are re-read while a request is in flight: its slot must still come back."""
    limited = make_key(
        keyed.server, "--name", "reloaded", "--max-concurrent", "1", admin=keyed.admin
    )
    long = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    headers = {"authorization": f"Bearer {limited}"}
    with httpx.stream(
        "POST", keyed.server.url + "/api/generate", json=long, headers=headers, timeout=60
    ) as first:
        lines = first.iter_lines()
        next(lines)
        make_key(keyed.server, "--name", "meanwhile", admin=keyed.admin)  # reloads the keys
    quick = {"model": DEFAULT_MODEL, "prompt": "1,", "raw": True, "stream": False, "options": QUIET}
    assert post(keyed, "/api/generate", quick, limited).status_code == 200


def test_key_management_errors_are_clear(keyed: Keys) -> None:
    bad = post(keyed, "/garden/keys", {"name": "x", "scope": "root"}, keyed.admin)
    assert bad.status_code == 400 and "scope" in bad.json()["error"]
    past = post(keyed, "/garden/keys", {"name": "x", "expires": "2020-01-01"}, keyed.admin)
    assert past.status_code == 400 and "passed" in past.json()["error"]
    missing = httpx.delete(
        keyed.server.url + "/garden/keys/nobody",
        headers={"authorization": f"Bearer {keyed.admin}"},
    )
    assert missing.status_code == 404
    no_key = garden_cmd(keyed.server, "keys", "list")
    assert no_key.returncode == 1
    assert no_key.stderr.strip().splitlines() == [
        "Error: this gateway needs an API key: send Authorization: Bearer <key>"
    ]


def _serve(
    models: Path, bind_port: int, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelgarden", "serve", *args],
        env=clean_env(OLLAMA_HOST=f"0.0.0.0:{bind_port}", GARDEN_MODELS=str(models), **env),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_no_network_exposure_without_keys(tmp_path: Path) -> None:
    refused = _serve(tmp_path / "models", free_port())
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: refusing to listen on 0.0.0.0:") and "--insecure" in lines[0]


def test_insecure_and_keyed_gateways_may_listen_beyond_loopback(
    make_garden: Callable[..., GardenServer], keyed: Keys
) -> None:
    insecure = make_garden(bind="0.0.0.0", GARDEN_INSECURE="1")
    assert "WITHOUT authentication" in insecure.logs()
    shared = f"sqlite:///{keyed.server.models / 'garden.db'}"  # the same keys, its own store
    keyed_wide = make_garden(bind="0.0.0.0", GARDEN_DATABASE_URL=shared)
    assert httpx.get(keyed_wide.url + "/api/tags").status_code == 401
    answer = httpx.get(
        keyed_wide.url + "/api/tags", headers={"authorization": f"Bearer {keyed.user}"}
    )
    assert answer.status_code == 200


def test_the_gateways_key_never_reaches_an_upstream(keyed: Keys, tmp_path: Path) -> None:
    from tests.openrouter_stub import OpenRouterStub

    stub = OpenRouterStub("sk-or-upstream").start()
    toml = tmp_path / "garden.toml"
    toml.write_text(
        f'[[backends]]\nname = "or"\nkind = "openai"\nurls = ["{stub.url}"]\n'
        'api_key_env = "TEST_OR_KEY"\nmodels = ["meta-llama/llama-3.1-8b-instruct"]\n'
    )
    server = start_server(
        tmp_path / "front",
        GARDEN_DATABASE_URL=f"sqlite:///{keyed.server.models / 'garden.db'}",
        GARDEN_DEFAULT_MODEL="",
        GARDEN_CONFIG=str(toml),
        TEST_OR_KEY="sk-or-upstream",
    )
    try:
        body = {"model": "meta-llama/llama-3.1-8b-instruct", "messages": HELLO, "stream": False}
        answer = httpx.post(
            server.url + "/api/chat", json=body, headers={"authorization": f"Bearer {keyed.user}"}
        )
        assert answer.status_code == 403  # the user key's globs allow only smollm2*
        answer = httpx.post(
            server.url + "/api/chat", json=body, headers={"authorization": f"Bearer {keyed.admin}"}
        )
        assert answer.status_code == 200, answer.text
        seen = [
            v
            for r in stub.requests
            for k, v in r["headers"].items()
            if k.lower() == "authorization"
        ]
        assert seen and all(a == "Bearer sk-or-upstream" for a in seen)
        assert keyed.admin not in server.logs() and "sk-or-upstream" not in server.logs()
    finally:
        stop_and_check(server)
        stub.stop()
