"""Client side of ``garden create``: turn a GGUF file or a Modelfile into a create request.

As with ``ollama create``, local files are uploaded as blobs first, so the server may be
on another machine; the server is only ever sent digests and model names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelgarden.client import Client
from modelgarden.client.errors import BadRequest
from modelgarden.errors import GardenError
from modelgarden.store.gguf import is_gguf
from modelgarden.store.modelfile import parse_modelfile


def create_request(client: Client, path: Path) -> dict[str, Any]:
    """The ``/api/create`` fields for a GGUF file or a Modelfile at ``path``."""
    if is_gguf(path):
        digest = client.upload_blob(path)
        return {"files": {path.name: digest}}
    try:
        modelfile = parse_modelfile(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"{path} is neither a GGUF file nor a Modelfile", 400) from None
    except GardenError as exc:
        raise BadRequest(f"{path}: {exc}", 400) from None
    request: dict[str, Any] = {}
    source = Path(modelfile.from_).expanduser()
    if not source.is_absolute():
        source = path.parent / source
    if source.is_file():
        if not is_gguf(source):
            raise BadRequest(f"FROM {modelfile.from_}: not a GGUF file", 400)
        request["files"] = {source.name: client.upload_blob(source)}
    elif modelfile.from_.startswith((".", "/", "~")):
        raise BadRequest(f"FROM {modelfile.from_}: no such file", 400)
    else:
        request["from"] = modelfile.from_
    if modelfile.template is not None:
        request["template"] = modelfile.template
    if modelfile.system is not None:
        request["system"] = modelfile.system
    if modelfile.parameters:
        request["parameters"] = modelfile.parameters
    if modelfile.messages:
        request["messages"] = modelfile.messages
    if modelfile.licenses:
        request["license"] = modelfile.licenses
    return request
