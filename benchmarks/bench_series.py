"""What the console's chart series add to each request: ``Series.observe`` against its peer,
``Metrics.observe`` (the Prometheus update every request already pays), in the same run.

Both consume the same realistic records (three models, streamed and whole answers, some
errors); rounds alternate the two so that machine noise hits both alike. Reported: the
median nanoseconds per record of each, and their ratio; raw samples in
``benchmarks/results/series.json``.

    .venv/bin/python benchmarks/bench_series.py --rounds 15 --records 20000
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from modelgarden.telemetry.metrics import Metrics
from modelgarden.telemetry.record import RequestRecord
from modelgarden.telemetry.series import Series

RESULTS = Path(__file__).parent / "results" / "series.json"


def records(n: int) -> list[RequestRecord]:
    rng = random.Random(42)
    out = []
    for i in range(n):
        stream = rng.random() < 0.7
        out.append(
            RequestRecord(
                request_id=str(i),
                started=time.time(),
                api="ollama",
                endpoint="/api/chat",
                model=rng.choice(["smollm2:135m", "llama3.2:1b", "qwen2.5:7b"]),
                backend="local",
                status=200 if rng.random() < 0.97 else 502,
                stream=stream,
                duration_ms=rng.lognormvariate(6, 1),
                ttft_ms=rng.lognormvariate(4, 1) if stream else None,
                overhead_ms=0.2,
                prompt_tokens=rng.randint(10, 500),
                completion_tokens=rng.randint(1, 500),
                tokens_per_s=rng.uniform(20, 120),
            )
        )
    return out


def per_record_ns(consume: Callable[[RequestRecord], None], batch: list[RequestRecord]) -> float:
    start = time.perf_counter_ns()
    for r in batch:
        consume(r)
    return (time.perf_counter_ns() - start) / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    batch = records(args.records)
    series, metrics = Series(), Metrics(list)
    samples: dict[str, list[float]] = {"series": [], "metrics": []}
    for r in batch[:1000]:  # warm both: labelled children and dict entries exist
        series.observe(r)
        metrics.observe(r)
    for i in range(args.rounds):
        order = [("series", series.observe), ("metrics", metrics.observe)]
        for name, consume in order if i % 2 == 0 else order[::-1]:
            samples[name].append(per_record_ns(consume, batch))
    medians = {k: statistics.median(v) for k, v in samples.items()}
    ratio = medians["series"] / medians["metrics"]
    print(f"Series.observe   {medians['series']:8.0f} ns/record")
    print(f"Metrics.observe  {medians['metrics']:8.0f} ns/record (the peer)")
    print(f"ratio            {ratio:8.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "machine": platform.platform(),
                "python": platform.python_version(),
                "rounds": args.rounds,
                "records": args.records,
                "median_ns": medians,
                "ratio_series_to_metrics": ratio,
                "samples_ns": samples,
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
