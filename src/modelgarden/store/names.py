"""Model names as Ollama spells them: ``[host/][namespace/]model[:tag]``.

``smollm2`` is ``registry.ollama.ai/library/smollm2:latest``; names compare without regard
to case and are stored lowercase. Every part is checked against a strict character set, so a
name can never climb out of the manifests folder (no ``..``, no separators, no NUL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

from modelgarden.errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_PART = re.compile(r"[a-z0-9][a-z0-9_.-]{0,79}")
_HOST = re.compile(r"[a-z0-9][a-z0-9_.-]{0,253}(:[0-9]{1,5})?")
_TAG = re.compile(r"[a-z0-9_][a-z0-9_.-]{0,127}")
#: Names already parsed (every request's model is parsed several times on the way to its
#: backend); bounded, cleared when full.
_PARSED: dict[str, ModelName] = {}
_PARSED_MAX = 4096


@dataclass(frozen=True, order=True)
class ModelName:
    """A parsed, validated model name; ``str()`` gives the short display form."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> ModelName:
        """Parse and validate; raises :class:`InvalidModelName` with the reason."""
        known = _PARSED.get(text)
        if known is not None and type(known) is cls:
            return known
        name = cls._parse(text)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[text] = name
        return name

    @classmethod
    def _parse(cls, text: str) -> ModelName:
        raw = text.strip().lower()
        if not raw:
            raise InvalidModelName("model is required")
        for prefix in ("http://", "https://"):
            raw = raw.removeprefix(prefix)
        path, tag = raw, DEFAULT_TAG
        last = raw.rsplit("/", 1)[-1]
        if ":" in last:
            path, tag = raw.rsplit(":", 1)
        parts = path.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
        elif len(parts) == 3:
            host, namespace, model = parts
        else:
            raise InvalidModelName(f"invalid model name {text!r}: too many '/' parts")
        for label, value, pattern in (
            ("host", host, _HOST),
            ("namespace", namespace, _PART),
            ("model", model, _PART),
            ("tag", tag, _TAG),
        ):
            if not pattern.fullmatch(value) or ".." in value:
                raise InvalidModelName(
                    f"invalid model name {text!r}: bad {label} {value!r} "
                    "(use letters, digits, '_', '-' and '.')"
                )
        return cls(host, namespace, model, tag)

    def __str__(self) -> str:
        return self.display

    @cached_property
    def display(self) -> str:
        """The short display form (``smollm2:latest``, ``namespace/model:tag``)."""
        if self.host == DEFAULT_HOST and self.namespace == DEFAULT_NAMESPACE:
            return f"{self.model}:{self.tag}"
        if self.host == DEFAULT_HOST:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @cached_property
    def full(self) -> str:
        """The fully qualified name, ``host/namespace/model:tag``."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def manifest_path(self) -> PurePosixPath:
        """Where the manifest lives under ``manifests/``."""
        host = self.host.replace(":", "%3A")
        return PurePosixPath(host, self.namespace, self.model, self.tag)


def normalize(text: str) -> str:
    """The canonical display form of a model name (``smollm2`` -> ``smollm2:latest``)."""
    return str(ModelName.parse(text))
