"""The edge's browser and size rules, checked before any route runs.

- **Host** (DNS rebinding): when the gateway listens on a loopback address, a request whose
  ``Host`` names another site is refused (403), as Ollama does: a page on ``evil.example``
  whose name was re-pointed at 127.0.0.1 cannot reach the models. Loopback, private and
  this machine's own names, and ``*.localhost``/``*.local``/``*.internal``, are allowed.
- **CORS**: origins allowed by ``OLLAMA_ORIGINS`` (globs, comma-separated, added to the
  default loopback and app origins, as Ollama) get CORS headers and preflight answers.
- **Cross-site writes**: a state-changing request (POST, PUT, PATCH, DELETE) from a page
  of another origin that is not allowed is refused (403) before it runs, so a web page
  cannot pull, delete or deploy models through a visitor's browser. Same-origin requests
  (the console at ``/ui``) always pass.
- **Size**: a body larger than ``max_body_size`` is refused (413), from its
  ``Content-Length`` when it has one, or as it streams in when it does not. Blob uploads
  (``/api/blobs/``, model weights) are exempt.

Requests without an ``Origin`` header (every non-browser client) pay one scan of their
headers and nothing else.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modelgarden.api.errors import send_error
from modelgarden.errors import Forbidden, GardenError, PayloadTooLarge

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "0.0.0.0", "[::1]")
DEFAULT_ORIGINS = (
    *(f"{scheme}://{name}" for scheme in ("http", "https") for name in LOOPBACK_NAMES),
    *(f"{scheme}://{name}:*" for scheme in ("http", "https") for name in LOOPBACK_NAMES),
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)
LOCAL_SUFFIXES = (".localhost", ".local", ".internal")
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOW_METHODS = b"GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
UNLIMITED_PREFIXES = ("/api/blobs/",)


def origin_pattern(origins: Iterable[str]) -> re.Pattern[str]:
    """One regular expression for origin globs (``*`` matches anything)."""
    parts = [fnmatch.translate(o.strip().lower().rstrip("/")) for o in origins if o.strip()]
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)")


def is_loopback_bind(host: str) -> bool:
    """Whether a listen address is loopback only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_host(host: str, own_names: frozenset[str]) -> bool:
    """Whether a ``Host`` header may reach a loopback-bound gateway."""
    name = host.lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if not name or name == "localhost" or name in own_names or name.endswith(LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def _own_names() -> frozenset[str]:
    names = {socket.gethostname().lower()}
    names.add(socket.getfqdn().lower())
    return frozenset(names)


class Guard:
    """Owns the host, origin and body-size rules; wraps the app the server runs."""

    def __init__(
        self, app: ASGIApp, *, bind_host: str, origins: Iterable[str], max_body: int
    ) -> None:
        self.app = app
        self.check_host = is_loopback_bind(bind_host)
        self.own_names = _own_names()
        self.origins = origin_pattern([*DEFAULT_ORIGINS, *origins])
        self.max_body = max_body
        #: Host headers already judged (a client sends the same one every time).
        self._hosts: dict[bytes, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = b""
        length = -1
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if self.check_host and not self._host_ok(host):
            await send_error(scope, receive, send, Forbidden("host not allowed"))
            return
        if length > self.max_body and not scope["path"].startswith(UNLIMITED_PREFIXES):
            await send_error(scope, receive, send, self._too_large())
            return
        if length < 0 and scope["method"] in WRITES:
            receive = self._counting(receive, scope["path"])
        if origin:
            await self._cross_origin(scope, receive, send, origin.decode("latin-1"), host)
            return
        await self.app(scope, receive, send)

    def _host_ok(self, host: bytes) -> bool:
        ok = self._hosts.get(host)
        if ok is None:
            ok = allowed_host(host.decode("latin-1"), self.own_names)
            if len(self._hosts) >= 1024:
                self._hosts.clear()
            self._hosts[host] = ok
        return ok

    def _too_large(self) -> GardenError:
        return PayloadTooLarge(f"request body is larger than the limit of {self.max_body} bytes")

    def _counting(self, receive: Receive, path: str) -> Receive:
        """A body without a length: refuse it once it grows past the limit."""
        if path.startswith(UNLIMITED_PREFIXES):
            return receive
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise self._too_large()
            return message

        return counted

    async def _cross_origin(
        self, scope: Scope, receive: Receive, send: Send, origin: str, host: bytes
    ) -> None:
        same = urlsplit(origin).netloc.lower() == host.decode("latin-1").lower()
        allowed = same or bool(self.origins.fullmatch(origin.lower()))
        method = scope["method"]
        preflight = method == "OPTIONS" and any(
            n == b"access-control-request-method" for n, _ in scope["headers"]
        )
        if not allowed:
            if preflight or method in WRITES:
                await send_error(scope, receive, send, Forbidden(f"origin {origin} not allowed"))
            else:  # a read: answered, but the browser keeps it from the page
                await self.app(scope, receive, send)
            return
        cors = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
        if preflight:
            asked = next(
                (v for n, v in scope["headers"] if n == b"access-control-request-headers"), b""
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [
                        *cors,
                        (b"access-control-allow-methods", ALLOW_METHODS),
                        (b"access-control-allow-headers", asked or b"*"),
                        (b"access-control-max-age", b"600"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *cors]}
            await send(message)

        await self.app(scope, receive, with_cors)
