"""The Modal deployment, tested for real as far as Modal can be reached from here (it cannot).

- ``deploy/modal_app.py`` is imported offline and Modal's own objects are asked what they
  will deploy; the options function is tested on its own.
- The GPU class's methods run in-process with Modal's ``.local()`` (its ``@modal.enter`` hook
  starts a real ``garden serve`` over a models folder standing for the volume).
- The Modal gateway's own app is served on loopback with the ``modal`` backend's seam set
  to that in-process class, and real ``ollama``/``openai`` clients talk to it.

Not exercised (needs Modal): ``.remote.aio``/``.remote_gen.aio``, image builds, the volume's
commit, GPUs, ``min_containers``/``scaledown_window`` taking effect.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import ollama
import openai
import pytest
from loopback.registry import RegistryServer
from openai.types.chat import ChatCompletionMessageParam

from modelgarden.store.default import find_default_gguf
from tests.conftest import DEFAULT_MODEL, GREEDY, runner_processes
from tests.modal_local import LocalCalls, import_modal_app, serve

MEDIA_MODEL = "application/vnd.ollama.image.model"

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def modal_app() -> ModuleType:
    return import_modal_app()


@pytest.fixture(scope="module")
def gpu_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The container's environment: garden serve as the model server, a folder as volume."""
    models = tmp_path_factory.mktemp("volume") / "models"
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("GARDEN_", "OLLAMA_")):
            del os.environ[name]
    os.environ.update(
        OLLAMA_SERVER_COMMAND=f"{sys.executable} -m modelgarden serve",
        OLLAMA_MODELS_PATH=str(models),
        OLLAMA_MODELS=DEFAULT_MODEL,
    )
    yield models
    os.environ.clear()
    os.environ.update(saved)


def _original(obj: Any) -> Any:
    """The object behind one of Modal's synchronicity wrappers."""
    return next(v for k, v in vars(obj).items() if k.startswith("_sync_original"))


def _closure(fn: Any) -> dict[str, Any]:
    """What Modal will send at deploy time for a class: its loader's captured options."""
    load = _original(fn)._load
    cells = zip(load.__code__.co_freevars, load.__closure__, strict=True)
    return {name: cell.cell_contents for name, cell in cells}


def test_app_offline_shows_what_will_be_deployed(modal_app: ModuleType) -> None:
    assert modal_app.app.name == "personal-model-garden"
    backend = modal_app.OllamaBackend._get_class_service_function()
    assert backend._spec_.gpus == "A100-40GB"
    assert set(backend._spec_.volumes) == {"/root/.ollama/models"}
    assert backend._spec_.volumes["/root/.ollama/models"].name == "ollama-models"
    options = _closure(backend)
    assert options["timeout"] == 1800 and options["max_concurrent_inputs"] == 4
    assert options["scaledown_window"] == 300 and options["min_containers"] == 0
    assert set(modal_app.OllamaBackend._get_method_names()) == {"proxy", "stream"}
    gateway = modal_app.Gateway._get_class_service_function()
    assert gateway._spec_.gpus is None and gateway._spec_.cpu == 0.5
    assert _closure(gateway)["min_containers"] == 1
    assert _closure(gateway)["max_concurrent_inputs"] == 256
    web = modal_app.Gateway._get_partial_functions()["web"]
    assert web._is_web_endpoint()
    hook = _original(web).params.webhook_config
    assert hook.requires_proxy_auth  # a public URL in front of paid GPUs: Modal keys by default


