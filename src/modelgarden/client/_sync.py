"""The synchronous client: ``ollama.Client``'s methods over ``httpx``, with failover,
retries, circuit breakers and telemetry (decided in :mod:`modelgarden.client._plan`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar, Unpack, overload

import httpx
from pydantic import BaseModel

from modelgarden import __version__
from modelgarden.client import _build as build
from modelgarden.client._base import Call, auth_headers, resolve_hosts
from modelgarden.client._build import (
    ChatCompletionFields,
    ChatFields,
    CreateFields,
    EmbedFields,
    GenerateFields,
    MessageLike,
)
from modelgarden.client._plan import Attempt, CallPlan, ClientCore
from modelgarden.client._resilience import BreakerState
from modelgarden.client.openai_types import ChatCompletion, ChatCompletionChunk
from modelgarden.client.options import ClientOptions
from modelgarden.client.streams import Stream
from modelgarden.client.telemetry import OnCall
from modelgarden.client.types import (
    ChatResponse,
    EmbedResponse,
    GenerateResponse,
    Health,
    ListResponse,
    ProgressResponse,
    PsResponse,
    ShowResponse,
    StatusResponse,
    VersionResponse,
)

M = TypeVar("M", bound=BaseModel)
CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """The ``sha256:<hex>`` digest of a file, as blobs are named."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


