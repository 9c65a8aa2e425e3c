"""Real coding agents against a real gateway: Claude Code (``claude -p``, through
``ANTHROPIC_BASE_URL``) and Codex (``codex exec``, the gateway as a Responses provider, and
``--oss`` as its Ollama provider) each complete one prompt end to end.

Opt-in, not in CI (marked ``agents``, which the default run deselects):
``GARDEN_AGENTS_BIN=<folder holding claude and codex> pytest -m agents
tests/integration/test_agents.py`` (``npm install @anthropic-ai/claude-code @openai/codex``,
then ``node_modules/.bin``); without the variable these tests fail, saying so. Both
are native binaries of a few hundred MB that change weekly (and with them what they send),
install from npm with post-install scripts, and spend 20-80 s per prompt on a 2-core
machine reading their 4k-token system prompts; the protocol they exercise is covered in CI
by the SDK tests and the unit tests built from what they sent (docs/API.md).

The model is ``brief``: the default model told to stop at its first newline or full stop,
so that its (weak) answer ends by itself within the agents' token limits.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, GardenServer, clean_env, start_server, stop_and_check

AGENTS = os.environ.get("GARDEN_AGENTS_BIN", "")
pytestmark = pytest.mark.agents
PROMPT = "Say hello in one word."


@pytest.fixture(scope="module")
def agent_garden(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    assert AGENTS, "set GARDEN_AGENTS_BIN to the folder holding the claude and codex binaries"
    server = start_server(tmp_path_factory.mktemp("agents"), GARDEN_CONTEXT_LENGTH="8192")
    brief = {"model": "brief", "from": DEFAULT_MODEL, "parameters": {"stop": ["\n", "."]}}
    answer = httpx.post(server.url + "/api/create", json={**brief, "stream": False}, timeout=60)
    assert answer.status_code == 200, answer.text
    yield server
    stop_and_check(server)


def requests_of(server: GardenServer, api: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "request" and line.get("api") == api]


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env=clean_env(**env), cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_claude_code_completes_a_prompt(agent_garden: GardenServer, tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": agent_garden.url,
        "ANTHROPIC_API_KEY": "unused",
        "ANTHROPIC_MODEL": "brief",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "brief",
        "ANTHROPIC_SMALL_FAST_MODEL": "brief",
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "256",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    claude = str(Path(AGENTS) / "claude")
    done = run([claude, "-p", PROMPT, "--output-format", "json"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert not result["is_error"] and result["stop_reason"] == "end_turn", result
    assert result["usage"]["input_tokens"] > 0 and result["usage"]["output_tokens"] > 0
    served = requests_of(agent_garden, "anthropic")
    assert served and all(r["status"] == 200 for r in served)


def test_codex_completes_a_prompt(agent_garden: GardenServer, tmp_path: Path) -> None:
    home = tmp_path / "codex"
    home.mkdir()
    (home / "config.toml").write_text(
        'model = "brief"\nmodel_provider = "garden"\n\n[model_providers.garden]\n'
        f'name = "modelgarden"\nbase_url = "{agent_garden.url}/v1"\nwire_api = "responses"\n'
    )
    codex = str(Path(AGENTS) / "codex")
    done = run(
        [codex, "exec", "--skip-git-repo-check", PROMPT], {"CODEX_HOME": str(home)}, tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() and "tokens used" in done.stderr
    # --oss: Codex's own Ollama provider checks /api/version before speaking Responses.
    oss = {"CODEX_HOME": str(home), "CODEX_OSS_BASE_URL": f"{agent_garden.url}/v1"}
    cmd = [codex, "exec", "--oss", "--local-provider=ollama", "-m", "brief:latest"]
    done = run([*cmd, "--skip-git-repo-check", PROMPT], oss, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    served = requests_of(agent_garden, "responses")
    assert len(served) >= 2 and all(r["status"] == 200 for r in served)
