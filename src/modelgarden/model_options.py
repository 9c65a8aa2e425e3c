"""Model options (``options`` in requests, ``PARAMETER`` in Modelfiles): names and types.

One table serves request validation, Modelfile parsing and ``/api/show``'s ``parameters``
text. Load-time options change how a runner is started (a different value reloads the
model); the others apply to one request. Unknown options are dropped, as Ollama does, and
so are the legacy ones llama.cpp's server no longer has (:data:`IGNORED_OPTIONS`). Numbers
must fit the engine's types: a 400 names an option that does not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from modelgarden.errors import BadRequest

OptionType = Literal["int", "float", "bool", "str", "list"]

OPTION_TYPES: dict[str, OptionType] = {
    # per request
    "num_keep": "int",
    "seed": "int",
    "num_predict": "int",
    "top_k": "int",
    "top_p": "float",
    "min_p": "float",
    "typical_p": "float",
    "tfs_z": "float",
    "repeat_last_n": "int",
    "temperature": "float",
    "repeat_penalty": "float",
    "presence_penalty": "float",
    "frequency_penalty": "float",
    "mirostat": "int",
    "mirostat_tau": "float",
    "mirostat_eta": "float",
    "penalize_newline": "bool",
    "stop": "list",
    # load time
    "num_ctx": "int",
    "num_batch": "int",
    "num_gpu": "int",
    "main_gpu": "int",
    "num_thread": "int",
    "use_mmap": "bool",
    "use_mlock": "bool",
    "numa": "bool",
    "low_vram": "bool",
    "f16_kv": "bool",
    "vocab_only": "bool",
    "logits_all": "bool",
    "embedding_only": "bool",
}

#: Options that are fixed when a runner starts; a request that changes one reloads it.
LOAD_OPTIONS = frozenset({"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap"})
#: Accepted for old Modelfiles and clients, and ignored: Ollama dropped them when it moved to
#: llama.cpp's server, whose samplers and loader have no such settings.
IGNORED_OPTIONS = frozenset(
    {
        "tfs_z",
        "penalize_newline",
        "use_mlock",
        "numa",
        "low_vram",
        "f16_kv",
        "vocab_only",
        "logits_all",
        "embedding_only",
    }
)
#: The largest magnitudes the engine's C types hold (int32 counts, float32 values).
INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 3.4e38


def _coerce(key: str, kind: OptionType, value: Any) -> Any:
    if kind == "list":
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise BadRequest(f'option "{key}" must be of an array of strings', param=key)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise BadRequest(f'option "{key}" must be of type boolean', param=key)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f'option "{key}" must be of type integer', param=key)
        if not -INT_LIMIT <= value <= (2 * INT_LIMIT + 1 if key == "seed" else INT_LIMIT):
            raise BadRequest(f'option "{key}" is out of range: {value}', param=key)
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(f'option "{key}" must be of type float', param=key)
        if not -FLOAT_LIMIT <= value <= FLOAT_LIMIT:  # also refuses NaN
            raise BadRequest(f'option "{key}" is out of range: {value}', param=key)
        return float(value)
    if not isinstance(value, str):
        raise BadRequest(f'option "{key}" must be of type string', param=key)
    return value


def validate_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a request's ``options``: known keys, right types. Unknown keys are dropped."""
    if not options:
        return {}
    out: dict[str, Any] = {}
    for key, value in options.items():
        kind = OPTION_TYPES.get(key)
        if kind is None or value is None:
            continue
        out[key] = _coerce(key, kind, value)
    return out


def merge_parameters(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Model defaults overlaid by request options (a request's ``stop`` replaces the model's)."""
    merged = dict(base)
    merged.update(extra)
    return merged


def format_parameters(params: Mapping[str, Any]) -> str:
    """The ``parameters`` text of ``/api/show``: one ``key value`` per line (Continue reads it)."""
    lines: list[str] = []
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str):
                shown = json.dumps(item, ensure_ascii=False)  # Ollama quotes strings
            elif isinstance(item, bool):
                shown = "true" if item else "false"
            else:
                shown = str(item)
            lines.append(f"{key:<30} {shown}")
    return "\n".join(lines)
