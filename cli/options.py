"""Options shared by every command, so each one spells them the same way."""

from __future__ import annotations

from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cli.session import Transaction

# Largest values of PostgreSQL's integer types: numbers the commands pass to the database (credits,
# limits, row counts) are bounded by the column or parameter they land in, so typer refuses a larger one
# as a usage error instead of the database failing mid-command.
BIGINT_MAX = 9_223_372_036_854_775_807
INTEGER_MAX = 2_147_483_647

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="The config directory (the one holding tariff.yaml).",
        envvar="TARIFF_CONFIG",
        show_default=True,
    ),
]


class OutputFormat(StrEnum):
    text = "text"
    json = "json"


OutputFormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        "-e",
        help="Environment from tariff.yaml `environments` (its database and PayU settings).",
        envvar="TARIFF_ENV",
        show_default=False,
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="PostgreSQL URL, overriding TARIFF_DATABASE_URL and --env. Without "
        "either, Tariff uses its embedded server under .tariff/ next to the config.",
        show_default=False,
    ),
]


def database(config: Path, env: str | None, database_url: str | None) -> AbstractContextManager[Transaction]:
    """One transaction for a command. cli.session (SQLAlchemy) is imported only when a command runs."""
    from cli.session import transaction

    return transaction(config, env, database_url)
