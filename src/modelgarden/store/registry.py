"""Talking to an Ollama-style model registry (the Docker registry v2 API) over HTTP.

A model ``host/namespace/model:tag`` lives under ``{base}/v2/{namespace}/{model}/``:

==========================================  ==============================================
``GET manifests/{tag}``                     the manifest (``Accept``: Docker manifest v2)
``GET blobs/{digest}``                      a blob; ``Range: bytes=N-`` resumes at ``N``
``HEAD blobs/{digest}``                     whether the registry holds a blob
``POST blobs/uploads/``                     start an upload; the answer's ``Location``
``PUT {location}?digest=...``               the whole blob in one request (monolithic)
``PUT manifests/{tag}``                     the manifest, last
==========================================  ==============================================

The base URL is the ``registry_url`` setting for names without a host (Ollama's default
host ``registry.ollama.ai``), else the name's own host over HTTPS, or plain HTTP when the
request says ``insecure``. Every failure becomes a :mod:`modelgarden.errors` error whose
message names the registry and what went wrong.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import aiohttp

from modelgarden import __version__
from modelgarden.errors import (
    BackendUnavailable,
    BlobNotFound,
    Forbidden,
    GardenError,
    ModelNotFound,
    Unauthorized,
    UpstreamTimeout,
)
from modelgarden.store.blobs import parse_digest
from modelgarden.store.names import DEFAULT_HOST, ModelName
from modelgarden.store.store import MANIFEST_TYPE, MEDIA_MODEL, Manifest

OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = f"{MANIFEST_TYPE}, {OCI_MANIFEST_TYPE};q=0.9"
#: No limit on a whole transfer (models are large), but on connecting and on each read.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=15, sock_read=60)
MAX_MANIFEST = 1 << 20


@dataclass(frozen=True)
class RegistryRef:
    """Where one model lives in a registry: the base URL and the repository path."""

    name: ModelName
    base: str

    @classmethod
    def resolve(cls, name: ModelName, default_base: str, insecure: bool) -> RegistryRef:
        """The registry for a name: the configured one, or the name's own host."""
        if name.host == DEFAULT_HOST:
            return cls(name, default_base.rstrip("/"))
        return cls(name, f"{'http' if insecure else 'https'}://{name.host}")

    @property
    def repository(self) -> str:
        """``namespace/model``, the registry's repository name."""
        return f"{self.name.namespace}/{self.name.model}"

    @property
    def manifest_url(self) -> str:
        """The URL of the tag's manifest."""
        return f"{self.base}/v2/{self.repository}/manifests/{self.name.tag}"

    @property
    def uploads_url(self) -> str:
        """Where blob uploads start."""
        return f"{self.base}/v2/{self.repository}/blobs/uploads/"

    def blob_url(self, digest: str) -> str:
        """The URL of one blob."""
        return f"{self.base}/v2/{self.repository}/blobs/{parse_digest(digest)}"


