"""The inference engine of a runner process: llama.cpp through ``llama-cpp-python``.

:class:`Engine` owns one loaded model and runs one generation at a time, on the thread
that calls :meth:`Engine.generate` (never the event loop). The token loop is ours rather
than ``create_completion``'s, so that it can count tokens exactly, time prompt and
generation separately, stop within one token of a cancel, hold back text that may be the
start of a stop sequence, and report log-probabilities without keeping every logit.
"""

from __future__ import annotations

import codecs
import json
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from modelgarden.errors import BadRequest


@dataclass
class SamplingParams:
    """Per-request sampling options, with Ollama's defaults."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1
    num_predict: int = -1
    num_keep: int = 4
    stop: list[str] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> SamplingParams:
        """Build from an (already validated) Ollama ``options`` object."""
        known = {k: v for k, v in options.items() if k in cls.__dataclass_fields__}
        params = cls(**known)
        params.stop = [s for s in params.stop if s]
        return params


@dataclass
class Generation:
    """What to generate: prompt tokens, sampling, an optional grammar, logprob wishes."""

    tokens: list[int]
    params: SamplingParams
    grammar: LlamaGrammar | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class Piece:
    """A span of generated text, with the log-probabilities of its tokens when asked."""

    text: str
    logprobs: list[dict[str, Any]] | None = None


@dataclass
class Outcome:
    """How a generation ended, with Ollama's counters."""

    done_reason: str
    prompt_eval_count: int
    prompt_eval_duration: int
    eval_count: int
    eval_duration: int
    tokens: list[int]


@lru_cache(maxsize=64)
def grammar_for(format_json: str) -> LlamaGrammar:
    """A grammar for ``format``: the string ``"json"`` or a JSON schema (as JSON text)."""
    if format_json == '"json"':
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    try:
        return LlamaGrammar.from_json_schema(format_json, verbose=False)
    except Exception as exc:  # the converter raises bare Exceptions for unsupported schemas
        raise BadRequest(f"invalid format schema: {exc}") from None


