"""``modelgarden.client`` against real ``garden serve`` processes on loopback.

Every method, sync and async; then resilience with real failures: a server restarted on
the same port, a server that stays down (the breaker), failover to a second server, a
full queue answering 503, and a stream whose server dies after the first chunk.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import ollama
import psutil
import pytest
from structlog.testing import capture_logs

from modelgarden.client import (
    AsyncClient,
    BadRequest,
    BreakerPolicy,
    BreakerState,
    CallStats,
    ChatCompletion,
    ChatCompletionChunk,
    CircuitOpen,
    Client,
    ClientOptions,
    ModelNotFound,
    ProgressResponse,
    RequestTimeout,
    ResponseError,
    RetryPolicy,
    StreamInterrupted,
    Unavailable,
)
from tests.conftest import (
    DEFAULT_MODEL,
    GREEDY,
    GardenServer,
    clean_env,
    free_port,
    stop_and_check,
)

FAST = {**GREEDY, "num_predict": 4}
#: Keep reading this for seconds: the runner is busy until it is done.
LONG_OPTIONS = {"temperature": 0, "repeat_penalty": 1.0, "num_predict": 160}
LONG_GENERATE = {
    "model": DEFAULT_MODEL,
    "prompt": "Count from 1 to 1000: 1, 2, 3,",
    "raw": True,
    "options": LONG_OPTIONS,
}
#: Retry quickly and for long enough to outlast a restart or a busy runner.
PATIENT = ClientOptions(
    retry=RetryPolicy(max_retries=250, base_delay=0.05, max_delay=0.4),  # ~100 s on a busy CI
    breaker=BreakerPolicy(enabled=False),
)


def dead_url() -> str:
    """An address where nothing listens (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def client(garden: GardenServer) -> Iterator[Client]:
    with Client(garden.url) as c:
        yield c


@pytest.fixture
async def aclient(garden: GardenServer) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(garden.url) as c:
        yield c


@pytest.fixture
def restarted() -> Iterator[list[GardenServer]]:
    """Servers started by :func:`restart`; stopped and checked afterwards."""
    servers: list[GardenServer] = []
    yield servers
    for server in servers:
        stop_and_check(server)


def restart(server: GardenServer, registry: list[GardenServer]) -> GardenServer:
    """Start ``garden serve`` again on the stopped server's port and models folder.

    Not waited for: the client under test has to do the waiting.
    """
    assert server.proc.poll() is not None, "stop the old server first"
    env = clean_env(
        OLLAMA_HOST=server.host, GARDEN_MODELS=str(server.models), GARDEN_LOG_LEVEL="debug"
    )
    log = server.log.with_name(f"{server.log.stem}-restart{len(registry)}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelgarden", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=server.log.parent,
        )
    again = GardenServer(server.url, server.host, server.models, proc, log)
    registry.append(again)
    return again


def check_telemetry(stats: CallStats | None, base_url: str, *, stream: bool = False) -> CallStats:
    assert stats is not None
    assert stats.ok and stats.error is None and stats.status == 200
    assert stats.base_url == base_url and stats.stream is stream
    assert stats.latency_s > 0 and stats.attempts >= 1
    return stats


# --- every method, sync --------------------------------------------------------------------------


def test_catalogue_and_health(client: Client, garden: GardenServer) -> None:
    assert client.base_url == garden.url and client.hosts == (garden.url,)
    health = client.health()
    assert health and health.base_url == garden.url and health.status == 200
    assert client.wait_ready(5).ok
    version = client.version()
    assert version.version.count(".") == 2
    check_telemetry(version.telemetry, garden.url)
    listed = client.list()
    assert DEFAULT_MODEL in {m.name for m in listed.models}
    check_telemetry(listed.telemetry, garden.url)
    shown = client.show(DEFAULT_MODEL)
    assert "completion" in shown.capabilities and shown.details.family == "llama"
    assert shown.telemetry is not None and shown.telemetry.method == "show"
    client.generate(DEFAULT_MODEL, "", keep_alive="1m")  # load it
    running = client.ps()
    assert DEFAULT_MODEL in {m.name for m in running.models}
    check_telemetry(running.telemetry, garden.url)


def test_generate_whole_and_streamed(client: Client, garden: GardenServer) -> None:
    reply = client.generate(DEFAULT_MODEL, "1, 2, 3, 4, 5,", raw=True, options=FAST)
    assert " 6" in reply.response and reply.done and reply.eval_count == 4
    stats = check_telemetry(reply.telemetry, garden.url)
    assert (stats.tokens_in, stats.tokens_out) == (reply.prompt_eval_count, 4)
    assert stats.ttft_s is None and stats.retries == 0
    stream = client.generate(DEFAULT_MODEL, "1, 2, 3, 4, 5,", raw=True, options=FAST, stream=True)
    assert stream.telemetry is None
    chunks = list(stream)
    assert "".join(c.response for c in chunks) == reply.response
    assert chunks[-1].done and not chunks[0].done
    stats = check_telemetry(stream.telemetry, garden.url, stream=True)
    assert stats.tokens_out == 4 and stats.chunks == len(chunks)
    assert stats.ttft_s is not None and 0 < stats.ttft_s <= stats.latency_s


def test_chat_whole_and_streamed(client: Client, garden: GardenServer) -> None:
    messages = [ollama.Message(role="user", content="Say hi.")]  # ollama's own types work
    reply = client.chat(DEFAULT_MODEL, messages, options=FAST)
    assert reply.message.role == "assistant" and reply.message.content
    assert check_telemetry(reply.telemetry, garden.url).tokens_out == 4
    with client.chat(DEFAULT_MODEL, messages, options=FAST, stream=True) as stream:
        text = "".join(chunk.message.content or "" for chunk in stream)
    assert text == reply.message.content
    assert check_telemetry(stream.telemetry, garden.url, stream=True).tokens_in == (
        reply.prompt_eval_count
    )


def test_embed(client: Client, garden: GardenServer) -> None:
    result = client.embed(DEFAULT_MODEL, ["one", "two"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) == 576
    check_telemetry(result.telemetry, garden.url)


def test_chat_completions_whole_and_streamed(client: Client, garden: GardenServer) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    completion = client.chat_completions(
        DEFAULT_MODEL, messages, max_tokens=4, temperature=0, seed=42
    )
    assert isinstance(completion, ChatCompletion) and completion.object == "chat.completion"
    assert completion.choices[0].message.content and completion.usage is not None
    stats = check_telemetry(completion.telemetry, garden.url)
    assert (stats.tokens_in, stats.tokens_out) == (completion.usage.prompt_tokens, 4)
    stream = client.chat_completions(
        DEFAULT_MODEL,
        messages,
        stream=True,
        max_tokens=4,
        temperature=0,
        seed=42,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    stats = check_telemetry(stream.telemetry, garden.url, stream=True)
    assert stats.tokens_out == 4 and stats.ttft_s is not None
    with pytest.raises(ModelNotFound, match="not found") as info:
        client.chat_completions("no-such-model", messages)
    assert info.value.status_code == 404


def test_create_copy_delete_and_blobs(client: Client, tmp_path: Path) -> None:
    records = list(client.create("client-terse", from_=DEFAULT_MODEL, system="Be terse."))
    assert all(isinstance(r, ProgressResponse) for r in records)
    assert records[-1].status == "success"
    last = client.create("client-terse2", from_=DEFAULT_MODEL, stream=False)
    assert last.status == "success" and last.telemetry is not None
    copied = client.copy("client-terse", "client-copy")
    assert copied.status == "success" and copied.telemetry is not None
    assert client.show("client-copy").system == "Be terse."
    for name in ("client-terse", "client-terse2", "client-copy"):
        assert client.delete(name).status == "success"
    assert not {m.name for m in client.list().models} & {"client-terse", "client-copy"}
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"modelgarden client blob\n" * 1000)
    stats: list[CallStats] = []
    with Client(client.base_url, on_call=stats.append) as watched:
        digest = watched.upload_blob(blob)
        assert watched.upload_blob(blob) == digest  # already there: only a HEAD
    assert digest.startswith("sha256:") and len(digest) == 71
    assert [s.path.split("/")[-1] == digest for s in stats] == [True] * 3
    assert [s.status for s in stats] == [404, 201, 200]


def test_pull_failure_is_typed(client: Client) -> None:
    # No registry answers on this port: the server's error comes back typed, with its
    # message (pulls that succeed are covered by tests/integration/test_pull.py).
    with pytest.raises(ResponseError) as info:
        list(client.pull(f"127.0.0.1:{free_port()}/library/none:tag", insecure=True, stream=True))
    assert info.value.status_code >= 400 and str(info.value)


def test_errors_are_typed_with_status_and_message(client: Client) -> None:
    with pytest.raises(ModelNotFound) as info:
        client.show("missing-model")
    assert (info.value.status_code, str(info.value)) == (404, "model 'missing-model' not found")
    with pytest.raises(BadRequest) as bad:
        client.generate(DEFAULT_MODEL, "x", options={"num_predict": "many"})
    assert bad.value.status_code == 400 and "num_predict" in str(bad.value)
    with pytest.raises(ModelNotFound):
        next(iter(client.chat("missing-model", [{"role": "user", "content": "x"}], stream=True)))


def test_per_call_timeout_is_not_retried(garden: GardenServer) -> None:
    stats: list[CallStats] = []
    with Client(garden.url, options=PATIENT, on_call=stats.append) as c:
        options = {**LONG_OPTIONS, "num_predict": 100}
        started = time.monotonic()
        with pytest.raises(RequestTimeout):
            c.generate(
                DEFAULT_MODEL, "Count from 1 to 1000: 1,", raw=True, options=options, timeout=0.3
            )
        assert time.monotonic() - started < 2
        assert stats[-1].attempts == 1 and stats[-1].error == "RequestTimeout"
        assert c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST, timeout=60).done


def test_on_call_callback_and_one_log_line_per_call(garden: GardenServer) -> None:
    stats: list[CallStats] = []
    secret = "my private prompt 7c1f"
    with capture_logs() as logs, Client(garden.url, on_call=stats.append) as c:
        c.list()
        list(c.generate(DEFAULT_MODEL, secret, options=FAST, stream=True))
        with pytest.raises(ModelNotFound):
            c.show("missing-model")
    assert [s.method for s in stats] == ["list", "generate", "show"]
    assert [s.ok for s in stats] == [True, True, False]
    assert stats[2].error == "ModelNotFound" and stats[2].status == 404
    lines = [entry for entry in logs if entry["event"] == "client call"]
    assert len(lines) == 3 and all(entry["log_level"] == "debug" for entry in lines)
    assert lines[1]["tokens_out"] == 4 and lines[1]["ttft_ms"] > 0
    assert secret not in repr(logs)


def test_a_stream_closed_early_stops_and_reports(garden: GardenServer) -> None:
    stats: list[CallStats] = []
    with Client(garden.url, on_call=stats.append) as c:
        stream = c.generate(DEFAULT_MODEL, "Tell a story.", options=GREEDY, stream=True)
        next(stream)
        stream.close()
        assert stream.telemetry is not None and stream.telemetry.error == "cancelled"
        assert c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST).done
    assert [s.error for s in stats] == ["cancelled", None]


