"""``python -m modelgarden.runner``: llama.cpp's own server engine for one model, on loopback.

The engine is llama.cpp's ``llama-server`` (parallel slots, continuous batching, prompt
cache per slot, grammars and JSON schemas, multimodal projectors) as the ``xllamacpp``
wheel ships it, so nothing is compiled on the user's machine. This program only starts it:
it takes the same flags as a ``llama-server`` binary (the subset the gateway passes), so
the gateway drives either one the same way (``GARDEN_LLAMA_SERVER`` names a binary, e.g.
a CUDA or Metal build of the user's own).

The HTTP API is llama.cpp's: ``GET /health`` answers 200 once the model is loaded,
``POST /completion``, ``/tokenize``, ``/v1/embeddings``, ``GET /props``. It is served from
the engine's C++ threads; Python only waits. The process exits when its standard input
closes (the gateway is gone), on SIGTERM, or when the engine fails to load (non-zero,
with the reason on standard error).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Any

#: llama.cpp's log verbosity: 4 keeps the buffer-size lines the gateway reads at load.
LOG_VERBOSITY = 4


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m modelgarden.runner")
    p.add_argument("-m", "--model", required=True, help="path of the GGUF file")
    p.add_argument("-a", "--alias", default="", help="the model's name on /v1/models")
    p.add_argument("-c", "--ctx-size", type=int, default=4096, help="context of all slots")
    p.add_argument("-np", "--parallel", type=int, default=1, help="slots (parallel requests)")
    p.add_argument("-b", "--batch-size", type=int, default=2048)
    p.add_argument("-ub", "--ubatch-size", type=int, default=512)
    p.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("-tb", "--threads-batch", type=int, default=0)
    p.add_argument("-ngl", "--n-gpu-layers", type=int, default=-1)
    p.add_argument("-sm", "--split-mode", default="", choices=["", "none", "layer", "row"])
    p.add_argument("-mg", "--main-gpu", type=int, default=-1)
    p.add_argument("--mmproj", default="", help="multimodal projector GGUF")
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--embeddings", action="store_true")
    p.add_argument("--pooling", default="", choices=["", "none", "mean", "cls", "last"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cache-ram", type=int, default=0, help="MiB of RAM for cached prompts")
    p.add_argument("--no-warmup", action="store_true")
    p.add_argument("--fit", default="off", choices=["on", "off"])
    p.add_argument("--context-shift", action="store_true")
    return p.parse_args(argv)


def _params(args: argparse.Namespace) -> Any:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = args.model
    if args.alias:
        p.model_alias = {args.alias}
    p.n_ctx = args.ctx_size
    p.n_parallel = args.parallel
    p.n_batch = args.batch_size
    p.n_ubatch = args.ubatch_size
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads_batch or args.threads
    p.n_gpu_layers = args.n_gpu_layers
    if args.split_mode:
        p.split_mode = getattr(
            xllamacpp.llama_split_mode, f"LLAMA_SPLIT_MODE_{args.split_mode.upper()}"
        )
    if args.main_gpu >= 0:
        p.main_gpu = args.main_gpu
    if args.mmproj:
        p.mmproj.path = args.mmproj
    if args.no_mmap:
        p.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
    if args.embeddings:
        p.embedding = True
    if args.pooling:
        p.pooling_type = getattr(
            xllamacpp.llama_pooling_type, f"LLAMA_POOLING_TYPE_{args.pooling.upper()}"
        )
    p.hostnames = [args.host]
    p.port = args.port
    p.cache_ram_mib = args.cache_ram
    p.warmup = not args.no_warmup
    p.fit_params = args.fit == "on"
    p.ui = False
    p.ctx_shift = args.context_shift
    p.verbosity = LOG_VERBOSITY
    return p


def _watch_stdin(stop: threading.Event) -> None:
    """Set ``stop`` when standard input reaches EOF (the gateway is gone)."""
    with contextlib.suppress(OSError):
        while os.read(0, 4096):
            pass
    stop.set()


def list_devices() -> int:
    """Print the engine's accelerators as ``llama-server --list-devices`` does."""
    import xllamacpp

    print("Available devices:")
    for dev in xllamacpp.get_device_info():
        if "CPU" in str(dev.get("type")):
            continue
        total, free = int(dev["memory_total"]) >> 20, int(dev["memory_free"]) >> 20
        print(f"  {dev['name']}: {dev['description']} ({total} MiB, {free} MiB free)")
    return 0


def main(argv: list[str] | None = None) -> int:
    if "--list-devices" in (sys.argv[1:] if argv is None else argv):
        return list_devices()
    args = _parse(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        import xllamacpp

        server = xllamacpp.Server(_params(args))
    except Exception as exc:
        print(f"failed to load model {args.model}: {exc}", file=sys.stderr, flush=True)
        return 1
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    while not stop.wait(3600):
        pass
    del server
    # The engine's threads are C++ threads; leave without waiting for the interpreter to
    # tear them down one by one (the gateway counts the process gone when it has exited).
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
