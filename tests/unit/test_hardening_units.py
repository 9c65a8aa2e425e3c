"""Parsers of untrusted input stay bounded: crafted GGUF headers, chunked registry answers,
create requests with fields we do not use, durations past what Go can hold."""

from __future__ import annotations

import struct
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from modelgarden.api.ollama.models import create_spec
from modelgarden.durations import parse_keep_alive
from modelgarden.errors import BackendUnavailable, BadRequest
from modelgarden.store.gguf import GGUFError, read_gguf
from modelgarden.store.registry import read_bounded
from modelgarden.wire.ollama import CreateRequest


def nested_arrays(path: Path, depth: int) -> Path:
    """A GGUF header whose one value is an array of an array of ... ``depth`` deep."""
    key = b"x"
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
    out += struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    for _ in range(depth):
        out += struct.pack("<IQ", 9, 1)  # an array holding one array
    out += struct.pack("<IQ", 4, 0)  # the innermost: no uint32s
    path.write_bytes(bytes(out))
    return path


def test_deeply_nested_gguf_arrays_are_a_clear_error_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="nested more than 16 deep"):
        read_gguf(nested_arrays(tmp_path / "deep.gguf", 5000))
    read_gguf(nested_arrays(tmp_path / "fine.gguf", 3))  # a little nesting is fine


async def _serve(chunks: list[bytes]) -> TestServer:
    async def manifest(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/m", manifest)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_a_chunked_answer_is_read_only_as_far_as_the_limit() -> None:
    server = await _serve([b"x" * 65536] * 64)  # 4 MiB, never announced
    try:
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/m")) as resp:
            assert resp.content_length is None
            with pytest.raises(BackendUnavailable, match="huge manifest"):
                await read_bounded(resp, 1 << 20, "registry")
        small = await _serve([b'{"a":', b" 1}"])
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(small.make_url("/m")) as resp,
            ):
                assert await read_bounded(resp, 1 << 20, "registry") == b'{"a": 1}'
        finally:
            await small.close()
    finally:
        await server.close()


def test_create_reads_an_older_clients_modelfile_under_its_json_fields() -> None:
    text = (
        'FROM smollm2:135m\nSYSTEM "be brief"\nPARAMETER temperature 0.2\nTEMPLATE "{{ .Prompt }}"'
    )
    spec = create_spec(CreateRequest(model="m", modelfile=text, template="{{ .System }}"))
    assert spec.from_ == "smollm2:135m" and spec.system == "be brief"
    assert spec.parameters == {"temperature": 0.2}
    assert spec.template == "{{ .System }}"  # the JSON field wins
    blob = create_spec(CreateRequest(model="m", modelfile="FROM @sha256:" + "a" * 64))
    assert blob.files == {"model.gguf": "sha256:" + "a" * 64} and blob.from_ is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"adapters": {"lora.gguf": "sha256:" + "b" * 64}}, "adapters are not supported"),
        ({"path": "/etc/passwd"}, "path is not supported"),
        ({"modelfile": "FROM ./model.gguf"}, "upload the file"),
        ({"colour": "blue", "size": 3}, "unknown field(s) for /api/create: colour, size"),
    ],
)
def test_create_fields_it_cannot_honour_are_refused(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequest) as info:
        create_spec(CreateRequest(model="m", **fields))
    assert message in info.value.message


@pytest.mark.parametrize("value", [1e300, "1e300", 10**12, "3000000h"])
def test_keep_alive_past_what_go_can_hold_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive is out of range"):
        parse_keep_alive(value)
    assert parse_keep_alive("-1") == float("inf") and parse_keep_alive(3600) == 3600.0
