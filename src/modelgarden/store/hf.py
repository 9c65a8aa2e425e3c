"""GGUF models from the Hugging Face Hub: ``hf.co/{user}/{repo}[:{quant}]``.

The repository's files are listed and downloaded with ``huggingface_hub`` (which resumes an
interrupted download from its ``.incomplete`` file). The file is chosen by its quantization
(the last ``.``/``-`` separated part of its name, compared without regard to case:
``smol.Q4_1.gguf`` is ``Q4_1``); without one, ``Q4_K_M`` if the repository has it, else its
only GGUF, else a 400 that lists the choices. Downloads go to
``<models>/.downloads/hf/<user>/<repo>/`` (the same file system as the blobs), are checked
against the SHA-256 the Hub lists for the file, and are then moved into ``blobs/``.

``HF_ENDPOINT`` (or the ``hf_endpoint`` setting) picks the Hub; ``HF_HUB_OFFLINE`` makes a
pull fail at once with a clear error; ``HF_TOKEN`` (or a saved login) opens gated and
private repositories. Everything here blocks: call it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.tqdm import disable_progress_bars

from modelgarden.errors import (
    BackendUnavailable,
    BadRequest,
    Forbidden,
    GardenError,
    ModelNotFound,
)
from modelgarden.store.blobs import BlobStore, sha256_file
from modelgarden.store.names import ModelName

HF_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_QUANT = "Q4_K_M"
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class HfRef:
    """A GGUF model on the Hub as a model name spells it, keeping the Hub's own case."""

    name: ModelName
    repo_id: str
    quant: str | None
    revision: str = "main"

    @classmethod
    def parse(cls, text: str) -> HfRef | None:
        """The reference for an ``hf.co/...`` or ``huggingface.co/...`` name, else ``None``.

        Raises :class:`~modelgarden.errors.InvalidModelName` for a malformed name.
        """
        name = ModelName.parse(text)
        if name.host not in HF_HOSTS:
            return None
        raw = text.strip()
        for prefix in ("https://", "http://"):
            if raw.lower().startswith(prefix):
                raw = raw[len(prefix) :]
        path = raw.split("/", 1)[1]
        repo_id, _, quant = path.partition(":")
        return cls(name, repo_id, quant if quant and quant.lower() != "latest" else None)

    def __str__(self) -> str:
        return f"hf.co/{self.repo_id}" + (f":{self.quant}" if self.quant else "")


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub repository: its path, size and (for LFS files) SHA-256."""

    path: str
    size: int
    sha256: str | None = None

    @property
    def quant(self) -> str:
        """The quantization its name ends with (``smol.Q4_1.gguf`` -> ``Q4_1``)."""
        stem = self.path.rsplit("/", 1)[-1]
        stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
        return re.split(r"[.\-]", stem)[-1]


def gguf_files(files: list[HubFile]) -> list[HubFile]:
    """The single-file GGUF models among a repository's files (no projectors, no shards)."""
    return [
        f
        for f in files
        if f.path.lower().endswith(".gguf")
        and "mmproj" not in f.path.rsplit("/", 1)[-1].lower()
        and not _SHARD.search(f.path)
    ]


def _choices(ref: HfRef, ggufs: list[HubFile]) -> str:
    return ", ".join(f"hf.co/{ref.repo_id}:{f.quant}" for f in ggufs)


def choose_gguf(ref: HfRef, files: list[HubFile]) -> HubFile:
    """The GGUF file a reference means; :class:`BadRequest` listing the choices if unclear."""
    ggufs = gguf_files(files)
    if not ggufs:
        raise BadRequest(f"{ref}: the repository has no single-file GGUF model")
    if ref.quant is not None:
        wanted = ref.quant.lower()
        matches = [f for f in ggufs if f.quant.lower() == wanted]
        matches = matches or [f for f in ggufs if f.path.rsplit("/", 1)[-1].lower() == wanted]
        if len(matches) == 1:
            return matches[0]
        why = "several files match" if matches else "no GGUF file has that quantization"
        raise BadRequest(f"{ref}: {why}; choose one of {_choices(ref, ggufs)}")
    if len(ggufs) == 1:
        return ggufs[0]
    defaults = [f for f in ggufs if f.quant.upper() == DEFAULT_QUANT]
    if len(defaults) == 1:
        return defaults[0]
    raise BadRequest(
        f"{ref}: the repository has several GGUF files and no {DEFAULT_QUANT}; "
        f"name a quantization: {_choices(ref, ggufs)}"
    )


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids talking to the Hub."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE
    return env or bool(constants.HF_HUB_OFFLINE)


