"""The pure parts of telemetry: token counts from final records, request ids, time
arguments, database URLs, the usage queue's bound, and the benchmark's comparison."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import structlog

from modelgarden.bench import BenchError, compare
from modelgarden.db import check_url, connect, numbered, redact
from modelgarden.telemetry.logging import configure_logging, request_line
from modelgarden.telemetry.record import RequestRecord, Tokens, request_id_of, tokens_of
from modelgarden.telemetry.usage import UsageWriter, parse_since, summary


def test_tokens_from_an_ollama_final_record_and_an_openai_stream() -> None:
    final = orjson.dumps(
        {"done": True, "prompt_eval_count": 31, "eval_count": 8, "eval_duration": 122_000_000}
    )
    assert tokens_of(b'{"done":false}\n' + final) == Tokens(31, 8, 122_000_000)
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    sse = b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\ndata: [DONE]\n\n"
    assert tokens_of(sse) == Tokens(12, 5, None)
    assert tokens_of(b'{"model":"m"}') == Tokens()


def test_counter_names_inside_generated_text_are_not_counted() -> None:
    text = orjson.dumps({"message": {"content": 'say "eval_count": 999'}, "done": True})
    assert tokens_of(text) == Tokens()


def test_request_ids_are_kept_when_sane_and_made_otherwise() -> None:
    assert request_id_of([(b"x-request-id", b"abc-123")]) == "abc-123"
    for bad in (b"", b"a b", b"x" * 129, b"line\nbreak"):
        made = request_id_of([(b"x-request-id", bad)])
        assert made != bad.decode() and len(made) == 24
    assert request_id_of([]) != request_id_of([])


def test_since_accepts_days_durations_and_dates() -> None:
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2027-01-15", now) == datetime(2027, 1, 15, tzinfo=UTC).timestamp()
    with pytest.raises(ValueError, match="invalid time"):
        parse_since("last week", now)


def test_database_urls_are_checked_redacted_and_numbered() -> None:
    assert check_url("") == ""
    assert check_url("postgresql://u:p@db:5432/garden").startswith("postgresql://")
    assert check_url("sqlite:////srv/garden.db") == "sqlite:////srv/garden.db"
    for bad in ("mysql://h/db", "sqlite://", "postgresql:///nohost"):
        with pytest.raises(ValueError, match="expected"):
            check_url(bad)
    assert redact("postgresql://u:s3cret@db/g") == "postgresql://u:***@db/g"
    assert numbered("INSERT INTO t VALUES (?, ?, ?)") == "INSERT INTO t VALUES ($1, $2, $3)"


def _record(i: int, model: str = "m", status: int = 200) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", started=1_800_000_000.0 + i, api="ollama", endpoint="/api/chat",
        model=model, backend="local", status=status, stream=True, duration_ms=10.0,
        ttft_ms=2.0, overhead_ms=0.3, prompt_tokens=5, completion_tokens=7, tokens_per_s=70.0,
    )  # fmt: skip


def test_a_full_usage_queue_drops_and_counts_then_writes_in_batches(tmp_path: Path) -> None:
    async def go() -> None:
        writer = UsageWriter(max_queue=3, batch=2, interval=60)
        for i in range(5):
            writer.put(_record(i, status=500 if i == 0 else 200))  # never blocks
        assert (writer.depth, writer.dropped) == (3, 2)
        db = await connect(f"sqlite:///{tmp_path / 'u.db'}", tmp_path)
        await writer.start(db)
        await writer.flush()
        assert (writer.depth, writer.written) == (0, 3)
        rows = await summary(db, 0, ["model"])
        assert rows == [
            {"model": "m", "requests": 3, "errors": 1, "prompt_tokens": 15,
             "completion_tokens": 21, "mean_duration_ms": 10.0},
        ]  # fmt: skip
        await writer.close()

    asyncio.run(go())


def test_bench_comparison_flags_only_changes_beyond_the_threshold() -> None:
    base = {"levels": [{"concurrency": 1, "latency_p50_ms": 100.0, "ttft_p50_ms": 10.0,
                        "tokens_per_s_p50": 50.0}]}  # fmt: skip
    now = {"levels": [{"concurrency": 1, "latency_p50_ms": 130.0, "ttft_p50_ms": 10.5,
                       "tokens_per_s_p50": 45.0},
                      {"concurrency": 4, "latency_p50_ms": 1.0}]}  # fmt: skip
    result = {c["figure"]: c for c in compare(now, base, 0.2)}
    assert result["latency_p50_ms"]["regression"] and result["latency_p50_ms"]["change"] == 0.3
    assert not result["ttft_p50_ms"]["regression"]
    assert not result["tokens_per_s_p50"]["regression"]  # -10% is within 20%
    assert compare(now, base, 0.05)[2]["regression"]  # tokens/s down 10% > 5%
    with pytest.raises(BenchError):
        compare(now, {"nothing": 1}, 0.2)


def _request_fields() -> dict[str, object]:
    return {"request_id": "r1", "api": "ollama", "model": "m:latest", "status": 200,
            "duration_ms": 1.5, "ttft_ms": None, "prompt_tokens": 3}  # fmt: skip


def test_the_direct_request_line_is_the_line_structlog_writes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=True)
    try:
        log = structlog.get_logger("modelgarden.requests")
        request_line(log, _request_fields())
        log.info("request", **_request_fields())
        direct, chained = (json.loads(x) for x in capfd.readouterr().err.splitlines())
    finally:
        configure_logging("info", json=False)
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert stamp.fullmatch(direct.pop("timestamp")) and stamp.fullmatch(chained.pop("timestamp"))
    assert direct == chained == {**_request_fields(), "event": "request", "level": "info"}


def test_request_lines_follow_the_log_level(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("warning", json=True)
    try:
        request_line(structlog.get_logger("modelgarden.requests"), _request_fields())
        assert capfd.readouterr().err == ""
    finally:
        configure_logging("info", json=False)
