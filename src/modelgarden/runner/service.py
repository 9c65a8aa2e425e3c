"""What a runner does with a request: build the prompt, generate, and shape Ollama records.

The gateway sends the runner complete Ollama requests (model defaults already merged in,
plus the model's ``template``/``system``), so the runner's answers are Ollama's wire format
and the gateway can relay them as bytes. Framing (NDJSON lines or one JSON body) is left to
the HTTP layer; this module yields plain dicts.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from modelgarden.errors import BadRequest, UnsupportedCapability
from modelgarden.options import validate_options
from modelgarden.runner.engine import (
    Engine,
    Generation,
    Outcome,
    Piece,
    SamplingParams,
    format_to_json,
    grammar_for,
)
from modelgarden.runner.jobs import Job
from modelgarden.runner.prompt import PromptBuilder
from modelgarden.runner.tools import (
    TOOL_CALL_OPEN,
    forced_call_schema,
    might_be_tool_call,
    parse_tool_calls,
)


def now_iso() -> str:
    """A timestamp in the form Ollama writes ``created_at``."""
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def counters(outcome: Outcome, start_ns: int, load_ns: int) -> dict[str, Any]:
    """The final record's ``done_reason`` and counters (nanoseconds)."""
    return {
        "done_reason": outcome.done_reason,
        "total_duration": max(time.time_ns() - start_ns, 0),
        "load_duration": load_ns,
        "prompt_eval_count": outcome.prompt_eval_count,
        "prompt_eval_duration": outcome.prompt_eval_duration,
        "eval_count": outcome.eval_count,
        "eval_duration": outcome.eval_duration,
    }


def _check_common(body: dict[str, Any]) -> None:
    model = body.get("model", "model")
    if body.get("think"):
        raise UnsupportedCapability(f'"{model}" does not support thinking')
    images = body.get("images") or [
        i for m in body.get("messages") or [] if isinstance(m, dict) for i in m.get("images") or []
    ]
    if images:
        raise UnsupportedCapability(f'"{model}" does not support images')