class StopMatcher:
    """Holds back text that may be the start of a stop sequence; finds complete ones.

    The answer does not depend on how the text is split into pieces: a complete stop is
    only acted on once no other stop could still complete at an earlier position.
    """

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.pending = ""

    def _first_hit(self) -> int:
        return min((i for s in self.stops if (i := self.pending.find(s)) >= 0), default=-1)

    def _first_partial(self) -> int:
        """Earliest position where a stop begins but runs past the end of the text."""
        n = len(self.pending)
        longest = max(len(s) for s in self.stops)
        for j in range(max(0, n - longest + 1), n):
            tail = self.pending[j:]
            if any(len(s) > len(tail) and s.startswith(tail) for s in self.stops):
                return j
        return n

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return what is safe to emit and whether a stop sequence was hit."""
        if not self.stops:
            return text, False
        self.pending += text
        hit, partial = self._first_hit(), self._first_partial()
        if hit >= 0 and hit <= partial:
            out, self.pending = self.pending[:hit], ""
            return out, True
        cut = min(partial, hit) if hit >= 0 else partial
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        """Text still held back when generation ends (cut at a stop it holds)."""
        hit = self._first_hit() if self.stops else -1
        out = self.pending[:hit] if hit >= 0 else self.pending
        self.pending = ""
        return out


class Engine:
    """One model loaded with llama.cpp; generates on the calling thread, one at a time."""

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int,
        n_batch: int = 512,
        n_threads: int = 2,
        use_mmap: bool = True,
    ) -> None:
        self.model_path = model_path
        self.n_threads = n_threads
        self.llm = llama_cpp.Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_batch=min(n_batch, n_ctx),
            n_threads=n_threads,
            n_threads_batch=n_threads,
            use_mmap=use_mmap,
            verbose=False,
        )
        self.n_ctx = self.llm.n_ctx()
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.lock = threading.Lock()
        self._embedder: llama_cpp.Llama | None = None
        self._embed_lock = threading.Lock()

    # -- text <-> tokens -----------------------------------------------------------------

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        """Tokens for text; special tokens in the text (``<|im_start|>``) are parsed."""
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def token_text(self, token: int, special: bool = False) -> str:
        """The text of a token (``special=True`` renders control tokens too)."""
        return (
            self.llm._model.token_to_piece(token, special)
            .rstrip(b"\0")
            .decode("utf-8", errors="replace")
        )

    def special_token(self, token_id: int) -> str:
        """Text of a special token by id, or ``""``."""
        return self.token_text(token_id, special=True) if token_id >= 0 else ""

    @property
    def metadata(self) -> dict[str, str]:
        """GGUF metadata as llama.cpp reports it (strings)."""
        return dict(self.llm.metadata)

    def fits(self, n_prompt: int) -> bool:
        """Whether a prompt of this many tokens leaves room to generate."""
        return n_prompt < self.n_ctx - 1

    def supports_insert(self) -> bool:
        """Whether the vocabulary has fill-in-the-middle tokens."""
        fim = (llama_cpp.llama_vocab_fim_pre, llama_cpp.llama_vocab_fim_suf)
        return (
            all(f(self.vocab) >= 0 for f in fim) and llama_cpp.llama_vocab_fim_mid(self.vocab) >= 0
        )

    def fim_tokens(self, prefix: str, suffix: str) -> list[int]:
        """Prompt tokens for fill-in-the-middle: ``<pre>prefix<suf>suffix<mid>``."""
        v = self.vocab
        return [
            llama_cpp.llama_vocab_fim_pre(v),
            *self.tokenize(prefix, add_bos=False),
            llama_cpp.llama_vocab_fim_suf(v),
            *self.tokenize(suffix, add_bos=False),
            llama_cpp.llama_vocab_fim_mid(v),
        ]

    # -- generation ----------------------------------------------------------------------

    def _truncate(self, tokens: list[int], keep: int) -> list[int]:
        """Keep the first ``keep`` tokens and the newest ones, leaving half the context free."""
        budget = self.n_ctx // 2
        if len(tokens) <= self.n_ctx - 1:
            return tokens
        keep = max(0, min(keep, budget // 2))
        return tokens[:keep] + tokens[-(budget - keep) :]

    def _logprobs(self, token: int, top: int) -> dict[str, Any]:
        ptr = llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = float(logits.max())
        logsum = peak + float(np.log(np.exp(logits - peak).sum()))
        entry: dict[str, Any] = {
            "token": self.token_text(token),
            "logprob": float(logits[token]) - logsum,
        }
        if top > 0:
            best = np.argpartition(-logits, min(top, self.n_vocab - 1))[:top]
            best = best[np.argsort(-logits[best])]
            entry["top_logprobs"] = [
                {"token": self.token_text(int(t)), "logprob": float(logits[t]) - logsum}
                for t in best
            ]
        return entry

    def _tokens(self, gen: Generation) -> Generator[int, None, None]:
        p = gen.params
        self.llm.last_n_tokens_size = p.repeat_last_n if p.repeat_last_n >= 0 else self.n_ctx
        seed = p.seed if p.seed >= 0 else int.from_bytes(np.random.bytes(4), "little")
        self.llm.set_seed(seed)
        return self.llm.generate(
            gen.tokens,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            typical_p=p.typical_p,
            temp=p.temperature,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            mirostat_mode=p.mirostat,
            mirostat_tau=p.mirostat_tau,
            mirostat_eta=p.mirostat_eta,
            grammar=gen.grammar,
        )

    def generate(
        self, gen: Generation, emit: Callable[[Piece], None], cancel: threading.Event
    ) -> Outcome:
        """Generate, calling ``emit`` for each piece of text; returns how it ended."""
        with self.lock:
            return self._generate(gen, emit, cancel)

    def _generate(
        self, gen: Generation, emit: Callable[[Piece], None], cancel: threading.Event
    ) -> Outcome:
        gen.tokens = self._truncate(gen.tokens, gen.params.num_keep)
        limit = gen.params.num_predict if gen.params.num_predict >= 0 else None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(gen.params.stop)
        produced: list[int] = []
        reason = "stop"
        start = time.perf_counter_ns()
        first = 0
        tokens = self._tokens(gen)
        try:
            if limit == 0:
                reason = "length"
                return self._outcome(gen, produced, reason, start, start)
            for token in tokens:
                if not first:
                    first = time.perf_counter_ns()
                if cancel.is_set():
                    reason = "cancel"
                    break
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    break
                produced.append(token)
                raw = self.llm._model.token_to_piece(token, False).rstrip(b"\0")
                text, hit = stops.feed(decoder.decode(raw))
                lp = [self._logprobs(token, gen.top_logprobs)] if gen.logprobs else None
                if text or lp:
                    emit(Piece(text, lp))
                if hit:
                    break
                if (limit is not None and len(produced) >= limit) or (
                    len(gen.tokens) + len(produced) >= self.n_ctx - 1
                ):
                    reason = "length"
                    break
        finally:
            tokens.close()
        if reason != "cancel" and (tail := stops.flush() + decoder.decode(b"", final=True)):
            emit(Piece(tail))
        return self._outcome(gen, produced, reason, start, first or start)

    def _outcome(
        self, gen: Generation, produced: list[int], reason: str, start: int, first: int
    ) -> Outcome:
        end = time.perf_counter_ns()
        return Outcome(
            done_reason=reason,
            prompt_eval_count=len(gen.tokens),
            prompt_eval_duration=max(first - start, 0),
            eval_count=len(produced),
            eval_duration=max(end - first, 0),
            tokens=gen.tokens + produced,
        )

    # -- embeddings ----------------------------------------------------------------------

    def _embedding_model(self) -> llama_cpp.Llama:
        if self._embedder is None:
            self._embedder = llama_cpp.Llama(
                model_path=self.model_path,
                n_ctx=self.n_ctx,
                n_batch=self.n_ctx,
                n_ubatch=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
        return self._embedder

    def embed(
        self, inputs: list[str], truncate: bool, dimensions: int | None
    ) -> tuple[list[list[float]], int]:
        """One L2-normalised, mean-pooled vector per input, and the tokens read."""
        with self._embed_lock:
            model = self._embedding_model()
            limit = model.n_ctx()
            for text in inputs:
                n = len(model.tokenize(text.encode("utf-8"), add_bos=True, special=True))
                if n > limit and not truncate:
                    raise BadRequest(f"input length {n} exceeds maximum context length {limit}")
            vectors, count = model.embed(inputs, normalize=True, truncate=True, return_count=True)
        out: list[list[float]] = []
        for vector in vectors:
            arr = np.asarray(vector, dtype=np.float64)
            if dimensions:
                arr = arr[:dimensions]
                norm = float(np.linalg.norm(arr))
                arr = arr / norm if norm > 0 else arr
            out.append(arr.astype(np.float32).tolist())
        return out, int(count)

    def close(self) -> None:
        """Free the model's memory."""
        self.llm.close()
        if self._embedder is not None:
            self._embedder.close()


def format_to_json(fmt: Any) -> str | None:
    """Normalise a request's ``format`` to the key of :func:`grammar_for`, or ``None``."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return '"json"'
    if isinstance(fmt, dict):
        return json.dumps(fmt, sort_keys=True)
    raise BadRequest('format must be "json" or a JSON schema object')
