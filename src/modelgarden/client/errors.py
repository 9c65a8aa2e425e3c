"""Errors the client raises, each carrying the HTTP status and the server's message.

::

    ClientError
    ├── ResponseError            the server answered with an error status
    │   ├── BadRequest           400
    │   ├── Unauthorized         401 / 403
    │   ├── ModelNotFound        404
    │   ├── RateLimited          429
    │   ├── Overloaded           503
    │   └── ServerError          other 5xx
    ├── StreamError              an error record arrived after the stream began
    │   └── StreamInterrupted    the connection broke after the stream delivered data
    ├── RequestTimeout           the server did not answer within the call's timeout
    ├── InvalidResponse          the answer could not be read as the expected type
    └── Unavailable              no server could be reached
        └── CircuitOpen          every base URL's breaker for this endpoint is open
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every client error."""

    def __init__(self, message: str, status_code: int = -1) -> None:
        super().__init__(message)
        self.error = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.error


class ResponseError(ClientError):
    """The server answered with an error status."""

    retry_after: float | None = None


class BadRequest(ResponseError):
    """400: the request was not valid."""


class Unauthorized(ResponseError):
    """401/403: missing or insufficient credentials."""


class ModelNotFound(ResponseError):
    """404: the model (or route) does not exist."""


class RateLimited(ResponseError):
    """429: too many requests for this key."""


class Overloaded(ResponseError):
    """503: the server's queue is full."""


class ServerError(ResponseError):
    """Any other 5xx answer."""


class StreamError(ClientError):
    """The stream began and then ended with an error record."""


class StreamInterrupted(StreamError):
    """The connection broke after the stream delivered data; it is never retried."""


class RequestTimeout(ClientError):
    """The server did not answer (or stopped sending) within the call's timeout."""


class InvalidResponse(ClientError):
    """The server's answer could not be read as the expected type (not JSON, wrong shape)."""


class Unavailable(ClientError, ConnectionError):
    """No server could be reached (also a ``ConnectionError``, which ``ollama`` raises)."""


class CircuitOpen(Unavailable):
    """Failing fast: the circuit breaker of every base URL for this endpoint is open.

    ``retry_in`` is how many seconds remain until the soonest breaker lets a probe through.
    """

    def __init__(self, message: str, retry_in: float | None = None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


def for_status(status: int, message: str, retry_after: float | None = None) -> ResponseError:
    """The typed error for an HTTP status."""
    cls: type[ResponseError]
    if status == 400:
        cls = BadRequest
    elif status in (401, 403):
        cls = Unauthorized
    elif status == 404:
        cls = ModelNotFound
    elif status == 429:
        cls = RateLimited
    elif status == 503:
        cls = Overloaded
    else:
        cls = ServerError if status >= 500 else ResponseError
    err = cls(message, status)
    err.retry_after = retry_after
    return err
