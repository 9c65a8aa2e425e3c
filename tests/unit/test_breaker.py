"""The one circuit breaker (``modelgarden.breaker``), on a fake clock: its transitions, and
how the gateway's remote backends order and describe replicas by it."""

from __future__ import annotations

import pytest

from modelgarden.backends.remote import OllamaBackend
from modelgarden.breaker import BreakerState, CircuitBreaker
from modelgarden.config.backends import BackendConfig
from tests.fakes import FakeClock

A, B = "http://a:1", "http://b:2"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_breaker_closed_open_half_open_closed(clock: FakeClock) -> None:
    breaker = CircuitBreaker(3, 10.0, clock)
    for _ in range(5):  # only consecutive failures count
        breaker.failure()
        breaker.success()
    assert breaker.state() is BreakerState.CLOSED
    for _ in range(2):
        breaker.failure()
        assert breaker.allow()
    breaker.failure()
    assert breaker.state() is BreakerState.OPEN
    assert not breaker.allow()
    assert breaker.retry_in() == 10.0
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state() is BreakerState.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # one probe at a time
    breaker.success()
    assert breaker.state() is BreakerState.CLOSED
    assert breaker.allow() and breaker.failures == 0


def test_breaker_probe_failure_opens_again_for_a_full_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 5.0, clock)
    breaker.failure()
    clock.advance(5)
    assert breaker.allow()
    breaker.failure()
    assert breaker.state() is BreakerState.OPEN
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_lost_probe_stops_blocking_after_a_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 2.0, clock)
    breaker.failure()
    clock.advance(2)
    assert breaker.allow()  # a probe whose caller never reports back
    clock.advance(1)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_a_failure_while_open_starts_the_cooldown_again(clock: FakeClock) -> None:
    breaker = CircuitBreaker(1, 10.0, clock)
    breaker.failure()
    clock.advance(6)
    breaker.failure()  # a call begun before it opened fails late
    clock.advance(6)
    assert breaker.state() is BreakerState.OPEN
    assert breaker.retry_in() == pytest.approx(4.0)


# --- the gateway's replicas ------------------------------------------------------------------


def backend(clock: FakeClock) -> OllamaBackend:
    config = BackendConfig(
        name="up", kind="ollama", urls=[A, B], models=["m"],
        breaker_failures=2, breaker_cooldown=10,
    )  # fmt: skip
    return OllamaBackend(config, clock)


def test_replicas_with_a_breaker_not_closed_are_tried_last(clock: FakeClock) -> None:
    remote = backend(clock)
    a, b = remote.replicas
    b.outstanding = 3
    assert remote._order() == [a, b]  # least outstanding first
    a.breaker.failure()
    a.breaker.failure()
    assert remote._order() == [b, a]
    clock.advance(10)  # half-open: a probe may go, but only when no closed replica is there
    assert a.breaker.state() is BreakerState.HALF_OPEN
    assert remote._order() == [b, a]
    assert a.breaker.allow() and not a.breaker.allow()
    a.breaker.success()
    assert remote._order() == [a, b]


def test_describe_reports_each_replica_and_up_while_one_is_not_open(clock: FakeClock) -> None:
    remote = backend(clock)
    for replica in remote.replicas:
        replica.breaker.failure()
    state = remote.describe()
    assert (state["name"], state["kind"], state["apis"]) == ("up", "ollama", ["ollama", "openai"])
    assert [r["breaker"] for r in state["replicas"]] == ["closed", "closed"]
    assert [r["consecutive_failures"] for r in state["replicas"]] == [1, 1]
    for replica in remote.replicas:
        replica.breaker.failure()
    state = remote.describe()
    assert [r["breaker"] for r in state["replicas"]] == ["open", "open"]
    assert state["up"] is False
    assert (state["active"], state["waiting"], state["rejected"]) == (0, 0, 0)
    clock.advance(10)
    assert remote.describe()["up"] is True  # a probe may go through
    assert [r["breaker"] for r in remote.describe()["replicas"]] == ["half_open", "half_open"]
