"""Which database Tariff talks to, and an Engine for it whose failures read as advice, never as secrets.

Resolution order: an explicit URL (`--database-url`) > `TARIFF_DATABASE_URL` > the variable named by the
chosen environment's `database_url_env` in tariff.yaml > the embedded server under `.tariff/pg`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from database.errors import ConnectionFailedError, DatabaseError

if TYPE_CHECKING:
    from compiler.catalog import Environment

URL_ENV = "TARIFF_DATABASE_URL"
DEFAULT_SCHEMA = "tariff"
EMBEDDED_DATABASE = "tariff"
DRIVER = "postgresql+psycopg"
_URL_FORMAT = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Teams often reuse the app's Prisma DATABASE_URL; these options are Prisma's, and libpq rejects them.
_PRISMA_OPTIONS = frozenset(
    {
        "schema",
        "connection_limit",
        "pool_timeout",
        "pgbouncer",
        "statement_cache_size",
        "socket_timeout",
        "sslaccept",
    }
)

Source = Literal["argument", "TARIFF_DATABASE_URL", "environment", "embedded"]


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A resolved database: where it is, which schema Tariff owns there, and where that came from."""

    url: URL = field(repr=False)
    schema: str
    source: Source
    origin: str  # for messages: "TARIFF_DATABASE_URL", "PINEGENIE_DATABASE_URL (environment production)", …

    @property
    def display_url(self) -> str:
        return safe_url(self.url)

    def __repr__(self) -> str:
        return f"DatabaseTarget({self.display_url!r}, schema={self.schema!r}, source={self.source!r})"


