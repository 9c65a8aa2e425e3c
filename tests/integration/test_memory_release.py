"""The idle clean-up of a real gateway (memory_release.py): never while a request
is in flight, once the gateway has been quiet for its quiet period after one, and counted
in ``/metrics``. The upstream is the stub of ``benchmarks/stub_upstream.py``, streaming
slowly enough that the request stays in flight for longer than the quiet period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from benchmarks.reliability.harness import ollama_chat, stub_config, stubs

from modelgarden.memory_release import QUIET, TICK
from tests.conftest import GardenServer, scrape, value

#: 40 records 0.2 s apart: 8 s in flight, longer than the quiet period.
CHUNKS, DELAY = 40, 0.2


def releases(server: GardenServer) -> float:
    return value(scrape(server), "garden_memory_releases_total")


def test_clean_up_waits_for_quiet_and_never_runs_mid_request(
    make_garden: Callable[..., GardenServer], tmp_path: Path
) -> None:
    with stubs("--chunks", str(CHUNKS), "--delay", str(DELAY)) as stub:
        server = make_garden(GARDEN_CONFIG=stub_config(tmp_path, stub.url), GARDEN_DEFAULT_MODEL="")
        ended: list[float] = []
        lines: list[str] = []

        def stream() -> None:
            body = ollama_chat("stub", CHUNKS)
            with httpx.stream("POST", server.url + "/api/chat", json=body, timeout=60) as r:
                lines.extend(r.iter_lines())
            ended.append(time.monotonic())

        client = threading.Thread(target=stream)
        began = time.monotonic()
        client.start()
        during = []
        while client.is_alive():
            during.append(releases(server))  # /metrics is not an inference request
            time.sleep(0.25)
        client.join()
        assert len(lines) == CHUNKS + 1 and '"done":true' in lines[-1].replace(" ", "")
        assert ended[0] - began >= QUIET + 2 * TICK  # in flight past the quiet period ...
        assert set(during) == {0}  # ... and no clean-up meanwhile
        while releases(server) < 1 and time.monotonic() < ended[0] + QUIET + 5 * TICK:
            time.sleep(0.1)
        quiet = time.monotonic() - ended[0]
        assert releases(server) == 1, f"no clean-up {quiet:.1f} s after the request"
        assert QUIET - TICK <= quiet <= QUIET + 3 * TICK
        assert "memory released" in server.logs()
