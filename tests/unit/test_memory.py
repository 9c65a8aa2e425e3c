"""The memory estimate's arithmetic, from GGUF headers written for the test."""

from __future__ import annotations

from pathlib import Path

from modelgarden.lifecycle.memory import RUNNER_PROCESS, estimate, human_bytes
from modelgarden.store.gguf import read_gguf
from tests.gguf_writer import write_gguf

LLAMA_8B = {
    "general.architecture": "llama",
    "llama.block_count": 32,
    "llama.embedding_length": 4096,
    "llama.attention.head_count": 32,
    "llama.attention.head_count_kv": 8,
}


def test_kv_cache_and_compute_follow_the_architecture(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "m.gguf", LLAMA_8B, []))
    need = estimate(info, weights=4_900_000_000, num_ctx=8192, num_batch=512)
    # Llama 3 8B at 8k context: 32 layers x 8 KV heads x 128 dims x (K+V) x f16 = 1 GiB.
    assert need.kv_cache == 32 * 8192 * 8 * 256 * 2 == 1024**3
    assert need.compute == 4 * 512 * (32 * 8192 + 8 * 4096)
    assert need.total == 4_900_000_000 + need.kv_cache + need.compute + RUNNER_PROCESS
    assert need.ram == need.total and need.vram == 0


def test_slots_share_weights_and_compute_and_each_has_its_own_kv_cache(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "m.gguf", LLAMA_8B, []))
    one = estimate(info, weights=4_900_000_000, num_ctx=4096)
    four = estimate(info, weights=4_900_000_000, num_ctx=4096, parallel=4)
    assert four.kv_cache == 4 * one.kv_cache
    assert four.total - one.total == 3 * one.kv_cache


def test_gpu_layers_put_their_share_and_the_compute_buffers_in_vram(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "m.gguf", LLAMA_8B, []))
    cpu = estimate(info, weights=4_900_000_000, num_ctx=4096)
    half = estimate(info, weights=4_900_000_000, num_ctx=4096, gpu_layers=16)
    full = estimate(info, weights=4_900_000_000, num_ctx=4096, gpu_layers=99)
    assert cpu.vram == 0
    assert half.vram == int((4_900_000_000 + half.kv_cache) * 16 / 33) + half.compute
    assert full.vram == 4_900_000_000 + full.kv_cache + full.compute
    assert full.ram == RUNNER_PROCESS  # only the process stays in system memory


def test_context_scales_the_kv_cache_linearly(tmp_path: Path) -> None:
    info = read_gguf(write_gguf(tmp_path / "m.gguf", LLAMA_8B, []))
    small, big = estimate(info, 0, 2048), estimate(info, 4096, 4096)
    assert big.kv_cache == 2 * small.kv_cache


def test_explicit_key_and_value_lengths_win(tmp_path: Path) -> None:
    meta = {**LLAMA_8B, "llama.attention.key_length": 192, "llama.attention.value_length": 128}
    info = read_gguf(write_gguf(tmp_path / "m.gguf", meta, []))
    assert estimate(info, 0, 1024).kv_cache == 32 * 1024 * 8 * (192 + 128) * 2


def test_human_bytes_matches_ollamas_style() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(150 * 1024**2) == "150.0 MiB"
    assert human_bytes(5.6 * 1024**3) == "5.6 GiB"
    assert human_bytes(3 * 1024**4) == "3.0 TiB"
