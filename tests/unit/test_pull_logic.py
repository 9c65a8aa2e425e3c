"""Pull and push logic in-process: names, file choice, manifests, partial blobs, coalescing,
resume and uploads against the registry stand-in with small synthetic GGUF files."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loopback.registry import RegistryServer

from modelgarden.api.ollama.transfer import progress_response
from modelgarden.config import ConfigError, load_settings
from modelgarden.errors import BackendUnavailable, BadRequest, InvalidModelName
from modelgarden.store.blobs import BlobStore
from modelgarden.store.hf import HfRef, HfSource, HubFile, choose_gguf
from modelgarden.store.names import ModelName
from modelgarden.store.pull import Puller, Transfer, Transfers, ticks
from modelgarden.store.registry import RegistryRef, manifest_problem
from modelgarden.store.store import MEDIA_MODEL, MEDIA_TEMPLATE, ModelStore
from tests.gguf_writer import write_gguf

# -- names -------------------------------------------------------------------------------


def test_hf_references_keep_the_hub_case_and_read_the_quant() -> None:
    ref = HfRef.parse("hf.co/Bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
    assert ref is not None
    assert ref.repo_id == "Bartowski/Llama-3.2-1B-Instruct-GGUF" and ref.quant == "Q4_K_M"
    assert str(ref.name) == "hf.co/bartowski/llama-3.2-1b-instruct-gguf:q4_k_m"
    plain = HfRef.parse("https://huggingface.co/test/smol-GGUF")
    assert plain is not None and plain.repo_id == "test/smol-GGUF" and plain.quant is None
    latest = HfRef.parse("hf.co/test/smol-GGUF:latest")
    assert latest is not None and latest.quant is None
    assert HfRef.parse("smollm2:135m") is None
    assert HfRef.parse("localhost:5000/library/m:tag") is None
    with pytest.raises(InvalidModelName):
        HfRef.parse("hf.co/../etc:x")


def test_registry_urls_come_from_the_setting_or_the_name() -> None:
    default = RegistryRef.resolve(ModelName.parse("smol:test"), "http://mirror:8080/", False)
    assert default.manifest_url == "http://mirror:8080/v2/library/smol/manifests/test"
    named = RegistryRef.resolve(ModelName.parse("localhost:5000/team/m:v1"), "x", True)
    assert named.base == "http://localhost:5000"
    assert named.uploads_url == "http://localhost:5000/v2/team/m/blobs/uploads/"
    secure = RegistryRef.resolve(ModelName.parse("example.com/team/m"), "x", False)
    assert secure.blob_url("sha256:" + "a" * 64) == (
        "https://example.com/v2/team/m/blobs/sha256:" + "a" * 64
    )


def test_registry_and_hub_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GARDEN_REGISTRY", "http://mirror:5000/")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    settings = load_settings()
    assert settings.registry_url == "http://mirror:5000"
    assert settings.hf_endpoint == "http://127.0.0.1:9"
    monkeypatch.setenv("GARDEN_REGISTRY", "registry.example.com")
    with pytest.raises(ConfigError, match="GARDEN_REGISTRY"):
        load_settings()


# -- choosing a GGUF ---------------------------------------------------------------------

FILES = [
    HubFile("README.md", 10),
    HubFile("model-Q4_K_M.gguf", 100, "a" * 64),
    HubFile("model.Q8_0.gguf", 200, "b" * 64),
    HubFile("sub/model-f16.gguf", 300, "c" * 64),
    HubFile("mmproj-model-f16.gguf", 50, "d" * 64),
    HubFile("big-Q2_K-00001-of-00002.gguf", 50, "e" * 64),
]


def _ref(text: str) -> HfRef:
    ref = HfRef.parse(text)
    assert ref is not None
    return ref


def test_the_quant_picks_the_file_without_regard_to_case() -> None:
    assert choose_gguf(_ref("hf.co/u/r:q8_0"), FILES).path == "model.Q8_0.gguf"
    assert choose_gguf(_ref("hf.co/u/r:F16"), FILES).path == "sub/model-f16.gguf"
    assert choose_gguf(_ref("hf.co/u/r:model.q8_0.gguf"), FILES).path == "model.Q8_0.gguf"
    assert choose_gguf(_ref("hf.co/u/r"), FILES).path == "model-Q4_K_M.gguf"


def test_an_unclear_choice_is_a_400_listing_the_choices() -> None:
    with pytest.raises(BadRequest) as missing:
        choose_gguf(_ref("hf.co/u/r:Q2_K"), FILES)  # shards and projectors are not choices
    assert "hf.co/u/r:Q4_K_M, hf.co/u/r:Q8_0, hf.co/u/r:f16" in missing.value.message
    no_default = [f for f in FILES if "Q4_K_M" not in f.path]
    with pytest.raises(BadRequest) as several:
        choose_gguf(_ref("hf.co/u/r"), no_default)
    assert "name a quantization" in several.value.message
    only = [HubFile("only.gguf", 5, "f" * 64)]
    assert choose_gguf(_ref("hf.co/u/r"), only).path == "only.gguf"
    with pytest.raises(BadRequest, match="no single-file GGUF"):
        choose_gguf(_ref("hf.co/u/r"), [HubFile("README.md", 1)])


# -- manifests ---------------------------------------------------------------------------


def _manifest(**changes: Any) -> dict[str, Any]:
    layer = {"mediaType": MEDIA_MODEL, "digest": "sha256:" + "1" * 64, "size": 5}
    config = {"mediaType": "application/json", "digest": "sha256:" + "2" * 64, "size": 2}
    return {"schemaVersion": 2, "config": config, "layers": [layer], **changes}


def test_manifests_are_checked_before_use() -> None:
    assert manifest_problem(_manifest()) is None
    assert "schemaVersion" in str(manifest_problem(_manifest(schemaVersion=1)))
    assert "no layers" in str(manifest_problem(_manifest(layers=[])))
    bad_digest = [{"mediaType": MEDIA_MODEL, "digest": "md5:x", "size": 1}]
    assert "invalid digest" in str(manifest_problem(_manifest(layers=bad_digest)))
    bad_size = [{"mediaType": MEDIA_MODEL, "digest": "sha256:" + "1" * 64, "size": True}]
    assert "invalid size" in str(manifest_problem(_manifest(layers=bad_size)))
    text_only = [{"mediaType": MEDIA_TEMPLATE, "digest": "sha256:" + "1" * 64, "size": 1}]
    assert "no model layer" in str(manifest_problem(_manifest(layers=text_only)))
    assert manifest_problem([]) == "not a JSON object"


# -- partial blobs -----------------------------------------------------------------------


def test_a_partial_blob_resumes_and_verifies(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    data = bytes(range(256)) * 1000
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    first = blobs.partial(digest)
    first.write(data[:1000])
    first.close()
    assert blobs.sweep_partials() == 0  # a resumable partial survives the start-up sweep
    again = blobs.partial(digest)
    assert again.offset == 1000
    again.write(data[1000:])
    assert again.commit() == digest
    assert blobs.read_bytes(digest) == data
    assert not blobs.partial_path(digest).exists()


def test_a_partial_blob_with_the_wrong_content_is_removed(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    partial = blobs.partial("sha256:" + "0" * 64)
    partial.write(b"not it")
    with pytest.raises(BadRequest, match="digest mismatch"):
        partial.commit()
    assert not blobs.partial_path("sha256:" + "0" * 64).exists()
    assert not blobs.has("sha256:" + "0" * 64)
    restarted = blobs.partial("sha256:" + "1" * 64)
    restarted.write(b"abc")
    restarted.restart()
    assert restarted.offset == 0
    restarted.discard()
    assert not list(blobs.root.iterdir())


def test_a_hub_download_with_the_wrong_content_is_discarded(tmp_path: Path) -> None:
    source = HfSource(BlobStore(tmp_path), tmp_path / "downloads", "http://hub")
    download = tmp_path / "model.gguf"
    download.write_bytes(b"GGUF...")
    with pytest.raises(BackendUnavailable, match="digest mismatch"):
        source.install(download, "sha256:" + "0" * 64)
    assert not download.exists()


# -- coalescing --------------------------------------------------------------------------


async def test_followers_of_a_blob_share_one_download() -> None:
    transfers = Transfers()
    calls = 0
    release = asyncio.Event()

    async def fetch(transfer: Transfer) -> None:
        nonlocal calls
        calls += 1
        transfer.completed = 5
        await release.wait()
        transfer.completed = 10

    async def follow() -> list[int]:
        return [done async for done in transfers.follow("sha256:x", 10, fetch)]

    both = asyncio.gather(follow(), follow())
    await asyncio.sleep(0.15)
    release.set()
    first, second = await both
    assert calls == 1 and first[-1] == second[-1] == 10 and 5 in first and 5 in second
    assert transfers.active("sha256:x") is None


async def test_the_last_follower_to_leave_cancels_and_errors_reach_everyone() -> None:
    transfers = Transfers()
    cancelled = asyncio.Event()

    async def slow(transfer: Transfer) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()

    follower = transfers.follow("sha256:y", 1, slow)
    assert await anext(follower) == 0
    assert isinstance(follower, AsyncGenerator)  # follow() is an async generator
    await follower.aclose()
    await asyncio.wait_for(cancelled.wait(), 5)

    async def broken(transfer: Transfer) -> None:
        await asyncio.sleep(0.05)
        raise BackendUnavailable("registry went away")

    async def follow() -> None:
        async for _ in transfers.follow("sha256:y", 1, broken):
            pass

    results = await asyncio.gather(follow(), follow(), return_exceptions=True)
    assert [str(r) for r in results] == ["registry went away"] * 2


async def test_ticks_end_with_the_task_and_raise_its_error() -> None:
    async def fail() -> None:
        await asyncio.sleep(0.03)
        raise BadRequest("no")

    async def count() -> int:
        seen = 0
        async for _ in ticks(asyncio.ensure_future(fail()), interval=0.01):
            seen += 1
        return seen

    with pytest.raises(BadRequest):
        await count()
    done = asyncio.ensure_future(asyncio.sleep(0.03))
    assert len([tick async for tick in ticks(done, interval=0.01)]) >= 2


# -- progress responses ------------------------------------------------------------------


async def _records(fail_after: int) -> AsyncGenerator[dict[str, Any], None]:
    for n in range(fail_after):
        yield {"status": f"step {n}"}
    raise BackendUnavailable("boom")


async def test_errors_before_output_raise_and_after_output_end_the_stream() -> None:
    with pytest.raises(BackendUnavailable):
        await progress_response(_records(0), stream=True)
    with pytest.raises(BackendUnavailable):
        await progress_response(_records(2), stream=False)
    response = await progress_response(_records(2), stream=True)
    body = [chunk async for chunk in response.body_iterator]  # type: ignore[attr-defined]
    lines = [json.loads(line) for line in b"".join(body).splitlines()]
    assert lines == [{"status": "step 0"}, {"status": "step 1"}, {"error": "boom"}]


# -- against the registry stand-in -------------------------------------------------------


def _small_gguf(path: Path, padding: int) -> Path:
    write_gguf(path, {"general.architecture": "llama", "general.file_type": 3}, [])
    with open(path, "ab") as fh:
        fh.write(bytes(range(256)) * (padding // 256))
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry").start()
    server.add_model(
        "library/tiny", "v1", [(MEDIA_MODEL, _small_gguf(tmp_path / "t.gguf", 6 << 20))]
    )
    server.add_model("library/text", "v1", [(MEDIA_MODEL, b"not a gguf at all")])
    yield server
    server.stop()


def _model_digest(registry: RegistryServer, repository: str) -> str:
    manifest = json.loads(registry.manifest_path(repository, "v1").read_bytes())
    return str(manifest["layers"][0]["digest"])


async def _pull(puller: Puller, name: str) -> list[dict[str, Any]]:
    return [record async for record in puller.pull(name, insecure=True)]


async def test_a_pull_the_client_leaves_keeps_its_partial_and_resumes(
    registry: RegistryServer, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    puller = Puller(store)
    digest = _model_digest(registry, "library/tiny")
    registry.delay = 0.3  # seconds per MiB
    records = puller.pull(f"{registry.host}/library/tiny:v1", insecure=True)
    async for record in records:
        if record.get("digest") == digest and record["completed"] > 0:
            break
    await records.aclose()  # the client went away: the download stops
    for _ in range(100):
        if puller.transfers.active(digest) is None:
            break
        await asyncio.sleep(0.05)
    kept = store.blobs.partial_path(digest).stat().st_size
    assert kept > 0 and not store.blobs.has(digest)
    registry.delay = 0
    assert (await _pull(puller, f"{registry.host}/library/tiny:v1"))[-1]["status"] == "success"
    assert registry.blob_gets(digest)[-1] == kept
    assert store.exists(f"{registry.host}/library/tiny:v1")


async def test_a_model_layer_that_is_not_gguf_writes_no_manifest(
    registry: RegistryServer, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(BadRequest, match="not a GGUF model"):
        await _pull(Puller(store), f"{registry.host}/library/text:v1")
    assert not store.installed()


async def test_push_uploads_only_missing_blobs(registry: RegistryServer, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    weights, info = store.weights_layer(store.blobs.import_file(_small_gguf(tmp_path / "n", 4096)))
    name = f"{registry.host}/team/new:v2"
    store.write_manifest(name, store.build_manifest(weights, [], info))
    puller = Puller(store)
    records = [r async for r in puller.push(name, insecure=True)]
    statuses = [r["status"] for r in records]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    assert f"pushing {weights.digest[7:19]}" in statuses
    posts = [s for s in registry.requests if s.method == "POST"]
    assert len(posts) == 2  # the weights and the config blob
    registry.requests.clear()
    again = [r async for r in puller.push(name, insecure=True)]
    assert again[-1]["status"] == "success"
    assert not [s for s in registry.requests if "uploads" in s.path]
    assert registry.manifest_path("team/new", "v2").read_bytes() == store.manifest_bytes(name)
    fetched = ModelStore(tmp_path / "other")
    assert (await _pull(Puller(fetched), name))[-1]["status"] == "success"
    assert fetched.blobs.read_bytes(weights.digest) == store.blobs.read_bytes(weights.digest)
