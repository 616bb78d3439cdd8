"""The CLI against input it cannot take: a lock timeout of 0, values the database cannot store, amounts
longer than the decimal context, JSON output of a config that does not validate, plans with policy
errors, numbers beyond PostgreSQL's integer types, output paths that cannot be written, narrow
terminals and exponents in CSV amounts. Each runs as users run it, through typer's CliRunner (or the
real entry point as a process) against real PostgreSQL where a database is involved.

A command error is rendered as `tariff`'s entry point renders it; any other exception is an internal
error and fails the test."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError, report_error
from cli.main import app
from compiler.money import Currency
from compiler.project import compile_config
from database.errors import DatabaseError
from database.migrate import advisory_key
from publishers.postgres.apply import lock_name

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
BIGINT_MAX = 9_223_372_036_854_775_807
INTEGER_MAX = 2_147_483_647


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: str
    stdout: str

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n{self.output}"


def tariff(*args: str | Path, columns: int = 200) -> Run:
    """Run `tariff ARGS` with a non-terminal standard input (as in CI)."""
    result = CliRunner(env={"COLUMNS": str(columns)}).invoke(app, [str(a) for a in args])
    output = result.output
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        if not isinstance(error, CommandError | DatabaseError):
            trace = "".join(traceback.format_exception(error))
            pytest.fail(f"internal error (a traceback for the user):\n{trace}")
        stream = io.StringIO()
        report_error(Console(file=stream, width=200, soft_wrap=True), error.message, error.fix)
        output += stream.getvalue()
    return Run(result.exit_code, output, result.stdout)


def process(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real entry point, as a process (exit codes as users get them)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("TARIFF_")},
        timeout=timeout,
        check=False,
    )


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TARIFF_ENV", "TARIFF_CONFIG", "TARIFF_DATABASE_URL", "TARIFF_ACTOR", "CI", "TARIFF_DEBUG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    target = tmp_path / "pricing"
    shutil.copytree(SHIPPED, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert text.count(old) == 1, f"{old!r} in {path}"
    path.write_text(text.replace(old, new), "utf-8")


def position(path: Path, needle: str) -> tuple[int, int]:
    """1-based line and column of the value after `needle` in `path`."""
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        if needle in line:
            return number, line.index(needle) + len(needle) + 1
    raise AssertionError(f"{needle!r} not in {path}")


def validate_json(config: Path) -> dict[str, object]:
    done = tariff("validate", "--config", config, "--format", "json")
    assert done.exit_code == 1, done
    document: dict[str, object] = json.loads(done.stdout)
    return document


def only_error(document: dict[str, object]) -> dict[str, object]:
    diagnostics = document["diagnostics"]
    assert isinstance(diagnostics, list)
    errors = [d for d in diagnostics if d["severity"] == "error"]
    assert len(errors) == 1, errors
    error: dict[str, object] = errors[0]
    return error


def apply_ok(config: Path, url: str) -> None:
    done = tariff("apply", "--config", config, "--database-url", url, "--auto-approve")
    assert done.exit_code == 0, done


# ------------------------------------------------------------------------------ 1. --lock-timeout 0


@pytest.fixture
def apply_lock_held(engine: Engine) -> Iterator[None]:
    """Another session holds the apply lock of schema `tariff`, as a running apply does."""
    with engine.connect() as conn, conn.begin():
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(lock_name("tariff"))}
        )
        yield


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("0", "--lock-timeout 0 does not wait for it"),
        # Under a millisecond used to become lock_timeout = '0ms': no timeout at all.
        ("0.0004", "gave up after waiting 0.0004s"),
    ],
)
def test_a_lock_timeout_of_zero_or_under_a_millisecond_refuses_at_once(
    apply_lock_held: None, config: Path, url: str, timeout: str, message: str
) -> None:
    started = time.monotonic()
    try:
        done = process(
            "apply",
            "--config",
            config,
            "--database-url",
            url,
            "--auto-approve",
            "--lock-timeout",
            timeout,
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`tariff apply --lock-timeout {timeout}` waited for the lock instead of refusing")
    assert done.returncode == 1, done.stderr
    assert "another apply is running on schema 'tariff'" in done.stderr and message in done.stderr
    assert "fix:" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 90


def test_lock_timeout_help_says_what_zero_does_and_the_limit_is_enforced(config: Path) -> None:
    helped = tariff("apply", "--help")
    assert "0 refuses at once" in re.sub(r"[\s│]+", " ", helped.output)
    too_long = tariff("apply", "--config", config, "--lock-timeout", "1e10")
    assert too_long.exit_code != 0 and "--lock-timeout" in too_long.output
    assert "2147483" in too_long.output


# ------------------------------------------------------------- 2 and 3. values the database cannot store


def test_a_price_beyond_bigint_minor_units_is_a_located_money_range_error(config: Path) -> None:
    pro = config / "plans" / "pro.yaml"
    edit(pro, "    INR: 1499\n", "    INR: 100000000000000000000\n")
    error = only_error(validate_json(config))
    assert error["code"] == "money.range"
    assert (error["file"], error["path"]) == ("plans/pro.yaml", "prices.monthly.INR")
    assert (error["line"], error["column"]) == position(pro, "    INR: ")
    assert "92233720368547758.07" in str(error["hint"])


def test_validate_reports_a_32_digit_amount_instead_of_crashing(config: Path) -> None:
    pro = config / "plans" / "pro.yaml"
    edit(pro, "    INR: 1499\n", "    INR: 99999999999999999999999999999999\n")
    text = tariff("validate", "--config", config)
    assert text.exit_code == 1, text
    line, column = position(pro, "    INR: ")
    where = f"plans/pro.yaml:{line}:{column}: error prices.monthly.INR"
    assert f"{where}: 99999999999999999999999999999999 INR is more than the database can store" in text.output
    assert "(money.range)" in text.output and "fix: write at most 92233720368547758.07" in text.output
    error = only_error(validate_json(config))  # and --format json still prints its document
    assert error["code"] == "money.range"


def test_amounts_longer_than_the_decimal_context_are_judged_exactly() -> None:
    inr = Currency("INR", 2)
    long_whole = Decimal("99999999999999999999999999999999")
    assert inr.fits(long_whole) and not inr.in_range(long_whole)
    assert not inr.fits(Decimal("123456789012345678901234567890.125"))
    assert inr.fits(Decimal("19.990")) and not inr.fits(Decimal("19.999"))
    assert inr.to_minor(inr.max_amount) == BIGINT_MAX
    with pytest.raises(ValueError, match="largest storable amount"):
        inr.to_minor(Decimal("92233720368547758.08"))


@pytest.mark.parametrize(
    ("file", "old", "new", "path", "maximum"),
    [
        (
            "plans/pro.yaml",
            "    amount: 500\n",
            "    amount: 99999999999999999999\n",
            "tokens.allowance.amount",
            BIGINT_MAX,
        ),
        (
            "plans/pro.yaml",
            "    monthly: 2500 ",
            "    monthly: 99999999999999999999 ",
            "tokens.limits.monthly",
            BIGINT_MAX,
        ),
        (
            "plans/pro.yaml",
            "    requests_per_minute: 20\n",
            "    requests_per_minute: 2147483648\n",
            "tokens.throttle.requests_per_minute",
            INTEGER_MAX,
        ),
        (
            "tokens/credits.yaml",
            "    tokens: 500\n",
            "    tokens: 9223372036854775808\n",
            "packages.extra-500.tokens",
            BIGINT_MAX,
        ),
        (
            "tokens/credits.yaml",
            "    max_members: 10\n",
            "    max_members: 2147483648\n",
            "pools.team.max_members",
            INTEGER_MAX,
        ),
    ],
)
def test_counters_beyond_their_column_type_are_schema_errors(
    config: Path, file: str, old: str, new: str, path: str, maximum: int
) -> None:
    edit(config / file, old, new)
    error = only_error(validate_json(config))
    assert (error["code"], error["file"], error["path"]) == ("schema.maximum", file, path)
    assert f"above the maximum {maximum}" in str(error["message"])
    assert f"Up to {maximum}" in str(error["expected"])  # the schema description says the bound
    assert error["hint"] == f"write at most {maximum}"


@pytest.mark.parametrize("escape", ["\\u0000", "\\0", "\\x00"])
def test_a_nul_character_in_text_is_a_located_error(config: Path, escape: str) -> None:
    pro = config / "plans" / "pro.yaml"
    edit(pro, "\nname: Pro\n", f'\nname: "Pro {escape}"\n')
    error = only_error(validate_json(config))
    assert error["code"] == "yaml.nul-character"
    assert (error["file"], error["path"]) == ("plans/pro.yaml", "name")
    assert (error["line"], error["column"]) == position(pro, "name: ")
    assert "\\u0000" in str(error["hint"])


def test_a_nul_character_in_a_key_is_a_located_error(config: Path) -> None:
    pro = config / "plans" / "pro.yaml"
    edit(pro, "\nname: Pro\n", '\nname: Pro\n"bad\\0key": 1\n')
    error = only_error(validate_json(config))
    assert error["code"] == "yaml.nul-character"
    assert (error["line"], error["column"]) == (position(pro, "name: Pro")[0] + 1, 1)


def test_a_raw_nul_byte_is_located_to_its_column(config: Path) -> None:
    pro = config / "plans" / "pro.yaml"
    pro.write_bytes(pro.read_bytes().replace(b"\nname: Pro\n", b"\nname: Pro\x00\n"))
    error = only_error(validate_json(config))
    assert error["code"] == "file.binary"
    line, column = position(pro, "name: Pro")
    assert (error["line"], error["column"]) == (line, column)


def test_plan_refuses_unstorable_values_before_the_database(engine: Engine, config: Path, url: str) -> None:
    edit(config / "plans" / "pro.yaml", "    INR: 1499\n", "    INR: 100000000000000000000\n")
    done = tariff("plan", "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "(money.range)" in done.output and "nothing was planned" in done.output


def test_the_largest_storable_values_apply_and_read_back(engine: Engine, config: Path, url: str) -> None:
    pro = config / "plans" / "pro.yaml"
    edit(pro, "    INR: 1499\n", "    INR: 92233720368547758.07\n")
    edit(pro, "    amount: 500\n", f"    amount: {BIGINT_MAX}\n")
    edit(pro, "    monthly: 2500 ", f"    monthly: {BIGINT_MAX} ")
    edit(pro, "    daily: 300\n", f"    daily: {BIGINT_MAX}\n")
    edit(pro, "    per_request: 50\n", f"    per_request: {BIGINT_MAX}\n")
    edit(pro, "    requests_per_minute: 20\n", f"    requests_per_minute: {INTEGER_MAX}\n")
    assert compile_config(config).ok
    apply_ok(config, url)
    again = tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode")
    assert again.exit_code == 0, again


# ------------------------------------------------------------------- 4. JSON output for a broken config


def test_plan_format_json_prints_only_json_for_a_config_that_does_not_validate(config: Path) -> None:
    edit(config / "plans" / "pro.yaml", "    INR: 1499\n", "    INR: 19.999\n")
    # No database is reached: the config fails first.
    done = tariff(
        "plan", "--config", config, "--database-url", "postgresql://x@127.0.0.1:1/none", "-f", "json"
    )
    assert done.exit_code == 1, done
    document = json.loads(done.stdout)
    assert document["format_version"] == 1 and document["ok"] is False and document["errors"] == 1
    assert document["diagnostics"][0]["code"] == "money.precision"
    assert document.keys() == validate_json(config).keys()
    assert "nothing was planned" in done.output


def test_plan_format_markdown_keeps_diagnostics_off_standard_output(config: Path) -> None:
    edit(config / "plans" / "pro.yaml", "    INR: 1499\n", "    INR: 19.999\n")
    done = tariff(
        "plan", "--config", config, "--database-url", "postgresql://x@127.0.0.1:1/none", "-f", "markdown"
    )
    assert done.exit_code == 1, done
    assert done.stdout == ""
    assert "money.precision" in done.output


def test_diff_format_json_keeps_diagnostics_off_standard_output(config: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(config, broken)
    edit(broken / "plans" / "pro.yaml", "    INR: 1499\n", "    INR: 99999999999999999999999999999999\n")
    done = tariff("diff", f"{config}..{broken}", "--format", "json")
    assert done.exit_code == 1, done
    assert done.stdout.strip() == "" or json.loads(done.stdout)
    assert "money.range" in done.output


# ----------------------------------------------------------------- 5. plans with policy errors


@pytest.fixture
def increased(engine: Engine, config: Path, url: str) -> Path:
    """The shipped config published, then Pro's monthly INR price doubled with no approval."""
    apply_ok(config, url)
    edit(config / "plans" / "pro.yaml", "    INR: 1499\n", "    INR: 2999\n")
    return config


