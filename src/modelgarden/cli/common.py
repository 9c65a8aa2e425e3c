"""What every ``garden`` verb shares: the client it talks through, one-line errors, and
Ollama's way of printing sizes, times and tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelgarden.client import Client, ClientError, ClientOptions, RetryPolicy, Unavailable

if TYPE_CHECKING:
    from modelgarden.config import EnvFile, Settings

F = TypeVar("F", bound=Callable[..., Any])

#: ``--env-file``, for the verbs that read the settings (``serve``, ``doctor``, ``keys --local``).
ENV_FILE_OPTION = click.option(
    "--env-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=".env file to read (default ./.env when present; env GARDEN_ENV_FILE).",
)


def read_settings(
    config_file: Path | None, env_file: Path | None, **overrides: Any
) -> tuple[Settings, Path | None, EnvFile | None]:
    """The settings from every source (README, Settings), the ``garden.toml`` and ``.env``
    files they came from; the file's other variables are put in the environment."""
    from modelgarden.config import find_config_file, find_env_file, load_settings, read_env_file

    env_path = find_env_file(env_file)
    env = read_env_file(env_path) if env_path is not None else None
    found = find_config_file(config_file, env)
    settings = load_settings(found, env, **overrides)
    if env is not None:
        env.export()
    return settings, found, env


def open_client() -> Client:
    """A client for the CLI: one try, so a missing server is reported at once."""
    return Client(options=ClientOptions(retry=RetryPolicy(max_retries=0)))


def fail(message: str) -> None:
    """Print ``Error: message`` on stderr and exit with status 1."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def handles_errors(fn: F) -> F:
    """Turn client, setting, database and input errors into one line on stderr and exit
    status 1 (a verb that writes the database itself, ``--local``, meets the last three)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError

        from modelgarden.config import ConfigError
        from modelgarden.db import DatabaseError
        from modelgarden.errors import GardenError

        try:
            return fn(*args, **kwargs)
        except Unavailable:
            fail(
                f"could not connect to a running server at {open_client().base_url} "
                "(start one with `garden serve`)"
            )
        except (ClientError, ConfigError, DatabaseError, GardenError) as exc:
            fail(str(exc))
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            fail(f"{where}: {first['msg']}" if where else str(first["msg"]))
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def human_size(n: float) -> str:
    """Bytes as Ollama prints them (``98 MB``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_ago(when: datetime) -> str:
    """A past moment as ``5 minutes ago``."""
    seconds = max((datetime.now(UTC) - when).total_seconds(), 0)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "Less than a minute ago"


def human_until(when: datetime) -> str:
    """A future moment as ``4 minutes from now`` (``Forever`` for far ones)."""
    seconds = (when - datetime.now(UTC)).total_seconds()
    if seconds > 100 * 365 * 86400:
        return "Forever"
    if seconds < 60:
        return "Less than a minute from now"
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} from now"
    return "Now"


def table(rows: list[list[str]]) -> None:
    """Print columns padded like ``ollama list``."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("    ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
