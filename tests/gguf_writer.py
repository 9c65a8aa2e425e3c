"""Write small GGUF files for tests: a real header, optional tensor descriptors, no weights."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

_TYPES = {bool: 7, int: 4, float: 6, str: 8}


def _string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<Q", len(raw)) + raw


def _value(value: Any) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    if isinstance(value, list):
        item_type = _TYPES[type(value[0])] if value else 8
        body = b"".join(_value(v)[1] for v in value)
        return 9, struct.pack("<IQ", item_type, len(value)) + body
    raise TypeError(f"cannot write {type(value).__name__} to GGUF")


def write_gguf(
    path: Path,
    metadata: dict[str, Any],
    tensors: list[tuple[str, tuple[int, ...], int]],
    version: int = 3,
) -> Path:
    """Write a GGUF header with ``metadata`` and tensor descriptors (name, shape, type)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        vtype, raw = _value(value)
        out += _string(key) + struct.pack("<I", vtype) + raw
    for name, shape, ggml_type in tensors:
        out += _string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ggml_type, 0)
    path.write_bytes(bytes(out))
    return path