def test_class_options_come_from_the_environment(modal_app: ModuleType) -> None:
    env = {
        "GATEWAY_MIN_CONTAINERS": "0",
        "OLLAMA_GPU": "H100",
        "OLLAMA_SCALEDOWN": "60",
        "OLLAMA_TIMEOUT": "600",
        "OLLAMA_MODELS": "qwen3:8b, llama3.2",
    }
    options = modal_app.class_options(env)
    assert options["gateway"]["min_containers"] == 0
    backend = options["backend"]
    assert backend["gpu"] == "H100" and backend["timeout"] == 600
    assert backend["scaledown_window"] == 60 and backend["min_containers"] == 0
    assert list(backend["volumes"]) == ["/root/.ollama/models"]
    assert modal_app.load_settings(env).models == ["qwen3:8b", "llama3.2"]
    defaults = modal_app.class_options({})
    assert defaults["gateway"]["min_containers"] == 1
    assert defaults["backend"]["gpu"] == "A100-40GB"
    assert defaults["backend"]["scaledown_window"] == 300
    assert defaults["backend"]["timeout"] == 1800
    assert modal_app.load_settings({}).models == ["glm-4.7-flash:q8_0", "glm-4.7-flash:q4_K_M"]
    with pytest.raises(ValueError, match="OLLAMA_SCALEDOWN"):
        modal_app.load_settings({"OLLAMA_SCALEDOWN": "1"})
    with pytest.raises(ValueError, match="OLLAMA_TIMEOUT='soon'"):
        modal_app.load_settings({"OLLAMA_TIMEOUT": "soon"})
    assert modal_app.load_settings({}).gateway_proxy_auth is True
    assert modal_app.load_settings({"GATEWAY_PROXY_AUTH": "off"}).gateway_proxy_auth is False
    with pytest.raises(ValueError, match="GATEWAY_PROXY_AUTH"):
        modal_app.load_settings({"GATEWAY_PROXY_AUTH": "maybe"})


@pytest.fixture(scope="module")
def gpu(modal_app: ModuleType, gpu_env: Path) -> Iterator[LocalCalls]:
    """One in-process GPU class instance, shared by the tests below; stopped at the end."""
    calls = LocalCalls(modal_app.OllamaBackend())
    yield calls
    calls.stop()
    assert not runner_processes(gpu_env), "runner processes outlived the container"


def test_class_methods_run_locally(gpu: LocalCalls, gpu_env: Path) -> None:
    tags = gpu.instance.proxy.local({"method": "GET", "path": "/api/tags", "headers": {}})
    assert tags["status"] == 200
    assert DEFAULT_MODEL in [m["name"] for m in json.loads(tags["body"])["models"]]
    assert (gpu_env / "manifests").is_dir()  # the server's store is the "volume"
    body = json.dumps({"model": DEFAULT_MODEL, "messages": HELLO, "options": GREEDY})
    call = {"method": "POST", "path": "/api/chat", "headers": {}, "body": body.encode()}
    items = gpu.instance.stream.local(call)
    assert inspect.isgenerator(items)
    records: list[Any] = list(items)  # its head (a dict), then the body's bytes
    head, *chunks = records
    assert head["status"] == 200 and "ndjson" in head["headers"]["content-type"]
    lines = b"".join(chunks).splitlines()
    assert len(lines) > 2 and json.loads(lines[-1])["done"] is True
    missing = {**call, "body": json.dumps({"model": "nope:1b", "messages": HELLO}).encode()}
    assert gpu.instance.proxy.local(missing)["status"] == 404
    user = gpu.instance._cached_user_cls_instance()
    assert user.server.proc.poll() is None  # the enter hook ran once: one server, still up


