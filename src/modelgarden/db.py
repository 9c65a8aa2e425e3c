"""The gateway's own database: SQLite by default, PostgreSQL when several gateways share one.

:func:`connect` reads ``GARDEN_DATABASE_URL`` (``Settings.database_url``): empty means a
SQLite file beside the model store (``<models>/garden.db``), ``sqlite:///PATH`` another
file, ``postgresql://...`` a server that any number of gateway replicas write to at once.
Both drivers keep the event loop free (aiosqlite runs SQLite on its own thread, asyncpg is
asynchronous). Queries are written once, with ``?`` placeholders; the PostgreSQL side
numbers them. Each user of the database (usage records now, API keys later) declares its
tables with :meth:`Database.ensure_schema`, which is safe to run from replicas starting
together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiosqlite
import orjson

POSTGRES_SCHEMES = ("postgresql", "postgres")
#: Any fixed number: the advisory lock replicas take while creating tables.
_SCHEMA_LOCK = 7_450_112


class DatabaseError(Exception):
    """The database cannot be reached or refused a statement; the message is one line."""


def redact(url: str) -> str:
    """A database URL fit for logs: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_url(url: str) -> str:
    """Validate a database URL (empty: the default SQLite file); raise ``ValueError``."""
    url = url.strip()
    if not url:
        return url
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise ValueError("expected sqlite:///PATH")
        return url
    if scheme in POSTGRES_SCHEMES:
        if not urlsplit(url).hostname and "host=" not in url:
            raise ValueError("expected postgresql://USER@HOST:PORT/DBNAME")
        return url
    raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST:PORT/DBNAME")


class Database(Protocol):
    """A connection (or pool) to the gateway's database."""

    #: ``sqlite`` or ``postgresql``.
    dialect: str
    #: Where it is, for logs and ``/ready`` (never with a password).
    where: str

    async def ensure_schema(self, statements: Sequence[str]) -> None:
        """Run ``CREATE ... IF NOT EXISTS`` statements; ``{id}`` is the dialect's key column."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many rows, in one transaction."""

    async def insert(self, table: str, columns: Sequence[str], rows: list[Sequence[Any]]) -> None:
        """Append rows (JSON-representable values) to a table, in one transaction."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query."""

    async def close(self) -> None:
        """Close the connection(s)."""


class SQLiteDatabase:
    """One SQLite file (WAL mode) on aiosqlite's thread."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.where = str(path)

    @classmethod
    async def open(cls, path: Path) -> SQLiteDatabase:
        """Open (creating) the file."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(path, timeout=10.0)
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
        except (OSError, aiosqlite.Error) as exc:
            raise DatabaseError(f"cannot open database {path}: {exc}") from None
        return cls(conn, path)

    async def ensure_schema(self, statements: Sequence[str]) -> None:
        try:
            for sql in statements:
                await self._conn.execute(sql.format(id="INTEGER PRIMARY KEY AUTOINCREMENT"))
            await self._conn.commit()
        except aiosqlite.Error as exc:
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, rows)
            await self._conn.commit()
        except aiosqlite.Error as exc:
            await self._conn.rollback()
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def insert(self, table: str, columns: Sequence[str], rows: list[Sequence[Any]]) -> None:
        """One statement over the rows as one JSON array: SQLite's thread binds a single
        parameter and runs one step with the GIL released, where ``executemany`` would
        trade the GIL with the event loop twice per row."""
        picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {picks} FROM json_each(?)"
        try:
            await self._conn.execute(sql, (orjson.dumps(rows).decode(),))
            await self._conn.commit()
        except aiosqlite.Error as exc:
            await self._conn.rollback()
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            async with self._conn.execute(sql, params) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]
        except aiosqlite.Error as exc:
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def close(self) -> None:
        await self._conn.close()


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return re.sub(r"\?", number, sql)


class PostgresDatabase:
    """A small asyncpg pool on a PostgreSQL server shared by gateway replicas."""

    dialect = "postgresql"

    def __init__(self, pool: Any, where: str) -> None:
        self._pool = pool
        self.where = where

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """Connect (a pool of up to four connections)."""
        import asyncpg

        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=4, timeout=10.0)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(f"cannot connect to database {redact(url)}: {exc}") from None
        return cls(pool, redact(url))

    async def ensure_schema(self, statements: Sequence[str]) -> None:
        import asyncpg

        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
                for sql in statements:
                    await conn.execute(sql.format(id="BIGSERIAL PRIMARY KEY"))
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        import asyncpg

        try:
            async with self._pool.acquire() as conn:
                await conn.executemany(numbered(sql), list(rows))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def insert(self, table: str, columns: Sequence[str], rows: list[Sequence[Any]]) -> None:
        marks = ", ".join("?" * len(columns))
        await self.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        import asyncpg

        try:
            async with self._pool.acquire() as conn:
                return [tuple(r) for r in await conn.fetch(numbered(sql), *params)]
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise DatabaseError(f"database {self.where}: {exc}") from None

    async def close(self) -> None:
        await self._pool.close()


async def connect(url: str, models_dir: Path) -> Database:
    """Open the database a URL names (empty: ``<models_dir>/garden.db``)."""
    url = url.strip()
    if urlsplit(url).scheme in POSTGRES_SCHEMES:
        return await PostgresDatabase.open(url)
    # sqlite:///garden.db is relative to the working directory, sqlite:////srv/garden.db not.
    path = Path(url[len("sqlite:///") :]) if url else models_dir / "garden.db"
    return await SQLiteDatabase.open(path.expanduser())
