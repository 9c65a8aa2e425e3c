"""Build tiny GGUF models from code for engine tests (no downloads, no side effects at import).

``write_successor_model`` writes a one-block llama model whose greedy next token is a designed
function of the last input token only: every attention and FFN weight is zero, so the residual
stream carries the token embedding unchanged; embeddings are one-hot, and ``output.weight`` maps
each one-hot "state" to the logit of its successor. Outputs are deterministic (the designed
successor leads the next logit by ``_LOGIT_GAP``, so even sampling at temperature 1 follows it).

Token texts are written as they render: ``" answer"`` is the SentencePiece piece ``"▁answer"``,
a one-byte text such as ``"\\n"`` or ``"I"`` is the byte token ``<0x0A>`` / ``<0x49>``, and
``<...>`` texts are special tokens: ``<s>``, ``</s>``, ``<unk>``, ``<|im_start|>`` and
``<|im_end|>`` are CONTROL (parsed from prompt text, never rendered in output); any other
``<...>`` text (``<think>``, ``</think>``) is USER_DEFINED, which llama.cpp both parses from prompt
text as one token and renders as text in generated content.

``write_projector`` writes a LLaVA-style (``clip.projector_type = "mlp"``) vision projector with
seeded random weights; image embeddings sit before the prompt's last token, so a successor model
answers the same with or without an image.

The ``gguf`` and ``numpy`` packages are imported lazily, by the build functions only.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gguf
    import numpy as np
    from numpy.typing import NDArray

BOS = "<s>"
EOS = "</s>"
UNK = "<unk>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
#: The last token of a ChatML generation prompt (``...<|im_start|>assistant\n``): byte ``<0x0A>``.
PROMPT_END = "\n"
#: ChatML prompt for /completion whose greedy answer is ``THINK_ANSWER_TEXT``.
CHATML_PROMPT = f"{IM_START}user\nhi{IM_END}\n{IM_START}assistant\n"
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_CONTROL = (BOS, EOS, UNK, IM_START, IM_END)
_SPECIAL = re.compile(r"^<[^<>\s]+>$")
_LOGIT_GAP = 30.0
_SPACE = "\u2581"  # SentencePiece's word-boundary mark


def chain(*tokens: str) -> dict[str, str]:
    """Transitions making ``tokens[0]`` be followed by ``tokens[1]``, then ``tokens[2]``...

    ``chain(PROMPT_END, "Hi", EOS)`` answers ``"Hi"`` to any prompt ending in a newline.
    """
    if len(set(tokens[:-1])) != len(tokens) - 1:
        raise ValueError("a token may appear only once before the end of a chain")
    return dict(pairwise(tokens))


#: Greedy output for prompts ending in ``PROMPT_END`` (e.g. ``CHATML_PROMPT``).
THINK_ANSWER = chain(PROMPT_END, THINK_OPEN, "I", " think", THINK_CLOSE, "The", " answer", EOS)
THINK_ANSWER_TEXT = "<think>I think</think>The answer"


def _piece(text: str) -> str:
    """The vocabulary piece for a token text as it renders."""
    if _SPECIAL.match(text):
        return text
    if text == " ":
        return _SPACE
    raw = text.encode()
    if len(raw) == 1:
        return f"<0x{raw[0]:02X}>"
    if not text:
        raise ValueError("empty token text")
    return text.replace(" ", _SPACE)


def _vocab(texts: Iterable[str], words: Iterable[str]) -> tuple[list[str], list[int]]:
    """Pieces and token types: control tokens, 256 bytes, user-defined specials, words."""
    pieces = [*_CONTROL[:3], *(f"<0x{b:02X}>" for b in range(256)), *_CONTROL[3:], _SPACE]
    types = [3, 3, 2] + [6] * 256 + [3] * (len(_CONTROL) - 3) + [1]
    seen = set(pieces)
    for piece in map(_piece, [THINK_OPEN, THINK_CLOSE, *texts, *words]):
        if piece in seen:
            continue
        if _SPECIAL.match(piece):
            seen.add(piece)
            pieces.append(piece)
            types.append(4)
            continue
        # a word, and every prefix, so SentencePiece merges prompt text into whole words
        for end in range(2, len(piece) + 1):
            if piece[:end] not in seen:
                seen.add(piece[:end])
                pieces.append(piece[:end])
                types.append(1)
    return pieces, types


def write_successor_model(
    path: Path,
    transitions: Mapping[str, str],
    *,
    chat_template: str | None = None,
    extra_words: Iterable[str] = (),
    default_next: str = EOS,
    context_length: int = 2048,
) -> Path:
    """Write a llama GGUF whose greedy next token is ``transitions[last token]``.

    Keys and values are token texts as they render (see the module docstring); a last token
    with no transition is followed by ``default_next``. ``extra_words`` only adds vocabulary.
    """
    import gguf
    import numpy as np

    words = list(extra_words)
    pieces, types = _vocab([*transitions, *transitions.values(), default_next], words)
    index = {piece: i for i, piece in enumerate(pieces)}
    states = {_piece(text): dim for dim, text in enumerate(transitions, start=1)}
    n_vocab, n_embd = len(pieces), successor_embd(transitions)
    n_head, n_ff = 2, 32

    embd = np.zeros((n_vocab, n_embd), dtype=np.float32)
    for token, piece in enumerate(pieces):
        embd[token, states.get(piece, 0)] = 1.0
    # after RMS norm a one-hot row is sqrt(n_embd) at its state: logit = gap for the successor
    out = np.zeros((n_vocab, n_embd), dtype=np.float32)
    gain = _LOGIT_GAP / float(np.sqrt(n_embd))
    out[index[_piece(default_next)], 0] = gain
    for text, successor in transitions.items():
        out[index[_piece(successor)], states[_piece(text)]] = gain

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-successor")
    writer.add_context_length(context_length)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(1)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_bos_token_id(index[BOS])
    writer.add_eos_token_id(index[EOS])
    writer.add_unk_token_id(index[UNK])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def zeros(*shape: int) -> NDArray[np.float32]:
        return np.zeros(shape, dtype=np.float32)

    ones = np.ones(n_embd, dtype=np.float32)
    writer.add_tensor("token_embd.weight", embd)
    writer.add_tensor("output_norm.weight", ones)
    writer.add_tensor("output.weight", out)
    writer.add_tensor("blk.0.attn_norm.weight", ones)
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        writer.add_tensor(f"blk.0.{name}.weight", zeros(n_embd, n_embd))
    writer.add_tensor("blk.0.ffn_norm.weight", ones)
    writer.add_tensor("blk.0.ffn_gate.weight", zeros(n_ff, n_embd))
    writer.add_tensor("blk.0.ffn_up.weight", zeros(n_ff, n_embd))
    writer.add_tensor("blk.0.ffn_down.weight", zeros(n_embd, n_ff))
    _finish(writer)
    return path


def write_projector(
    path: Path,
    model_embd: int,
    *,
    image_size: int = 28,
    patch_size: int = 14,
    vision_embd: int = 32,
    seed: int = 0,
) -> Path:
    """Write a LLaVA ``mlp`` mmproj GGUF projecting images into ``model_embd``-wide embeddings.

    One vision block (which the LLaVA graph skips: it reads the second-to-last layer), a
    two-layer GELU MLP, and seeded random weights; an image becomes
    ``(image_size // patch_size) ** 2`` embeddings (4 by default), quick to encode on a CPU.
    """
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    n_ff, n_pos = 2 * vision_embd, (image_size // patch_size) ** 2

    def rand(*shape: int) -> NDArray[np.float32]:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), "clip")
    writer.add_name("tiny-projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_uint32("clip.vision.image_size", image_size)
    writer.add_uint32("clip.vision.patch_size", patch_size)
    writer.add_uint32("clip.vision.embedding_length", vision_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.projection_dim", model_embd)
    writer.add_uint32("clip.vision.block_count", 1)
    writer.add_uint32("clip.vision.attention.head_count", 2)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    writer.add_bool("clip.use_gelu", True)

    writer.add_tensor("v.patch_embd.weight", rand(vision_embd, 3, patch_size, patch_size))
    writer.add_tensor("v.position_embd.weight", rand(n_pos, vision_embd))
    for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
        writer.add_tensor(f"v.blk.0.{name}.weight", rand(vision_embd, vision_embd))
        writer.add_tensor(f"v.blk.0.{name}.bias", rand(vision_embd))
    for name in ("ln1", "ln2"):
        writer.add_tensor(f"v.blk.0.{name}.weight", np.ones(vision_embd, dtype=np.float32))
        writer.add_tensor(f"v.blk.0.{name}.bias", rand(vision_embd))
    writer.add_tensor("v.blk.0.ffn_up.weight", rand(n_ff, vision_embd))
    writer.add_tensor("v.blk.0.ffn_up.bias", rand(n_ff))
    writer.add_tensor("v.blk.0.ffn_down.weight", rand(vision_embd, n_ff))
    writer.add_tensor("v.blk.0.ffn_down.bias", rand(vision_embd))
    writer.add_tensor("mm.0.weight", rand(model_embd, vision_embd))
    writer.add_tensor("mm.0.bias", rand(model_embd))
    writer.add_tensor("mm.2.weight", rand(model_embd, model_embd))
    writer.add_tensor("mm.2.bias", rand(model_embd))
    _finish(writer)
    return path


def _finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def successor_embd(transitions: Mapping[str, str]) -> int:
    """The embedding length ``write_successor_model`` picks (pass it to ``write_projector``)."""
    return max(64, -(-(len(transitions) + 1) // 32) * 32)


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A solid-colour 8-bit RGB PNG, written with zlib only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
