"""``garden serve --workers N``: one primary and relay workers on one port, all real.

Connections are spread over the workers at random, so each test opens many (one per
client) and checks from the processes' own sockets which processes served them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import ollama
import openai
import psutil
import pytest
from benchmarks.reliability.recycle import workers_of

from tests.conftest import (
    DEFAULT_MODEL,
    GREEDY,
    GardenServer,
    clean_env,
    free_port,
    present,
    scrape,
    value,
    wait_until,
)
from tests.integration.test_auth import make_key
from tests.integration.test_routing import KEY, config
from tests.openrouter_stub import OpenRouterStub

MakeGarden = Callable[..., GardenServer]
REMOTE = "meta-llama/llama-3.1-8b-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
CONNECTIONS = 16


@pytest.fixture
def openrouter() -> Iterator[OpenRouterStub]:
    stub = OpenRouterStub(KEY).start()
    yield stub
    stub.stop()


def wait_for_workers(server: GardenServer, count: int) -> list[psutil.Process]:
    port = int(server.host.split(":")[1])

    def listening() -> bool:
        procs = workers_of(server)
        return len(procs) == count and all(
            any(c.laddr.port == port and c.status == "LISTEN" for c in p.net_connections())
            for p in procs
        )

    assert wait_until(listening, timeout=60), server.logs()[-3000:]
    return workers_of(server)


def serving(server: GardenServer) -> set[int]:
    """The gateway processes holding an open client connection on the public port."""
    port = int(server.host.split(":")[1])
    procs = [psutil.Process(server.proc.pid), *workers_of(server)]
    return {
        p.pid
        for p in procs
        if any(c.laddr.port == port and c.status == "ESTABLISHED" for c in p.net_connections())
    }


def garden_with(
    make_garden: MakeGarden, tmp_path: Path, stub: OpenRouterStub, workers: int, **env: str
) -> GardenServer:
    """A gateway with the local default model and the OpenRouter stand-in behind it."""
    toml = f"""