class Client:
    """A synchronous client for one modelgarden (or Ollama) service, or several for failover.

    Owns an ``httpx`` connection pool and a :class:`ClientCore` (base URLs, options,
    circuit breakers, the ``on_call`` callback). ``host`` is one address, a list, or a
    comma-separated string; without it ``GARDEN_HOST``, else ``OLLAMA_HOST``, else
    ``127.0.0.1:11434``. ``api_key`` (else ``GARDEN_API_KEY``, else ``OLLAMA_API_KEY``) is sent
    as a bearer token. ``timeout`` replaces ``options.timeout``; other keyword arguments
    go to ``httpx.Client`` (``headers``, ``event_hooks``, ``verify``...).
    """

    def __init__(
        self,
        host: str | Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        options: ClientOptions | None = None,
        on_call: OnCall | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        opts = options or ClientOptions()
        if timeout is not None:
            opts = replace(opts, timeout=timeout)
        self._core = ClientCore(resolve_hosts(host), opts, on_call)
        kwargs.setdefault("follow_redirects", True)
        headers = httpx.Headers({"user-agent": f"modelgarden-client/{__version__}"})
        headers.update(auth_headers(api_key))
        headers.update(kwargs.pop("headers", None) or {})
        self._http = httpx.Client(timeout=self._core.timeout(None), headers=headers, **kwargs)

    @property
    def base_url(self) -> str:
        """The first (preferred) base URL."""
        return self._core.hosts[0]

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every base URL, in failover order."""
        return self._core.hosts

    @property
    def options(self) -> ClientOptions:
        """The client's resilience settings."""
        return self._core.options

    def breaker_states(self) -> dict[tuple[str, str], BreakerState]:
        """Each endpoint's circuit breaker state now, keyed by (base URL, path)."""
        return self._core.breaker_states()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(
        self, plan: CallPlan, attempt: Attempt, limits: httpx.Timeout, stream: bool
    ) -> httpx.Response:
        call = plan.call
        headers: dict[str, str] = {}
        content: bytes | Iterator[bytes] | None = plan.content
        if call.upload is not None:
            content, headers["content-type"] = _file_chunks(call.upload), "application/octet-stream"
        elif content is not None:
            headers["content-type"] = "application/json"
        if plan.trace is not None:
            headers.update(plan.trace.headers)
        request = self._http.build_request(
            call.method, attempt.url, content=content, headers=headers, timeout=limits
        )
        return self._http.send(request, stream=stream)

    def _exchange(self, plan: CallPlan, timeout: float | None) -> bytes:
        """Attempt until an answer is accepted; its body."""
        limits = self._core.timeout(timeout)
        try:
            while True:
                attempt = plan.next_attempt()
                if attempt.delay > 0:
                    time.sleep(attempt.delay)
                try:
                    response = self._send(plan, attempt, limits, stream=False)
                except httpx.TransportError as exc:
                    plan.transport_failed(attempt, exc)
                    continue
                retry_after = response.headers.get("retry-after")
                if plan.answered(attempt, response.status_code, response.content, retry_after):
                    return bytes(response.content)
        except BaseException:
            plan.abandon()
            raise

    def _call(self, call: Call, model: type[M], timeout: float | None) -> M:
        plan = self._core.plan(call)
        return plan.result(self._exchange(plan, timeout), model)

    def _stream(self, call: Call, model: type[M], timeout: float | None) -> Stream[M]:
        plan = self._core.plan(call)
        return Stream(self._records(plan, model, timeout), plan)

    def _records(
        self, plan: CallPlan, model: type[M], timeout: float | None
    ) -> Generator[M, None, None]:
        plan.begin()
        limits = self._core.timeout(timeout)
        try:
            while True:
                attempt = plan.next_attempt()
                if attempt.delay > 0:
                    time.sleep(attempt.delay)
                try:
                    response = self._send(plan, attempt, limits, stream=True)
                except httpx.TransportError as exc:
                    plan.transport_failed(attempt, exc)
                    continue
                try:
                    status = response.status_code
                    body = response.read() if status >= 400 else b""
                    if not plan.answered(
                        attempt, status, body, response.headers.get("retry-after")
                    ):
                        continue
                    for line in response.iter_lines():
                        record = plan.record(line, model)
                        if plan.ended:
                            break
                        if record is not None:
                            yield record
                except httpx.TransportError as exc:
                    plan.transport_failed(attempt, exc)
                    continue
                finally:
                    response.close()
                plan.finish()
                return
        finally:
            plan.abandon()

    # -- health ------------------------------------------------------------------------------

    def health(self, *, timeout: float = 5.0) -> Health:
        """``GET /`` on each base URL in order; healthy when one answers 200.

        Health checks bypass retries and circuit breakers (they are how to tell that a
        server is back).
        """
        verdict: Health | None = None
        for base_url in self._core.hosts:
            started = self._core.clock()
            try:
                response = self._http.get(base_url + "/", timeout=timeout)
            except httpx.TransportError as exc:
                verdict = self._core.health(base_url, started, None, exc)
            else:
                verdict = self._core.health(base_url, started, response.status_code, None)
            if verdict.ok:
                return verdict
        assert verdict is not None
        return verdict

    def wait_ready(self, timeout: float = 30.0, *, interval: float = 0.1) -> Health:
        """Poll :meth:`health` until a server answers; raises ``Unavailable`` after ``timeout``."""
        wait = self._core.ready_wait(timeout, interval)
        while True:
            verdict = self.health(timeout=wait.probe_timeout())
            if verdict.ok:
                return verdict
            delay = wait.next_delay()
            if delay is None:
                raise wait.expired(verdict)
            time.sleep(delay)

    # -- catalogue -----------------------------------------------------------------------------

    def version(self, *, timeout: float | None = None) -> VersionResponse:
        """``/api/version``: the Ollama API version the server speaks."""
        return self._call(build.get("version", "/api/version"), VersionResponse, timeout)

    def list(self, *, timeout: float | None = None) -> ListResponse:
        """``/api/tags``: installed models."""
        return self._call(build.get("list", "/api/tags"), ListResponse, timeout)

    def show(self, model: str, *, timeout: float | None = None) -> ShowResponse:
        """``/api/show``: details of one model."""
        return self._call(build.show(model), ShowResponse, timeout)

    def ps(self, *, timeout: float | None = None) -> PsResponse:
        """``/api/ps``: models loaded now."""
        return self._call(build.get("ps", "/api/ps"), PsResponse, timeout)

    # -- inference -----------------------------------------------------------------------------

    @overload
    def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        stream: Literal[False] = False,
        timeout: float | None = None,
        **kw: Unpack[GenerateFields],
    ) -> GenerateResponse: ...
    @overload
    def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        stream: Literal[True],
        timeout: float | None = None,
        **kw: Unpack[GenerateFields],
    ) -> Stream[GenerateResponse]: ...
    @overload
    def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        stream: bool,
        timeout: float | None = None,
        **kw: Unpack[GenerateFields],
    ) -> GenerateResponse | Stream[GenerateResponse]: ...
    def generate(
        self,
        model: str = "",
        prompt: str | None = None,
        suffix: str | None = None,
        *,
        stream: bool = False,
        timeout: float | None = None,
        **kw: Unpack[GenerateFields],
    ) -> GenerateResponse | Stream[GenerateResponse]:
        """``/api/generate``: a completion; ``stream=True`` gives a :class:`Stream` of chunks."""
        call = build.generate(model, prompt, suffix, stream, kw)
        if stream:
            return self._stream(call, GenerateResponse, timeout)
        return self._call(call, GenerateResponse, timeout)

    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[False] = False,
        timeout: float | None = None,
        **kw: Unpack[ChatFields],
    ) -> ChatResponse: ...
    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: Literal[True],
        timeout: float | None = None,
        **kw: Unpack[ChatFields],
    ) -> Stream[ChatResponse]: ...
    @overload
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: bool,
        timeout: float | None = None,
        **kw: Unpack[ChatFields],
    ) -> ChatResponse | Stream[ChatResponse]: ...
    def chat(
        self,
        model: str = "",
        messages: Sequence[MessageLike] | None = None,
        *,
        stream: bool = False,
        timeout: float | None = None,
        **kw: Unpack[ChatFields],
    ) -> ChatResponse | Stream[ChatResponse]:
        """``/api/chat``: the next message; ``stream=True`` gives a :class:`Stream` of chunks."""
        call = build.chat(model, messages, stream, kw)
        if stream:
            return self._stream(call, ChatResponse, timeout)
        return self._call(call, ChatResponse, timeout)

    def embed(
        self,
        model: str = "",
        input: str | Sequence[str] = "",
        *,
        timeout: float | None = None,
        **kw: Unpack[EmbedFields],
    ) -> EmbedResponse:
        """``/api/embed``: one vector per input."""
        return self._call(build.embed(model, input, kw), EmbedResponse, timeout)

    @overload
    def chat_completions(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: Literal[False] = False,
        timeout: float | None = None,
        **kw: Unpack[ChatCompletionFields],
    ) -> ChatCompletion: ...
    @overload
    def chat_completions(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: Literal[True],
        timeout: float | None = None,
        **kw: Unpack[ChatCompletionFields],
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def chat_completions(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool,
        timeout: float | None = None,
        **kw: Unpack[ChatCompletionFields],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def chat_completions(
        self,
        model: str,
        messages: Sequence[MessageLike],
        *,
        stream: bool = False,
        timeout: float | None = None,
        **kw: Unpack[ChatCompletionFields],
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """OpenAI's ``/v1/chat/completions``; ``stream=True`` gives a :class:`Stream` of chunks."""
        call = build.chat_completions(model, messages, stream, kw)
        if stream:
            return self._stream(call, ChatCompletionChunk, timeout)
        return self._call(call, ChatCompletion, timeout)

    # -- management ----------------------------------------------------------------------------

    @overload
    def pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        stream: Literal[False] = False,
        timeout: float | None = None,
    ) -> ProgressResponse: ...
    @overload
    def pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        stream: Literal[True],
        timeout: float | None = None,
    ) -> Stream[ProgressResponse]: ...
    @overload
    def pull(
        self, model: str, *, insecure: bool = False, stream: bool, timeout: float | None = None
    ) -> ProgressResponse | Stream[ProgressResponse]: ...
    def pull(
        self,
        model: str,
        *,
        insecure: bool = False,
        stream: bool = False,
        timeout: float | None = None,
    ) -> ProgressResponse | Stream[ProgressResponse]:
        """``/api/pull``: download a model; ``stream=True`` gives the progress records."""
        call = build.pull(model, insecure, stream)
        if stream:
            return self._stream(call, ProgressResponse, timeout)
        return self._call(call, ProgressResponse, timeout)

    @overload
    def create(
        self,
        model: str,
        *,
        stream: Literal[True] = True,
        timeout: float | None = None,
        **kw: Unpack[CreateFields],
    ) -> Stream[ProgressResponse]: ...
    @overload
    def create(
        self,
        model: str,
        *,
        stream: Literal[False],
        timeout: float | None = None,
        **kw: Unpack[CreateFields],
    ) -> ProgressResponse: ...
    @overload
    def create(
        self, model: str, *, stream: bool, timeout: float | None = None, **kw: Unpack[CreateFields]
    ) -> ProgressResponse | Stream[ProgressResponse]: ...
    def create(
        self,
        model: str,
        *,
        stream: bool = True,
        timeout: float | None = None,
        **kw: Unpack[CreateFields],
    ) -> ProgressResponse | Stream[ProgressResponse]:
        """``/api/create``: the progress records (``stream=False``: only the last one).

        Unlike ``ollama``'s, it streams by default, as ``garden create`` reads it.
        """
        call = build.create(model, stream, kw)
        if stream:
            return self._stream(call, ProgressResponse, timeout)
        return self._call(call, ProgressResponse, timeout)

    def copy(
        self, source: str, destination: str, *, timeout: float | None = None
    ) -> StatusResponse:
        """``/api/copy``: the same model under another name (no weights are copied)."""
        plan = self._core.plan(build.copy(source, destination))
        return plan.status_result(self._exchange(plan, timeout))

    def delete(self, model: str, *, timeout: float | None = None) -> StatusResponse:
        """``/api/delete``."""
        plan = self._core.plan(build.delete(model))
        return plan.status_result(self._exchange(plan, timeout))

    def upload_blob(self, path: Path, *, timeout: float | None = None) -> str:
        """Upload a file as a blob unless the server has it; returns its digest."""
        digest = file_digest(path)
        plan = self._core.plan(build.blob_exists(digest))
        self._exchange(plan, timeout)
        plan.finish()
        if plan.status != 200:
            plan = self._core.plan(build.upload_blob(digest, path))
            self._exchange(plan, timeout)
            plan.finish()
        return digest
