"""What every scenario uses: the scale, checks with figures, real processes on loopback,
stream readers that validate every line, and process sampling.

Processes are real: ``garden serve`` (started as the tests start it), the stub upstream of
``benchmarks/stub_upstream.py`` in its own process, runner processes. After every scenario
no runner process of the scenario's model folders may remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
from loopback.gateway import GardenServer, free_port, runner_processes, start_server

ROOT = Path(__file__).resolve().parents[2]
STUB = ROOT / "benchmarks" / "stub_upstream.py"
#: The documented answer of a full queue (Ollama's own words).
BUSY = "server busy, please try again.  maximum pending requests exceeded"


@dataclass(frozen=True)
class Scale:
    """How much of everything a run does: ``small`` in CI, ``full`` for the record."""

    name: str
    stub_streams: int
    stub_rounds: int
    stub_chunks: int
    model_streams: int
    model_tokens: int
    soak_seconds: float
    grace: float
    #: How far above its start the gateway's resident memory (its processes together) may
    #: stay once settled after the load through relay workers (issue 11 states it for 1,000
    #: streams; at 200 it is recorded, not checked).
    idle_rss_bound: float | None = None


SCALES = {
    "small": Scale("small", 200, 3, 32, 8, 8, 12.0, 2.0),
    "full": Scale("full", 1000, 10, 32, 64, 16, 180.0, 5.0, idle_rss_bound=0.10),
}


@dataclass
class Result:
    """One scenario's outcome: what must hold, the figures measured, what failed."""

    name: str
    claim: str
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def check(self, ok: bool, failure: str) -> bool:
        """Record ``failure`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.failures.append(failure)
        return ok


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Stub:
    """The stub upstream, in a process of its own."""

    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def start_stub(*args: str, port: int | None = None) -> Stub:
    """Start ``stub_upstream.py`` with these options and wait until it answers."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, str(STUB), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stub = Stub(port, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(stub.url + "/api/tags", timeout=1).status_code == 200:
                return stub
        time.sleep(0.05)
    stub.kill()
    raise RuntimeError("the stub upstream did not start")


@contextlib.contextmanager
def stubs(*args: str) -> Iterator[Stub]:
    stub = start_stub(*args)
    try:
        yield stub
    finally:
        stub.kill()


def stub_config(work: Path, upstream: str, **limits: Any) -> str:
    """A garden.toml with the stub as an Ollama backend and as an OpenAI backend."""
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in limits.items())
    text = ""
    for name, kind, url in (
        ("stub-ollama", "ollama", upstream),
        ("stub-openai", "openai", upstream + "/v1"),
    ):
        text += f'[[backends]]\nname = "{name}"\nkind = "{kind}"\nurls = ["{url}"]\n'
        text += f"health_interval = 0\n{extra}\n"
    work.mkdir(parents=True, exist_ok=True)
    path = work / "garden.toml"
    path.write_text(text)
    return str(path)


@contextlib.contextmanager
def gateway(work: Path, result: Result, **settings: str) -> Iterator[GardenServer]:
    """A ``garden serve`` for one scenario; stopped with SIGTERM and checked for orphans."""
    server = start_server(work, **settings)
    try:
        yield server
    finally:
        code = server.stop()
        result.check(code == 0, f"the gateway exited with {code}, not 0")
        check_no_runners(result, server.models)


def check_no_runners(result: Result, models: Path, timeout: float = 10.0) -> None:
    """No runner process of this models folder may outlive its gateway."""
    deadline = time.monotonic() + timeout
    while runner_processes(models) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = runner_processes(models)
    for proc in leftover:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    result.check(not leftover, f"orphaned runner processes: {[p.pid for p in leftover]}")


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@dataclass(frozen=True)
class Sample:
    """A process's resident memory (bytes) and open file descriptors at one moment."""

    rss: int
    fds: int


def sample(pid: int) -> Sample:
    proc = psutil.Process(pid)
    return Sample(proc.memory_info().rss, proc.num_fds())


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- streams -------------------------------------------------------------------------------------


