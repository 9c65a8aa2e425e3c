"""``garden keys create|list|revoke|purge``: API keys, through the running gateway's admin
routes, or the database itself on the gateway's machine (``--local``).

The gateway owns the database, so the CLI asks it (``/garden/keys``). The first key is made
while the gateway has none (it is then open, on loopback); afterwards the CLI sends
``GARDEN_API_KEY`` (or ``OLLAMA_API_KEY``), which must be an admin key. An operator locked
out (every key revoked or expired: the gateway stays closed) makes a key with ``--local``,
which writes to the database the settings name; the gateway reads it within seconds.
``purge --local`` deletes every key: the one way back to an open gateway.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from pydantic import BaseModel, ConfigDict

from modelgarden.cli.common import (
    ENV_FILE_OPTION,
    handles_errors,
    open_client,
    read_settings,
    table,
)

_LOCAL = click.option(
    "--local",
    is_flag=True,
    help="Write the key database directly (on the gateway's machine, with its settings).",
)
_CONFIG = click.option(
    "--config", "config_file", type=click.Path(path_type=Path), help="garden.toml path."
)


class KeyInfo(BaseModel):
    """One key as ``/garden/keys`` describes it (``key`` only in a creation's answer)."""

    model_config = ConfigDict(extra="allow")
    id: str
    name: str
    scope: str
    models: list[str]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    state: str
    key: str | None = None


class KeyList(BaseModel):
    """The answer of ``GET /garden/keys``."""

    keys: list[KeyInfo]


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    try:
        return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):  # a key made before expiries were bounded
        return "beyond the year 9999"


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (admin)."""


@keys.command("create")
@click.option("--name", required=True, help="What the key is for (shown in usage and logs).")
@click.option("--scope", type=click.Choice(["user", "admin"]), default="user", show_default=True)
@click.option("--models", "models", multiple=True, help="Model glob it may use (repeatable).")
@click.option("--expires", help="30d, 12h, or an ISO date (UTC); default: never.")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--max-concurrent", type=click.IntRange(min=1), help="Requests at once.")
@_LOCAL
@_CONFIG
@ENV_FILE_OPTION
@click.option(
    "--from-env", "from_env", metavar="VAR",
    help="With --local: the key is this environment variable's value (a deployment's own).",
)  # fmt: skip
@click.option("--if-absent", is_flag=True, help="With --local: nothing if the name exists.")
@handles_errors
def create(
    name: str,
    scope: str,
    models: tuple[str, ...],
    expires: str | None,
    rpm: int | None,
    tpm: int | None,
    max_concurrent: int | None,
    local: bool,
    config_file: Path | None,
    env_file: Path | None,
    from_env: str | None,
    if_absent: bool,
) -> None:
    """Create a key and print it (it cannot be shown again)."""
    from modelgarden.client._base import Call

    body: dict[str, Any] = {"name": name, "scope": scope, "models": list(models)}
    extras = {"expires": expires, "rpm": rpm, "tpm": tpm, "max_concurrent": max_concurrent}
    body |= {k: v for k, v in extras.items() if v is not None}
    if (from_env or if_absent) and not local:
        raise click.UsageError("--from-env and --if-absent write the database: add --local")
    if local:
        secret = _secret_from(from_env)
        made = asyncio.run(_create_local(body, (config_file, env_file), secret, if_absent))
        if made is None:
            click.echo(f"A key named {name} exists already: nothing made.", err=True)
            return
        created = KeyInfo(**made)
    else:
        with open_client() as client:
            call = Call("POST", "/garden/keys", body, name="keys")
            created = client._call(call, KeyInfo, None)
    if not from_env:  # an operator's own secret is not printed back
        click.echo(created.key)
    click.echo(
        f"Created {created.scope} key {created.id} ({created.name}); expires "
        f"{_when(created.expires_at)}. Store it now: it cannot be shown again.",
        err=True,
    )


@keys.command("list")
@handles_errors
def list_keys() -> None:
    """List keys (never their secrets)."""
    from modelgarden.client._base import Call

    with open_client() as client:
        found = client._call(Call("GET", "/garden/keys", name="keys"), KeyList, None)
    rows = [["ID", "NAME", "SCOPE", "MODELS", "STATE", "EXPIRES", "LIMITS"]]
    for k in found.keys:
        limits = ", ".join(
            f"{label} {value}"
            for label, value in (("rpm", k.rpm), ("tpm", k.tpm), ("at once", k.max_concurrent))
            if value is not None
        )
        rows.append(
            [
                k.id,
                k.name,
                k.scope,
                ",".join(k.models) or "*",
                k.state,
                _when(k.expires_at),
                limits or "-",
            ]
        )
    table(rows)


@asynccontextmanager
async def _local_ring(config_file: Path | None, env_file: Path | None) -> AsyncIterator[Any]:
    """A key ring on the database the settings name (the gateway's own: read from the same
    ``garden.toml`` and ``.env`` it reads), closed on the way out."""
    from modelgarden.db import connect
    from modelgarden.security.keys import SCHEMA, KeyRing

    settings, _, _ = read_settings(config_file, env_file)
    ring = KeyRing()
    ring.db = await connect(settings.database_url, settings.models_dir)
    try:
        await ring.db.ensure_schema(SCHEMA)
        await ring.reload()
        yield ring
    finally:
        await ring.db.close()


def _secret_from(variable: str | None) -> str | None:
    if variable is None:
        return None
    value = os.environ.get(variable, "").strip()
    if not value:
        raise click.UsageError(f"--from-env {variable}: that variable is not set")
    return value


async def _create_local(
    body: dict[str, Any],
    files: tuple[Path | None, Path | None],
    secret: str | None,
    if_absent: bool,
) -> dict[str, Any] | None:
    """Write a key to the database; ``None`` when ``if_absent`` and the name exists."""
    from modelgarden.api.keys import KeyRequest
    from modelgarden.db import DatabaseError
    from modelgarden.security.keys import expiry

    req = KeyRequest(**body)
    async with _local_ring(*files) as ring:
        if if_absent and any(k.name == req.name for k in ring.all()):
            return None
        limits = (req.rpm, req.tpm, req.max_concurrent)
        try:
            key, made = await ring.create(
                req.name, req.scope, req.models, expiry(req.expires), limits, secret
            )
        except DatabaseError:
            await ring.reload()  # another replica's init made it first
            if if_absent and any(k.name == req.name for k in ring.all()):
                return None
            raise
    return {**key.public(), "key": made}


@keys.command("purge")
@_LOCAL
@_CONFIG
@ENV_FILE_OPTION
@click.option("--yes", is_flag=True, help="Confirm: every key is deleted, the gateway opens.")
@handles_errors
def purge(local: bool, config_file: Path | None, env_file: Path | None, yes: bool) -> None:
    """Delete every key: the gateway is open again (on loopback only, unless --insecure)."""
    if not local or not yes:
        raise click.UsageError("purge deletes every key: run it on the gateway's machine with "
                               "--local --yes")  # fmt: skip

    async def run() -> int:
        async with _local_ring(config_file, env_file) as ring:
            return int(await ring.purge())

    click.echo(f"Deleted {asyncio.run(run())} key(s); the gateway asks for none now.", err=True)


@keys.command("revoke")
@click.argument("key")
@handles_errors
def revoke(key: str) -> None:
    """Revoke a key by id or name."""
    from modelgarden.client._base import Call

    with open_client() as client:
        path = f"/garden/keys/{quote(key, safe='')}"
        gone = client._call(Call("DELETE", path, name="keys"), KeyInfo, None)
    click.echo(f"Revoked key {gone.id} ({gone.name})", err=True)
