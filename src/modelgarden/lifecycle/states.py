"""Where a runner is in its life, and the only moves it may make.

Both kinds of runner the gateway drives, a local engine process
(:class:`~modelgarden.lifecycle.process.RunnerProcess`) and a scale-to-zero container on
Modal (:class:`~modelgarden.backends.modal.ModalReplica`), keep their state in a
:class:`Lifecycle`, which refuses a move :data:`MOVES` does not list: a bug that would have
left a runner believed ready while it was never started fails where it happens instead.
"""

from __future__ import annotations

import enum


class RunnerState(enum.Enum):
    """Where a runner is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"


#: The moves a runner may make. Staying where it is is always allowed (and does nothing):
#: several paths may notice the same exit.
MOVES: dict[RunnerState, frozenset[RunnerState]] = {
    # Only a start leaves STOPPED.
    RunnerState.STOPPED: frozenset({RunnerState.STARTING}),
    # Up; asked to stop while loading; or the start failed.
    RunnerState.STARTING: frozenset({RunnerState.READY, RunnerState.STOPPING, RunnerState.STOPPED}),
    # Asked to stop; or gone on its own (a crash, an idle container scaled down).
    RunnerState.READY: frozenset({RunnerState.STOPPING, RunnerState.STOPPED}),
    RunnerState.STOPPING: frozenset({RunnerState.STOPPED}),
}


class IllegalMove(RuntimeError):
    """A runner was told to move where :data:`MOVES` does not allow (a bug, not bad input)."""


class Lifecycle:
    """Owns one runner's :class:`RunnerState` and checks every move against :data:`MOVES`."""

    __slots__ = ("_state", "what")

    def __init__(self, what: str) -> None:
        #: What the runner is, for the error message.
        self.what = what
        self._state = RunnerState.STOPPED

    @property
    def state(self) -> RunnerState:
        """Where the runner is now."""
        return self._state

    def move(self, to: RunnerState) -> RunnerState:
        """Move to ``to``; return where the runner was. Raises :class:`IllegalMove`."""
        was = self._state
        if to is not was and to not in MOVES[was]:
            raise IllegalMove(f"{self.what}: cannot go from {was.value} to {to.value}")
        self._state = to
        return was
