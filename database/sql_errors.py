"""What Tariff's SQL functions raise (SQLSTATE, message, HINT), turned into the Python API's own errors.

The functions report a refusal as an SQLSTATE with a message for the user and, in HINT, how to fix it; each
module of the API (ledger, payments, customers, promotions) raises that as its own error class, with the
message and the hint as the error's fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import DBAPIError

# Connection, resources, operator intervention, system and internal errors: trouble with the server, not a
# refusal by a function, so they stay as they are.
SERVER_TROUBLE = ("08", "53", "57", "58", "XX")


class FunctionErrorClass(Protocol):
    """An error class built like LedgerError: `(message, fix, sqlstate)`."""

    def __call__(self, message: str, fix: str | None = None, sqlstate: str | None = None) -> Exception: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a SQL function raised: its SQLSTATE, primary message and HINT."""

    sqlstate: str | None
    message: str
    hint: str | None

    def as_error(self, kind: FunctionErrorClass, fix: str | None = None) -> Exception:
        """`kind(message, hint, sqlstate)`; `fix` stands in for a missing HINT."""
        return kind(self.message, self.hint if fix is None else self.hint or fix, self.sqlstate)


def refusal(exc: DBAPIError) -> Refusal:
    """The SQLSTATE, message and HINT of `exc` (the driver's first line where it has no diagnostics)."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    message = getattr(diag, "message_primary", None) or str(orig).strip().splitlines()[0]
    return Refusal(getattr(orig, "sqlstate", None), message, getattr(diag, "message_hint", None))


def translate(exc: DBAPIError, kinds: FunctionErrorClass | Mapping[str, FunctionErrorClass]) -> Exception:
    """`exc` as the error class for its SQLSTATE, or `exc` itself when it has none.

    `kinds` is either a mapping from SQLSTATE to error class, or one class for every SQLSTATE but those of
    SERVER_TROUBLE.
    """
    raised = refusal(exc)
    if raised.sqlstate is None:
        return exc
    if isinstance(kinds, Mapping):
        kind = kinds.get(raised.sqlstate)
    else:
        kind = None if raised.sqlstate[:2] in SERVER_TROUBLE else kinds
    return exc if kind is None else raised.as_error(kind)
