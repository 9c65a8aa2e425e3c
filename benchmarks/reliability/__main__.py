"""Run the reliability suite: ``python -m benchmarks.reliability --scale small|full``.

Prints one line per scenario and its figures, writes every result to
``benchmarks/results/reliability.json`` (or ``--out``), and exits 1 if any scenario failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.reliability.faults import (
    client_leaves,
    runner_killed,
    upstream_killed,
    upstream_silent,
)
from benchmarks.reliability.harness import ROOT, SCALES, Result, Scale
from benchmarks.reliability.load import load_model, load_stub, soak
from benchmarks.reliability.pulls import disk_full, gateway_killed
from benchmarks.reliability.recycle import load_workers
from benchmarks.reliability.shutdown import shutdown

SCENARIOS: dict[str, Callable[[Scale, Path], Result]] = {
    "load_stub": load_stub,
    "load_workers": load_workers,
    "load_model": load_model,
    "runner_killed": runner_killed,
    "upstream_killed": upstream_killed,
    "upstream_silent": upstream_silent,
    "client_leaves": client_leaves,
    "disk_full": disk_full,
    "gateway_killed": gateway_killed,
    "shutdown": shutdown,
    "soak": soak,
}


def run_one(name: str, scale: Scale, work: Path) -> Result:
    began = time.perf_counter()
    try:
        result = SCENARIOS[name](scale, work / name)
    except Exception as exc:  # a scenario that crashes is a failed scenario, with its reason
        result = Result(name, "(the scenario did not complete)")
        result.failures.append(f"{type(exc).__name__}: {exc}")
    result.seconds = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="these scenarios")
    parser.add_argument("--soak-seconds", type=float, help="override the soak's length")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reliability.json")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.soak_seconds:
        scale = dataclasses.replace(scale, soak_seconds=args.soak_seconds)
    results = []
    with tempfile.TemporaryDirectory(prefix="garden-reliability-") as tmp:
        for name in args.only or list(SCENARIOS):
            result = run_one(name, scale, Path(tmp))
            results.append(result)
            verdict = "PASS" if result.passed else "FAIL"
            print(f"{verdict}  {result.name}  ({result.seconds} s)", flush=True)
            print(f"      holds: {result.claim}")
            for key, value in result.figures.items():
                print(f"      {key}: {value}")
            for failure in result.failures:
                print(f"      FAILED: {failure}")
    report = {
        "command": "python -m benchmarks.reliability " + " ".join(sys.argv[1:]),
        "scale": dataclasses.asdict(scale),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [dataclasses.asdict(r) | {"passed": r.passed} for r in results],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
