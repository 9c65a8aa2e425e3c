"""The gateway's side of llama.cpp's server API, for one runner.

:class:`EngineClient` sends ``/completion`` (always streamed: a client that leaves closes
the connection and the engine stops that slot within a token), ``/tokenize``,
``/v1/embeddings`` and ``/props``, and maps the engine's failures to
:mod:`modelgarden.errors`: a 400 is the request's fault, anything else, or a runner that
stops answering, is :class:`RunnerFailed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from modelgarden.errors import BadRequest, GardenError, RunnerFailed
from modelgarden.upstream_http import error_message

JSON = {"content-type": "application/json"}
#: How a request fails on a pooled connection the runner had already closed (its HTTP server
#: ends idle and long-used keep-alive connections on its own): before any answer, so the
#: runner never began it and it is sent once more, on a new connection.
STALE = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)


@dataclass(frozen=True)
class EngineProps:
    """What a loaded engine says about itself (``GET /props``)."""

    slot_ctx: int
    bos_token: str
    eos_token: str
    media_marker: str
    vision: bool
    chat_template: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineProps:
        """From the ``/props`` answer."""
        settings = data.get("default_generation_settings") or {}
        return cls(
            slot_ctx=int(settings.get("n_ctx") or 0),
            bos_token=str(data.get("bos_token") or ""),
            eos_token=str(data.get("eos_token") or ""),
            media_marker=str(data.get("media_marker") or "<__media__>"),
            vision=bool((data.get("modalities") or {}).get("vision")),
            chat_template=str(data.get("chat_template") or ""),
        )


def _failure(status: int, raw: bytes) -> GardenError:
    message = error_message(raw)
    if status == 400:
        return BadRequest(message)
    return RunnerFailed(f"llama runner error: {message}")


class EngineClient:
    """Owns the conversation with one runner's HTTP API (not the connection pool)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url
        self._props: EngineProps | None = None

    async def _send(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """POST ``body`` and return the response once its head has come (once more on a
        fresh connection if a pooled one turns out closed: :data:`STALE`)."""
        data = orjson.dumps(body)
        for attempt in (1, 2):
            try:
                return await self.session.post(self.base_url + path, data=data, headers=JSON)
            except STALE as exc:
                if attempt == 2:
                    raise RunnerFailed(f"llama runner process is not answering: {exc}") from None
            except (aiohttp.ClientError, ConnectionError) as exc:
                raise RunnerFailed(f"llama runner process is not answering: {exc}") from None
        raise AssertionError("unreachable")

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self._send(path, body)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise RunnerFailed(f"llama runner process is not answering: {exc}") from None
        finally:
            response.release()
        if response.status != 200:
            raise _failure(response.status, raw)
        return orjson.loads(raw)

    async def props(self) -> EngineProps:
        """The engine's properties (read once)."""
        if self._props is None:
            try:
                async with self.session.get(self.base_url + "/props") as response:
                    data = orjson.loads(await response.read())
            except (aiohttp.ClientError, ConnectionError, orjson.JSONDecodeError) as exc:
                raise RunnerFailed(f"llama runner process is not answering: {exc}") from None
            self._props = EngineProps.from_json(data)
        return self._props

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """The model's tokens for ``text`` (special tokens in it parsed)."""
        body = {"content": text, "add_special": add_special, "parse_special": True}
        data = await self._post("/tokenize", body)
        return [int(t) for t in data.get("tokens") or []]

    async def completion(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The engine's events for a streamed ``/completion``, the last with ``stop``.

        Leaving the iterator early closes the connection, which stops the generation.
        """
        response = await self._send("/completion", body)
        if response.status != 200:
            raw = await response.read()
            response.release()
            raise _failure(response.status, raw)
        return self._events(response)

    async def _events(self, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
        done = False
        try:
            async for line in response.content:
                if line.startswith(b"data: "):
                    event = orjson.loads(line[6:])
                    yield event
                    if event.get("stop"):
                        done = True
                        return
                elif line.startswith(b"error: "):
                    raise RunnerFailed(f"llama runner error: {error_message(line[7:])}")
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise RunnerFailed(f"llama runner process stopped answering: {exc}") from None
        finally:
            if done:
                response.release()
            else:
                response.close()  # abandoned (or broken): the engine stops this slot
        raise RunnerFailed("llama runner process has terminated mid-answer")

    async def embeddings(self, inputs: list[str | list[int]]) -> tuple[list[list[float]], int]:
        """One pooled, L2-normalised vector per input, and the tokens read."""
        data = await self._post("/v1/embeddings", {"input": inputs, "encoding_format": "float"})
        rows = sorted(data.get("data") or [], key=lambda d: int(d.get("index", 0)))
        vectors = [list(map(float, row["embedding"])) for row in rows]
        return vectors, int((data.get("usage") or {}).get("prompt_tokens", 0))
