"""How much memory a model needs, and whether this machine has it.

A runner's resident memory is its weights (memory-mapped, shared by every runner of the
same file), its KV cache (f16, sized for the context it was started with, written at load
so always resident), the compute buffers llama.cpp sizes for a full batch against the whole
context (resident as long prompts touch them), and the runner process itself (Python,
llama.cpp, the HTTP server). Measured for SmolLM2-135M-Instruct (Q4_1, 94 MiB) on CPU:

====== =============== ======================= =========
 ctx    after loading   after a 2,400-token run  estimate
====== =============== ======================= =========
 512    175 MiB         185 MiB (short prompt)   173 MiB
 4096   255 MiB         326 MiB                  314 MiB
 8192   346 MiB         354 MiB (short prompt)   476 MiB
====== =============== ======================= =========

Short prompts leave most of the compute buffers untouched; the estimate is what a runner
can grow to with a prompt that fills its context, so that admission refuses a model before the
kernel's OOM killer would, not after.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from modelgarden.store.gguf import GGUFInfo

MiB = 1 << 20
#: A runner process before any model: interpreter, llama.cpp, uvloop, the HTTP server.
RUNNER_PROCESS = 50 * MiB
#: Bytes per element of the KV cache (f16) and of the compute buffers (f32).
KV_BYTES = 2
COMPUTE_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's memory need at one context size, split the way runners share it."""

    weights: int
    kv_cache: int
    compute: int
    process: int = RUNNER_PROCESS

    @property
    def per_runner(self) -> int:
        """What each further runner of the same model adds (weights are shared)."""
        return self.kv_cache + self.compute + self.process

    def total(self, runners: int = 1) -> int:
        """The need with ``runners`` runner processes."""
        return self.weights + max(runners, 1) * self.per_runner


def estimate(info: GGUFInfo, weights: int, num_ctx: int, num_batch: int = 512) -> MemoryEstimate:
    """The memory a model needs from its GGUF metadata, for a context and batch size."""
    layers = int(info.arch_value("block_count", 0) or 0)
    heads = int(info.arch_value("attention.head_count", 1) or 1)
    kv_heads = int(info.arch_value("attention.head_count_kv", heads) or heads)
    embd = int(info.arch_value("embedding_length", 0) or 0)
    head_dim = int(info.arch_value("attention.key_length", 0) or 0) or (embd // max(heads, 1))
    value_dim = int(info.arch_value("attention.value_length", 0) or 0) or head_dim
    kv = layers * num_ctx * kv_heads * (head_dim + value_dim) * KV_BYTES
    # Attention scores for a full batch against the whole context, plus activations.
    compute = COMPUTE_BYTES * num_batch * (heads * num_ctx + 8 * embd)
    return MemoryEstimate(weights=weights, kv_cache=kv, compute=compute)


def default_need(
    info: GGUFInfo, weights: int, context_length: int, runners: int
) -> tuple[int, int]:
    """The context a model starts with by default (``context_length``, capped at what it was
    trained for) and its memory need then with ``runners`` runner processes."""
    ctx = min(context_length, info.context_length or context_length)
    return ctx, estimate(info, weights, ctx).total(runners)


def human_bytes(n: float) -> str:
    """``5.6 GiB``, as Ollama's error messages write sizes."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class MemoryBudget:
    """Owns the rule for what may load: the machine's free memory, or a configured limit.

    Without a limit, a runner may start when its need fits in what the kernel reports as
    available, minus what runners already starting will take. With ``limit`` (bytes), the
    estimated needs of everything loaded plus the newcomer must also stay within it.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        #: Needs of runners that are starting and have not allocated yet.
        self.reserved = 0

    def free(self, loaded: int) -> int:
        """Bytes a new runner may take now, given the estimated total of loaded models."""
        free = psutil.virtual_memory().available - self.reserved
        if self.limit is not None:
            free = min(free, self.limit - loaded - self.reserved)
        return free

    def refusal(self, need: int, free: int) -> str:
        """The message for a model that cannot fit (Ollama's wording)."""
        return (
            f"model requires more system memory ({human_bytes(need)}) "
            f"than is available ({human_bytes(max(free, 0))})"
        )
