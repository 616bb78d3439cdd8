"""`tariff quote` and `tariff promo …` against the test database: happy paths in text and JSON, and bad
input reported as a message and a fix (exit 1) with nothing recorded. Also the plan impact helper."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.promo_commands import register
from database.promotions import promotion_impact
from tests.promo_support import SCHEMA, SHIPPED, compile_dir, customers, publish, subscribe

Run = Callable[..., Any]
AT_LAUNCH = "2026-11-25T12:00"  # read in the project's time zone (Asia/Kolkata)


@pytest.fixture
def cli(engine: Engine, pg_url: str) -> Run:
    publish(engine)
    app = typer.Typer()
    register(app)

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "220"}).invoke(
            app, [*args, "--config", str(SHIPPED), "--database-url", pg_url]
        )
        if isinstance(result.exception, CommandError):
            assert code == 1, f"{result.exception.message} ({result.exception.fix})"
            return result.exception
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def count(engine: Engine, table: str) -> int:
    with engine.begin() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {SCHEMA}.{table}")).scalar_one())


# ------------------------------------------------------------------------------------------------ quote


def test_quote_text_shows_the_breakdown(cli: Run, engine: Engine) -> None:
    customers(engine, "new-in", country="IN")
    args = ["--plan", "pro", "--cycle", "monthly", "--customer", "new-in", "--code", "welcome20"]
    out = cli("quote", *args, "--at", AT_LAUNCH).stdout
    assert "plan pro (monthly) · region IN · INR · customer new-in" in out
    assert "welcome-code" in out and "−299.80 INR (first payment)" in out
    assert "code_required" in out or "not_applicable" in out
    assert "list price" in out and "1,499.00 INR" in out
    assert "final price" in out and "1,199.20 INR" in out


def test_quote_json_is_the_sql_result(cli: Run) -> None:
    args = ["--bundle", "creator-bundle", "--region", "US", "--at", AT_LAUNCH]
    raw = json.loads(cli("quote", *args, "--format", "json").stdout)
    assert (raw["currency"], raw["list"], raw["final"]) == ("USD", "209.00", "199.00")
    assert [c["list_minor"] for c in raw["components"]] == [19000, 1900]
    assert raw["discounts"][0]["promotion"] == "creator-bundle"


def test_quote_benefits_and_bundle_text(cli: Run, engine: Engine) -> None:
    customers(engine, "free-user", country="IN")
    with engine.begin() as conn:
        subscribe(conn, "free-user", "free")
    out = cli(
        "quote", "--plan", "pro", "--cycle", "annual", "--customer", "free-user", "--at", AT_LAUNCH
    ).stdout
    assert "+16 trial days" in out
    bundle = cli("quote", "--bundle", "creator-bundle", "--region", "IN", "--at", AT_LAUNCH).stdout
    assert "plan pro (annual)" in bundle and "package extra-500" in bundle and "15,999.00 INR" in bundle


def test_quote_with_a_bad_code_prints_why_and_exits_1(cli: Run) -> None:
    args = ["--plan", "pro", "--cycle", "monthly", "--region", "IN", "--code", "NOPE1234"]
    result = cli("quote", *args, "--at", AT_LAUNCH, code=1)
    assert "unknown_code" in result.stdout
    assert "code NOPE1234 does not apply: unknown_code" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--plan", "pro"], "needs a billing cycle"),
        (["--cycle", "monthly"], "exactly one of --plan, --package or --bundle"),
        (["--plan", "pro", "--package", "extra-500"], "exactly one of"),
        (["--plan", "platinum", "--cycle", "monthly"], 'unknown plan "platinum"'),
        (["--plan", "pro", "--cycle", "monthly", "--region", "ZZ"], 'unknown region "ZZ"'),
        (["--plan", "pro", "--cycle", "monthly", "--customer", "ghost"], 'unknown customer "ghost"'),
        (["--plan", "pro", "--cycle", "monthly", "--region", "IN", "--currency", "USD"], "currency mismatch"),
        (["--plan", "pro", "--cycle", "monthly", "--at", "next tuesday"], "--at: not a valid date/time"),
    ],
)
def test_quote_bad_input(cli: Run, args: list[str], message: str) -> None:
    error = cli("quote", *args, code=1)
    assert message in error.message


# ------------------------------------------------------------------------------------------------ promo


def test_promo_list_states_over_time(cli: Run) -> None:
    def states(at: str) -> dict[str, str]:
        rows = json.loads(cli("promo", "list", "--at", at, "--format", "json").stdout)
        return {row["id"]: row["state"] for row in rows}

    assert states("2026-10-25T12:00")["diwali-2026"] == "active"
    assert states("2026-10-25T12:00")["launch-codes"] == "scheduled"
    later = states("2026-12-25T12:00")
    assert later["diwali-2026"] == "ended" and later["festive-season"] == "active"
    assert states("2027-06-01T00:00")["festive-season"] == "scheduled"  # yearly: next window
    text = cli("promo", "list", "--at", AT_LAUNCH).stdout
    assert "welcome-code" in text and "0 / 5,000" in text and "500" in text and "30% off" in text


def test_promo_list_shows_exhausted(cli: Run, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {SCHEMA}.promotion_usage SET redeemed = cap WHERE promotion_id = 'welcome-code'")
        )
    rows = json.loads(cli("promo", "list", "--at", AT_LAUNCH, "--format", "json").stdout)
    welcome = next(row for row in rows if row["id"] == "welcome-code")
    assert (welcome["state"], welcome["redemptions"], welcome["max_redemptions"]) == ("exhausted", 5000, 5000)


def test_codes_list_export_and_generate(cli: Run, engine: Engine, tmp_path: Path) -> None:
    listed = json.loads(
        cli("promo", "codes", "list", "launch-codes", "--limit", "5", "--format", "json").stdout
    )
    assert (listed["total"], listed["used"], len(listed["codes"])) == (500, 0, 5)
    assert "single-use" in cli("promo", "codes", "list", "launch-codes", "--limit", "3").stdout
    out = tmp_path / "codes.csv"
    cli("promo", "codes", "export", "launch-codes", "--format", "csv", "--out", str(out))
    exported = list(csv.DictReader(io.StringIO(out.read_text("utf-8"))))
    assert len(exported) == 500 and exported[0]["promotion"] == "launch-codes"
    assert {row["source"] for row in exported} == {"config"}
    made = json.loads(
        cli("promo", "codes", "generate", "launch-codes", "--count", "25", "--format", "json").stdout
    )
    assert (made["count"], made["prefix"], made["length"], made["source"]) == (25, "PGLAUNCH", 10, "cli")
    assert made["revision"] is not None
    assert count(engine, "promotion_codes") == 500 + 25 + 1
    text = cli(
        "promo", "codes", "generate", "launch-codes", "--count", "5", "--prefix", "xmas", "--length", "8"
    )
    assert "generated 5 code(s) for launch-codes" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["launch-codes", "--count", "-3"], "--count -3 is out of range"),
        (["launch-codes", "--count", "0"], "out of range"),
        (["launch-codes", "--count", "5000000"], "out of range"),
        (["launch-codes", "--count", "5", "--length", "3"], "code length 3 is out of range"),
        (["launch-codes", "--count", "5", "--prefix", "no-dash"], "invalid code prefix"),
        (["ghost", "--count", "5"], "unknown promotion 'ghost'"),
        (["diwali-2026", "--count", "5"], "applies automatically"),
    ],
)
def test_codes_generate_bad_input_records_nothing(
    cli: Run, engine: Engine, args: list[str], message: str
) -> None:
    before = (count(engine, "promotion_codes"), count(engine, "code_batches"))
    error = cli("promo", "codes", "generate", *args, code=1)
    assert message in error.message
    assert (count(engine, "promotion_codes"), count(engine, "code_batches")) == before


def test_codes_of_an_unknown_promotion(cli: Run) -> None:
    assert "unknown promotion 'ghost'" in cli("promo", "codes", "list", "ghost", code=1).message
    assert "unknown promotion 'ghost'" in cli("promo", "codes", "export", "ghost", code=1).message


def test_promo_check(cli: Run, engine: Engine) -> None:
    customers(engine, "new-in", country="IN")
    customers(engine, "paid", country="IN")
    with engine.begin() as conn:
        subscribe(conn, "paid", "pro")
    ok = cli("promo", "check", "welcome20", "--at", AT_LAUNCH)
    assert "welcome-code" in ok.stdout and "the code works" in ok.stdout
    purchase = ["--plan", "pro", "--cycle", "monthly", "--at", AT_LAUNCH]
    for_purchase = json.loads(
        cli("promo", "check", "WELCOME20", "--customer", "new-in", *purchase, "--format", "json").stdout
    )
    assert for_purchase["valid"] is True and for_purchase["quote"]["final"] == "1199.20"
    not_for_them = cli("promo", "check", "WELCOME20", "--customer", "paid", *purchase, code=1)
    assert "not_eligible: new customers only" in not_for_them.stdout
    ended = cli("promo", "check", "welcome20", "--at", "2027-05-01T00:00", code=1)
    assert "its promotion has ended" in ended.stdout
    unknown = cli("promo", "check", "WELC0ME20", code=1)
    assert "unknown code 'WELC0ME20'" in unknown.message and "never contain 0, O, 1, I or L" in unknown.fix
    # Checkout takes blanks pasted around a code off, as check does; a blank inside makes it unknown: say so.
    assert "WELCOME20" in cli("promo", "check", "\u00a0welcome20\t\n", "--at", AT_LAUNCH).stdout
    pasted = cli("promo", "check", "welcome\t20", "--at", AT_LAUNCH, code=1)
    assert "unknown code 'WELCOME\\t20'" in pasted.message and "tab or line break inside it" in pasted.fix


def test_promo_check_single_use_code(cli: Run, engine: Engine) -> None:
    with engine.begin() as conn:
        code = conn.execute(
            sa.text(f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' LIMIT 1")
        ).scalar_one()
        conn.execute(sa.text(f"UPDATE {SCHEMA}.promotion_codes SET used = true WHERE code = :c"), {"c": code})
    used = cli("promo", "check", code.lower(), "--at", AT_LAUNCH, code=1)
    assert "single-use, used" in used.stdout and "already redeemed" in used.stdout


# ------------------------------------------------------------------------------------------ plan impact


def test_promotion_impact_counts_eligible_customers_and_redemptions(engine: Engine) -> None:
    publish(engine)
    customers(engine, "in-new-1", "in-new-2", country="IN")
    customers(engine, "us-new", country="US")
    customers(engine, "in-paid", country="IN")
    customers(engine, "student", country="US", segments=["students"])
    customers(engine, "clx9a2b3c0002pg8r7t1w6y2q", country="IN")  # on beta-testers.csv
    with engine.begin() as conn:
        subscribe(conn, "in-paid", "pro")
        subscribe(conn, "us-new", "free")
        conn.execute(
            sa.text(
                f"SELECT {SCHEMA}.redeem('in-new-1', CAST(:i AS jsonb), 'IN', NULL, 'k1', "
                "CAST('2026-10-25T12:00:00+05:30' AS timestamptz))"
            ),
            {"i": '{"plan": "pro", "cycle": "annual"}'},
        )
    catalog = compile_dir(SHIPPED)
    with engine.begin() as conn:
        live = promotion_impact(
            conn, SCHEMA, ["diwali-2026", "students", "free-to-pro", "beta-testers", "nope"]
        )
        desired = promotion_impact(conn, SCHEMA, ["diwali-2026"], catalog)
    assert live["diwali-2026"] == {"eligible_customers": 3, "redemptions": 1}  # new customers in IN
    assert live["students"] == {"eligible_customers": 1, "redemptions": 0}
    assert live["free-to-pro"] == {"eligible_customers": 1, "redemptions": 0}
    assert live["beta-testers"] == {"eligible_customers": 1, "redemptions": 0}
    assert live["nope"] == {"eligible_customers": 0, "redemptions": 0}
    assert desired == {"diwali-2026": live["diwali-2026"]}
