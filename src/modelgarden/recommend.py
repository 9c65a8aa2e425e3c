"""Which well-known models suit this machine: fit in its memory, and answer at a usable speed.

Generation on a CPU is bound by memory bandwidth: each token reads every weight once, so
tokens per second is roughly bandwidth ÷ model size. The figures below are rough on
purpose (download sizes of the Ollama library's default tags, memory at a 4,096-token
context); ``garden doctor`` labels them as estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelgarden.resources import Machine

GB = 1000**3
#: Memory bandwidth one core can pull in generation, and the ceiling of a desktop's bus.
BANDWIDTH_PER_CORE = 4 * GB
BANDWIDTH_CEILING = 40 * GB
#: GPU memory bandwidth: generation on a GPU is rarely the bottleneck for these sizes.
GPU_BANDWIDTH = 500 * GB
#: Slower than this is not recommended for chatting.
USABLE_TOKENS_PER_SECOND = 5.0
#: Leave this share of memory for everything else.
HEADROOM = 0.25


@dataclass(frozen=True)
class Candidate:
    """A model people pull, with its download size and its memory need at 4k context."""

    name: str
    parameters: str
    size: int
    need: int
    note: str

    def tokens_per_second(self, machine: Machine) -> float:
        """Rough generation speed on this machine."""
        if machine.gpus and machine.gpu_offload:
            return GPU_BANDWIDTH / self.size
        bandwidth = min(machine.cpu_count * BANDWIDTH_PER_CORE, BANDWIDTH_CEILING)
        return bandwidth / self.size


def _c(name: str, parameters: str, size_gb: float, need_gb: float, note: str) -> Candidate:
    return Candidate(name, parameters, int(size_gb * GB), int(need_gb * GB), note)


CATALOGUE: tuple[Candidate, ...] = (
    _c("smollm2:135m", "135M", 0.27, 0.5, "tiny; tests and autocomplete"),
    _c("qwen2.5:0.5b", "494M", 0.40, 0.6, "small multilingual chat"),
    _c("smollm2:360m", "362M", 0.73, 1.0, "tiny chat"),
    _c("gemma3:1b", "1B", 0.82, 1.2, "small chat"),
    _c("qwen2.5:1.5b", "1.5B", 0.99, 1.3, "chat, tools"),
    _c("llama3.2:1b", "1.2B", 1.3, 1.7, "chat, tools"),
    _c("qwen2.5:3b", "3.1B", 1.9, 2.4, "chat, tools"),
    _c("llama3.2:3b", "3.2B", 2.0, 2.7, "chat, tools"),
    _c("phi4-mini", "3.8B", 2.5, 3.2, "reasoning, tools"),
    _c("gemma3:4b", "4.3B", 3.3, 4.0, "chat, vision"),
    _c("qwen2.5:7b", "7.6B", 4.7, 5.3, "chat, tools, code"),
    _c("llama3.1:8b", "8.0B", 4.9, 5.8, "chat, tools"),
    _c("qwen3:8b", "8.2B", 5.2, 6.1, "reasoning, tools"),
    _c("gemma3:12b", "12B", 8.1, 9.5, "chat, vision"),
    _c("qwen2.5:14b", "14.8B", 9.0, 10.4, "chat, tools, code"),
    _c("mistral-small:24b", "24B", 14.0, 15.5, "chat, tools"),
    _c("gemma3:27b", "27B", 17.0, 19.0, "chat, vision"),
    _c("qwen2.5:32b", "32.8B", 20.0, 22.0, "chat, tools, code"),
    _c("llama3.3:70b", "70.6B", 43.0, 46.0, "chat, tools"),
)


def memory_for_models(machine: Machine) -> int:
    """Memory models may use: GPU memory when llama.cpp can offload, else RAM, less headroom."""
    if machine.gpus and machine.gpu_offload:
        return int(max(g.memory_total for g in machine.gpus) * (1 - HEADROOM))
    return int(min(machine.ram_total * (1 - HEADROOM), machine.ram_available))


def recommend(machine: Machine, limit: int = 5) -> list[Candidate]:
    """The largest catalogue models that fit and run at a usable speed, largest first."""
    room = memory_for_models(machine)
    usable = [
        c
        for c in CATALOGUE
        if c.need <= room and c.tokens_per_second(machine) >= USABLE_TOKENS_PER_SECOND
    ]
    return sorted(usable, key=lambda c: c.size, reverse=True)[:limit]
