"""Promotion codes: random over an unambiguous alphabet, unique across all promotions (collisions topped up),
generated once by apply and stable on re-apply, vanity codes kept in step with the config, references
checked per statement, and a million codes generated within the time budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import database.promo_codes as promo_codes
from database.promo_codes import (
    ALPHABET,
    CodeError,
    check_batch,
    generate_codes,
    normalize_code,
    random_codes,
    same_code,
    sync_code_batches,
)
from database.promotions import Item, quote
from tests.promo_support import LAUNCH, SCHEMA, compile_dir, publish, scenario_config

CODED = """
id: {id}
name: {id}
discount: {{percent_off: 10}}
applies_to: {{plans: [pro]}}
schedule: {{starts: "2026-01-01T00:00:00+05:30", ends: "2027-12-31T00:00:00+05:30"}}
codes: {codes}
"""


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.begin() as conn:
        return list(conn.execute(sa.text(sql.replace("{s}", SCHEMA)), params))


def codes_of(engine: Engine, promotion: str) -> set[str]:
    return {
        row.code
        for row in rows(engine, "SELECT code FROM {s}.promotion_codes WHERE promotion_id = :p", p=promotion)
    }


# ----------------------------------------------------------------------------------------- the codes


def test_alphabet_has_no_lookalikes() -> None:
    assert not set("01OIL") & set(ALPHABET)
    assert len(set(ALPHABET)) == len(ALPHABET) == 31


def test_random_codes_use_the_alphabet_evenly() -> None:
    codes = random_codes(20_000, 10, "PG")
    assert all(len(c) == 12 and c.startswith("PG") for c in codes)
    symbols = Counter("".join(c[2:] for c in codes))
    assert set(symbols) == set(ALPHABET)
    expected = 200_000 / len(ALPHABET)
    assert all(abs(n - expected) < expected * 0.1 for n in symbols.values()), symbols  # no modulo bias


def test_codes_compare_case_insensitively_in_constant_time() -> None:
    assert normalize_code("  welcome20 ") == "WELCOME20"
    assert same_code("welcome20", "WELCOME20")
    assert not same_code("WELCOME2O", "WELCOME20")


@pytest.mark.parametrize(
    ("count", "length", "prefix", "message"),
    [
        (0, 10, "", "cannot generate 0 codes"),
        (-5, 10, "", "cannot generate -5 codes"),
        (1_000_001, 10, "", "cannot generate 1000001 codes"),
        (10, 5, "", "code length 5 is out of range"),
        (10, 25, "", "code length 25 is out of range"),
        (10, 10, "pg-", "invalid code prefix"),
        (10, 10, "ABCDEFGHJKMNP", "invalid code prefix"),
    ],
)
def test_batch_specs_out_of_range_are_refused(count: int, length: int, prefix: str, message: str) -> None:
    with pytest.raises(CodeError, match=message):
        check_batch(count, length, prefix)


# -------------------------------------------------------------------------------------- generation


def test_generated_codes_are_unique_across_promotions(engine: Engine, tmp_path: Path) -> None:
    config = scenario_config(
        tmp_path,
        {
            "a": CODED.format(id="promo-a", codes="{generate: {prefix: PG, count: 20000, length: 6}}"),
            "b": CODED.format(id="promo-b", codes="{generate: {prefix: PG, count: 20000, length: 6}}"),
        },
    )
    synced = publish(engine, config)
    assert sorted((b.promotion_id, b.count, b.source) for b in synced.generated) == [
        ("promo-a", 20000, "config"),
        ("promo-b", 20000, "config"),
    ]
    a, b = codes_of(engine, "promo-a"), codes_of(engine, "promo-b")
    assert len(a) == len(b) == 20000 and not a & b
    assert all(len(code) == 8 and set(code[2:]) <= set(ALPHABET) for code in a | b)


def test_collisions_are_topped_up(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(engine, scenario_config(tmp_path, {"a": CODED.format(id="promo-a", codes="{vanity: TAKEN123}")}))
    real: Callable[[int, int, str], list[str]] = random_codes
    calls: list[int] = []

    def colliding(count: int, length: int, prefix: str = "") -> list[str]:
        calls.append(count)
        if len(calls) == 1:  # the first draw: half the codes exist already, the rest repeat one another
            return ["TAKEN123"] * (count // 2) + ["PGDUPLICATE"] * (count - count // 2)
        return real(count, length, prefix)

    monkeypatch.setattr(promo_codes, "random_codes", colliding)
    with engine.begin() as conn:
        batch = generate_codes(conn, SCHEMA, "promo-a", 100, 8, "PG")
    assert calls == [100, 99] and batch.collisions == 99
    generated = rows(engine, "SELECT code FROM {s}.promotion_codes WHERE batch_id = :b", b=batch.batch_id)
    assert len(generated) == 100
    assert rows(
        engine, "SELECT promotion_id, single_use FROM {s}.promotion_codes WHERE code = 'TAKEN123'"
    ) == [("promo-a", False)]


def test_apply_generates_once_and_is_stable(engine: Engine, tmp_path: Path) -> None:
    config = scenario_config(
        tmp_path, {"a": CODED.format(id="promo-a", codes="{generate: {prefix: PGA, count: 50}}")}
    )
    first = publish(engine, config)
    assert [b.count for b in first.generated] == [50]
    before = codes_of(engine, "promo-a")
    catalog = compile_dir(config)
    with engine.begin() as conn:
        again = sync_code_batches(conn, SCHEMA, catalog, None)
    with engine.begin() as conn:
        third = sync_code_batches(conn, SCHEMA, catalog, None)
    assert again.generated == [] and third.generated == [] and codes_of(engine, "promo-a") == before
    # A larger count in the config adds only the difference; a smaller one deletes nothing.
    (config / "promotions" / "a.yaml").write_text(
        CODED.format(id="promo-a", codes="{generate: {prefix: PGA, count: 80}}"), "utf-8"
    )
    grown = publish(engine, config)
    assert [(b.count, b.source) for b in grown.generated] == [(30, "config")]
    assert len(codes_of(engine, "promo-a")) == 80 and before < codes_of(engine, "promo-a")
    (config / "promotions" / "a.yaml").write_text(
        CODED.format(id="promo-a", codes="{generate: {prefix: PGA, count: 10}}"), "utf-8"
    )
    assert publish(engine, config).generated == []
    assert len(codes_of(engine, "promo-a")) == 80
    batches = rows(engine, "SELECT count, source, revision_id FROM {s}.code_batches ORDER BY id")
    assert [(b.count, b.source) for b in batches] == [(50, "config"), (30, "config")]
    assert all(b.revision_id is not None for b in batches)


def test_shipped_launch_codes_and_vanity_code(engine: Engine) -> None:
    synced = publish(engine)
    assert [(b.promotion_id, b.count, b.prefix, b.length) for b in synced.generated] == [
        ("launch-codes", 500, "PGLAUNCH", 10)
    ]
    assert synced.vanity_added == ["WELCOME20"]
    launch = codes_of(engine, "launch-codes")
    assert len(launch) == 500 and all(c.startswith("PGLAUNCH") and len(c) == 18 for c in launch)


def test_vanity_code_follows_the_config(engine: Engine, tmp_path: Path) -> None:
    config = scenario_config(tmp_path, {"a": CODED.format(id="promo-a", codes="{vanity: Spring10}")})
    publish(engine, config)
    (config / "promotions" / "a.yaml").write_text(
        CODED.format(id="promo-a", codes="{vanity: SUMMER10}"), "utf-8"
    )
    synced = publish(engine, config)
    assert (synced.vanity_added, synced.vanity_retired) == (["SUMMER10"], ["SPRING10"])
    with engine.begin() as conn:
        result = quote(
            conn, SCHEMA, Item(plan="pro", cycle="monthly"), codes=["spring10", "summer10"], at=LAUNCH
        )
    assert {c.code: c.reason for c in result.codes} == {"SPRING10": "unknown_code", "SUMMER10": None}


def test_vanity_code_clashing_with_a_generated_code_fails_the_sync(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = scenario_config(tmp_path, {"a": CODED.format(id="promo-a", codes="{generate: {count: 1}}")})
    monkeypatch.setattr(promo_codes, "random_codes", lambda count, length, prefix="": ["CLASH12345"] * count)
    publish(engine, config)
    scenario_config(
        tmp_path, {"b": CODED.format(id="promo-b", codes="{vanity: clash12345}")}, keep_shipped=True
    )
    with pytest.raises(CodeError, match="CLASH12345 \\(already a code of promotion 'promo-a'\\)"):
        publish(engine, config)
    assert rows(engine, "SELECT promotion_id FROM {s}.promotion_codes WHERE code = 'CLASH12345'") == [
        ("promo-a",)
    ]


def test_code_references_are_checked_per_statement(engine: Engine) -> None:
    publish(engine)
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="missing promotion nope"):
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.promotion_codes (code, promotion_id, single_use) "
                "VALUES ('ZZZ9', 'nope', false)"
            )
        )
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="batch"):
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.promotion_codes (code, promotion_id, batch_id, single_use) "
                f"SELECT 'ZZZ8', 'welcome-code', id, true FROM {SCHEMA}.code_batches LIMIT 1"
            )
        )
    with (
        engine.begin() as conn,
        pytest.raises(sa.exc.IntegrityError, match="cannot delete from code_batches"),
    ):
        conn.execute(sa.text(f"DELETE FROM {SCHEMA}.code_batches"))
    with engine.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="missing promotion"):
        conn.execute(
            sa.text(f"UPDATE {SCHEMA}.promotion_codes SET promotion_id = 'nope' WHERE code = 'WELCOME20'")
        )


@pytest.mark.slow
def test_a_million_codes_in_one_batch(engine: Engine, tmp_path: Path) -> None:
    publish(engine, scenario_config(tmp_path, {"a": CODED.format(id="promo-a", codes="{vanity: MILLION1}")}))
    with engine.begin() as conn:
        batch = generate_codes(conn, SCHEMA, "promo-a", 1_000_000, 10, "M")
    assert batch.count == 1_000_000
    assert rows(engine, "SELECT count(*) FROM {s}.promotion_codes WHERE batch_id = :b", b=batch.batch_id)[0][
        0
    ] == (1_000_000)
