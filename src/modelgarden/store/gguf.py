"""Read the metadata of a GGUF file without loading its tensors.

Only the header is parsed: the key/value section and the tensor descriptors (name, shape,
type). Large arrays (the tokenizer's vocabulary and merges) are skipped and kept only as
their length, so reading a model's metadata takes milliseconds, not the seconds that a
full parse of 50,000 tokenizer strings would. The result feeds ``/api/show`` (``details``,
``model_info``, capabilities), the manifest's config blob and the memory estimate.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
#: Arrays longer than this are not materialised, only counted.
MAX_ARRAY_ITEMS = 256
#: Arrays of arrays deeper than this are refused (no real model nests more than 2).
MAX_ARRAY_DEPTH = 16

# llama.cpp's LLAMA_FTYPE values, as Ollama names them in ``quantization_level``.
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4",
}

_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


class GGUFError(ValueError):
    """The file is not a GGUF model, or its header is damaged."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's descriptor: name, shape and ggml type id."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def n_elements(self) -> int:
        """Number of elements (parameters) in the tensor."""
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass(frozen=True)
class ArrayInfo:
    """A large metadata array that was counted, not read."""

    item_type: int
    length: int


@dataclass
class GGUFInfo:
    """A GGUF file's header: its metadata and tensor descriptors."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        """``general.architecture`` (``llama``, ``qwen2``, ``bert`` ...)."""
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def parameter_count(self) -> int:
        """Total number of weights in all tensors."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> str:
        """Quantization level (``Q4_1``, ``Q4_K_M``, ``F16`` ...)."""
        ftype = self.metadata.get("general.file_type")
        if isinstance(ftype, int):
            return FILE_TYPES.get(ftype, f"unknown({ftype})")
        return "unknown"

    def arch_value(self, key: str, default: Any = None) -> Any:
        """An architecture-scoped value such as ``context_length`` or ``block_count``."""
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int | None:
        """The context length the model was trained with, when the file says."""
        value = self.arch_value("context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template shipped in the file, when present."""
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    def model_info(self, verbose: bool = False) -> dict[str, Any]:
        """Metadata shaped like Ollama's ``model_info``: large arrays empty unless verbose."""
        info: dict[str, Any] = {}
        for key, value in self.metadata.items():
            if isinstance(value, ArrayInfo):
                info[key] = None if not verbose else f"<array of {value.length} items>"
            elif isinstance(value, list) and not verbose and len(value) > 16:
                info[key] = None
            else:
                info[key] = value
        info["general.parameter_count"] = self.parameter_count
        return info


def human_parameters(count: int) -> str:
    """Format a parameter count as Ollama does: ``134.52M``, ``7.6B``, ``8B``."""
    if count >= 1_000_000_000:
        value = count / 1_000_000_000
        return f"{value:.0f}B" if value.is_integer() else f"{value:.1f}B"
    if count >= 1_000_000:
        value = count / 1_000_000
        return f"{value:.0f}M" if value.is_integer() else f"{value:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.0f}K"
    return str(count)


class _Cursor:
    """Sequential little-endian reads over a memory-mapped file."""

    def __init__(self, buf: mmap.mmap) -> None:
        self.buf = buf
        self.pos = 0
        self.depth = 0

    def unpack(self, fmt: str, size: int) -> Any:
        if self.pos + size > len(self.buf):
            raise GGUFError("unexpected end of file in GGUF header")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q", 8)
        if length > len(self.buf) - self.pos:
            raise GGUFError("string length past the end of the file")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        length = self.unpack("<Q", 8)
        self.skip(length)

    def skip(self, size: int) -> None:
        if size > len(self.buf) - self.pos:
            raise GGUFError("unexpected end of file in GGUF header")
        self.pos += size

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            fmt, size = _SCALARS[vtype]
            return self.unpack(fmt, size)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            return self.array()
        raise GGUFError(f"unknown GGUF value type {vtype}")

    def array(self) -> list[Any] | ArrayInfo:
        if self.depth >= MAX_ARRAY_DEPTH:  # a crafted header would exhaust the stack
            raise GGUFError(f"arrays nested more than {MAX_ARRAY_DEPTH} deep in the GGUF header")
        self.depth += 1
        try:
            return self._array()
        finally:
            self.depth -= 1

    def _array(self) -> list[Any] | ArrayInfo:
        item_type = self.unpack("<I", 4)
        length = self.unpack("<Q", 8)
        if length <= MAX_ARRAY_ITEMS:
            return [self.value(item_type) for _ in range(length)]
        if item_type in _SCALARS:
            self.skip(_SCALARS[item_type][1] * length)
        elif item_type == _STRING:
            skip: Callable[[], None] = self.skip_string
            for _ in range(length):
                skip()
        else:
            for _ in range(length):
                self.value(item_type)
        return ArrayInfo(item_type, length)


def read_gguf(path: str | Path) -> GGUFInfo:
    """Read a GGUF file's header. Raises :class:`GGUFError` when it is not valid GGUF."""
    with open(path, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise GGUFError("file is empty, not a GGUF model") from None
        with buf:
            return _parse(buf)


def is_gguf(path: str | Path) -> bool:
    """Whether the file starts with the GGUF magic bytes."""
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


def _parse(buf: mmap.mmap) -> GGUFInfo:
    if buf[:4] != GGUF_MAGIC:
        raise GGUFError("not a GGUF file (bad magic bytes)")
    cur = _Cursor(buf)
    cur.pos = 4
    version = cur.unpack("<I", 4)
    if version not in (2, 3):
        raise GGUFError(f"unsupported GGUF version {version}")
    n_tensors = cur.unpack("<Q", 8)
    n_kv = cur.unpack("<Q", 8)
    if n_kv > 1_000_000 or n_tensors > 10_000_000:
        raise GGUFError("implausible GGUF header counts")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I", 4))
    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I", 4)
        if n_dims > 8:
            raise GGUFError(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(cur.unpack("<Q", 8) for _ in range(n_dims))
        ggml_type = cur.unpack("<I", 4)
        cur.unpack("<Q", 8)  # data offset
        tensors.append(TensorInfo(name, shape, ggml_type))
    return GGUFInfo(version=version, metadata=metadata, tensors=tensors)
