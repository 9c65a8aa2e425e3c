"""The GPU side of the ``modal`` backend kind: the model server inside one GPU container.

``deploy/modal_app.py``'s ``OllamaBackend`` class is a thin shell over :class:`ModelServer`:
its ``@modal.enter`` hook calls :meth:`ModelServer.start` and :meth:`ModelServer.prepare`,
its ``proxy`` and ``stream`` methods call the methods of the same names. The server is any
program that speaks the Ollama API (``ollama serve`` in the deployment, ``garden serve`` in
the tests); it is told where to listen and where the models are through the ``OLLAMA_*``
variables that both read.

What crosses the Modal boundary is plain data, so that nothing but bytes, strings and
numbers is pickled between the gateway and the container:

- a call: ``{"method": str, "path": str, "headers": {str: str}, "body": bytes | None}``,
  ``path`` being the server's path with its query (``/api/tags``, ``/v1/models?x=1``);
- ``proxy`` answers ``{"status": int, "headers": {str: str}, "body": bytes}``;
- ``stream`` yields ``{"status": int, "headers": {str: str}}`` first, then ``bytes`` chunks
  as the server writes them.

This module runs in the container with ``httpx``'s blocking client: Modal runs each input of
a synchronous method on its own thread (``@modal.concurrent``), and Modal's ``.local()``
runs the ``@modal.enter`` hooks only for synchronous methods.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from modelgarden.errors import InvalidModelName
from modelgarden.store.names import normalize
from modelgarden.upstream_http import HOP_BY_HOP

#: The Ollama server's own default port; the container has nothing else listening.
DEFAULT_PORT = 11434


def free_port() -> int:
    """A port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def same_model(a: str, b: str) -> bool:
    """Whether two names denote one model (``glm`` is ``glm:latest``)."""
    try:
        return normalize(a) == normalize(b)
    except InvalidModelName:
        return a == b


def clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers without the hop-by-hop ones, which belong to each connection."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


class ModelServer:
    """Owns the model server process of one GPU container: starting it, waiting for its port,
    pulling the models the volume lacks, relaying calls to it, and stopping it."""

    def __init__(
        self,
        command: str,
        models_dir: Path,
        *,
        port: int | None = None,
        parallel: int = 1,
        start_timeout: float = 120.0,
    ) -> None:
        self.argv = shlex.split(command)
        self.models_dir = models_dir
        self.port = port or free_port()
        self.parallel = parallel
        self.start_timeout = start_timeout
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self.client = httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0, read=None))

    def env(self) -> dict[str, str]:
        """The server's environment: address, models folder, models loaded for good (the
        container's scale-down is what unloads them), and parallel slots."""
        address = f"127.0.0.1:{self.port}"
        settings = {
            "OLLAMA_HOST": address,
            "OLLAMA_MODELS": str(self.models_dir),
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_NUM_PARALLEL": str(self.parallel),
        }
        # garden serve reads GARDEN_* before OLLAMA_*: set both, so neither name leaks in.
        garden = {"GARDEN_" + k.removeprefix("OLLAMA_"): v for k, v in settings.items()}
        return {**os.environ, **settings, **garden}

    def start(self) -> None:
        """Start the server and return once its port answers (never a fixed sleep)."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.argv, env=self.env(), stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"model server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/api/version", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"model server did not answer within {self.start_timeout:.0f}s")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the server's output, for error messages."""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - size))
        return self._log.read().decode(errors="replace").strip()

    def missing(self, wanted: list[str]) -> list[str]:
        """The wanted models the server (its models folder, the volume) does not hold."""
        response = self.client.get("/api/tags")
        response.raise_for_status()
        held = [m.get("name") or m.get("model") or "" for m in response.json().get("models", [])]
        return [w for w in wanted if not any(same_model(w, h) for h in held)]

    def pull(self, model: str) -> None:
        """Pull one model into the models folder; raises with the server's message."""
        response = self.client.post(
            "/api/pull", json={"model": model, "stream": False}, timeout=None
        )
        if response.status_code != 200:
            raise RuntimeError(f"pull of {model} failed: {response.text.strip()[:500]}")

    def prepare(self, wanted: list[str]) -> list[str]:
        """Pull every wanted model the volume lacks; returns those pulled."""
        pulled = self.missing(wanted)
        for model in pulled:
            self.pull(model)
        return pulled

    def stop(self) -> None:
        """Stop the server: SIGTERM, then SIGKILL after a grace period."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()

    # -- calls from the gateway ----------------------------------------------------------

    def _request(self, call: Mapping[str, Any]) -> httpx.Request:
        return self.client.build_request(
            str(call["method"]),
            str(call["path"]),
            headers=clean_headers(call.get("headers") or {}),
            content=call.get("body"),
        )

    def proxy(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """One whole request: status, headers and body."""
        response = self.client.send(self._request(call))
        return {
            "status": response.status_code,
            "headers": clean_headers(response.headers),
            "body": response.content,
        }

    def stream(self, call: Mapping[str, Any]) -> Iterator[dict[str, Any] | bytes]:
        """The answer's status and headers, then its bytes as they come. Closing the
        generator closes the connection, which stops the generation on the server."""
        response = self.client.send(self._request(call), stream=True)
        try:
            yield {"status": response.status_code, "headers": clean_headers(response.headers)}
            yield from response.iter_raw()
        finally:
            response.close()
