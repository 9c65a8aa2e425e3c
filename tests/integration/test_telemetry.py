"""Metrics, request logs, usage records and health routes of a real gateway under real traffic."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import httpx
import ollama
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import DEFAULT_MODEL, GREEDY, GardenServer, free_port, scrape, value
from tests.integration.test_cli import garden_cmd
from tests.pg_server import postgres_server

MakeGarden = Callable[..., GardenServer]
CHAT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Count from one to fifty in words."}
]


def request_lines(server: GardenServer, expect: int = 0) -> list[dict[str, Any]]:
    """The gateway's per-request log lines, parsed as JSON (every line must be JSON).

    A line is written just after the answer's last byte: wait (a little) for ``expect``.
    """
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in server.logs().splitlines() if line.strip()]
        found = [line for line in lines if line.get("event") == "request"]
        if len(found) >= expect or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def chat(server: GardenServer, **extra: Any) -> httpx.Response:
    body = {"model": DEFAULT_MODEL, "messages": CHAT, "options": {**GREEDY, "num_predict": 8}}
    return httpx.post(server.url + "/api/chat", json={**body, **extra}, timeout=60)


def test_metrics_count_real_traffic(make_garden: MakeGarden) -> None:
    server = make_garden()
    client = ollama.Client(host=server.url)
    options = {**GREEDY, "num_predict": 8}
    streamed = list(client.chat(DEFAULT_MODEL, messages=CHAT, stream=True, options=options))
    whole = client.chat(DEFAULT_MODEL, messages=CHAT, options=options)
    oa = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    completion = oa.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=CHAT,
        max_tokens=8,
        temperature=0,
        seed=42,
    )
    with pytest.raises(ollama.ResponseError):
        client.chat("no-such-model", messages=CHAT)
    assert httpx.post(server.url + "/api/chat", content=b"{bad", timeout=10).status_code == 400

    m = scrape(server)
    base = {"backend": "local", "model": DEFAULT_MODEL}
    assert value(m, "garden_requests_total", api="ollama", status="200", **base) == 2
    assert value(m, "garden_requests_total", api="openai", status="200", **base) == 1
    assert value(m, "garden_requests_total", status="404", model="") == 1
    assert value(m, "garden_requests_total", status="400") == 1
    assert value(m, "garden_requests_total") == 5
    last = streamed[-1]
    assert last.eval_count is not None and whole.eval_count is not None
    assert last.prompt_eval_count is not None and whole.prompt_eval_count is not None
    assert completion.usage is not None
    completion_tokens = last.eval_count + whole.eval_count
    completion_tokens += completion.usage.completion_tokens
    assert value(m, "garden_tokens_total", kind="completion", **base) == completion_tokens
    prompt_tokens = last.prompt_eval_count + whole.prompt_eval_count
    prompt_tokens += completion.usage.prompt_tokens
    assert value(m, "garden_tokens_total", kind="prompt", **base) == prompt_tokens
    # One streamed answer has a time to first token; all five were timed.
    assert value(m, "garden_time_to_first_token_seconds_count", **base) == 1
    assert value(m, "garden_request_duration_seconds_count") == 5
    assert value(m, "garden_gateway_overhead_seconds_count") == 5
    assert value(m, "garden_tokens_per_second_count", **base) == 3
    assert value(m, "garden_models_loaded", backend="local") == 1
    assert value(m, "garden_model_memory_bytes", **base) > 50_000_000
    assert value(m, "garden_backend_up", backend="local") == 1
    assert value(m, "garden_queue_depth", backend="local") == 0
    assert value(m, "garden_queue_rejections_total", backend="local") == 0


def test_request_id_overhead_header_and_one_json_log_line(make_garden: MakeGarden) -> None:
    server = make_garden()
    marker = "zebra-marmalade-7781"
    given = chat(server, messages=[{"role": "user", "content": marker}], stream=False)
    assert given.status_code == 200
    overhead = float(given.headers["x-garden-overhead-ms"])
    assert 0 < overhead < 1000
    made_id = given.headers["x-request-id"]
    mine = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": CHAT, "max_tokens": 4, "stream": True, **GREEDY},
        headers={"X-Request-ID": "client-id-42"},
        timeout=60,
    )
    assert mine.headers["x-request-id"] == "client-id-42"
    bad = httpx.post(
        server.url + "/v1/chat/completions", json={"model": "x"}, headers={"X-Request-ID": "a b"}
    )
    assert bad.status_code == 400 and "error" in bad.json()
    assert bad.headers["x-request-id"] != "a b"  # not a sane token: replaced

    lines = request_lines(server, expect=3)
    assert len(lines) == 3  # one per request, nothing per chunk
    first = next(line for line in lines if line["request_id"] == made_id)
    assert first["model"] == DEFAULT_MODEL and first["backend"] == "local"
    assert first["status"] == 200 and first["completion_tokens"] == 8
    assert first["overhead_ms"] == pytest.approx(overhead, abs=0.002)
    streamed = next(line for line in lines if line["request_id"] == "client-id-42")
    assert streamed["stream"] is True and streamed["ttft_ms"] > 0
    # The local model is translated for OpenAI clients: counts come from the final chunk.
    assert streamed["completion_tokens"] == 4
    assert marker not in server.logs()  # prompts are never logged unless asked for


def test_prompts_are_logged_only_when_asked(make_garden: MakeGarden) -> None:
    server = make_garden(GARDEN_LOG_PROMPTS="1")
    marker = "quokka-lantern-5512"
    assert chat(server, messages=[{"role": "user", "content": marker}], stream=False).is_success
    (line,) = request_lines(server, expect=1)
    assert line["prompt"] == [{"role": "user", "content": marker}]


def test_client_leaving_mid_stream_is_recorded_as_499(make_garden: MakeGarden) -> None:
    server = make_garden()
    body = {"model": DEFAULT_MODEL, "prompt": "Count to two hundred.", "options": GREEDY}
    with httpx.stream("POST", server.url + "/api/generate", json=body, timeout=60) as response:
        next(response.iter_lines())
    (line,) = request_lines(server, expect=1)
    assert line["status"] == 499 and line["error"] == "client disconnected"
    assert value(scrape(server), "garden_requests_total", status="499") == 1


def test_health_and_ready(garden: GardenServer) -> None:
    health = httpx.get(garden.url + "/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(garden.url + "/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["store"]["ok"] and body["database"]["ok"]
    assert body["database"]["url"].endswith("garden.db")
    assert [b["name"] for b in body["backends"]] == ["local"]


def test_usage_survives_a_restart_and_garden_usage_summarises(make_garden: MakeGarden) -> None:
    first = make_garden()
    for _ in range(2):
        assert chat(first, stream=False).is_success
    assert (
        httpx.post(first.url + "/api/chat", json={"model": "nope:1", "messages": CHAT}).status_code
        == 404
    )
    first.stop()  # SIGTERM: queued records are written before the gateway exits
    second = make_garden(GARDEN_MODELS=str(first.models))
    summary = httpx.get(second.url + "/garden/usage", params={"by": "model"}).json()
    rows = {row["model"]: row for row in summary["rows"]}
    assert rows[DEFAULT_MODEL]["requests"] == 2 and rows[DEFAULT_MODEL]["errors"] == 0
    assert rows[DEFAULT_MODEL]["completion_tokens"] == 16
    assert rows["nope:1"]["errors"] == 1

    shown = garden_cmd(second, "usage")
    assert shown.returncode == 0, shown.stderr
    header, *lines = shown.stdout.splitlines()
    assert header.split()[:3] == ["DAY", "MODEL", "KEY"]
    assert any(DEFAULT_MODEL in line and " 2 " in f" {line} " for line in lines)
    as_json = json.loads(garden_cmd(second, "usage", "--json", "--by", "day").stdout)
    assert sum(row["requests"] for row in as_json["rows"]) == 3
    bad = garden_cmd(second, "usage", "--since", "yesterday-ish")
    assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid time")
    wrong = httpx.get(second.url + "/garden/usage", params={"by": "colour"})
    assert wrong.status_code == 400 and "by:" in wrong.json()["error"]


def test_unreachable_database_never_blocks_requests(make_garden: MakeGarden) -> None:
    url = f"postgresql://garden:hunter2@127.0.0.1:{free_port()}/garden"
    server = make_garden(GARDEN_DATABASE_URL=url)
    assert chat(server, stream=False).is_success
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 503 and not ready.json()["database"]["ok"]
    usage = httpx.get(server.url + "/garden/usage")
    assert usage.status_code == 503 and "usage database unavailable" in usage.json()["error"]
    assert "hunter2" not in server.logs() and "hunter2" not in ready.text
    assert value(scrape(server), "garden_usage_queue_depth") == 1


def test_bad_database_url_stops_the_start_with_one_line(make_garden: MakeGarden) -> None:
    with pytest.raises(RuntimeError) as failed:
        make_garden(GARDEN_DATABASE_URL="mysql://u:secretpw@h/db")
    assert "GARDEN_DATABASE_URL" in str(failed.value) and "secretpw" not in str(failed.value)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_two_gateways_share_one_postgres_database(make_garden: MakeGarden, postgres: str) -> None:
    a = make_garden(GARDEN_DATABASE_URL=postgres)
    b = make_garden(GARDEN_DATABASE_URL=postgres)
    for server, count in ((a, 2), (b, 3)):
        for _ in range(count):
            assert chat(server, stream=False).is_success
    summary = httpx.get(a.url + "/garden/usage", params={"by": "model"}).json()
    assert summary["rows"][0]["requests"] >= 2  # a's own records, written before answering
    b.stop()  # writes b's queue

    async def rows_by_gateway() -> list[Any]:
        conn = await asyncpg.connect(postgres)
        try:
            return list(await conn.fetch("SELECT gateway, COUNT(*) FROM usage GROUP BY gateway"))
        finally:
            await conn.close()

    counts = sorted(int(r[1]) for r in asyncio.run(rows_by_gateway()))
    assert counts == [2, 3]
    total = httpx.get(a.url + "/garden/usage", params={"by": "model"}).json()["rows"]
    assert total == [
        {
            "model": DEFAULT_MODEL,
            "requests": 5,
            "errors": 0,
            "prompt_tokens": total[0]["prompt_tokens"],
            "completion_tokens": 40,
            "mean_duration_ms": total[0]["mean_duration_ms"],
        }
    ]


def test_garden_bench_writes_json_and_flags_regressions(
    garden: GardenServer, tmp_path: Any
) -> None:
    out = tmp_path / "bench.json"
    ran = garden_cmd(
        garden, "bench", DEFAULT_MODEL, "-c", "1,2", "-n", "2", "--tokens", "8", "-o", str(out)
    )
    assert ran.returncode == 0, ran.stderr
    assert "CONCURRENCY" in ran.stdout
    result = json.loads(out.read_text())
    assert [level["concurrency"] for level in result["levels"]] == [1, 2]
    for level in result["levels"]:
        assert level["requests"] == 2 and level["errors"] == 0
        assert level["ttft_p50_ms"] > 0 and level["latency_p50_ms"] >= level["ttft_p50_ms"]
        assert level["tokens_per_s_p50"] > 0
    # Against itself with a wide threshold: no regression.
    same = garden_cmd(
        garden, "bench", DEFAULT_MODEL, "-c", "1", "-n", "2", "--tokens", "8",
        "--baseline", str(out), "--threshold", "10",
    )  # fmt: skip
    assert same.returncode == 0, same.stderr
    assert "no regression" in same.stdout
    # A baseline ten times faster than anything this machine can do: a regression.
    fast = {**result, "levels": [
        {**lvl, "latency_p50_ms": lvl["latency_p50_ms"] / 10,
         "tokens_per_s_p50": lvl["tokens_per_s_p50"] * 10}
        for lvl in result["levels"]
    ]}  # fmt: skip
    baseline = tmp_path / "fast.json"
    baseline.write_text(json.dumps(fast))
    slower = garden_cmd(
        garden, "bench", DEFAULT_MODEL, "-c", "1", "-n", "2", "--tokens", "8",
        "--baseline", str(baseline),
    )  # fmt: skip
    assert slower.returncode == 3
    assert "REGRESSION" in slower.stdout and "regression(s) beyond 20%" in slower.stderr
    unknown = garden_cmd(garden, "bench", "no-such-model", "-n", "1", "-c", "1")
    assert unknown.returncode == 1 and unknown.stderr.startswith("Error: model 'no-such-model'")
