"""Who may call what: API keys on every route that needs one, checked at the edge.

Routes fall in three classes (:func:`required`):

- **public**: ``/``, ``/health``, ``/ready``, ``/api/version``, ``/api/status``, the
  console's static files,
  the API documentation; they show no model, prompt or key;
- **user**: inference (``/api/generate``, ``/api/chat``, ``/api/embed``, ``/api/embeddings``,
  the ``/v1`` completions, embeddings, responses and messages, ``/query``) and listing
  (``/api/tags``, ``/api/show``, ``/api/ps``, ``/v1/models``, the console's
  ``/garden/models``), on the models the key's globs allow;
- **admin**: everything else — pull, push, create, copy, delete, blobs, deploy, undeploy,
  status, metrics, usage, backends, passthrough to upstreams, and key management.
  A route not listed is admin-only, so a new route is never open by mistake.

With no key in the database the gateway is open (it then listens on loopback only, unless
started with ``--insecure``; a gateway that listens beyond loopback refuses every request
if its keys are deleted while it runs). Once a key exists it fails closed: a request
without one gets 401, a user key on an admin route 403, a key over its limits 429 with
``Retry-After``, and when no key is usable any more (all revoked or expired) every request
gets a 401 that says how to recover on the gateway's machine. The key is read
from ``Authorization: Bearer`` (what the ``openai`` and ``ollama`` clients send) or
``X-API-Key`` (what the ``anthropic`` clients and Claude Code send); it is never passed on to
an upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from modelgarden.errors import Forbidden, GardenError, Unauthorized
from modelgarden.security.keys import RECOVER, Key, KeyRing

Need = Literal["public", "user", "admin"]
#: How a refusal is answered: the edge renders it in the request's API shape
#: (:func:`modelgarden.api.errors.send_error`); this layer only decides.
Reject = Callable[[Scope, Receive, Send, GardenError], Awaitable[None]]
M = TypeVar("M")
#: Where the request's key is put in the ASGI scope for the routes below.
KEY = "garden.key"

PUBLIC_EXACT = frozenset({"/", "/health", "/ready", "/api/version", "/api/status", "/favicon.ico"})
PUBLIC_PREFIXES = ("/ui", "/docs", "/openapi.json")
INFERENCE = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/query",
    }
)
USER_READS = frozenset({"/api/tags", "/api/ps", "/v1/models", "/garden/models"})
USER_PREFIXES = ("/v1/models/",)


def required(method: str, path: str) -> Need:
    """What a route needs: nothing, any key, or an admin key."""
    if method in ("GET", "HEAD") and (path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)):
        return "public"
    if method == "POST" and (path in INFERENCE or path == "/api/show"):
        return "user"
    if method in ("GET", "HEAD") and (path in USER_READS or path.startswith(USER_PREFIXES)):
        return "user"
    return "admin"


def secret_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request sends (``Authorization: Bearer`` or ``X-API-Key``)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class Auth:
    """Owns the decision to let a request in; wraps the routes with the :class:`KeyRing`."""

    def __init__(
        self, app: ASGIApp, keys: KeyRing, reject: Reject, *, exposed: bool = False
    ) -> None:
        self.app = app
        self.reject = reject
        self.keys = keys
        #: Listening beyond loopback without ``--insecure``: never open without keys.
        self.exposed = exposed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not (self.keys.enabled or self.exposed):
            await self.app(scope, receive, send)
            return
        need = required(scope["method"], scope["path"])
        if need == "public":
            await self.app(scope, receive, send)
            return
        if not self.keys.enabled:  # exposed, and its keys were deleted while it runs
            exc = Unauthorized(
                f"this gateway listens beyond loopback and has no API key: {RECOVER} "
                "(or restart it with --insecure)"
            )
            await self.reject(scope, receive, send, exc)
            return
        try:
            key = self._check(scope, need)
        except GardenError as exc:
            await self.reject(scope, receive, send, exc)
            return
        scope[KEY] = key
        if scope["path"] not in INFERENCE:
            await self.app(scope, receive, send)
            return
        try:
            lease = await self.keys.admit(key)
        except GardenError as exc:
            await self.reject(scope, receive, send, exc)
            return
        key.active += 1  # concurrent requests: held until the answer's last byte is sent
        try:
            await self.app(scope, receive, send)
        finally:
            key.active -= 1
            self.keys.release(key, lease)

    def _check(self, scope: Scope, need: Need) -> Key:
        secret = secret_of(scope["headers"])
        if secret is None:
            hint = "" if self.keys.any_usable else f" (no usable key is left: {RECOVER})"
            raise Unauthorized(
                f"this gateway needs an API key: send Authorization: Bearer <key>{hint}"
            )
        key = self.keys.find(secret)
        if key is None or not key.usable:
            reason = "invalid API key" if key is None else "API key has expired"
            if key is not None and key.revoked_at is not None:
                reason = "API key has been revoked"
            if not self.keys.any_usable:
                reason += f"; no usable key is left: {RECOVER}"
            raise Unauthorized(reason)
        if need == "admin" and key.scope != "admin":
            raise Forbidden(f"{scope['method']} {scope['path']} needs an admin key")
        return key


def key_of(scope: Scope) -> Key | None:
    """The request's key (``None`` when the gateway runs without keys)."""
    key: Key | None = scope.get(KEY)
    return key


def visible(scope: Scope, entries: list[M]) -> list[M]:
    """The listing entries (anything with a ``name``) the request's key may see."""
    key = key_of(scope)
    if key is None or not key.models:
        return entries
    return [e for e in entries if key.allows(str(getattr(e, "name", "")))]


def check_model(scope: Scope, model: str) -> None:
    """:class:`Forbidden` when the request's key may not use this model."""
    key = key_of(scope)
    if key is not None and not key.allows(model):
        raise Forbidden(f"this API key may not use model {model!r}")
