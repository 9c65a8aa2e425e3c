"""The runner state machine: every move it allows, every one it refuses, and the two kinds
of runner that keep their state in it."""

from __future__ import annotations

import itertools

import pytest

from modelgarden.breaker import CircuitBreaker
from modelgarden.lifecycle.process import LaunchSpec, RunnerProcess
from modelgarden.lifecycle.states import MOVES, IllegalMove, Lifecycle, RunnerState

S = RunnerState
ALLOWED = {
    (S.STOPPED, S.STARTING),
    (S.STARTING, S.READY),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.STOPPED),
    (S.READY, S.STOPPING),
    (S.READY, S.STOPPED),
    (S.STOPPING, S.STOPPED),
}


def _at(state: RunnerState) -> Lifecycle:
    life = Lifecycle("test runner")
    path = {S.STOPPED: [], S.STARTING: [S.STARTING], S.READY: [S.STARTING, S.READY],
            S.STOPPING: [S.STARTING, S.READY, S.STOPPING]}[state]  # fmt: skip
    for step in path:
        life.move(step)
    return life


@pytest.mark.parametrize(("was", "to"), list(itertools.product(S, S)))
def test_a_move_is_taken_only_if_the_table_lists_it(was: RunnerState, to: RunnerState) -> None:
    life = _at(was)
    if was is to or (was, to) in ALLOWED:
        assert life.move(to) is was
        assert life.state is to
    else:
        with pytest.raises(IllegalMove, match=f"test runner: cannot go from {was.value}"):
            life.move(to)
        assert life.state is was  # refused: nothing moved


def test_the_table_is_the_one_documented_here() -> None:
    listed = {(was, to) for was, tos in MOVES.items() for to in tos}
    assert listed == ALLOWED


async def test_a_local_runner_starts_from_stopped_only() -> None:
    runner = RunnerProcess(LaunchSpec(model_path="/nonexistent.gguf", num_ctx=512))
    assert runner.state is S.STOPPED
    runner.life.move(S.STARTING)
    with pytest.raises(RuntimeError, match="cannot start a runner that is starting"):
        await runner.start()


def test_a_modal_container_is_never_ready_without_waking() -> None:
    from modelgarden.backends.modal import ModalReplica

    replica = ModalReplica("modal://app/Cls", CircuitBreaker(), calls=None)  # type: ignore[arg-type]
    with pytest.raises(IllegalMove, match="Modal class modal://app/Cls"):
        replica.life.move(S.READY)
