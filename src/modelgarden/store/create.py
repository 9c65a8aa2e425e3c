"""Creating models: from uploaded GGUF blobs, or derived from an installed model.

A derived model (same weights, another system prompt, template or parameters) reuses
every blob it does not change, so it costs a few bytes, never a second copy of the weights.
``create_model`` yields Ollama's progress records and writes the manifest last, so a
failure at any step leaves the store as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.model_options import merge_parameters, validate_options
from modelgarden.store.gguf import GGUFInfo
from modelgarden.store.names import ModelName
from modelgarden.store.store import (
    MEDIA_LICENSE,
    MEDIA_MESSAGES,
    MEDIA_MODEL,
    MEDIA_PARAMS,
    MEDIA_PROJECTOR,
    MEDIA_SYSTEM,
    MEDIA_TEMPLATE,
    Layer,
    ModelStore,
)

_ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class CreateSpec:
    """What ``/api/create`` asks for, already parsed from the wire."""

    model: str
    from_: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    license: list[str] | None = None


def _check_template(template: str) -> None:
    from modelgarden.templates.gotemplate import GoTemplate, TemplateError

    try:
        GoTemplate(template)
    except TemplateError as exc:
        raise BadRequest(f"template error: {exc}") from None


def _check_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for message in messages:
        role = str(message.get("role", ""))
        if role not in _ROLES:
            raise BadRequest(f"message role must be one of {sorted(_ROLES)}, got {role!r}")
        out.append({"role": role, "content": str(message.get("content", ""))})
    return out


def _base_layers(
    store: ModelStore, spec: CreateSpec
) -> tuple[Layer, GGUFInfo, list[Layer], dict[str, Any], str]:
    """Weights, their GGUF header, the inherited layers, inherited params and parent name."""
    if spec.files:
        return (*_file_layers(store, spec.files), {}, "")
    if not spec.from_:
        raise BadRequest("neither 'from' nor 'files' was specified")
    base = store.get(spec.from_)
    base_weights = base.manifest.layer(MEDIA_MODEL)
    assert base_weights is not None  # LocalModel guarantees a weights layer
    weights = base_weights
    inherited = [
        layer
        for layer in base.manifest.layers
        if layer.media_type not in (MEDIA_MODEL, MEDIA_PARAMS)
    ]
    return weights, store.gguf(base), inherited, dict(base.parameters), base.name


def _file_layers(store: ModelStore, files: dict[str, str]) -> tuple[Layer, GGUFInfo, list[Layer]]:
    """The weights among uploaded GGUF files, and a projector beside them (``mmproj``)."""
    ggufs = [d for n, d in files.items() if n.lower().endswith(".gguf")] or list(files.values())
    weights: list[tuple[Layer, GGUFInfo]] = []
    projectors: list[Layer] = []
    for digest in ggufs:
        layer, info = store.gguf_layer(digest)
        if layer.media_type == MEDIA_PROJECTOR:
            projectors.append(layer)
        else:
            weights.append((layer, info))
    if len(weights) != 1:
        raise BadRequest("exactly one GGUF model file is needed in 'files'")
    if len(projectors) > 1:
        raise BadRequest("at most one projector (mmproj) GGUF file may be given in 'files'")
    return weights[0][0], weights[0][1], projectors


def _replace(layers: list[Layer], new: Layer) -> list[Layer]:
    return [layer for layer in layers if layer.media_type != new.media_type] + [new]


def create_model(store: ModelStore, spec: CreateSpec) -> Iterator[dict[str, Any]]:
    """Create (or replace) a model; yields progress records ending with ``success``."""
    name = str(ModelName.parse(spec.model))
    if spec.template is not None:
        _check_template(spec.template)
    messages = _check_messages(spec.messages) if spec.messages is not None else None
    params = validate_options(spec.parameters) if spec.parameters is not None else None
    yield {"status": "parsing GGUF" if spec.files else f"using base model {spec.from_}"}
    weights, info, layers, base_params, parent = _base_layers(store, spec)
    yield {"status": f"using existing layer {weights.digest}"}
    new_layers: list[Layer] = []
    if spec.template is not None:
        new_layers.append(store.add_layer(spec.template.encode(), MEDIA_TEMPLATE))
    if spec.system is not None:
        new_layers.append(store.add_layer(spec.system.encode(), MEDIA_SYSTEM))
    if messages is not None:
        new_layers.append(store.add_layer(json.dumps(messages).encode(), MEDIA_MESSAGES))
    if spec.license is not None:
        layers = [layer for layer in layers if layer.media_type != MEDIA_LICENSE]
        for text in spec.license:
            layers.append(store.add_layer(text.encode(), MEDIA_LICENSE))
    merged = merge_parameters(base_params, params or {})
    if merged:
        new_layers.append(store.add_layer(json.dumps(merged).encode(), MEDIA_PARAMS))
    for layer in new_layers:
        layers = _replace(layers, layer)
        yield {"status": f"creating new layer {layer.digest}"}
    manifest = store.build_manifest(weights, layers, info, parent)
    yield {"status": "writing manifest"}
    store.write_manifest(name, manifest)
    yield {"status": "success"}
