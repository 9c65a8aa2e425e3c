"""Running a generation on the runner's worker thread and reading it from the event loop.

A :class:`Job` hands each generated :class:`Piece` to the event loop as it is made and ends
with the :class:`Outcome` (or the exception). Cancelling the reader sets the job's cancel
flag, and the engine stops at the next token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from modelgarden.runner.engine import Engine, Generation, Outcome, Piece


class Job:
    """One generation in flight: its thread-to-loop queue and its cancel flag."""

    def __init__(self, engine: Engine, generation: Generation) -> None:
        self.engine = engine
        self.generation = generation
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Piece | Outcome | BaseException] = asyncio.Queue()

    def _put(self, item: Piece | Outcome | BaseException) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _run(self) -> None:
        try:
            outcome = self.engine.generate(self.generation, self._put, self.cancel)
        except BaseException as exc:  # handed to the reader, which re-raises it
            self._put(exc)
        else:
            self._put(outcome)

    def start(self, executor: Executor) -> None:
        """Start generating on the executor's thread."""
        self._loop.run_in_executor(executor, self._run)

    async def events(self) -> AsyncIterator[Piece | Outcome]:
        """Pieces as they come, then the outcome; stops the generation if abandoned."""
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Outcome):
                    return
        finally:
            self.cancel.set()
