"""``garden serve`` started from a folder holding a ``.env`` (and a ``garden.toml``, and
environment variables): which value wins, a bad value's one line naming the file, and the
secrets in it, which reach what needs them and appear in no log line and no response.

Which value won is read from where the gateway listens: each source names another port.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import GardenServer, clean_env, free_port, start_server, stop_and_check
from tests.integration.test_routing import KEY
from tests.openrouter_stub import OpenRouterStub
from tests.otlp_receiver import OTLPReceiver

REMOTE = "meta-llama/llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
#: Secrets a .env holds: the upstream key (the stand-in's), an exporter token, a password.
OTLP_TOKEN = "otlp-token-5d1e0c9b"
DB_PASSWORD = "db-pass-8c2f41aa"


def _serve(root: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    models = root / "models"
    base = clean_env(GARDEN_MODELS=str(models), GARDEN_DEFAULT_MODEL="")
    for name in ("GARDEN_ENV_FILE", "GARDEN_CONFIG"):
        base.pop(name, None)
    base.update(env)
    with (root / "serve.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "modelgarden", "serve", *args],
            cwd=root,
            env=base,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _answers(port: int) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    return False


def _listens_on(root: Path, ports: dict[str, int], *args: str, **env: str) -> str:
    """Start ``garden serve`` in ``root``; the name of the port it answers on."""
    proc = _serve(root, *args, **env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (root / "serve.log").read_text()
            for name, port in ports.items():
                if _answers(port):
                    return name
            time.sleep(0.1)
        raise AssertionError("garden serve answered on none of the ports")
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture
def ports() -> dict[str, int]:
    return {name: free_port() for name in ("toml", "dotenv", "other", "env", "flag")}


@pytest.fixture
def folder(tmp_path: Path, ports: dict[str, int]) -> Path:
    """A folder with a garden.toml, a .env and another env file, each naming its own port."""
    (tmp_path / "garden.toml").write_text(f'host = "127.0.0.1:{ports["toml"]}"\n')
    (tmp_path / ".env").write_text(f"GARDEN_HOST=127.0.0.1:{ports['dotenv']}\n")
    (tmp_path / "other.env").write_text(f"OLLAMA_HOST=127.0.0.1:{ports['other']}\n")
    return tmp_path


def test_dot_env_beats_garden_toml(folder: Path, ports: dict[str, int]) -> None:
    assert _listens_on(folder, ports) == "dotenv"


def test_the_environment_beats_dot_env_whatever_its_name(
    folder: Path, ports: dict[str, int]
) -> None:
    # OLLAMA_HOST set for this run wins over GARDEN_HOST written in the file.
    assert _listens_on(folder, ports, OLLAMA_HOST=f"127.0.0.1:{ports['env']}") == "env"


def test_a_flag_beats_the_environment(folder: Path, ports: dict[str, int]) -> None:
    flag = f"127.0.0.1:{ports['flag']}"
    env = {"GARDEN_HOST": f"127.0.0.1:{ports['env']}"}
    assert _listens_on(folder, ports, "--host", flag, **env) == "flag"


def test_env_file_flag_and_variable_name_the_file_instead_of_dot_env(
    folder: Path, ports: dict[str, int]
) -> None:
    assert _listens_on(folder, ports, "--env-file", "other.env") == "other"
    assert _listens_on(folder, ports, GARDEN_ENV_FILE=str(folder / "other.env")) == "other"


def _refused(root: Path, *args: str) -> str:
    proc = _serve(root, *args)
    assert proc.wait(60) == 1
    return (root / "serve.log").read_text()


def test_a_bad_value_in_dot_env_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("GARDEN_KEEP_ALIVE=5m\nOLLAMA_NUM_PARALLEL=lots\n")
    output = _refused(tmp_path)
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("Error: invalid setting ") and "OLLAMA_NUM_PARALLEL" in lines[0]
    assert "'lots' in .env:" in lines[0] and "valid integer" in lines[0]


def test_an_unreadable_line_is_named_by_number_not_text(tmp_path: Path) -> None:
    (tmp_path / "keys.env").write_text(f"GOOD=1\nOPENROUTER {KEY}\n")
    output = _refused(tmp_path, "--env-file", "keys.env")
    assert output.strip() == "Error: env file keys.env line 2: expected NAME=value"


def test_a_missing_env_file_is_one_line(tmp_path: Path) -> None:
    output = _refused(tmp_path, "--env-file", "nowhere.env")
    assert output.strip() == "Error: env file nowhere.env does not exist"


# --- secrets ----------------------------------------------------------------------------


@pytest.fixture
def openrouter() -> Iterator[OpenRouterStub]:
    stub = OpenRouterStub(KEY).start()
    yield stub
    stub.stop()


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    r = OTLPReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def secret_garden(
    tmp_path: Path, openrouter: OpenRouterStub, receiver: OTLPReceiver
) -> Iterator[GardenServer]:
    """A gateway whose upstream key, exporter token and database password are in ./.env."""
    root = tmp_path / "g"
    root.mkdir()
    (root / "garden.toml").write_text(
        'default_model = ""\n[[backends]]\nname = "openrouter"\nkind = "openai"\n'
        f'urls = ["{openrouter.url}"]\napi_key_env = "TEST_OPENROUTER_KEY"\n'
    )
    (root / ".env").write_text(
        f"TEST_OPENROUTER_KEY={KEY}\n"
        f"OTEL_EXPORTER_OTLP_ENDPOINT={receiver.url}\n"
        f"OTEL_EXPORTER_OTLP_HEADERS=x-otlp-token={OTLP_TOKEN}\n"
        "OTEL_BSP_SCHEDULE_DELAY=50\n"
        f"GARDEN_DATABASE_URL=postgresql://garden:{DB_PASSWORD}@127.0.0.1:{free_port()}/usage\n"
    )
    server = start_server(root)
    yield server
    stop_and_check(server)


def test_secrets_in_dot_env_reach_what_needs_them_and_nothing_else(
    secret_garden: GardenServer, openrouter: OpenRouterStub, receiver: OTLPReceiver
) -> None:
    url = secret_garden.url
    client = httpx.Client(base_url=url, timeout=60)
    answers = [
        client.post("/api/chat", json={"model": REMOTE, "messages": HELLO, "stream": False}),
        client.post("/v1/chat/completions", json={"model": REMOTE, "messages": HELLO}),
        client.post("/api/chat", json={"model": "nowhere", "messages": HELLO}),
        client.post("/api/chat", json={"model": REMOTE, "messages": "not a list"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 400]
    # The key reached the upstream (the stand-in refuses any other), the token the exporter.
    chats = [r for r in openrouter.requests if r["path"].endswith("/chat/completions")]
    assert chats and all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in chats)
    receiver.wait_for(lambda spans: any(s.name == f"chat {REMOTE}" for s in spans))
    assert all(r.get("x-otlp-token") == OTLP_TOKEN for r in receiver.requests)
    for path in ("/", "/api/tags", "/api/ps", "/v1/models", "/ready", "/status", "/metrics"):
        answers.append(client.get(path))
    answers.append(client.get("/garden/backends"))
    answers.append(client.get("/garden/usage"))
    ready = client.get("/ready").json()
    assert "postgresql://garden:" in ready["database"]["error"]  # named, password redacted
    client.close()
    assert secret_garden.stop() == 0
    log = secret_garden.logs()
    assert "usage database unavailable" in log  # the line that names the database
    for secret in (KEY, OTLP_TOKEN, DB_PASSWORD):
        assert secret not in log
        for answer in answers:
            assert secret not in answer.text, answer.url
            assert all(secret not in v for v in answer.headers.values())
