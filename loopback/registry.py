"""A local stand-in of an Ollama-style model registry (the Docker registry v2 API), for tests.

It serves manifests and blobs from a folder (``manifests/<ns>/<model>/<tag>``,
``blobs/sha256-<hex>``), honours ``Range`` on blob reads, and takes uploads
(``POST blobs/uploads/`` then a monolithic ``PUT ...?digest=``) and manifest ``PUT`` s.
Test hooks: ``fail_at`` cuts every blob response at that byte offset (an interrupted
download), ``corrupt`` serves the named blobs with one byte flipped, ``delay`` slows blob
responses down (seconds per MiB), and ``requests`` records every request with the first
byte it asked for. It runs an aiohttp server in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from loopback.threaded import ThreadedApp

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
CHUNK = 1 << 20
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


@dataclass(frozen=True)
class Seen:
    """One request the registry answered: method, path and the first byte asked for."""

    method: str
    path: str
    start: int


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"errors": [{"code": code, "message": message}]}
    return web.json_response(body, status=status)


def _range_start(header: str | None) -> int:
    if not header:
        return 0
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
    return int(match.group(1)) if match else 0


class RegistryServer(ThreadedApp):
    """An Ollama-style registry on a free loopback port; ``url`` and ``host`` say where."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.manifests = root / "manifests"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifests.mkdir(parents=True, exist_ok=True)
        self.fail_at: int | None = None
        self.corrupt: set[str] = set()
        self.delay = 0.0
        self.requests: list[Seen] = []
        super().__init__()

    # -- running ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def routes(self, app: web.Application) -> None:
        prefix = "/v2/{ns}/{model}"
        app.router.add_get("/v2/", self._version_check)
        app.router.add_route("*", prefix + "/manifests/{tag}", self._manifest)
        app.router.add_route("GET", prefix + "/blobs/{digest}", self._blob)
        app.router.add_route("HEAD", prefix + "/blobs/{digest}", self._blob)
        app.router.add_post(prefix + "/blobs/uploads/", self._start_upload)
        app.router.add_put(prefix + "/blobs/uploads/{upload}", self._finish_upload)

    def reset(self) -> None:
        """Clear the hooks and the request log."""
        self.fail_at, self.corrupt, self.delay = None, set(), 0.0
        self.requests.clear()

    # -- content ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest.replace(":", "-")

    def add_blob(self, data: bytes | Path, media_type: str) -> dict[str, Any]:
        """Store a blob (a file is linked, never copied or changed); its manifest entry."""
        if isinstance(data, Path):
            digest, size = sha256_of(data), data.stat().st_size
            target = self.blob_path(digest)
            if not target.exists():
                os.symlink(data.resolve(), target)
        else:
            digest, size = f"sha256:{hashlib.sha256(data).hexdigest()}", len(data)
            self.blob_path(digest).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": size}

    def add_model(self, repository: str, tag: str, layers: list[tuple[str, bytes | Path]]) -> bytes:
        """Publish a model: layers as (media type, content), plus a config blob."""
        entries = [self.add_blob(data, media) for media, data in layers]
        config = {
            "model_format": "gguf",
            "model_family": "llama",
            "model_families": ["llama"],
            "model_type": "134.52M",
            "file_type": "Q4_1",
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [e["digest"] for e in entries]},
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self.add_blob(json.dumps(config).encode(), CONFIG_TYPE),
            "layers": entries,
        }
        raw = json.dumps(manifest).encode()
        self.manifest_path(repository, tag).parent.mkdir(parents=True, exist_ok=True)
        self.manifest_path(repository, tag).write_bytes(raw)
        return raw

    def manifest_path(self, repository: str, tag: str) -> Path:
        return self.manifests / repository / tag

    def blob_gets(self, digest: str) -> list[int]:
        """The first byte of every GET of a blob, in order."""
        suffix = f"/blobs/{digest}"
        return [s.start for s in self.requests if s.method == "GET" and s.path.endswith(suffix)]

    # -- handlers --------------------------------------------------------------------------

    async def _version_check(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    def _seen(self, request: web.Request, start: int = 0) -> None:
        self.requests.append(Seen(request.method, request.path, start))

    async def _manifest(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        info = request.match_info
        path = self.manifest_path(f"{info['ns']}/{info['model']}", info["tag"])
        if request.method == "PUT":
            return await self._put_manifest(request, path)
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        if not path.is_file():
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        raw = path.read_bytes()
        headers = {"Docker-Content-Digest": f"sha256:{hashlib.sha256(raw).hexdigest()}"}
        return web.Response(body=raw, content_type=MANIFEST_TYPE, headers=headers)

    async def _put_manifest(self, request: web.Request, path: Path) -> web.StreamResponse:
        raw = await request.read()
        try:
            data = json.loads(raw)
            entries = [data["config"], *data["layers"]]
        except (ValueError, KeyError, TypeError):
            return _error(400, "MANIFEST_INVALID", "manifest invalid")
        for entry in entries:
            if not self.blob_path(str(entry.get("digest"))).exists():
                return _error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown {entry.get('digest')}")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(path.write_bytes, raw)
        return web.Response(status=201)

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        path = self.blob_path(digest)
        start = _range_start(request.headers.get("Range"))
        self._seen(request, start)
        if not _DIGEST.match(digest) or not path.exists():
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        size = path.stat().st_size
        if request.method == "HEAD":
            return web.Response(
                headers={"Content-Length": str(size), "Docker-Content-Digest": digest}
            )
        if start >= size:
            return _error(416, "RANGE_INVALID", "requested range not satisfiable")
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = size - start
        response.content_type = "application/octet-stream"
        response.headers["Accept-Ranges"] = "bytes"
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client went away
            await self._send(request, response, path, start, digest in self.corrupt)
        return response

    async def _send(
        self,
        request: web.Request,
        response: web.StreamResponse,
        path: Path,
        start: int,
        corrupt: bool,
    ) -> None:
        position = start
        with await asyncio.to_thread(path.open, "rb") as fh:
            fh.seek(start)
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                if corrupt and position == start:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if self.fail_at is not None and position + len(chunk) > self.fail_at:
                    if self.fail_at > position:
                        await response.write(chunk[: self.fail_at - position])
                    assert request.transport is not None
                    request.transport.close()  # the connection drops mid-blob
                    return
                await response.write(chunk)
                position += len(chunk)
                if self.delay:
                    await asyncio.sleep(self.delay)
        await response.write_eof()

    async def _start_upload(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        info = request.match_info
        upload = uuid.uuid4().hex
        location = f"/v2/{info['ns']}/{info['model']}/blobs/uploads/{upload}?_state=x"
        return web.Response(
            status=202, headers={"Location": location, "Docker-Upload-UUID": upload}
        )

    async def _finish_upload(self, request: web.Request) -> web.StreamResponse:
        self._seen(request)
        digest = request.query.get("digest", "")
        if not _DIGEST.match(digest):
            return _error(400, "DIGEST_INVALID", "digest missing or invalid")
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".upload-")
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.content.iter_chunked(CHUNK):
                h.update(chunk)
                out.write(chunk)
        if f"sha256:{h.hexdigest()}" != digest:
            os.unlink(tmp)
            return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
        os.replace(tmp, self.blob_path(digest))
        info = request.match_info
        location = f"/v2/{info['ns']}/{info['model']}/blobs/{digest}"
        return web.Response(status=201, headers={"Location": location})
