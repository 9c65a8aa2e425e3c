"""Ollama's generate, chat and embed, answered by one runner's llama.cpp server engine.

The gateway keeps Ollama's semantics and the engine does the inference, as Ollama itself
drives ``llama-server``: prompts are rendered here from the model's template (a Modelfile's
Go template, else the GGUF's Jinja chat template), a prompt too long for a slot is cut as
Ollama cuts it (oldest messages first, then tokens past ``num_keep``), and the engine's
stream becomes Ollama records (:mod:`modelgarden.engine.records`). Requests arrive with the
model's Modelfile defaults already merged in, and capabilities already checked.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from modelgarden.engine.client import EngineClient, EngineProps
from modelgarden.engine.records import RecordStream, Tools
from modelgarden.engine.request import completion_body, decode_images
from modelgarden.errors import BadRequest, UnsupportedCapability
from modelgarden.model_options import validate_options
from modelgarden.templates.prompt import PromptBuilder, go_template
from modelgarden.templates.thinking import ThinkingParser, think_value
from modelgarden.templates.tools import TOOL_CALL_OPEN, forced_call_schema

#: Bytes of prompt text below which it surely fits a slot without asking the tokenizer
#: (a token always covers at least one byte; a few are added: BOS, a leading space).
_TOKEN_SLACK = 8
#: Inputs embedded per engine call: a request of thousands of inputs is many short calls,
#: so a client that leaves stops the work within one of them.
EMBED_BATCH = 32


@dataclass(frozen=True)
class ModelTraits:
    """What the gateway knows of a model before it runs: templates, tags, FIM tokens."""

    jinja_template: str | None
    add_bos: bool
    thinking_tags: tuple[str, str] | None
    #: Fill-in-the-middle token ids (prefix, suffix, middle), when the vocabulary has them.
    fim: tuple[int, int, int] | None = None


@dataclass
class Prompt:
    """A rendered prompt, as text or (once cut to fit) tokens, with what goes with it."""

    text: str
    tokens: list[int] | None = None
    images: list[str] | None = None
    #: Token ids before the text (``/api/generate``'s ``context``).
    prefix: list[int] | None = None

    def engine_prompt(self) -> str | list[int | str]:
        """The ``prompt`` field of ``/completion``."""
        if self.tokens is not None:
            return list(self.tokens)
        if self.prefix:
            return [*self.prefix, self.text]
        return self.text


def too_long(n: int, limit: int) -> BadRequest:
    """Ollama's refusal of an input that does not fit the context."""
    return BadRequest(f"the input length ({n} tokens) exceeds the context length ({limit} tokens)")


