"""``python -m modelgarden.runner``: one model in one process, serving HTTP on loopback.

The gateway starts it, reads ``READY <port>`` from its standard output, and talks HTTP to
it. Loading happens before the socket is bound, so a model that cannot load makes the
process exit non-zero with the reason on standard error. The runner exits by itself when
its standard input closes, so it cannot outlive a gateway that died without stopping it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m modelgarden.runner")
    parser.add_argument("--model", required=True, help="path of the GGUF file")
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-mmap", action="store_true")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-stdin-watch", action="store_true", help="do not exit on stdin EOF")
    parser.add_argument(
        "--nice", type=int, default=10, help="niceness added to the inference threads (0: none)"
    )
    return parser.parse_args(argv)


def _lower_priority(nice: int) -> None:
    """Run inference below normal priority (this thread, and the llama.cpp workers it starts).

    The compute threads keep every core busy between tokens; at a lower priority they yield
    at once to the threads that carry a finished token to the client (this process's event
    loop, the gateway, the client itself), instead of making each of them wait for a
    scheduler tick. With nothing else to run, they still get all the CPU.
    """
    if nice > 0 and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)


def _on_stdin() -> None:
    """Exit as soon as standard input reaches EOF (the gateway is gone)."""
    try:
        data = os.read(0, 4096)
    except OSError:
        data = b""
    if not data:
        os._exit(0)


async def _serve(server: Any, sock: socket.socket, watch_stdin: bool) -> None:
    if watch_stdin:
        asyncio.get_running_loop().add_reader(0, _on_stdin)
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # The generation thread holds the GIL between llama.cpp calls; a short switch interval
    # lets the event loop send each token as soon as it is made (the default 5 ms adds up to
    # 5 ms to a token's latency when the loop has to wait for the interpreter).
    sys.setswitchinterval(0.0005)
    started = time.perf_counter()
    # llama.cpp's CPU threads meet at an OpenMP barrier after every operation. libgomp's
    # default is to spin a long time there, which is fastest alone, but when several runners
    # share the cores each spins through the time slices the others need: measured here, two
    # runners answering 100 tokens each took over 120 s instead of 2-4 s. A short spin keeps
    # the single-runner speed (~117 tokens/s either way) and the shared case sane.
    os.environ.setdefault("GOMP_SPINCOUNT", "500")
    try:
        from modelgarden.runner.engine import Engine

        engine = Engine(
            args.model,
            n_ctx=args.ctx,
            n_batch=args.batch,
            n_threads=args.threads,
            use_mmap=not args.no_mmap,
        )
    except Exception as exc:
        print(f"failed to load model {args.model}: {exc}", file=sys.stderr, flush=True)
        return 1
    from modelgarden.runner.server import build_app
    from modelgarden.runner.service import RunnerService

    executor = ThreadPoolExecutor(
        max_workers=1,
        thread_name_prefix="generate",
        initializer=_lower_priority,
        initargs=(args.nice,),
    )
    _serve_forever(build_app(RunnerService(engine, executor)), args, started)
    engine.close()
    return 0


def _serve_forever(app: Any, args: argparse.Namespace, started: float) -> None:
    """Bind, announce ``READY <port> <load ms>`` on stdout, and serve until stopped."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    load_ms = (time.perf_counter() - started) * 1000
    print(f"READY {sock.getsockname()[1]} {load_ms:.1f}", flush=True)
    # uvloop, as uvicorn's own run() would pick: it also sets TCP_NODELAY on accepted
    # connections (plain asyncio does not here), without which Nagle's algorithm and
    # delayed ACKs hold the first token back by ~40 ms.
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux and macOS
        asyncio.run(_serve(server, sock, not args.no_stdin_watch))
    else:
        uvloop.run(_serve(server, sock, not args.no_stdin_watch))


if __name__ == "__main__":
    sys.exit(main())