def hub_error(exc: Exception, ref: HfRef, endpoint: str) -> GardenError:
    """The gateway error for a failure of ``huggingface_hub``."""
    if isinstance(exc, GatedRepoError):
        return Forbidden(
            f"{ref}: the repository is gated; accept its terms on the Hub and set HF_TOKEN"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFound(str(ref), f"{ref}: repository not found on {endpoint}")
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFound(str(ref), f"{ref}: revision {ref.revision!r} not found")
    if isinstance(exc, EntryNotFoundError):
        return ModelNotFound(str(ref), f"{ref}: file not found on {endpoint}")
    if isinstance(exc, OfflineModeIsEnabled):
        return BackendUnavailable(f"cannot pull {ref}: the Hugging Face Hub is offline")
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, HfHubHTTPError):
        return BackendUnavailable(f"{ref}: the Hugging Face Hub at {endpoint} said: {first_line}")
    return BackendUnavailable(f"cannot reach the Hugging Face Hub at {endpoint}: {first_line}")


class HfSource:
    """Owns pulls from one Hugging Face Hub endpoint: listing, downloading, installing."""

    def __init__(self, blobs: BlobStore, downloads: Path, endpoint: str) -> None:
        self.blobs = blobs
        self.downloads = downloads
        self.endpoint = endpoint.rstrip("/")

    def _check_online(self, ref: HfRef) -> None:
        if hub_offline():
            raise BackendUnavailable(
                f"cannot pull {ref}: the Hugging Face Hub is offline (HF_HUB_OFFLINE is set)"
            )

    def list_files(self, ref: HfRef) -> list[HubFile]:
        """Every file of the repository, with the SHA-256 of its LFS content."""
        self._check_online(ref)
        api = HfApi(endpoint=self.endpoint)
        try:
            entries = list(api.list_repo_tree(ref.repo_id, recursive=True, revision=ref.revision))
        except Exception as exc:
            raise hub_error(exc, ref, self.endpoint) from None
        return [
            HubFile(e.path, int(e.size), e.lfs.sha256 if e.lfs else None)
            for e in entries
            if isinstance(e, RepoFile)
        ]

    def folder(self, ref: HfRef) -> Path:
        """Where this repository's downloads go."""
        return self.downloads / ref.name.namespace / ref.name.model

    def download(self, ref: HfRef, file: HubFile) -> Path:
        """Download a file (resuming a partial one); returns its local path."""
        self._check_online(ref)
        disable_progress_bars()
        try:
            path = hf_hub_download(
                ref.repo_id,
                file.path,
                revision=ref.revision,
                local_dir=self.folder(ref),
                endpoint=self.endpoint,
            )
        except Exception as exc:
            raise hub_error(exc, ref, self.endpoint) from None
        return Path(str(path))

    def received(self, ref: HfRef, file: HubFile) -> int:
        """Bytes downloaded so far (the size of ``huggingface_hub``'s ``.incomplete`` file)."""
        cache = self.folder(ref) / ".cache" / "huggingface" / "download"
        pattern = f"*{file.sha256}*.incomplete" if file.sha256 else "*.incomplete"
        sizes = [p.stat().st_size for p in cache.rglob(pattern) if p.is_file()]
        return max(sizes, default=0)

    def install(self, path: Path, expected: str) -> str:
        """Verify a downloaded file against its digest and move it into ``blobs/``.

        A mismatch removes the file and raises ``digest mismatch ...``.
        """
        got = sha256_file(path)
        if got != expected:
            path.unlink(missing_ok=True)
            raise BackendUnavailable(
                f"digest mismatch, expected {expected}, got {got}: the download was discarded"
            )
        target = self.blobs.path(got)
        if target.is_file():
            path.unlink(missing_ok=True)
        else:
            os.replace(path, target)
        return got