def keep_to_fit(tokens: list[int], num_ctx: int, num_keep: int) -> list[int]:
    """Cut tokens after the first ``num_keep`` so that half the free context is left, as
    Ollama's first context shift does."""
    keep = max(0, min(num_keep, num_ctx - 1))
    limit = num_ctx - max((num_ctx - keep) // 2, 1)
    if len(tokens) <= limit:
        return tokens
    discard = len(tokens) - limit
    return tokens[:keep] + tokens[keep + discard :]


class ModelEngine:
    """Answers Ollama's inference endpoints for one loaded model through its engine."""

    def __init__(self, client: EngineClient, traits: ModelTraits, props: EngineProps) -> None:
        self.client = client
        self.traits = traits
        self.props = props
        self.prompts = PromptBuilder(traits.jinja_template, props.bos_token, props.eos_token)

    # -- prompts ---------------------------------------------------------------------------

    def _strip_bos(self, text: str) -> str:
        """A rendered BOS is dropped when the tokenizer adds one itself."""
        bos = self.props.bos_token
        if self.traits.add_bos and bos and text.startswith(bos):
            return text[len(bos) :]
        return text

    async def _count(self, prompt: Prompt) -> int:
        """The prompt's length in tokens (without asking the engine when it surely fits)."""
        prefix = len(prompt.prefix or [])
        if len(prompt.text.encode()) + prefix + _TOKEN_SLACK < self.props.slot_ctx:
            return 0
        prompt.tokens = await self._tokens(prompt)
        return len(prompt.tokens)

    async def _tokens(self, prompt: Prompt) -> list[int]:
        """The prompt's tokens as the engine reads it (a BOS only before leading text)."""
        if prompt.tokens is not None:
            return list(prompt.tokens)
        prefix = prompt.prefix or []
        return [*prefix, *await self.client.tokenize(prompt.text, add_special=not prefix)]

    async def _fit(self, prompt: Prompt, options: dict[str, Any], body: dict[str, Any]) -> None:
        """Cut a prompt to fit one slot, or refuse it (``truncate: false``, no context shift)."""
        ctx = self.props.slot_ctx
        n = 0 if prompt.images else await self._count(prompt)
        if n < ctx:
            prompt.tokens = None
            return
        if body.get("truncate") is False or body.get("shift") is False:
            raise too_long(n, ctx)
        assert prompt.tokens is not None
        keep = int(options.get("num_keep", 4)) + (1 if self.traits.add_bos else 0)
        prompt.tokens = keep_to_fit(prompt.tokens, ctx, keep)

    def _think(self, body: dict[str, Any]) -> bool | str | None:
        think = think_value(body.get("think"))
        if self.traits.thinking_tags is None:
            return None if think is None or think is False else think
        return True if think is None else think  # a thinking model thinks unless told not

    def _thinking_parser(self, think: bool | str | None, text: str) -> ThinkingParser | None:
        tags = self.traits.thinking_tags
        if tags is None or not think:
            return None
        return ThinkingParser(*tags, opened=text.rstrip().endswith(tags[0]))

    def _images(self, images: list[Any]) -> tuple[str, list[str]]:
        """The markers that place images in a message, and their data."""
        data = decode_images(images)
        return "".join(f"{self.props.media_marker}\n" for _ in data), data

    # -- generate --------------------------------------------------------------------------

    async def _generate_prompt(self, body: dict[str, Any], think: bool | str | None) -> Prompt:
        text = str(body.get("prompt") or "")
        context = [int(t) for t in body.get("context") or []]
        marker, images = self._images(list(body.get("images") or []))
        suffix = body.get("suffix") or None
        template = body.get("template") or None
        if suffix and not (template and go_template(template).references("Suffix")):
            if self.traits.fim is None:
                raise UnsupportedCapability(f'"{body.get("model")}" does not support insert')
            pre, suf, mid = self.traits.fim
            tokens = [pre, *await self.client.tokenize(text, add_special=False), suf]
            tokens += [*await self.client.tokenize(suffix, add_special=False), mid]
            return Prompt("", tokens=[*context, *tokens])
        if not body.get("raw"):
            system = body.get("system")
            text = self.prompts.generate(marker + text, system, template, suffix, think)
            text = self._strip_bos(text)
        else:
            text = marker + text
        return Prompt(text, images=images or None, prefix=context or None)

    async def generate(self, body: dict[str, Any], load_ns: int) -> AsyncIterator[dict[str, Any]]:
        """``/api/generate`` records: ``response`` chunks, then the final one."""
        options = validate_options(body.get("options"))
        think = self._think(body) if not body.get("raw") else None
        prompt = await self._generate_prompt(body, think)
        await self._fit(prompt, options, body)
        context = None
        if not body.get("raw"):  # Ollama returns no context in raw mode
            context = asyncio.ensure_future(self._tokens(prompt))
        stream = RecordStream(
            model=str(body.get("model", "")),
            chat=False,
            start_ns=body["_start_ns"],
            load_ns=load_ns,
            thinking=self._thinking_parser(think, prompt.text),
            logprobs=bool(body.get("logprobs")),
            top_logprobs=int(body.get("top_logprobs") or 0),
        )
        events = await self._complete(prompt, options, body.get("format"), body)
        return self._records(events, stream, context)

    # -- chat ------------------------------------------------------------------------------

    def _tools(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """Tools to offer, and the schema of a forced call (``tool_choice``)."""
        tools = list(body.get("tools") or [])
        choice = body.get("tool_choice", "auto")
        if not tools or choice == "none":
            return [], None
        if choice == "required" or isinstance(choice, dict):
            name = choice.get("name") if isinstance(choice, dict) else None
            try:
                return tools, forced_call_schema(tools, name)
            except ValueError as exc:
                raise BadRequest(str(exc), param="tool_choice") from None
        return tools, None

    def _chat_messages(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """Messages with image markers in their content, and the images in order."""
        messages: list[dict[str, Any]] = []
        images: list[str] = []
        for message in body.get("messages") or []:
            if message.get("images"):
                marker, data = self._images(list(message["images"]))
                message = {**message, "content": marker + str(message.get("content") or "")}
                images.extend(data)
            messages.append(message)
        return messages, images

    async def _chat_prompt(
        self, body: dict[str, Any], tools: list[dict[str, Any]], think: bool | str | None
    ) -> Prompt:
        """Render the chat; drop the oldest turns while the prompt does not fit."""
        messages, images = self._chat_messages(body)
        template = body.get("template") or None
        while True:
            prompt = Prompt(self._strip_bos(self.prompts.chat(messages, tools, template, think)))
            prompt.images = images or None
            if images or body.get("truncate") is False:
                return prompt
            droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
            if not droppable or await self._count(prompt) < self.props.slot_ctx:
                return prompt
            del messages[droppable[0]]

    async def chat(self, body: dict[str, Any], load_ns: int) -> AsyncIterator[dict[str, Any]]:
        """``/api/chat`` records: ``message`` chunks, then the final one."""
        options = validate_options(body.get("options"))
        think = self._think(body)
        tools, forced = self._tools(body)
        prompt = await self._chat_prompt(body, tools, think)
        await self._fit(prompt, options, body)
        opened = ""
        if tools and prompt.text.rstrip().endswith(TOOL_CALL_OPEN):
            opened = TOOL_CALL_OPEN  # the template opened a call: the answer must be one
            forced = forced or forced_call_schema(tools, None)
        fmt = forced or body.get("format")
        calls = None
        if tools:
            buffering = bool(forced) or not body.get("format")
            calls = Tools(tools, forced=bool(forced), opened=opened, buffering=buffering)
        stream = RecordStream(
            model=str(body.get("model", "")),
            chat=True,
            start_ns=body["_start_ns"],
            load_ns=load_ns,
            thinking=self._thinking_parser(think, prompt.text),
            tools=calls,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=int(body.get("top_logprobs") or 0),
        )
        events = await self._complete(prompt, options, fmt, body)
        return self._records(events, stream, None)

    # -- the engine call -------------------------------------------------------------------

    async def _complete(
        self, prompt: Prompt, options: dict[str, Any], fmt: Any, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        request = completion_body(
            prompt.engine_prompt(),
            options,
            num_ctx=self.props.slot_ctx,
            fmt=fmt,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=int(body.get("top_logprobs") or 0),
            images=prompt.images,
        )
        return await self.client.completion(request)

    @staticmethod
    async def _records(
        events: AsyncIterator[dict[str, Any]],
        stream: RecordStream,
        context: asyncio.Future[list[int]] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in events:
                if event.get("stop") and context is not None:
                    stream.context = await context
                stuck = not event.get("stop") and stream.stuck(event)
                for record in stream.feed(event):
                    yield record
                if stuck:  # closing the engine's stream below stops the slot
                    for record in stream.cut():
                        yield record
                    return
        finally:
            if context is not None and not context.done():
                context.cancel()
            await events.aclose()  # type: ignore[attr-defined]

    # -- embed -----------------------------------------------------------------------------

    async def embed(
        self, body: dict[str, Any], start_ns: int, load_ns: int, batch: int
    ) -> dict[str, Any]:
        """``/api/embed``: one pooled, normalised vector per input."""
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else list(raw or [])
        if not all(isinstance(x, str) for x in inputs):
            raise BadRequest("input must be a string or a list of strings", param="input")
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or dims <= 0):
            raise BadRequest("dimensions must be a positive integer", param="dimensions")
        limit = min(self.props.slot_ctx, batch)
        prepared: list[str | list[int]] = []
        for text in inputs:
            if len(text.encode()) + _TOKEN_SLACK < limit:
                prepared.append(text)
                continue
            tokens = await self.client.tokenize(text)
            if len(tokens) > limit:
                if body.get("truncate") is False:
                    raise too_long(len(tokens), limit)
                tokens = tokens[:limit]
            prepared.append(tokens)
        vectors: list[list[float]] = []
        count = 0
        for at in range(0, len(prepared), EMBED_BATCH):  # a client that leaves stops it here
            part, read = await self.client.embeddings(prepared[at : at + EMBED_BATCH])
            vectors.extend(part)
            count += read
        if dims:
            vectors = [_normalised(v[:dims]) for v in vectors]
        return {
            "model": body.get("model", ""),
            "embeddings": vectors,
            "total_duration": max(time.time_ns() - start_ns, 0),
            "load_duration": load_ns,
            "prompt_eval_count": count,
        }


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
