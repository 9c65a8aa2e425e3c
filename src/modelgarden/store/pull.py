"""Pulling models into the store, and pushing them to a registry, with Ollama's progress.

A pull yields ``pulling manifest``, then ``pulling <digest>`` records (``digest``,
``total``, ``completed``) for every layer, ``verifying sha256 digest``, ``writing manifest``
and ``success``. Its sources are an Ollama-style registry (:mod:`.registry`) and GGUF files
on the Hugging Face Hub (:mod:`.hf`). The first record comes only once the manifest (or the
Hub's file list) is in hand, so a model that does not exist, or a registry that cannot be
reached, fails before any output, with a real status.

Blobs are content-addressed and verified: a registry download goes to
``blobs/sha256-<hex>-partial``, is hashed as it arrives, and is renamed into place only when
its SHA-256 is the digest; a mismatch removes it. An interrupted download keeps its partial
file (which survives a restart) and the next pull resumes it with an HTTP ``Range``. Pulls
of the same blob share one download (:class:`Transfers`); the manifest is written last.

A push yields ``retrieving manifest``, ``pushing <digest>`` records, ``pushing manifest``
and ``success``: each blob the registry lacks is uploaded whole, then the manifest.
"""

from __future__ import annotations

import asyncio
import errno
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from modelgarden.errors import BackendUnavailable, BadRequest, StorageFull
from modelgarden.store.blobs import PartialBlob
from modelgarden.store.gguf import GGUFError, read_gguf
from modelgarden.store.hf import HF_HOSTS, HfRef, HfSource, HubFile, choose_gguf
from modelgarden.store.names import ModelName
from modelgarden.store.registry import RegistryClient, RegistryRef, describe_transport
from modelgarden.store.store import MEDIA_MODEL, Layer, Manifest, ModelStore

log = structlog.get_logger(__name__)

Record = dict[str, Any]
#: Seconds between progress records of one layer.
PROGRESS_INTERVAL = 0.1
#: Bytes gathered from the network before one write (and hash update) in a thread.
FLUSH = 4 << 20
#: Resumes within one pull after a connection drops, as long as each attempt made progress.
MAX_RESUMES = 8


async def ticks(
    task: asyncio.Future[Any], interval: float = PROGRESS_INTERVAL
) -> AsyncIterator[None]:
    """Yield every ``interval`` while ``task`` runs and once when it ends; re-raise its error."""
    while not task.done():
        await asyncio.wait({task}, timeout=interval)
        if not task.done():
            yield
    task.result()
    yield


@dataclass
class Transfer:
    """One blob download, shared by every pull that needs the blob."""

    digest: str
    total: int
    completed: int = 0
    followers: int = 0
    task: asyncio.Task[None] | None = None


Fetch = Callable[[Transfer], Awaitable[None]]


class Transfers:
    """Owns the blob downloads running in this process: one per digest, however many pulls
    wait for it. The last pull to leave a download cancels it (its partial file stays)."""

    def __init__(self) -> None:
        self._running: dict[str, Transfer] = {}
        self._stopping: dict[str, asyncio.Task[None]] = {}

    def active(self, digest: str) -> Transfer | None:
        """The download of this blob in progress, if any."""
        return self._running.get(digest)

    async def follow(self, digest: str, total: int, fetch: Fetch) -> AsyncGenerator[int, None]:
        """Join (or start) the download of a blob; yields the bytes completed until it ends."""
        transfer = self._running.get(digest)
        if transfer is None:
            transfer = Transfer(digest, total)
            previous = self._stopping.pop(digest, None)
            transfer.task = asyncio.create_task(self._run(transfer, fetch, previous))
            self._running[digest] = transfer
        task = transfer.task
        assert task is not None
        transfer.followers += 1
        try:
            async for _ in ticks(task):
                yield transfer.completed
        finally:
            transfer.followers -= 1
            if transfer.followers == 0 and not task.done():
                task.cancel()
                self._forget(transfer)
                self._stopping[digest] = task

    async def _run(
        self, transfer: Transfer, fetch: Fetch, previous: asyncio.Task[None] | None
    ) -> None:
        task = asyncio.current_task()
        try:
            if previous is not None:  # a cancelled download of this blob is still closing
                await asyncio.wait({previous})
            await fetch(transfer)
        finally:
            self._forget(transfer)
            if self._stopping.get(transfer.digest) is task:
                del self._stopping[transfer.digest]

    def _forget(self, transfer: Transfer) -> None:
        if self._running.get(transfer.digest) is transfer:
            del self._running[transfer.digest]
        if transfer.task is not None:
            transfer.task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    """Mark a finished download's error as seen (its followers report it, or left)."""
    if not task.cancelled():
        task.exception()


