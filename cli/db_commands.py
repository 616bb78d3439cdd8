"""`tariff db`: create and upgrade the Tariff schema, show where it stands, stop the embedded server.

Database modules are imported inside the commands: `tariff validate` should not pay for SQLAlchemy.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cli.options import ConfigOption, DatabaseUrlOption, EnvOption, OutputFormat, OutputFormatOption
from cli.output import print_json, stdout_console

db_app = typer.Typer(
    help="The Tariff schema in PostgreSQL: migrations and the embedded server.", no_args_is_help=True
)


@db_app.command("upgrade")
def upgrade_command(
    config: ConfigOption = Path("pricing"), env: EnvOption = None, database_url: DatabaseUrlOption = None
) -> None:
    """Create the schema or apply pending migrations (plan and apply also do this, saying so)."""
    from cli.session import open_session
    from database.migrate import status as schema_status

    console = stdout_console()
    session = open_session(config, env, database_url, console)
    state = schema_status(session.engine, session.schema)
    console.print(
        f"schema {session.schema!r} in {session.target.display_url} is at version {state.current} "
        f"(latest {state.latest})"
    )


@db_app.command("status")
def status_command(
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Which database Tariff would use, and its schema version. Writes nothing."""
    from cli.session import environment_for, settings_of
    from compiler.project import compile_config
    from database.connection import create_engine, resolve_target
    from database.migrate import status as schema_status

    environment = environment_for(settings_of(compile_config(config)), env) if env else None
    target = resolve_target(database_url, environment=environment, config_dir=config)
    state = schema_status(create_engine(target), target.schema)
    if format_ is OutputFormat.json:
        print_json(
            {
                "database": target.display_url,
                "source": target.source,
                "schema": target.schema,
                "exists": state.exists,
                "version": state.current,
                "latest": state.latest,
                "pending": list(state.pending),
            }
        )
        return
    console = stdout_console()
    console.print(f"database: {target.display_url} ({target.origin})")
    if not state.exists:
        console.print(f"schema:   {target.schema} — not created yet (run `tariff db upgrade`)")
    elif state.pending:
        console.print(
            f"schema:   {target.schema} — version {state.current} of {state.latest}, pending "
            f"{', '.join(state.pending)}"
        )
    else:
        console.print(f"schema:   {target.schema} — version {state.current}, up to date")


@db_app.command("stop")
def stop_command(config: ConfigOption = Path("pricing")) -> None:
    """Stop the embedded PostgreSQL server kept under .tariff/ next to the config (its data is kept)."""
    from database import embedded

    console = stdout_console()
    root = embedded.data_root(config)
    if embedded.stop(root):
        console.print(f"stopped the embedded PostgreSQL in {root}")
    else:
        console.print(f"no embedded PostgreSQL is running in {root}")
