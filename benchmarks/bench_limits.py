"""What shared per-key limits cost a request: a keyed gateway with limits counted in its own
memory against the same gateway counting them in Redis (one round trip per request).

Each request is an inference request for a model that does not exist: admitted (or not)
by the key's limits, then answered 404 at once, so the time is the gateway's own and the
limits' share of it shows. Rounds alternate the two gateways; medians reported.

    .venv/bin/python benchmarks/bench_limits.py --requests 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loopback.gateway import free_port  # noqa: E402
from loopback.redis import RedisServer  # noqa: E402


def local_key(settings: dict[str, str], *args: str) -> str:
    env = {**os.environ, **settings}
    out = subprocess.run(
        [sys.executable, "-m", "modelgarden", "keys", "create", "--local", *args],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@contextlib.contextmanager
def gateway(settings: dict[str, str], folder: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GARDEN_", "OLLAMA_"))}
    env.update(settings, OLLAMA_HOST=f"127.0.0.1:{port}", GARDEN_MODELS=str(folder),
               GARDEN_LOG_LEVEL="warning", GARDEN_DEFAULT_MODEL="")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "modelgarden", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def per_request_us(url: str, key: str, requests: int) -> float:
    """Median microseconds of one request, one client at a time."""
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "none", "prompt": "hi", "stream": False}
    times = []
    with httpx.Client(base_url=url, headers=headers) as http:
        for _ in range(requests):
            start = time.perf_counter()
            status = http.post("/api/generate", json=body).status_code
            times.append(time.perf_counter() - start)
            assert status == 404, status
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        redis = RedisServer(root / "redis").start()
        base = {"GARDEN_DATABASE_URL": f"sqlite:///{root / 'keys.db'}"}
        limits = ("--rpm", "1000000", "--tpm", "1000000", "--max-concurrent", "1000")
        key = local_key(base, "--name", "bench", *limits)
        shared = {**base, "GARDEN_REDIS_URL": redis.url}
        results: dict[str, list[float]] = {"local": [], "shared (Redis)": []}
        with gateway(base, root / "a") as local_url, gateway(shared, root / "b") as shared_url:
            for url in (local_url, shared_url):
                per_request_us(url, key, 200)  # warm up
            for _ in range(args.rounds):
                results["local"].append(per_request_us(local_url, key, args.requests))
                results["shared (Redis)"].append(per_request_us(shared_url, key, args.requests))
        redis.stop()
    local = statistics.median(results["local"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:<16} {median:8.0f} us per request   rounds: "
              f"{', '.join(f'{v:.0f}' for v in values)}   (+{median - local:.0f} us)")  # fmt: skip


if __name__ == "__main__":
    main()
