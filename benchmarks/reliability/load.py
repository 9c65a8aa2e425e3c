"""Load and soak: many concurrent streams through the gateway, with memory and descriptors
sampled between rounds and once the gateway is idle again (load: after the idle clean-ups
of ``memory_release.py``, read from its ``/metrics``) or every second (soak)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ollama
import openai
from benchmarks.reliability.harness import (
    BUSY,
    Result,
    Sample,
    Scale,
    Stream,
    gateway,
    mib,
    ollama_chat,
    openai_chat,
    raise_fd_limit,
    read_stream,
    sample,
    session,
    stub_config,
    stubs,
)
from loopback.gateway import DEFAULT_MODEL, GardenServer, scrape
from openai.types.chat import ChatCompletionMessageParam

from modelgarden.memory_release import PASSES

#: Headroom of the remote backends in the load scenario: every stream is admitted.
LIMITS = {"max_concurrency": 2048, "max_queue": 2048}
SETTLE = 1.0
RELEASES = "garden_memory_releases_total"
#: How far above its start the count of live allocations may stay once idle after the load
#: (measured: +0.5% at 600 streams, +0.7% at 10,000; a leak of one block per stream is
#: more than 2% at the full scale).
LIVE_BOUND = 0.02


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _judge_streams(result: Result, streams: list[Stream], chunks: int) -> dict[str, int]:
    """Count outcomes; anything but a whole stream or a documented 503 is a failure."""
    counts = {"ok": 0, "busy_503": 0, "bad": 0}
    for stream in streams:
        whole = stream.status == 200 and stream.ending == "done"
        # Ollama: `chunks` content records and a final one; OpenAI: a role chunk, `chunks`
        # content chunks and a final one with usage.
        if whole and len(stream.records) in (chunks + 1, chunks + 2):
            counts["ok"] += 1
        elif stream.status == 503 and stream.error == BUSY:
            counts["busy_503"] += 1
        else:
            counts["bad"] += 1
            if counts["bad"] <= 3:
                result.failures.append(
                    f"stream {stream.status} {stream.ending!r} {stream.error!r} "
                    f"({len(stream.records)} records)"
                )
    return counts


async def run_round(server: GardenServer, streams: int, chunks: int) -> list[Stream]:
    async with session() as http:
        jobs = []
        for i in range(streams):
            if i % 2:
                url, body = server.url + "/v1/chat/completions", openai_chat("stub-openai", chunks)
            else:
                url, body = server.url + "/api/chat", ollama_chat("stub", chunks)
            jobs.append(read_stream(http, url, body))
        return list(await asyncio.gather(*jobs))


@dataclass
class Rounds:
    """What the clients saw over the rounds of a stub load, and a sample after each."""

    walls: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: {"ok": 0, "busy_503": 0, "bad": 0})
    samples: list[Sample] = field(default_factory=list)

    def whole(self, scale: Scale) -> bool:
        """Every stream whole or a documented 503."""
        ok = self.totals["ok"] + self.totals["busy_503"]
        return ok == scale.stub_streams * scale.stub_rounds

    def figures(self, scale: Scale) -> dict[str, Any]:
        n, wall = scale.stub_streams, statistics.median(self.walls)
        return {
            "streams": n * scale.stub_rounds,
            **self.totals,
            "round_s_median": round(wall, 2),
            "streams_per_s": round(n / wall, 1),
            "chunks_per_s": round(n * scale.stub_chunks / wall),
            "stream_p50_ms": round(_percentile(self.latencies, 0.5) * 1000, 1),
            "stream_p99_ms": round(_percentile(self.latencies, 0.99) * 1000, 1),
        }


def run_rounds(
    server: GardenServer, scale: Scale, result: Result, measure: Callable[[], Sample]
) -> Rounds:
    """The stub load's rounds of concurrent streams, judged; ``measure`` after each."""
    n, chunks, out = scale.stub_streams, scale.stub_chunks, Rounds()
    for _ in range(scale.stub_rounds):
        began = time.perf_counter()
        streams = asyncio.run(run_round(server, n, chunks))
        out.walls.append(time.perf_counter() - began)
        out.latencies += [s.seconds for s in streams if s.seconds]
        for key, value in _judge_streams(result, streams, chunks).items():
            out.totals[key] += value
        time.sleep(SETTLE)
        out.samples.append(measure())
    return out