@dataclass
class Stream:
    """One streamed answer as the client saw it: status, records, and how it ended."""

    status: int
    records: list[dict[str, Any]] = field(default_factory=list)
    #: ``done`` (a final record), ``error`` (a final error record), or what was wrong.
    ending: str = ""
    content: str = ""
    error: str = ""
    seconds: float = 0.0


def _ndjson(stream: Stream, raw: bytes) -> None:
    lines = raw.split(b"\n")
    if lines[-1] != b"":
        stream.ending = "no newline after the last record"
        return
    for line in lines[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            stream.ending = f"a line that is not JSON: {line[:80]!r}"
            return
        stream.records.append(record)
    if not stream.records:
        stream.ending = "empty"
        return
    *body, last = stream.records
    if any("error" in r or r.get("done") for r in body):
        stream.ending = "a final or error record before the last line"
    elif "error" in last:
        stream.ending, stream.error = "error", str(last["error"])
    elif last.get("done") is True:
        stream.ending = "done"
    else:
        stream.ending = "cut: the last record is neither done nor an error"
    for r in stream.records:
        stream.content += str((r.get("message") or {}).get("content") or r.get("response") or "")


def _sse(stream: Stream, raw: bytes) -> None:
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if not raw.endswith(b"\n\n") or not events:
        stream.ending = "the stream does not end with a blank line"
        return
    if events[-1].strip() != b"data: [DONE]":
        stream.ending = "cut: no data: [DONE]"
        return
    for event in events[:-1]:
        data = [ln[6:] for ln in event.split(b"\n") if ln.startswith(b"data: ")]
        if len(data) != 1:
            continue  # a comment line
        try:
            stream.records.append(json.loads(data[0]))
        except ValueError:
            stream.ending = f"an event that is not JSON: {event[:80]!r}"
            return
    errors = [r for r in stream.records if "error" in r]
    if errors and errors[0] is not stream.records[-1]:
        stream.ending = "an error event before the last event"
    elif errors:
        stream.ending, stream.error = "error", str(errors[0]["error"].get("message"))
    else:
        stream.ending = "done"
    for r in stream.records:
        for choice in r.get("choices") or []:
            stream.content += str((choice.get("delta") or {}).get("content") or "")


async def read_stream(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], *, stop_after: int = 0
) -> Stream:
    """POST a streaming request and validate every line of the answer (NDJSON or SSE).

    With ``stop_after`` the client disconnects after that many body chunks.
    """
    started = time.perf_counter()
    try:
        async with http.post(url, json=body) as response:
            stream = Stream(response.status)
            if stop_after:
                seen = 0
                async for _ in response.content.iter_any():
                    seen += 1
                    if seen >= stop_after:
                        break
                stream.ending = "left"
                response.close()
                return stream
            raw = await response.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Stream(0, ending=f"transport error: {type(exc).__name__}: {exc}")
    if stream.status != 200:
        stream.ending = "refused"
        with contextlib.suppress(ValueError):
            err = json.loads(raw)["error"]
            stream.error = str(err["message"] if isinstance(err, dict) else err)
    elif response.content_type == "text/event-stream":
        _sse(stream, raw)
    else:
        _ndjson(stream, raw)
    stream.seconds = time.perf_counter() - started
    return stream


def ollama_chat(model: str, tokens: int, prompt: str = "Say hello.") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"num_predict": tokens, "temperature": 0, "seed": 42},
    }


def openai_chat(model: str, tokens: int, prompt: str = "Say hello.") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0,
        "seed": 42,
        "stream": True,
    }


def session(limit: int = 0, timeout: float = 120.0) -> aiohttp.ClientSession:
    """One client for many concurrent streams (no connection limit)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout),
    )


def run(coro: Any) -> Any:
    """Run a coroutine on a fresh event loop."""
    return asyncio.run(coro)


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def mib(n: float) -> float:
    return round(n / (1 << 20), 1)
