"""Several gateway processes on one port: ``garden serve --workers N``, in one package.

One event loop tops out at one core. With ``--workers N`` the process started is the
**primary**: it owns everything that must exist once (the model store, the runner processes
and their scheduler, the usage database writer, the metrics and console series) and starts
``N - 1`` **relay workers**. Every process listens on the same address (``SO_REUSEPORT``:
the kernel spreads connections over them), so any of them can take a client.

A relay worker answers the hot inference routes for models of remote backends itself (the
byte relay, translation, fallbacks, limits, keys: the same code as the primary). Anything
else, the local runners' models and every other route (store, catalogue, console, metrics,
deploy), it passes untouched to the primary over a private loopback listener
(:class:`~modelgarden.workers.link.PrimaryProxy`). Each request it answers itself leaves
its log line in the worker and its record in the primary: records travel in batches over
a pipe, so ``/metrics``, the console's charts and the usage table count every process's
requests.

While its workers are up, the primary takes no client connection itself: a small BPF
program on the shared address hands each new connection to a worker's socket (the primary's
is the group's first; should a worker be missing, the kernel's own spread applies, primary
included). So the primary's memory carries no relay burst, and a worker's can be given back
whole: a worker that settles, idle after a burst, more than ``worker_recycle`` above its
resident memory at start asks to be replaced; the primary starts its successor, waits for
it to be ready, then retires the old one (SIGUSR1: it stops taking clients and exits once
the answers it is giving are done). CPython keeps most of a burst's small-object memory
for good (docs/RELIABILITY.md), so this is how the gateway returns to its start.

The primary watches its workers: one that dies is started again (after a pause that grows
while it keeps dying); a worker whose primary is gone stops itself. On SIGTERM the primary
tells its workers at once, so all drain together.

Where each piece lives: :mod:`.sockets` (the shared address and the steering program),
:mod:`.records` (records and messages over the pipe), :mod:`.supervisor` (the primary's
:class:`Workers`), :mod:`.link` (a relay worker's :class:`WorkerLink` and its proxy to the
primary), :mod:`.gateway` (a relay worker's :class:`WorkerGateway`). ``server.py`` builds
the role the process plays and hands it to ``create_app`` (a
:class:`~modelgarden.api.state.ProcessRole`), which drives it from the app's lifespan.
"""

from modelgarden.workers.gateway import PrimaryLocal, WorkerGateway
from modelgarden.workers.link import PrimaryProxy, WorkerLink
from modelgarden.workers.records import RecordReader, RecordShipper
from modelgarden.workers.sockets import listen_socket, steer_to_workers
from modelgarden.workers.supervisor import ENV_PRIMARY, ENV_RECORDS_FD, Workers

__all__ = [
    "ENV_PRIMARY",
    "ENV_RECORDS_FD",
    "PrimaryLocal",
    "PrimaryProxy",
    "RecordReader",
    "RecordShipper",
    "WorkerGateway",
    "WorkerLink",
    "Workers",
    "listen_socket",
    "steer_to_workers",
]
