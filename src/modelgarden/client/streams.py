"""Streamed answers: iterators of typed chunks that know their call's telemetry.

Nothing is sent until the first chunk is asked for; errors (a missing model, an
unreachable server) are raised there. ``telemetry`` is set once the stream ends: read to
the end, failed, or closed early (``close()``, ``with``, or ``break`` then garbage
collection).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator
from typing import TypeVar

from modelgarden.client._plan import CallPlan
from modelgarden.client.telemetry import CallStats

T = TypeVar("T")


class Stream(Iterator[T]):
    """A synchronous stream: owns the chunk generator and the call's plan (for telemetry)."""

    def __init__(self, chunks: Generator[T, None, None], plan: CallPlan) -> None:
        self._chunks = chunks
        self._plan = plan

    def __iter__(self) -> Stream[T]:
        return self

    def __next__(self) -> T:
        return next(self._chunks)

    def close(self) -> None:
        """Stop early: closes the connection (the server stops generating)."""
        self._chunks.close()

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def telemetry(self) -> CallStats | None:
        """The call's telemetry, once the stream has ended (``None`` before)."""
        return self._plan.stats


class AsyncStream(AsyncIterator[T]):
    """An asynchronous stream: owns the chunk generator and the call's plan (for telemetry)."""

    def __init__(self, chunks: AsyncGenerator[T, None], plan: CallPlan) -> None:
        self._chunks = chunks
        self._plan = plan

    def __aiter__(self) -> AsyncStream[T]:
        return self

    async def __anext__(self) -> T:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stop early: closes the connection (the server stops generating)."""
        await self._chunks.aclose()

    async def __aenter__(self) -> AsyncStream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def telemetry(self) -> CallStats | None:
        """The call's telemetry, once the stream has ended (``None`` before)."""
        return self._plan.stats
