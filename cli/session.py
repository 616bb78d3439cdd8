"""Opening the database a command works on: `--env`, `--database-url`, the embedded server, migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from sqlalchemy.engine import Connection, Engine

from cli.errors import CommandError
from cli.output import stderr_console
from compiler.catalog import Environment, Settings
from compiler.project import CompileResult, compile_config
from database.connection import DatabaseTarget, create_engine, resolve_target
from database.errors import DatabaseError, SchemaMissingError, SchemaOutdatedError
from database.migrate import check, status, upgrade


@dataclass
class Session:
    config: Path
    target: DatabaseTarget
    engine: Engine
    environment: Environment | None

    @property
    def schema(self) -> str:
        return self.target.schema


def environment_for(settings: Settings | None, name: str | None) -> Environment | None:
    if name is None:
        return None
    environments = settings.environments if settings else {}
    if name not in environments:
        known = ", ".join(sorted(environments)) or "none are defined"
        raise CommandError(
            f"unknown environment {name!r}", fix=f"use one of: {known} (tariff.yaml `environments`)"
        )
    return environments[name]


def settings_of(result: CompileResult) -> Settings | None:
    return result.catalog.settings if result.catalog is not None else None


def open_session(
    config: Path,
    env: str | None,
    database_url: str | None,
    console: Console,
    *,
    migrate: bool = True,
    settings: Settings | None = None,
) -> Session:
    """Resolve and connect; bring the schema up to date (saying so) unless `migrate` is off."""
    if settings is None and env is not None:
        settings = settings_of(compile_config(config))
    environment = environment_for(settings, env)
    try:
        target = resolve_target(database_url, environment=environment, config_dir=config)
        engine = create_engine(target)
        # Only migrate when something is pending: plan must work with read-only credentials.
        if migrate and status(engine, target.schema).pending:
            applied = upgrade(engine, target.schema)
            if applied:
                console.print(
                    f"[dim]database: applied migrations {', '.join(applied)} to schema "
                    f"{target.schema!r} in {target.display_url}[/dim]"
                )
        else:
            check(engine, target.schema)
    except (SchemaMissingError, SchemaOutdatedError) as exc:
        raise CommandError(exc.message, exc.fix) from exc
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    return Session(config, target, engine, environment)


@dataclass(frozen=True, slots=True)
class Transaction:
    """A connection inside one transaction on the resolved database, and the schema Tariff owns there."""

    conn: Connection
    schema: str

    @property
    def timezone(self) -> str:
        """The published catalog's time zone, for showing and reading times (UTC before any apply)."""
        from database.customers import project_timezone

        return project_timezone(self.conn, self.schema)


@contextmanager
def transaction(config: Path, env: str | None, database_url: str | None) -> Iterator[Transaction]:
    """One transaction for a command; database errors become a message and a fix (exit 1)."""
    # Migration notes go to stderr, so `--format json` output stays parseable.
    session = open_session(config, env, database_url, stderr_console())
    try:
        with session.engine.begin() as conn:
            yield Transaction(conn, session.schema)
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    finally:
        session.engine.dispose()
