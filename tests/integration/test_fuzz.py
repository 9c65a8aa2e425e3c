"""Schemathesis against the gateway's own OpenAPI document: every operation gets generated
requests; none may answer 500, and every error is in its API's shape.

Both of Schemathesis's generation modes run: positive (requests the schema allows) and
negative (requests it forbids). The gateway under test has an empty store (so generated
inference requests exercise parsing, validation and routing without running a model) and
a registry that refuses connections (so pulls fail fast). Key creation is left out: the
first key would close the gateway to every later generated request.
``GARDEN_FUZZ_EXAMPLES`` sets the examples per operation (CI: 15; the figures in
docs/SECURITY.md come from a run with 300).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from tests.conftest import GardenServer, free_port, start_server, stop_and_check

EXAMPLES = int(os.environ.get("GARDEN_FUZZ_EXAMPLES", "15"))
#: Operations whose job is to reach an upstream that is down here: 502-504 are honest.
UPSTREAM = ("/api/pull", "/api/push", "/deploy", "/ollama/")
SKIPPED = {("POST", "/garden/keys"), ("DELETE", "/garden/keys/{ref}")}
COUNTS: dict[str, dict[int, int]] = {}


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GardenServer]:
    server = start_server(
        tmp_path_factory.mktemp("fuzz"),
        GARDEN_DEFAULT_MODEL="",
        GARDEN_REGISTRY=f"http://127.0.0.1:{free_port()}",
        GARDEN_LOG_LEVEL="warning",
    )
    yield server
    stop_and_check(server)
    _report()


def check_shape(path: str, body: bytes) -> None:
    """An error answer is JSON in its family's shape: Anthropic's under /v1/messages, OpenAI's
    elsewhere under /v1, Ollama's outside."""
    data = orjson.loads(body)
    assert isinstance(data, dict) and "error" in data, body[:200]
    if path.startswith("/v1/messages"):
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, body[:200]
    if path.startswith("/v1/"):
        error = data["error"]
        assert isinstance(error, dict), body[:200]
        assert isinstance(error.get("message"), str) and isinstance(error.get("type"), str)
    else:
        assert isinstance(data["error"], str) and data["error"], body[:200]


def judge(case: Any) -> None:
    """Send one generated request and check what came back."""
    label = f"{case.method.upper()} {case.path}"
    response = case.call(timeout=30)
    status = response.status_code
    path = case.formatted_path
    counts = COUNTS.setdefault(label, {})
    counts[status] = counts.get(status, 0) + 1
    assert status != 500, f"{label}: {response.content[:300]!r}"
    if status >= 500:
        assert path.startswith(UPSTREAM), f"{label} answered {status}: {response.content[:300]!r}"
    if status >= 400 and response.content and case.method.upper() != "HEAD":
        check_shape(path, response.content)


def test_generated_requests_never_break_the_gateway(fuzzed: GardenServer) -> None:
    api = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    failures = []
    operations = []
    for result in api.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an operation it cannot load: {result}"
        operations.append(result.ok())
    for operation in operations:
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue

        modes = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]

        @given(case=st.one_of(modes))
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            judge(case)

        try:
            run()
        except AssertionError as exc:
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n".join(failures)
    assert len(COUNTS) == len(operations) - len(SKIPPED)
    assert sum(sum(c.values()) for c in COUNTS.values()) >= len(COUNTS) * min(EXAMPLES, 5)


def _report() -> None:
    target = os.environ.get("GARDEN_FUZZ_REPORT")
    if target:
        with open(target, "wb") as out:
            out.write(
                orjson.dumps(
                    COUNTS,
                    option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
                )
            )


#: Bodies that answer at once (one token), each number of which is then pushed out of range.
_BASE: dict[str, dict[str, Any]] = {
    "/api/generate": {"model": "smollm2:135m", "prompt": "1,", "raw": True, "stream": False,
                      "options": {"num_predict": 1}},
    "/api/chat": {"model": "smollm2:135m", "messages": [{"role": "user", "content": "x"}],
                  "stream": False, "options": {"num_predict": 1}},
    "/api/embed": {"model": "smollm2:135m", "input": "x"},
    "/v1/chat/completions": {"model": "smollm2:135m", "max_tokens": 1,
                             "messages": [{"role": "user", "content": "x"}]},
    "/v1/completions": {"model": "smollm2:135m", "prompt": "1,", "max_tokens": 1},
    "/v1/embeddings": {"model": "smollm2:135m", "input": "x"},
    "/v1/responses": {"model": "smollm2:135m", "input": "x", "max_output_tokens": 1},
    "/v1/messages": {"model": "smollm2:135m", "max_tokens": 1,
                     "messages": [{"role": "user", "content": "x"}]},
}  # fmt: skip
_OPTIONS = ("num_keep", "seed", "num_predict", "top_k", "top_p", "min_p", "typical_p",
            "repeat_last_n", "temperature", "repeat_penalty", "presence_penalty",
            "frequency_penalty", "mirostat", "mirostat_tau", "mirostat_eta", "num_ctx",
            "num_batch", "num_gpu", "main_gpu", "num_thread")  # fmt: skip
_TOP = ("keep_alive", "top_logprobs", "dimensions", "max_tokens", "temperature", "top_p",
        "seed", "frequency_penalty", "presence_penalty", "n", "logprobs", "top_k",
        "max_output_tokens")  # fmt: skip
EXTREMES = st.sampled_from([1e300, -1e300, 2**64, -(2**64), 1e19, 3.5e38, -(2**31) - 1])


def test_numbers_out_of_range_are_400s_never_500s(garden: GardenServer) -> None:
    import httpx

    seen: dict[int, int] = {}

    @given(
        path=st.sampled_from(sorted(_BASE)),
        where=st.sampled_from([("options", name) for name in _OPTIONS] + [("", t) for t in _TOP]),
        value=EXTREMES,
    )
    @settings(max_examples=max(EXAMPLES * 4, 40), deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def run(path: str, where: tuple[str, str], value: float) -> None:
        body = orjson.loads(orjson.dumps(_BASE[path]))
        group, name = where
        if group:
            body.setdefault("options", {})[name] = value
        else:
            body[name] = value
        answer = httpx.post(garden.url + path, json=body, timeout=60)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code < 500, f"{path} {where}={value}: {answer.text[:300]}"
        if answer.status_code >= 400:
            check_shape(path, answer.content)

    run()
    assert seen.get(400, 0) > 0  # the extremes were really refused, not all ignored
