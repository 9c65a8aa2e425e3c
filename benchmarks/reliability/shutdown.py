"""Shutdown: SIGTERM with streams in flight, on the local runner and on a remote upstream."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from benchmarks.reliability.faults import COUNTING
from benchmarks.reliability.harness import (
    Result,
    Scale,
    Stream,
    gateway,
    ollama_chat,
    openai_chat,
    port_open,
    read_stream,
    session,
    stub_config,
    stubs,
)
from loopback.gateway import GardenServer

#: Seconds between the stub's records: a model generating 50 tokens a second.
DELAY = 0.02
SHUTTING_DOWN = "server is shutting down"


def shutdown(scale: Scale, work: Path) -> Result:
    grace = scale.grace
    result = Result(
        "shutdown: SIGTERM with streams in flight",
        f"with GARDEN_SHUTDOWN_GRACE={grace:g}: new connections are refused at once; a stream "
        "that ends within the grace period ends normally; those still going at its end get "
        "their API's error record (NDJSON error line; SSE error event then [DONE]), a request "
        "still queued gets a 503 in its API's shape; runners stop; the gateway exits 0",
    )
    with stubs("--delay", str(DELAY)) as stub:
        env = {"GARDEN_CONFIG": stub_config(work, stub.url), "GARDEN_SHUTDOWN_GRACE": str(grace)}
        with gateway(work / "gw", result, **env) as server:
            figures = asyncio.run(_scenario(server, grace))
            exited = figures.pop("exited_s")
            result.check(server.proc.returncode == 0, f"exit status {server.proc.returncode}")
    o = figures
    result.check(o["refused_new_connections"], "the gateway still accepted connections")
    result.check(o["short"] == ("done", ""), f"the short stream: {o['short']}")
    for key in ("long_ollama", "long_openai", "local"):
        result.check(o[key] == ("error", SHUTTING_DOWN), f"{key}: {o[key]}")
    result.check(o["queued"] == (503, SHUTTING_DOWN), f"the queued request: {o['queued']}")
    ended = o["ended_after_s"]
    result.check(grace - 0.2 <= ended <= grace + 1.5, f"streams ended {ended} s after SIGTERM")
    result.check(exited <= grace + 5, f"the gateway took {exited} s to exit")
    result.figures = {**figures, "exited_after_s": exited}
    return result


def _summary(stream: Stream) -> tuple[str, str]:
    return stream.ending, stream.error


async def _scenario(server: GardenServer, grace: float) -> dict[str, Any]:
    short_chunks = max(1, int(grace * 0.4 / DELAY))
    async with session(timeout=60) as http:
        local = asyncio.ensure_future(read_stream(http, server.url + "/api/generate", COUNTING))
        await asyncio.sleep(0.5)  # the runner is loaded and generating
        queued = asyncio.ensure_future(
            http.post(server.url + "/api/generate", json={**COUNTING, "stream": False})
        )
        streams = [
            read_stream(http, server.url + "/api/chat", ollama_chat("stub", short_chunks)),
            read_stream(http, server.url + "/api/chat", ollama_chat("stub", 100_000)),
            read_stream(
                http, server.url + "/v1/chat/completions", openai_chat("stub-openai", 100_000)
            ),
        ]
        running = [asyncio.ensure_future(s) for s in streams]
        await asyncio.sleep(0.5)
        port = int(server.url.rsplit(":", 1)[1])
        began = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        refused = not await asyncio.to_thread(port_open, port)
        short, long_ollama, long_openai = await asyncio.gather(*running)
        ended = time.perf_counter() - began
        local_stream = await local
        response = await queued
        body = await response.json()
    exit_code = await asyncio.to_thread(server.proc.wait, 30)
    return {
        "refused_new_connections": refused,
        "short": _summary(short),
        "short_seconds": round(short.seconds, 2),
        "long_ollama": _summary(long_ollama),
        "long_openai": _summary(long_openai),
        "local": _summary(local_stream),
        "queued": (response.status, body.get("error")),
        "ended_after_s": round(ended, 2),
        "exit_code": exit_code,
        "exited_s": round(time.perf_counter() - began, 2),
    }
