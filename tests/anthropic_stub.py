"""A local stand-in for Anthropic's API, answering with the real service's recorded shapes.

The internet cannot be reached from the test machines, so this small aiohttp app plays
Anthropic's part: ``GET /v1/models`` (``data`` of ``{"type": "model", "id",
"display_name", "created_at"}`` with ``has_more``/``first_id``/``last_id``),
``POST /v1/messages`` (``msg_01...`` ids, ``toolu_01...`` tool ids, ``usage`` with the cache
counters and ``service_tier``; SSE streams of ``message_start`` with ``output_tokens: 1``,
``ping``, content blocks with ``thinking_delta``/``signature_delta``/``text_delta``/
``input_json_delta`` pieces, ``message_delta`` carrying only ``output_tokens`` and
``message_stop``), ``POST /v1/messages/count_tokens`` and its error bodies
(``{"type": "error", "error": {"type", "message"}, "request_id"}``: 401 for a bad
``x-api-key``, 400 without ``anthropic-version``, 404 for an unknown model, 529 when
overloaded). Every request's headers and body are recorded so tests can check what
reached the upstream.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from loopback.threaded import ThreadedApp

MODELS = {"claude-sonnet-4-5-20250929": "Claude Sonnet 4.5", "claude-haiku-4-5": "Claude Haiku 4.5"}
TEXT = "Hello from Claude."
AFTER_TOOL = "It is sunny in Paris."
USAGE = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "output_tokens": 6,
    "service_tier": "standard",
}


def _error(status: int, kind: str, message: str) -> web.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return web.json_response({**body, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}, status=status)


class AnthropicStub(ThreadedApp):
    """Runs the stand-in on a free loopback port in a background thread."""

    def __init__(self, key: str = "sk-ant-test-key") -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        #: Answer every message with Anthropic's 529 overloaded_error.
        self.overloaded = False
        super().__init__()

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)

    def _refusal(self, request: web.Request, body: dict[str, Any] | None) -> web.Response | None:
        """Anthropic's checks, in its order: key, version header, model."""
        if request.headers.get("x-api-key") != self.key:
            return _error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _error(400, "invalid_request_error", "anthropic-version: header is required")
        if body is not None and body.get("model") not in MODELS:
            return _error(404, "not_found_error", f"model: {body.get('model')}")
        return None

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "headers": dict(request.headers)})
        if (refused := self._refusal(request, None)) is not None:
            return refused
        data = [
            {"type": "model", "id": m, "display_name": d, "created_at": "2025-09-29T00:00:00Z"}
            for m, d in MODELS.items()
        ]
        ids = list(MODELS)
        return web.json_response(
            {"data": data, "has_more": False, "first_id": ids[0], "last_id": ids[-1]}
        )

    async def count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if (refused := self._refusal(request, body)) is not None:
            return refused
        return web.json_response({"input_tokens": 14})

    def _content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """What the model says: a thought when asked, a tool call when offered tools (until
        a result comes back), else text."""
        blocks: list[dict[str, Any]] = []
        if (body.get("thinking") or {}).get("type") == "enabled":
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": "Let me think.",
                    "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3h",
                }
            )
        last = body["messages"][-1]["content"]
        answered = isinstance(last, list) and any(b.get("type") == "tool_result" for b in last)
        tools, choice = body.get("tools") or [], body.get("tool_choice") or {}
        if tools and not answered and choice.get("type") != "none":
            name = choice.get("name") or tools[0]["name"]
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_01A09q90qw90lq917835lq9",
                    "name": name,
                    "input": {"city": "Paris"},
                }
            )
        else:
            blocks.append({"type": "text", "text": AFTER_TOOL if answered else TEXT})
        return blocks

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if (refused := self._refusal(request, body)) is not None:
            return refused
        if self.overloaded:
            return _error(529, "overloaded_error", "Overloaded")
        if not isinstance(body.get("max_tokens"), int):
            return _error(400, "invalid_request_error", "max_tokens: Field required")
        content = self._content(body)
        stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        message = {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": USAGE,
        }
        if body.get("stream"):
            return await self._stream(request, message)
        return web.json_response(message)

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            await response.write(
                f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            )

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {**USAGE, "output_tokens": 1},
        }
        await send("message_start", {"message": start})
        await send("ping", {})
        for index, block in enumerate(message["content"]):
            await self._block(send, index, block)
        delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
        await send("message_delta", {"delta": delta, "usage": {"output_tokens": 6}})
        await send("message_stop", {})
        await response.write_eof()
        return response

    @staticmethod
    async def _block(send: Any, index: int, block: dict[str, Any]) -> None:
        kind = block["type"]
        if kind == "thinking":
            await send(
                "content_block_start",
                {
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            )
            await send(
                "content_block_delta",
                {
                    "index": index,
                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]},
                },
            )
            await send(
                "content_block_delta",
                {
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": block["signature"]},
                },
            )
        elif kind == "text":
            await send(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for word in block["text"].split(" "):
                piece = word if word == block["text"].split(" ")[0] else " " + word
                await send(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
        else:
            start = {**block, "input": {}}
            await send("content_block_start", {"index": index, "content_block": start})
            args = json.dumps(block["input"])
            for piece in ("", args[:9], args[9:]):
                await send(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
        await send("content_block_stop", {"index": index})
