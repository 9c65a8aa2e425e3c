"""Faults: a runner or an upstream killed mid-stream, an upstream that never answers, a
client that leaves mid-stream, the disk filling up during a pull, and the gateway itself
killed during a pull and restarted."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import ollama
from benchmarks.reliability.harness import (
    Result,
    Scale,
    gateway,
    kill,
    ollama_chat,
    openai_chat,
    read_stream,
    session,
    start_stub,
    stub_config,
    wait_until,
)
from loopback.gateway import DEFAULT_MODEL, GardenServer

COUNTING = {
    "model": DEFAULT_MODEL,
    "prompt": "Count from 1 to 1000: 1, 2, 3,",
    "raw": True,
    "options": {"temperature": 0, "seed": 42, "num_predict": 3000, "repeat_penalty": 1.0},
}
SHORT = {"temperature": 0, "seed": 42, "num_predict": 2}


def stream_with(
    server: GardenServer, body: dict[str, Any], after: int, act: Callable[[], None]
) -> tuple[list[dict[str, Any]], float]:
    """Stream ``/api/generate``, call ``act`` after ``after`` records; the records, and the
    seconds from ``act`` to the end of the stream."""
    records: list[dict[str, Any]] = []
    acted = 0.0
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        for line in response.iter_lines():
            if line:
                records.append(json.loads(line))
            if len(records) == after:
                acted = time.perf_counter()
                act()
    return records, time.perf_counter() - acted


def runner_killed(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: runner SIGKILLed mid-generation",
        "the stream ends with an error record and no done record; the next request gets a "
        "fresh runner and answers",
    )
    with gateway(work, result) as server:
        victims: list[int] = []

        def kill_runner() -> None:
            victims.extend(p.pid for p in server.runners())
            for pid in victims:
                kill(pid)

        records, ended = stream_with(server, COUNTING, 5, kill_runner)
        began = time.perf_counter()
        reply = ollama.Client(host=server.url, timeout=60).generate(
            DEFAULT_MODEL, "1, 2,", raw=True, options=SHORT
        )
        recovered = time.perf_counter() - began
        result.check(len(victims) == 1, f"expected one runner to kill, found {victims}")
        last = records[-1]
        result.check("error" in last and not last.get("done"), f"last record: {last}")
        result.check(bool(reply.done and reply.response), "the next request did not answer")
        result.check([p.pid for p in server.runners()] != victims, "the dead runner is listed")
    result.figures = {
        "records_before_error": len(records) - 1,
        "error": last.get("error"),
        "error_after_kill_ms": round(ended * 1000, 1),
        "next_answer_with_a_new_runner_s": round(recovered, 2),
    }
    return result


def client_leaves(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: client disconnects mid-stream",
        "the generation stops and the slot is free at once: the runner goes idle, the next "
        "request (single slot) answers in under 5 s; a stub stream's upstream slot is freed",
    )
    stub = start_stub("--chunks", "2000", "--delay", "0.01")
    try:
        env = {"GARDEN_CONFIG": stub_config(work, stub.url, max_concurrency=1, max_queue=0)}
        with gateway(work / "gw", result, **env) as server:
            with httpx.stream("POST", server.url + "/api/generate", json=COUNTING, timeout=60) as r:
                for i, _ in enumerate(r.iter_lines()):
                    if i == 3:
                        break
            began = time.perf_counter()
            reply = ollama.Client(host=server.url, timeout=30).generate(
                DEFAULT_MODEL, "1,", raw=True, options={**SHORT, "num_predict": 1}
            )
            freed = time.perf_counter() - began
            (runner,) = server.runners()
            cpu = runner.cpu_percent(interval=0.5)
            result.check(reply.done is True and freed < 5, f"next answer took {freed:.1f} s")
            result.check(cpu < 50, f"the runner still works after the client left ({cpu}%)")
            # a remote backend with one slot: the slot must come back after each client leaves
            statuses = asyncio.run(_leave_remote(server))
            result.check(
                statuses == [200] * len(statuses),
                f"the remote slot was not freed after clients left: {statuses}",
            )
    finally:
        stub.kill()
    result.figures = {
        "next_local_answer_s": round(freed, 2),
        "runner_cpu_after_leave_pct": cpu,
        "remote_leave_then_request_statuses": statuses,
    }
    return result


async def _leave_remote(server: GardenServer) -> list[int]:
    statuses = []
    async with session(timeout=30) as http:
        for _ in range(5):
            await read_stream(
                http, server.url + "/api/chat", ollama_chat("stub", 2000), stop_after=2
            )
            await asyncio.sleep(0.2)
            s = await read_stream(http, server.url + "/api/chat", ollama_chat("stub", 2))
            statuses.append(s.status)
    return statuses


def upstream_killed(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: upstream killed mid-stream",
        "streams in both families end with their API's error record; while it is down a "
        "request gets a clean 502 in its API's shape; once it is back requests succeed",
    )
    stub = start_stub("--chunks", "2000", "--delay", "0.01")
    port = stub.port
    try:
        env = {"GARDEN_CONFIG": stub_config(work, stub.url, retries=0, breaker_cooldown=1)}
        with gateway(work / "gw", result, **env) as server:
            figures = asyncio.run(_kill_mid_stream(server, stub.kill))
            down = httpx.post(
                server.url + "/api/chat", json={**ollama_chat("stub", 2), "stream": False}
            )
            down_v1 = httpx.post(
                server.url + "/v1/chat/completions",
                json={**openai_chat("stub-openai", 2), "stream": False},
            )
            stub = start_stub("--chunks", "4", port=port)
            began = time.perf_counter()
            back = wait_until(
                lambda: (
                    httpx.post(server.url + "/api/chat", json=ollama_chat("stub", 2)).status_code
                    == 200
                ),
                timeout=15,
            )
            recovered = time.perf_counter() - began
    finally:
        stub.kill()
    for family in ("ollama", "openai"):
        result.check(
            figures[f"{family}_ending"] == "error",
            f"{family} stream: {figures[f'{family}_ending']}",
        )
    result.check(
        down.status_code == 502 and isinstance(down.json().get("error"), str),
        f"down: {down.status_code} {down.text[:200]}",
    )
    result.check(
        down_v1.status_code == 502 and "message" in down_v1.json().get("error", {}),
        f"down /v1: {down_v1.status_code} {down_v1.text[:200]}",
    )
    result.check(back, "requests did not succeed after the upstream came back")
    result.figures = {
        **figures,
        "while_down": [down.status_code, down_v1.status_code],
        "recovered_in_s": round(recovered, 2),
    }
    return result


async def _kill_mid_stream(server: GardenServer, kill_stub: Callable[[], None]) -> dict[str, Any]:
    async with session(timeout=30) as http:
        jobs = [
            asyncio.ensure_future(
                read_stream(http, server.url + "/api/chat", ollama_chat("stub", 2000))
            ),
            asyncio.ensure_future(
                read_stream(
                    http, server.url + "/v1/chat/completions", openai_chat("stub-openai", 2000)
                )
            ),
        ]
        await asyncio.sleep(0.5)
        killed = time.perf_counter()
        await asyncio.to_thread(kill_stub)
        o, a = await asyncio.gather(*jobs)
    return {
        "ollama_ending": o.ending,
        "ollama_error": o.error,
        "openai_ending": a.ending,
        "openai_error": a.error,
        "records_before_kill": [len(o.records), len(a.records)],
        "error_after_kill_ms": round((time.perf_counter() - killed) * 1000, 1),
    }


@contextmanager
def silent_upstream() -> Iterator[str]:
    """A server that accepts connections and reads, and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()


