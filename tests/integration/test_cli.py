"""The ``garden`` command against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from modelgarden.store.default import find_default_gguf
from tests.conftest import DEFAULT_MODEL, GardenServer, clean_env, free_port


def garden_cmd(
    server: GardenServer | None, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    host = server.host if server else f"127.0.0.1:{free_port()}"
    return subprocess.run(
        [sys.executable, "-m", "modelgarden", *args],
        env=clean_env(OLLAMA_HOST=host, **env),
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_and_show(garden: GardenServer) -> None:
    listed = garden_cmd(garden, "list")
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert any(row.startswith(DEFAULT_MODEL) and "98 MB" in row for row in rows)
    shown = garden_cmd(garden, "show", DEFAULT_MODEL)
    assert shown.returncode == 0
    assert "architecture        llama" in shown.stdout
    assert "134.52M" in shown.stdout and "tools" in shown.stdout
    modelfile = garden_cmd(garden, "show", DEFAULT_MODEL, "--modelfile")
    assert "FROM " in modelfile.stdout


def test_run_with_a_prompt_and_from_stdin(garden: GardenServer, tmp_path: Path) -> None:
    # `run` sends no options: a model of bounded answers keeps the test's time bounded
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {DEFAULT_MODEL}\nPARAMETER num_predict 48\nPARAMETER seed 7\n")
    assert garden_cmd(garden, "create", "cli-run", "-f", str(modelfile)).returncode == 0
    answered = garden_cmd(garden, "run", "cli-run", "Say hello.")
    assert answered.returncode == 0
    assert answered.stdout.strip()
    piped = garden_cmd(garden, "run", "cli-run", "--verbose", stdin="Name a colour.")
    assert piped.returncode == 0 and piped.stdout.strip()
    assert "eval rate:" in piped.stderr
    running = garden_cmd(garden, "ps")
    assert "cli-run" in running.stdout and "100% CPU" in running.stdout
    assert garden_cmd(garden, "stop", "cli-run").returncode == 0
    assert "cli-run" not in garden_cmd(garden, "ps").stdout
    assert garden_cmd(garden, "rm", "cli-run").returncode == 0


def test_create_from_gguf_and_modelfile_then_cp_and_rm(
    garden: GardenServer, tmp_path: Path
) -> None:
    gguf = find_default_gguf()
    assert gguf is not None
    created = garden_cmd(garden, "create", "cli-gguf", "-f", str(gguf))
    assert created.returncode == 0 and "success" in created.stderr
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text('FROM cli-gguf\nSYSTEM """You are terse."""\nPARAMETER temperature 0\n')
    derived = garden_cmd(garden, "create", "cli-terse", "--file", str(modelfile))
    assert derived.returncode == 0, derived.stderr
    assert garden_cmd(garden, "show", "cli-terse", "--system").stdout.strip() == "You are terse."
    # a Modelfile whose FROM is a relative path to a GGUF file
    (tmp_path / "weights.gguf").symlink_to(gguf)
    relative = tmp_path / "Relative"
    relative.write_text("FROM ./weights.gguf\n")
    assert garden_cmd(garden, "create", "cli-rel", "-f", str(relative)).returncode == 0
    assert garden_cmd(garden, "cp", "cli-terse", "cli-copy").returncode == 0
    names = garden_cmd(garden, "list").stdout
    assert all(n in names for n in ("cli-gguf", "cli-terse", "cli-rel", "cli-copy"))
    removed = garden_cmd(garden, "rm", "cli-gguf", "cli-terse", "cli-rel", "cli-copy")
    assert removed.returncode == 0
    assert "cli-" not in garden_cmd(garden, "list").stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("show", "missing-model"), "model 'missing-model' not found"),
        (("run", "missing-model", "hi"), "not found"),
        (("rm", "missing-model"), "not found"),
    ],
)
def test_server_errors_are_one_line(
    garden: GardenServer, args: tuple[str, ...], fragment: str
) -> None:
    result = garden_cmd(garden, *args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]


def test_no_server_is_one_clear_line() -> None:
    result = garden_cmd(None, "list")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "could not connect" in lines[0] and "garden serve" in lines[0]


def test_bad_file_for_create_is_one_line(garden: GardenServer, tmp_path: Path) -> None:
    bogus = tmp_path / "Modelfile"
    bogus.write_text("FROM smollm2:135m\nPARAMETER temperature warm\n")
    result = garden_cmd(garden, "create", "x", "-f", str(bogus))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "temperature" in result.stderr


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"OLLAMA_NUM_PARALLEL": "abc"}, "OLLAMA_NUM_PARALLEL"),
        ({"OLLAMA_KEEP_ALIVE": "soon"}, "OLLAMA_KEEP_ALIVE"),
        ({"GARDEN_MAX_QUEUE": "-1"}, "GARDEN_MAX_QUEUE"),
    ],
)
def test_serve_refuses_a_bad_setting_in_one_line(env: dict[str, str], name: str) -> None:
    result = garden_cmd(None, "serve", **env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: invalid setting") and name in lines[0]


@pytest.mark.parametrize(
    "command",
    ["serve", "run", "list", "ps", "show", "create", "rm", "cp", "stop", "pull", "push", "doctor"],
)
def test_every_command_has_help(command: str) -> None:
    result = garden_cmd(None, command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")
