"""Shared fixtures. Database fixtures run on real PostgreSQL: the server named by TARIFF_TEST_DATABASE_URL,
or else an embedded server started once per test session in a temporary directory. They are lazy, so tests
that do not ask for them never start PostgreSQL; tests that do are marked `db` automatically."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Engine, make_url

from database import embedded
from database.connection import DEFAULT_SCHEMA, create_engine, normalize_url
from database.errors import DatabaseError
from database.migrate import upgrade
from tests.payu_support import payu_client, payu_sim, receiver  # noqa: F401 - PayU simulator fixtures

TEST_URL_ENV = "TARIFF_TEST_DATABASE_URL"
DB_FIXTURES = frozenset({"pg_server", "pg_url", "engine", "raw_engine", "embedded_root", "scratch_root"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.db)


def _libpq(url: str) -> str:
    """psycopg wants a plain libpq URL; ours may carry SQLAlchemy's `+psycopg` driver suffix."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def embedded_root() -> Iterator[Path | None]:
    """The session's embedded server directory, or None when TARIFF_TEST_DATABASE_URL is used."""
    if os.environ.get(TEST_URL_ENV):
        yield None
        return
    # Not pytest's tmp_path: its parent is 0700, which the non-root server user cannot enter when we are root.
    parent = Path(tempfile.mkdtemp(prefix="tariff-test-pg-"))
    parent.chmod(0o755)
    root = parent / "pg"
    try:
        yield root
    finally:
        try:
            embedded.stop(root)
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """A fresh directory for a private embedded server (stopped and removed afterwards)."""
    parent = Path(tempfile.mkdtemp(prefix="tariff-test-scratch-"))
    parent.chmod(0o755)
    try:
        yield parent / ".tariff" / "pg"
    finally:
        try:
            embedded.stop(parent / ".tariff" / "pg")
        finally:
            shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(embedded_root: Path | None) -> str:
    """A libpq URL for a maintenance database on the test server; fails the run (never skips) without one."""
    configured = os.environ.get(TEST_URL_ENV)
    if configured:
        url = _libpq(configured)
        try:
            with psycopg.connect(url, connect_timeout=10):
                pass
        except psycopg.Error as exc:
            pytest.fail(f"{TEST_URL_ENV} is set but PostgreSQL there is unusable: {exc}", pytrace=False)
        return url
    assert embedded_root is not None
    try:
        return embedded.start(embedded_root, durable=False).url()
    except DatabaseError as exc:
        pytest.fail(
            f"cannot start the embedded PostgreSQL for tests: {exc.describe()}\n"
            f"Set {TEST_URL_ENV}=postgresql://USER@HOST:PORT/DB to use a running server instead.",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_url(pg_server: str) -> Iterator[str]:
    """A SQLAlchemy URL to a fresh, empty database created for this test session and dropped after it."""
    name = f"tariff_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        pytest.fail(
            f"cannot create the test database {name}: {exc} (the test role needs CREATEDB)", pytrace=False
        )
    try:
        yield normalize_url(make_url(pg_server).set(database=name)).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def raw_engine(pg_url: str) -> Iterator[Engine]:
    """An Engine on the session database with no Tariff schema in it (dropped before the test)."""
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{DEFAULT_SCHEMA}" CASCADE'))
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(raw_engine: Engine) -> Engine:
    """An Engine whose `tariff` schema was just created from scratch by the migrations."""
    upgrade(raw_engine, DEFAULT_SCHEMA)
    return raw_engine
