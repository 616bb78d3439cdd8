"""A fresh database for one benchmark run, on the server tests use or on a private embedded one."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from database import embedded
from database.connection import normalize_url

URL_ENVS = ("TARIFF_BENCH_DATABASE_URL", "TARIFF_TEST_DATABASE_URL")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def bench_database(prefix: str = "tariff_bench") -> Iterator[tuple[str, str]]:
    """(SQLAlchemy URL of a fresh database, where it lives); the database is gone afterwards."""
    configured = next((os.environ[name] for name in URL_ENVS if os.environ.get(name)), None)
    if configured:
        server = libpq(configured)
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = normalize_url(make_url(server).set(database=name)).render_as_string(hide_password=False)
            yield url, f"database {name} on {make_url(server).host}:{make_url(server).port or 5432}"
        finally:
            with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        return
    # Not under /tmp/…/0700: when we are root the server runs as another user, who must reach the data.
    parent = Path(tempfile.mkdtemp(prefix=f"{prefix.replace('_', '-')}-pg-"))
    parent.chmod(0o755)
    root = parent / "pg"
    try:
        server_info = embedded.start(root)
        embedded.ensure_database(server_info, "tariff_bench")
        yield (
            normalize_url(server_info.url("tariff_bench")).render_as_string(hide_password=False),
            f"embedded PostgreSQL in {root} (fsync on)",
        )
    finally:
        try:
            embedded.stop(root)
        finally:
            shutil.rmtree(parent, ignore_errors=True)