# --- every method, async -------------------------------------------------------------------------


async def test_async_catalogue_and_health(aclient: AsyncClient, garden: GardenServer) -> None:
    assert (await aclient.health()).ok
    assert (await aclient.wait_ready(5)).base_url == garden.url
    assert (await aclient.version()).version
    assert DEFAULT_MODEL in {m.name for m in (await aclient.list()).models}
    assert "completion" in (await aclient.show(DEFAULT_MODEL)).capabilities
    await aclient.generate(DEFAULT_MODEL, "", keep_alive="1m")
    running = await aclient.ps()
    assert DEFAULT_MODEL in {m.name for m in running.models}
    check_telemetry(running.telemetry, garden.url)


async def test_async_inference(aclient: AsyncClient, garden: GardenServer) -> None:
    reply = await aclient.generate(DEFAULT_MODEL, "1, 2, 3, 4, 5,", raw=True, options=FAST)
    assert " 6" in reply.response and check_telemetry(reply.telemetry, garden.url).tokens_out == 4
    stream = await aclient.generate(
        DEFAULT_MODEL, "1, 2, 3, 4, 5,", raw=True, options=FAST, stream=True
    )
    assert "".join([c.response async for c in stream]) == reply.response
    assert check_telemetry(stream.telemetry, garden.url, stream=True).ttft_s is not None
    messages = [{"role": "user", "content": "Say hi."}]
    chat = await aclient.chat(DEFAULT_MODEL, messages, options=FAST)
    async with await aclient.chat(DEFAULT_MODEL, messages, options=FAST, stream=True) as chunks:
        text = "".join([c.message.content or "" async for c in chunks])
    assert text == chat.message.content and chunks.telemetry is not None
    embedded = await aclient.embed(DEFAULT_MODEL, "one")
    assert len(embedded.embeddings) == 1