def resolve_target(
    url: str | None = None,
    *,
    environment: Environment | None = None,
    config_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> DatabaseTarget:
    """Pick the database. The embedded server is started (or reused) only when nothing else is configured."""
    env = os.environ if environ is None else environ
    schema = validate_schema(environment.schema if environment is not None else DEFAULT_SCHEMA)
    if url:
        return DatabaseTarget(normalize_url(url, "--database-url"), schema, "argument", "--database-url")
    if env.get(URL_ENV):
        return DatabaseTarget(normalize_url(env[URL_ENV], URL_ENV), schema, "TARIFF_DATABASE_URL", URL_ENV)
    if environment is not None and environment.database_url_env:
        variable = environment.database_url_env
        origin = f"{variable} (environment {environment.name})"
        if not env.get(variable):
            raise DatabaseError(
                f"environment {environment.name!r} takes its database URL from ${variable}, which is not set",
                fix=f"export {variable}={_URL_FORMAT} (in CI, from a secret), or set {URL_ENV}",
            )
        return DatabaseTarget(normalize_url(env[variable], origin), schema, "environment", origin)
    if config_dir is None:
        raise DatabaseError(
            "no database configured and no config directory to keep an embedded one in",
            fix=f"set {URL_ENV}, or run Tariff from the repository holding tariff.yaml",
        )
    from database import embedded

    server = embedded.start(embedded.data_root(config_dir))
    embedded.ensure_database(server, EMBEDDED_DATABASE)
    origin = f"embedded PostgreSQL in {server.location}"
    return DatabaseTarget(normalize_url(server.url(EMBEDDED_DATABASE), origin), schema, "embedded", origin)


def validate_schema(schema: str) -> str:
    """Schema names are spliced into SQL as identifiers, so only plain lowercase names are accepted."""
    if not _SCHEMA_NAME.fullmatch(schema):
        raise DatabaseError(
            f"invalid schema name {schema!r}",
            fix="use at most 63 lowercase letters, digits and underscores, not starting "
            "with a digit (e.g. tariff)",
        )
    return schema


def quote_schema(schema: str) -> str:
    """The schema as a SQL identifier (quote_ident style) after validation."""
    return '"' + validate_schema(schema) + '"'


def normalize_url(url: str | URL, origin: str = "the database URL") -> URL:
    """A SQLAlchemy URL for psycopg 3 from `postgresql://`, `postgres://` or `postgresql+<driver>://`."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        # The parser's own message repeats the whole URL, password included: say only where it came from.
        raise DatabaseError(
            f"{origin} is not a valid database URL", fix=f"write it as {_URL_FORMAT}"
        ) from None
    backend = parsed.drivername.split("+", 1)[0]
    if backend not in ("postgresql", "postgres"):
        raise DatabaseError(
            f"{origin} points at {backend!r}; Tariff works with PostgreSQL only",
            fix=f"use a URL of the form {_URL_FORMAT}",
        )
    query = {k: v for k, v in parsed.query.items() if k not in _PRISMA_OPTIONS}
    return parsed.set(drivername=DRIVER, query=query)


def safe_url(url: str | URL) -> str:
    """The URL for humans, as they write it (no `+psycopg` driver suffix), the password masked."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        return "<unparseable URL>"
    if parsed.drivername == DRIVER:
        parsed = parsed.set(drivername="postgresql")
    return parsed.render_as_string(hide_password=True)


def create_engine(
    url: str | URL | DatabaseTarget,
    *,
    connect_timeout: int = 10,
    verify: bool = True,
    origin: str | None = None,
) -> Engine:
    """An Engine on psycopg 3. With `verify`, connect once now so a bad URL fails here, clearly."""
    if isinstance(url, DatabaseTarget):
        origin = origin or url.origin
        url = url.url
    target = normalize_url(url, origin or "the database URL")
    connect_args: dict[str, object] = {"application_name": "tariff"}
    if "connect_timeout" not in target.query:
        connect_args["connect_timeout"] = connect_timeout
    engine = sa.create_engine(target, pool_pre_ping=True, connect_args=connect_args)
    if verify:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except DBAPIError as exc:
            engine.dispose()
            raise connection_error(exc, target, origin) from exc
    return engine


def connection_error(exc: BaseException, url: str | URL, origin: str | None = None) -> DatabaseError:
    """Translate a driver connection failure into a DatabaseError with a cause and a fix."""
    parsed = make_url(url) if isinstance(url, str) else url
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    if parsed.password:
        text = text.replace(str(parsed.password), "***")
    where = safe_url(parsed) + (f" (from {origin})" if origin else "")
    named = origin or "the database URL"
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    lowered = text.lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ConnectionFailedError(
            f"PostgreSQL at {server} rejected the password for user {parsed.username!r}",
            fix=f"check the user and password in {named}",
        )
    if 'role "' in lowered and "does not exist" in lowered:
        return ConnectionFailedError(
            f"PostgreSQL at {server} has no user {parsed.username!r}",
            fix=f"create the role, or correct the user in {named}",
        )
    if 'database "' in lowered and "does not exist" in lowered:
        return ConnectionFailedError(
            f"database {parsed.database!r} does not exist on {server}",
            fix=f"create it (createdb {parsed.database}) or correct the database name in {where}",
        )
    if "no pg_hba.conf entry" in lowered:
        return ConnectionFailedError(
            f"PostgreSQL at {server} does not accept connections from this host and user",
            fix="allow them in pg_hba.conf (or ask the database admin); many servers need sslmode=require",
        )
    if "connection refused" in lowered or "could not connect" in lowered:
        return ConnectionFailedError(
            f"cannot reach PostgreSQL at {server}: connection refused",
            fix=f"start the server, or correct host and port in {where}",
        )
    if "resolve host" in lowered or "translate host name" in lowered:
        return ConnectionFailedError(
            f"unknown database host {parsed.host!r}", fix=f"correct the host in {where}"
        )
    if "timeout" in lowered or "timed out" in lowered:
        return ConnectionFailedError(
            f"PostgreSQL at {server} did not answer in time",
            fix="check the network path to the server (VPN, firewall, security group)",
        )
    return ConnectionFailedError(
        f"cannot connect to {where}: {text}",
        fix="check the URL, and that the server is running and reachable",
    )