[[backends]]
name = "openrouter"
kind = "openai"
urls = ["{stub.url}"]
api_key_env = "TEST_OPENROUTER_KEY"
"""
    return make_garden(
        GARDEN_CONFIG=config(tmp_path, toml),
        TEST_OPENROUTER_KEY=KEY,
        GARDEN_WORKERS=str(workers),
        GARDEN_LOG_LEVEL="info",
        **env,
    )


def test_workers_share_the_port_and_every_request_is_counted_once(
    make_garden: MakeGarden, tmp_path: Path, openrouter: OpenRouterStub
) -> None:
    server = garden_with(make_garden, tmp_path, openrouter, 3)
    wait_for_workers(server, 2)
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(CONNECTIONS)]
    try:
        for client in clients:  # remote model: answered by whichever process took the client
            answer = client.post("/api/chat", json={"model": REMOTE, "messages": HELLO,
                                                    "stream": False})  # fmt: skip
            assert answer.status_code == 200, answer.text
            assert answer.json()["message"]["content"] == "Hello from the stand-in."
            assert answer.headers["x-request-id"]
            v1 = client.post("/v1/chat/completions", json={"model": REMOTE, "messages": HELLO})
            assert v1.status_code == 200 and v1.json()["choices"][0]["message"]["content"]
            tags = client.get("/api/tags")  # not a hot route: the primary answers it
            names = [m["name"] for m in tags.json()["models"]]
            assert DEFAULT_MODEL in names and f"{REMOTE}:latest" in names
        took = serving(server)
        assert len(took) >= 2, "every connection went to one worker"
        assert server.proc.pid not in took, "the primary took clients while its workers are up"
    finally:
        for client in clients:
            client.close()

    def counted() -> bool:
        return value(scrape(server), "garden_requests_total", status="200") == 2 * CONNECTIONS

    assert wait_until(counted, timeout=10), scrape(server)
    m = scrape(server)
    assert value(m, "garden_requests_total", api="ollama", backend="openrouter") == CONNECTIONS
    assert value(m, "garden_requests_total", api="openai", backend="openrouter") == CONNECTIONS
    lines = [json.loads(x) for x in server.logs().splitlines() if x.startswith("{")]
    assert sum(1 for x in lines if x.get("event") == "request") == 2 * CONNECTIONS

    def stored() -> bool:
        usage = httpx.get(server.url + "/garden/usage", params={"by": "model"}).json()
        requests: int = sum(row["requests"] for row in usage["rows"])
        return requests == 2 * CONNECTIONS

    assert wait_until(stored, timeout=10)


def test_local_model_and_store_routes_through_any_process(make_garden: MakeGarden) -> None:
    server = make_garden(GARDEN_WORKERS="2", GARDEN_LOG_LEVEL="info")
    wait_for_workers(server, 1)
    options = {**GREEDY, "num_predict": 6}
    clients = [ollama.Client(host=server.url) for _ in range(8)]
    for client in clients:
        parts = list(client.chat(DEFAULT_MODEL, HELLO, stream=True, options=options))
        assert parts[-1].done and "".join(present(p.message.content for p in parts)).strip()
        assert DEFAULT_MODEL in [m.model for m in client.list().models]
        details = client.show(DEFAULT_MODEL).details
        assert details is not None and details.family == "llama"
        assert [m.model for m in client.ps().models] == [DEFAULT_MODEL]
    ai = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    done = ai.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=4,
        temperature=0,
        seed=42,
    )
    assert done.choices[0].message.content
    # only the primary runs models: one runner, however many processes took the requests
    assert len(server.runners()) == 1
    status = httpx.get(server.url + "/status").json()  # whichever process takes it
    assert [(w["index"], w["running"]) for w in status["workers"]] == [(1, True)]
    assert status["workers"][0]["pid"] == workers_of(server)[0].pid

    def counted() -> bool:  # each request once, though a worker passed it on
        return value(scrape(server), "garden_requests_total", model=DEFAULT_MODEL) == 9

    assert wait_until(counted, timeout=10), scrape(server)


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
    make_garden: MakeGarden, tmp_path: Path, openrouter: OpenRouterStub
) -> None:
    server = garden_with(make_garden, tmp_path, openrouter, 3)
    first = wait_for_workers(server, 2)
    first[0].send_signal(signal.SIGKILL)
    first[0].wait(10)
    again = wait_for_workers(server, 2)
    assert first[0].pid not in {p.pid for p in again}
    assert "worker exited; starting it again" in server.logs()
    for _ in range(CONNECTIONS):
        answer = httpx.post(server.url + "/api/chat", json={"model": REMOTE, "messages": HELLO,
                                                            "stream": False})  # fmt: skip
        assert answer.status_code == 200, answer.text
    assert server.stop() == 0
    for proc in again:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE


def test_keys_hold_in_every_process(make_garden: MakeGarden) -> None:
    server = make_garden(GARDEN_WORKERS="2", GARDEN_LOG_LEVEL="info")
    wait_for_workers(server, 1)
    admin = make_key(server, "--name", "root", "--scope", "admin")
    body = {"model": DEFAULT_MODEL, "messages": HELLO, "options": {**GREEDY, "num_predict": 2}}

    def refused_everywhere() -> bool:  # each process re-reads the keys within 5 s
        answers = []
        for _ in range(CONNECTIONS):
            with httpx.Client(base_url=server.url, timeout=60) as client:
                answers.append(client.post("/api/chat", json=body).status_code)
        return set(answers) == {401}

    assert wait_until(refused_everywhere, timeout=15)
    for _ in range(4):
        with httpx.Client(base_url=server.url, timeout=60) as client:
            headers = {"authorization": f"Bearer {admin}"}
            assert client.post("/api/chat", json=body, headers=headers).status_code == 200
            assert client.get("/api/tags").status_code == 401
            assert client.get("/api/tags", headers=headers).status_code == 200


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = clean_env(OLLAMA_HOST=f"127.0.0.1:{port}", GARDEN_MODELS=str(tmp_path / "m"),
                        GARDEN_DEFAULT_MODEL="", GARDEN_WORKERS="2")  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "modelgarden", "serve"], env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Error: cannot listen on 127.0.0.1:"), result.stderr
    assert "Traceback" not in result.stderr


def test_browser_rules_hold_once_in_every_process(make_garden: MakeGarden) -> None:
    server = make_garden(GARDEN_WORKERS="2", OLLAMA_ORIGINS="https://app.example")
    (worker,) = wait_for_workers(server, 1)
    body = {"model": DEFAULT_MODEL, "messages": HELLO, "stream": False,
            "options": {**GREEDY, "num_predict": 2}}  # fmt: skip
    allowed = {"origin": "https://app.example"}
    clients = [httpx.Client(base_url=server.url, timeout=60) for _ in range(CONNECTIONS)]
    try:
        for client in clients:
            for answer in (client.get("/api/tags", headers=allowed),
                           client.post("/api/chat", json=body, headers=allowed)):  # fmt: skip
                assert answer.status_code == 200, answer.text
                # one header, never two (a browser refuses a doubled one)
                assert answer.headers.get_list("access-control-allow-origin") == [
                    "https://app.example"
                ]
            evil = {"origin": "https://evil.example"}
            assert client.post("/api/chat", json=body, headers=evil).status_code == 403
            gone = client.request("DELETE", "/api/delete", json={"model": "x"}, headers=evil)
            assert gone.status_code == 403
        # the worker took every client and passed the primary what it does not answer
        assert serving(server) == {worker.pid}
    finally:
        for client in clients:
            client.close()


def test_workers_stop_when_their_primary_is_killed(
    make_garden: MakeGarden, tmp_path: Path, openrouter: OpenRouterStub
) -> None:
    server = garden_with(make_garden, tmp_path, openrouter, 3)
    workers = wait_for_workers(server, 2)
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"workers outlived their primary: {[p.pid for p in alive]}"
    assert len(gone) == 2
    # each noticed, drained like on SIGTERM, and said so (workers log to the primary's output)
    assert server.logs().count("primary gateway process is gone; stopping") == 2


def test_large_uploads_stream_through_a_worker_to_the_store(make_garden: MakeGarden) -> None:
    server = make_garden(GARDEN_WORKERS="2", GARDEN_DEFAULT_MODEL="")
    wait_for_workers(server, 1)
    for i in range(6):  # some land on the worker, which streams them on (past 1 MiB)
        data = os.urandom(3 << 20)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with httpx.Client(base_url=server.url, timeout=60) as client:
            bad = client.post(f"/api/blobs/sha256:{'0' * 64}", content=data)
            assert bad.status_code == 400, bad.text  # the digest is checked, nothing kept
            assert client.post(f"/api/blobs/{digest}", content=iter([data])).status_code == 201
            assert client.head(f"/api/blobs/{digest}").status_code == 200
        stored = server.models / "blobs" / digest.replace(":", "-")
        assert stored.read_bytes() == data, i


async def _burst(url: str, count: int) -> list[int]:
    """``count`` streamed chat completions at once, each on its own connection."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one() -> int:
            body = {"model": REMOTE, "messages": HELLO, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                text = (await answer.aread()).decode()
                assert text.rstrip().endswith("data: [DONE]"), text[-200:]
                return answer.status_code

        return list(await asyncio.gather(*(one() for _ in range(count))))


def _slow_stream(url: str, out: list[str]) -> None:
    body = {"model": REMOTE, "messages": HELLO, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as answer:
        out.append(answer.read().decode())


def test_a_worker_that_stays_above_its_start_after_a_burst_is_replaced_without_a_gap(
    make_garden: MakeGarden, tmp_path: Path, openrouter: OpenRouterStub
) -> None:
    server = garden_with(
        make_garden, tmp_path, openrouter, 2, GARDEN_WORKER_RECYCLE="0.01",
        GARDEN_SHUTDOWN_GRACE="1",  # a stop would cut a stream after 1 s; a retirement does not
    )  # fmt: skip
    (old,) = wait_for_workers(server, 1)
    assert asyncio.run(_burst(server.url, 200)) == [200] * 200
    failures: list[str] = []
    answered = 0
    slow: list[str] = []
    streaming: list[threading.Thread] = []

    def replaced() -> bool:  # meanwhile, a new connection every poll: none may fail
        nonlocal answered
        try:
            version = httpx.get(server.url + "/api/version", timeout=10)
            answered += version.status_code == 200
        except httpx.HTTPError as exc:
            failures.append(repr(exc))
        if not streaming and "worker asks to be replaced" in server.logs():
            openrouter.word_delay = 1.0  # a 4 s answer, begun on the worker about to go
            streaming.append(threading.Thread(target=_slow_stream, args=(server.url, slow)))
            streaming[0].start()
        return not old.is_running() or old.status() == psutil.STATUS_ZOMBIE

    # The worker settles after the idle clean-ups (35 s quiet), asks, and is replaced.
    assert wait_until(replaced, timeout=90), server.logs()[-3000:]
    assert failures == [] and answered > 100
    streaming[0].join(30)
    assert len(slow) == 1 and slow[0].rstrip().endswith("data: [DONE]"), slow
    events = [json.loads(x[6:]) for x in slow[0].splitlines() if x.startswith("data: {")]
    words = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if "choices" in e)
    assert words.strip() == "Hello from the stand-in." and all("error" not in e for e in events)
    openrouter.word_delay = 0.0
    (new,) = wait_for_workers(server, 1)
    assert new.pid != old.pid
    logs = server.logs()
    assert "worker asks to be replaced" in logs and "worker replaced" in logs
    asked = next(json.loads(x) for x in logs.splitlines() if "worker asks to be replaced" in x)
    assert asked["growth_pct"] > 1.0
    (status,) = httpx.get(server.url + "/status").json()["workers"]
    assert status["pid"] == new.pid and status["replaced"] == 1 and status["running"]
    answer = httpx.post(server.url + "/api/chat", json={"model": REMOTE, "messages": HELLO,
                                                        "stream": False})  # fmt: skip
    assert answer.status_code == 200, answer.text

    def counted() -> bool:
        return value(scrape(server), "garden_requests_total", backend="openrouter") == 202

    assert wait_until(counted, timeout=10), scrape(server)
    assert server.stop() == 0
