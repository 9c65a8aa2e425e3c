"""The primary's restart decision for a relay worker that died: a pure function, no process."""

from __future__ import annotations

from modelgarden.workers.supervisor import (
    FIRST_PAUSE,
    MAX_RESTART_PAUSE,
    STABLE_AFTER,
    restart_pause,
)


def test_a_worker_that_keeps_dying_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    pauses: list[float] = []
    pause = FIRST_PAUSE
    for _ in range(8):
        pause = restart_pause(pause, lived=0.1)
        pauses.append(pause)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, *[MAX_RESTART_PAUSE] * 3]


def test_a_worker_that_had_been_up_a_while_is_started_again_after_the_first_pause() -> None:
    assert restart_pause(MAX_RESTART_PAUSE, lived=STABLE_AFTER + 0.1) == FIRST_PAUSE
    assert restart_pause(8.0, lived=STABLE_AFTER) == 16.0  # exactly the bound: not yet stable