async def test_async_chat_completions(aclient: AsyncClient, garden: GardenServer) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    completion = await aclient.chat_completions(DEFAULT_MODEL, messages, max_tokens=4, seed=42)
    assert completion.choices[0].finish_reason in ("length", "stop")
    check_telemetry(completion.telemetry, garden.url)
    stream = await aclient.chat_completions(
        DEFAULT_MODEL, messages, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert check_telemetry(stream.telemetry, garden.url, stream=True).tokens_out == 4


async def test_async_management_and_errors(aclient: AsyncClient, tmp_path: Path) -> None:
    created = await aclient.create("client-async", from_=DEFAULT_MODEL, system="Hi.")
    assert [r.status async for r in created][-1] == "success"
    assert (await aclient.copy("client-async", "client-async2")).status == "success"
    for name in ("client-async", "client-async2"):
        assert (await aclient.delete(name)).status == "success"
    with pytest.raises(ModelNotFound) as info:
        await aclient.delete("client-async")
    assert info.value.status_code == 404 and "not found" in str(info.value)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"async blob\n" * 100)
    digest = await aclient.upload_blob(blob)
    assert await aclient.upload_blob(blob) == digest
    with pytest.raises(ResponseError) as failed:  # no registry answers on that port
        await aclient.pull(f"127.0.0.1:{free_port()}/library/none:tag", insecure=True)
    assert failed.value.status_code >= 400 and str(failed.value)


