"""Thinking models: which templates support it, and the reasoning split from the answer.

A model thinks when its template says so: a Go template that writes ``.Thinking`` between
two tags (the tags are taken from the text around it, as Ollama's ``thinking.InferTags``
does), or a Jinja chat template with ``<think>`` and ``</think>``. Its answer then starts
with the opening tag (or the prompt ends with it: templates that open the block
themselves); :class:`ThinkingParser` splits the streamed text into reasoning and content
at the tags, holding back only what could still be the start of a tag, so the answer is
the same however the text is cut into pieces.
"""

from __future__ import annotations

import enum
import re

from modelgarden.errors import BadRequest
from modelgarden.templates.prompt import go_template

DEFAULT_TAGS = ("<think>", "</think>")
#: ``<tag>{{ .Thinking }}</tag>`` with anything but another tag around the action.
_GO_TAGS = re.compile(
    r"(<[^<>{}\s/][^<>{}\s]*>)[^<]*?\{\{[^{}]*\.Thinking\b[^{}]*\}\}[^<]*?(</[^<>{}\s]+>)"
)
THINK_LEVELS = ("low", "medium", "high")


def thinking_tags(go_source: str | None, jinja_source: str | None) -> tuple[str, str] | None:
    """The tags around a model's reasoning, or ``None`` when its template cannot think."""
    if go_source:
        if not go_template(go_source).references("Thinking"):
            return None
        found = _GO_TAGS.search(go_source)
        return (found[1], found[2]) if found else DEFAULT_TAGS
    if jinja_source and "<think>" in jinja_source and "</think>" in jinja_source:
        return DEFAULT_TAGS
    return None


def think_value(value: object) -> bool | str | None:
    """A request's ``think``: a bool, ``"low"``/``"medium"``/``"high"`` or ``None``."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value in THINK_LEVELS:
        return value
    if value == "max":  # Ollama reads it as the highest level
        return "high"
    raise BadRequest(f'invalid think value {value!r}: use true, false, "low", "medium" or "high"')


class _State(enum.Enum):
    LOOKING = 1  # nothing but whitespace so far: the opening tag may still come
    EATING_AFTER_OPEN = 2  # the tag was seen; whitespace after it is dropped
    THINKING = 3
    EATING_AFTER_CLOSE = 4  # reasoning ended; whitespace before the answer is dropped
    DONE = 5


def _partial_tail(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag`` (what to hold back)."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ThinkingParser:
    """Splits a streamed answer into reasoning and content at the thinking tags."""

    def __init__(self, opening: str, closing: str, *, opened: bool = False) -> None:
        self.opening = opening
        self.closing = closing
        self._state = _State.EATING_AFTER_OPEN if opened else _State.LOOKING
        self._held = ""

    def add(self, text: str) -> tuple[str, str]:
        """Feed text; returns the (reasoning, content) that can be passed on now."""
        self._held += text
        thinking: list[str] = []
        content: list[str] = []
        while self._step(thinking, content):
            pass
        return "".join(thinking), "".join(content)

    def _step(self, thinking: list[str], content: list[str]) -> bool:
        """Advance one state with what is held; whether another step may make progress."""
        held = self._held
        if self._state is _State.LOOKING:
            head = held.lstrip()
            if head.startswith(self.opening):
                self._held = head[len(self.opening) :]
                self._state = _State.EATING_AFTER_OPEN
                return True
            if head and not self.opening.startswith(head):
                self._state = _State.DONE  # the answer does not think
                return True
            return False
        if self._state in (_State.EATING_AFTER_OPEN, _State.EATING_AFTER_CLOSE):
            self._held = held.lstrip()
            if not self._held:
                return False
            after_open = self._state is _State.EATING_AFTER_OPEN
            self._state = _State.THINKING if after_open else _State.DONE
            return True
        if self._state is _State.THINKING:
            end = held.find(self.closing)
            if end >= 0:
                thinking.append(held[:end])
                self._held = held[end + len(self.closing) :]
                self._state = _State.EATING_AFTER_CLOSE
                return True
            keep = _partial_tail(held, self.closing)
            thinking.append(held[: len(held) - keep])
            self._held = held[len(held) - keep :]
            return False
        content.append(held)
        self._held = ""
        return False

    def flush(self) -> tuple[str, str]:
        """What is still held when the answer ends."""
        held, self._held = self._held, ""
        if self._state is _State.THINKING:
            return held, ""
        if self._state is _State.LOOKING:
            return "", held
        return "", held if self._state is _State.DONE else held.lstrip()
