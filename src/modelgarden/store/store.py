"""The model store: Ollama-layout manifests over content-addressed blobs.

::

    <models>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest (config + layers)
    <models>/blobs/sha256-<hex>                           GGUF weights, template, params ...

The layout is Ollama's own, so an existing Ollama models folder can be served as is.
Manifests are written to a temporary file and renamed, so a reader never sees half of one.
All methods do blocking file work: call them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelgarden.errors import BadRequest, InvalidModelName, ModelNotFound
from modelgarden.store.blobs import BlobStore
from modelgarden.store.gguf import GGUFError, GGUFInfo, human_parameters, read_gguf
from modelgarden.store.names import ModelName

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_MESSAGES = "application/vnd.ollama.image.messages"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
MEDIA_ADAPTER = "application/vnd.ollama.image.adapter"


@dataclass(frozen=True)
class Layer:
    """One manifest entry: a blob's media type, digest and size."""

    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layer:
        return cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]))


@dataclass
class Manifest:
    """A model's manifest: its config blob and its layers."""

    config: Layer
    layers: list[Layer]

    def to_bytes(self) -> bytes:
        body = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        return json.dumps(body, indent=None, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data = json.loads(raw)
        return cls(Layer.from_json(data["config"]), [Layer.from_json(x) for x in data["layers"]])

    def layer(self, media_type: str) -> Layer | None:
        """The last layer of a media type (later layers override earlier ones)."""
        found = None
        for layer in self.layers:
            if layer.media_type == media_type:
                found = layer
        return found


@dataclass(frozen=True)
class LocalModel:
    """Everything known about one installed model, read from its manifest and blobs."""

    name: str
    digest: str
    modified_at: datetime
    size: int
    manifest: Manifest
    model_path: Path
    model_digest: str
    config: dict[str, Any]
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    #: The multimodal projector (an Ollama manifest's projector layer), for vision models.
    projector_path: Path | None = None

    @property
    def details(self) -> dict[str, Any]:
        """Ollama's ``details`` object."""
        return {
            "parent_model": self.config.get("parent_model", ""),
            "format": self.config.get("model_format", "gguf"),
            "family": self.config.get("model_family", ""),
            "families": self.config.get("model_families") or None,
            "parameter_size": self.config.get("model_type", ""),
            "quantization_level": self.config.get("file_type", ""),
        }


def config_from_gguf(info: GGUFInfo, layers: list[Layer], parent: str = "") -> dict[str, Any]:
    """The manifest config blob that Ollama writes for a GGUF model."""
    return {
        "model_format": "gguf",
        "model_family": info.architecture,
        "model_families": [info.architecture],
        "model_type": human_parameters(info.parameter_count),
        "file_type": info.file_type,
        "parent_model": parent,
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    }


class ModelStore:
    """Owns the models folder: reading, listing, creating, copying and deleting models."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(root)
        self.manifests = root / "manifests"
        self.manifests.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._cache: dict[str, LocalModel] = {}
        self._gguf_cache: dict[str, GGUFInfo] = {}
        #: Names looked up and not found; cleared by every write through this store (all
        #: writes go through the gateway that owns the folder).
        self._missing: set[str] = set()
        self.blobs.sweep_partials()

    # -- reading -------------------------------------------------------------------------

    def _manifest_file(self, name: ModelName) -> Path:
        return self.manifests / name.manifest_path

    def get(self, name: str) -> LocalModel:
        """The installed model of this name; :class:`ModelNotFound` if there is none."""
        parsed = ModelName.parse(name)
        key = parsed.full
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        path = self._manifest_file(parsed)
        try:
            raw = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFound(name) from None
        model = self._load(parsed, raw, path.stat().st_mtime)
        self._cache[key] = model
        return model

    def peek(self, name: str) -> LocalModel | None:
        """The model if it is already cached: no file access, safe on the event loop."""
        try:
            return self._cache.get(ModelName.parse(name).full)
        except InvalidModelName:
            return None

    def peek_gguf(self, model: LocalModel) -> GGUFInfo | None:
        """The model's GGUF header if already cached."""
        return self._gguf_cache.get(model.model_digest)

    def exists(self, name: str) -> bool:
        """Whether a model of this name is installed (absences are remembered until a write)."""
        try:
            key = ModelName.parse(name).full
        except InvalidModelName:
            return False
        if key in self._missing:
            return False
        try:
            self.get(name)
        except ModelNotFound:
            self._missing.add(key)
            return False
        return True

    def known_missing(self, name: str) -> bool:
        """Whether the name was looked up and is not installed: no file access."""
        try:
            return ModelName.parse(name).full in self._missing
        except InvalidModelName:
            return True

    def _forget(self, name: ModelName) -> None:
        """Drop what is cached about a name after its manifest changed."""
        self._cache.pop(name.full, None)
        self._missing.clear()

    def _load(self, name: ModelName, raw: bytes, mtime: float) -> LocalModel:
        manifest = Manifest.from_bytes(raw)
        model_layer = manifest.layer(MEDIA_MODEL)
        if model_layer is None:
            raise ModelNotFound(str(name), f"model '{name}' has no weights layer")
        text = self._text_layer
        params_layer = manifest.layer(MEDIA_PARAMS)
        messages_layer = manifest.layer(MEDIA_MESSAGES)
        projector = manifest.layer(MEDIA_PROJECTOR)
        try:
            config = json.loads(self.blobs.read_bytes(manifest.config.digest))
        except (ValueError, OSError):
            config = {}
        return LocalModel(
            name=str(name),
            digest=hashlib.sha256(raw).hexdigest(),
            modified_at=datetime.fromtimestamp(mtime, tz=UTC),
            size=sum(layer.size for layer in manifest.layers),
            manifest=manifest,
            model_path=self.blobs.path(model_layer.digest),
            model_digest=model_layer.digest,
            config=config if isinstance(config, dict) else {},
            template=text(manifest.layer(MEDIA_TEMPLATE)),
            system=text(manifest.layer(MEDIA_SYSTEM)),
            parameters=json.loads(self.blobs.read_bytes(params_layer.digest))
            if params_layer
            else {},
            messages=json.loads(self.blobs.read_bytes(messages_layer.digest))
            if messages_layer
            else [],
            licenses=[
                self.blobs.read_bytes(layer.digest).decode()
                for layer in manifest.layers
                if layer.media_type == MEDIA_LICENSE
            ],
            projector_path=self.blobs.path(projector.digest) if projector else None,
        )

    def _text_layer(self, layer: Layer | None) -> str | None:
        return self.blobs.read_bytes(layer.digest).decode() if layer else None

    def gguf(self, model: LocalModel) -> GGUFInfo:
        """The model's GGUF header (cached per weights digest)."""
        info = self._gguf_cache.get(model.model_digest)
        if info is None:
            info = read_gguf(model.model_path)
            self._gguf_cache[model.model_digest] = info
        return info

    def _walk(self) -> Iterator[tuple[ModelName, Path]]:
        for path in self.manifests.glob("*/*/*/*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            host, namespace, model = path.parts[-4:-1]
            with contextlib.suppress(ValueError):
                yield (
                    ModelName.parse(f"{host.replace('%3A', ':')}/{namespace}/{model}:{path.name}"),
                    path,
                )

    def installed(self) -> list[LocalModel]:
        """All installed models, newest first. Damaged manifests are skipped."""
        models: list[LocalModel] = []
        with self._lock:
            for name, path in self._walk():
                try:
                    model = self._load(name, path.read_bytes(), path.stat().st_mtime)
                except (ValueError, KeyError, OSError, ModelNotFound):
                    continue
                self._cache[name.full] = model
                self._missing.discard(name.full)  # written by someone else since
                models.append(model)
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return models

    # -- writing -------------------------------------------------------------------------

    def write_manifest(self, name: str, manifest: Manifest) -> LocalModel:
        """Atomically write a manifest (every blob it names must already be present)."""
        return self.write_manifest_bytes(name, manifest.to_bytes())

    def add_layer(self, data: bytes, media_type: str) -> Layer:
        """Store small layer content and describe it."""
        digest = self.blobs.write_bytes(data)
        return Layer(media_type, digest, len(data))

    def build_manifest(
        self, weights: Layer, extra_layers: list[Layer], info: GGUFInfo, parent: str = ""
    ) -> Manifest:
        """A manifest for GGUF weights plus text layers, with its config blob written."""
        layers = [weights, *extra_layers]
        config = config_from_gguf(info, layers, parent)
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        return Manifest(self.add_layer(config_bytes, CONFIG_TYPE), layers)

    def weights_layer(self, digest: str) -> tuple[Layer, GGUFInfo]:
        """Check that a blob is a GGUF model and describe it as the weights layer."""
        path = self.blobs.path(digest)
        if not path.is_file():
            raise BadRequest(f"blob {digest} not found: upload it with POST /api/blobs/{digest}")
        try:
            info = read_gguf(path)
        except (GGUFError, OSError) as exc:
            raise BadRequest(f"invalid model file {digest}: {exc}") from None
        return Layer(MEDIA_MODEL, digest, path.stat().st_size), info

    def gguf_layer(self, digest: str) -> tuple[Layer, GGUFInfo]:
        """A GGUF blob as a layer: the weights, or a projector (architecture ``clip``)."""
        weights, info = self.weights_layer(digest)
        if info.architecture == "clip":
            return Layer(MEDIA_PROJECTOR, weights.digest, weights.size), info
        return weights, info

    def copy(self, source: str, destination: str) -> LocalModel:
        """Give an installed model a second name (no blob is copied)."""
        model = self.get(source)
        return self.write_manifest(destination, model.manifest)

    def delete(self, name: str) -> None:
        """Remove a model's manifest and any of its blobs no other model uses."""
        parsed = ModelName.parse(name)
        with self._lock:
            model = self.get(name)
            self._manifest_file(parsed).unlink()
            self._forget(parsed)
            in_use: set[str] = set()
            for other in self.installed():
                in_use.add(other.manifest.config.digest)
                in_use.update(layer.digest for layer in other.manifest.layers)
            for layer in [model.manifest.config, *model.manifest.layers]:
                if layer.digest not in in_use:
                    self.blobs.remove(layer.digest)
            self._prune_dirs(self._manifest_file(parsed).parent)

    def _prune_dirs(self, folder: Path) -> None:
        while folder != self.manifests and folder.is_relative_to(self.manifests):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- raw manifests (additive: used by pull and push) ---------------------------------

    def manifest_bytes(self, name: str) -> bytes:
        """The manifest file of an installed model, byte for byte (what a push sends)."""
        path = self._manifest_file(ModelName.parse(name))
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise ModelNotFound(name) from None

    def write_manifest_bytes(self, name: str, raw: bytes) -> LocalModel:
        """Atomically write a manifest exactly as received (a pull).

        Its digest, the model's ID, is then the registry's. Every blob it names must
        already be present.
        """
        parsed = ModelName.parse(name)
        manifest = Manifest.from_bytes(raw)
        for layer in [manifest.config, *manifest.layers]:
            if not self.blobs.has(layer.digest):
                raise BadRequest(f"blob {layer.digest} is missing")
        path = self._manifest_file(parsed)
        with self._lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".partial")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(raw)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            self._forget(parsed)
            return self.get(name)