# --- resilience ----------------------------------------------------------------------------------


def test_a_server_restarted_on_the_same_port_is_retried(
    make_garden: Callable[..., GardenServer], restarted: list[GardenServer]
) -> None:
    server = make_garden()
    with Client(server.url, options=PATIENT) as c:
        assert c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST).done
        server.stop()
        assert not c.health()
        restart(server, restarted)
        reply = c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST)
        stream = c.chat(
            DEFAULT_MODEL, [{"role": "user", "content": "hi"}], options=FAST, stream=True
        )
        assert list(stream)[-1].done
    stats = check_telemetry(reply.telemetry, server.url)
    assert stats.retries >= 1 and stats.hosts_tried == (server.url,) * stats.attempts
    assert reply.done and reply.eval_count == 4


def test_the_breaker_opens_fails_fast_and_recovers(
    make_garden: Callable[..., GardenServer], restarted: list[GardenServer]
) -> None:
    server = make_garden()
    sent: list[str] = []
    stats: list[CallStats] = []
    options = ClientOptions(
        retry=RetryPolicy(max_retries=0), breaker=BreakerPolicy(failure_threshold=2, cooldown=1.0)
    )
    hooks = {"request": [lambda request: sent.append(request.url.path)]}
    with Client(server.url, options=options, on_call=stats.append, event_hooks=hooks) as c:
        assert c.list().models
        server.stop()
        for _ in range(2):
            with pytest.raises(Unavailable) as down:
                c.list()
            assert not isinstance(down.value, CircuitOpen)
        assert c.breaker_states()[(server.url, "/api/tags")] is BreakerState.OPEN
        before = len(sent)
        started = time.monotonic()
        with pytest.raises(CircuitOpen) as fast:
            c.list()
        assert time.monotonic() - started < 0.1 and len(sent) == before
        assert stats[-1].attempts == 0 and fast.value.retry_in is not None
        with pytest.raises(Unavailable) as other:  # another endpoint has its own breaker
            c.ps()
        assert not isinstance(other.value, CircuitOpen) and len(sent) == before + 1
        restart(server, restarted)
        with pytest.raises(CircuitOpen):  # back or not, it stays open for the cooldown
            c.list()
        assert len(sent) == before + 1
        assert c.wait_ready(30)  # health checks bypass the breaker
        deadline = time.monotonic() + 5
        while c.breaker_states()[(server.url, "/api/tags")] is BreakerState.OPEN:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert c.breaker_states()[(server.url, "/api/tags")] is BreakerState.HALF_OPEN
        assert DEFAULT_MODEL in {m.name for m in c.list().models}
        assert c.breaker_states()[(server.url, "/api/tags")] is BreakerState.CLOSED
    assert stats[-1].ok and stats[-1].attempts == 1


