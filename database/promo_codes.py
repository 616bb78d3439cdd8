"""Promotion codes: generated batches and vanity codes in `promotion_codes` (migration 0006).

Generated codes are cryptographically random (`secrets`) over an alphabet without lookalikes, so a code
read aloud or copied from a screenshot cannot be mistyped into another valid code; they are inserted
set-based (COPY into a temporary table, then one INSERT … ON CONFLICT DO NOTHING), and collisions, with
each other or with any existing code of any promotion, are topped up until the batch is complete.

`sync_code_batches` is what `tariff apply` runs after writing the catalog: it makes the codes match the
config without ever regenerating or deleting one, so re-applying is stable and printed codes stay valid.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.catalog import Catalog
from database.connection import quote_schema
from database.errors import DatabaseError

# No 0/O, 1/I/L: the characters people confuse. 31 symbols, so a 10-character code carries ~49.5 bits.
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
MIN_LENGTH, MAX_LENGTH, DEFAULT_LENGTH = 6, 24, 10
MAX_COUNT = 1_000_000
PREFIX_PATTERN = re.compile(r"[A-Z0-9]{0,12}")
CODE_PATTERN = re.compile(r"[A-Z0-9][A-Z0-9-]{2,63}")
Source = Literal["config", "cli"]

# Byte → symbol by rejection sampling: 248 = 8 × 31 byte values map evenly; 248..255 are dropped, so every
# symbol is equally likely (a plain `% 31` would favour the first eight).
_ACCEPTED = 256 - 256 % len(ALPHABET)
_TO_SYMBOL = bytes.maketrans(bytes(range(256)), bytes(ord(ALPHABET[b % len(ALPHABET)]) for b in range(256)))
_REJECTED = bytes(range(_ACCEPTED, 256))
_CHUNK = 100_000  # codes per COPY write
_MAX_ROUNDS = 50


class CodeError(DatabaseError):
    """A code request the database must not carry out; nothing was written."""


@dataclass(frozen=True, slots=True)
class GeneratedBatch:
    batch_id: int
    promotion_id: str
    count: int
    length: int
    prefix: str
    source: Source
    collisions: int  # codes drawn again because they already existed (almost always 0)


@dataclass
class SyncResult:
    generated: list[GeneratedBatch] = field(default_factory=list)
    vanity_added: list[str] = field(default_factory=list)
    vanity_retired: list[str] = field(default_factory=list)

    @property
    def codes_generated(self) -> int:
        return sum(b.count for b in self.generated)


# Taken off both ends of a typed code, as SQL typed_codes() does (migration 0032): the Unicode White_Space
# characters, and the zero-width space, word joiner and byte-order mark that copying from a page leaves.
PASTED_BLANKS = (
    " \t\n\v\f\r\u0085\u00a0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000\u200b\u2060\ufeff"
)


def normalize_code(text: str) -> str:
    """A typed code as checkout's SQL reads it, `upper(btrim(typed_codes(code)))`, so `tariff promo check`
    and quote() or redeem() never disagree about a code.

    Blanks pasted at either end (PASTED_BLANKS: a tab, a line break, a non-breaking or zero-width space)
    are taken off; blanks inside a code make it unknown. upper() maps each character on its own, as
    PostgreSQL does (`ß` stays `ß`, never `SS`); Python's str.upper() could expand one character into
    several (`ﬁ` → `FI`) and turn a string checkout rejects into a valid code.
    """
    trimmed = text.strip(PASTED_BLANKS)
    if trimmed.isascii():
        return trimmed.upper()
    return "".join(_upper_char(c) for c in trimmed)


def _upper_char(char: str) -> str:
    upper = char.upper()
    return upper if len(upper) == 1 else char


def same_code(typed: str, stored: str) -> bool:
    """Compare a typed code with a stored one in constant time (no early exit leaking a matching prefix)."""
    return hmac.compare_digest(normalize_code(typed).encode(), normalize_code(stored).encode())


def random_codes(count: int, length: int, prefix: str = "") -> list[str]:
    """`count` codes of `prefix` + `length` random symbols; not yet checked for uniqueness."""
    needed = count * length
    symbols = bytearray()
    while len(symbols) < needed:
        # ~3% of bytes are rejected; ask for a little more than needed so one round is nearly always enough.
        draw = secrets.token_bytes(int((needed - len(symbols)) * 1.05) + 64)
        symbols += draw.translate(_TO_SYMBOL, _REJECTED)
    text = symbols[:needed].decode("ascii")
    return [prefix + text[i : i + length] for i in range(0, needed, length)]


def check_batch(count: int, length: int, prefix: str) -> None:
    """Raise CodeError for a batch spec out of range. (Even the shortest codes leave the batch under 0.2%
    of their space: 1,000,000 of 31^6 ≈ 887 million, so a guessed code is almost never valid.)"""
    if not 1 <= count <= MAX_COUNT:
        raise CodeError(f"cannot generate {count} codes", fix=f"ask for 1 to {MAX_COUNT:,} codes per batch")
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise CodeError(
            f"code length {length} is out of range", fix=f"use {MIN_LENGTH} to {MAX_LENGTH} random characters"
        )
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise CodeError(f"invalid code prefix {prefix!r}", fix="use up to 12 uppercase letters and digits")


def generate_codes(
    conn: Connection,
    schema: str,
    promotion_id: str,
    count: int,
    length: int = DEFAULT_LENGTH,
    prefix: str = "",
    source: Source = "cli",
    revision_id: int | None = None,
) -> GeneratedBatch:
    """Record a batch and insert `count` new single-use codes for it, unique across all promotions.
    Runs in the caller's transaction: on any error nothing of the batch remains."""
    check_batch(count, length, prefix)
    s = quote_schema(schema)
    known = conn.execute(
        sa.text(f"SELECT status FROM {s}.promotions WHERE id = :id"), {"id": promotion_id}
    ).scalar_one_or_none()
    if known is None:
        raise CodeError(f"unknown promotion {promotion_id!r}", fix="list them with `tariff promo list`")
    batch_id = int(
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.code_batches (promotion_id, prefix, length, count, source, revision_id) "
                "VALUES (:promotion, :prefix, :length, :count, :source, :revision) RETURNING id"
            ),
            {
                "promotion": promotion_id,
                "prefix": prefix,
                "length": length,
                "count": count,
                "source": source,
                "revision": revision_id,
            },
        ).scalar_one()
    )
    conn.execute(
        sa.text("CREATE TEMPORARY TABLE IF NOT EXISTS tariff_new_codes (code text NOT NULL) ON COMMIT DROP")
    )
    missing, drawn = count, 0
    for _round in range(_MAX_ROUNDS):
        if missing == 0:
            break
        conn.execute(sa.text("TRUNCATE tariff_new_codes"))
        _copy_codes(conn, _chunks(missing, length, prefix))
        drawn += missing
        inserted = conn.execute(
            sa.text(
                f"INSERT INTO {s}.promotion_codes (code, promotion_id, batch_id, single_use, revision_id) "
                "SELECT code, :promotion, :batch, true, :revision FROM tariff_new_codes "
                "ON CONFLICT (code) DO NOTHING"
            ),
            {"promotion": promotion_id, "batch": batch_id, "revision": revision_id},
        ).rowcount
        missing -= inserted
    if missing:
        raise CodeError(
            f"could not draw {count:,} unique codes for {promotion_id!r} ({missing:,} kept colliding)",
            fix="use longer codes or another prefix",
        )
    return GeneratedBatch(batch_id, promotion_id, count, length, prefix, source, drawn - count)