def memory_figures(server: GardenServer) -> dict[str, float]:
    """The gateway's ``garden_memory_*`` figures from its ``/metrics``."""
    return {name: v for (name, _), v in scrape(server).items() if name.startswith("garden_memory_")}


def _settle(server: GardenServer, releases: float) -> float:
    """Wait (bounded) until the gateway has run every clean-up of the idle period after the
    load; returns the seconds waited."""
    began = time.monotonic()
    deadline = began + PASSES[-1] + 10
    while time.monotonic() < deadline:
        if memory_figures(server)[RELEASES] >= releases + len(PASSES):
            break
        time.sleep(1.0)
    return time.monotonic() - began


@dataclass
class _Load:
    """What the load scenario measured of the gateway: before, per round, once idle."""

    start: Sample
    start_memory: dict[str, float]
    rounds: list[Sample] = field(default_factory=list)
    loaded_memory: dict[str, float] = field(default_factory=dict)
    idle: Sample = field(default_factory=lambda: Sample(0, 0))
    idle_memory: dict[str, float] = field(default_factory=dict)
    settle_s: float = 0.0

    def figures(self) -> dict[str, Any]:
        blocks = "garden_memory_allocated_blocks"
        return {
            "rss_start_mib": mib(self.start.rss),
            "rss_per_round_mib": [mib(s.rss) for s in self.rounds],
            "rss_idle_mib": mib(self.idle.rss),
            "rss_idle_vs_start_pct": round((self.idle.rss / self.start.rss - 1) * 100, 1),
            "released_mib": mib(self.idle_memory["garden_memory_released_bytes_total"]),
            "settle_s": round(self.settle_s, 1),
            "allocated_blocks_start": int(self.start_memory[blocks]),
            "allocated_blocks_after_load": int(self.loaded_memory[blocks]),
            "allocated_blocks_idle": int(self.idle_memory[blocks]),
            "fds_start": self.start.fds,
            "fds_per_round": [s.fds for s in self.rounds],
            "fds_idle": self.idle.fds,
        }

    def judge(self, result: Result, streams: int) -> None:
        """No growth over the rounds; once idle, live allocations and descriptors back.

        Between rounds the upstream pool keeps up to one idle connection per concurrent
        stream (for 15 s), and it may take more than one round to fill: descriptors are
        judged against that bound and against the highest count of the rounds before the
        last, so a pool still filling passes and a leak (growth every round) does not."""
        first, last, start, idle = self.rounds[0], self.rounds[-1], self.start, self.idle
        result.check(
            last.rss <= first.rss * 1.10,
            f"memory grew over the rounds: {mib(first.rss)} MiB -> {mib(last.rss)} MiB",
        )
        before = max(s.fds for s in self.rounds[:-1]) if len(self.rounds) > 1 else first.fds
        result.check(
            last.fds <= before + 16,
            f"open descriptors grew over the rounds: {before} -> {last.fds}",
        )
        most = max(s.fds for s in self.rounds)
        result.check(
            most <= start.fds + streams + 16,
            f"open descriptors above the pool's bound: {most} > {start.fds} + {streams} streams",
        )
        ran = self.idle_memory[RELEASES] - self.loaded_memory[RELEASES]
        result.check(ran >= len(PASSES), f"{ran:.0f} idle clean-ups ran in {self.settle_s:.0f} s")
        blocks, idle_blocks = (
            m["garden_memory_allocated_blocks"] for m in (self.start_memory, self.idle_memory)
        )
        result.check(
            idle_blocks <= blocks * (1 + LIVE_BOUND),
            f"live allocations not back once idle: {blocks:.0f} -> {idle_blocks:.0f} blocks",
        )
        result.check(
            idle.fds <= start.fds + 16,
            f"descriptors not back once idle: {start.fds} -> {idle.fds}",
        )


