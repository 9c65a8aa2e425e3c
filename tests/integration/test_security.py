"""Attempts that must fail: other sites' Host headers, cross-site writes, oversized bodies,
clients that stall mid-request. Each against a real gateway on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL, GardenServer


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    from tests.conftest import start_server, stop_and_check

    server = start_server(
        tmp_path_factory.mktemp("guarded"),
        GARDEN_MAX_BODY_SIZE="64KiB",
        GARDEN_READ_TIMEOUT="1s",
        OLLAMA_ORIGINS="https://*.example.com, chrome-extension://*",
    )
    yield server
    stop_and_check(server)


def _port(server: GardenServer) -> int:
    return int(server.host.rsplit(":", 1)[1])


@pytest.mark.parametrize("host", ["evil.example", "evil.example:11434", "8.8.8.8:80"])
def test_a_host_header_of_another_site_is_refused(guarded: GardenServer, host: str) -> None:
    answer = httpx.get(guarded.url + "/api/tags", headers={"host": host})
    assert answer.status_code == 403
    assert answer.json() == {"error": "host not allowed"}
    v1 = httpx.get(guarded.url + "/v1/models", headers={"host": host})
    assert v1.status_code == 403 and v1.json()["error"]["type"] == "permission_error"
    claude = httpx.post(guarded.url + "/v1/messages", json={}, headers={"host": host})
    assert claude.status_code == 403
    assert claude.json() == {
        "type": "error",
        "error": {"type": "permission_error", "message": "host not allowed"},
    }


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "garden.localhost"],
)
def test_local_host_headers_pass(guarded: GardenServer, host: str) -> None:
    answer = httpx.get(
        guarded.url + "/api/tags", headers={"host": host.format(port=_port(guarded))}
    )
    assert answer.status_code == 200


def preflight(server: GardenServer, origin: str) -> httpx.Response:
    return httpx.options(
        server.url + "/api/chat",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, authorization",
        },
    )


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "http://127.0.0.1:8080",
        "https://app.example.com",
        "chrome-extension://abc",
    ],
)
def test_allowed_origins_get_cors(guarded: GardenServer, origin: str) -> None:
    answer = preflight(guarded, origin)
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == origin
    assert "POST" in answer.headers["access-control-allow-methods"]
    assert answer.headers["access-control-allow-headers"] == "content-type, authorization"
    tags = httpx.get(guarded.url + "/api/tags", headers={"origin": origin})
    assert tags.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("origin", ["https://evil.example", "https://example.com.evil.net"])
def test_cross_site_pages_cannot_write(guarded: GardenServer, origin: str) -> None:
    assert preflight(guarded, origin).status_code == 403
    # A "simple" cross-site POST needs no preflight in a browser: it must be refused itself.
    deleted = httpx.request(
        "DELETE",
        guarded.url + "/api/delete",
        json={"model": DEFAULT_MODEL},
        headers={"origin": origin},
    )
    assert deleted.status_code == 403
    assert deleted.json() == {"error": f"origin {origin} not allowed"}
    names = [m["name"] for m in httpx.get(guarded.url + "/api/tags").json()["models"]]
    assert DEFAULT_MODEL in names  # nothing happened
    # Reads are answered, without CORS headers, so the browser hides them from the page.
    read = httpx.get(guarded.url + "/api/tags", headers={"origin": origin})
    assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


def test_the_consoles_own_origin_may_write(guarded: GardenServer) -> None:
    answer = httpx.post(
        guarded.url + "/api/show", json={"model": DEFAULT_MODEL}, headers={"origin": guarded.url}
    )
    assert answer.status_code == 200


def test_an_oversized_body_is_refused(guarded: GardenServer) -> None:
    big = {"model": DEFAULT_MODEL, "prompt": "x" * 70_000, "stream": False}
    answer = httpx.post(guarded.url + "/api/generate", json=big)
    assert answer.status_code == 413
    assert answer.json() == {"error": "request body is larger than the limit of 65536 bytes"}
    v1 = httpx.post(
        guarded.url + "/v1/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x" * 70_000}]},
    )
    assert v1.status_code == 413 and v1.json()["error"]["type"] == "invalid_request_error"
    content = [{"role": "user", "content": "x" * 70_000}]
    claude = httpx.post(
        guarded.url + "/v1/messages",
        json={"model": DEFAULT_MODEL, "max_tokens": 1, "messages": content},
    )
    assert claude.status_code == 413 and claude.json()["error"]["type"] == "request_too_large"
    responses = httpx.post(
        guarded.url + "/v1/responses", json={"model": DEFAULT_MODEL, "input": "x" * 70_000}
    )
    assert responses.status_code == 413 and "larger than" in responses.json()["error"]["message"]


def test_an_oversized_chunked_body_is_refused(guarded: GardenServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "smollm2:135m", "prompt": "'
        for _ in range(20):
            yield b"y" * 8192
        yield b'"}'

    answer = httpx.post(guarded.url + "/api/generate", content=chunks())
    assert answer.status_code == 413
    assert "larger than the limit" in answer.json()["error"]
    assert httpx.get(guarded.url + "/api/version").status_code == 200


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(1024):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Type: appl",  # trickled head
        b'POST /api/chat HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{"mo',  # body
    ],
)
def test_clients_that_stall_mid_request_are_cut_off(guarded: GardenServer, sent: bytes) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", _port(guarded))) as sock:
        sock.sendall(sent)
        assert _closed_within(sock, 5.0), "a stalled client kept its connection"
    assert time.monotonic() - started >= 0.9
    assert httpx.get(guarded.url + "/api/version").status_code == 200


def test_a_slow_but_steady_client_is_not_cut_off(guarded: GardenServer) -> None:
    request = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", _port(guarded))) as sock:
        for i in range(0, len(request), 8):  # ~2.4 s in all, never 1 s without a byte
            sock.sendall(request[i : i + 8])
            time.sleep(0.3)
        sock.settimeout(5)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")


def test_a_gateway_bound_beyond_loopback_does_not_check_host(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden(bind="0.0.0.0", GARDEN_INSECURE="1")
    answer = httpx.get(server.url + "/api/tags", headers={"host": "models.example.org"})
    assert answer.status_code == 200
