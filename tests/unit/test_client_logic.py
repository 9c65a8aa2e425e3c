"""The client's I/O-free decisions: backoff, Retry-After, breakers, failover, telemetry.

Everything here runs without a socket: time is a fake clock, jitter a seeded
``random.Random``; the twins' parity is checked by introspection.
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from modelgarden.client import (
    AsyncClient,
    BreakerPolicy,
    CallStats,
    CircuitOpen,
    Client,
    ClientError,
    ClientOptions,
    ModelNotFound,
    Overloaded,
    RequestTimeout,
    RetryPolicy,
    ServerError,
    StreamError,
    StreamInterrupted,
    Unavailable,
    resolve_hosts,
)
from modelgarden.client import _build as build
from modelgarden.client._base import DONE, attempt_timeout, encode_json, parse_sse_line
from modelgarden.client._plan import Attempt, CallPlan, ClientCore
from modelgarden.client._resilience import (
    BreakerBoard,
    BreakerState,
    backoff_delay,
    endpoint_path,
    failover_order,
    parse_retry_after,
)
from modelgarden.client.openai_types import ChatCompletion, ChatCompletionChunk
from modelgarden.client.telemetry import token_counts
from modelgarden.client.types import ChatResponse, GenerateResponse
from modelgarden.wire.ollama import Message
from tests.fakes import FakeClock

A, B, C = "http://a:1", "http://b:2", "http://c:3"
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_core(
    clock: FakeClock,
    hosts: tuple[str, ...] = (A,),
    *,
    retry: RetryPolicy | None = None,
    breaker: BreakerPolicy | None = None,
    on_call: Callable[[CallStats], None] | None = None,
) -> ClientCore:
    options = ClientOptions(
        retry=retry or RetryPolicy(max_retries=2, base_delay=0.5),
        breaker=breaker or BreakerPolicy(failure_threshold=3, cooldown=10.0),
    )
    return ClientCore(hosts, options, on_call, clock=clock, wall=lambda: NOW, rng=random.Random(7))


def refused() -> httpx.ConnectError:
    return httpx.ConnectError("connection refused")


def fail_every_attempt(plan: CallPlan) -> tuple[list[Attempt], ClientError]:
    """Refuse each attempt of the plan until it gives up; the attempts and the final error."""
    seen: list[Attempt] = []
    try:
        while True:
            attempt = plan.next_attempt()
            seen.append(attempt)
            plan.transport_failed(attempt, refused())
    except ClientError as exc:
        return seen, exc


GENERATE = build.generate("m", "a secret prompt", None, False, {})
STREAM = build.generate("m", "a secret prompt", None, True, {})


# --- backoff -----------------------------------------------------------------------------------


def test_backoff_schedule_is_full_jitter_under_a_capped_exponential() -> None:
    policy = RetryPolicy(base_delay=0.25, multiplier=2.0, max_delay=2.0)
    ceilings = [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    rng, reference = random.Random(42), random.Random(42)
    delays = [backoff_delay(n, policy, rng) for n in range(6)]
    assert delays == [reference.uniform(0, c) for c in ceilings]  # the seed fixes the schedule
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == 6


def test_backoff_without_jitter_is_the_ceiling_and_never_overflows() -> None:
    policy = RetryPolicy(base_delay=0.1, multiplier=3.0, max_delay=5.0, jitter=False)
    rng = random.Random(0)
    assert [backoff_delay(n, policy, rng) for n in range(5)] == pytest.approx(
        [0.1, 0.3, 0.9, 2.7, 5.0]
    )
    assert backoff_delay(10_000, policy, rng) == 5.0


def test_full_jitter_spreads_over_the_whole_range() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=1.0)
    rng = random.Random(1)
    draws = [backoff_delay(3, policy, rng) for _ in range(2000)]
    assert min(draws) < 0.05 and max(draws) > 0.95
    assert 0.45 < sum(draws) / len(draws) < 0.55


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", None),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        ("Tue, 01 Jan 2030 12:01:00 GMT", 60.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past: now
        ("Tue, 01 Jan 2030 12:00:05", 5.0),  # no zone: GMT
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


def test_retry_after_seconds_is_the_pause_and_the_error_carries_it(clock: FakeClock) -> None:
    plan = make_core(clock, retry=RetryPolicy(max_retries=1)).plan(GENERATE)
    assert plan.answered(plan.next_attempt(), 503, b'{"error": "server busy"}', "3") is False
    second = plan.next_attempt()
    assert (second.base_url, second.delay, second.number) == (A, 3.0, 2)
    assert not plan.answered(second, 503, b'{"error": "server busy"}', "2")
    with pytest.raises(Overloaded) as info:
        plan.next_attempt()
    assert (info.value.status_code, info.value.retry_after) == (503, 2.0)
    assert str(info.value) == "server busy"


def test_retry_after_date_is_the_pause_and_is_capped(clock: FakeClock) -> None:
    core = make_core(clock, retry=RetryPolicy(max_retries=3, max_retry_after=20.0))
    plan = core.plan(GENERATE)
    attempt = plan.next_attempt()
    date = format_datetime(NOW + timedelta(seconds=12), usegmt=True)
    assert not plan.answered(attempt, 429, b'{"error": "slow down"}', date)
    assert plan.next_attempt().delay == 12.0
    capped = core.plan(GENERATE)
    assert not capped.answered(capped.next_attempt(), 503, b"{}", "3600")
    assert capped.next_attempt().delay == 20.0


def test_without_retry_after_the_pause_is_jittered_backoff(clock: FakeClock) -> None:
    plan = make_core(clock, retry=RetryPolicy(max_retries=2, base_delay=0.5)).plan(GENERATE)
    assert not plan.answered(plan.next_attempt(), 503, b'{"error": "busy"}', None)
    delay = plan.next_attempt().delay
    assert delay == random.Random(7).uniform(0, 0.5)


# --- circuit breaker -----------------------------------------------------------------------------


def test_board_keys_breakers_by_base_url_and_endpoint(clock: FakeClock) -> None:
    board = BreakerBoard(BreakerPolicy(failure_threshold=1, cooldown=1.0), clock)
    board.failure(A, "/api/chat")
    assert not board.allow(A, "/api/chat")
    assert board.allow(A, "/api/generate")
    assert board.allow(B, "/api/chat")
    board.failure(A, "/api/blobs/sha256:aa")
    assert board.state(A, "/api/blobs/sha256:bb") is BreakerState.OPEN
    assert endpoint_path("/api/tags?x=1") == "/api/tags"
    opened = {key for key, state in board.snapshot().items() if state is BreakerState.OPEN}
    assert opened == {(A, "/api/chat"), (A, "/api/blobs")}


def test_disabled_breaker_never_fails_fast(clock: FakeClock) -> None:
    board = BreakerBoard(BreakerPolicy(enabled=False, failure_threshold=1), clock)
    for _ in range(10):
        board.failure(A, "/api/chat")
    assert board.allow(A, "/api/chat")
    assert failover_order([A], board, "/api/chat").usable == (A,)


# --- failover ------------------------------------------------------------------------------------


def test_failover_order_keeps_priority_and_skips_open_endpoints(clock: FakeClock) -> None:
    board = BreakerBoard(BreakerPolicy(failure_threshold=1, cooldown=10.0), clock)
    assert failover_order([A, B, C], board, "/api/chat").usable == (A, B, C)
    board.failure(A, "/api/chat")
    order = failover_order([A, B, C], board, "/api/chat")
    assert (order.usable, order.skipped) == ((B, C), (A,))
    assert failover_order([A, B, C], board, "/api/tags").usable == (A, B, C)
    clock.advance(10)  # half-open: back in its place, as the probe
    assert failover_order([A, B, C], board, "/api/chat").usable == (A, B, C)


def test_plan_fails_over_at_once_then_pauses_between_passes(clock: FakeClock) -> None:
    stats: list[CallStats] = []
    core = make_core(
        clock,
        (A, B),
        retry=RetryPolicy(max_retries=1, base_delay=1.0),
        breaker=BreakerPolicy(failure_threshold=10),
        on_call=stats.append,
    )
    seen, error = fail_every_attempt(core.plan(GENERATE))
    assert isinstance(error, Unavailable) and "could not connect to http://b:2" in str(error)
    assert [(a.base_url, a.delay > 0) for a in seen] == [
        (A, False),
        (B, False),
        (A, True),
        (B, False),
    ]
    assert [s.attempts for s in stats] == [4]
    assert stats[0].hosts_tried == (A, B, A, B) and stats[0].retries == 3
    assert not stats[0].ok and stats[0].error == "Unavailable"


def test_plan_skips_an_open_base_url_and_uses_the_next(clock: FakeClock) -> None:
    core = make_core(clock, (A, B), breaker=BreakerPolicy(failure_threshold=1, cooldown=10))
    first = core.plan(GENERATE)
    attempt = first.next_attempt()
    first.transport_failed(attempt, refused())
    attempt = first.next_attempt()
    assert attempt.base_url == B and attempt.delay == 0
    assert first.answered(attempt, 200, b"", None)
    second = core.plan(GENERATE)
    assert second.next_attempt().base_url == B  # A's breaker is open: not even tried
    clock.advance(10)
    third = core.plan(GENERATE)
    assert third.next_attempt().base_url == A  # half-open: A gets the probe
    assert core.breaker_states()[(A, "/api/generate")] is BreakerState.HALF_OPEN


def test_all_open_fails_fast_without_an_attempt(clock: FakeClock) -> None:
    stats: list[CallStats] = []
    core = make_core(
        clock, (A, B), breaker=BreakerPolicy(failure_threshold=1, cooldown=4), on_call=stats.append
    )
    for url in (A, B):
        core.breakers.failure(url, "/api/generate")
    clock.advance(1)
    plan = core.plan(GENERATE)
    with pytest.raises(CircuitOpen) as info:
        plan.next_attempt()
    assert info.value.retry_in == 3.0
    assert isinstance(info.value, Unavailable)
    assert "/api/generate" in str(info.value)
    assert stats[-1].attempts == 0 and stats[-1].error == "CircuitOpen"


def test_failures_within_a_call_open_the_breaker_and_end_it(clock: FakeClock) -> None:
    core = make_core(
        clock,
        retry=RetryPolicy(max_retries=5, base_delay=0.01),
        breaker=BreakerPolicy(failure_threshold=2, cooldown=30),
    )
    seen, error = fail_every_attempt(core.plan(GENERATE))
    assert len(seen) == 2 and type(error) is Unavailable
    with pytest.raises(CircuitOpen):
        core.plan(GENERATE).next_attempt()


def test_a_probe_in_flight_fails_other_calls_fast(clock: FakeClock) -> None:
    core = make_core(clock, breaker=BreakerPolicy(failure_threshold=1, cooldown=1))
    core.breakers.failure(A, "/api/generate")
    clock.advance(1)
    probe = core.plan(GENERATE)
    probe.next_attempt()
    with pytest.raises(CircuitOpen):
        core.plan(GENERATE).next_attempt()


# --- which failures are retried ------------------------------------------------------------------


def test_client_errors_are_not_retried_and_do_not_count(clock: FakeClock) -> None:
    core = make_core(clock, (A, B), breaker=BreakerPolicy(failure_threshold=1))
    plan = core.plan(GENERATE)
    with pytest.raises(ModelNotFound, match="model 'x' not found") as info:
        plan.answered(plan.next_attempt(), 404, b'{"error": "model \'x\' not found"}', None)
    assert info.value.status_code == 404
    assert core.breakers.state(A, "/api/generate") is BreakerState.CLOSED
    assert plan.stats is not None and plan.stats.status == 404 and plan.stats.attempts == 1


def test_a_500_counts_against_the_breaker_and_a_read_timeout_too(clock: FakeClock) -> None:
    core = make_core(clock, (A, B), breaker=BreakerPolicy(failure_threshold=2))
    plan = core.plan(GENERATE)
    with pytest.raises(ServerError):  # not retried, no failover
        plan.answered(plan.next_attempt(), 500, b'{"error": "runner died"}', None)
    plan = core.plan(GENERATE)
    with pytest.raises(RequestTimeout):  # not retried: the server may still be working on it
        plan.transport_failed(plan.next_attempt(), httpx.ReadTimeout("slow"))
    assert core.breakers.state(A, "/api/generate") is BreakerState.OPEN


def test_retries_zero_means_one_attempt(clock: FakeClock) -> None:
    seen, error = fail_every_attempt(
        make_core(clock, retry=RetryPolicy(max_retries=0)).plan(GENERATE)
    )
    assert len(seen) == 1 and isinstance(error, Unavailable)


def test_a_stream_may_retry_before_its_first_chunk(clock: FakeClock) -> None:
    plan = make_core(clock).plan(STREAM)
    first = plan.next_attempt()
    assert plan.answered(first, 200, b"", None)
    plan.transport_failed(first, httpx.RemoteProtocolError("peer closed"))
    assert plan.next_attempt().number == 2


def test_a_stream_that_delivered_data_is_never_retried(clock: FakeClock) -> None:
    core = make_core(clock, retry=RetryPolicy(max_retries=5))
    plan = core.plan(STREAM)
    attempt = plan.next_attempt()
    assert plan.answered(attempt, 200, b"", None)
    assert plan.record(b'{"response": "1", "done": false}', GenerateResponse) is not None
    with pytest.raises(StreamInterrupted) as info:
        plan.transport_failed(attempt, httpx.RemoteProtocolError("peer closed"))
    assert isinstance(info.value, StreamError)
    assert plan.stats is not None and plan.stats.attempts == 1 and plan.stats.chunks == 1


def test_an_error_record_ends_the_stream(clock: FakeClock) -> None:
    plan = make_core(clock).plan(STREAM)
    attempt = plan.next_attempt()
    plan.answered(attempt, 200, b"", None)
    with pytest.raises(StreamError, match="runner crashed"):
        plan.record(b'{"error": "runner crashed"}', GenerateResponse)
    assert plan.stats is not None and plan.stats.error == "StreamError"


# --- telemetry -----------------------------------------------------------------------------------


def test_token_counts_from_ollama_and_openai_answers() -> None:
    ollama = GenerateResponse(prompt_eval_count=9, eval_count=12, done=True)
    assert token_counts(ollama) == (9, 12)
    assert token_counts(GenerateResponse(response="x")) == (None, None)
    completion = ChatCompletion.model_validate_json(
        b'{"id": "c", "created": 1, "model": "m", "choices": [{"message": {"content": "hi"}}],'
        b' "usage": {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36}}'
    )
    assert token_counts(completion) == (31, 5)
    chunk = ChatCompletionChunk(id="c", created=1, model="m")
    assert token_counts(chunk) == (None, None)


def test_stream_telemetry_latency_ttft_tokens(clock: FakeClock) -> None:
    stats: list[CallStats] = []
    plan = make_core(clock, on_call=stats.append).plan(build.chat("m", [], True, {}))
    plan.begin()
    clock.advance(0.5)
    attempt = plan.next_attempt()
    plan.answered(attempt, 200, b"", None)
    clock.advance(0.25)
    plan.record(b'{"message": {"role": "assistant", "content": "a"}}', ChatResponse)
    clock.advance(1.0)
    plan.record(b"\n", ChatResponse)
    plan.record(b'{"done": true, "prompt_eval_count": 7, "eval_count": 3}', ChatResponse)
    plan.finish()
    plan.finish()  # published once
    assert len(stats) == 1
    s = stats[0]
    assert (s.method, s.path, s.stream, s.ok, s.status) == ("chat", "/api/chat", True, True, 200)
    assert s.latency_s == pytest.approx(1.75) and s.ttft_s == pytest.approx(0.75)
    assert (s.tokens_in, s.tokens_out, s.chunks, s.base_url, s.retries) == (7, 3, 2, A, 0)


def test_response_carries_its_telemetry(clock: FakeClock) -> None:
    plan = make_core(clock).plan(GENERATE)
    plan.answered(plan.next_attempt(), 200, b"", None)
    clock.advance(0.2)
    body = b'{"response": "hi", "done": true, "prompt_eval_count": 4, "eval_count": 2}'
    answer = plan.result(body, GenerateResponse)
    assert answer.telemetry is not None and answer.telemetry.latency_s == pytest.approx(0.2)
    assert (answer.telemetry.tokens_in, answer.telemetry.tokens_out) == (4, 2)
    assert "telemetry" not in answer.model_dump()


def test_abandoned_stream_is_published_as_cancelled(clock: FakeClock) -> None:
    stats: list[CallStats] = []
    plan = make_core(clock, on_call=stats.append).plan(STREAM)
    plan.next_attempt()
    plan.abandon()
    plan.abandon()
    assert [s.error for s in stats] == ["cancelled"]


def test_a_failing_callback_does_not_fail_the_call(clock: FakeClock) -> None:
    def boom(stats: CallStats) -> None:
        raise RuntimeError("sink down")

    plan = make_core(clock, on_call=boom).plan(GENERATE)
    plan.answered(plan.next_attempt(), 200, b"", None)
    with capture_logs() as logs:
        assert plan.result(b'{"response": "ok"}', GenerateResponse).response == "ok"
    assert any(entry["event"] == "on_call callback failed" for entry in logs)


def test_one_debug_line_per_call_without_prompt_text(clock: FakeClock) -> None:
    plan = make_core(clock).plan(GENERATE)
    plan.answered(plan.next_attempt(), 200, b"", None)
    with capture_logs() as logs:
        plan.result(b'{"response": "the answer", "eval_count": 2}', GenerateResponse)
    assert len(logs) == 1
    entry = logs[0]
    assert entry["event"] == "client call" and entry["log_level"] == "debug"
    assert entry["method"] == "generate" and entry["base_url"] == A and entry["tokens_out"] == 2
    assert "secret" not in repr(entry) and "the answer" not in repr(entry)


def test_without_structlog_configured_the_line_goes_to_stdlib_logging(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(structlog, "is_configured", lambda: False)
    plan = make_core(clock).plan(GENERATE)
    plan.answered(plan.next_attempt(), 200, b"", None)
    with caplog.at_level(logging.INFO, logger="modelgarden.client"):
        plan.result(b'{"response": "x"}', GenerateResponse)
    assert not caplog.records  # debug lines are silent unless asked for
    plan = make_core(clock).plan(GENERATE)
    plan.answered(plan.next_attempt(), 200, b"", None)
    with caplog.at_level(logging.DEBUG, logger="modelgarden.client"):
        plan.result(b'{"response": "x"}', GenerateResponse)
    (record,) = caplog.records
    assert "client call" in record.getMessage() and "method='generate'" in record.getMessage()
    assert "secret" not in record.getMessage()


# --- request building and parsing ----------------------------------------------------------------


def test_request_bodies() -> None:
    call = build.generate("m", "p", None, False, {"options": {"seed": 1}, "system": None})
    assert (call.method, call.path, call.name) == ("POST", "/api/generate", "generate")
    assert call.json == {"model": "m", "prompt": "p", "stream": False, "options": {"seed": 1}}
    created = build.create("x", True, {"from_": "smollm2:135m"})
    assert created.json == {"model": "x", "stream": True, "from": "smollm2:135m"}
    pulled = build.pull("m", False, True)
    assert pulled.json == {"model": "m", "insecure": False, "stream": True} and pulled.stream
    completions = build.chat_completions("m", [{"role": "user", "content": "hi"}], True, {})
    assert completions.path == "/v1/chat/completions" and completions.sse
    assert not build.chat_completions("m", [], False, {}).sse
    assert build.blob_exists("sha256:ab").accept == frozenset({404})
    assert build.embed("m", ("a", "b"), {}).json == {"model": "m", "input": ["a", "b"]}


def test_bodies_accept_pydantic_models_tuples_and_mappings() -> None:
    from types import MappingProxyType

    call = build.chat("m", (Message(role="user", content="hi"),), False, {})
    body: dict[str, Any] = {**(call.json or {}), "options": MappingProxyType({"seed": 1})}
    body["tools"] = ({"type": "function"},)
    decoded = orjson.loads(encode_json(body))
    assert decoded["messages"] == [{"role": "user", "content": "hi"}]
    assert decoded["options"] == {"seed": 1} and decoded["tools"] == [{"type": "function"}]


def test_sse_lines() -> None:
    line = b'data: {"id": "c", "created": 1, "model": "m", "choices": []}'
    chunk = parse_sse_line(line, ChatCompletionChunk)
    assert isinstance(chunk, ChatCompletionChunk) and chunk.id == "c"
    assert parse_sse_line("data: [DONE]", ChatCompletionChunk) is DONE
    for skipped in ("", ": keep-alive", "event: message", "id: 3", "data:"):
        assert parse_sse_line(skipped, ChatCompletionChunk) is None
    with pytest.raises(StreamError, match="boom"):
        parse_sse_line('data: {"error": {"message": "boom"}}', ChatCompletionChunk)


def test_resolve_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GARDEN_HOST", raising=False)
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert resolve_hosts() == ("http://127.0.0.1:11434",)
    assert resolve_hosts(["a:1", "http://b:2/x", "a:1"]) == ("http://a:1", "http://b:2/x")
    assert resolve_hosts("a:1, b:2") == ("http://a:1", "http://b:2")
    monkeypatch.setenv("OLLAMA_HOST", "o:1,o:2")
    assert resolve_hosts() == ("http://o:1", "http://o:2")
    monkeypatch.setenv("GARDEN_HOST", "g:1")
    assert resolve_hosts() == ("http://g:1",)
    assert resolve_hosts("arg:3") == ("http://arg:3",)


def test_attempt_timeouts() -> None:
    assert attempt_timeout(None, 5.0, None) == httpx.Timeout(None, connect=5.0)
    assert attempt_timeout(30.0, 5.0, None) == httpx.Timeout(30.0, connect=5.0)
    assert attempt_timeout(30.0, 5.0, 2.0) == httpx.Timeout(2.0, connect=2.0)


def test_settings_are_validated_and_frozen() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerPolicy(failure_threshold=0)
    with pytest.raises(ValueError, match="timeout"):
        ClientOptions(timeout=0)
    with pytest.raises(AttributeError):
        RetryPolicy().max_retries = 5  # type: ignore[misc]


# --- parity of the twins -------------------------------------------------------------------------


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (callable(member) or isinstance(member, property))
    }


def test_sync_and_async_clients_have_the_same_methods_and_signatures() -> None:
    sync, aio = _public(Client), _public(AsyncClient)
    assert sync.keys() == aio.keys()
    io_free = {"breaker_states"}
    for name, member in sync.items():
        twin = aio[name]
        if isinstance(member, property):
            assert isinstance(twin, property), name
            continue
        assert inspect.signature(member).parameters == inspect.signature(twin).parameters, name
        if name in io_free:
            assert not inspect.iscoroutinefunction(twin), name
        else:
            assert inspect.iscoroutinefunction(twin), name
            assert not inspect.iscoroutinefunction(member), name
    expected = {
        "generate", "chat", "embed", "list", "show", "ps", "pull", "create", "copy",
        "delete", "version", "chat_completions", "health", "wait_ready", "upload_blob", "close",
    }  # fmt: skip
    assert expected <= sync.keys()
    assert inspect.signature(Client.__init__) == inspect.signature(AsyncClient.__init__)
