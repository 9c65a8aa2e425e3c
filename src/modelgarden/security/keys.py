"""API keys: stored hashed in the gateway's database, held in memory for the request path.

A key is ``mg-`` and 43 characters of ``secrets.token_urlsafe`` (256 random bits). Only its
SHA-256 is stored: with that much entropy a fast hash is as safe as a slow one (nothing to
brute-force), and checking a request costs one hash and one dictionary lookup. The secret
is shown once, when the key is created, and can never be read back.

:class:`KeyRing` keeps every key of the database in memory and re-reads the table every
``refresh`` seconds, so a key created or revoked by another gateway replica (or by the CLI
through another gateway) takes effect here within that time; changes made through this
gateway take effect at once. Per-key limits (requests and tokens per minute, concurrent
requests) are counted in memory, per gateway process.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from modelgarden.config import Settings
from modelgarden.db import Database, DatabaseError, connect
from modelgarden.durations import FURTHEST, TooFar, parse_moment, parse_offset
from modelgarden.errors import BadRequest, RateLimited
from modelgarden.security.shared import SharedLimits, Unreachable
from modelgarden.tasks import cancel_and_wait
from modelgarden.telemetry.record import RequestRecord

log = structlog.get_logger(__name__)
Scope = Literal["user", "admin"]
PREFIX = "mg-"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        scope TEXT NOT NULL,
        models TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        rpm INTEGER,
        tpm INTEGER,
        max_concurrent INTEGER
    )""",
)
COLUMNS = (
    "id, name, scope, models, hash, created_at, expires_at, revoked_at, rpm, tpm, max_concurrent"
)


