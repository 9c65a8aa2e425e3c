"""Relay overhead: the gateway vs a minimal aiohttp relay vs the LiteLLM proxy.

Every column talks to the same stub upstream (``stub_upstream.py``, its own process, which
answers at once), so what is measured is the cost of the hop itself. One run measures:

* ``direct``: the stub itself, ``/api/chat`` and ``/v1/chat/completions``;
* ``minimal relay``: ``minimal_relay.py``, ~40 lines of aiohttp that forward the body and
  stream the answer back, on both paths;
* ``gateway``: ``python -m modelgarden serve`` (one process, and ``--workers N`` for each
  count in ``--gateway-workers``: ``gateway ×N`` columns) with two backends on the stub,
  ``kind = "ollama"`` (an Ollama client's ``/api/chat`` relayed as bytes) and
  ``kind = "openai"`` (``/api/chat`` translated to ``/v1/chat/completions`` and back, and
  ``/v1/chat/completions`` relayed, and Anthropic's ``/v1/messages`` and OpenAI's
  ``/v1/responses`` translated to ``/v1/chat/completions`` and back: the cost of the newer
  families' translation per request and per streamed chunk); ``GET /api/version`` on it is
  the framework's floor;
* ``gateway traced``: the same gateway (``--workers N`` for each count in
  ``--traced-workers``) exporting a trace of every request over OTLP/HTTP to
  ``otlp_sink.py``, a process of its own; the report says how many spans arrived;
* ``litellm``: ``litellm --config ...`` with one ``openai/...`` model on the stub,
  ``/v1/chat/completions``, with 1 worker and with ``--num_workers 2``.

Workloads: non-streamed requests at concurrency 1, 16 and 64 (closed loop, each cell
bounded in time and count: requests/s, p50 and p99 latency, errors) and streamed answers of
``--chunks`` chunks one at a time (time to first body byte, chunks/s over the whole
answer). The load generator is this process: asyncio on uvloop with keep-alive connections
parsed by httptools, cheap enough per request not to hide the servers' costs. Each cell
also records the CPU time the serving processes spent, per request or per chunk.

Rounds are interleaved (every column once per workload per round, in an order rotated each
round) so that machine noise hits every column alike; medians over rounds are reported, and
ratios from the same run.

    .venv/bin/python benchmarks/bench_relay.py --rounds 6 --duration 1.5 --chunks 1000

LiteLLM is found on ``PATH``, next to this interpreter, or at ``--litellm``; it can live in
a virtual environment of its own (``pip install "litellm[proxy]>=1.50"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httptools
import psutil
import uvloop

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
#: LiteLLM refuses to start without a master key; this one never leaves the loopback.
MASTER_KEY = "sk-bench-relay-0123456789abcdef0123456789abcdef"
MESSAGES = [{"role": "user", "content": "Say hello."}]
ANSWER = b"Hello from the stub."
CONCURRENCY = (1, 16, 64)


# -- the columns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One column: a server, a path, and the format the client speaks and reads."""

    name: str
    #: Whose process does the relaying (``stub`` for the direct columns).
    server: str
    path: str
    model: str
    #: ``ollama`` (NDJSON streams), ``openai``, ``anthropic`` or ``responses`` (SSE streams):
    #: what the client speaks and reads.
    family: str
    #: The direct column that asks the stub the same thing (for the added latency).
    baseline: str
    method: str = "POST"
    auth: bool = False
    expect: bytes = ANSWER
    stream: bool = True