def test_failover_between_two_servers(garden: GardenServer) -> None:
    dead = dead_url()
    stats: list[CallStats] = []
    options = ClientOptions(breaker=BreakerPolicy(failure_threshold=1, cooldown=60))
    with Client([dead, garden.url], options=options, on_call=stats.append) as c:
        assert c.base_url == dead and c.hosts == (dead, garden.url)
        first = c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST)
        assert first.telemetry is not None and first.telemetry.hosts_tried == (dead, garden.url)
        assert first.telemetry.base_url == garden.url and first.telemetry.retries == 1
        second = c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST)
        assert second.telemetry is not None and second.telemetry.hosts_tried == (garden.url,)
        streamed = list(c.chat(DEFAULT_MODEL, [], stream=True))  # another endpoint: fails over
        assert streamed and stats[-1].hosts_tried == (dead, garden.url)
        assert c.health().base_url == garden.url


async def test_async_failover_and_fail_fast(garden: GardenServer) -> None:
    dead, also_dead = dead_url(), dead_url()
    options = ClientOptions(
        retry=RetryPolicy(max_retries=1, base_delay=0.01),
        breaker=BreakerPolicy(failure_threshold=2, cooldown=60),
    )
    async with AsyncClient([dead, also_dead], options=options) as down:
        with pytest.raises(Unavailable):
            await down.version()
        started = time.monotonic()
        with pytest.raises(CircuitOpen):
            await down.version()
        assert time.monotonic() - started < 0.1
        assert not (await down.health()).ok
        with pytest.raises(Unavailable, match="no server ready"):
            await down.wait_ready(0.3)
    async with AsyncClient(f"{dead},{garden.url}", options=options) as up:
        reply = await up.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST)
        assert reply.telemetry is not None and reply.telemetry.base_url == garden.url
        stream = await up.chat_completions(
            DEFAULT_MODEL, [{"role": "user", "content": "hi"}], max_tokens=2, stream=True
        )
        assert [c async for c in stream] and stream.telemetry is not None
        assert stream.telemetry.hosts_tried == (dead, garden.url)


def test_a_full_queue_503_is_retried_until_the_server_has_room(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden(OLLAMA_MAX_QUEUE="1", OLLAMA_NUM_PARALLEL="1")
    first_line = threading.Event()
    finished: list[float] = []

    def occupy() -> None:
        with httpx.stream(
            "POST", server.url + "/api/generate", json=LONG_GENERATE, timeout=60
        ) as r:
            lines = r.iter_lines()
            next(lines)
            first_line.set()
            for _ in lines:
                pass
        finished.append(time.monotonic())

    def queue_one() -> None:
        body = {"model": DEFAULT_MODEL, "prompt": "hi", "stream": False, "options": FAST}
        httpx.post(server.url + "/api/generate", json=body, timeout=60)

    long_one = threading.Thread(target=occupy)
    long_one.start()
    assert first_line.wait(30)
    queued = threading.Thread(target=queue_one)
    queued.start()
    server.wait_queue(1)  # it holds the one queue place
    statuses: list[int] = []
    hooks = {"response": [lambda response: statuses.append(response.status_code)]}
    with Client(server.url, options=PATIENT, event_hooks=hooks) as c:
        reply = c.generate(DEFAULT_MODEL, "1, 2,", raw=True, options=FAST)
    done_at = time.monotonic()
    long_one.join(30)
    queued.join(30)
    assert reply.done and reply.eval_count == 4
    assert statuses[0] == 503 and statuses[-1] == 200 and set(statuses) == {503, 200}
    assert reply.telemetry is not None and reply.telemetry.retries == len(statuses) - 1
    assert finished and finished[0] <= done_at  # it got in only once the long one was done


def test_a_stream_that_breaks_after_data_raises_and_is_not_retried(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    stats: list[CallStats] = []
    with Client(server.url, options=PATIENT, on_call=stats.append) as c:
        stream = c.generate(
            DEFAULT_MODEL, str(LONG_GENERATE["prompt"]), raw=True, options=LONG_OPTIONS, stream=True
        )
        assert next(stream).response is not None
        server.proc.send_signal(signal.SIGKILL)  # the gateway dies mid-stream
        server.proc.wait(10)
        with pytest.raises(StreamInterrupted):
            for _ in stream:
                pass
    assert stats[-1].attempts == 1 and stats[-1].error == "StreamInterrupted"
    assert stats[-1].chunks >= 1
    for runner in server.runners():  # the killed gateway could not stop its runner
        with contextlib.suppress(psutil.Error):
            runner.kill()