def sync_code_batches(conn: Connection, schema: str, catalog: Catalog, revision_id: int | None) -> SyncResult:
    """Make the live codes match the config, in the caller's (apply's) transaction, after write_catalog:

    * `codes.generate`: the first apply generates the batch; later applies generate nothing, unless the
      config's count grew, and then only the difference (never deletes: codes may be printed already).
    * `codes.vanity`: the code is registered for its promotion; a vanity code the config dropped is retired.
      A code already held by another live promotion is a CodeError (the whole apply rolls back).
    """
    s = quote_schema(schema)
    result = SyncResult()
    existing = {
        str(promo): int(total)
        for promo, total in conn.execute(
            sa.text(
                f"SELECT promotion_id, sum(count) FROM {s}.code_batches WHERE source = 'config' "
                "GROUP BY promotion_id"
            )
        )
    }
    for promo in catalog.promotions.values():
        batch = promo.code_batch
        if batch is None or promo.status == "retired":
            continue
        wanted = batch.count - existing.get(promo.id, 0)
        if wanted > 0:
            result.generated.append(
                generate_codes(
                    conn, schema, promo.id, wanted, batch.length, batch.prefix, "config", revision_id
                )
            )
    _sync_vanity(conn, s, catalog, revision_id, result)
    return result


def _sync_vanity(
    conn: Connection, s: str, catalog: Catalog, revision_id: int | None, result: SyncResult
) -> None:
    desired = {
        normalize_code(p.vanity_code): p.id
        for p in catalog.promotions.values()
        if p.vanity_code and p.status != "retired"
    }
    rows = conn.execute(
        sa.text(
            f"SELECT c.code, c.promotion_id, c.batch_id, c.retired_at IS NOT NULL AS retired, "
            f"p.status AS owner_status FROM {s}.promotion_codes c JOIN {s}.promotions p "
            "ON p.id = c.promotion_id WHERE c.code = ANY(CAST(:codes AS text[]))"
        ),
        {"codes": list(desired)},
    ).all()
    held = {str(row.code): row for row in rows}
    clashes = []
    for code, promo_id in desired.items():
        row = held.get(code)
        if row is None or row.promotion_id == promo_id:
            continue
        # A vanity code may move to a new promotion once its old one is retired or dropped it; a generated
        # code or a code of a live promotion never changes meaning.
        if row.batch_id is not None or (row.owner_status != "retired" and not row.retired):
            clashes.append(f"{code} (already a code of promotion {row.promotion_id!r})")
    if clashes:
        raise CodeError(
            "vanity code(s) clash with existing codes: " + ", ".join(clashes),
            fix="codes are unique across all promotions, including retired ones: choose another code",
        )
    added = conn.execute(
        sa.text(
            f"INSERT INTO {s}.promotion_codes AS c (code, promotion_id, single_use, revision_id) "
            "SELECT d.code, d.promotion, false, :revision "
            "FROM unnest(CAST(:codes AS text[]), CAST(:promotions AS text[])) AS d(code, promotion) "
            "ON CONFLICT (code) DO UPDATE SET promotion_id = EXCLUDED.promotion_id, retired_at = NULL, "
            "revision_id = EXCLUDED.revision_id "
            "WHERE c.batch_id IS NULL "
            "AND (c.promotion_id <> EXCLUDED.promotion_id OR c.retired_at IS NOT NULL) "
            "RETURNING c.code"
        ),
        {"codes": list(desired), "promotions": list(desired.values()), "revision": revision_id},
    ).scalars()
    result.vanity_added = sorted(str(code) for code in added)
    retired = conn.execute(
        sa.text(
            f"UPDATE {s}.promotion_codes SET retired_at = now() "
            "WHERE batch_id IS NULL AND retired_at IS NULL "
            "AND NOT (code = ANY(CAST(:codes AS text[]))) RETURNING code"
        ),
        {"codes": list(desired)},
    ).scalars()
    result.vanity_retired = sorted(str(code) for code in retired)


def _chunks(count: int, length: int, prefix: str) -> Iterator[bytes]:
    # Sorted as a whole: the primary key index then fills page by page instead of at random (about twice
    # as fast for a million codes). A million codes are ~60 MB of Python strings, the batch maximum.
    codes = sorted(random_codes(count, length, prefix))
    for start in range(0, count, _CHUNK):
        yield ("\n".join(codes[start : start + _CHUNK]) + "\n").encode("ascii")


def _copy_codes(conn: Connection, chunks: Iterator[bytes]) -> None:
    """COPY through the driver: the fastest way into PostgreSQL, and codes need no escaping."""
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy("COPY tariff_new_codes (code) FROM STDIN") as copy:
        for chunk in chunks:
            copy.write(chunk)