def _is_size(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "a layer is not a JSON object"
    if not isinstance(entry.get("mediaType"), str):
        return "a layer has no mediaType"
    try:
        parse_digest(str(entry.get("digest", "")))
    except GardenError:
        return f"a layer has an invalid digest {entry.get('digest')!r}"
    if not _is_size(entry.get("size")):
        return f"layer {entry.get('digest')} has an invalid size {entry.get('size')!r}"
    return None


def manifest_problem(data: Any) -> str | None:
    """Why a decoded manifest is not a usable model manifest, or ``None`` when it is."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("schemaVersion") != 2:
        return f"schemaVersion is {data.get('schemaVersion')!r}, expected 2"
    media = data.get("mediaType", MANIFEST_TYPE)
    if media not in (MANIFEST_TYPE, OCI_MANIFEST_TYPE):
        return f"unsupported mediaType {media!r}"
    layers = data.get("layers")
    if not isinstance(layers, list) or not layers:
        return "it has no layers"
    for entry in [data.get("config"), *layers]:
        if problem := _entry_problem(entry):
            return problem
    if not any(entry["mediaType"] == MEDIA_MODEL for entry in layers):
        return f"it has no model layer ({MEDIA_MODEL})"
    return None


async def read_bounded(resp: aiohttp.ClientResponse, limit: int, source: str) -> bytes:
    """A body of at most ``limit`` bytes, whether or not it was announced with a
    Content-Length (a chunked one is read only as far as the limit)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise BackendUnavailable(f"{source} sent a huge manifest (over {limit} bytes)")
        parts.append(chunk)
    return b"".join(parts)


def parse_manifest(raw: bytes, source: str) -> Manifest:
    """Decode and check a manifest; :class:`BackendUnavailable` naming ``source`` if bad."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise BackendUnavailable(f"{source} sent a manifest that is not JSON") from None
    if problem := manifest_problem(data):
        raise BackendUnavailable(f"{source} sent an invalid manifest: {problem}")
    return Manifest.from_bytes(raw)


def describe_transport(exc: BaseException) -> str:
    """A short reason for a connection-level failure."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return exc.os_error.strerror or str(exc.os_error) or "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection was cut during the transfer"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def transport_error(exc: BaseException, base: str) -> GardenError:
    """The gateway error for a registry that could not be reached or talked to."""
    reason = describe_transport(exc)
    hint = ""
    if base.startswith("https://") and (
        isinstance(exc, aiohttp.ClientSSLError) or "ssl" in str(exc).lower()
    ):
        hint = " (for a registry that serves plain HTTP, use insecure: true)"
    error_type = UpstreamTimeout if isinstance(exc, TimeoutError) else BackendUnavailable
    return error_type(f"cannot reach registry {base}: {reason}{hint}")


def _registry_message(text: str) -> str:
    """The ``errors[].message`` of a Docker registry error body, else the body's start."""
    try:
        data = json.loads(text)
        messages = [str(e.get("message") or e.get("code")) for e in data["errors"]]
        return "; ".join(messages)
    except (ValueError, KeyError, TypeError, AttributeError):
        return text.strip()[:200]


async def status_error(resp: aiohttp.ClientResponse, base: str, action: str) -> GardenError:
    """The gateway error for a registry answer with an error status."""
    message = _registry_message(await resp.text(errors="replace")) or str(resp.reason or "")
    text = f"{action}: registry {base} answered {resp.status}: {message}"
    if resp.status == 401:
        return Unauthorized(text)
    if resp.status == 403:
        return Forbidden(text)
    return BackendUnavailable(text)


class RegistryClient:
    """Owns one HTTP session to one registry repository: manifests, blobs and uploads."""

    def __init__(self, ref: RegistryRef) -> None:
        self.ref = ref
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RegistryClient:
        self._session = aiohttp.ClientSession(
            timeout=TIMEOUT, headers={"User-Agent": f"modelgarden/{__version__}"}
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (only inside ``async with``)."""
        assert self._session is not None, "use RegistryClient in 'async with'"
        return self._session

    @contextlib.contextmanager
    def _transport(self) -> Iterator[None]:
        try:
            yield
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc, self.ref.base) from None

    async def manifest(self) -> tuple[bytes, Manifest]:
        """The tag's manifest, raw and decoded; :class:`ModelNotFound` when there is none."""
        name = self.ref.name
        with self._transport():
            async with self.session.get(self.ref.manifest_url, headers={"Accept": ACCEPT}) as resp:
                if resp.status == 404:
                    raise ModelNotFound(
                        str(name),
                        f"pull model manifest: model '{name}' not found in registry "
                        f"{self.ref.base}",
                    )
                if resp.status != 200:
                    raise await status_error(resp, self.ref.base, "pull model manifest")
                if (resp.content_length or 0) > MAX_MANIFEST:
                    raise BackendUnavailable(f"registry {self.ref.base} sent a huge manifest")
                raw = await read_bounded(resp, MAX_MANIFEST, f"registry {self.ref.base}")
        return raw, parse_manifest(raw, f"registry {self.ref.base}")

    @contextlib.asynccontextmanager
    async def blob(self, digest: str, offset: int = 0) -> AsyncIterator[aiohttp.ClientResponse]:
        """An open response for a blob from ``offset`` on (200, or 206 when resumed).

        Connection errors are left to the caller, which can resume.
        """
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with self.session.get(self.ref.blob_url(digest), headers=headers) as resp:
            if resp.status == 404:
                raise BlobNotFound(f"blob {digest} not found in registry {self.ref.base}")
            if resp.status not in (200, 206):
                raise await status_error(resp, self.ref.base, f"pull blob {digest}")
            yield resp

    async def has_blob(self, digest: str) -> bool:
        """Whether the registry already holds a blob."""
        with self._transport():
            async with self.session.head(self.ref.blob_url(digest)) as resp:
                if resp.status in (200, 204):
                    return True
                if resp.status == 404:
                    return False
                raise await status_error(resp, self.ref.base, f"check blob {digest}")

    async def upload_blob(self, digest: str, size: int, body: AsyncIterator[bytes]) -> None:
        """Upload a blob in one request: start an upload, then ``PUT`` it with its digest."""
        base = self.ref.base
        with self._transport():
            async with self.session.post(self.ref.uploads_url) as resp:
                if resp.status not in (201, 202):
                    raise await status_error(resp, base, f"start upload of {digest}")
                location = resp.headers.get("Location")
                if not location:
                    raise BackendUnavailable(f"registry {base} started an upload without Location")
            url = urljoin(self.ref.uploads_url, location)
            url += ("&" if "?" in url else "?") + f"digest={parse_digest(digest)}"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            async with self.session.put(url, data=body, headers=headers) as resp:
                if resp.status not in (200, 201, 204):
                    raise await status_error(resp, base, f"upload blob {digest}")

    async def put_manifest(self, raw: bytes) -> None:
        """Publish a manifest under the tag (every blob it names must be uploaded)."""
        with self._transport():
            async with self.session.put(
                self.ref.manifest_url, data=raw, headers={"Content-Type": MANIFEST_TYPE}
            ) as resp:
                if resp.status not in (200, 201, 202, 204):
                    raise await status_error(resp, self.ref.base, "push manifest")