def load_stub(scale: Scale, work: Path) -> Result:
    """Scenario 1a."""
    n, rounds, chunks = scale.stub_streams, scale.stub_rounds, scale.stub_chunks
    result = Result(
        "load: streams to a stub",
        f"{n} concurrent streams ({chunks} chunks each, half Ollama relayed, half OpenAI "
        f"relayed) x {rounds} rounds: no error but documented 503s, every stream whole to "
        "its last line; no growth over the rounds (memory after the last round within 10% "
        "of after the first; descriptors at most one pooled upstream connection per stream "
        "and the last round no higher than those before it); once idle after the load, the "
        f"gateway's live allocations within {LIVE_BOUND:.0%} of its start and its descriptors back "
        "(its resident memory is recorded: one process keeps a burst's small-object arenas; "
        "load_workers checks the gateway's return to its start)",
    )
    raise_fd_limit()
    with stubs("--chunks", str(chunks)) as stub:
        toml = stub_config(work, stub.url, **LIMITS)
        env = {"GARDEN_CONFIG": toml, "GARDEN_DEFAULT_MODEL": "", "GARDEN_LOG_LEVEL": "info"}
        with gateway(work / "gw", result, **env) as server:
            pid = server.proc.pid
            load = _Load(sample(pid), memory_figures(server))
            rounds_run = run_rounds(server, scale, result, lambda: sample(pid))
            load.rounds = rounds_run.samples
            load.loaded_memory = memory_figures(server)
            load.settle_s = _settle(server, load.loaded_memory[RELEASES])
            load.idle, load.idle_memory = sample(pid), memory_figures(server)
    result.figures = {**rounds_run.figures(scale), **load.figures()}
    result.check(rounds_run.whole(scale), "some streams failed")
    load.judge(result, n)
    return result


async def _model_load(server: GardenServer, n: int, tokens: int) -> tuple[list[str], list[str]]:
    options = {"num_predict": tokens, "temperature": 0, "seed": 42}
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a color."}]
    oc = ollama.AsyncClient(host=server.url, timeout=600)
    ai = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", timeout=600)

    async def via_ollama() -> str:
        parts = [
            p async for p in await oc.chat(DEFAULT_MODEL, messages, stream=True, options=options)
        ]
        assert parts[-1].done, "the last Ollama record is not done"
        return "".join(p.message.content or "" for p in parts)

    async def via_openai() -> str:
        stream = await ai.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=messages,
            max_tokens=tokens,
            temperature=0,
            seed=42,
            stream=True,
        )
        chunks = [c async for c in stream]
        assert chunks[-1].choices[0].finish_reason, "the last OpenAI chunk has no finish_reason"
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    jobs: list[Any] = [via_ollama() if i % 2 == 0 else via_openai() for i in range(n)]
    answers = await asyncio.gather(*jobs, return_exceptions=True)
    await ai.close()
    return [str(a) for a in answers[0::2]], [str(a) for a in answers[1::2]]


def load_model(scale: Scale, work: Path) -> Result:
    """Scenario 1b."""
    n, tokens = scale.model_streams, scale.model_tokens
    result = Result(
        "load: streams to the real model",
        f"{n} concurrent streams to {DEFAULT_MODEL} (half through the ollama client, half "
        f"through the openai client, {tokens} tokens, temperature 0): every one completes, "
        "the answers of each family are identical",
    )
    with gateway(work, result) as server:
        ollama.Client(host=server.url).generate(DEFAULT_MODEL, "")  # loaded before the clock
        began = time.perf_counter()
        via_ollama, via_openai = asyncio.run(_model_load(server, n, tokens))
        wall = time.perf_counter() - began
        rss = sample(server.proc.pid).rss
    result.figures = {
        "streams": n,
        "wall_s": round(wall, 2),
        "streams_per_s": round(n / wall, 2),
        "gateway_rss_mib": mib(rss),
    }
    for answers in (via_ollama, via_openai):
        result.check(
            len(set(answers)) == 1, f"answers differ or failed: {sorted(set(answers))[:3]}"
        )
    return result


