"""Stand-ins for the fast tier: a clock that moves only when told, and a backend in memory.

Nothing here opens a socket or starts a process: tests built on them run the app
in-process (``httpx.ASGITransport``) and finish in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from modelgarden.backends.base import Api, BackendRequest, BackendResponse, described
from modelgarden.errors import GardenError, ModelNotFound
from modelgarden.wire.ollama import ListModel, ModelDetails, PsModel, ShowResponse

WHEN = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class FakeClock:
    """Monotonic seconds that move only when told to."""

    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat_lines(content: str) -> list[dict[str, Any]]:
    """An Ollama chat stream answering ``content``: one piece, then the final record."""
    return [
        {"model": "m", "created_at": "2030-01-01T00:00:00Z",
         "message": {"role": "assistant", "content": content}, "done": False},
        {"model": "m", "created_at": "2030-01-01T00:00:00Z",
         "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
         "prompt_eval_count": 3, "eval_count": 1},
    ]  # fmt: skip


@dataclass
class FakeBackend:
    """An Ollama-speaking backend in memory: serves ``models``, answers each chat with its
    name (so a test sees who answered), or raises ``fail`` while it is set."""

    name: str
    models: list[str]
    kind: str = "fake"
    apis: frozenset[Api] = frozenset({Api.OLLAMA})
    fail: GardenError | None = None
    sent: list[BackendRequest] = field(default_factory=list)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_models(self) -> list[ListModel]:
        return [
            ListModel(name=m, model=m, modified_at=WHEN, size=0, digest="0",
                      details=ModelDetails(format="api"))
            for m in self.models
        ]  # fmt: skip

    async def has_model(self, model: str) -> bool:
        return model in self.models

    async def show(self, model: str, verbose: bool = False) -> ShowResponse:
        if model not in self.models:
            raise ModelNotFound(model)
        details = ModelDetails(format="api")
        return ShowResponse(details=details, model_info={}, capabilities=[], modified_at=WHEN)

    async def running(self) -> list[PsModel]:
        return []

    def upstream_id(self, model: str) -> str:
        return model

    def describe(self) -> dict[str, Any]:
        return described(self, up=self.fail is None, active=0, waiting=0, rejected=0)

    async def send(self, request: BackendRequest) -> BackendResponse:
        self.sent.append(request)
        if self.fail is not None:
            raise self.fail

        async def body() -> AsyncIterator[bytes]:
            for line in chat_lines(f"from {self.name}"):
                yield orjson.dumps(line) + b"\n"

        return BackendResponse(200, "application/x-ndjson", body(), Api.OLLAMA)
