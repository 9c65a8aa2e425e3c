"""``garden usage`` and ``garden bench``: what the garden did, and how fast it does it.

``usage`` asks the running gateway (``GET /garden/usage``) rather than opening the
database itself: the gateway owns the database settings (a PostgreSQL password stays on
the server), writes its queued records first so the summary is current, and the same
command works against a remote gateway. ``bench`` measures through the running gateway.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
from pydantic import BaseModel

from modelgarden.cli.common import fail, handles_errors, open_client, table

#: Exit status of ``garden bench`` when a figure regressed beyond the threshold.
REGRESSION_EXIT = 3


class UsageSummary(BaseModel):
    """The answer of ``GET /garden/usage``."""

    since: float
    until: float | None = None
    by: list[str]
    rows: list[dict[str, Any]]


@click.command()
@click.option("--since", default="30d", show_default=True, help="7d, 24h, or a date (UTC).")
@click.option("--until", default=None, help="End of the period (same forms as --since).")
@click.option(
    "--by",
    default="day,model,key",
    show_default=True,
    help="Group by day, model, key, backend, api.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handles_errors
def usage(since: str, until: str | None, by: str, as_json: bool) -> None:
    """Summarise requests and tokens by model, key and day."""
    from modelgarden.client._base import Call

    params = {"since": since, "by": by} | ({"until": until} if until else {})
    with open_client() as client:
        call = Call("GET", f"/garden/usage?{urlencode(params)}", name="usage")
        result = client._call(call, UsageSummary, None)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    labels = {"key": "KEY", "day": "DAY", "model": "MODEL", "backend": "BACKEND", "api": "API"}
    rows = [[labels[g] for g in result.by] + ["REQUESTS", "ERRORS", "TOKENS IN", "TOKENS OUT"]]
    for row in result.rows:
        rows.append(
            [str(row[g] if row[g] not in (None, "") else "-") for g in result.by]
            + [str(row[k]) for k in ("requests", "errors", "prompt_tokens", "completion_tokens")]
        )
    if len(rows) == 1:
        click.echo("no requests in this period")
        return
    table(rows)


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        levels = []
    if not levels or any(n < 1 or n > 256 for n in levels):
        raise click.BadParameter("expected numbers from 1 to 256, e.g. 1,4,8")
    return levels


@click.command()
@click.argument("model")
@click.option("-c", "--concurrency", default="1,2,4", show_default=True, help="Levels, e.g. 1,4.")
@click.option("-n", "--requests", default=8, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--tokens", default=64, show_default=True, type=click.IntRange(1, 8192))
@click.option("--prompt", default=None, help="The prompt (default: counting in words).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the result as JSON.")
@click.option("--baseline", type=click.Path(path_type=Path), help="A saved result to compare to.")
@click.option(
    "--threshold", default=0.2, show_default=True, type=click.FloatRange(0, 10),
    help="Fraction by which a figure may get worse before it is a regression.",
)  # fmt: skip
@handles_errors
def bench(
    model: str,
    concurrency: str,
    requests: int,
    tokens: int,
    prompt: str | None,
    output: Path | None,
    baseline: Path | None,
    threshold: float,
) -> None:
    """Measure latency, time to first token and tokens/s of MODEL through the gateway.

    With --baseline, exits with status 3 when a figure is worse by more than --threshold.
    """
    from modelgarden.bench import PROMPT, BenchError, compare, measure
    from modelgarden.bench import table as bench_table

    levels = _levels(concurrency)
    try:
        before = json.loads(baseline.read_text()) if baseline is not None else None
    except (OSError, ValueError) as exc:
        fail(f"cannot read baseline {baseline}: {exc}")
    with open_client() as client:
        url = client.base_url
    try:
        result = asyncio.run(measure(url, model, levels, requests, tokens, prompt or PROMPT))
        changes = compare(result, before, threshold) if before is not None else []
    except BenchError as exc:
        fail(str(exc))
    table(bench_table(result))
    if output is not None:
        output.write_text(json.dumps({**result, "comparison": changes}, indent=2) + "\n")
    if before is None:
        return
    click.echo()
    table(_comparison(changes))
    worse = [c for c in changes if c["regression"]]
    if worse:
        click.echo(f"{len(worse)} regression(s) beyond {threshold:.0%}", err=True)
        sys.exit(REGRESSION_EXIT)
    click.echo(f"no regression beyond {threshold:.0%}")


def _comparison(changes: list[dict[str, Any]]) -> list[list[str]]:
    rows = [["CONCURRENCY", "FIGURE", "BASELINE", "NOW", "CHANGE", ""]]
    for c in changes:
        mark = "REGRESSION" if c["regression"] else ""
        rows.append(
            [str(c["concurrency"]), c["figure"], f"{c['baseline']:g}", f"{c['current']:g}",
             f"{c['change']:+.1%}", mark]
        )  # fmt: skip
    return rows
