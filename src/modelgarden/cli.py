"""The ``garden`` command: the verbs people know from ``ollama``, over the HTTP client.

Every command but ``serve`` talks to a running server (``GARDEN_HOST``/``OLLAMA_HOST``,
default ``127.0.0.1:11434``). Failures print one line, ``Error: ...``, and exit 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelgarden import __version__
from modelgarden.client import (
    Client,
    ClientError,
    ClientOptions,
    ProgressResponse,
    RetryPolicy,
    Unavailable,
)
from modelgarden.wire.ollama import ChatResponse

if TYPE_CHECKING:
    from modelgarden.config import EnvFile, Settings

F = TypeVar("F", bound=Callable[..., Any])


def _client() -> Client:
    """A client for the CLI: one try, so a missing server is reported at once."""
    return Client(options=ClientOptions(retry=RetryPolicy(max_retries=0)))


def _fail(message: str) -> None:
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
            client = _client()
            _fail(
                f"could not connect to a running server at {client.base_url} "
                "(start one with `garden serve`)"
            )
        except (ClientError, ConfigError) as exc:
            _fail(str(exc))
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="garden")
def main() -> None:
    """modelgarden: a drop-in Ollama and OpenAI-compatible model gateway."""


_ENV_FILE_HELP = ".env file to read (default ./.env when present; env GARDEN_ENV_FILE)."


def _settings(
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


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1:11434; env OLLAMA_HOST).")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), help="Models folder.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="garden.toml path.")
@click.option("--env-file", type=click.Path(path_type=Path), help=_ENV_FILE_HELP)
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Listen beyond loopback even with no API key (anyone may use and manage every model).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Processes sharing the port (default 1; env GARDEN_WORKERS): more relay remote "
    "backends' requests on more cores.",
)
@handles_errors
def serve(
    host: str | None,
    models_dir: Path | None,
    config_file: Path | None,
    env_file: Path | None,
    insecure: bool | None,
    workers: int | None,
) -> None:
    """Start the gateway (serves the default model smollm2:135m out of the box)."""
    from modelgarden.server import serve as run_server

    settings, found, env = _settings(
        config_file, env_file, host=host, models_dir=models_dir, insecure=insecure, workers=workers
    )
    run_server(settings, found, env.path if env is not None else None)


@main.command()
@click.option("--models", "models_dir", type=click.Path(path_type=Path), help="Models folder.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="garden.toml path.")
@click.option("--env-file", type=click.Path(path_type=Path), help=_ENV_FILE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def doctor(
    models_dir: Path | None, config_file: Path | None, env_file: Path | None, as_json: bool
) -> None:
    """This machine, the installed models' memory needs and which fit, and what to pull."""
    import orjson
    from rich.console import Console

    from modelgarden.doctor import render, report

    settings, _, _ = _settings(config_file, env_file, models_dir=models_dir)
    data = report(settings)
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        render(data, Console())


@main.command("list")
@handles_errors
def list_models() -> None:
    """List installed models."""
    with _client() as client:
        models = client.list().models
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    rows += [[m.name, m.digest[:12], human_size(m.size), human_ago(m.modified_at)] for m in models]
    table(rows)


main.add_command(list_models, "ls")


@main.command()
@handles_errors
def ps() -> None:
    """List models loaded in memory."""
    with _client() as client:
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


@main.command()
@click.argument("model")
@click.option("--modelfile", "part", flag_value="modelfile", help="Show the Modelfile.")
@click.option("--parameters", "part", flag_value="parameters", help="Show the parameters.")
@click.option("--template", "part", flag_value="template", help="Show the template.")
@click.option("--system", "part", flag_value="system", help="Show the system prompt.")
@click.option("--license", "part", flag_value="license", help="Show the license.")
@handles_errors
def show(model: str, part: str | None) -> None:
    """Show information about a model."""
    with _client() as client:
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


@main.command()
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A GGUF file, or a Modelfile whose FROM names a GGUF file or a model.",
)
@handles_errors
def create(name: str, path: Path) -> None:
    """Create a model from a GGUF file or a Modelfile."""
    from modelgarden.cli_create import create_request

    with _client() as client:
        request = create_request(client, path)
        for record in client.create(name, **request):
            click.echo(record.status, err=True)


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use plain HTTP for a registry named by host.")
@handles_errors
def pull(model: str, insecure: bool) -> None:
    """Pull a model from a registry, or a GGUF from Hugging Face (hf.co/USER/REPO:QUANT)."""
    with _client() as client:
        show_progress(client.pull(model, insecure=insecure, stream=True))


@main.command()
@click.argument("model")
@click.option("--insecure", is_flag=True, help="Use plain HTTP for a registry named by host.")
@handles_errors
def push(model: str, insecure: bool) -> None:
    """Push a model to the registry its name points at."""
    from modelgarden.client._base import Call

    body = {"model": model, "insecure": insecure, "stream": True}
    with _client() as client:  # the client has no push method: send the call it would send
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


@main.command("rm")
@click.argument("models", nargs=-1, required=True)
@handles_errors
def rm(models: tuple[str, ...]) -> None:
    """Remove models."""
    with _client() as client:
        for model in models:
            client.delete(model)
            click.echo(f"deleted '{model}'")


@main.command("cp")
@click.argument("source")
@click.argument("destination")
@handles_errors
def cp(source: str, destination: str) -> None:
    """Copy a model under another name."""
    with _client() as client:
        client.copy(source, destination)
    click.echo(f"copied '{source}' to '{destination}'")


@main.command()
@click.argument("model")
@handles_errors
def stop(model: str) -> None:
    """Unload a model from memory."""
    with _client() as client:
        client.generate(model, "", keep_alive=0)


@main.command()
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
    with _client() as client:
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


from modelgarden.cli_keys import keys  # noqa: E402  (they use the helpers above)
from modelgarden.cli_telemetry import bench, usage  # noqa: E402

main.add_command(usage)
main.add_command(bench)
main.add_command(keys)

if __name__ == "__main__":
    main()
