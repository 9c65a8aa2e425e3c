"""Memory estimates against real runners, and admission: refuse or evict before the OOM killer."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import ollama
import openai
import psutil
import pytest

from modelgarden.config import DEFAULT_MODEL
from tests.conftest import GardenServer
from tests.gguf_writer import write_gguf
from tests.integration.test_cli import garden_cmd

MiB = 1 << 20

#: A few hundred tokens of prompt, so the compute buffers are in use as in real chats.
PROMPT = "Summarise this text. " + "The quick brown fox jumps over the lazy dog. " * 40
QUIET = {"temperature": 0, "seed": 1, "num_predict": 8}


def test_memory_shown_and_estimated_against_the_runners_real_memory(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden(OLLAMA_NUM_PARALLEL="2")
    client = ollama.Client(host=server.url)
    client.chat(DEFAULT_MODEL, messages=[{"role": "user", "content": PROMPT}], options=QUIET)
    (loaded,) = client.ps().models
    (runner,) = server.runners()
    rss = runner.memory_info().rss
    # ps shows what the engine allocated (weights, KV cache for both slots, compute)
    shown = loaded.size or 0
    assert abs(shown - rss) / rss <= 0.25, (shown, rss)
    assert loaded.size_vram == 0  # on the CPU
    # the estimate admission goes by is never below what the runner really takes
    models = httpx.get(server.url + "/garden/models").json()["models"]
    estimate = next(m["memory"] for m in models if m["name"] == DEFAULT_MODEL)
    assert rss <= estimate <= 1.5 * rss, (estimate, rss)


def test_a_model_that_cannot_fit_the_limit_is_refused_clearly(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden(GARDEN_MEMORY_LIMIT="150MiB")
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=server.url).generate(DEFAULT_MODEL, "hello", options=QUIET)
    assert info.value.status_code == 500
    assert info.value.error.startswith("model requires more system memory (")
    assert "than is available (150.0 MiB)" in info.value.error

    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as err:
        oa.chat.completions.create(
            model=DEFAULT_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
    assert "requires more system memory" in err.value.message
    assert not server.runners()  # nothing was started, so nothing could be OOM-killed
    assert httpx.get(server.url + "/api/tags").status_code == 200  # and the gateway is up


def test_a_model_larger_than_free_memory_is_refused_before_loading(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    huge = {  # a 1M-token context on a wide model: terabytes of KV cache
        "general.architecture": "llama",
        "llama.context_length": 1 << 20,
        "llama.block_count": 120,
        "llama.embedding_length": 16384,
        "llama.attention.head_count": 128,
        "llama.attention.head_count_kv": 128,
    }
    path = write_gguf(server.models.parent / "huge.gguf", huge, [])
    list(client.create("huge", files={"huge.gguf": client.create_blob(path)}, stream=True))
    with pytest.raises(ollama.ResponseError) as info:
        client.generate("huge", "hello", options={"num_ctx": 1 << 20})
    assert "requires more system memory" in info.value.error
    assert "TiB" in info.value.error
    assert not server.runners()
    assert client.generate(DEFAULT_MODEL, "1,", raw=True, options=QUIET).done


def test_idle_models_are_evicted_to_make_room(
    make_garden: Callable[..., GardenServer], tiny_gguf: Path
) -> None:
    server = make_garden(GARDEN_MEMORY_LIMIT="360MiB", OLLAMA_KEEP_ALIVE="-1")
    client = ollama.Client(host=server.url)
    client.create("tiny", files={"tiny.gguf": client.create_blob(tiny_gguf)})
    client.generate(DEFAULT_MODEL, "1,", raw=True, options=QUIET)  # 4096 context: ~330 MiB
    first = {p.pid for p in server.runners()}
    client.generate("tiny", "1,", raw=True, options=QUIET)  # ~75 MiB: both exceed 360 MiB
    (loaded,) = client.ps().models
    assert loaded.model == "tiny:latest"
    assert first.isdisjoint(p.pid for p in server.runners())
    assert "evicting model to free memory" in server.logs()


def test_doctor_reports_the_machine_the_models_and_what_fits(garden: GardenServer) -> None:
    models = str(garden.models)
    result = garden_cmd(garden, "doctor", "--json", GARDEN_MODELS=models)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    machine = data["machine"]
    assert machine["ram_total"] == psutil.virtual_memory().total
    assert machine["cpu_count"] == os.cpu_count()
    assert 0 < machine["disk_free"] <= machine["disk_total"]
    assert machine["gpus"] == []  # no NVIDIA driver here: reported as none, not an error
    (default,) = [m for m in data["models"] if m["name"] == DEFAULT_MODEL]
    assert default["quantization"] == "Q4_1"
    assert 250 * MiB < default["need"] < 400 * MiB
    assert default["fits"] is True
    assert data["recommended"], "a machine with gigabytes of RAM gets recommendations"
    assert all(r["need"] <= data["memory_for_models"] for r in data["recommended"])
    assert data["server"]["url"] == garden.url

    tight = garden_cmd(None, "doctor", "--json", GARDEN_MODELS=models, GARDEN_MEMORY_LIMIT="100MB")
    (default,) = [m for m in json.loads(tight.stdout)["models"] if m["name"] == DEFAULT_MODEL]
    assert default["fits"] is False
    assert json.loads(tight.stdout)["server"] is None


def test_doctor_prints_tables_for_people(garden: GardenServer) -> None:
    result = garden_cmd(garden, "doctor", GARDEN_MODELS=str(garden.models))
    assert result.returncode == 0, result.stderr
    for expected in ("Memory", "Installed models", DEFAULT_MODEL, "Recommended", "garden pull"):
        assert expected in result.stdout
