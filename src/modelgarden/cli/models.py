"""The verbs over the model store and the loaded models: ``list``, ``ps``, ``show``,
``create``, ``pull``, ``push``, ``rm``, ``cp``, ``stop``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import click

from modelgarden.cli.common import (
    handles_errors,
    human_ago,
    human_size,
    human_until,
    open_client,
    table,
)
from modelgarden.client import ProgressResponse


@click.command("list")
@handles_errors
def list_models() -> None:
    """List installed models."""
    with open_client() as client:
        models = client.list().models
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m.name, m.digest[:12], human_size(m.size), human_ago(m.modified_at)] for m in models]
    table(rows)


@click.command()
@handles_errors
def ps() -> None:
    """List models loaded in memory."""
    with open_client() as client:
        models = client.ps().models
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        processor = "100% GPU" if m.size_vram >= m.size > 0 else "100% CPU"
        rows.append(
            [
                m.name,
                m.digest[:12],
                human_size(m.size),
                processor,
                str(m.context_length),
                human_until(m.expires_at),
            ]
        )
    table(rows)


@click.command()
@click.argument("model")
@click.option("--modelfile", "part", flag_value="modelfile", help="Show the Modelfile.")
@click.option("--parameters", "part", flag_value="parameters", help="Show the parameters.")
@click.option("--template", "part", flag_value="template", help="Show the template.")
@click.option("--system", "part", flag_value="system", help="Show the system prompt.")
@click.option("--license", "part", flag_value="license", help="Show the license.")
@handles_errors
def show(model: str, part: str | None) -> None:
    """Show information about a model."""
    with open_client() as client:
        info = client.show(model)
    if part:
        click.echo(getattr(info, part))
        return
    d = info.details
    click.echo("  Model")
    for label, value in (
        ("architecture", d.family),
        ("parameters", d.parameter_size),
        ("context length", str(info.model_info.get(f"{d.family}.context_length", ""))),
        ("embedding length", str(info.model_info.get(f"{d.family}.embedding_length", ""))),
        ("quantization", d.quantization_level),
    ):
        click.echo(f"    {label:<20}{value}")
    click.echo("\n  Capabilities")
    for cap in info.capabilities:
        click.echo(f"    {cap}")
    if info.parameters:
        click.echo("\n  Parameters")
        for line in info.parameters.splitlines():
            click.echo(f"    {line}")
    click.echo()


@click.command()
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A GGUF file, or a Modelfile whose FROM names a GGUF file or a model.",
)
@handles_errors
def create(name: str, path: Path) -> None:
    """Create a model from a GGUF file or a Modelfile."""
    from modelgarden.cli.create import create_request

    with open_client() as client:
        request = create_request(client, path)
        for record in client.create(name, **request):
            click.echo(record.status, err=True)


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use plain HTTP for a registry named by host.")
@handles_errors
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry, or a GGUF from Hugging Face (hf.co/USER/REPO:QUANT)."""
    with open_client() as client:
        show_progress(client.pull(model, insecure=insecure, stream=True))


@click.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use plain HTTP for a registry named by host.")
@handles_errors
def push(model: str, insecure: bool) -> None:
    """Push a model to the registry its name points at."""
    from modelgarden.client._base import Call

    body = {"model": model, "insecure": insecure, "stream": True}
    with open_client() as client:  # the client has no push method: send the call it would send
        call = Call("POST", "/api/push", body, stream=True, name="push")
        show_progress(client._stream(call, ProgressResponse, None))


def show_progress(records: Iterable[ProgressResponse]) -> None:
    """Ollama's progress display on stderr: status lines in order, and a bar per layer with
    its speed and time left. A failure ends the display before the error is printed."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True, highlight=False)
    columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
    progress: Progress | None = None
    bars: dict[str, TaskID] = {}
    try:
        for record in records:
            if not (record.digest and record.total):
                if progress is not None:  # the bars so far stay above the next status
                    progress.stop()
                    progress = None
                console.print(record.status)
                continue
            if progress is None:
                progress = Progress(TextColumn("{task.description}"), *columns, console=console)
                progress.start()
            done = record.completed or 0
            if record.digest in bars:
                progress.update(bars[record.digest], completed=done)
            else:
                bars[record.digest] = progress.add_task(
                    record.status, total=record.total, completed=done
                )
    finally:
        if progress is not None:
            progress.stop()


@click.command("rm")
@click.argument("models", nargs=-1, required=True)
@handles_errors
def rm(models: tuple[str, ...]) -> None:
    """Remove models."""
    with open_client() as client:
        for model in models:
            client.delete(model)
            click.echo(f"deleted '{model}'")


@click.command("cp")
@click.argument("source")
@click.argument("destination")
@handles_errors
def cp(source: str, destination: str) -> None:
    """Copy a model under another name."""
    with open_client() as client:
        client.copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@click.command()
@click.argument("model")
@handles_errors
def stop(model: str) -> None:
    """Unload a model from memory."""
    with open_client() as client:
        client.generate(model, "", keep_alive=0)


COMMANDS = (list_models, ps, show, create, pull, push, rm, cp, stop)
