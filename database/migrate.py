"""Versioned SQL migrations for the Tariff schema: `migrations/NNNN_name.sql`, applied in order, each in one
transaction, recorded in `<schema>.schema_migrations` with a checksum, under an advisory lock.

Migration files never name the schema. Each runs after `SET LOCAL search_path TO <schema>`, so the schema
name stays configurable without templating SQL text, and functions pin that path with
`SET search_path FROM CURRENT` so they work whatever search_path the calling app has.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from database.connection import DEFAULT_SCHEMA, quote_schema, safe_url
from database.errors import (
    ChecksumMismatchError,
    MigrationError,
    SchemaMissingError,
    SchemaOutdatedError,
    SchemaTooNewError,
)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_FILENAME = re.compile(r"(?P<version>[0-9]{4})_(?P<name>[a-z0-9_]+)\.sql")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}"

    @property
    def filename(self) -> str:
        return f"{self.label}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        # Line endings normalised: a Windows checkout (core.autocrlf) must not look like an edited migration.
        body = self.sql.replace("\r\n", "\n").encode("utf-8")
        return "sha256:" + hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    schema: str
    exists: bool
    current: int
    latest: int
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return self.exists and not self.pending


@cache
def _shipped(directory: Path) -> tuple[Migration, ...]:
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILENAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"unexpected file {path.name} among migrations", fix="name it NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migrations share version {version:04d}", fix="renumber the newer one")
        found[version] = Migration(version, match["name"], path.read_text(encoding="utf-8"))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3… without gaps; found {versions}")
    return tuple(found[v] for v in versions)


def load_migrations(directory: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """The migrations this Tariff ships, in order."""
    return _shipped(directory.resolve())


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock, derived from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def upgrade(
    engine: Engine,
    schema: str = DEFAULT_SCHEMA,
    *,
    lock_timeout: float = 60.0,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply the pending migrations; return their versions ("0001", …). Safe to run concurrently: a second
    caller waits for the first and then finds nothing to do."""
    quoted = quote_schema(schema)
    known = tuple(migrations) if migrations is not None else load_migrations()
    applied_now: list[str] = []
    with engine.connect() as conn, _advisory_lock(conn, f"tariff.migrate:{schema}", lock_timeout, schema):
        with conn.begin():
            _run(conn, f"CREATE SCHEMA IF NOT EXISTS {quoted}", "creating the schema", schema)
            _run(
                conn,
                f"""CREATE TABLE IF NOT EXISTS {quoted}.schema_migrations (
                version integer PRIMARY KEY CHECK (version > 0),
                name text NOT NULL,
                checksum text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""",
                "creating schema_migrations",
                schema,
            )
        for migration in _pending(conn, schema, known):
            with conn.begin():
                _run(conn, f"SET LOCAL search_path TO {quoted}", migration.filename, schema)
                _run(conn, migration.sql, migration.filename, schema)
                conn.execute(
                    sa.text(
                        f"INSERT INTO {quoted}.schema_migrations (version, name, checksum) "
                        "VALUES (:v, :n, :c)"
                    ),
                    {"v": migration.version, "n": migration.name, "c": migration.checksum},
                )
            applied_now.append(migration.label)
    return applied_now


def current_version(engine: Engine, schema: str = DEFAULT_SCHEMA) -> int:
    """The highest applied migration; 0 for a database Tariff has never migrated."""
    with engine.connect() as conn:
        applied = _applied(conn, schema)
    return max(applied, default=0)


def status(engine: Engine, schema: str = DEFAULT_SCHEMA) -> SchemaStatus:
    """Where the schema stands. Raises only when this Tariff must not touch it (newer, or edited history)."""
    known = load_migrations()
    with engine.connect() as conn:
        exists = _table_exists(conn, schema)
        applied = _applied(conn, schema) if exists else {}
        pending = _verify(applied, known) if exists else list(known)
    return SchemaStatus(schema, exists, max(applied, default=0), len(known), tuple(m.label for m in pending))


