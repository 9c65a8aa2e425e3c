"""Durations as Ollama spells them: ``keep_alive`` values and ``OLLAMA_KEEP_ALIVE``.

Rules (Ollama's ``api.Duration``):

* a JSON number is seconds (fractions are truncated); a negative number means forever;
* a string is a Go duration (``"5m"``, ``"1h30m"``, ``"300ms"``, ``"-1m"``); a negative one
  means forever; a bare number in a string (``"300"``) is seconds, as ``OLLAMA_KEEP_ALIVE``
  accepts;
* anything else is an error.

``FOREVER`` (``math.inf``) stands for "never unload".
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

FOREVER = math.inf
#: The longest duration Go (and so Ollama) can hold, ~292 years, in seconds.
LONGEST = (2**63 - 1) / 1e9

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go duration string into seconds. Raises ``ValueError`` when malformed."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    while pos < len(s):
        match = _PART.match(s, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def _check_finite(value: float) -> None:
    if math.isnan(value):
        raise ValueError("keep_alive must not be NaN")
    if value == math.inf:
        raise ValueError("keep_alive must be finite (a negative value means forever)")


def parse_keep_alive(value: object) -> float:
    """Turn a ``keep_alive`` value into seconds; ``FOREVER`` for negative values.

    Raises ``ValueError`` with a message fit for the client when the value is not valid.
    """
    if isinstance(value, bool):
        raise ValueError(f"keep_alive must be a number of seconds or a duration, not {value!r}")
    if isinstance(value, int | float):
        _check_finite(value)
        return FOREVER if value < 0 else _bounded(float(int(value)))  # -inf: forever too
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                seconds = parse_go_duration(text)
            except ValueError:
                raise ValueError(
                    f"invalid keep_alive {value!r}: use seconds (300) or a duration "
                    "such as '5m', '1h' or '-1m'"
                ) from None
        else:
            _check_finite(seconds)
            seconds = float(int(seconds)) if seconds >= 0 else seconds  # -inf: forever
        return FOREVER if seconds < 0 else _bounded(seconds)
    raise ValueError(f"keep_alive must be a number of seconds or a duration, not {value!r}")


def _bounded(seconds: float) -> float:
    if seconds > LONGEST:
        raise ValueError(
            f"keep_alive is out of range: at most {LONGEST:.0f} seconds; "
            "a negative value keeps the model loaded forever"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a duration (``5m0s``), or ``forever``."""
    if math.isinf(seconds):
        return "forever"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


#: The furthest a moment given as an offset may lie from now (a key's expiry, a usage
#: window's start): 100 years, well inside what dates and timestamps can hold.
FURTHEST = 100 * 365.25 * 86400


class TooFar(ValueError):
    """An offset beyond :data:`FURTHEST`."""


def parse_offset(text: str) -> float:
    """Seconds from ``30d`` (whole days) or a Go duration (``12h``, ``90m``). Raises
    :class:`TooFar` beyond :data:`FURTHEST`, ``ValueError`` when it is neither form."""
    value = text.strip()
    if value.endswith("d") and value[:-1].isdigit():
        days = int(value[:-1])
        seconds = days * 86400.0 if days <= FURTHEST / 86400 else math.inf
    else:
        seconds = parse_go_duration(value)
    if abs(seconds) > FURTHEST:
        raise TooFar(f"{text.strip()[:40]!r} is more than 100 years away")
    return seconds


def parse_moment(text: str) -> float:
    """Unix seconds of an ISO date or date-time (UTC unless it says otherwise). Raises
    ``ValueError`` when it is not one."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
