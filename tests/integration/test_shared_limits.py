"""Per-key limits held across several real gateways sharing one Redis and one key database:
counted once for all, slots of a dead gateway freed in bounded time, and a Redis that goes
away degrading to per-process limits (said in ``/metrics`` and the log), never to a 500."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from loopback.redis import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import DEFAULT_MODEL, GardenServer, start_server, stop_and_check, wait_until
from tests.integration.test_cli import garden_cmd
from tests.integration.test_lifecycle import COUNTING, LONG

TTL = 3  # GARDEN_SHARED_LEASE_TTL for these gateways: a dead one's slots free within it


@dataclass
class Cluster:
    """Gateways sharing one Redis and one key database, and the keys made for the tests."""

    redis: RedisServer
    gateways: list[GardenServer]
    settings: dict[str, str]
    keys: dict[str, str]


def local_key(settings: dict[str, str], *args: str) -> str:
    made = garden_cmd(None, "keys", "create", "--local", *args, **settings)
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("shared")
    redis = RedisServer(root / "redis").start()
    settings = {
        "GARDEN_DATABASE_URL": f"sqlite:///{root / 'keys.db'}",
        "GARDEN_REDIS_URL": redis.url,
        "GARDEN_SHARED_LEASE_TTL": str(TTL),
    }
    keys = {
        "admin": local_key(settings, "--name", "root", "--scope", "admin"),
        "ten": local_key(settings, "--name", "ten", "--rpm", "10"),
        "one": local_key(settings, "--name", "one", "--max-concurrent", "1"),
        "down": local_key(settings, "--name", "down", "--rpm", "2"),
        "tokens": local_key(settings, "--name", "tokens", "--tpm", "20"),
    }
    gateways = [start_server(root / f"g{i}", **settings) for i in range(3)]
    yield Cluster(redis, gateways, settings, keys)
    for gateway in gateways:
        stop_and_check(gateway)
    redis.stop()


def call(gateway: GardenServer, key: str, model: str = "nope") -> httpx.Response:
    """An inference request that is admitted (or not) and then finds no such model."""
    return httpx.post(
        gateway.url + "/api/generate",
        json={"model": model, "prompt": "hi", "stream": False},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def shared_up(cluster: Cluster, gateway: GardenServer) -> float:
    """``garden_shared_limits_up`` on one gateway (its /metrics takes an admin key)."""
    text = httpx.get(
        gateway.url + "/metrics", headers={"Authorization": f"Bearer {cluster.keys['admin']}"}
    ).text
    samples = {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }
    return samples["garden_shared_limits_up"]


def test_a_rate_limit_holds_across_gateways_together(cluster: Cluster) -> None:
    statuses = [call(cluster.gateways[i % 3], cluster.keys["ten"]).status_code for i in range(15)]
    assert statuses.count(429) == 5, statuses  # 10 in all, not 10 each
    assert set(statuses) == {404, 429}
    refused = call(cluster.gateways[0], cluster.keys["ten"])
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "10 requests per minute" in refused.json()["error"]


def test_tokens_spent_on_one_gateway_count_on_the_others(cluster: Cluster) -> None:
    first, other = cluster.gateways[0], cluster.gateways[1]
    spent = httpx.post(
        first.url + "/api/generate",
        json={"model": DEFAULT_MODEL, "prompt": "Count to ten.", "stream": False,
              "options": {"temperature": 0, "seed": 42, "num_predict": 24}},
        headers={"Authorization": f"Bearer {cluster.keys['tokens']}"},
        timeout=60,
    )  # fmt: skip
    assert spent.status_code == 200, spent.text
    assert spent.json()["prompt_eval_count"] + spent.json()["eval_count"] > 20

    def refused_elsewhere() -> bool:
        return call(other, cluster.keys["tokens"]).status_code == 429

    assert wait_until(refused_elsewhere, timeout=5)  # the spend reached Redis
    refused = call(other, cluster.keys["tokens"])
    assert "20 tokens per minute" in refused.json()["error"]


def test_one_concurrent_request_means_one_across_gateways(cluster: Cluster) -> None:
    first, second = cluster.gateways[0], cluster.gateways[1]
    body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    headers = {"Authorization": f"Bearer {cluster.keys['one']}"}
    with httpx.stream(
        "POST", first.url + "/api/generate", json=body, headers=headers, timeout=60
    ) as stream:
        lines = stream.iter_lines()
        next(lines)  # streaming on the first gateway
        busy = call(second, cluster.keys["one"])
        assert busy.status_code == 429 and "concurrent" in busy.json()["error"]
    # the stream ended: its slot is free again on every gateway
    assert wait_until(lambda: call(second, cluster.keys["one"]).status_code == 404, timeout=5)


def test_a_gateway_that_dies_frees_its_slot_within_the_lease(
    cluster: Cluster, tmp_path: Path
) -> None:
    doomed = start_server(tmp_path / "doomed", **cluster.settings)
    try:
        body = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
        headers = {"Authorization": f"Bearer {cluster.keys['one']}"}
        with httpx.stream(
            "POST", doomed.url + "/api/generate", json=body, headers=headers, timeout=60
        ) as stream:
            lines = stream.iter_lines()
            next(lines)
            doomed.proc.kill()  # no release will ever come from it
            doomed.proc.wait(10)
        other = cluster.gateways[2]
        assert call(other, cluster.keys["one"]).status_code == 429
        killed = time.monotonic()
        assert wait_until(lambda: call(other, cluster.keys["one"]).status_code == 404, timeout=10)
        assert time.monotonic() - killed <= TTL + 2
    finally:
        for runner in doomed.runners():  # its runner dies with it; make sure
            runner.kill()


def test_without_redis_each_gateway_counts_alone_and_says_so(cluster: Cluster) -> None:
    gateway = cluster.gateways[0]
    cluster.redis.stop()
    try:
        answers = [call(gateway, cluster.keys["down"]).status_code for _ in range(3)]
        assert answers == [404, 404, 429]  # its own limit of 2, and no 500
        assert shared_up(cluster, gateway) == 0
        assert "shared limits unreachable" in gateway.logs()
        assert call(gateway, "mg-not-a-key").status_code == 401  # keys never fail open
    finally:
        cluster.redis.start()
    assert wait_until(
        lambda: (
            call(gateway, cluster.keys["ten"]).status_code in (404, 429)
            and shared_up(cluster, gateway) == 1
        ),
        timeout=15,
    )


def test_a_deployments_own_admin_key_is_made_once_by_every_replica(cluster: Cluster) -> None:
    secret = "mg-" + "k8s-bootstrap-" * 3
    args = ["keys", "create", "--local", "--name", "boot", "--scope", "admin"]
    args += ["--from-env", "BOOT_KEY", "--if-absent"]
    first = garden_cmd(None, *args, BOOT_KEY=secret, **cluster.settings)
    assert first.returncode == 0, first.stderr
    assert first.stdout == "" and "Created admin key" in first.stderr  # not printed back
    again = garden_cmd(None, *args, BOOT_KEY=secret, **cluster.settings)
    assert again.returncode == 0 and "exists already" in again.stderr
    short = garden_cmd(None, *args[:-1], BOOT_KEY="mg-short", **cluster.settings)
    assert short.returncode != 0 and "at least 32 more characters" in short.stderr

    def works() -> bool:
        answer = httpx.get(
            cluster.gateways[1].url + "/garden/keys",
            headers={"Authorization": f"Bearer {secret}"},
        )
        return answer.status_code == 200

    assert wait_until(works)
