"""``garden run``: answer one prompt, or chat interactively."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click

from modelgarden.cli.common import handles_errors, open_client
from modelgarden.client import Client
from modelgarden.wire.ollama import ChatResponse


@click.command()
@click.argument("model")
@click.argument("prompt", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["json"]), help="Answer in JSON.")
@click.option("--keepalive", help="How long to keep the model loaded (e.g. 5m).")
@click.option("--verbose", is_flag=True, help="Print timings after each answer.")
@handles_errors
def run(
    model: str, prompt: tuple[str, ...], fmt: str | None, keepalive: str | None, verbose: bool
) -> None:
    """Chat with a model: answer PROMPT, or talk interactively when no prompt is given."""
    text = " ".join(prompt)
    if not text and not sys.stdin.isatty():
        text = sys.stdin.read()
    with open_client() as client:
        if text:
            _answer(client, model, [{"role": "user", "content": text}], fmt, keepalive, verbose)
            return
        _interactive(client, model, fmt, keepalive, verbose)


def _answer(
    client: Client,
    model: str,
    messages: list[dict[str, Any]],
    fmt: str | None,
    keepalive: str | None,
    verbose: bool,
) -> str:
    chunks: Iterator[ChatResponse] = client.chat(
        model, messages, stream=True, format=fmt, keep_alive=keepalive
    )
    parts: list[str] = []
    last: ChatResponse | None = None
    for chunk in chunks:
        piece = chunk.message.content or ""
        parts.append(piece)
        click.echo(piece, nl=False)
        last = chunk
    click.echo()
    if verbose and last is not None:
        _stats(last)
    return "".join(parts)


def _stats(r: ChatResponse) -> None:
    def sec(ns: int | None) -> str:
        return f"{(ns or 0) / 1e9:.3f}s"

    rate = (r.eval_count or 0) / max((r.eval_duration or 1) / 1e9, 1e-9)
    for line in (
        f"total duration:       {sec(r.total_duration)}",
        f"load duration:        {sec(r.load_duration)}",
        f"prompt eval count:    {r.prompt_eval_count} token(s)",
        f"prompt eval duration: {sec(r.prompt_eval_duration)}",
        f"eval count:           {r.eval_count} token(s)",
        f"eval duration:        {sec(r.eval_duration)}",
        f"eval rate:            {rate:.2f} tokens/s",
    ):
        click.echo(line, err=True)


def _interactive(
    client: Client, model: str, fmt: str | None, keepalive: str | None, verbose: bool
) -> None:
    client.chat(model, [], keep_alive=keepalive)  # load now; fails early if unknown
    messages: list[dict[str, Any]] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            click.echo()
            return
        if line.strip() in ("/bye", "/exit"):
            return
        if line.strip() == "/clear":
            messages.clear()
            click.echo("Cleared session context")
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        answer = _answer(client, model, messages, fmt, keepalive, verbose)
        messages.append({"role": "assistant", "content": answer})
        click.echo()
