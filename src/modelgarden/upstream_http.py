"""HTTP plumbing shared by every backend that is reached over HTTP (runners included).

One place maps an upstream's failures to :mod:`modelgarden.errors`: refused connections,
error statuses with their messages, and streams that break off half-way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson

from modelgarden.errors import (
    BackendUnavailable,
    BadRequest,
    GardenError,
    NotFound,
    Overloaded,
    RateLimited,
    Unauthorized,
    message_of,
)

#: Headers that belong to one connection, never relayed across a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip

_BY_STATUS: dict[int, type[GardenError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    429: RateLimited,
    503: Overloaded,
    529: Overloaded,  # Anthropic's overloaded_error
}


#: Seconds an idle pooled upstream connection is kept for reuse (aiohttp's own default).
#: Long enough for a conversation's quick turns and a burst's tail; short enough that the
#: connections a burst of concurrent streams opened are closed (aiohttp closes each one
#: between one and two of these periods after its last use) instead of lingering for minutes.
KEEPALIVE = 15.0


def new_session(
    *, connect_timeout: float = 10.0, keepalive: float = KEEPALIVE
) -> aiohttp.ClientSession:
    """A client session tuned for relaying: pooled keep-alive, no body decoding, no cookie
    jar (an upstream's cookies are never kept, so one client's never reach another's
    requests; and no jar is consulted per request)."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=keepalive, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout, sock_read=None)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )


def error_message(raw: bytes) -> str:
    """The message inside an error body in either family's shape, else the raw text."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace").strip()[:500] or "no message"
    if isinstance(data, dict):
        return message_of(data.get("error", data.get("detail", data)))
    return str(data)


def status_error(
    status: int, raw: bytes, fallback: type[GardenError] = BackendUnavailable
) -> GardenError:
    """The typed error for an upstream's non-200 answer."""
    cls = _BY_STATUS.get(status, fallback)
    return cls(error_message(raw))


async def iter_body(
    response: aiohttp.ClientResponse,
    broken: type[GardenError] = BackendUnavailable,
    what: str = "backend",
    idle: float | None = None,
) -> AsyncIterator[bytes]:
    """The upstream body as it arrives; a connection that breaks, or that stays silent for
    ``idle`` seconds, raises ``broken``."""
    complete = False
    loop = asyncio.get_running_loop()
    try:
        # One timeout scope, pushed back after every chunk: no task or timer per chunk.
        async with asyncio.timeout(None) as scope:
            while True:
                if idle is not None:
                    scope.reschedule(loop.time() + idle)
                chunk = await response.content.readany()
                if not chunk:
                    break
                scope.reschedule(None)
                yield chunk
        complete = True
    except TimeoutError:
        raise broken(f"{what} sent nothing for {idle:g}s mid-response") from None
    except (aiohttp.ClientError, ConnectionError) as exc:
        # A payload error is the connection closing before the answer's end; aiohttp's
        # own words for it (a chunked-encoding error) would mean nothing to a client.
        closed = isinstance(exc, aiohttp.ClientPayloadError)
        reason = "the connection closed" if closed else str(exc) or type(exc).__name__
        raise broken(f"{what} stopped answering mid-response: {reason}") from None
    finally:
        if complete:
            response.release()
        else:
            response.close()  # an abandoned stream closes the connection: the upstream stops
