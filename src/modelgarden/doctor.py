"""``garden doctor``: this machine, the installed models' memory needs, and what suits it.

The report is data first (:func:`report`, also what ``--json`` prints) and text second
(:func:`render`). It reads the model store directly, so it works with the server down.
"""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from modelgarden import __version__
from modelgarden.config import Settings
from modelgarden.lifecycle.memory import default_need, human_bytes
from modelgarden.recommend import memory_for_models, recommend
from modelgarden.resources import machine
from modelgarden.store.gguf import GGUFError
from modelgarden.store.store import ModelStore


def _server(settings: Settings) -> dict[str, Any] | None:
    host, port = settings.bind
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{port}"
    try:
        version = httpx.get(f"{url}/api/version", timeout=1.0).json().get("version")
    except (httpx.HTTPError, ValueError):
        return None
    return {"url": url, "version": version}


def _models(store: ModelStore, settings: Settings, room: int) -> list[dict[str, Any]]:
    rows = []
    for model in store.installed():
        row: dict[str, Any] = {
            "name": model.name,
            "size": model.size,
            "parameter_size": model.details.get("parameter_size", ""),
            "quantization": model.details.get("quantization_level", ""),
        }
        try:
            info = store.gguf(model)
        except (GGUFError, OSError) as exc:
            rows.append({**row, "need": None, "fits": False, "problem": str(exc)})
            continue
        ctx, need = default_need(info, model.size, settings.context_length, settings.num_parallel)
        rows.append({**row, "context_length": ctx, "need": need, "fits": need <= room})
    return rows


def report(settings: Settings) -> dict[str, Any]:
    """Everything ``garden doctor`` prints, as JSON-ready data."""
    store = ModelStore(settings.models_dir)
    here = machine(settings.models_dir, settings.llama_server)
    room = memory_for_models(here)
    if settings.memory_limit is not None:
        room = min(room, settings.memory_limit)
    models = _models(store, settings, room)
    installed = {m["name"] for m in models}
    return {
        "version": __version__,
        "machine": here.to_dict(),
        "memory_for_models": room,
        "models_dir": str(settings.models_dir),
        "models": models,
        "recommended": [
            {
                "name": c.name,
                "parameters": c.parameters,
                "size": c.size,
                "need": c.need,
                "tokens_per_second": round(c.tokens_per_second(here), 1),
                "note": c.note,
                "installed": c.name in installed,
            }
            for c in recommend(here)
        ],
        "server": _server(settings),
    }


def _machine_lines(m: dict[str, Any], room: int) -> list[str]:
    lines = [
        f"System   {m['system']}",
        f"CPU      {m['cpu_model']} ({m['cpu_count']} cores)",
        f"Memory   {human_bytes(m['ram_available'])} free of {human_bytes(m['ram_total'])}"
        f"; models may use {human_bytes(room)}",
        f"Disk     {human_bytes(m['disk_free'])} free of {human_bytes(m['disk_total'])}"
        f" at {m['disk_path']}",
    ]
    gpus = m["gpus"] or []
    if not gpus:
        lines.append("GPU      none found (NVIDIA driver not present); models run on the CPU")
    for gpu in gpus:
        lines.append(
            f"GPU {gpu['index']}    {gpu['name']}: {human_bytes(gpu['memory_free'])} free of "
            f"{human_bytes(gpu['memory_total'])}"
            + ("" if m["gpu_offload"] else " (this llama.cpp build runs on the CPU)")
        )
    return lines


def render(data: dict[str, Any], console: Console) -> None:
    """Print the report for people."""
    for line in _machine_lines(data["machine"], data["memory_for_models"]):
        console.print(line, highlight=False)
    server = data["server"]
    console.print(
        f"Server   running at {server['url']} (version {server['version']})"
        if server
        else "Server   not running (start one with `garden serve`)",
        highlight=False,
    )
    installed = Table(title=f"Installed models ({data['models_dir']})", title_justify="left")
    for column in ("NAME", "SIZE", "PARAMS", "QUANT", "CONTEXT", "MEMORY NEED", "FITS"):
        installed.add_column(column)
    for row in data["models"]:
        need = row.get("need")
        installed.add_row(
            row["name"],
            human_bytes(row["size"]),
            row["parameter_size"],
            row["quantization"],
            str(row.get("context_length", "")),
            human_bytes(need) if need is not None else row.get("problem", "?"),
            "yes" if row["fits"] else "[red]no[/red]",
        )
    console.print(installed)
    if not data["models"]:
        console.print("(none yet: `garden serve` installs smollm2:135m into a new store)")
    rec = Table(title="Recommended for this machine (rough estimates)", title_justify="left")
    for column in ("MODEL", "PARAMS", "DOWNLOAD", "MEMORY", "TOKENS/S", "GOOD FOR"):
        rec.add_column(column)
    for c in data["recommended"]:
        name = c["name"] + (" (installed)" if c["installed"] else "")
        rec.add_row(
            name,
            c["parameters"],
            human_bytes(c["size"]),
            human_bytes(c["need"]),
            f"~{c['tokens_per_second']:g}",
            c["note"],
        )
    console.print(rec)
    if data["recommended"]:
        console.print(f"Get one with: garden pull {data['recommended'][0]['name']}")
