"""The reliability suite (``benchmarks/reliability``) at its small scale: every scenario of
load, faults, shutdown and soak, each with real processes on loopback.

``python -m benchmarks.reliability --scale full`` runs the same scenarios at full size and
records their figures (docs/RELIABILITY.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.reliability.__main__ import SCENARIOS, run_one
from benchmarks.reliability.harness import SCALES

pytestmark = pytest.mark.reliability


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_holds(name: str, tmp_path: Path) -> None:
    result = run_one(name, SCALES["small"], tmp_path)
    figures = "\n".join(f"  {key}: {value}" for key, value in result.figures.items())
    print(f"{result.name} ({result.seconds} s)\n  holds: {result.claim}\n{figures}")
    assert result.passed, "\n".join(result.failures)
