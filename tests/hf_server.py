"""A local stand-in of the Hugging Face Hub's file API, for tests (not the real service).

It answers the requests ``huggingface_hub`` makes to list a model repository and download a
file, in the shapes the real Hub uses:

- ``GET /api/models/{user}/{repo}/tree/{revision}[/{path}]``: a JSON list of
  ``{"type": "file", "oid", "size", "path", "lfs": {"oid", "size", "pointerSize"}}``
  (``lfs`` only for large files; ``oid`` is the git blob id, ``lfs.oid`` the SHA-256);
- ``HEAD``/``GET /{user}/{repo}/resolve/{revision}/{path}``: for an LFS file a 302 to a
  "CDN" URL with ``X-Repo-Commit``, ``X-Linked-Etag`` (the SHA-256) and ``X-Linked-Size``;
  for a small file a 200 with ``ETag`` (the git blob id) and ``X-Repo-Commit``;
- ``GET /cdn-lfs/{sha256}``: the LFS content, honouring ``Range``. The CDN URL names the
  host ``localhost`` rather than ``127.0.0.1``, another origin, as the real CDN is another
  host (``huggingface_hub`` follows only redirects that stay on the Hub).

Errors carry the Hub's ``X-Error-Code`` header (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``). ``requests`` records every request as (method, path, first byte);
``fail_once_at`` cuts the next download at that byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from loopback.threaded import ThreadedApp

CHUNK = 1 << 20
COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: Files at least this large (and every ``.gguf``) are stored with LFS, as on the Hub.
LFS_THRESHOLD = 10 << 20


@dataclass(frozen=True)
class HubFile:
    """One file of a stand-in repository."""

    path: str
    source: Path | bytes
    size: int
    sha256: str
    lfs: bool

    @property
    def git_oid(self) -> str:
        """The git blob id: of the content, or of the LFS pointer file."""
        content = self.pointer if self.lfs else self.read()
        return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
            f"size {self.size}\n"
        ).encode()

    def read(self) -> bytes:
        return self.source.read_bytes() if isinstance(self.source, Path) else self.source


def _sha256(source: Path | bytes) -> str:
    h = hashlib.sha256()
    if isinstance(source, bytes):
        h.update(source)
        return h.hexdigest()
    with open(source, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _hub_error(status: int, code: str, message: str) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    return web.json_response({"error": message}, status=status, headers=headers)


class HubServer(ThreadedApp):
    """The stand-in Hub on a free loopback port, run in a background thread."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, HubFile]] = {}
        self.requests: list[tuple[str, str, int]] = []
        #: Cut the next CDN response at this byte (then forget it): an interrupted download.
        self.fail_once_at: int | None = None
        super().__init__()

    def add_file(self, repo_id: str, path: str, source: Path | bytes) -> HubFile:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        lfs = size >= LFS_THRESHOLD or path.endswith(".gguf")
        entry = HubFile(path, source, size, _sha256(source), lfs)
        self.repos.setdefault(repo_id.lower(), {})[path] = entry
        return entry

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/api/models/{user}/{repo}/tree/{revision}", self._tree)
        app.router.add_get("/api/models/{user}/{repo}/tree/{revision}/{path:.*}", self._tree)
        resolve = "/{user}/{repo}/resolve/{revision}/{path:.+}"
        app.router.add_route("GET", resolve, self._resolve)
        app.router.add_route("HEAD", resolve, self._resolve)
        app.router.add_get("/cdn-lfs/{sha256}", self._cdn)

    def _repo(self, request: web.Request) -> dict[str, HubFile] | None:
        info = request.match_info
        return self.repos.get(f"{info['user']}/{info['repo']}".lower())

    async def _tree(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, 0))
        files = self._repo(request)
        if files is None:
            return _hub_error(404, "RepoNotFound", "Repository not found")
        if request.match_info["revision"] != "main":
            return _hub_error(404, "RevisionNotFound", "Invalid rev id")
        entries = []
        for f in files.values():
            entry: dict[str, object] = {"type": "file", "oid": f.git_oid, "size": f.size}
            entry["path"] = f.path
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            entries.append(entry)
        return web.json_response(entries)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, 0))
        files = self._repo(request)
        if files is None:
            return _hub_error(404, "RepoNotFound", "Repository not found")
        entry = files.get(request.match_info["path"])
        if entry is None:
            return _hub_error(404, "EntryNotFound", "Entry not found")
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        if entry.lfs:
            headers |= {
                "Location": f"http://localhost:{self.port}/cdn-lfs/{entry.sha256}",
                "X-Linked-Etag": f'"{entry.sha256}"',
                "X-Linked-Size": str(entry.size),
                "ETag": f'"{entry.git_oid}"',
            }
            return web.Response(status=302, headers=headers)
        headers["ETag"] = f'"{entry.git_oid}"'
        body = entry.read() if request.method == "GET" else None
        if body is None:
            headers["Content-Length"] = str(entry.size)
        return web.Response(body=body, headers=headers)

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        sha = request.match_info["sha256"]
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        self.requests.append((request.method, request.path, start))
        entry = next(
            (f for files in self.repos.values() for f in files.values() if f.sha256 == sha), None
        )
        if entry is None:
            return web.Response(status=404)
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = entry.size - start
        response.content_type = "application/octet-stream"
        response.headers["ETag"] = f'"{sha}"'
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{entry.size - 1}/{entry.size}"
        await response.prepare(request)
        cut, self.fail_once_at = self.fail_once_at, None
        end = entry.size if cut is None else max(start, min(cut, entry.size))
        if isinstance(entry.source, bytes):
            await response.write(entry.source[start:end])
        else:
            with await asyncio.to_thread(entry.source.open, "rb") as fh:
                fh.seek(start)
                for offset in range(start, end, CHUNK):
                    await response.write(await asyncio.to_thread(fh.read, min(CHUNK, end - offset)))
        if cut is not None:
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-file
            return response
        await response.write_eof()
        return response