def upstream_silent(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: upstream accepts and never answers; upstream stalls mid-stream",
        "a silent upstream costs the client its first_byte timeout, then a 502 in its API's "
        "shape; one that stalls mid-stream ends the stream with an error record after its "
        "idle timeout; the gateway answers other requests meanwhile",
    )
    stall = start_stub("--chunks", "100", "--stall-after", "3")
    try:
        with silent_upstream() as silent:
            toml = (
                f'[[backends]]\nname = "silent"\nkind = "ollama"\nurls = ["{silent}"]\n'
                'models = ["quiet"]\nretries = 0\nhealth_interval = 0\n'
                "timeouts = { first_byte = 1.5 }\n\n"
                f'[[backends]]\nname = "stalls"\nkind = "openai"\nurls = ["{stall.url}/v1"]\n'
                "retries = 0\nhealth_interval = 0\ntimeouts = { idle = 1.5 }\n"
            )
            (work / "gw").mkdir(parents=True, exist_ok=True)
            (work / "gw" / "garden.toml").write_text(toml)
            env = {"GARDEN_CONFIG": str(work / "gw" / "garden.toml"), "GARDEN_DEFAULT_MODEL": ""}
            with gateway(work / "gw", result, **env) as server:
                figures = asyncio.run(_silent(server))
    finally:
        stall.kill()
    result.check(
        figures["ollama_status"] == 502 and figures["ollama_shape"], f"silent (ollama): {figures}"
    )
    result.check(
        figures["openai_status"] == 502 and figures["openai_shape"], f"silent (openai): {figures}"
    )
    result.check(
        figures["silent_wait_s"] < 5,
        f"the silent upstream held the client {figures['silent_wait_s']} s",
    )
    result.check(figures["stall_ending"] == "error", f"stalled stream: {figures['stall_ending']}")
    result.check(figures["version_p99_ms"] < 500, "the gateway was slow to answer meanwhile")
    result.figures = figures
    return result


async def _silent(server: GardenServer) -> dict[str, Any]:
    async with session(timeout=30) as http:
        began = time.perf_counter()
        waits = [
            http.post(server.url + "/api/chat", json={**ollama_chat("quiet", 2), "stream": False}),
            http.post(
                server.url + "/v1/chat/completions",
                json={**openai_chat("quiet", 2), "stream": False},
            ),
        ]
        stalled = asyncio.ensure_future(
            read_stream(http, server.url + "/api/chat", ollama_chat("stub-openai", 100))
        )
        pings = []
        for _ in range(10):
            t = time.perf_counter()
            async with http.get(server.url + "/api/version") as r:
                await r.read()
            pings.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
        o_resp, a_resp = await asyncio.gather(*waits)
        o_body, a_body = await o_resp.json(), await a_resp.json()
        waited = time.perf_counter() - began
        s = await stalled
    return {
        "ollama_status": o_resp.status,
        "ollama_shape": isinstance(o_body.get("error"), str),
        "openai_status": a_resp.status,
        "openai_shape": isinstance(a_body.get("error"), dict) and "message" in a_body["error"],
        "silent_error": o_body.get("error"),
        "silent_wait_s": round(waited, 2),
        "stall_ending": s.ending,
        "stall_error": s.error,
        "version_p99_ms": round(max(pings) * 1000, 1),
    }