class RunnerService:
    """Serves generate, chat and embed for the one model this runner process holds."""

    def __init__(self, engine: Engine, executor: Executor) -> None:
        self.engine = engine
        self.executor = executor
        meta = engine.metadata
        bos = engine.special_token(int(meta.get("tokenizer.ggml.bos_token_id", -1)))
        eos = engine.special_token(int(meta.get("tokenizer.ggml.eos_token_id", -1)))
        self.prompts = PromptBuilder(meta.get("tokenizer.chat_template"), bos, eos)

    # -- request -> generation -------------------------------------------------------------

    def _generation(
        self, body: dict[str, Any], tokens: list[int], grammar_key: str | None
    ) -> Generation:
        options = validate_options(body.get("options"))
        return Generation(
            tokens=tokens,
            params=SamplingParams.from_options(options),
            grammar=grammar_for(grammar_key) if grammar_key else None,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=int(body.get("top_logprobs") or 0),
        )

    def _chat_prompt(
        self, body: dict[str, Any], tools: list[dict[str, Any]]
    ) -> tuple[str, list[int]]:
        """Render the chat; drop the oldest turns while the prompt does not fit."""
        messages = list(body.get("messages") or [])
        template = body.get("template") or None
        while True:
            prompt = self.prompts.chat(messages, tools, template)
            tokens = self.engine.tokenize(prompt)
            droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
            if self.engine.fits(len(tokens)) or not droppable:
                return prompt, tokens
            del messages[droppable[0]]

    def _tool_setup(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
        """Tools to offer, and the grammar key when a call is forced (``tool_choice``)."""
        tools = list(body.get("tools") or [])
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return [], None
        if choice == "required" or isinstance(choice, dict):
            name = choice.get("name") if isinstance(choice, dict) else None
            try:
                schema = forced_call_schema(tools, name)
            except ValueError as exc:
                raise BadRequest(str(exc), param="tool_choice") from None
            return tools, format_to_json(schema)
        return tools, None

    # -- chat ------------------------------------------------------------------------------

    async def chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Chat records: partial ``message`` chunks, then the final ``done`` record."""
        _check_common(body)
        tools, forced = self._tool_setup(body)
        prompt, tokens = self._chat_prompt(body, tools)
        held = ""
        if tools and prompt.rstrip().endswith(TOOL_CALL_OPEN):
            # The template opened a tool call for the assistant: the answer must be one.
            held = TOOL_CALL_OPEN
            forced = forced or format_to_json(forced_call_schema(tools, None))
        grammar_key = forced or format_to_json(body.get("format"))
        job = Job(self.engine, self._generation(body, tokens, grammar_key))
        job.start(self.executor)
        model = body.get("model", "")
        buffering = bool(tools) and (bool(forced) or not body.get("format"))
        async for event in job.events():
            if isinstance(event, Piece):
                if buffering:
                    held += event.text
                    if forced or might_be_tool_call(held):
                        continue
                    event, held, buffering = Piece(held, event.logprobs), "", False
                yield _chat_chunk(model, {"role": "assistant", "content": event.text}, event)
                continue
            if held:
                calls = parse_tool_calls(held, tools)
                message: dict[str, Any] = {"role": "assistant", "content": "" if calls else held}
                if calls:
                    message["tool_calls"] = calls
                yield _chat_chunk(model, message, None)
            yield {
                "model": model,
                "created_at": now_iso(),
                "message": {"role": "assistant", "content": ""},
                "done": True,
                **counters(event, body["_start_ns"], body["_load_ns"]),
            }

    # -- generate --------------------------------------------------------------------------

    def _generate_tokens(self, body: dict[str, Any]) -> list[int]:
        prompt = str(body.get("prompt") or "")
        suffix = body.get("suffix") or None
        context = [int(t) for t in body.get("context") or []]
        if suffix:
            if not self.engine.supports_insert():
                raise UnsupportedCapability(f'"{body.get("model")}" does not support insert')
            return context + self.engine.fim_tokens(prompt, suffix)
        if body.get("raw"):
            return context + self.engine.tokenize(prompt, add_bos=not context)
        text = self.prompts.generate(prompt, body.get("system"), body.get("template") or None)
        return context + self.engine.tokenize(text, add_bos=not context)

    async def generate(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Generate records: ``response`` chunks, then the final record with ``context``."""
        _check_common(body)
        tokens = self._generate_tokens(body)
        job = Job(self.engine, self._generation(body, tokens, format_to_json(body.get("format"))))
        job.start(self.executor)
        model = body.get("model", "")
        async for event in job.events():
            if isinstance(event, Piece):
                chunk: dict[str, Any] = {
                    "model": model,
                    "created_at": now_iso(),
                    "response": event.text,
                    "done": False,
                }
                if event.logprobs:
                    chunk["logprobs"] = event.logprobs
                yield chunk
                continue
            yield {
                "model": model,
                "created_at": now_iso(),
                "response": "",
                "done": True,
                **counters(event, body["_start_ns"], body["_load_ns"]),
                "context": event.tokens,
            }

    # -- embed -----------------------------------------------------------------------------

    async def embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """``/api/embed``: one pooled, normalised vector per input."""
        import asyncio

        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        if not all(isinstance(x, str) for x in inputs):
            raise BadRequest("input must be a string or a list of strings", param="input")
        truncate = body.get("truncate", True) is not False
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or dims <= 0):
            raise BadRequest("dimensions must be a positive integer", param="dimensions")
        loop = asyncio.get_running_loop()
        vectors, count = await loop.run_in_executor(
            self.executor, self.engine.embed, inputs, truncate, dims
        )
        return {
            "model": body.get("model", ""),
            "embeddings": vectors,
            "total_duration": max(time.time_ns() - body["_start_ns"], 0),
            "load_duration": body["_load_ns"],
            "prompt_eval_count": count,
        }


def _chat_chunk(model: str, message: dict[str, Any], piece: Piece | None) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "model": model,
        "created_at": now_iso(),
        "message": message,
        "done": False,
    }
    if piece is not None and piece.logprobs:
        chunk["logprobs"] = piece.logprobs
    return chunk