def test_plan_out_does_not_save_or_announce_a_plan_with_policy_errors(
    increased: Path, url: str, tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    done = tariff("plan", "--config", increased, "--database-url", url, "--out", saved)
    assert done.exit_code == 1, done
    assert "price increase" in done.output
    assert not saved.exists()
    assert "Apply exactly this" not in done.output
    assert f"not saved to {saved}" in done.output


def test_apply_refuses_a_plan_with_policy_errors_without_asking(increased: Path, url: str) -> None:
    done = tariff("apply", "--config", increased, "--database-url", url)
    assert done.exit_code == 1, done
    assert "error: policy: price increase" in done.output
    assert "cannot ask for approval" not in done.output and "Apply these changes?" not in done.output


# --------------------------------------------------------------- 6. numbers beyond the column types


@pytest.fixture
def customer(engine: Engine, config: Path, url: str) -> str:
    apply_ok(config, url)
    done = tariff("customers", "add", "c1", "--country", "IN", "--config", config, "--database-url", url)
    assert done.exit_code == 0, done
    return "c1"


TOO_BIG = "99999999999999999999"


@pytest.mark.parametrize(
    ("args", "name", "maximum"),
    [
        (("tokens", "grant", "c1", TOO_BIG, "--reason", "x"), "AMOUNT", BIGINT_MAX),
        (("tokens", "revoke", "c1", TOO_BIG, "--reason", "x"), "AMOUNT", BIGINT_MAX),
        (("tokens", "boost", "c1", TOO_BIG, "--reason", "x", "--for", "1d"), "AMOUNT", BIGINT_MAX),
        (
            ("tokens", "set-limit", "c1", "--daily", "9223372036854775808", "--reason", "x"),
            "--daily",
            BIGINT_MAX,
        ),
        (("tokens", "set-limit", "c1", "--monthly", TOO_BIG, "--reason", "x"), "--monthly", BIGINT_MAX),
        (
            ("tokens", "set-limit", "c1", "--per-request", TOO_BIG, "--reason", "x"),
            "--per-request",
            BIGINT_MAX,
        ),
        (("tokens", "show", "c1", "--entries", TOO_BIG), "--entries", BIGINT_MAX),
        (("tokens", "pool", "show", "team-1", "--entries", "2147483648"), "--entries", INTEGER_MAX),
        (("tokens", "pool", "grant", "team-1", TOO_BIG, "--reason", "x"), "AMOUNT", BIGINT_MAX),
        (("history", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("show", TOO_BIG), "revision", BIGINT_MAX),
        (("customers", "list", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("subscriptions", "show", "--customer", "c1", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("promo", "codes", "list", "launch-codes", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("payu", "payments", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("notify", "list", "--limit", TOO_BIG), "--limit", BIGINT_MAX),
        (("notify", "retry", TOO_BIG), "[ID]", BIGINT_MAX),
        (("report", "anomalies", "--min-credits", TOO_BIG), "--min-credits", BIGINT_MAX),
    ],
)
def test_numbers_beyond_their_column_are_usage_errors(
    customer: str, config: Path, url: str, args: tuple[str, ...], name: str, maximum: int
) -> None:
    done = tariff(*args, "--config", config, "--database-url", url)
    assert done.exit_code != 0, done
    assert f"Invalid value for '{name}'" in done.output and f"less than or equal to {maximum}" in done.output


def test_a_number_beyond_bigint_exits_1_from_the_real_entry_point(
    customer: str, config: Path, url: str
) -> None:
    done = process(
        "tokens", "grant", customer, TOO_BIG, "--reason", "x", "--config", config, "--database-url", url
    )
    assert done.returncode == 1, done.stderr
    assert "Invalid value for 'AMOUNT'" in done.stderr and "internal error" not in done.stderr


def test_the_largest_limit_is_accepted(customer: str, config: Path, url: str) -> None:
    done = tariff(
        "tokens",
        "set-limit",
        customer,
        "--daily",
        str(BIGINT_MAX),
        "--reason",
        "x",
        "--config",
        config,
        "--database-url",
        url,
    )
    assert done.exit_code == 0, done
    assert f"daily {BIGINT_MAX}" in done.output


# ---------------------------------------------------------------------- 7. output paths


UNREACHABLE = "postgresql://x@127.0.0.1:1/none"


@pytest.mark.parametrize("option", ["--out", "--markdown-out"])
def test_plan_refuses_a_directory_as_output_before_the_database(
    config: Path, tmp_path: Path, option: str
) -> None:
    # The database URL leads nowhere: the path must be refused before the command gets that far.
    done = tariff("plan", "--config", config, "--database-url", UNREACHABLE, option, tmp_path)
    assert done.exit_code == 1, done
    assert f"cannot write {option} {tmp_path}: it is a directory" in done.output and "fix:" in done.output


def test_plan_refuses_an_output_path_under_a_file(config: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    done = tariff("plan", "--config", config, "--database-url", UNREACHABLE, "--out", blocker / "plan.json")
    assert done.exit_code == 1, done
    assert f"{blocker} is not a directory" in done.output and "fix:" in done.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_plan_reports_an_unwritable_output_path(engine: Engine, config: Path, url: str) -> None:
    done = tariff("plan", "--config", config, "--database-url", url, "--out", "/proc/nope/x.json")
    assert done.exit_code == 1, done
    assert "cannot write --out /proc/nope/x.json" in done.output and "fix:" in done.output


@pytest.mark.parametrize("format_", ["text", "json", "markdown"])
def test_diff_refuses_a_directory_as_output(config: Path, tmp_path: Path, format_: str) -> None:
    done = tariff("diff", f"{config}..{config}", "--format", format_, "--out", tmp_path)
    assert done.exit_code == 1, done
    assert f"cannot write --out {tmp_path}: it is a directory" in done.output


def test_diff_reports_an_unwritable_output_path(config: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    done = tariff("diff", f"{config}..{config}", "--format", "json", "--out", blocker / "sub" / "d.json")
    assert done.exit_code == 1, done
    assert "cannot write --out" in done.output and "is not a directory" in done.output


def test_preview_refuses_an_existing_file_as_its_output_directory(config: Path, tmp_path: Path) -> None:
    existing = tmp_path / "out"
    existing.write_text("keep me")
    done = tariff("preview", "--config", config, "--out", existing)
    assert done.exit_code == 1, done
    assert f"cannot write --out {existing}: it is a file, not a directory" in done.output
    assert existing.read_text() == "keep me"


# ------------------------------------------------------------------ 8. subscriptions at 80 columns


def test_subscriptions_show_keeps_every_column_at_80_columns(customer: str, config: Path, url: str) -> None:
    for cycle in ("monthly", "annual"):
        added = tariff(
            "subscriptions",
            "add",
            "--customer",
            customer,
            "--plan",
            "pro",
            "--cycle",
            cycle,
            "--config",
            config,
            "--database-url",
            url,
        )
        assert added.exit_code == 0, added
    shown = tariff(
        "subscriptions", "show", "--customer", customer, "--config", config, "--database-url", url, columns=80
    )
    assert shown.exit_code == 0, shown
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if line.lstrip().startswith("id") or "┃ id" in line)
    for name in ("plan", "price", "status", "period"):
        assert re.search(rf"\b{name}\b", header), header
    generated = re.findall(r"sub_[0-9a-f]{32}", shown.stdout)
    assert len(set(generated)) == 2  # ids whole, never cut or wrapped
    assert shown.stdout.count("active") == 2 and "pro" in shown.stdout and "INR" in shown.stdout


def test_subscriptions_of_several_customers_stay_readable_at_80_columns(
    customer: str, config: Path, url: str
) -> None:
    added = tariff(
        "subscriptions",
        "add",
        "--customer",
        customer,
        "--plan",
        "premium",
        "--cycle",
        "monthly",
        "--status",
        "trialing",
        "--config",
        config,
        "--database-url",
        url,
        columns=80,
    )
    assert added.exit_code == 0, added
    assert max(len(line) for line in added.stdout.splitlines()) <= 80
    for field in ("customer", "plan", "price", "status", "period"):
        assert re.search(rf"\b{field}\b", added.stdout), added.stdout
    assert re.search(r"sub_[0-9a-f]{32}", added.stdout) and "trialing" in added.stdout


# ---------------------------------------------------------------------- 9. exponents in CSV amounts


def test_csv_amounts_in_exponent_form_suggest_the_plain_value(
    customer: str, config: Path, url: str, tmp_path: Path
) -> None:
    csv = tmp_path / "subs.csv"
    csv.write_text(
        "id,customer_id,plan,cycle,currency,region,price_paid,status\n"
        "s1,c1,pro,monthly,INR,IN,1e3,active\n"
        "s2,c1,pro,monthly,INR,IN,1.5E+3,active\n"
        "s3,c1,pro,monthly,INR,IN,1e999999,active\n"
        "s4,c1,pro,monthly,INR,IN,99999999999999999999999999999999999,active\n",
        "utf-8",
    )
    done = tariff("subscriptions", "import", csv, "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "fix: write 1000 (plain digits" in done.output and "write 13" not in done.output
    assert "fix: write 1500 (plain digits" in done.output and "write 1.53" not in done.output
    assert "fix: write the amount in plain digits, without an exponent" in done.output
    assert "99999999999999999999999999999999999 INR is more than the database can store" in done.output
    assert "nothing was imported" in done.output
