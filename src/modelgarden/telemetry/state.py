"""What the gateway knows about its backends, read from memory without asking them.

One description per backend serves ``/garden/backends``, ``/ready`` and the state metrics
of ``/metrics``: replicas and their circuit breakers, requests in flight and waiting,
rejections, and the models a local backend has loaded.
"""

from __future__ import annotations

from typing import Any

from modelgarden.backends.local import LocalBackend
from modelgarden.backends.modal import ModalBackend
from modelgarden.backends.remote import RemoteBackend


def describe(backend: Any) -> dict[str, Any]:
    """One backend's state (never its keys or headers)."""
    out: dict[str, Any] = {"name": backend.name, "kind": backend.kind, "apis": sorted(backend.apis)}
    if isinstance(backend, RemoteBackend):
        out["replicas"] = [
            {
                "url": r.url,
                "breaker": str(r.breaker.state),
                "healthy": r.healthy,
                "consecutive_failures": r.breaker.failures,
                "outstanding": r.outstanding,
            }
            for r in backend.replicas
        ]
        out["up"] = any(r["breaker"] != "open" for r in out["replicas"])
        out["active"], out["waiting"] = backend.limiter.active, backend.limiter.waiting
        out["rejected"] = backend.limiter.rejected
        if isinstance(backend, ModalBackend):
            out["lifecycle"] = backend.describe()
    elif isinstance(backend, LocalBackend):
        scheduler = backend.scheduler
        models = scheduler.loaded()
        out["up"] = True
        out["loaded"] = len(models)
        out["models"] = [
            {"name": m.name, "size": m.size, "active": m.active, "runners": len(m.runners)}
            for m in models
        ]
        out["active"] = sum(m.active for m in models)
        out["waiting"] = scheduler.pending
        out["rejected"] = scheduler.rejected
    else:
        out.update(up=True, active=0, waiting=0, rejected=0)
    return out
