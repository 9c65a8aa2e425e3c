"""A local stand-in for OpenRouter, answering with the real service's recorded shapes.

The internet cannot be reached from the test machines, so this small aiohttp app plays
OpenRouter's part: ``GET /api/v1/models`` (its ``data`` list with ``vendor/model`` ids),
``POST /api/v1/chat/completions`` (``gen-`` ids, ``provider``, ``usage``; SSE streams with
``: OPENROUTER PROCESSING`` comment lines before the first event, as OpenRouter sends) and
its error bodies (``{"error": {"message", "code"}}``, 401 for a bad key). Every request's
headers are recorded so tests can check what reached the upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web
from loopback.threaded import ThreadedApp

MODELS = ["meta-llama/llama-3.1-8b-instruct", "mistralai/mistral-7b-instruct:free"]


class OpenRouterStub(ThreadedApp):
    """Runs the stand-in on a free loopback port in a background thread."""

    def __init__(self, key: str = "sk-or-test-key", port: int = 0) -> None:
        self.key = key
        self.requests: list[dict[str, Any]] = []
        self.fail_mid_stream = False
        #: Seconds between streamed words (a slow upstream).
        self.word_delay = 0.0
        super().__init__(port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/models", self.models)
        app.router.add_post("/api/v1/chat/completions", self.chat)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.key}"

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": {"message": message, "code": status}}, status=status)

    async def models(self, request: web.Request) -> web.Response:
        self.requests.append({"path": request.path, "headers": dict(request.headers)})
        data = [
            {"id": m, "name": m.split("/")[1], "created": 1721260800, "context_length": 131072}
            for m in MODELS
        ]
        return web.json_response({"data": data})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        if not self._authorized(request):
            return self._error(401, "No auth credentials found")
        if body.get("model") not in MODELS:
            return self._error(400, f"{body.get('model')} is not a valid model ID")
        tools = body.get("tools") or []
        text = "Hello from the stand-in."
        call = None
        if tools:
            name = tools[0]["function"]["name"]
            call = {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"city": "Paris"})},
            }
        if body.get("stream"):
            return await self._stream(request, body, text, call)
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [call]
        return web.json_response(
            {
                "id": "gen-1700000000-abcdef",
                "provider": "Lambda",
                "model": body["model"],
                "object": "chat.completion",
                "created": int(time.time()),
                "choices": [
                    {
                        "logprobs": None,
                        "finish_reason": "tool_calls" if call else "stop",
                        "native_finish_reason": "stop",
                        "index": 0,
                        "message": message,
                    }
                ],
                "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
            }
        )

    async def _stream(
        self, request: web.Request, body: dict[str, Any], text: str, call: dict[str, Any] | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b": OPENROUTER PROCESSING\n\n")

        def event(delta: dict[str, Any], finish: str | None, **extra: Any) -> bytes:
            chunk = {
                "id": "gen-1700000000-abcdef",
                "provider": "Lambda",
                "model": body["model"],
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "finish_reason": finish,
                        "native_finish_reason": finish,
                        "logprobs": None,
                    }
                ],
                **extra,
            }
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        await response.write(event({"role": "assistant", "content": ""}, None))
        if call:
            args = call["function"]["arguments"]
            first = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": args[:5]},
            }
            await response.write(event({"tool_calls": [first]}, None))
            rest = {"index": 0, "function": {"arguments": args[5:]}}
            await response.write(event({"tool_calls": [rest]}, None))
        else:
            for word in text.split(" "):
                await response.write(event({"content": word + " "}, None))
                await asyncio.sleep(self.word_delay)
                if self.fail_mid_stream:
                    await asyncio.sleep(0.05)
                    assert request.transport is not None
                    request.transport.close()
                    return response
        usage = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
        await response.write(event({}, "tool_calls" if call else "stop", usage=usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
