"""``python -m modelgarden.runner``: one model in one process, serving HTTP on loopback.

The gateway starts it, reads ``READY <port>`` from its standard output, and talks HTTP to
it. Loading happens before the socket is bound, so a model that cannot load makes the
process exit non-zero with the reason on standard error. The runner exits by itself when
its standard input closes, so it cannot outlive a gateway that died without stopping it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor


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
    return parser.parse_args(argv)


def _watch_stdin() -> None:
    """Exit as soon as standard input reaches EOF (the gateway is gone)."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started = time.perf_counter()
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
    import uvicorn

    from modelgarden.runner.server import build_app
    from modelgarden.runner.service import RunnerService

    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
    app = build_app(RunnerService(engine, executor))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    if not args.no_stdin_watch:
        threading.Thread(target=_watch_stdin, daemon=True, name="stdin-watch").start()
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
    asyncio.run(server.serve(sockets=[sock]))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