def digest(secret: str) -> str:
    """What is stored for a key: its SHA-256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


#: Monotonic seconds: what the per-key buckets read the time from (a fake one in tests).
Clock = Callable[[], float]
#: Units a bucket may be short and still admit: float rounding, not a real shortfall.
ROUNDING = 1e-9


class Bucket:
    """A token bucket: ``rate`` units per minute, bursts up to ``rate``; may go negative."""

    __slots__ = ("capacity", "clock", "level", "per_second", "stamp")

    def __init__(self, per_minute: int, clock: Clock = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.level = self.capacity
        self.clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.per_second)
        self.stamp = now

    def wait(self, need: float = 1.0) -> float:
        """Seconds until ``need`` units are there (0: now).

        A level short of ``need`` by no more than a rounding error counts as there: a client
        that waited the ``Retry-After`` it was given (this wait, rounded up) is admitted,
        where the refill's float arithmetic would leave it a hair short (5 a minute for 48 s
        refills 3.9999999999999996).
        """
        self._refill()
        short = need - self.level
        return 0.0 if short <= ROUNDING else short / self.per_second

    def take(self, amount: float) -> None:
        """Spend units (the level may go below zero: the debt is waited out)."""
        self._refill()
        self.level -= amount


@dataclass
class Key:
    """One API key as the gateway knows it (never its secret)."""

    id: str
    name: str
    scope: Scope
    models: list[str]
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    active: int = 0
    requests: Bucket | None = field(default=None, repr=False)
    tokens: Bucket | None = field(default=None, repr=False)
    #: What its buckets read the time from (the :class:`KeyRing`'s clock).
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.requests = Bucket(self.rpm, self.clock) if self.rpm else None
        self.tokens = Bucket(self.tpm, self.clock) if self.tpm else None

    def update(self, fresh: Key) -> None:
        """Take a newer read of the same key; live counts stay, buckets follow new limits."""
        self.name, self.scope, self.models = fresh.name, fresh.scope, fresh.models
        self.expires_at, self.revoked_at = fresh.expires_at, fresh.revoked_at
        self.max_concurrent = fresh.max_concurrent
        if fresh.rpm != self.rpm:
            self.rpm, self.requests = fresh.rpm, fresh.requests
        if fresh.tpm != self.tpm:
            self.tpm, self.tokens = fresh.tpm, fresh.tokens

    @property
    def usable(self) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > time.time()
        )

    def allows(self, model: str) -> bool:
        """Whether the key may use this model (no globs: every model)."""
        name = model.lower()
        return not self.models or any(fnmatch.fnmatchcase(name, g.lower()) for g in self.models)

    def admit(self) -> None:
        """Count one request against the key's limits; :class:`RateLimited` when over one."""
        if self.max_concurrent is not None and self.active >= self.max_concurrent:
            raise RateLimited(
                f"too many concurrent requests for this key (limit {self.max_concurrent})",
                retry_after=1.0,
            )
        for bucket, limit, what in (
            (self.requests, self.rpm, "requests per minute"),
            (self.tokens, self.tpm, "tokens per minute"),
        ):
            wait = bucket.wait() if bucket is not None else 0.0
            if wait > 0:
                raise RateLimited(
                    f"rate limit exceeded: {limit} {what} for this key", retry_after=math.ceil(wait)
                )
        if self.requests is not None:
            self.requests.take(1)

    def public(self) -> dict[str, Any]:
        """The key's description for listings (no secret, no hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "scope": self.scope,
            "models": self.models,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "max_concurrent": self.max_concurrent,
            "state": "revoked"
            if self.revoked_at is not None
            else ("expired" if not self.usable else "active"),
        }


def _key(row: Sequence[Any], clock: Clock = time.monotonic) -> tuple[str, Key]:
    (kid, name, scope, models, hashed, created, expires, revoked, rpm, tpm, conc) = row
    globs = [g for g in str(models).split(",") if g]
    key = Key(kid, name, scope, globs, created, expires, revoked, rpm, tpm, conc, clock=clock)
    return hashed, key


async def count_keys(settings: Settings) -> int:
    """How many keys, usable or not, the settings' database holds (opened and closed here):
    any key at all means the gateway asks for one."""
    db = await connect(settings.database_url, settings.models_dir)
    try:
        await db.ensure_schema(SCHEMA)
        rows = await db.fetch(f"SELECT {COLUMNS} FROM api_keys")
    finally:
        await db.close()
    return len(rows)


#: What a locked-out operator does (shown when no key is usable).
RECOVER = "on the gateway's machine, run: garden keys create --local --name admin --scope admin"


def expiry(text: str | None) -> float | None:
    """When a key expires (Unix time), from ``30d``/``12h`` or an ISO date; ``None``: never."""
    if text is None or not text.strip():
        return None
    now = time.time()
    try:
        when = now + parse_offset(text)
    except TooFar as exc:
        raise BadRequest(f"expires: {exc}") from None
    except ValueError:
        try:
            when = parse_moment(text)
        except ValueError:
            raise BadRequest(f"expires: expected 30d, 12h or an ISO date, got {text!r}") from None
    if when <= now:
        raise BadRequest("expires: that moment has passed")
    if when > now + FURTHEST:
        raise BadRequest("expires: that moment is more than 100 years away")
    return when


class DatabaseOwner(Protocol):
    """What opens the database the keys live in (the telemetry does): the database once
    open, and an event set then."""

    @property
    def db(self) -> Database | None: ...

    @property
    def connected(self) -> asyncio.Event: ...


class KeyRing:
    """Owns the keys in memory (by hash), their limits, and their table in the database."""

    def __init__(
        self,
        refresh: float = 5.0,
        shared: SharedLimits | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.refresh = refresh
        #: What the per-key limits read the time from (monotonic seconds; a fake one in
        #: tests): keys read from the database after it is set use it.
        self.clock = clock
        #: Limits counted for every process in Redis (``None``: each process counts its own).
        self.shared = shared
        self.db: Database | None = None
        self._by_hash: dict[str, Key] = {}
        self._by_id: dict[str, Key] = {}
        self.loaded = False
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a key: some key exists, usable or not.

        Once a key has been made the gateway never goes back to open by itself: when the
        last one expires or is revoked it is locked (:data:`RECOVER` says how to get back
        in); only deleting every key (``garden keys purge --local``) opens it again.
        """
        return bool(self._by_hash)

    @property
    def any_usable(self) -> bool:
        """Whether some key can still be used (else every caller is locked out)."""
        return any(k.usable for k in self._by_id.values())

    async def start(self, db: Database) -> None:
        """Create the table, read the keys, and keep re-reading them."""
        self.db = db
        try:
            await db.ensure_schema(SCHEMA)
            await self.reload()
        except DatabaseError as exc:
            log.error("api keys cannot be read", error=str(exc))
        self._task = asyncio.create_task(self._every())

    async def close(self) -> None:
        """Stop re-reading."""
        await cancel_and_wait(self._task)

    async def _every(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except DatabaseError as exc:
                log.warning("api keys not refreshed", error=str(exc))

    async def reload(self) -> None:
        """Read every key. A key already known is updated in place, so requests in flight
        that hold it release their counts on the same object."""
        assert self.db is not None
        rows = await self.db.fetch(f"SELECT {COLUMNS} FROM api_keys")
        by_hash: dict[str, Key] = {}
        for row in rows:
            hashed, key = _key(row, self.clock)
            old = self._by_id.get(key.id)
            if old is not None:
                old.update(key)
                key = old
            by_hash[hashed] = key
        self._by_hash = by_hash
        self._by_id = {k.id: k for k in by_hash.values()}
        self.loaded = True

    def find(self, secret: str) -> Key | None:
        """The key for a secret, if it exists (usable or not)."""
        return self._by_hash.get(digest(secret))

    def all(self) -> list[Key]:
        """Every key, oldest first."""
        return sorted(self._by_id.values(), key=lambda k: k.created_at)

    def spend_record(self, record: RequestRecord) -> None:
        """A finished request's tokens (a telemetry record) against its key."""
        if record.key_id is not None:
            self.spend(record.key_id, (record.prompt_tokens or 0) + (record.completion_tokens or 0))

    async def attach(self, owner: DatabaseOwner) -> None:
        """Start on the database ``owner`` opens (the telemetry's), now or, if it is not
        reachable yet, once it is."""
        if owner.db is not None:
            await self.start(owner.db)
            return

        async def later() -> None:
            await owner.connected.wait()
            assert owner.db is not None
            await self.start(owner.db)

        self._task = asyncio.create_task(later())

    def spend(self, key_id: str, tokens: int) -> None:
        """Count a finished request's tokens against its key's tokens per minute."""
        key = self._by_id.get(key_id)
        if key is not None and key.tokens is not None and key.tpm and tokens:
            key.tokens.take(tokens)
            if self.shared is not None:
                self.shared.spend(key_id, tokens, key.tpm)

    async def admit(self, key: Key) -> str | None:
        """Count one request against the key's limits, across every process when they are
        shared (then its concurrency lease id); :class:`RateLimited` when over one."""
        limited = key.rpm or key.tpm or key.max_concurrent
        if self.shared is not None and limited:
            try:
                lease = await self.shared.admit(key.id, key.rpm, key.tpm, key.max_concurrent)
            except Unreachable:
                pass  # counted by this process alone until the store is back
            else:
                if key.requests is not None:
                    key.requests.take(1)  # the local count stays current for a fallback
                return lease
        key.admit()
        return None

    def release(self, key: Key, lease: str | None) -> None:
        """Give back a request's concurrency lease (shared limits)."""
        if lease is not None and self.shared is not None:
            self.shared.release(key.id, lease)

    async def create(
        self,
        name: str,
        scope: Scope,
        models: list[str],
        expires_at: float | None,
        limits: tuple[int | None, int | None, int | None] = (None, None, None),
        secret: str | None = None,
    ) -> tuple[Key, str]:
        """Make a key; returns it and its secret (the only time the secret exists).

        ``secret``: the operator's own (a deployment's bootstrap key), else a new one.
        """
        assert self.db is not None
        if secret is not None and (not secret.startswith(PREFIX) or len(secret) < 35):
            raise BadRequest(f"a key must be {PREFIX} and at least 32 more characters")
        secret = secret or PREFIX + secrets.token_urlsafe(32)
        kid = "key_" + secrets.token_hex(6)
        rpm, tpm, conc = limits
        row = (kid, name, scope, ",".join(models), digest(secret), time.time(), expires_at)
        await self.db.executemany(
            f"INSERT INTO api_keys ({COLUMNS}) VALUES ({', '.join('?' * 11)})",
            [(*row, None, rpm, tpm, conc)],
        )
        await self.reload()
        return self._by_id[kid], secret

    async def purge(self) -> int:
        """Delete every key (the gateway is open again); returns how many there were."""
        assert self.db is not None
        await self.reload()
        count = len(self._by_id)
        await self.db.executemany("DELETE FROM api_keys WHERE id = ?", [(k,) for k in self._by_id])
        await self.reload()
        return count

    async def revoke(self, ref: str) -> Key | None:
        """Revoke a key by id or name; ``None`` when there is no such key."""
        assert self.db is not None
        await self.reload()
        key = self._by_id.get(ref) or next(
            (k for k in self._by_id.values() if k.name == ref and k.revoked_at is None), None
        )
        if key is None:
            return None
        await self.db.executemany(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ?", [(time.time(), key.id)]
        )
        await self.reload()
        return self._by_id[key.id]