def test_enter_pulls_what_the_volume_lacks_once(
    modal_app: ModuleType, gpu_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enter hook pulls a missing model (from a registry stand-in) into the volume; a
    second container over the same volume finds it there and pulls nothing."""
    gguf = find_default_gguf()
    assert gguf is not None
    registry = RegistryServer(tmp_path / "registry").start()
    registry.add_model("library/smol", "test", [(MEDIA_MODEL, gguf)])
    volume = tmp_path / "volume"
    monkeypatch.setenv("GARDEN_REGISTRY", registry.url)
    monkeypatch.setenv("GARDEN_DEFAULT_MODEL", "")
    monkeypatch.setenv("OLLAMA_MODELS_PATH", str(volume))
    monkeypatch.setenv("OLLAMA_MODELS", "smol:test")
    try:
        for pulls in (1, 0):
            before = len(registry.requests)
            calls = LocalCalls(modal_app.OllamaBackend())
            try:
                tags = calls.instance.proxy.local({"method": "GET", "path": "/api/tags"})
                names = [m["name"] for m in json.loads(tags["body"])["models"]]
                assert names == ["smol:test"]
                fetched = [r for r in registry.requests[before:] if "/manifests/" in r.path]
                assert len(fetched) == pulls
            finally:
                calls.stop()
        monkeypatch.setenv("OLLAMA_MODELS", "smol:test,absent:7b")
        broken = LocalCalls(modal_app.OllamaBackend())
        with pytest.raises(RuntimeError, match="pull of absent:7b failed"):
            broken.instance.proxy.local({"method": "GET", "path": "/api/tags"})
        broken.stop()
    finally:
        registry.stop()
    assert not runner_processes(volume)


@pytest.fixture(scope="module")
def gateway(modal_app: ModuleType, gpu: LocalCalls) -> Iterator[tuple[str, Any]]:
    """The Modal gateway's own app on loopback, its GPU backend the in-process class."""
    app = modal_app.gateway_app(modal_app.load_settings(os.environ))
    backend = app.state.gateway.backend("gpu")
    backend.connect = lambda url: gpu
    with serve(app) as url:
        yield url, backend


def test_listing_and_health_never_wake_the_gpu(gateway: tuple[str, Any], gpu: LocalCalls) -> None:
    url, _ = gateway
    before = len(gpu.calls)
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/").status_code == 200
    assert [m.model for m in ollama.Client(host=url).list().models] == [DEFAULT_MODEL]
    assert [m.id for m in openai.OpenAI(base_url=url + "/v1", api_key="x").models.list()] == [
        DEFAULT_MODEL
    ]
    assert ollama.Client(host=url).show(DEFAULT_MODEL).details is not None
    assert len(gpu.calls) == before
    state = httpx.get(url + "/garden/backends").json()["backends"]
    modal_state = next(b for b in state if b["kind"] == "modal")
    assert modal_state["lifecycle"][0]["url"] == "modal://personal-model-garden/OllamaBackend"


def test_ollama_and_openai_clients_reach_the_gpu(gateway: tuple[str, Any]) -> None:
    url, backend = gateway
    client = ollama.Client(host=url)
    options = {**GREEDY, "num_predict": 8}
    whole = client.chat(DEFAULT_MODEL, messages=HELLO, options=options)
    parts = list(client.chat(DEFAULT_MODEL, messages=HELLO, options=options, stream=True))
    assert whole.message.content and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    reply = oa.chat.completions.create(model=DEFAULT_MODEL, messages=HELLO, max_tokens=8, **GREEDY)
    streamed = oa.chat.completions.create(
        model=DEFAULT_MODEL, messages=HELLO, max_tokens=8, stream=True, **GREEDY
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert reply.choices[0].message.content == text == whole.message.content
    assert backend.lifecycle()[0]["state"] == "ready"


def test_passthrough_reaches_the_gpu(gateway: tuple[str, Any]) -> None:
    url, _ = gateway
    tags = httpx.get(url + "/ollama/api/tags")
    assert tags.status_code == 200
    assert DEFAULT_MODEL in [m["name"] for m in tags.json()["models"]]
    assert httpx.get(url + "/ollama/gpu/api/version").json()["version"]
    body = {"model": DEFAULT_MODEL, "prompt": "1, 2, 3,", "raw": True}
    body["options"] = {**GREEDY, "num_predict": 3}
    with httpx.stream("POST", url + "/ollama/api/generate", json=body) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1]["done"] is True
    assert " 4" in "".join(line["response"] for line in lines)
    whole = httpx.post(url + "/ollama/api/generate", json={**body, "stream": False}).json()
    assert whole["done"] is True and " 4" in whole["response"]
    gone = httpx.request("DELETE", url + "/ollama/api/delete", json={"model": "absent:1b"})
    assert gone.status_code == 404 and "error" in gone.json()


def test_errors_come_back_in_each_clients_shape(gateway: tuple[str, Any], gpu: LocalCalls) -> None:
    url, backend = gateway
    backend.config.models.append("ghost:7b")  # listed by the gateway, absent on the GPU
    asyncio.run(backend.refresh())
    try:
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=url).chat("ghost:7b", messages=HELLO)
        assert err.value.status_code == 404 and "ghost" in err.value.error
        oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="ghost"):
            oa.chat.completions.create(model="ghost:7b", messages=HELLO)
    finally:
        backend.config.models.remove("ghost:7b")
        asyncio.run(backend.refresh())


