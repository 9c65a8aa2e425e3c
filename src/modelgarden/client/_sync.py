"""The synchronous client: ``ollama.Client``'s method names over ``httpx``."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import httpx

from modelgarden.client._base import (
    Call,
    drop_none,
    parse_body,
    parse_line,
    raise_for,
    resolve_host,
)
from modelgarden.client.errors import Unavailable
from modelgarden.wire.ollama import (
    ChatResponse,
    EmbedResponse,
    GenerateResponse,
    ListResponse,
    ProgressResponse,
    PsResponse,
    ShowResponse,
    VersionResponse,
)


class Client:
    """A synchronous client for a modelgarden (or Ollama) server; owns one connection pool."""

    def __init__(self, host: str | None = None, *, timeout: float | None = None) -> None:
        self.base_url = resolve_host(host)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _send(self, call: Call) -> httpx.Response:
        try:
            request = self._http.build_request(call.method, call.path, json=call.json)
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unavailable(f"could not connect to {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            body = response.read()
            response.close()
            raise_for(response.status_code, body, response.headers.get("retry-after"))
        return response

    def _bytes(self, call: Call) -> bytes:
        response = self._send(call)
        try:
            return response.read()
        finally:
            response.close()

    def _lines(self, call: Call, model: Any) -> Iterator[Any]:
        response = self._send(call)
        try:
            for line in response.iter_lines():
                record = parse_line(line.encode(), model)
                if record is not None:
                    yield record
        except httpx.TransportError as exc:
            raise Unavailable(f"connection to {self.base_url} broke: {exc}") from None
        finally:
            response.close()

    # -- catalogue -----------------------------------------------------------------------------

    def version(self) -> VersionResponse:
        """The server's Ollama API version."""
        return parse_body(self._bytes(Call("GET", "/api/version")), VersionResponse)

    def list(self) -> ListResponse:
        """Installed models."""
        return parse_body(self._bytes(Call("GET", "/api/tags")), ListResponse)

    def show(self, model: str) -> ShowResponse:
        """Details of one model."""
        return parse_body(self._bytes(Call("POST", "/api/show", {"model": model})), ShowResponse)

    def ps(self) -> PsResponse:
        """Models loaded now."""
        return parse_body(self._bytes(Call("GET", "/api/ps")), PsResponse)

    # -- inference -----------------------------------------------------------------------------

    @overload
    def generate(
        self, model: str, prompt: str = "", *, stream: Literal[False] = False, **kw: Any
    ) -> GenerateResponse: ...
    @overload
    def generate(
        self, model: str, prompt: str = "", *, stream: Literal[True], **kw: Any
    ) -> Iterator[GenerateResponse]: ...
    def generate(
        self, model: str, prompt: str = "", *, stream: bool = False, **kw: Any
    ) -> GenerateResponse | Iterator[GenerateResponse]:
        """``/api/generate``; ``stream=True`` gives an iterator of chunks."""
        call = Call(
            "POST",
            "/api/generate",
            drop_none({"model": model, "prompt": prompt, "stream": stream, **kw}),
            stream,
        )
        if stream:
            return self._lines(call, GenerateResponse)
        return parse_body(self._bytes(call), GenerateResponse)

    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[dict[str, Any]] | None = None,
        *,
        stream: Literal[False] = False,
        **kw: Any,
    ) -> ChatResponse: ...
    @overload
    def chat(
        self,
        model: str,
        messages: Sequence[dict[str, Any]] | None = None,
        *,
        stream: Literal[True],
        **kw: Any,
    ) -> Iterator[ChatResponse]: ...
    def chat(
        self,
        model: str,
        messages: Sequence[dict[str, Any]] | None = None,
        *,
        stream: bool = False,
        **kw: Any,
    ) -> ChatResponse | Iterator[ChatResponse]:
        """``/api/chat``; ``stream=True`` gives an iterator of chunks."""
        body = drop_none({"model": model, "messages": list(messages or []), "stream": stream, **kw})
        call = Call("POST", "/api/chat", body, stream)
        if stream:
            return self._lines(call, ChatResponse)
        return parse_body(self._bytes(call), ChatResponse)

    def embed(self, model: str, input: str | Sequence[str], **kw: Any) -> EmbedResponse:
        """``/api/embed``: one vector per input."""
        body = drop_none(
            {"model": model, "input": input if isinstance(input, str) else list(input), **kw}
        )
        return parse_body(self._bytes(Call("POST", "/api/embed", body)), EmbedResponse)

    # -- management ----------------------------------------------------------------------------

    def create(self, model: str, *, stream: bool = False, **kw: Any) -> Iterator[ProgressResponse]:
        """``/api/create``; yields the progress records."""
        body = drop_none({"model": model, "stream": True, **kw})
        return self._lines(Call("POST", "/api/create", body, True), ProgressResponse)

    def copy(self, source: str, destination: str) -> None:
        """``/api/copy``."""
        self._bytes(Call("POST", "/api/copy", {"source": source, "destination": destination}))

    def delete(self, model: str) -> None:
        """``/api/delete``."""
        self._bytes(Call("DELETE", "/api/delete", {"model": model}))

    def upload_blob(self, path: Path) -> str:
        """Upload a file as a blob unless the server has it; returns its digest."""
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        digest = f"sha256:{h.hexdigest()}"
        try:
            head = self._http.head(f"/api/blobs/{digest}")
            if head.status_code == 200:
                return digest

            def chunks() -> Iterator[bytes]:
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        yield chunk

            response = self._http.post(f"/api/blobs/{digest}", content=chunks())
        except httpx.TransportError as exc:
            raise Unavailable(f"could not connect to {self.base_url}: {exc}") from None
        raise_for(response.status_code, response.content, response.headers.get("retry-after"))
        return digest
