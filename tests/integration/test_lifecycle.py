"""Runner lifecycle against real processes: keep-alive, eviction, crashes, queue, cancels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.conftest import DEFAULT_MODEL, GREEDY, GardenServer, wait_until

LONG = {**GREEDY, "num_predict": 3000, "repeat_penalty": 1.0}  # counting never stops
COUNTING = "Count from 1 to 1000: 1, 2, 3,"


def stream_lines(server: GardenServer, body: dict[str, object]) -> list[dict[str, object]]:
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


def test_runner_killed_mid_stream_ends_with_error_then_recovers(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    lines: list[dict[str, object]] = []
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            lines.append(json.loads(line))
            if len(lines) == 5:
                (victim,) = server.runners()
                os.kill(victim.pid, signal.SIGKILL)
    assert len(lines) > 5
    assert "error" in lines[-1] and not lines[-1].get("done")
    assert all("error" not in line for line in lines[:-1])
    # the next request gets a fresh runner
    reply = ollama.Client(host=server.url).generate(
        DEFAULT_MODEL, "1, 2, 3,", raw=True, options={**GREEDY, "num_predict": 3}
    )
    assert reply.done and reply.response
    assert [p.pid for p in server.runners()] != [victim.pid]


def test_idle_runner_that_died_is_replaced(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    client.generate(DEFAULT_MODEL, "")
    (runner,) = server.runners()
    runner.kill()
    assert wait_until(lambda: DEFAULT_MODEL not in {m.model for m in client.ps().models})
    reply = client.generate(DEFAULT_MODEL, "1, 2,", raw=True, options={**GREEDY, "num_predict": 2})
    assert reply.response


def test_keep_alive_expiry_unloads(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    client.generate(DEFAULT_MODEL, "hi", keep_alive="1s", options={**GREEDY, "num_predict": 1})
    assert DEFAULT_MODEL in {m.model for m in client.ps().models}
    assert wait_until(lambda: not client.ps().models, timeout=10)
    assert wait_until(lambda: not server.runners(), timeout=10)


def test_least_recently_used_model_is_evicted(
    make_garden: Callable[..., GardenServer], tiny_gguf: Path
) -> None:
    server = make_garden(OLLAMA_MAX_LOADED_MODELS="1")
    client = ollama.Client(host=server.url)
    client.create("tiny", files={"tiny.gguf": client.create_blob(tiny_gguf)})
    client.generate(DEFAULT_MODEL, "")
    assert [m.model for m in client.ps().models] == [DEFAULT_MODEL]
    client.generate("tiny", "")
    running = client.ps().models
    assert [m.model for m in running] == ["tiny:latest"]
    assert running[0].context_length == 2048  # what the tiny model was trained for
    assert len(server.runners()) == 1


def test_num_parallel_runs_requests_side_by_side(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden(OLLAMA_NUM_PARALLEL="2")
    body = {
        "model": DEFAULT_MODEL,
        "prompt": COUNTING,
        "raw": True,
        "stream": False,
        "options": {**GREEDY, "num_predict": 40},
    }

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return list(
                await asyncio.gather(*(http.post("/api/generate", json=body) for _ in range(2)))
            )

    replies = asyncio.run(both())
    assert [r.status_code for r in replies] == [200, 200]
    assert replies[0].json()["response"] == replies[1].json()["response"]
    assert len(server.runners()) == 1  # two slots of one runner, one copy of the weights


def test_full_queue_answers_503(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden(OLLAMA_MAX_QUEUE="1")
    long_body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    short = {"model": DEFAULT_MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}

    async def scenario() -> tuple[int, dict[str, object], int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            async with http.stream("POST", "/api/generate", json=long_body) as busy:
                lines = busy.aiter_lines()
                await lines.__anext__()  # the only slot is now generating
                queued = asyncio.ensure_future(http.post("/api/generate", json=short))
                await asyncio.to_thread(server.wait_queue, 1)  # the second one waits
                rejected = await http.post("/api/generate", json=short)
            return rejected.status_code, rejected.json(), (await queued).status_code

    status, body, queued_status = asyncio.run(scenario())
    assert status == 503
    assert body == {"error": "server busy, please try again.  maximum pending requests exceeded"}
    assert queued_status == 200


def test_client_disconnect_stops_the_generation(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden()
    body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i == 3:
                break
    # 3000 tokens take far longer than this; the slot must be free again at once
    reply = ollama.Client(host=server.url, timeout=30).generate(
        DEFAULT_MODEL, "1,", raw=True, options={**GREEDY, "num_predict": 1}
    )
    assert reply.total_duration is not None and reply.total_duration < 5e9
    (runner,) = server.runners()
    assert runner.cpu_percent(interval=0.5) < 50  # idle: nothing generates on


def test_model_that_cannot_load_gives_an_error_and_the_gateway_stays_up(
    make_garden: Callable[..., GardenServer], tmp_path: object
) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    from tests.gguf_writer import write_gguf  # a valid header without any tensors

    path = write_gguf(server.models.parent / "broken.gguf", {"general.architecture": "llama"}, [])
    digest = client.create_blob(path)
    list(client.create("broken", files={"broken.gguf": digest}, stream=True))
    with pytest.raises(ollama.ResponseError) as info:
        client.generate("broken", "hello")
    assert info.value.status_code == 500
    assert "llama runner process has terminated" in info.value.error
    assert client.generate(DEFAULT_MODEL, "1,", raw=True, options={"num_predict": 1}).done


def test_sigterm_stops_gateway_and_runners(make_garden: Callable[..., GardenServer]) -> None:
    server = make_garden()
    ollama.Client(host=server.url).generate(DEFAULT_MODEL, "")
    pids = [p.pid for p in server.runners()]
    assert pids
    assert server.stop() == 0
    assert wait_until(lambda: not any(psutil.pid_exists(pid) for pid in pids), timeout=10)


def test_a_client_that_leaves_the_queue_frees_its_place(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden(OLLAMA_MAX_QUEUE="1")
    long_body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    short = {"model": DEFAULT_MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}

    async def scenario() -> int:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            async with http.stream("POST", "/api/generate", json=long_body) as busy:
                lines = busy.aiter_lines()
                await lines.__anext__()  # the only slot is busy
                with pytest.raises(httpx.ReadTimeout):  # waits in the queue, then gives up
                    await http.post("/api/generate", json=short, timeout=0.5)
                await asyncio.to_thread(server.wait_queue, 0)
                # its place in the queue is free again: this one is queued, not refused
                queued = asyncio.ensure_future(http.post("/api/generate", json=short))
                await asyncio.to_thread(server.wait_queue, 1)
                assert not queued.done()
                assert isinstance(lines, AsyncGenerator)  # httpx's aiter_lines() is one
                await lines.aclose()
            return (await queued).status_code

    assert asyncio.run(scenario()) == 200
