"""A throwaway PostgreSQL server on a loopback port, for tests that share one database.

Uses Debian's ``postgresql`` package (installed with apt-get when missing and running as
root). The cluster lives in a temporary folder owned by the ``postgres`` user when the
tests run as root (PostgreSQL refuses to run as root), trusts loopback connections, and is
stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def bindir() -> Path:
    """PostgreSQL's server programs, installing Debian's package if need be."""
    found = _bindir()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postgresql"],
            check=True,
            env=env,
        )
        found = _bindir()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return found


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster; yield its URL (``postgresql://garden@127.0.0.1:PORT/postgres``)."""
    bins = bindir()
    root = Path(tempfile.mkdtemp(prefix="garden-pg-"))
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, cwd=root)

    try:
        run(str(bins / "initdb"), "-D", str(data), "-U", "garden", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bins / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
            "-w", "-t", "60", "start")  # fmt: skip
        try:
            yield f"postgresql://garden@127.0.0.1:{port}/postgres"
        finally:
            run(str(bins / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
