"""How the local store's models look on the Ollama API: tags, show, ps and capabilities."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from modelgarden.errors import BadRequest
from modelgarden.lifecycle.scheduler import LoadedModel
from modelgarden.model_options import format_parameters
from modelgarden.store.gguf import GGUFInfo
from modelgarden.store.modelfile import render_modelfile
from modelgarden.store.store import LocalModel
from modelgarden.templates.thinking import thinking_tags
from modelgarden.wire.ollama import ListModel, ModelDetails, PsModel, ShowResponse

#: Architectures that only embed (no text generation).
EMBEDDING_ARCHS = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "t5encoder",
        "xlm-roberta",
        "modernbert",
    }
)
#: What ``expires_at`` says for a model that never unloads (Go's time + MaxInt64, as Ollama).
NEVER = timedelta(days=292 * 365)


def is_embedding_model(info: GGUFInfo) -> bool:
    """Whether the model only embeds (its GGUF names a pooling type, or its architecture)."""
    return info.architecture in EMBEDDING_ARCHS or "pooling_type" in "".join(info.metadata)


def fim_tokens(info: GGUFInfo) -> tuple[int, int, int] | None:
    """The fill-in-the-middle token ids (prefix, suffix, middle), when the vocabulary has them."""
    ids = [info.metadata.get(f"tokenizer.ggml.fim_{p}_token_id") for p in ("pre", "suf", "mid")]
    if all(isinstance(i, int) and i >= 0 for i in ids):
        return int(ids[0]), int(ids[1]), int(ids[2])  # type: ignore[arg-type]
    return None


def model_thinking_tags(model: LocalModel, info: GGUFInfo) -> tuple[str, str] | None:
    """The tags of the model's reasoning, when its template thinks (else ``None``)."""
    try:
        return thinking_tags(model.template, info.chat_template)
    except BadRequest:  # a template we cannot parse offers nothing
        return None


def capabilities(model: LocalModel, info: GGUFInfo) -> list[str]:
    """Ollama capability names for a local model.

    Every generating model gets ``tools``: when its template does not describe tools, the
    gateway describes them in the system prompt and parses the calls from the answer.
    ``thinking`` comes from the template, ``vision`` from a projector beside the weights.
    """
    if is_embedding_model(info):
        return ["embedding"]
    caps = ["completion", "tools"]
    if fim_tokens(info) or (model.template and ".Suffix" in model.template):
        caps.append("insert")
    if model_thinking_tags(model, info):
        caps.append("thinking")
    if model.projector_path is not None:
        caps.append("vision")
    return caps


def details(model: LocalModel) -> ModelDetails:
    """``details`` from the manifest's config blob."""
    return ModelDetails(**model.details)


def list_entry(model: LocalModel, caps: list[str]) -> ListModel:
    """One ``/api/tags`` entry (``caps``: :func:`capabilities`)."""
    return ListModel(
        name=model.name,
        model=model.name,
        modified_at=model.modified_at,
        size=model.size,
        digest=model.digest,
        details=details(model),
        capabilities=caps,
    )


def show(model: LocalModel, info: GGUFInfo, verbose: bool) -> ShowResponse:
    """The ``/api/show`` answer; ``template`` falls back to the GGUF's own chat template."""
    return ShowResponse(
        license="\n".join(model.licenses),
        modelfile=render_modelfile(
            name=model.name,
            from_=str(model.model_path),
            template=model.template,
            system=model.system,
            parameters=model.parameters,
            licenses=model.licenses,
            messages=model.messages,
        ),
        parameters=format_parameters(model.parameters),
        template=model.template or info.chat_template or "",
        system=model.system or "",
        details=details(model),
        messages=model.messages or None,
        model_info=info.model_info(verbose),
        capabilities=capabilities(model, info),
        modified_at=model.modified_at,
    )


def ps_entry(loaded: LoadedModel) -> PsModel:
    """One ``/api/ps`` entry for a loaded model."""
    model: LocalModel = loaded.info
    expires = loaded.expires_wall()
    expires_at = (
        datetime.now(UTC) + NEVER
        if math.isinf(expires)
        else datetime.fromtimestamp(expires, tz=UTC)
    )
    return PsModel(
        name=model.name,
        model=model.name,
        size=loaded.size,
        digest=model.digest,
        details=details(model),
        expires_at=expires_at,
        size_vram=loaded.size_vram,
        context_length=loaded.spec.num_ctx,
    )


def load_record(model_name: str, endpoint: str, reason: str) -> dict[str, Any]:
    """The single record answering an empty request: ``done_reason`` load or unload."""
    record: dict[str, Any] = {
        "model": model_name,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    if endpoint == "chat":
        record["message"] = {"role": "assistant", "content": ""}
    else:
        record["response"] = ""
    record["done"] = True
    record["done_reason"] = reason
    return record