def check(engine: Engine, schema: str = DEFAULT_SCHEMA) -> SchemaStatus:
    """Status, raising unless the schema exists and is fully migrated: run this before `plan`."""
    state = status(engine, schema)
    where = safe_url(engine.url)
    if not state.exists:
        raise SchemaMissingError(
            f"schema {schema!r} does not exist in {where} (or Tariff never migrated it)",
            fix="create it with `tariff db upgrade`, or check the database URL and schema name",
        )
    if state.pending:
        raise SchemaOutdatedError(
            f"schema {schema!r} in {where} is at version {state.current}; this Tariff needs {state.latest}",
            fix="run `tariff db upgrade`",
        )
    return state


# ------------------------------------------------------------------------------------------- internals


def _pending(conn: Connection, schema: str, known: Sequence[Migration]) -> list[Migration]:
    with conn.begin():
        return _verify(_applied(conn, schema), known)


def _verify(applied: dict[int, str], known: Sequence[Migration]) -> list[Migration]:
    """The migrations still to run, after refusing databases from a newer Tariff or with edited history."""
    by_version = {m.version: m for m in known}
    latest = max(by_version, default=0)
    if any(version not in by_version for version in applied):
        raise SchemaTooNewError(max(applied), latest)
    for version, checksum in sorted(applied.items()):
        if checksum != by_version[version].checksum:
            raise ChecksumMismatchError(by_version[version].filename, checksum, by_version[version].checksum)
    pending = [m for m in known if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(
            f"migration {pending[0].filename} was never applied, but later ones were",
            fix="restore the database from a backup, or apply that file by hand and record it",
        )
    return pending


def _table_exists(conn: Connection, schema: str) -> bool:
    found = conn.execute(
        sa.text("SELECT to_regclass(:name) IS NOT NULL"),
        {"name": f"{quote_schema(schema)}.schema_migrations"},
    ).scalar_one()
    return bool(found)


def _applied(conn: Connection, schema: str) -> dict[int, str]:
    if not _table_exists(conn, schema):
        return {}
    rows = conn.execute(sa.text(f"SELECT version, checksum FROM {quote_schema(schema)}.schema_migrations"))
    return {int(version): str(checksum) for version, checksum in rows}


def _run(conn: Connection, sql: str, what: str, schema: str) -> None:
    """Execute SQL text with no parameters, through the driver: migration files hold several statements
    and `%` signs, which SQLAlchemy's parameter handling would otherwise interpret."""
    driver = conn.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor:
            cursor.execute(sql)
    except Exception as exc:
        raise _migration_error(exc, what, schema) from exc


def _migration_error(exc: Exception, what: str, schema: str) -> MigrationError:
    diag = getattr(exc, "diag", None)
    notes = (getattr(diag, "message_detail", None), getattr(diag, "message_hint", None))
    detail = "; ".join(note for note in notes if note)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    failed = f"{what} in schema {schema!r} failed: {message}"
    if getattr(exc, "sqlstate", None) == "42501":
        return MigrationError(failed, fix="run `tariff db upgrade` as a role that may create the schema")
    return MigrationError(
        failed + (f" ({detail})" if detail else ""),
        fix="this migration was rolled back; fix the cause and run it again",
    )


@contextmanager
def _advisory_lock(conn: Connection, name: str, timeout: float, schema: str) -> Iterator[None]:
    """Hold a session-level advisory lock for the whole upgrade; each migration still commits on its own."""
    key = advisory_key(name)
    try:
        with conn.begin():
            conn.execute(sa.text(f"SET LOCAL lock_timeout = '{int(timeout * 1000)}ms'"))
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            raise MigrationError(
                f"another Tariff has been migrating schema {schema!r} for {timeout:.0f} s",
                fix="wait for it to finish and run again",
            ) from exc
        raise
    try:
        yield
    finally:
        try:
            if conn.in_transaction():
                conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()
        except DBAPIError:
            # The session is unusable; discarding it releases the lock on the server side.
            conn.invalidate()
