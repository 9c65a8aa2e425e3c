"""The ``garden`` group, ``serve`` and ``doctor`` (the verbs that read the settings), and
the registration of every other verb from its module."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from modelgarden import __version__
from modelgarden.cli import keys, models, run, telemetry
from modelgarden.cli.common import ENV_FILE_OPTION, handles_errors, read_settings

if TYPE_CHECKING:
    pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", prog_name="garden")
def main() -> None:
    """modelgarden: a drop-in Ollama and OpenAI-compatible model gateway."""


@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1:11434; env OLLAMA_HOST).")
@click.option("--models", "models_dir", type=click.Path(path_type=Path), help="Models folder.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="garden.toml path.")
@ENV_FILE_OPTION
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

    settings, found, env = read_settings(
        config_file, env_file, host=host, models_dir=models_dir, insecure=insecure, workers=workers
    )
    run_server(settings, found, env.path if env is not None else None)


@main.command()
@click.option("--models", "models_dir", type=click.Path(path_type=Path), help="Models folder.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="garden.toml path.")
@ENV_FILE_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def doctor(
    models_dir: Path | None, config_file: Path | None, env_file: Path | None, as_json: bool
) -> None:
    """This machine, the installed models' memory needs and which fit, and what to pull."""
    import orjson
    from rich.console import Console

    from modelgarden.doctor import render, report

    settings, _, _ = read_settings(config_file, env_file, models_dir=models_dir)
    data = report(settings)
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        render(data, Console())


for verb in (*models.COMMANDS, run.run, keys.keys, telemetry.usage, telemetry.bench):
    main.add_command(verb)
main.add_command(models.list_models, "ls")
