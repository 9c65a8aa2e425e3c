"""The gateway under attack, with real sockets: keys that never fail open, bounded heads and
bodies, slow clients cut, work that stops with its client, and nothing internal in public."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import GardenServer, wait_until
from tests.integration.test_auth import make_key
from tests.integration.test_cli import garden_cmd

# --- keys fail closed ---------------------------------------------------------------------------


def test_the_last_key_revoked_locks_the_gateway_until_the_operator_acts(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    admin = make_key(server, "--name", "root", "--scope", "admin")
    gone = garden_cmd(server, "keys", "revoke", "root", GARDEN_API_KEY=admin)
    assert gone.returncode == 0, gone.stderr
    # no usable key is left: the gateway stays closed, it does not go back to open
    listed = httpx.get(server.url + "/garden/keys")
    assert listed.status_code == 401
    assert "garden keys create --local" in listed.json()["error"]
    minted = httpx.post(server.url + "/garden/keys", json={"name": "x", "scope": "admin"})
    assert minted.status_code == 401
    assert httpx.post(server.url + "/api/tags").status_code == 401
    # the operator, on the machine: a key written to the database the gateway reads
    local = garden_cmd(
        server, "keys", "create", "--local", "--name", "again", "--scope", "admin",
        GARDEN_MODELS=str(server.models),
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    fresh = local.stdout.strip()
    auth = {"Authorization": f"Bearer {fresh}"}
    assert wait_until(lambda: httpx.get(server.url + "/garden/keys", headers=auth).is_success)
    # and only deleting every key opens it again
    refused = garden_cmd(server, "keys", "purge", GARDEN_MODELS=str(server.models))
    assert refused.returncode != 0 and "--local --yes" in refused.stderr
    purged = garden_cmd(
        server, "keys", "purge", "--local", "--yes", GARDEN_MODELS=str(server.models)
    )
    assert purged.returncode == 0 and "Deleted 2 key(s)" in purged.stderr
    assert wait_until(lambda: httpx.get(server.url + "/garden/keys").is_success)


def test_an_exposed_gateway_whose_keys_are_deleted_refuses_everyone(
    make_garden: Callable[..., GardenServer], tmp_path: object
) -> None:
    from pathlib import Path

    models = Path(str(tmp_path)) / "exposed-models"
    made = garden_cmd(
        None, "keys", "create", "--local", "--name", "root", "--scope", "admin",
        GARDEN_MODELS=str(models),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    server = make_garden(GARDEN_MODELS=str(models), bind="0.0.0.0")
    assert httpx.get(server.url + "/api/tags").status_code == 401
    garden_cmd(None, "keys", "purge", "--local", "--yes", GARDEN_MODELS=str(models))

    def refused_for_exposure() -> bool:
        answer = httpx.get(server.url + "/api/tags")
        return answer.status_code == 401 and "beyond loopback" in answer.json()["error"]

    assert wait_until(refused_for_exposure)
    assert httpx.get(server.url + "/health").status_code == 200  # liveness stays public


# --- bounded heads and bodies, slow clients, too many connections -------------------------------


def raw_exchange(server: GardenServer, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send raw bytes on a fresh connection; everything the gateway answers until it closes."""
    host, port = server.host.split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    """A gateway with short deadlines and few connections, so the tests take seconds."""
    from tests.conftest import start_server, stop_and_check

    server = start_server(
        tmp_path_factory.mktemp("strict"),
        GARDEN_READ_TIMEOUT="3",
        GARDEN_HEADER_TIMEOUT="2",
        GARDEN_MAX_CONNECTIONS="8",
        GARDEN_DEFAULT_MODEL="",
    )
    yield server
    stop_and_check(server)


def test_a_head_over_the_limit_is_431_and_a_large_one_within_it_passes(
    strict: GardenServer,
) -> None:
    big = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 200_000 + b"\r\n\r\n"
    answer = raw_exchange(strict, big)
    assert status_of(answer) == 431
    assert b"request head too large: at most 65536 bytes" in answer
    fine = httpx.get(strict.url + "/", headers={"X-Pad": "a" * 30_000})
    assert fine.status_code == 200


def trickle(server: GardenServer, head: bytes, drip: bytes, every: float, limit: float) -> bytes:
    """Send ``head``, then ``drip`` a byte at a time; the answer, once the gateway closes."""
    host, port = server.host.split(":")
    with socket.create_connection((host, int(port)), timeout=limit) as sock:
        sock.sendall(head)
        sock.settimeout(every)
        deadline = time.monotonic() + limit
        for byte in drip:
            assert time.monotonic() < deadline, "the slow client was never cut off"
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # closed under us: what came before is the answer
                return b""
            return answer
    return b""