def _cold_gateway(
    modal_app: ModuleType, **options: Any
) -> tuple[Callable[[], Any], LocalCalls, Any]:
    calls = LocalCalls(modal_app.OllamaBackend())
    app = modal_app.gateway_app(modal_app.load_settings(os.environ), **options)
    app.state.gateway.backend("gpu").connect = lambda url: calls
    return (lambda: serve(app)), calls, app


def test_a_cold_backend_is_woken_once(modal_app: ModuleType, gpu_env: Path) -> None:
    make, calls, _ = _cold_gateway(modal_app, max_waking=3)
    body = {"model": DEFAULT_MODEL, "prompt": "Hi", "stream": False}
    body["options"] = {**GREEDY, "num_predict": 2}

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(client.post(url + "/api/generate", json=body) for _ in range(6))
            )

    try:
        with make() as url:
            answers = asyncio.run(burst(url))
            statuses = sorted(r.status_code for r in answers)
            assert statuses == [200, 200, 200, 503, 503, 503], statuses
            refused = next(r for r in answers if r.status_code == 503)
            assert int(refused.headers["retry-after"]) >= 1
            assert "starting" in refused.json()["error"]
            assert calls.wakes() == 1
            again = httpx.post(url + "/api/generate", json=body, timeout=60)
            assert again.status_code == 200 and calls.wakes() == 1  # warm now
    finally:
        calls.stop()


def test_a_slow_start_keeps_the_connection_alive(modal_app: ModuleType, gpu_env: Path) -> None:
    """Behind Modal's 150 s limit the gateway starts slow answers early; here "slow" is a
    cold start longer than 0.2 s, and the clients still read their answers."""
    make, calls, _ = _cold_gateway(modal_app, early_start=0.2)
    try:
        with make() as url:
            reply = ollama.Client(host=url).generate(
                DEFAULT_MODEL, "1, 2, 3,", raw=True, options={**GREEDY, "num_predict": 3}
            )
            assert reply.done and reply.response is not None and " 4" in reply.response
            assert calls.wakes() == 1
    finally:
        calls.stop()
    make, calls, _ = _cold_gateway(modal_app, early_start=0.2)
    try:
        with make() as url:
            oa = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            chunks = list(
                oa.chat.completions.create(
                    model=DEFAULT_MODEL, messages=HELLO, max_tokens=4, stream=True, **GREEDY
                )
            )
            assert chunks and chunks[-1].choices[0].finish_reason is not None
            assert calls.wakes() == 1
    finally:
        calls.stop()


def test_keys_need_a_database_that_outlives_the_containers(
    modal_app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="GATEWAY_KEYS=true needs a database that outlives"):
        modal_app.load_settings({"GATEWAY_KEYS": "true"})
    keyed = {"GATEWAY_KEYS": "true", "GATEWAY_SECRET": "garden-db"}
    options = modal_app.class_options(keyed)
    (secret,) = options["gateway"]["secrets"]
    assert secret is not None and modal_app.class_options({})["gateway"]["secrets"] == []
    monkeypatch.delenv("GARDEN_DATABASE_URL", raising=False)
    with pytest.raises(RuntimeError, match="outlives the gateway's containers"):
        modal_app.gateway_app(modal_app.load_settings(keyed))  # the secret gave no PostgreSQL


async def test_an_ephemeral_gateway_refuses_to_make_keys(modal_app: ModuleType) -> None:
    app = modal_app.gateway_app(modal_app.load_settings({}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        made = await http.post("/garden/keys", json={"name": "root", "scope": "admin"})
    assert made.status_code == 409
    assert "would vanish with its container" in made.json()["error"]