@dataclass
class PullPlan:
    """What one pull fetches and how it finishes, known before its first record."""

    name: ModelName
    layers: list[Layer]
    fetch: Callable[[Layer, Transfer], Awaitable[None]]
    write: Callable[[], Awaitable[None]]
    source: str


@dataclass
class _Sent:
    done: int = 0


@dataclass
class Puller:
    """Owns pulls into one model store and pushes out of it: sources, shared downloads,
    verification and manifests."""

    store: ModelStore
    registry_url: str = "https://registry.ollama.ai"
    hf_endpoint: str = "https://huggingface.co"
    transfers: Transfers = field(default_factory=Transfers)

    @property
    def hub(self) -> HfSource:
        """The Hugging Face Hub source."""
        downloads = self.store.root / ".downloads" / "hf"
        return HfSource(self.store.blobs, downloads, self.hf_endpoint)

    # -- pull ------------------------------------------------------------------------------

    async def pull(self, name: str, insecure: bool = False) -> AsyncGenerator[Record, None]:
        """Pull a model; yields Ollama's progress records, ending with ``success``.

        A full disk ends the pull with :class:`StorageFull`; the bytes received so far are
        kept, and the next pull, once there is room, resumes from them.
        """
        try:
            async for record in self._pull(name, insecure):
                yield record
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StorageFull(
                f"pulling {name}: no space left on the disk of {self.store.root} "
                f"({exc.strerror}); free some space and pull again to resume"
            ) from None

    async def _pull(self, name: str, insecure: bool) -> AsyncGenerator[Record, None]:
        hf = HfRef.parse(name)
        if hf is not None:
            plan = await self._hub_plan(hf)
        else:
            plan = await self._registry_plan(ModelName.parse(name), insecure)
        await asyncio.to_thread(self._check_space, plan.layers)
        log.info("pull started", model=str(plan.name), source=plan.source)
        yield {"status": "pulling manifest"}
        for layer in plan.layers:
            async for record in self._pull_layer(layer, plan):
                yield record
        yield {"status": "verifying sha256 digest"}
        await asyncio.to_thread(self._check_model, plan)
        yield {"status": "writing manifest"}
        await plan.write()
        log.info("pull finished", model=str(plan.name))
        yield {"status": "success"}

    async def _pull_layer(self, layer: Layer, plan: PullPlan) -> AsyncIterator[Record]:
        def record(done: int) -> Record:
            status = f"pulling {layer.digest[7:19]}"
            return {
                "status": status,
                "digest": layer.digest,
                "total": layer.size,
                "completed": done,
            }

        if await asyncio.to_thread(self.store.blobs.has, layer.digest):
            yield record(layer.size)
            return

        async def fetch(transfer: Transfer) -> None:
            await plan.fetch(layer, transfer)

        last = -1
        async for done in self.transfers.follow(layer.digest, layer.size, fetch):
            if done != last:
                yield record(done)
                last = done

    def _check_space(self, layers: list[Layer]) -> None:
        """Refuse a pull that cannot fit; bytes already kept from an interrupted download
        count as downloaded (a pull stopped by a full disk resumes once there is room)."""
        blobs = self.store.blobs
        needed = sum(
            max(layer.size - blobs.partial_size(layer.digest), 0)
            for layer in layers
            if not blobs.has(layer.digest)
        )
        free = shutil.disk_usage(self.store.blobs.root).free
        if needed > free:
            raise BadRequest(f"not enough disk space: the model needs {needed} bytes, {free} free")

    def _check_model(self, plan: PullPlan) -> None:
        for layer in plan.layers:
            if layer.media_type == MEDIA_MODEL:
                try:
                    read_gguf(self.store.blobs.path(layer.digest))
                except (GGUFError, OSError) as exc:
                    raise BadRequest(f"layer {layer.digest} is not a GGUF model: {exc}") from None

    # -- from a registry -------------------------------------------------------------------

    async def _registry_plan(self, name: ModelName, insecure: bool) -> PullPlan:
        ref = RegistryRef.resolve(name, self.registry_url, insecure)
        async with RegistryClient(ref) as client:
            raw, manifest = await client.manifest()

        async def fetch(layer: Layer, transfer: Transfer) -> None:
            await self._fetch_from_registry(ref, layer, transfer)

        async def write() -> None:
            await asyncio.to_thread(self.store.write_manifest_bytes, str(name), raw)

        return PullPlan(name, _unique(manifest), fetch, write, ref.base)

    async def _fetch_from_registry(
        self, ref: RegistryRef, layer: Layer, transfer: Transfer
    ) -> None:
        if await asyncio.to_thread(self.store.blobs.has, layer.digest):
            return  # another download of it finished a moment ago
        partial = await asyncio.to_thread(self.store.blobs.partial, layer.digest)
        try:
            if partial.offset > layer.size:
                await asyncio.to_thread(partial.restart)
            transfer.completed = partial.offset
            async with RegistryClient(ref) as client:
                await self._download(client, layer, partial, transfer)
            try:
                await asyncio.to_thread(partial.commit)
            except BadRequest as exc:
                raise BackendUnavailable(f"{exc.message}: the download was discarded") from None
        finally:
            await asyncio.to_thread(partial.close)

    async def _download(
        self, client: RegistryClient, layer: Layer, partial: PartialBlob, transfer: Transfer
    ) -> None:
        """Receive the rest of a blob, resuming after a dropped connection that made progress."""
        resumes = 0
        while partial.offset < layer.size:
            start, failure = partial.offset, "the connection closed early"
            try:
                await self._receive(client, layer, partial, transfer)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = describe_transport(exc)
            if partial.offset >= layer.size:
                return
            if partial.offset == start or resumes >= MAX_RESUMES:
                raise BackendUnavailable(
                    f"pulling {layer.digest} from {client.ref.base} was interrupted at "
                    f"{partial.offset} of {layer.size} bytes ({failure}); "
                    "pull again to resume"
                )
            resumes += 1

    async def _receive(
        self, client: RegistryClient, layer: Layer, partial: PartialBlob, transfer: Transfer
    ) -> None:
        async with client.blob(layer.digest, partial.offset) as resp:
            if resp.status == 206:
                start = _range_start(resp.headers.get("Content-Range", ""))
                if start != partial.offset:
                    raise BackendUnavailable(
                        f"registry {client.ref.base} resumed {layer.digest} at byte {start}, "
                        f"not {partial.offset}"
                    )
            elif partial.offset:
                await asyncio.to_thread(partial.restart)
            transfer.completed = partial.offset
            buffer = bytearray()
            try:
                async for chunk in resp.content.iter_chunked(1 << 20):
                    if partial.offset + len(buffer) + len(chunk) > layer.size:
                        raise BackendUnavailable(
                            f"blob {layer.digest} is larger than its manifest says "
                            f"({layer.size} bytes)"
                        )
                    buffer += chunk
                    if len(buffer) >= FLUSH:
                        data = bytes(buffer)
                        buffer.clear()  # before the write: a cancelled write still completes
                        await asyncio.to_thread(partial.write, data)
                        transfer.completed = partial.offset
            finally:
                if buffer:
                    await asyncio.to_thread(partial.write, bytes(buffer))
                transfer.completed = partial.offset

    # -- from the Hugging Face Hub ---------------------------------------------------------

    async def _hub_plan(self, ref: HfRef) -> PullPlan:
        hub = self.hub
        files = await asyncio.to_thread(hub.list_files, ref)
        file = choose_gguf(ref, files)
        if file.sha256 is None:
            raise BackendUnavailable(f"{ref}: the Hub lists no SHA-256 for {file.path}")
        weights = Layer(MEDIA_MODEL, f"sha256:{file.sha256}", file.size)

        async def fetch(layer: Layer, transfer: Transfer) -> None:
            await self._fetch_from_hub(hub, ref, file, transfer)

        async def write() -> None:
            await asyncio.to_thread(self._write_hub_manifest, ref, weights)

        return PullPlan(ref.name, [weights], fetch, write, f"{hub.endpoint}/{ref.repo_id}")

    async def _fetch_from_hub(
        self, hub: HfSource, ref: HfRef, file: HubFile, transfer: Transfer
    ) -> None:
        if await asyncio.to_thread(self.store.blobs.has, f"sha256:{file.sha256}"):
            return
        # huggingface_hub downloads in a thread, which cannot be cancelled: a pull that is
        # abandoned lets it finish, and the next pull finds the file (or resumes it).
        download = asyncio.ensure_future(asyncio.to_thread(hub.download, ref, file))
        download.add_done_callback(_consume)
        async for _ in ticks(download):
            if not download.done():
                transfer.completed = await asyncio.to_thread(hub.received, ref, file)
        transfer.completed = file.size
        await asyncio.to_thread(hub.install, download.result(), f"sha256:{file.sha256}")

    def _write_hub_manifest(self, ref: HfRef, weights: Layer) -> None:
        layer, info = self.store.weights_layer(weights.digest)
        manifest = self.store.build_manifest(layer, [], info)
        self.store.write_manifest(str(ref.name), manifest)

    # -- push ------------------------------------------------------------------------------

    async def push(self, name: str, insecure: bool = False) -> AsyncGenerator[Record, None]:
        """Push an installed model to its registry; yields Ollama's progress records."""
        parsed = ModelName.parse(name)
        if parsed.host in HF_HOSTS:
            raise BadRequest("pushing to the Hugging Face Hub is not supported")
        raw = await asyncio.to_thread(self.store.manifest_bytes, name)
        layers = _unique(Manifest.from_bytes(raw))
        ref = RegistryRef.resolve(parsed, self.registry_url, insecure)
        async with RegistryClient(ref) as client:
            first_present = await client.has_blob(layers[0].digest)
            log.info("push started", model=str(parsed), registry=ref.base)
            yield {"status": "retrieving manifest"}
            for index, layer in enumerate(layers):
                present = first_present if index == 0 else await client.has_blob(layer.digest)
                async for record in self._push_layer(client, layer, present):
                    yield record
            yield {"status": "pushing manifest"}
            await client.put_manifest(raw)
        log.info("push finished", model=str(parsed), registry=ref.base)
        yield {"status": "success"}

    async def _push_layer(
        self, client: RegistryClient, layer: Layer, present: bool
    ) -> AsyncIterator[Record]:
        def record(done: int) -> Record:
            status = f"pushing {layer.digest[7:19]}"
            return {
                "status": status,
                "digest": layer.digest,
                "total": layer.size,
                "completed": done,
            }

        if present:
            yield record(layer.size)
            return
        sent = _Sent()
        body = _file_chunks(self.store.blobs.path(layer.digest), sent)
        upload = asyncio.ensure_future(client.upload_blob(layer.digest, layer.size, body))
        try:
            async for _ in ticks(upload):
                yield record(sent.done)
        finally:
            if not upload.done():
                upload.cancel()
                await asyncio.wait({upload})


async def _file_chunks(path: Path, sent: _Sent) -> AsyncIterator[bytes]:
    """A file's content in pieces read in a thread, counting what was handed on."""
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        while chunk := await asyncio.to_thread(fh.read, FLUSH):
            sent.done += len(chunk)
            yield chunk
    finally:
        fh.close()


def _unique(manifest: Manifest) -> list[Layer]:
    """The manifest's layers, then its config, each digest once."""
    seen: set[str] = set()
    layers: list[Layer] = []
    for layer in [*manifest.layers, manifest.config]:
        if layer.digest not in seen:
            seen.add(layer.digest)
            layers.append(layer)
    return layers


def _range_start(content_range: str) -> int:
    """The first byte of ``Content-Range: bytes N-M/T`` (``-1`` when unreadable)."""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1