def test_a_head_trickled_a_byte_at_a_time_is_cut_at_the_head_deadline(
    strict: GardenServer,
) -> None:
    started = time.monotonic()
    answer = trickle(strict, b"GET / HTTP/1.1\r\n", b"X-Slow: " + b"a" * 100, 0.4, 15)
    assert status_of(answer) == 408 and b"request head not sent whole within 2s" in answer
    assert time.monotonic() - started < 8


def test_a_body_trickled_a_byte_at_a_time_is_cut_for_its_rate(strict: GardenServer) -> None:
    head = (
        b"POST /api/show HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    answer = trickle(strict, head, b"{" + b" " * 999, 0.4, 20)
    assert status_of(answer) == 408 and b"request body slower than 1024 bytes/s" in answer


def test_connections_past_the_cap_are_refused_with_503(strict: GardenServer) -> None:
    host, port = strict.host.split(":")
    held = [socket.create_connection((host, int(port))) for _ in range(8)]
    try:
        time.sleep(0.3)  # let the gateway accept them all
        answer = raw_exchange(strict, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_of(answer) == 503 and b"too many open connections" in answer
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: httpx.get(strict.url + "/").status_code == 200)


# --- work stops with its client -----------------------------------------------------------------

from tests.integration.test_lifecycle import COUNTING, LONG  # noqa: E402


@pytest.mark.parametrize("size", [10 * 1024, 100 * 1024])
def test_a_queued_request_that_leaves_frees_its_place_whatever_its_body_size(
    make_garden: Callable[..., GardenServer], size: int
) -> None:
    from tests.conftest import DEFAULT_MODEL

    server = make_garden(OLLAMA_NUM_PARALLEL="1")
    busy = {"model": DEFAULT_MODEL, "prompt": COUNTING, "raw": True, "options": LONG}
    with httpx.stream("POST", server.url + "/api/generate", json=busy, timeout=60) as running:
        lines = running.iter_lines()  # kept: a dropped iterator would close the stream
        next(lines)  # the only slot is now generating
        body = json.dumps(
            {"model": DEFAULT_MODEL, "prompt": "x" * size, "raw": True, "stream": False}
        ).encode()
        head = (
            f"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        host, port = server.host.split(":")
        sock = socket.create_connection((host, int(port)))
        sock.sendall(head + body)
        server.wait_queue(1)  # it waits for the slot
        sock.close()  # and its client leaves
        server.wait_queue(0, timeout=5)  # noticed at once, though the stream still runs


def test_embeddings_of_many_inputs_stop_when_the_client_leaves(
    make_garden: Callable[..., GardenServer],
) -> None:
    from tests.conftest import DEFAULT_MODEL

    server = make_garden()
    inputs = [f"sentence number {i} about the weather in a small town" for i in range(4000)]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.url + "/api/embed",
            json={"model": DEFAULT_MODEL, "input": inputs},
            timeout=httpx.Timeout(60, read=3),
        )
    (runner,) = server.runners()
    assert wait_until(lambda: runner.cpu_percent(interval=0.5) < 30, timeout=10)
    quick = httpx.post(
        server.url + "/api/embed", json={"model": DEFAULT_MODEL, "input": "hi"}, timeout=30
    )
    assert quick.status_code == 200 and len(quick.json()["embeddings"]) == 1


# --- every number range-checked at the edge -----------------------------------------------------


def test_numbers_out_of_range_are_400s_and_break_nothing_for_others(garden: GardenServer) -> None:
    from tests.conftest import DEFAULT_MODEL

    base = {"model": DEFAULT_MODEL, "prompt": "1,", "raw": True, "stream": False}
    huge_keep = httpx.post(garden.url + "/api/generate", json={**base, "keep_alive": 1e300})
    assert huge_keep.status_code == 400 and "keep_alive is out of range" in huge_keep.text
    for name in ("top_k", "temperature", "seed", "num_predict"):
        answer = httpx.post(garden.url + "/api/generate", json={**base, "options": {name: 1e300}})
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["error"] == f'option "{name}" is out of range: 1e+300'
    v1 = httpx.post(
        garden.url + "/v1/chat/completions",
        json={"model": DEFAULT_MODEL, "messages": [{"role": "user", "content": "x"}],
              "temperature": 1e300},
    )  # fmt: skip
    assert v1.status_code == 400 and v1.json()["error"]["param"] == "temperature"
    assert httpx.get(garden.url + "/api/ps").status_code == 200


def test_load_options_are_bounded_by_the_machine(make_garden: Callable[..., GardenServer]) -> None:
    import os

    from tests.conftest import DEFAULT_MODEL

    server = make_garden()
    options = {"num_thread": 64, "num_batch": 10**9, "num_predict": 1, "temperature": 0}
    answer = httpx.post(
        server.url + "/api/generate",
        json={"model": DEFAULT_MODEL, "prompt": "1,", "raw": True, "stream": False,
              "options": options},
        timeout=60,
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    (runner,) = server.runners()
    argv = runner.cmdline()
    assert argv[argv.index("--threads") + 1] == str(os.cpu_count())
    assert argv[argv.index("--batch-size") + 1] == "8192"
    assert "load option clamped" in server.logs()


# --- nothing internal on public routes ----------------------------------------------------------


def test_ready_shows_insides_only_to_an_admin_when_keys_are_on(
    make_garden: Callable[..., GardenServer],
) -> None:
    server = make_garden()
    open_ready = httpx.get(server.url + "/ready").json()
    assert "store" in open_ready and "backends" in open_ready  # no keys: an operator's view
    admin = make_key(server, "--name", "root", "--scope", "admin")
    user = make_key(server, "--name", "app", admin=admin)
    for key in (None, user, "mg-not-a-key"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        shown = httpx.get(server.url + "/ready", headers=headers)
        assert shown.status_code == 200 and shown.json() == {"status": "ready"}
        assert str(server.models) not in shown.text
    full = httpx.get(server.url + "/ready", headers={"Authorization": f"Bearer {admin}"}).json()
    assert full["store"]["path"] == str(server.models)
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_the_console_cannot_be_framed_by_another_site(garden: GardenServer) -> None:
    page = httpx.get(garden.url + "/ui/")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == "frame-ancestors 'self'"
    assert page.headers["x-frame-options"] == "SAMEORIGIN"


def test_a_gguf_of_deeply_nested_arrays_is_a_400(garden: GardenServer, tmp_path: object) -> None:
    from pathlib import Path

    import ollama

    from tests.unit.test_hardening_units import nested_arrays

    client = ollama.Client(host=garden.url)
    path = nested_arrays(Path(str(tmp_path)) / "deep.gguf", 5000)
    with pytest.raises(ollama.ResponseError) as info:
        client.create("deep", files={"deep.gguf": client.create_blob(path)})
    assert info.value.status_code == 400 and "nested more than 16 deep" in info.value.error


def test_create_refuses_the_fields_it_cannot_honour(garden: GardenServer) -> None:
    answer = httpx.post(
        garden.url + "/api/create",
        json={"model": "x", "from": "smollm2:135m", "adapters": {"a.gguf": "sha256:" + "0" * 64}},
    )
    assert answer.status_code == 400 and "adapters are not supported" in answer.json()["error"]
    made = httpx.post(
        garden.url + "/api/create",
        json={"model": "older", "modelfile": "FROM smollm2:135m\nSYSTEM terse", "stream": False},
    )
    assert made.status_code == 200 and made.json() == {"status": "success"}
    shown = httpx.post(garden.url + "/api/show", json={"model": "older"}).json()
    assert shown["system"] == "terse"
    httpx.request("DELETE", garden.url + "/api/delete", json={"model": "older"})


def test_local_keys_use_the_env_files_database_and_bad_input_is_one_line(
    tmp_path: object,
) -> None:
    """``keys create --local`` writes the database the gateway's ``.env`` names (the way back
    in for a locked-out operator), and each kind of bad input is one ``Error:`` line."""
    from pathlib import Path

    root = Path(str(tmp_path))
    db, env_file = root / "from-env.db", root / "gateway.env"
    env_file.write_text(f"GARDEN_DATABASE_URL=sqlite:///{db}\n")
    local = ("keys", "create", "--local", "--env-file", str(env_file))
    made = garden_cmd(None, *local, "--name", "root", GARDEN_MODELS=str(root / "models"))
    assert made.returncode == 0, made.stderr
    assert db.exists() and not (root / "models" / "garden.db").exists()
    for args, said in [
        (("--name", "x", "--expires", "bogus"), "expires: expected 30d, 12h or an ISO date"),
        (("--name", "x", "--expires", "9" * 400 + "d"), "more than 100 years away"),
        (("--name", ""), "name: String should have at least 1 character"),
        (("--name", "x", "--from-env", "SHORT"), "a key must be mg- and at least 32"),
    ]:
        bad = garden_cmd(None, *local, *args, GARDEN_MODELS=str(root / "models"), SHORT="mg-x")
        assert bad.returncode == 1, bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and said in lines[0], lines
