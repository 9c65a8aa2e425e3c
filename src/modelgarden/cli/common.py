"""What every ``garden`` verb shares: the client it talks through, one-line errors, and
Ollama's way of printing sizes, times and tables."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from modelgarden.client import Client, ClientError, ClientOptions, RetryPolicy, Unavailable

F = TypeVar("F", bound=Callable[..., Any])


def open_client() -> Client:
    """A client for the CLI: one try, so a missing server is reported at once."""
    return Client(options=ClientOptions(retry=RetryPolicy(max_retries=0)))


def fail(message: str) -> None:
    """Print ``Error: message`` on stderr and exit with status 1."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def handles_errors(fn: F) -> F:
    """Turn client and setting errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from modelgarden.config import ConfigError

        try:
            return fn(*args, **kwargs)
        except Unavailable:
            fail(
                f"could not connect to a running server at {open_client().base_url} "
                "(start one with `garden serve`)"
            )
        except (ClientError, ConfigError) as exc:
            fail(str(exc))
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