D_OLLAMA = "direct /api/chat"
D_OPENAI = "direct /v1/chat/completions"
R_OLLAMA = "minimal relay /api/chat"
R_OPENAI = "minimal relay /v1/chat/completions"
GW_RELAY = "gateway /api/chat → ollama (relay)"
GW_TRANSLATE = "gateway /api/chat → openai (translated)"
GW_V1 = "gateway /v1/chat/completions → openai (relay)"
GW_MESSAGES = "gateway /v1/messages → openai (translated)"
GW_RESPONSES = "gateway /v1/responses → openai (translated)"
GW_VERSION = "gateway GET /api/version (no upstream)"
LITELLM_1 = "litellm /v1/chat/completions, 1 worker"
LITELLM_2 = "litellm /v1/chat/completions, 2 workers"
OLLAMA_CHAT, OPENAI_CHAT = "/api/chat", "/v1/chat/completions"
MESSAGES_PATH, RESPONSES_PATH = "/v1/messages", "/v1/responses"
#: Events of a stream that are not content chunks: OpenAI's [DONE]; Anthropic's
#: message_start, ping, content_block_start/stop, message_delta, message_stop; the
#: Responses created, in_progress, output_item.added/done, content_part.added/done,
#: output_text.done and completed.
FRAME_EVENTS = {"ollama": 0, "openai": 1, "anthropic": 6, "responses": 8}
#: What the last bytes of a whole stream hold, per family.
STREAM_END = {
    "ollama": b'"done":true',
    "openai": b"data: [DONE]\n\n",
    "anthropic": b'"message_stop"}\n\n',
    "responses": b'"output_tokens_details"',
}


def gateway_names(workers: int, traced: bool = False) -> tuple[str, str, str]:
    """The relay, translated and /v1 columns of the gateway run with ``workers`` processes
    (``traced``: exporting a trace of every request)."""
    if workers == 1 and not traced:
        return GW_RELAY, GW_TRANSLATE, GW_V1
    tag = "gateway traced" if traced else "gateway"
    if workers > 1:
        tag += f" ×{workers}"
    return (GW_RELAY.replace("gateway", tag, 1), GW_TRANSLATE.replace("gateway", tag, 1),
            GW_V1.replace("gateway", tag, 1))  # fmt: skip


def family_names(workers: int) -> tuple[str, str]:
    """The /v1/messages and /v1/responses columns of the gateway run with ``workers``."""
    if workers == 1:
        return GW_MESSAGES, GW_RESPONSES
    tag = f"gateway ×{workers}"
    return GW_MESSAGES.replace("gateway", tag, 1), GW_RESPONSES.replace("gateway", tag, 1)


def family_targets(workers: int) -> list[Target]:
    """The newer families' columns: translated to the OpenAI upstream and back."""
    messages, responses = family_names(workers)
    server = gateway_server(workers)
    return [
        Target(messages, server, MESSAGES_PATH, "stub-openai", "anthropic", D_OPENAI),
        Target(responses, server, RESPONSES_PATH, "stub-openai", "responses", D_OPENAI),
    ]


def gateway_server(workers: int, traced: bool = False) -> str:
    name = "gateway-traced" if traced else "gateway"
    return name if workers == 1 else f"{name}-{workers}"


def targets(
    litellm_workers: list[int], gateway_workers: list[int], traced_workers: Sequence[int] = ()
) -> list[Target]:
    found = [
        Target(D_OLLAMA, "stub", OLLAMA_CHAT, "stub", "ollama", D_OLLAMA),
        Target(D_OPENAI, "stub", OPENAI_CHAT, "stub-openai", "openai", D_OPENAI),
        Target(R_OLLAMA, "relay", OLLAMA_CHAT, "stub", "ollama", D_OLLAMA),
        Target(R_OPENAI, "relay", OPENAI_CHAT, "stub-openai", "openai", D_OPENAI),
        Target(GW_RELAY, "gateway", OLLAMA_CHAT, "stub", "ollama", D_OLLAMA),
        Target(GW_TRANSLATE, "gateway", OLLAMA_CHAT, "stub-openai", "ollama", D_OPENAI),
        Target(GW_V1, "gateway", OPENAI_CHAT, "stub-openai", "openai", D_OPENAI),
        Target(
            GW_VERSION, "gateway", "/api/version", "", "ollama", D_OLLAMA, method="GET",
            expect=b'"version"', stream=False,
        ),
        *family_targets(1),
    ]  # fmt: skip
    gateways = [(w, False) for w in gateway_workers if w > 1] + [(w, True) for w in traced_workers]
    for workers, traced in gateways:
        relay, translated, v1 = gateway_names(workers, traced)
        server = gateway_server(workers, traced)
        found += [
            Target(relay, server, OLLAMA_CHAT, "stub", "ollama", D_OLLAMA),
            Target(translated, server, OLLAMA_CHAT, "stub-openai", "ollama", D_OPENAI),
            Target(v1, server, OPENAI_CHAT, "stub-openai", "openai", D_OPENAI),
            *([] if traced else family_targets(workers)),  # tracing is measured on the three
        ]
    for workers in litellm_workers:
        name = LITELLM_1 if workers == 1 else f"litellm /v1/chat/completions, {workers} workers"
        found.append(
            Target(name, f"litellm-{workers}", OPENAI_CHAT, "stub-openai", "openai", D_OPENAI,
                   auth=True)
        )  # fmt: skip
    return found


