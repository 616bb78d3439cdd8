"""Errors of the database layer: each says what went wrong and how to fix it, and never holds a password."""

from __future__ import annotations


class DatabaseError(Exception):
    """A database problem a user can act on. `str()` is the message; `fix` is the suggested remedy."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def describe(self) -> str:
        """Message and fix on separate lines, the way the CLI prints them."""
        return self.message if self.fix is None else f"{self.message}\n  fix: {self.fix}"


class EmbeddedServerError(DatabaseError):
    """The private PostgreSQL under `.tariff/pg` is missing, cannot start or cannot stop."""


class ConnectionFailedError(DatabaseError):
    """The server cannot be reached or refuses us (host, port, credentials, database name)."""


class MigrationError(DatabaseError):
    """The Tariff schema cannot be created or upgraded."""


class SchemaTooNewError(MigrationError):
    """The database was migrated by a newer Tariff than this one."""

    def __init__(self, current: int, known: int) -> None:
        super().__init__(
            f"database schema is at version {current}, this Tariff knows up to {known}: upgrade Tariff",
            fix="install the Tariff release that migrated this database (pip install -U tariff)",
        )
        self.current = current
        self.known = known


class ChecksumMismatchError(MigrationError):
    """A migration file was edited after the database applied it."""

    def __init__(self, filename: str, applied: str, shipped: str) -> None:
        super().__init__(
            f"migration {filename} was changed after it was applied "
            f"(database has {applied[:19]}, file is {shipped[:19]})",
            fix="restore the original file; schema changes always go in a new, higher-numbered migration",
        )
        self.filename = filename


class SchemaMissingError(MigrationError):
    """The schema (or its migration table) does not exist yet."""


class SchemaOutdatedError(MigrationError):
    """The schema exists but this Tariff has migrations it has not applied."""
