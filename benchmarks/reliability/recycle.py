"""Load through a gateway with relay workers: the same streams as the stub load, and the
gateway's memory (its processes together) back to its start once it has settled.

One CPython process keeps most of a burst's small-object memory for good (the stub load
records how much; docs/RELIABILITY.md says why). With ``--workers`` the bursts land in the
relay workers, and a worker that settles above its start is replaced by a fresh one
(``worker_recycle``, :mod:`modelgarden.workers`), so the gateway as a whole returns.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
from benchmarks.reliability.harness import (
    Result,
    Sample,
    Scale,
    gateway,
    mib,
    raise_fd_limit,
    sample,
    stub_config,
    stubs,
    wait_until,
)
from benchmarks.reliability.load import LIMITS, run_rounds
from loopback.gateway import GardenServer

from modelgarden.memory_release import PASSES

#: Gateway processes: the primary and two relay workers (one per core of this machine).
PROCESSES = 3
#: A worker asks to be replaced this far above its start (the setting's default).
RECYCLE = 0.10


def workers_of(server: GardenServer) -> list[psutil.Process]:
    """The primary's relay worker processes (its runner processes are not)."""
    children = psutil.Process(server.proc.pid).children()
    return [p for p in children if "serve" in p.cmdline() and "modelgarden" in p.cmdline()]


def tree(server: GardenServer) -> Sample:
    """The gateway's processes together: resident memory and descriptors summed."""
    parts = [sample(server.proc.pid), *(sample(p.pid) for p in workers_of(server))]
    return Sample(sum(s.rss for s in parts), sum(s.fds for s in parts))


def _settled(server: GardenServer, loaded_at: float) -> bool:
    """Every worker has had its last idle clean-up, and each that asked has been replaced
    (its successor ready, itself gone)."""
    if time.monotonic() < loaded_at + PASSES[-1] + 3:
        return False
    logs = server.logs()
    asked, replaced = logs.count("worker asks to be replaced"), logs.count('"worker replaced"')
    return asked == replaced and len(workers_of(server)) == PROCESSES - 1


def load_workers(scale: Scale, work: Path) -> Result:
    """Scenario 1c."""
    n, rounds, chunks = scale.stub_streams, scale.stub_rounds, scale.stub_chunks
    bound = scale.idle_rss_bound
    result = Result(
        "load: streams through relay workers",
        f"the stub load ({n} streams x {rounds} rounds) through a gateway of {PROCESSES} "
        "processes (a primary, relay workers that take every client): every stream whole; "
        "once settled, every worker that stayed more than "
        f"{RECYCLE:.0%} above its start replaced, the processes' descriptors back"
        + (f" and their resident memory together within {bound:.0%} of the start" if bound else ""),
    )
    raise_fd_limit()
    with stubs("--chunks", str(chunks)) as stub:
        env = {
            "GARDEN_CONFIG": stub_config(work, stub.url, **LIMITS),
            "GARDEN_DEFAULT_MODEL": "",
            "GARDEN_LOG_LEVEL": "info",
            "GARDEN_WORKERS": str(PROCESSES),
            "GARDEN_WORKER_RECYCLE": str(RECYCLE),
        }
        with gateway(work / "gw", result, **env) as server:
            ready = wait_until(  # each worker set up, its start taken
                lambda: server.logs().count('"worker ready"') == PROCESSES - 1, timeout=60
            )
            result.check(ready, "the relay workers did not start")
            first = {p.pid for p in workers_of(server)}
            start, primary_start = tree(server), sample(server.proc.pid)
            rounds_run = run_rounds(server, scale, result, lambda: tree(server))
            per_round = rounds_run.samples
            loaded_at = time.monotonic()
            settled = wait_until(lambda: _settled(server, loaded_at), timeout=PASSES[-1] + 60)
            result.check(settled, "the workers did not settle (or a replacement hung)")
            idle = tree(server)
            replaced = len(first - {p.pid for p in workers_of(server)})
            primary = (primary_start, sample(server.proc.pid))
    result.figures = {
        "processes": PROCESSES,
        **rounds_run.figures(scale),
        "rss_start_mib": mib(start.rss),
        "rss_per_round_mib": [mib(s.rss) for s in per_round],
        "rss_idle_mib": mib(idle.rss),
        "rss_idle_vs_start_pct": round((idle.rss / start.rss - 1) * 100, 1),
        "primary_rss_start_mib": mib(primary[0].rss),
        "primary_rss_idle_mib": mib(primary[1].rss),
        "workers_replaced": replaced,
        "fds_start": start.fds,
        "fds_after_last_round": per_round[-1].fds,
        "fds_idle": idle.fds,
    }
    result.check(rounds_run.whole(scale), "some streams failed")
    result.check(idle.fds <= start.fds + 16, f"descriptors not back: {start.fds} -> {idle.fds}")
    if bound is not None:
        result.check(
            idle.rss <= start.rss * (1 + bound),
            f"resident memory {mib(idle.rss)} MiB once settled, more than {bound:.0%} above "
            f"its start ({mib(start.rss)} MiB)",
        )
    return result