def http_request(target: Target, port: int, stream: bool, chunks: int) -> bytes:
    """The raw HTTP/1.1 request a column is sent, built once per cell."""
    body = b""
    if target.method == "POST":
        data: dict[str, Any] = {"model": target.model, "messages": MESSAGES, "stream": stream}
        if target.family == "responses":
            data = {"model": target.model, "input": MESSAGES, "stream": stream}
        limit = chunks if stream else 16
        if stream and target.family == "ollama":
            data["options"] = {"num_predict": chunks}
        elif target.family == "anthropic":
            data["max_tokens"] = limit  # required by its API, streamed or not
        elif stream:
            data["max_output_tokens" if target.family == "responses" else "max_tokens"] = limit
        body = json.dumps(data).encode()
    lines = [f"{target.method} {target.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if target.auth:
        lines.append(f"Authorization: Bearer {MASTER_KEY}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# -- the load generator ------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection whose answers httptools parses.

    A non-streamed body is kept whole; a streamed one is only counted (records end with
    ``sep``: one newline for NDJSON, a blank line for SSE) and its last bytes kept.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.done: asyncio.Future[None] | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._reset(True, b"\n")

    def _reset(self, keep: bool, sep: bytes) -> None:
        self.keep, self.sep = keep, sep
        self.status = 0
        self.first = self.end = 0.0
        self.parts: list[bytes] = []
        self.records = 0
        self.last = 0
        self.tail = b""

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    # httptools callbacks
    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if not self.first:
            self.first = time.perf_counter()
        if self.keep:
            self.parts.append(body)
            return
        count = body.count(self.sep)
        if len(self.sep) == 2 and self.last == 10 and body[:1] == b"\n":
            count += 1  # a blank line split between two reads
        self.records += count
        self.last = body[-1]
        self.tail = (self.tail + body)[-512:]

    def on_message_complete(self) -> None:
        self.end = time.perf_counter()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    async def exchange(self, request: bytes, keep: bool, sep: bytes = b"\n") -> None:
        """Send one request and wait for its whole answer."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("connection closed")
        self._reset(keep, sep)
        self.parser = httptools.HttpResponseParser(self)
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        await self.done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> Conn:
    _, conn = await asyncio.get_running_loop().create_connection(Conn, "127.0.0.1", port)
    return conn


@dataclass
class Cell:
    """One workload on one column in one round."""

    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    #: Streamed cells: median time to the first body byte and chunks/s over each answer.
    ttfb_ms: float = 0.0
    chunks_per_s: float = 0.0
    chunks: int = 0
    #: CPU time of the relaying process(es), the stub and the load generator, per request
    #: (streamed cells: per chunk, in microseconds).
    cpu_server: float = 0.0
    cpu_stub: float = 0.0
    cpu_client: float = 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def closed_loop(
    target: Target, port: int, concurrency: int, duration: float, limit: int, per_request: float
) -> Cell:
    """``concurrency`` connections, each sending its next request when the last is answered."""
    request = http_request(target, port, stream=False, chunks=0)
    conns = list(await asyncio.gather(*(connect(port) for _ in range(concurrency))))
    latencies: list[float] = []
    errors = issued = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(conn: Conn) -> None:
        nonlocal errors, issued
        while issued < limit and time.perf_counter() < deadline:
            issued += 1
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(per_request):
                    await conn.exchange(request, keep=True)
            except (OSError, TimeoutError, httptools.HttpParserError):
                errors += 1
                conn.close()
                try:
                    conn = await connect(port)
                except OSError:
                    await asyncio.sleep(0.05)
                continue
            if conn.status != 200 or target.expect not in b"".join(conn.parts):
                errors += 1
                continue
            latencies.append((conn.end - sent) * 1000)
        conn.close()

    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - start
    return Cell(
        requests=len(latencies),
        errors=errors,
        elapsed_s=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
    )


async def streamed(
    target: Target, port: int, chunks: int, duration: float, limit: int, per_request: float
) -> Cell:
    """Streamed answers one after another on one connection."""
    request = http_request(target, port, stream=True, chunks=chunks)
    sse = target.family != "ollama"
    conn = await connect(port)
    ttfb: list[float] = []
    rates: list[float] = []
    errors = received = 0
    start = time.perf_counter()
    while len(rates) + errors < limit and time.perf_counter() < start + duration:
        sent = time.perf_counter()
        try:
            async with asyncio.timeout(per_request):
                await conn.exchange(request, keep=False, sep=b"\n\n" if sse else b"\n")
        except (OSError, TimeoutError, httptools.HttpParserError):
            errors += 1
            conn.close()
            conn = await connect(port)
            continue
        records = conn.records - FRAME_EVENTS[target.family]  # frames that are no chunk
        end = STREAM_END[target.family]
        finished = conn.tail.endswith(end) if target.family == "openai" else end in conn.tail
        if conn.status != 200 or records < chunks or not finished:
            errors += 1
            continue
        received += records
        ttfb.append((conn.first - sent) * 1000)
        rates.append(records / (conn.end - sent))
    conn.close()
    return Cell(
        requests=len(rates),
        errors=errors,
        elapsed_s=time.perf_counter() - start,
        ttfb_ms=statistics.median(ttfb) if ttfb else float("nan"),
        chunks_per_s=statistics.median(rates) if rates else 0.0,
        chunks=received,
    )


# -- the servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> bytes:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return bytes(response.read())


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 120) -> float:  # fmt: skip
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return time.perf_counter() - start
        time.sleep(0.1)
    raise RuntimeError(f"{what} was not ready in {timeout:.0f}s (log: {log})")


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    command: list[str]
    startup_s: float = 0.0
    workers: int = 1
    handle: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.handle = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process and its children (workers) so far."""
        total = 0.0
        for proc in [self.handle, *self.handle.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


def find_litellm(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "litellm"
    return shutil.which("litellm") or (str(beside) if beside.exists() else None)


@contextlib.contextmanager
def servers(args: argparse.Namespace, work: Path) -> Iterator[dict[str, Server]]:
    """Start the stub, the relay, the gateway and LiteLLM; stop them all on the way out."""
    running: dict[str, Server] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GARDEN_", "OLLAMA_"))}

    def launch(name: str, cmd: list[str], extra: dict[str, str], workers: int = 1) -> Server:
        port = int(cmd[cmd.index("--port") + 1]) if "--port" in cmd else int(extra["port"])
        log = work / f"{name}.log"
        child_env = {**env, **{k: v for k, v in extra.items() if k != "port"}}
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, env=child_env, stdout=out, stderr=subprocess.STDOUT)
        server = Server(name, port, proc, cmd, workers=workers)
        running[name] = server
        return server

    try:
        stub_port = free_port()
        stub = launch("stub", [sys.executable, str(HERE / "stub_upstream.py"), "--port",
                               str(stub_port), "--chunks", str(args.chunks)], {})  # fmt: skip
        upstream = f"http://127.0.0.1:{stub_port}"
        stub.startup_s = wait_until(
            lambda: bool(get(f"{upstream}/api/tags")), "stub", stub.proc, work / "stub.log"
        )
        relay_port = free_port()
        launch("relay", [sys.executable, str(HERE / "minimal_relay.py"), "--upstream", upstream,
                         "--port", str(relay_port)], {})  # fmt: skip
        toml = work / "garden.toml"
        toml.write_text(
            'default_model = ""\n\n'
            f'[[backends]]\nname = "stub-ollama"\nkind = "ollama"\nurls = ["{upstream}"]\n\n'
            f'[[backends]]\nname = "stub-openai"\nkind = "openai"\nurls = ["{upstream}/v1"]\n'
        )
        if args.traced_workers:
            sink_port = free_port()
            sink = launch("otlp-sink", [sys.executable, str(HERE / "otlp_sink.py"), "--port",
                                        str(sink_port)], {})  # fmt: skip
            sink.startup_s = wait_until(
                lambda: bool(get(f"http://127.0.0.1:{sink_port}/v1/traces")), "otlp-sink",
                sink.proc, work / "otlp-sink.log",
            )  # fmt: skip
        gateways = [(w, False) for w in args.gateway_workers]
        gateways += [(w, True) for w in args.traced_workers]
        for workers, traced in gateways:
            gw_port = free_port()
            extra = {"GARDEN_WORKERS": str(workers)} if workers > 1 else {}
            if traced:  # every request sampled, exported in batches (the SDK's defaults)
                extra["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{sink_port}"
                extra["OTEL_SERVICE_NAME"] = gateway_server(workers, traced)
            env_gw = {
                "port": str(gw_port),
                "GARDEN_CONFIG": str(toml),
                "OLLAMA_HOST": f"127.0.0.1:{gw_port}",
                "GARDEN_MODELS": str(work / f"models-{gateway_server(workers, traced)}"),
                # info: telemetry fully on (one log line per request, as by default).
                "GARDEN_LOG_LEVEL": args.gateway_log_level,
                "PYTHONPATH": str(args.gateway_src),
                **extra,
            }
            cmd = [sys.executable, "-m", "modelgarden", "serve"]
            launch(gateway_server(workers, traced), cmd, env_gw, workers)
        litellm = find_litellm(args.litellm)
        if args.litellm_workers and litellm is None:
            sys.exit(
                "litellm not found: pip install 'litellm[proxy]>=1.50' (a venv of its own "
                "will do, then --litellm /path/to/bin/litellm), or --litellm-workers ''"
            )
        config = work / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: stub-openai\n"
            "    litellm_params:\n"
            "      model: openai/stub-openai\n"
            f"      api_base: {upstream}/v1\n"
            "      api_key: sk-stub\n"
            "general_settings:\n"
            f"  master_key: {MASTER_KEY}\n"
        )
        for workers in args.litellm_workers:
            assert litellm is not None
            port = free_port()
            cmd = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                   "--num_workers", str(workers)]  # fmt: skip
            launch(f"litellm-{workers}", cmd, {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}, workers)
        for name, server in running.items():
            if name in ("stub", "otlp-sink"):
                continue
            url = f"http://127.0.0.1:{server.port}"
            log = work / f"{name}.log"
            if name.startswith("gateway"):

                def check(url: str = url) -> bool:
                    tags = get(f"{url}/api/tags")
                    return b'"stub:latest"' in tags and b'"stub-openai:latest"' in tags

            elif name.startswith("litellm"):

                def check(url: str = url) -> bool:
                    return bool(get(f"{url}/health/liveliness"))

            else:

                def check(url: str = url) -> bool:
                    return bool(get(f"{url}/v1/models"))

            # every server starts at once: the time is from launch to ready, side by side
            server.startup_s = wait_until(check, name, server.proc, log, args.startup_timeout)
        yield running
    finally:
        for server in running.values():
            server.proc.terminate()
        for server in running.values():
            try:
                server.proc.wait(20)
            except subprocess.TimeoutExpired:
                server.proc.kill()


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Column:
    target: Target
    #: workload name ("c1", "c16", "c64", "stream") -> one cell per round
    cells: dict[str, list[Cell]] = field(default_factory=dict)

    def median(self, workload: str, attr: str) -> float:
        values = [getattr(c, attr) for c in self.cells.get(workload, [])]
        return statistics.median(values) if values else float("nan")

    def errors(self, workload: str) -> int:
        return sum(c.errors for c in self.cells.get(workload, []))


async def measure(
    args: argparse.Namespace, running: dict[str, Server], columns: dict[str, Column]
) -> None:
    stub = running["stub"]
    ports = {name: server.port for name, server in running.items()}
    # Warm every path (pools, imports, first-request caches); nothing here is recorded.
    for col in columns.values():
        port = ports[col.target.server]
        await closed_loop(col.target, port, 16, args.warmup, 2000, args.timeout)
        if col.target.stream:
            await streamed(col.target, port, args.chunks, args.warmup, 5, args.timeout)
    workloads = [f"c{c}" for c in args.concurrency] + ["stream"]
    total = args.rounds * sum(
        1 for w in workloads for col in columns.values() if w != "stream" or col.target.stream
    )
    done = 0
    for round_no in range(args.rounds):
        for workload in workloads:
            names = [n for n, col in columns.items() if workload != "stream" or col.target.stream]
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                target = columns[name].target
                server = running[target.server]
                port = ports[target.server]
                cpu0 = (server.cpu_s(), stub.cpu_s(), time.process_time())
                if workload == "stream":
                    cell = await streamed(
                        target, port, args.chunks, args.duration, args.max_streams, args.timeout
                    )
                    units, scale = max(cell.chunks, 1), 1e6  # µs per chunk
                else:
                    concurrency = int(workload[1:])
                    cell = await closed_loop(
                        target, port, concurrency, args.duration, args.max_requests, args.timeout
                    )
                    units, scale = max(cell.requests, 1), 1e3  # ms per request
                cpu1 = (server.cpu_s(), stub.cpu_s(), time.process_time())
                cell.cpu_server = (cpu1[0] - cpu0[0]) / units * scale  # the stub for direct
                cell.cpu_stub = (cpu1[1] - cpu0[1]) / units * scale
                cell.cpu_client = (cpu1[2] - cpu0[2]) / units * scale
                columns[name].cells.setdefault(workload, []).append(cell)
                done += 1
                await asyncio.sleep(args.gap)
            print(f"[{done}/{total} cells] round {round_no + 1}/{args.rounds}, {workload} done",
                  file=sys.stderr, flush=True)  # fmt: skip


def idle_cpu(running: dict[str, Server], seconds: float = 2.0) -> dict[str, float]:
    """CPU % each server uses while nobody asks it anything (background work)."""
    before = {name: s.cpu_s() for name, s in running.items()}
    time.sleep(seconds)
    return {name: (s.cpu_s() - before[name]) / seconds * 100 for name, s in running.items()}


def version_of(python: str, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except OSError:
        return "?"
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    parser.add_argument("--chunks", type=int, default=1000, help="chunks per streamed answer")
    parser.add_argument("--max-requests", type=int, default=20000, help="per cell")
    parser.add_argument("--max-streams", type=int, default=200, help="per cell")
    parser.add_argument("--timeout", type=float, default=30, help="per request, seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per column")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of quiet between cells")
    parser.add_argument("--litellm", help="the litellm command (default: found on PATH)")
    parser.add_argument(
        "--litellm-workers",
        type=lambda s: [int(w) for w in s.split(",") if w],
        default=[1, 2],
        help="comma-separated worker counts, one LiteLLM proxy each ('' for none)",
    )
    parser.add_argument("--startup-timeout", type=float, default=180)
    parser.add_argument(
        "--gateway-src", type=Path, default=ROOT / "src",
        help="the modelgarden sources the gateway runs (e.g. an older commit's, to compare)",
    )  # fmt: skip
    parser.add_argument("--gateway-log-level", default="info", help="GARDEN_LOG_LEVEL")
    parser.add_argument(
        "--gateway-workers",
        type=lambda s: sorted({int(w) for w in s.split(",") if w}),
        default=[1, 2],
        help="comma-separated process counts (garden serve --workers), one gateway each; "
        "the targets are judged on the one with the most requests/s at the top concurrency",
    )
    parser.add_argument(
        "--traced-workers",
        type=lambda s: sorted({int(w) for w in s.split(",") if w}),
        default=[],
        help="comma-separated process counts of gateways that export a trace of every request "
        "(OTLP/HTTP to benchmarks/otlp_sink.py), measured beside the untraced ones",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "relay.json")
    args = parser.parse_args()

    started = time.time()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, servers(args, Path(tmp)) as run:
        found = targets(args.litellm_workers, args.gateway_workers, args.traced_workers)
        columns = {t.name: Column(t) for t in found}
        idle = idle_cpu(run)
        uvloop.run(measure(args, run, columns))
        exported = traced_counts(run) if args.traced_workers else {}
        litellm = find_litellm(args.litellm)
        litellm_python = str(Path(litellm).resolve().parent / "python") if litellm else ""
        env = {
            "litellm": version_of(litellm_python, "litellm") if litellm else "not run",
            "aiohttp": version_of(sys.executable, "aiohttp"),
            "uvicorn": version_of(sys.executable, "uvicorn"),
            "fastapi": version_of(sys.executable, "fastapi"),
            "uvloop": version_of(sys.executable, "uvloop"),
        }
        procs = {
            name: {"port": s.port, "workers": s.workers, "startup_s": s.startup_s,
                   "command": " ".join(s.command), "idle_cpu_percent": idle[name]}
            for name, s in run.items()
        }  # fmt: skip
    env["loadavg_before"] = " ".join(f"{x:.2f}" for x in load_before)
    env["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if exported:
        env["otlp_exported"] = json.dumps(exported)
    report(columns, args, procs, env, time.time() - started)


#: The batch span processor's default delay between exports (OTEL_BSP_SCHEDULE_DELAY).
SCHEDULE_DELAY_S = 5.0


def traced_counts(running: dict[str, Server]) -> dict[str, Any]:
    """What the traced gateways exported, as the sink counted it, beside the inference
    requests they answered (their ``/metrics``): every request should have its spans."""
    url = f"http://127.0.0.1:{running['otlp-sink'].port}/v1/traces"
    sink, quiet_since = json.loads(get(url)), time.monotonic()
    while time.monotonic() - quiet_since < SCHEDULE_DELAY_S + 1:  # the last batches go out
        time.sleep(0.25)
        now = json.loads(get(url))
        if now["spans"] != sink["spans"]:
            sink, quiet_since = now, time.monotonic()
    answered = 0.0
    for name, server in running.items():
        if name.startswith("gateway-traced"):
            text = get(f"http://127.0.0.1:{server.port}/metrics").decode()
            answered += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("garden_requests_total{")
            )
    return {**sink, "requests_answered": answered}


# -- the report --------------------------------------------------------------------------------


def finite(obj: Any) -> Any:
    """``obj`` with NaN (a cell that measured nothing) as ``null``: JSON has no NaN."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def round_ratios(
    num: Column, den: Column, workload: str, attr: str, diff: bool = False
) -> list[float]:
    """The per-round comparison (same round, so same noise), for a spread next to medians."""
    pairs = zip(num.cells.get(workload, []), den.cells.get(workload, []), strict=False)
    if diff:
        return [getattr(a, attr) - getattr(b, attr) for a, b in pairs]
    return [ratio(getattr(a, attr), getattr(b, attr)) for a, b in pairs]


def best_workers(columns: dict[str, Column], args: argparse.Namespace) -> int:
    """The gateway process count that served the most requests/s at the top concurrency."""
    top = f"c{max(args.concurrency)}"
    rates = {w: columns[gateway_names(w)[0]].median(top, "rps") for w in args.gateway_workers}
    return max(rates, key=lambda w: rates[w] if rates[w] == rates[w] else -1.0)


def targets_met(columns: dict[str, Column], args: argparse.Namespace) -> list[dict[str, Any]]:
    workers = best_workers(columns, args)
    gw, relay, direct = columns[gateway_names(workers)[0]], columns[R_OLLAMA], columns[D_OLLAMA]
    top = f"c{max(args.concurrency)}"
    checks: list[dict[str, Any]] = []

    def check(what: str, value: float, goal: str, met: bool, rounds: list[float]) -> None:
        checks.append({"target": what, "value": value, "goal": goal, "met": met,
                       "per_round": rounds, "gateway_workers": workers})  # fmt: skip

    if "c1" in direct.cells:
        added = gw.median("c1", "p50_ms") - direct.median("c1", "p50_ms")
        check("gateway added p50 latency over direct, concurrency 1 (ms)", added, "<= 0.5",
              added <= 0.5, round_ratios(gw, direct, "c1", "p50_ms", diff=True))  # fmt: skip
    value = ratio(gw.median(top, "rps"), relay.median(top, "rps"))
    check(f"gateway req/s vs minimal relay, {top}", value, ">= 0.70", value >= 0.70,
          round_ratios(gw, relay, top, "rps"))  # fmt: skip
    if LITELLM_1 in columns:
        lite = columns[LITELLM_1]
        value = ratio(gw.median(top, "rps"), lite.median(top, "rps"))
        check(f"gateway req/s vs LiteLLM (1 worker), {top}", value, ">= 20", value >= 20,
              round_ratios(gw, lite, top, "rps"))  # fmt: skip
    value = ratio(gw.median("stream", "chunks_per_s"), relay.median("stream", "chunks_per_s"))
    check("gateway streamed chunks/s vs minimal relay", value, ">= 0.80", value >= 0.80,
          round_ratios(gw, relay, "stream", "chunks_per_s"))  # fmt: skip
    return checks


def report(
    columns: dict[str, Column],
    args: argparse.Namespace,
    procs: dict[str, dict[str, Any]],
    env: dict[str, str],
    wall: float,
) -> None:
    lines = []
    head = f"{'column':<56}"
    for c in args.concurrency:
        head += f" {'c' + str(c) + ' req/s':>11} {'p50':>7} {'p99':>7}"
    lines.append(head + f" {'+p50 c1':>8} {'err':>4} {'CPU ms/req c16':>14}")
    # +p50 c1: added to the p50 of the direct column asked the same of the stub; CPU: of the
    # process that serves the column (the stub itself for the direct ones)
    rows: list[dict[str, Any]] = []
    for col in columns.values():
        base = columns[col.target.baseline]
        line = f"{col.target.name:<56}"
        for c in args.concurrency:
            w = f"c{c}"
            line += (
                f" {col.median(w, 'rps'):>11.0f} {col.median(w, 'p50_ms'):>7.2f}"
                f" {col.median(w, 'p99_ms'):>7.2f}"
            )
        added = float("nan")
        if col.target.method == "POST":  # a GET with no upstream has nothing to compare to
            added = col.median("c1", "p50_ms") - base.median("c1", "p50_ms")
        errors = sum(col.errors(w) for w in col.cells)
        cpu = col.median("c16", "cpu_server") if "c16" in col.cells else float("nan")
        shown = f"{added:>+8.2f}" if added == added else f"{'—':>8}"
        lines.append(line + f" {shown} {errors:>4} {cpu:>14.3f}")
        row: dict[str, Any] = {
            "column": col.target.name, "server": col.target.server,
            "path": col.target.path, "baseline": col.target.baseline,
            "added_p50_ms_c1": added,
            "median": {
                w: {attr: col.median(w, attr) for attr in asdict(Cell()) if attr != "elapsed_s"}
                for w in col.cells
            },
            "errors": {w: col.errors(w) for w in col.cells},
            "rounds": {w: [asdict(c) for c in cells] for w, cells in col.cells.items()},
        }  # fmt: skip
        rows.append(row)
    relay = columns[R_OLLAMA]
    lines.append("")
    lines.append(f"{'streamed, ' + str(args.chunks) + ' chunks':<56} {'TTFB ms':>8} "
                 f"{'chunks/s':>9} {'vs relay':>8} {'err':>4} {'CPU µs/chunk':>12}")  # fmt: skip
    for col in columns.values():
        if not col.target.stream:
            continue
        rate = col.median("stream", "chunks_per_s")
        lines.append(
            f"{col.target.name:<56} {col.median('stream', 'ttfb_ms'):>8.2f} {rate:>9.0f} "
            f"{ratio(rate, relay.median('stream', 'chunks_per_s')):>8.1%} "
            f"{col.errors('stream'):>4} {col.median('stream', 'cpu_server'):>12.2f}"
        )
    checks = targets_met(columns, args)
    lines.append("")
    for chk in checks:
        spread = [v for v in chk["per_round"] if v == v]
        rng = f" (rounds {min(spread):.2f}..{max(spread):.2f})" if spread else ""
        verdict = "MET" if chk["met"] else "NOT MET"
        lines.append(f"{verdict:<8} {chk['target']}: {chk['value']:.2f} (goal {chk['goal']}){rng}")
    lines.append(f"\ngateway processes: {args.gateway_workers} (targets judged on "
                 f"{best_workers(columns, args)}, the most req/s at c{max(args.concurrency)}); "
                 f"litellm workers: {args.litellm_workers}; run took {wall:.0f} s")  # fmt: skip
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "versions": env,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "wall_s": wall,
        "servers": procs,
        "units": {"rps": "requests/s", "p50_ms": "ms", "p99_ms": "ms", "ttfb_ms": "ms",
                  "chunks_per_s": "chunks/s over each whole answer",
                  "cpu_*": "CPU ms per request (non-streamed) or µs per chunk (streamed)"},
        "best_gateway_workers": best_workers(columns, args),
        "targets": checks,
        "columns": rows,
    }), indent=2, ensure_ascii=False))  # fmt: skip


if __name__ == "__main__":
    main()
