"""Ollama requests in llama.cpp's server terms: the body of ``POST /completion``.

Pure functions. Every sampling field is sent explicitly with Ollama's defaults (the
engine's own differ: ``top_p`` 0.95, ``min_p`` 0.05), ``format`` becomes a JSON schema
the engine turns into a grammar, and images travel as base64 beside a prompt that holds
the engine's media marker where each one goes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from modelgarden.errors import BadRequest

#: Ollama's ``api.DefaultOptions`` for sampling, under Ollama's names.
DEFAULTS: dict[str, Any] = {
    "num_keep": 4,
    "seed": -1,
    "num_predict": -1,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "temperature": 0.8,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "mirostat_tau": 5.0,
    "mirostat_eta": 0.1,
}
#: Ollama option → the engine's ``/completion`` field, where the names differ.
_ENGINE_NAMES = {"num_keep": "n_keep", "num_predict": "n_predict"}
#: An open-ended answer (``num_predict`` < 0) stops after this many contexts' worth of
#: tokens, as Ollama bounds it: a model caught in a loop cannot generate forever.
OPEN_ENDED_CONTEXTS = 10
#: The grammar for ``format: "json"``: a JSON object.
JSON_OBJECT: dict[str, Any] = {"type": "object"}
#: The engine's JSON grammar (llguidance) lets whitespace run on between tokens, which a
#: small model fills with newlines; this asks for JSON laid out as ``json.dumps`` does.
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_NESTED = ("items", "additionalItems", "not", "if", "then", "else", "contains")
_NESTED_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_NESTED_MAPS = ("properties", "$defs", "definitions", "patternProperties")


def sampling(options: Mapping[str, Any], num_ctx: int) -> dict[str, Any]:
    """The engine's sampling fields for (validated) Ollama options over the defaults."""
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if k in DEFAULTS}}
    out = {_ENGINE_NAMES.get(k, k): v for k, v in merged.items()}
    limit = OPEN_ENDED_CONTEXTS * num_ctx
    if out["n_predict"] < 0 or out["n_predict"] > limit:
        out["n_predict"] = limit
    if out["seed"] < 0:
        out["seed"] = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
    if stop := [s for s in options.get("stop") or [] if s]:
        out["stop"] = stop
    return out


def closed(schema: Any) -> Any:
    """A schema whose objects with listed ``properties`` take no others unless it says so.

    JSON Schema allows any other key by default, and a small model given that freedom
    keeps inventing keys until its token budget runs out, so the answer never parses; the
    grammars Ollama's runners built, and OpenAI's structured outputs, close such objects.
    """
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in _NESTED:
        if key in out:
            out[key] = closed(out[key])
    for key in _NESTED_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed(s) for s in out[key]]
    for key in _NESTED_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(s) for name, s in out[key].items()}
    return out


def format_fields(fmt: Any) -> dict[str, Any]:
    """The engine's constraint for a request's ``format`` (``"json"`` or a JSON schema)."""
    if fmt in (None, ""):
        return {}
    if fmt == "json":
        fmt = JSON_OBJECT
    if not isinstance(fmt, dict):
        raise BadRequest('format must be "json" or a JSON schema object', param="format")
    schema = closed(fmt)
    schema.setdefault("x-guidance", LAYOUT)
    return {"json_schema": schema}


def decode_images(images: list[Any]) -> list[str]:
    """Check that each image is base64 (as Ollama sends them); return them as strings."""
    out: list[str] = []
    for image in images:
        if not isinstance(image, str):
            raise BadRequest("images must be base64-encoded strings", param="images")
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("images must be base64-encoded", param="images") from None
        out.append(image)
    return out


def completion_body(
    prompt: str | list[int | str],
    options: Mapping[str, Any],
    *,
    num_ctx: int,
    fmt: Any = None,
    logprobs: bool = False,
    top_logprobs: int = 0,
    images: list[str] | None = None,
) -> dict[str, Any]:
    """The whole ``POST /completion`` body: always streamed, with the prompt cached per slot
    and the generated tokens' ids returned (for ``context``)."""
    body: dict[str, Any] = {
        "prompt": prompt,
        "stream": True,
        "cache_prompt": True,
        "return_tokens": True,
        **sampling(options, num_ctx),
        **format_fields(fmt),
    }
    if logprobs:
        body["n_probs"] = max(top_logprobs, 1)
    if images:
        if not isinstance(prompt, str):
            raise BadRequest("images cannot be sent with token context")
        body["prompt"] = {"prompt_string": prompt, "multimodal_data": images}
    return body