# -- soak ----------------------------------------------------------------------------------------


async def _soak_traffic(server: GardenServer, seconds: float, counts: dict[str, int]) -> None:
    deadline = time.monotonic() + seconds
    kinds = ["ollama", "openai", "leave", "whole", "catalogue", "model"]

    async def worker(kind: str) -> None:
        async with session() as http:
            while time.monotonic() < deadline:
                ok = await _one(http, server, kind)
                counts[kind] = counts.get(kind, 0) + 1
                if not ok:
                    counts["bad"] = counts.get("bad", 0) + 1

    await asyncio.gather(*(worker(k) for k in kinds for _ in range(1 if k == "model" else 4)))


async def _one(http: Any, server: GardenServer, kind: str) -> bool:
    if kind == "ollama":
        s = await read_stream(http, server.url + "/api/chat", ollama_chat("stub", 16))
        return s.ending == "done"
    if kind == "openai":
        body = openai_chat("stub-openai", 16)
        s = await read_stream(http, server.url + "/v1/chat/completions", body)
        return s.ending == "done"
    if kind == "leave":
        body = ollama_chat("stub", 64)
        s = await read_stream(http, server.url + "/api/chat", body, stop_after=2)
        return s.status == 200
    if kind == "whole":
        body = {**openai_chat("stub-openai", 4), "stream": False}
        async with http.post(server.url + "/v1/chat/completions", json=body) as r:
            return r.status == 200 and "choices" in await r.json()
    if kind == "catalogue":
        async with http.get(server.url + "/api/tags") as r:
            return r.status == 200 and bool((await r.json())["models"])
    body = ollama_chat(DEFAULT_MODEL, 4)
    s = await read_stream(http, server.url + "/api/chat", body)
    return s.ending == "done"


def soak(scale: Scale, work: Path) -> Result:
    """Scenario 4."""
    seconds = scale.soak_seconds
    result = Result(
        "soak: mixed traffic",
        f"{seconds:.0f} s of mixed traffic (stub streams in both families, clients leaving "
        "mid-stream, whole answers, catalogue reads, the real model): no failed request; "
        "memory flat (last quarter's median within 10% of the first quarter's), descriptors "
        "back to their level before the traffic",
    )
    raise_fd_limit()
    with stubs("--chunks", "16", "--delay", "0.002") as stub:
        env = {"GARDEN_CONFIG": stub_config(work, stub.url, **LIMITS)}
        with gateway(work / "gw", result, **env) as server:
            pid = server.proc.pid
            ollama.Client(host=server.url).generate(DEFAULT_MODEL, "")
            before = sample(pid)
            counts: dict[str, int] = {}
            samples: list[Sample] = []

            async def run() -> None:
                traffic = asyncio.ensure_future(_soak_traffic(server, seconds, counts))
                while not traffic.done():
                    samples.append(await asyncio.to_thread(sample, pid))
                    await asyncio.wait({traffic}, timeout=1.0)
                await traffic

            asyncio.run(run())
            time.sleep(SETTLE)
            after = sample(pid)
    quarter = max(1, len(samples) // 4)
    early = statistics.median(s.rss for s in samples[:quarter])
    late = statistics.median(s.rss for s in samples[-quarter:])
    result.figures = {
        "requests": sum(v for k, v in counts.items() if k != "bad"),
        "failed": counts.get("bad", 0),
        "by_kind": {k: v for k, v in counts.items() if k != "bad"},
        "samples": len(samples),
        "rss_first_quarter_mib": mib(early),
        "rss_last_quarter_mib": mib(late),
        "rss_max_mib": mib(max(s.rss for s in samples)),
        "fds_before": before.fds,
        "fds_max": max(s.fds for s in samples),
        "fds_after": after.fds,
    }
    result.check(not counts.get("bad"), f"{counts.get('bad')} requests failed")
    result.check(late <= early * 1.10, f"memory grew: {mib(early)} -> {mib(late)} MiB")
    result.check(after.fds <= before.fds + 32, f"descriptors grew: {before.fds} -> {after.fds}")
    return result
