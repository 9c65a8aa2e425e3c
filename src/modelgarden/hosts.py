"""Where a gateway listens: Ollama's ``OLLAMA_HOST`` address syntax and its defaults.

Shared by the server's settings and the client (``modelgarden.client``), so it imports
nothing but the standard library.
"""

from __future__ import annotations

DEFAULT_PORT = 11434
DEFAULT_HOST = "127.0.0.1"


def parse_host(value: str) -> tuple[str, int]:
    """Parse ``OLLAMA_HOST``-style addresses: ``host``, ``host:port``, ``:port``, URLs."""
    text = value.strip()
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
    text = text.split("/", 1)[0]
    if not text:
        return DEFAULT_HOST, DEFAULT_PORT
    host, port_text = text, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in host {value!r}")
        host, rest = text[1:end], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":", 1)
    host = host or DEFAULT_HOST
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {port_text!r}")
    return host, int(port_text)
