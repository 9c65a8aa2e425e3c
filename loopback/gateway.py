"""A real ``garden serve`` process on a free loopback port, and what tests and benchmarks
ask of it (its metrics, its runner processes, a clean stop).

Every server gets its own models folder and is stopped with SIGTERM; afterwards no runner
process of that folder may remain (:func:`stop_and_check`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

DEFAULT_MODEL = "smollm2:135m"


class Sampling(TypedDict):
    """Sampling options that every family's client takes (as Ollama options or as keywords
    of the OpenAI client's ``create``)."""

    temperature: float
    seed: int


#: Deterministic sampling for every test that generates text.
GREEDY: Sampling = {"temperature": 0, "seed": 42}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def runner_processes(models_dir: Path) -> list[psutil.Process]:
    """Runner processes serving a model from this models folder."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "modelgarden.runner" in cmd and any(str(models_dir) in part for part in cmd):
            found.append(proc)
    return found


@dataclass
class GardenServer:
    """A running ``garden serve`` process."""

    url: str
    host: str
    models: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def runners(self) -> list[psutil.Process]:
        return runner_processes(self.models)

    def queue_depth(self, backend: str = "local") -> float:
        """``garden_queue_depth`` for ``backend``: requests waiting for a slot now."""
        return value(scrape(self), "garden_queue_depth", backend=backend)

    def wait_queue(self, depth: int, timeout: float = 30.0) -> None:
        """Wait until exactly ``depth`` requests wait in the local queue (not a guessed sleep)."""
        deadline = time.monotonic() + timeout
        while (now := self.queue_depth()) != depth:
            assert time.monotonic() < deadline, f"the queue stayed at {now:g}, not {depth}"
            time.sleep(0.05)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: GardenServer) -> Samples:
    """Every sample of the server's ``/metrics``, parsed with prometheus_client's parser."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(
        v for (n, lbls), v in samples.items() if n == name and set(labels.items()) <= set(lbls)
    )


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Whether ``check`` comes true within ``timeout`` seconds (asked every 0.1 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def clean_env(**extra: str) -> dict[str, str]:
    """The test environment without the caller's GARDEN_*/OLLAMA_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GARDEN_", "OLLAMA_"))}
    env.update(extra)
    return env


def start_server(root: Path, *, bind: str = "127.0.0.1", **settings: str) -> GardenServer:
    """Start ``python -m modelgarden serve`` and wait until it answers.

    ``bind`` is the address it listens on; it is always reached through 127.0.0.1.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    models = Path(settings.pop("GARDEN_MODELS", str(root / "models")))
    env = clean_env(
        OLLAMA_HOST=f"{bind}:{port}", GARDEN_MODELS=str(models), GARDEN_LOG_LEVEL="debug"
    )
    env.update(settings)
    log = root / f"garden-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelgarden", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=root,
        )
    server = GardenServer(f"http://127.0.0.1:{port}", f"127.0.0.1:{port}", models, proc, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"garden serve exited with {proc.returncode}:\n{server.logs()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"garden serve did not answer within 60s:\n{server.logs()}")


def stop_and_check(server: GardenServer) -> None:
    """Stop the server and check that it left no runner behind."""
    server.stop()
    deadline = time.monotonic() + 10
    while server.runners() and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = server.runners()
    for proc in leftover:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    assert not leftover, f"orphaned runner processes: {[p.pid for p in leftover]}"
