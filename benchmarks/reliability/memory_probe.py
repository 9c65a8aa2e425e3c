"""Where the gateway's memory goes in a load, and what comes back once it is idle.

Starts the stub upstream and ``garden serve`` as the load scenario does, runs rounds of
concurrent streams, then follows the gateway through the idle clean-ups of
``memory_release.py`` (one once it is quiet, one once the upstream pool has closed
the burst's connections). At each step it prints the resident memory, the descriptors and,
from inside the gateway, glibc's main heap (``mallinfo2``) and CPython's object allocator
(its 1 MiB arenas and the bytes live in them, from ``sys._debugmallocstats``). At the end
it lists the live objects that sit in arenas made during the load: they are what keeps
those arenas from going back to the system.

The inside figures come from a ``sitecustomize`` put on the gateway's ``PYTHONPATH`` (the
probe's only hook; the product is unchanged): SIGWINCH makes it write them to a file.

    .venv/bin/python -m benchmarks.reliability.memory_probe --streams 1000 --rounds 10
    .venv/bin/python -m benchmarks.reliability.memory_probe --env PYTHONMALLOC=malloc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from benchmarks.reliability.harness import (
    Result,
    gateway,
    mib,
    raise_fd_limit,
    sample,
    stub_config,
    stubs,
)
from benchmarks.reliability.load import LIMITS, RELEASES, memory_figures, run_round
from loopback.gateway import GardenServer

from modelgarden.memory_release import PASSES

HOOK = r'''
import ctypes, gc, io, json, os, signal, sys

_libc = ctypes.CDLL(None)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_start_arenas = set()


def _arena(obj):
    """The index of the object allocator arena holding ``obj`` (None: not in one)."""
    if sys.getsizeof(obj) > 496:
        return None
    pool = id(obj) & ~((1 << 14) - 1)  # 16 KiB pools; the arena index is at offset 32
    return ctypes.c_uint.from_address(pool + 32).value


def _by_arena():
    gc.unfreeze()
    objs = gc.get_objects()
    gc.freeze()
    objs += [r for o in objs for r in gc.get_referents(o) if not gc.is_tracked(r)]
    arenas = {}
    for o in objs:
        index = _arena(o)
        if index is not None:
            arenas.setdefault(index, []).append(o)
    return arenas


def _pymalloc():
    saved, path = os.dup(2), os.environ["PROBE_STATS"] + ".malloc"
    with open(path, "w") as err:
        os.dup2(err.fileno(), 2)
        sys._debugmallocstats()
        os.dup2(saved, 2)
    os.close(saved)
    found = {}
    for line in open(path):
        for key in ("# arenas allocated current", "# bytes in allocated blocks"):
            if line.startswith(key):
                found[key.strip("# ")] = int(line.split("=")[-1].replace(",", ""))
    return found


def _stats(*_):
    out = {"pymalloc": _pymalloc(), "threads": len(os.listdir("/proc/self/task"))}
    if hasattr(_libc, "mallinfo2"):
        _libc.mallinfo2.restype = _MallInfo2
        info = _libc.mallinfo2()
        out["c_heap"] = {"size": info.arena, "in_use": info.uordblks, "free": info.fordblks}
    mode = open(os.environ["PROBE_STATS"] + ".mode").read()
    if mode in ("start", "end"):  # unfreezing and scanning every object: not in between
        arenas = _by_arena()
        if not _start_arenas:
            _start_arenas.update(arenas)
        else:
            new = {i: objs for i, objs in arenas.items() if i not in _start_arenas}
            kinds = {}
            for objs in new.values():
                for o in objs:
                    kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
            out["pinning"] = {
                "arenas_with_visible_objects": len(new),
                "objects_by_type": sorted(kinds.items(), key=lambda kv: -kv[1])[:15],
                "examples": [repr(o)[:90] for objs in new.values() for o in objs[:1]][:12],
            }
    with open(os.environ["PROBE_STATS"], "w") as f:
        json.dump(out, f)


signal.signal(signal.SIGWINCH, _stats)
'''


def _inside(pid: int, path: Path, mode: str = "") -> dict[str, Any]:
    path.unlink(missing_ok=True)
    Path(f"{path}.mode").write_text(mode)
    os.kill(pid, signal.SIGWINCH)
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.2)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _line(label: str, pid: int, stats: Path, mode: str = "") -> dict[str, Any]:
    s = sample(pid)  # before looking inside, which allocates
    inside = _inside(pid, stats, mode)
    py = inside["pymalloc"]
    heap = inside.get("c_heap", {})
    print(
        f"{label:<38} RSS {mib(s.rss):6.1f} MiB  fds {s.fds:5}  "
        f"object arenas {py.get('arenas allocated current', 0):4} MiB "
        f"({mib(py.get('bytes in allocated blocks', 0)):5.1f} live)  "
        f"C heap {mib(heap.get('size', 0)):5.1f} MiB ({mib(heap.get('in_use', 0)):5.1f} in use)",
        flush=True,
    )
    return inside


def _wait_releases(server: GardenServer, count: float, limit: float) -> None:
    deadline = time.monotonic() + limit
    while memory_figures(server)[RELEASES] < count and time.monotonic() < deadline:
        time.sleep(0.5)


def probe(args: argparse.Namespace, work: Path) -> None:
    raise_fd_limit()
    hook = work / "hook"
    hook.mkdir(parents=True)
    (hook / "sitecustomize.py").write_text(HOOK)
    stats = work / "stats.json"
    env = {
        "GARDEN_DEFAULT_MODEL": "",
        "GARDEN_LOG_LEVEL": "info",
        "PYTHONPATH": str(hook),
        "PROBE_STATS": str(stats),
        **dict(kv.split("=", 1) for kv in args.env),
    }
    with stubs("--chunks", str(args.chunks)) as stub:
        env["GARDEN_CONFIG"] = stub_config(work, stub.url, **LIMITS)
        with gateway(work / "gw", Result("memory probe", ""), **env) as server:
            pid = server.proc.pid
            gw = psutil.Process(pid)
            releases = memory_figures(server)[RELEASES]  # /metrics answered once, as in load
            label = "start (no inference yet)"
            if args.warmup:  # every path used once, and its clean-up done, before the start
                asyncio.run(run_round(server, args.warmup, args.chunks))
                _wait_releases(server, releases + 1, PASSES[0] + 5)
                releases = memory_figures(server)[RELEASES]
                label = f"start (after {args.warmup} warm-up streams)"
            _line(label, pid, stats, "start" if args.pinning else "")
            for i in range(args.rounds):
                cpu, wall = sum(gw.cpu_times()[:2]), time.perf_counter()
                asyncio.run(run_round(server, args.streams, args.chunks))
                wall, cpu = time.perf_counter() - wall, sum(gw.cpu_times()[:2]) - cpu
                print(f"round {i + 1}: {wall:.2f} s, gateway CPU {cpu:.2f} s", flush=True)
            _line("after the load", pid, stats)
            _wait_releases(server, releases + 1, PASSES[0] + 5)
            _line(f"after clean-up 1 ({PASSES[0]:.0f} s quiet)", pid, stats)
            _wait_releases(server, releases + 2, PASSES[1] + 5)
            end = "end" if args.pinning else ""
            inside = _line(f"after clean-up 2 ({PASSES[1]:.0f} s quiet)", pid, stats, end)
            if "pinning" in inside:
                print(json.dumps(inside["pinning"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=32)
    parser.add_argument("--pinning", action="store_true", help="list what keeps arenas")
    parser.add_argument("--warmup", type=int, default=0, help="streams before the start")
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the gateway")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="garden-memprobe-") as tmp:
        probe(args, Path(tmp))


if __name__ == "__main__":
    main()
