"""The run store on PostgreSQL (`--state postgresql://…`): one database for a team, its CI and
several runners at once.

Each campaign at each API target has a schema of its own (`sb_<hash>`), holding the very tables
`migrations` defines for SQLite, run through `Connection`, which speaks SQLite's SQL to PostgreSQL
(`translate`) and raises the DB-API errors the sqlite3 module defines, so `store`, `records` and
`writes` do not know which database is underneath. What belongs to no one campaign lives in the
schema `sume_batch`: the directory of stores, the runners' leases, and the admission controller's
tables (see `shared`).

Durability is the SQLite store's: a durable move commits with `synchronous_commit` on (the server
has it on disk before the next network step), any other move with it off (it outlives the runner,
as SQLite's WAL does a killed process). Every write of a runner first checks, in its own
transaction, that the runner's lease still stands (`fence`): a runner whose lease ended writes
nothing more, so the runner that took over its jobs can trust what it reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sume_batch.errors import StoreError, UsageError
from sume_batch.target import Target

CONNECT_TIMEOUT_S = 10  # a server that does not answer is an error, never a hang
STATEMENT_TIMEOUT_MS = 60_000  # no statement of ours takes a second; a stuck lock must not hang a run
SHARED_VERSION = 1  # of the `sume_batch` schema's tables
SHARED = """
CREATE SCHEMA IF NOT EXISTS sume_batch;
CREATE TABLE IF NOT EXISTS sume_batch.meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sume_batch.stores (
    schema TEXT PRIMARY KEY, campaign TEXT NOT NULL, target TEXT NOT NULL, base_url TEXT NOT NULL,
    rehearsal BOOLEAN NOT NULL, created_at DOUBLE PRECISION NOT NULL, written_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS sume_batch.runners (
    id BIGSERIAL PRIMARY KEY, store TEXT NOT NULL, account TEXT NOT NULL, host TEXT NOT NULL,
    pid BIGINT NOT NULL, ci TEXT, run BIGINT, started_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    expires_at TIMESTAMPTZ NOT NULL, lease_s DOUBLE PRECISION NOT NULL, idle BOOLEAN NOT NULL DEFAULT false);
CREATE INDEX IF NOT EXISTS runners_store ON sume_batch.runners (store);
CREATE TABLE IF NOT EXISTS sume_batch.permits (
    account TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL, runner BIGINT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (account, store, key));
CREATE TABLE IF NOT EXISTS sume_batch.rate (
    account TEXT PRIMARY KEY, remaining BIGINT NOT NULL, reset_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS sume_batch.ledger (
    account TEXT NOT NULL, month TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL,
    credits DOUBLE PRECISION NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS ledger_month ON sume_batch.ledger (account, month);
"""
_DDL = re.compile(r"\b(CREATE|ALTER) TABLE\b")


def _psycopg() -> Any:
    """psycopg, imported when a PostgreSQL store is first used (a SQLite run never pays for it)."""
    try:
        import psycopg  # noqa: PLC0415
    except ImportError:
        raise UsageError(
            "a PostgreSQL store needs psycopg: pip install 'sume-batch[postgres]' (or psycopg[binary])"
        ) from None
    return psycopg


def is_url(text: str | None) -> bool:
    return bool(text) and urllib.parse.urlsplit(str(text)).scheme in ("postgresql", "postgres")


def shown(url: str) -> str:
    """The URL with no password (and no query, where one may be passed): safe to print and to store."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return urllib.parse.urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))


def password_of(url: str) -> str | None:
    """The password a URL carries, for the redactor: it must reach no terminal, log or report."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).password or "") or None


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's SQL as the store writes it, for PostgreSQL: `?` parameters, its column types, its
    `rowid` (a column of `jobs` here), its `temp` schema."""
    text = sql.replace("%", "%%").replace("?", "%s").replace("BEGIN IMMEDIATE", "BEGIN")
    text = text.replace("temp.planned", "pg_temp.planned")
    if _DDL.search(text):
        text = text.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        text = re.sub(r"\bREAL\b", "DOUBLE PRECISION", text)
        text = re.sub(r"\bINTEGER\b", "BIGINT", text)
        text = re.sub(r"CREATE TABLE jobs \(", "CREATE TABLE jobs (rowid BIGSERIAL UNIQUE,", text)
    return text


def _db_error(error: Exception) -> sqlite3.Error:
    """A psycopg error as the DB-API class the store catches (the sqlite3 module's: PEP 249's)."""
    psycopg = _psycopg()
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, psycopg.errors.UndefinedTable | psycopg.OperationalError):
        return sqlite3.OperationalError(message)
    return sqlite3.DatabaseError(message)


class Connection:
    """A psycopg connection (autocommit: the store says BEGIN and COMMIT itself) that takes the
    store's SQLite-spelled statements. `fence`, when set, runs first in every write transaction."""

    dialect = "postgresql"

    def __init__(self, raw: Any, *, fence: Callable[[Connection], None] | None = None) -> None:
        self.raw = raw
        self.fence = fence
        self.errors = _psycopg().Error

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        try:
            return self.raw.execute(translate(sql), tuple(args))
        except self.errors as error:
            raise _db_error(error) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any:
        try:
            with self.raw.cursor() as cursor:
                cursor.executemany(translate(sql), [tuple(row) for row in rows])
        except self.errors as error:
            raise _db_error(error) from None

    def begin_write(self, *, durable: bool) -> None:
        """Open a write transaction: fsynced at its commit only when `durable`, fenced by the lease."""
        self.execute("BEGIN")
        if not durable:
            self.execute("SET LOCAL synchronous_commit = off")
        if self.fence is not None:
            self.fence(self)

    @property
    def in_transaction(self) -> bool:
        return bool(self.raw.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()


def connect(url: str, *, schema: str | None = None, read_only: bool = False) -> Connection:
    """A connection to the server at `url`, its statements bounded in time; a clear error when the
    server cannot be reached (the URL said without its password)."""
    psycopg = _psycopg()
    options = [f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"]
    if schema is not None:
        options.append(f"-c search_path={schema}")
    if read_only:
        options.append("-c default_transaction_read_only=on")
    try:
        raw = psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=" ".join(options),
            application_name="sume-batch",
        )  # fmt: skip
    except psycopg.Error as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        reason = reason.replace(url, shown(url))
        if password := password_of(url):
            reason = reason.replace(password, "[REDACTED]")
        raise StoreError(f"cannot reach the PostgreSQL store at {shown(url)}: {reason}") from None
    return Connection(raw)


@dataclass(frozen=True)
class Address:
    """One campaign's store at one API target in a PostgreSQL database."""

    url: str = field(repr=False)  # as given: may hold a password, so never printed (see `shown`)
    campaign: str
    target: Target | None = None  # None: the store `find` chose (its schema says which)
    found_schema: str | None = None

    @property
    def schema(self) -> str:
        if self.found_schema is not None:
            return self.found_schema
        assert self.target is not None, "an address to open names its target"
        return schema_of(self.campaign, self.target)

    def __str__(self) -> str:
        where = f" at {self.target.describe()}" if self.target is not None else ""
        return f"{shown(self.url)} (campaign {self.campaign}{where})"

    def exists(self) -> bool:
        with contextlib.closing(connect(self.url)) as db:
            if not _shared_exists(db):
                return False
            row = db.execute("SELECT 1 FROM sume_batch.stores WHERE schema = ?", (self.schema,)).fetchone()
            return row is not None


def schema_of(campaign: str, target: Target) -> str:
    return "sb_" + hashlib.sha256(f"{campaign}\n{target.id}".encode()).hexdigest()[:24]


def lock_key(name: str) -> int:
    """A name as a PostgreSQL advisory lock key (a signed 64-bit integer)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _shared_exists(db: Connection) -> bool:
    return db.execute("SELECT to_regclass('sume_batch.stores')").fetchone()[0] is not None


def ensure_shared(db: Connection) -> None:
    """Create (or check) the `sume_batch` schema; a newer one is refused."""
    db.execute("SELECT pg_advisory_lock(?)", (lock_key("sume_batch"),))
    try:
        if not _shared_exists(db):  # in one transaction: a runner killed meanwhile leaves nothing
            db.execute("BEGIN")
            try:
                for statement in (part for part in SHARED.split(";") if part.strip()):
                    db.execute(statement)
                db.execute("INSERT INTO sume_batch.meta VALUES ('version', ?) ON CONFLICT DO NOTHING",
                           (str(SHARED_VERSION),))  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        row = db.execute("SELECT value FROM sume_batch.meta WHERE name = 'version'").fetchone()
        if row is None or not str(row[0]).isdigit():
            raise StoreError(
                "the schema sume_batch in that database is not sume-batch's; use another database"
            )
        if int(row[0]) > SHARED_VERSION:
            raise StoreError(
                f"that database was set up by a newer sume-batch (shared version {row[0]}); upgrade"
            )
    finally:
        db.execute("SELECT pg_advisory_unlock(?)", (lock_key("sume_batch"),))


def open_store(address: Address, *, create: Callable[[Connection], None],
               migrate: Callable[[Connection], None]) -> Connection:  # fmt: skip
    """A connection to the store at `address`, its schema created (`create`) or checked and migrated
    (`migrate`) under the store's lock, so runners starting together make it once."""
    setup = connect(address.url)
    try:
        ensure_shared(setup)
        schema = address.schema
        setup.execute("SELECT pg_advisory_lock(?)", (lock_key(schema),))
        try:
            listed = setup.execute("SELECT 1 FROM sume_batch.stores WHERE schema = ?", (schema,)).fetchone()
            made = setup.execute("SELECT 1 FROM pg_namespace WHERE nspname = ?", (schema,)).fetchone()
            if listed is not None and made is None:
                raise StoreError(f"{address}: its schema {schema} is gone, though the directory lists it")
            db = connect(address.url, schema=schema)
            try:
                if made is not None and listed is None and not _has_version(db):
                    db.execute(f'DROP SCHEMA "{schema}" CASCADE')  # a setup killed midway: nothing in it
                    made = None
                if made is None:
                    db.execute(f'CREATE SCHEMA "{schema}"')
                    create(db)
                else:
                    migrate(db)
            except BaseException:
                db.close()
                raise
            if listed is None and address.target is not None:
                now = time.time()
                setup.execute(
                    "INSERT INTO sume_batch.stores VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (schema, address.campaign, address.target.id, address.target.base_url,
                     address.target.rehearsal, now, now),
                )  # fmt: skip
        finally:
            setup.execute("SELECT pg_advisory_unlock(?)", (lock_key(schema),))
    finally:
        setup.close()
    return db


def _has_version(db: Connection) -> bool:
    """Whether the store schema on the connection's search path got as far as its schema version."""
    if db.execute("SELECT to_regclass('meta')").fetchone()[0] is None:
        return False
    return db.execute("SELECT 1 FROM meta WHERE name = 'schema_version'").fetchone() is not None


def find(url: str, campaign: str, *, base_url: str, rehearsal: bool) -> Address | None:
    """The store `plan`, `status` and `report` read without asking the API: the latest made rehearsal
    store of the campaign, or the newest of the API at `base_url`. None when there is none."""
    with contextlib.closing(connect(url)) as db:
        if not _shared_exists(db):
            return None
        query, args = "SELECT schema FROM sume_batch.stores WHERE campaign = ?", [campaign]
        if rehearsal:
            query += " AND rehearsal"
        else:  # the API's stores there (a sandbox's too, when one serves there)
            query, args = query + " AND base_url = ?", [*args, base_url]
        row = db.execute(query + " ORDER BY written_at DESC LIMIT 1", args).fetchone()
    return Address(url, campaign, found_schema=row[0]) if row else None


@contextlib.contextmanager
def reading_connection(address: Address) -> Iterator[Connection]:
    """A read-only connection to an existing store (`records.reading`)."""
    db = connect(address.url, schema=address.schema, read_only=True)
    try:
        yield db
    finally:
        db.close()


def month_of(at: float) -> str:
    return time.strftime("%Y-%m", time.gmtime(at))


def as_mapping(rows: Iterable[Sequence[Any]], names: Sequence[str]) -> list[Mapping[str, Any]]:
    return [dict(zip(names, row, strict=True)) for row in rows]
