"""How much memory a model needs, and whether this machine has it.

A runner's resident memory is its weights (memory-mapped), its KV cache (f16, one slot's
context for each of its ``parallel`` slots, allocated at load so always resident), the
compute buffers llama.cpp sizes for a full batch against a slot's context, and the runner
process itself (Python, llama.cpp, the HTTP server). Measured for SmolLM2-135M-Instruct
(Q4_1, 92 MiB of weights) with llama.cpp's server engine on CPU, against this estimate:

=========== ================ ===================== =========================== =========
 num_ctx     slots            engine's buffers      resident after a long prompt  estimate
=========== ================ ===================== =========================== =========
 4096        1                201 MiB               257 MiB                      327 MiB
 4096        4                471 MiB               527 MiB                      597 MiB
 8192        1                295 MiB               347 MiB                      489 MiB
 2048        8                470 MiB               526 MiB                      561 MiB
=========== ================ ===================== =========================== =========

The compute estimate is an upper bound (attention scores for a full batch without flash
attention, 81 MiB at 4096); the engine needs less when it can use flash attention. Once a
runner is up, ``ps`` and ``/status`` report what the engine itself allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from modelgarden.store.gguf import GGUFInfo

MiB = 1 << 20
#: A runner process before any model: interpreter, llama.cpp, its HTTP server, and what a
#: long prompt adds beyond the engine's own buffers.
RUNNER_PROCESS = 64 * MiB
#: Bytes per element of the KV cache (f16) and of the compute buffers (f32).
KV_BYTES = 2
COMPUTE_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """A model's memory need with one runner: weights, KV cache for every slot, compute
    buffers and the process; ``vram`` is the part on GPUs when layers are offloaded."""

    weights: int
    kv_cache: int
    compute: int
    process: int = RUNNER_PROCESS
    vram: int = 0

    @property
    def total(self) -> int:
        """Everything the runner may take, in RAM and on GPUs."""
        return self.weights + self.kv_cache + self.compute + self.process

    @property
    def ram(self) -> int:
        """The part that lives in system memory."""
        return self.total - self.vram


def estimate(
    info: GGUFInfo,
    weights: int,
    num_ctx: int,
    num_batch: int = 512,
    *,
    parallel: int = 1,
    gpu_layers: int = 0,
) -> MemoryEstimate:
    """The memory a model needs from its GGUF metadata: ``parallel`` slots of ``num_ctx``
    tokens each, ``gpu_layers`` of its layers offloaded (with their share of the KV cache
    and the compute buffers); ``weights`` includes a projector's."""
    layers = int(info.arch_value("block_count", 0) or 0)
    heads = int(info.arch_value("attention.head_count", 1) or 1)
    kv_heads = int(info.arch_value("attention.head_count_kv", heads) or heads)
    embd = int(info.arch_value("embedding_length", 0) or 0)
    head_dim = int(info.arch_value("attention.key_length", 0) or 0) or (embd // max(heads, 1))
    value_dim = int(info.arch_value("attention.value_length", 0) or 0) or head_dim
    kv = layers * num_ctx * parallel * kv_heads * (head_dim + value_dim) * KV_BYTES
    # Attention scores for a full batch against one slot's context, plus activations.
    compute = COMPUTE_BYTES * num_batch * (heads * num_ctx + 8 * embd)
    vram = 0
    if gpu_layers and layers:
        share = min(gpu_layers, layers + 1) / (layers + 1)  # the output layer counts too
        vram = int((weights + kv) * share) + compute
    return MemoryEstimate(weights=weights, kv_cache=kv, compute=compute, vram=vram)


def default_need(
    info: GGUFInfo, weights: int, context_length: int, parallel: int
) -> tuple[int, int]:
    """The context a model starts with by default (``context_length``, capped at what it was
    trained for) and its memory need then with ``parallel`` slots."""
    ctx = min(context_length, info.context_length or context_length)
    return ctx, estimate(info, weights, ctx, parallel=parallel).total


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
