"""Content-addressed blobs: ``blobs/sha256-<hex>``, written only once verified.

Every write goes to a temporary file beside its final place and is renamed into place
only after its SHA-256 matches; a failed or interrupted write leaves at most a
``*.partial`` file, which is never mistaken for a blob and is swept at start.
Blocking file work: call these methods from a thread, never from the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from modelgarden.errors import BadRequest, BlobNotFound

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
CHUNK = 1 << 20


def parse_digest(digest: str) -> str:
    """Return the canonical ``sha256:<hex>`` form; raise :class:`BadRequest` if malformed."""
    match = _DIGEST.match(digest.strip().lower())
    if match is None:
        raise BadRequest(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return f"sha256:{match.group(1)}"


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, as ``sha256:<hex>``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


class BlobWriter:
    """An in-progress blob write: append chunks, then ``commit`` (verify + rename) or ``abort``."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._fh, self.tmp = store._tempfile()
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        """Append bytes (blocking: call from a thread)."""
        self._hash.update(chunk)
        self._fh.write(chunk)
        self.size += len(chunk)

    def commit(self, expected: str | None = None) -> str:
        """Verify the digest and move the blob into place; returns its digest."""
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            got = f"sha256:{self._hash.hexdigest()}"
            if expected is not None and got != parse_digest(expected):
                raise BadRequest(f"digest mismatch, expected {parse_digest(expected)}, got {got}")
            os.replace(self.tmp, self.store.path(got))
            return got
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the partial file (no-op after a successful commit)."""
        self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class BlobStore:
    """Owns the ``blobs/`` folder: naming, verified writes, imports and removal."""

    def __init__(self, root: Path) -> None:
        self.root = root / "blobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        """Where the blob with this digest lives (whether or not it exists)."""
        return self.root / parse_digest(digest).replace(":", "-")

    def has(self, digest: str) -> bool:
        """Whether a verified blob with this digest is present."""
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        """The blob's size in bytes; :class:`BlobNotFound` if absent."""
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found") from None

    def sweep_partials(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        removed = 0
        for entry in self.root.glob("*.partial"):
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
        return removed

    def _tempfile(self) -> tuple[BinaryIO, Path]:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".upload-", suffix=".partial")
        return os.fdopen(fd, "wb"), Path(name)

    def writer(self) -> BlobWriter:
        """Start writing a blob whose content arrives in pieces."""
        return BlobWriter(self)

    def write_chunks(self, chunks: Iterable[bytes], expected: str | None = None) -> str:
        """Write a blob from chunks; verify against ``expected`` if given. Returns the digest."""
        writer = self.writer()
        try:
            for chunk in chunks:
                writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit(expected)

    def write_bytes(self, data: bytes) -> str:
        """Store small content (a template, a config) and return its digest."""
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if not self.has(digest):
            self.write_chunks([data], digest)
        return digest

    def read_bytes(self, digest: str) -> bytes:
        """Read a (small) blob whole."""
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found") from None

    def import_file(self, source: Path) -> str:
        """Bring a local file in as a blob: a hard link when possible, else a verified copy."""
        digest = sha256_file(source)
        target = self.path(digest)
        if target.is_file():
            return digest
        fh, tmp = self._tempfile()
        fh.close()
        try:
            try:
                tmp.unlink()
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
                if sha256_file(tmp) != digest:
                    raise BadRequest(f"{source} changed while it was being copied") from None
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return digest

    def remove(self, digest: str) -> None:
        """Delete a blob if present."""
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    # -- resumable downloads (additive: used by pulls) -----------------------------------

    def partial_path(self, digest: str) -> Path:
        """Where a resumable download of this blob keeps its bytes: ``sha256-<hex>-partial``.

        The name does not end in ``.partial``, so :meth:`sweep_partials` keeps it: a pull
        interrupted by a restart resumes from it.
        """
        return self.root / (parse_digest(digest).replace(":", "-") + PARTIAL_SUFFIX)

    def partial_size(self, digest: str) -> int:
        """How many bytes of an interrupted download of this blob are kept (0: none)."""
        try:
            return self.partial_path(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def partial(self, digest: str) -> PartialBlob:
        """Open (or create) the resumable download of a blob; its existing bytes are re-hashed."""
        return PartialBlob(self, digest)


PARTIAL_SUFFIX = "-partial"


class PartialBlob:
    """One resumable blob download: owns ``sha256-<hex>-partial`` and its running hash.

    Bytes are appended (and hashed as they arrive); ``commit`` renames the file into place
    only when its SHA-256 is the expected digest, and removes it otherwise. ``close`` keeps
    the bytes for a later resume. Blocking file work: call from a thread. A lock makes
    ``close`` wait for a ``write`` still running in another thread.
    """

    def __init__(self, store: BlobStore, digest: str) -> None:
        self.store = store
        self.digest = parse_digest(digest)
        self.path = store.partial_path(self.digest)
        self._lock = threading.Lock()
        self._hash = hashlib.sha256()
        self.offset = 0
        self._fh: BinaryIO = open(self.path, "ab")  # noqa: SIM115 - kept open across writes
        with open(self.path, "rb") as existing:
            while chunk := existing.read(CHUNK):
                self._hash.update(chunk)
                self.offset += len(chunk)

    def write(self, chunk: bytes) -> None:
        """Append bytes at the end of what is already there."""
        with self._lock:
            self._fh.write(chunk)
            self._hash.update(chunk)
            self.offset += len(chunk)

    def restart(self) -> None:
        """Drop the bytes received so far (the source cannot resume)."""
        with self._lock:
            self._fh.truncate(0)
            self._fh.seek(0)
            self._hash = hashlib.sha256()
            self.offset = 0

    def commit(self) -> str:
        """Verify the digest and move the blob into place; a mismatch removes the bytes."""
        with self._lock:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            got = f"sha256:{self._hash.hexdigest()}"
            if got != self.digest:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                raise BadRequest(f"digest mismatch, expected {self.digest}, got {got}")
            os.replace(self.path, self.store.path(got))
            return got

    def close(self) -> None:
        """Stop writing and keep the bytes for a later resume.

        Bytes that cannot be flushed (a full disk) are dropped: the file holds a prefix of
        the blob all the same, and reopening it hashes what is really there.
        """
        with self._lock, contextlib.suppress(OSError):
            self._fh.close()  # flushes first, and closes the file even when that fails

    def discard(self) -> None:
        """Stop writing and remove the bytes."""
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
