"""A model server that answers at once: the upstream of ``bench_relay.py``.

It speaks both families a gateway relays to, with the shapes the real servers send:

* Ollama: ``GET /api/tags``; ``POST /api/chat`` answered as one JSON object
  (``"stream": false``) or as NDJSON, one record per chunk and a final ``done`` record;
* OpenAI: ``GET /v1/models``; ``POST /v1/chat/completions`` answered as a
  ``chat.completion`` object or as SSE ``chat.completion.chunk`` events ending in
  ``data: [DONE]``.

A streamed answer has as many content chunks as the request asks for tokens
(``options.num_predict`` for Ollama, ``max_tokens`` for OpenAI; ``--chunks`` when absent),
each written on its own as a real server writes tokens, and each different (" 1", " 2", ...).
Every record is made once and kept, so the stub spends its time on HTTP, not on building
answers.

    python benchmarks/stub_upstream.py --port 18000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
import uvloop
from aiohttp import web

OLLAMA_MODEL = "stub:latest"
OPENAI_MODEL = "stub-openai"
CREATED = 1_730_000_000
STAMP = "2026-01-01T00:00:00.000000Z"
TEXT = "Hello from the stub."


def ollama_record(content: str, done: bool, **extra: Any) -> bytes:
    record: dict[str, Any] = {
        "model": OLLAMA_MODEL,
        "created_at": STAMP,
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        record.update(
            done_reason="stop",
            total_duration=1_000_000,
            load_duration=1_000,
            prompt_eval_count=12,
            prompt_eval_duration=100_000,
            eval_count=extra.get("eval_count", 6),
            eval_duration=900_000,
        )
    return orjson.dumps(record)


def openai_chunk(delta: dict[str, Any], finish: str | None, usage: bool = False) -> bytes:
    record: dict[str, Any] = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage:
        record["usage"] = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    return b"data: " + orjson.dumps(record) + b"\n\n"


OLLAMA_WHOLE = ollama_record(TEXT, True)
OPENAI_WHOLE = orjson.dumps(
    {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": CREATED,
        "model": OPENAI_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TEXT},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
)
OPENAI_FIRST = openai_chunk({"role": "assistant", "content": ""}, None)
OPENAI_LAST = openai_chunk({}, "stop", usage=True) + b"data: [DONE]\n\n"
TAGS = orjson.dumps(
    {
        "models": [
            {
                "name": OLLAMA_MODEL,
                "model": OLLAMA_MODEL,
                "modified_at": STAMP,
                "size": 1,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "stub", "families": ["stub"]},
            }
        ]
    }
)
MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": OPENAI_MODEL, "object": "model", "created": CREATED, "owned_by": "stub"}],
    }
)
JSON = "application/json"


class Stub:
    """The handlers; ``default_chunks`` is the stream length when a request names none.

    Fault modes for the reliability suite: ``delay`` seconds between streamed records (a
    model generating), and ``stall_after`` records after which a stream goes silent
    forever (an upstream that hangs mid-answer).
    """

    def __init__(self, default_chunks: int, delay: float = 0.0, stall_after: int = 0) -> None:
        self.default_chunks = default_chunks
        self.delay = delay
        self.stall_after = stall_after
        self.ollama_chunks: list[bytes] = []
        self.openai_chunks: list[bytes] = []

    def chunks(self, family: str, count: int) -> list[bytes]:
        """The first ``count`` content records: " 1", " 2", ... (a proxy may refuse a stream
        that repeats one chunk over and over, as LiteLLM does after 100)."""
        made = self.ollama_chunks if family == "ollama" else self.openai_chunks
        for n in range(len(made) + 1, count + 1):
            if family == "ollama":
                made.append(ollama_record(f" {n}", False) + b"\n")
            else:
                made.append(openai_chunk({"content": f" {n}"}, None))
        return made[:count]

    async def tags(self, request: web.Request) -> web.Response:
        return web.Response(body=TAGS, content_type=JSON)

    async def models(self, request: web.Request) -> web.Response:
        return web.Response(body=MODELS, content_type=JSON)

    async def _stream(
        self, request: web.Request, media: str, records: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": media})
        await response.prepare(request)
        for sent, record in enumerate(records):
            if self.stall_after and sent == self.stall_after:
                await asyncio.Event().wait()  # silent until the client gives up
            await response.write(record)
            if self.delay:
                await asyncio.sleep(self.delay)
        await response.write_eof()
        return response

    async def ollama_chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body.get("stream") is False:
            return web.Response(body=OLLAMA_WHOLE, content_type=JSON)
        count = int((body.get("options") or {}).get("num_predict") or self.default_chunks)
        final = ollama_record("", True, eval_count=count) + b"\n"
        records = [*self.chunks("ollama", count), final]
        return await self._stream(request, "application/x-ndjson", records)

    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if not body.get("stream"):
            return web.Response(body=OPENAI_WHOLE, content_type=JSON)
        count = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        content = self.chunks("openai", count or self.default_chunks)
        records = [OPENAI_FIRST, *content, OPENAI_LAST]
        return await self._stream(request, "text/event-stream", records)


def make_app(default_chunks: int, delay: float = 0.0, stall_after: int = 0) -> web.Application:
    stub = Stub(default_chunks, delay, stall_after)
    app = web.Application()
    app.router.add_get("/api/tags", stub.tags)
    app.router.add_get("/v1/models", stub.models)
    app.router.add_post("/api/chat", stub.ollama_chat)
    app.router.add_post("/v1/chat/completions", stub.openai_chat)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--chunks", type=int, default=256, help="stream length by default")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds between records")
    parser.add_argument("--stall-after", type=int, default=0, help="records, then silence")
    args = parser.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    started = time.strftime("%H:%M:%S")
    print(f"stub upstream on http://{args.host}:{args.port} ({started})", flush=True)
    app = make_app(args.chunks, args.delay, args.stall_after)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
