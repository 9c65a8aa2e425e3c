"""How the reliability suite's load scenario judges descriptors over its rounds: an upstream
pool that takes more than one round to fill passes, a leak that grows every round fails."""

from __future__ import annotations

from benchmarks.reliability.harness import Result, Sample
from benchmarks.reliability.load import RELEASES, _Load

MIB = 1 << 20
BLOCKS = "garden_memory_allocated_blocks"


def _judged(fds_per_round: list[int], streams: int = 200) -> list[str]:
    memory = {BLOCKS: 400_000.0, RELEASES: 0.0}
    load = _Load(
        start=Sample(85 * MIB, 19),
        start_memory=memory,
        rounds=[Sample(90 * MIB, fds) for fds in fds_per_round],
        loaded_memory=memory,
        idle=Sample(91 * MIB, 17),
        idle_memory={BLOCKS: 400_500.0, RELEASES: 5.0},
    )
    result = Result("load", "claim")
    load.judge(result, streams)
    return result.failures


def test_a_pool_that_fills_over_two_rounds_passes() -> None:
    assert _judged([130, 217, 217]) == []  # the CI run that flagged it as growth


def test_descriptors_growing_every_round_fail() -> None:
    failures = _judged([60, 100, 140])
    assert failures == ["open descriptors grew over the rounds: 100 -> 140"]


def test_descriptors_beyond_one_per_stream_fail() -> None:
    failures = _judged([400, 400, 400])
    assert failures == ["open descriptors above the pool's bound: 400 > 19 + 200 streams"]
