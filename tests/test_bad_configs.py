"""Broken configs: each one is the shipped `pricing/` with ONE targeted edit, run through `tariff validate`.

Every case asserts what a user sees: exit code 1, no traceback, and an error with the right code,
file, line (computed from the edited text), document path and, where one is likely, a suggestion.
Most cases call the Typer app in-process (fast); the cases most likely to crash or hang a process
(binary data, huge files, symlink loops, alias bombs, custom tags, a missing tariff.yaml) also run
the real CLI in a subprocess.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"


# --------------------------------------------------------------------------------------------- helpers


def copy_config(tmp_path: Path) -> Path:
    """A private copy of the shipped config, named `pricing` like the real one."""
    target = tmp_path / "pricing"
    shutil.copytree(SHIPPED, target, symlinks=True)
    return target


def replace_text(root: Path, rel: str, old: str, new: str) -> str:
    """Replace the first `old` in `rel` by `new`; the old text must exist. Returns the new file text."""
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{rel} does not contain {old!r}: the shipped config changed, update this test"
    text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return text


def write_file(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def delete_file(root: Path, rel: str) -> None:
    path = root / rel
    assert path.exists(), f"{rel} does not exist in the shipped config"
    path.unlink()


def line_of(root: Path, rel: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the `occurrence`-th line of `rel` containing `needle`."""
    seen = 0
    for number, line in enumerate((root / rel).read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not found in {rel}")


def column_of(root: Path, rel: str, needle: str, occurrence: int = 1) -> int:
    """1-based column where `needle` starts on the line `line_of` finds."""
    line = (root / rel).read_text(encoding="utf-8").splitlines()[line_of(root, rel, needle, occurrence) - 1]
    return line.index(needle) + 1


@dataclass(frozen=True)
class Run:
    exit_code: int
    stdout: str
    stderr: str
    seconds: float


def run_validate(root: Path, fmt: str = "json", *, real: bool = False) -> Run:
    """`tariff validate --config ROOT --format FMT`, in a real process or in-process through Typer."""
    args = ["validate", "--config", str(root), "--format", fmt]
    started = time.monotonic()
    if real:
        env = {k: v for k, v in os.environ.items() if k not in ("TARIFF_DEBUG", "TARIFF_CONFIG")}
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env,
            check=False,
        )
        return Run(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"validate crashed: {result.exception!r}") from result.exception
    return Run(result.exit_code, result.stdout, result.stderr, time.monotonic() - started)


def diagnostics_of(run: Run) -> list[dict[str, Any]]:
    report = json.loads(run.stdout)
    assert report["format_version"] == 1
    items: list[dict[str, Any]] = report["diagnostics"]
    assert report["errors"] == sum(1 for d in items if d["severity"] == "error")
    return items


def show(items: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {d['severity']} {d['code']} {d['file']}:{d['line']}:{d['column']} {d['path']!r}: {d['message']}"
        f" | hint: {d['hint']}"
        for d in items
    )


# ----------------------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Expect:
    """The error a user must see. `line`/`column` None means "file-level" (no position)."""

    code: str
    file: str
    line: int | None
    path: str = ""
    column: int | None = None
    hint: str | None = None  # substring of the hint
    message: str | None = None  # substring of the message
    # Codes of other errors this edit legitimately causes; any other error is noise and fails the case.
    also: frozenset[str] = field(default_factory=frozenset)


Edit = Callable[[Path], Expect]


@dataclass(frozen=True)
class Case:
    id: str
    edit: Edit
    real: bool = False  # also run the real CLI in a subprocess
    text: bool = False  # also check the human-readable output
    max_seconds: float | None = None


CASES: list[Case] = []


def case(
    id_: str, *, real: bool = False, text: bool = False, max_seconds: float | None = None
) -> Callable[[Edit], Edit]:
    def register(edit: Edit) -> Edit:
        CASES.append(Case(id_, edit, real, text, max_seconds))
        return edit

    return register


PRO = "plans/pro.yaml"
DIWALI = "promotions/diwali-2026.yaml"
PAGE = "content/pricing.yaml"


# --- YAML syntax and file-level problems ---


@case("yaml-unclosed-bracket", real=True, text=True)
def _unclosed_bracket(root: Path) -> Expect:
    replace_text(root, PRO, "  monthly:\n    INR: 1499\n", "  monthly: [INR: 1499\n")
    opened = line_of(root, PRO, "monthly: [INR")
    # The parser notices on the next line; the message must point back at the opening bracket.
    return Expect("yaml.syntax", PRO, opened + 1, hint="closed with `]`", message=f"starts on line {opened}")


@case("yaml-tab-indentation", real=True)
def _tab(root: Path) -> Expect:
    replace_text(root, PRO, "    per_request: 50\n", "\tper_request: 50\n")
    return Expect("yaml.syntax", PRO, line_of(root, PRO, "\tper_request"), column=1, hint="spaces, not tabs")


@case("yaml-duplicate-key")
def _duplicate_key(root: Path) -> Expect:
    replace_text(root, PRO, "trial_days: 14\n", "trial_days: 14\ntrial_days: 15\n")
    first = line_of(root, PRO, "trial_days: 14")
    return Expect(
        "yaml.duplicate-key", PRO, first + 1, "trial_days", column=1, message=f"first defined on line {first}"
    )


@case("empty-file")
def _empty(root: Path) -> Expect:
    write_file(root, PRO, "")
    return Expect("yaml.empty", PRO, 1, hint="delete the file")


@case("comment-only-file")
def _comment_only(root: Path) -> Expect:
    write_file(root, PRO, "# yaml-language-server: $schema=../../schemas/plan.schema.json\n#\n# TODO: Pro\n")
    return Expect("yaml.empty", PRO, 1)


@case("binary-garbage", real=True)
def _binary(root: Path) -> Expect:
    garbage = b"id: pro\nname: Pro\n" + b"\x00" + random.Random(7).randbytes(4096)
    write_file(root, PRO, garbage)
    return Expect("file.binary", PRO, 3, message="binary data", hint="UTF-8")


@case("invalid-utf8", real=True)
def _invalid_utf8(root: Path) -> Expect:
    raw = (root / PRO).read_bytes()
    assert b"name: Pro\n" in raw
    write_file(root, PRO, raw.replace(b"name: Pro\n", b"name: Pr\xff\n", 1))
    return Expect(
        "file.encoding",
        PRO,
        line_of_bytes(root / PRO, b"\xff"),
        column=len("name: Pr") + 1,
        message="0xff",
        hint="UTF-8",
    )


def line_of_bytes(path: Path, needle: bytes) -> int:
    raw = path.read_bytes()
    return raw.count(b"\n", 0, raw.index(needle)) + 1


@case("file-50mb", real=True, max_seconds=10)
def _huge(root: Path) -> Expect:
    path = write_file(root, "plans/huge.yaml", "id: huge\nname: Huge\nprices:\n  monthly: {INR: 1}\n")
    with path.open("r+b") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: instant to write, 50 MB to read
    return Expect("file.too-large", "plans/huge.yaml", None, message="50.0 MB", hint="split it")


@case("symlink-loop-file", real=True, max_seconds=10)
def _symlink_loop(root: Path) -> Expect:
    (root / "plans" / "loop.yaml").symlink_to("loop.yaml")
    return Expect("files.symlink-loop", "plans/loop.yaml", None, message="symlink loop")


@case("symlink-loop-directory", real=True, max_seconds=10)
def _symlink_dir_loop(root: Path) -> Expect:
    (root / "plans" / "archive").symlink_to("..", target_is_directory=True)
    return Expect("files.symlink-loop", "plans/archive", None, message="symlink loop")


@case("symlink-loop-tariff-yaml")
def _settings_loop(root: Path) -> Expect:
    delete_file(root, "tariff.yaml")
    (root / "tariff.yaml").symlink_to("tariff.yaml")
    return Expect("file.symlink-loop", "tariff.yaml", None, message="symlink loop")


@case("dangling-symlink")
def _dangling(root: Path) -> Expect:
    (root / "plans" / "enterprise.yaml").symlink_to("../../enterprise.yaml")
    return Expect("file.broken-symlink", "plans/enterprise.yaml", None, message="does not exist")


@case("top-level-list")
def _top_level_list(root: Path) -> Expect:
    write_file(
        root, DIWALI, "# a promotion written as a list by mistake\n- id: diwali-2026\n- name: Diwali\n"
    )
    return Expect("schema.type", DIWALI, 2, column=1, message="mapping", hint="not a list")


@case("custom-yaml-tag", real=True)
def _custom_tag(root: Path) -> Expect:
    replace_text(root, PRO, "name: Pro\n", "name: !!python/object/apply:os.system [echo pwned]\n")
    return Expect(
        "yaml.tag",
        PRO,
        line_of(root, PRO, "!!python"),
        "name",
        message="python/object",
        hint="remove the tag",
    )


@case("alias-bomb", real=True, max_seconds=10)
def _alias_bomb(root: Path) -> Expect:
    # Billion laughs: 9 levels of 10 aliases each expand to 10^9 values if followed naively.
    lines = ["id: bomb", "name: Bomb", "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 9):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    write_file(root, "plans/bomb.yaml", "\n".join(lines) + "\n")
    # The cap trips while `f` (10^6 values) is expanded: point there, not at the innocent anchor `a`.
    return Expect(
        "yaml.too-large",
        "plans/bomb.yaml",
        line_of(root, "plans/bomb.yaml", "f: &f"),
        "f",
        column=1,
        message="aliases",
        hint="nested aliases multiply",
    )


@case("recursive-alias")
def _recursive_alias(root: Path) -> Expect:
    write_file(root, "plans/rec.yaml", "id: rec\nname: &self\n  again: *self\n")
    return Expect(
        "yaml.recursive-alias",
        "plans/rec.yaml",
        3,
        "name.again",
        column=3,
        message="contains it",
        hint="own anchored value",
    )


# --- schema: unknown keys, wrong types, formats ---


@case("unknown-key-typo", text=True)
def _stauts(root: Path) -> Expect:
    replace_text(root, PRO, "status: active\n", "stauts: active\n")
    return Expect(
        "schema.unknown-key",
        PRO,
        line_of(root, PRO, "stauts:"),
        "stauts",
        column=1,
        hint="did you mean `status`?",
    )


@case("wrong-type-trial-days-quoted")
def _trial_days(root: Path) -> Expect:
    replace_text(root, PRO, "trial_days: 14\n", 'trial_days: "14"\n')
    return Expect(
        "schema.type",
        PRO,
        line_of(root, PRO, "trial_days:"),
        "trial_days",
        column=column_of(root, PRO, '"14"'),
        message="whole number",
        hint="remove the quotes",
    )


@case("exponent-amount")
def _exponent(root: Path) -> Expect:
    replace_text(root, PRO, "    INR: 1499\n", "    INR: 1e3\n")
    return Expect(
        "schema.type",
        PRO,
        line_of(root, PRO, "INR: 1e3"),
        "prices.monthly.INR",
        column=column_of(root, PRO, "1e3"),
        hint="1000",
    )


@case("quoted-amount")
def _quoted_amount(root: Path) -> Expect:
    replace_text(root, PRO, "    INR: 1499\n", '    INR: "1499"\n')
    return Expect(
        "schema.type",
        PRO,
        line_of(root, PRO, 'INR: "1499"'),
        "prices.monthly.INR",
        message="expected a number",
        hint="remove the quotes",
    )


@case("negative-amount")
def _negative(root: Path) -> Expect:
    replace_text(root, PRO, "    USD: 19\n", "    USD: -19\n")
    return Expect(
        "schema.minimum",
        PRO,
        line_of(root, PRO, "USD: -19"),
        "prices.monthly.USD",
        message="below the minimum 0",
    )


@case("lowercase-currency-code")
def _lowercase_currency(root: Path) -> Expect:
    replace_text(root, PRO, "    USD: 19\n", "    usd: 19\n")
    return Expect(
        "schema.key-format",
        PRO,
        line_of(root, PRO, "usd: 19"),
        "prices.monthly.usd",
        column=column_of(root, PRO, "usd"),
        hint="`USD`",
    )


@case("plan-id-uppercase-underscore")
def _bad_id(root: Path) -> Expect:
    replace_text(root, PRO, "id: pro\n", "id: Pro_Plan\n")
    return Expect("schema.format", PRO, line_of(root, PRO, "id: Pro_Plan"), "id", hint="`pro-plan`")


@case("rollover-percent-third-decimal")
def _rollover_precision(root: Path) -> Expect:
    premium = "plans/premium.yaml"
    replace_text(root, premium, "max_percent: 50\n", "max_percent: 33.335\n")
    return Expect(
        "tokens.rollover-percent-precision",
        premium,
        line_of(root, premium, "max_percent"),
        "tokens.rollover.max_percent",
        hint="33.34",
        message="more than two decimals",
    )


@case("percent-off-above-100")
def _percent_above_100(root: Path) -> Expect:
    replace_text(root, DIWALI, "percent_off: 30\n", "percent_off: 120\n")
    return Expect(
        "schema.maximum", DIWALI, line_of(root, DIWALI, "percent_off"), "discount.percent_off", message="120"
    )


@case("suppression-reason-too-short")
def _short_reason(root: Path) -> Expect:
    text = (root / "tariff.yaml").read_text(encoding="utf-8")
    start = text.index("    reason: >-\n")
    end = text.index("\n\n", start)
    write_file(root, "tariff.yaml", text[:start] + "    reason: why not" + text[end:])
    return Expect(
        "schema.minLength",
        "tariff.yaml",
        line_of(root, "tariff.yaml", "reason: why not"),
        "suppressions[0].reason",
        message="shorter than 10",
    )


# --- money ---


@case("unknown-cycle-typo")
def _montly(root: Path) -> Expect:
    replace_text(root, PRO, "  monthly:\n", "  montly:\n")
    # Students and welcome-code sell Pro monthly, which now has no monthly price: true, not noise.
    return Expect(
        "ref.unknown-billing-cycle",
        PRO,
        line_of(root, PRO, "montly:"),
        "prices.montly",
        column=3,
        hint="did you mean `monthly`?",
        also=frozenset({"promotion.cycle-not-sold"}),
    )


@case("too-many-decimals-for-inr", text=True)
def _decimals(root: Path) -> Expect:
    replace_text(root, PRO, "    INR: 1499\n", "    INR: 19.999\n")
    return Expect(
        "money.precision",
        PRO,
        line_of(root, PRO, "19.999"),
        "prices.monthly.INR",
        message="more than 2 decimal",
        hint="2 decimals",
    )


@case("unknown-currency-in-price")
def _unknown_currency(root: Path) -> Expect:
    replace_text(root, PRO, "    USD: 19\n", "    USD: 19\n    GBP: 15\n")
    return Expect(
        "ref.unknown-currency",
        PRO,
        line_of(root, PRO, "GBP: 15"),
        "prices.monthly.GBP",
        message="'GBP'",
        hint="INR",
    )


@case("currency-typo-in-package")
def _currency_typo(root: Path) -> Expect:
    replace_text(root, "tokens/credits.yaml", "      INR: 4999\n", "      IRN: 4999\n")
    return Expect(
        "ref.unknown-currency",
        "tokens/credits.yaml",
        line_of(root, "tokens/credits.yaml", "IRN"),
        "packages.extra-2000.prices.IRN",
        hint="did you mean `INR`?",
    )


@case("admission-commit-unknown-mode")
def _admission_commit(root: Path) -> Expect:
    replace_text(root, "tokens/credits.yaml", "commit: synchronous ", "commit: later ")
    return Expect(
        "schema.enum",
        "tokens/credits.yaml",
        line_of(root, "tokens/credits.yaml", "commit: later"),
        "rules.admissions.commit",
        column=13,
        message="'later'",
    )


@case("region-override-wrong-currency")
def _region_currency(root: Path) -> Expect:
    replace_text(root, PRO, "    EUR: 18\n", "    EUR: 18\n    by_region:\n      EU:\n        USD: 20\n")
    return Expect(
        "price.region-currency",
        PRO,
        line_of(root, PRO, "USD: 20"),
        "prices.monthly.by_region.EU.USD",
        message="charged in EUR",
        hint="EUR",
    )


@case("region-without-price")
def _region_without_price(root: Path) -> Expect:
    replace_text(root, PRO, "    USD: 19\n    EUR: 18\n", "    USD: 19\n")
    return Expect(
        "policy.region_without_price",
        PRO,
        line_of(root, PRO, "prices:") + 1,
        "prices",
        message="monthly in EU (EUR)",
        hint="fallback_currency",
    )


@case("max-discount-policy")
def _max_discount(root: Path) -> Expect:
    replace_text(root, DIWALI, "percent_off: 30\n", "percent_off: 90\n")
    return Expect(
        "policy.max_discount_percent",
        DIWALI,
        line_of(root, DIWALI, "percent_off: 90"),
        "discount",
        message="90",
        hint="approval",
    )


# --- tariff.yaml ---


@case("missing-tariff-yaml", real=True, text=True)
def _missing_settings(root: Path) -> Expect:
    delete_file(root, "tariff.yaml")
    return Expect(
        "files.no-settings", "tariff.yaml", None, message="tariff.yaml is missing", hint="tariff.yaml"
    )


@case("default-region-unknown")
def _default_region(root: Path) -> Expect:
    replace_text(root, "tariff.yaml", "default_region: US\n", "default_region: USA\n")
    return Expect(
        "ref.unknown-region",
        "tariff.yaml",
        line_of(root, "tariff.yaml", "default_region:"),
        "default_region",
        column=column_of(root, "tariff.yaml", "USA"),
        hint="did you mean `US`?",
    )


@case("unknown-locale")
def _locale(root: Path) -> Expect:
    replace_text(root, "tariff.yaml", "locale: de_DE\n", "locale: xx_XX\n")
    return Expect(
        "settings.locale",
        "tariff.yaml",
        line_of(root, "tariff.yaml", "xx_XX"),
        "regions.EU.locale",
        message="'xx_XX'",
        hint="CLDR",
    )


@case("norway-in-two-regions")
def _norway_twice(root: Path) -> Expect:
    replace_text(root, "tariff.yaml", "countries: [IN]\n", "countries: [IN, NO]\n")
    # NO must stay the country code (YAML 1.1 would read it as false); the EU's NO is the repeat.
    eu_line = line_of(root, "tariff.yaml", "SE, NO, FI")
    return Expect(
        "settings.country-twice",
        "tariff.yaml",
        eu_line,
        "regions.EU.countries[7]",
        column=column_of(root, "tariff.yaml", "NO, FI"),
        message="country NO is already in region IN",
    )


@case("unknown-notification-channel")
def _channel(root: Path) -> Expect:
    replace_text(root, "tokens/credits.yaml", "channels: [email]", "channels: [emial]")
    return Expect(
        "ref.unknown-channel",
        "tokens/credits.yaml",
        line_of(root, "tokens/credits.yaml", "emial"),
        "rules.low_balance_alerts.channels[0]",
        hint="did you mean `email`?",
    )


# --- plans and features ---


@case("unknown-feature-in-plan")
def _unknown_feature(root: Path) -> Expect:
    replace_text(root, PRO, "  ai_chat: true\n", "  ai_chatt: true\n")
    return Expect(
        "ref.unknown-feature",
        PRO,
        line_of(root, PRO, "ai_chatt"),
        "features.ai_chatt",
        hint="did you mean `ai_chat`?",
    )


@case("feature-enum-value-not-allowed")
def _enum_value(root: Path) -> Expect:
    replace_text(root, PRO, "templates_access: premium\n", "templates_access: premum\n")
    return Expect(
        "feature.value",
        PRO,
        line_of(root, PRO, "premum"),
        "features.templates_access",
        message="'premum'",
        hint="did you mean `premium`?",
    )


@case("boolean-feature-written-yes")
def _yes(root: Path) -> Expect:
    replace_text(root, PRO, "  ai_chat: true\n", "  ai_chat: yes\n")
    return Expect(
        "feature.value",
        PRO,
        line_of(root, PRO, "ai_chat: yes"),
        "features.ai_chat",
        message="'yes'",
        hint="true or false",
    )


@case("unlimited-where-not-allowed")
def _unlimited(root: Path) -> Expect:
    replace_text(root, PRO, "  ai_generations: 500\n", "  ai_generations: unlimited\n")
    return Expect(
        "feature.value",
        PRO,
        line_of(root, PRO, "ai_generations:"),
        "features.ai_generations",
        message="'unlimited'",
    )


@case("retired-feature-on-active-plan")
def _retired_feature(root: Path) -> Expect:
    replace_text(root, "features.yaml", "    icon: history\n", "    icon: history\n    status: retired\n")
    # Every plan and the page still use it: one error per use, all of them about the retirement.
    return Expect(
        "feature.retired",
        PRO,
        line_of(root, PRO, "  backtesting:"),
        "features.backtesting",
        message="'backtesting' is retired",
        also=frozenset({"content.retired-feature"}),
    )


@case("keep-for-without-duration")
def _keep_for(root: Path) -> Expect:
    replace_text(root, PRO, "    policy: keep_for\n    duration: 12 months\n", "    policy: keep_for\n")
    return Expect(
        "grandfathering.duration",
        PRO,
        line_of(root, PRO, "policy: keep_for"),
        "grandfathering.on_increase",
        hint="duration: 12 months",
    )


@case("token-limit-per-request-above-daily")
def _limits(root: Path) -> Expect:
    replace_text(root, PRO, "    per_request: 50\n", "    per_request: 500\n")
    return Expect(
        "tokens.limits-order",
        PRO,
        line_of(root, PRO, "per_request: 500"),
        "tokens.limits.per_request",
        message="larger than the daily limit 300",
        hint="per_request ≤ daily",
    )


@case("duplicate-plan-id")
def _duplicate_plan(root: Path) -> Expect:
    write_file(root, "plans/pro2.yaml", (root / PRO).read_text(encoding="utf-8"))
    return Expect(
        "id.duplicate",
        "plans/pro2.yaml",
        line_of(root, "plans/pro2.yaml", "id: pro"),
        "id",
        message="already used by plans/pro.yaml",
    )


# --- tokens ---


@case("duplicate-package-across-token-files")
def _duplicate_package(root: Path) -> Expect:
    write_file(
        root,
        "tokens/more.yaml",
        "packages:\n  extra-500:\n    name: Again\n    tokens: 500\n"
        "    prices: {INR: 1499, USD: 19, EUR: 18}\n",
    )
    return Expect(
        "id.duplicate",
        "tokens/more.yaml",
        2,
        "packages.extra-500",
        column=3,
        message="already defined in tokens/credits.yaml",
    )


# --- promotions ---


@case("unknown-plan-in-promotion", text=True)
def _unknown_plan(root: Path) -> Expect:
    replace_text(root, DIWALI, "plans: [pro, premium]", "plans: [pro, premum]")
    return Expect(
        "ref.unknown-plan",
        DIWALI,
        line_of(root, DIWALI, "premum"),
        "applies_to.plans[1]",
        column=column_of(root, DIWALI, "premum"),
        hint="did you mean `premium`?",
    )


@case("unknown-plan-held")
def _unknown_plan_held(root: Path) -> Expect:
    rel = "promotions/free-to-pro.yaml"
    replace_text(root, rel, "plans_held: [free]", "plans_held: [fre]")
    return Expect(
        "ref.unknown-plan",
        rel,
        line_of(root, rel, "[fre]"),
        "eligibility.plans_held[0]",
        hint="did you mean `free`?",
    )


@case("unknown-package-in-promotion")
def _unknown_package(root: Path) -> Expect:
    replace_text(root, DIWALI, "  plans: [pro, premium]\n  cycles: [annual]\n", "  packages: [extra-5000]\n")
    return Expect(
        "ref.unknown-package",
        DIWALI,
        line_of(root, DIWALI, "extra-5000"),
        "applies_to.packages[0]",
        hint="did you mean `extra-500`?",
    )


@case("schedule-without-time-zone")
def _no_timezone(root: Path) -> Expect:
    replace_text(root, DIWALI, '  starts: "2026-10-20T00:00:00+05:30"\n', '  starts: "2026-10-20T00:00:00"\n')
    replace_text(root, DIWALI, "  timezone: Asia/Kolkata\n", "")
    return Expect(
        "schedule.timezone",
        DIWALI,
        line_of(root, DIWALI, "starts:"),
        "schedule.starts",
        message="has no time zone",
        hint="+05:30",
    )


@case("schedule-ends-before-start")
def _ends_before(root: Path) -> Expect:
    replace_text(root, DIWALI, 'ends: "2026-11-06T00:00:00+05:30"', 'ends: "2026-10-06T00:00:00+05:30"')
    return Expect(
        "schedule.order",
        DIWALI,
        line_of(root, DIWALI, "ends:"),
        "schedule.ends",
        message="ends before it starts",
        hint="2026-10-20",
    )


@case("invalid-iana-time-zone")
def _bad_zone(root: Path) -> Expect:
    replace_text(root, DIWALI, "timezone: Asia/Kolkata\n", "timezone: Asia/Kolkatta\n")
    return Expect(
        "ref.timezone",
        DIWALI,
        line_of(root, DIWALI, "Kolkatta"),
        "schedule.timezone",
        hint="did you mean `Asia/Kolkata`?",
    )


@case("yearly-recurrence-without-end")
def _yearly(root: Path) -> Expect:
    rel = "promotions/festive-season.yaml"
    replace_text(root, rel, '  ends: "2027-01-05T00:00:00"\n', "")
    return Expect(
        "schedule.recurrence",
        rel,
        line_of(root, rel, "recurrence: yearly"),
        "schedule.recurrence",
        message="needs both `starts` and `ends`",
    )


@case("duplicate-vanity-code-case-insensitive")
def _vanity(root: Path) -> Expect:
    # `welcome20` in students clashes with WELCOME20 in welcome-code; the later file reports it.
    replace_text(
        root, "promotions/students.yaml", "stacking:\n", "codes:\n  vanity: welcome20\n\nstacking:\n"
    )
    rel = "promotions/welcome-code.yaml"
    return Expect(
        "codes.duplicate",
        rel,
        line_of(root, rel, "vanity: WELCOME20"),
        "codes.vanity",
        message="already used by promotion 'students'",
        hint="case-insensitive",
    )


@case("bundle-without-fixed-price")
def _bundle_price(root: Path) -> Expect:
    rel = "promotions/creator-bundle.yaml"
    replace_text(
        root, rel, "  fixed_price:\n    INR: 15999\n    USD: 199\n    EUR: 189\n", "  percent_off: 20\n"
    )
    return Expect(
        "promotion.bundle-price", rel, line_of(root, rel, "percent_off: 20"), "discount", hint="fixed_price"
    )


@case("bundle-unknown-cycle")
def _bundle_cycle(root: Path) -> Expect:
    rel = "promotions/creator-bundle.yaml"
    replace_text(root, rel, "      cycle: annual\n", "      cycle: anual\n")
    return Expect(
        "promotion.bundle-cycle",
        rel,
        line_of(root, rel, "cycle: anual"),
        "applies_to.bundle[0].cycle",
        message="not sold anual",
        hint="annual",
    )


@case("customers-file-missing")
def _csv_missing(root: Path) -> Expect:
    delete_file(root, "promotions/beta-testers.csv")
    rel = "promotions/beta-testers.yaml"
    return Expect(
        "promotion.customers-file",
        rel,
        line_of(root, rel, "customers_file:"),
        "eligibility.customers_file",
        message="does not exist",
        hint="customer_id",
    )


@case("customers-file-duplicate-rows")
def _csv_duplicates(root: Path) -> Expect:
    csv = root / "promotions/beta-testers.csv"
    text = csv.read_text(encoding="utf-8")
    repeated = text.splitlines()[2].split(",")[0]
    csv.write_text(text + f"{repeated},someone.else@example.com\n", encoding="utf-8")
    rows = len(csv.read_text(encoding="utf-8").splitlines())
    rel = "promotions/beta-testers.yaml"
    return Expect(
        "promotion.customers-file",
        rel,
        line_of(root, rel, "customers_file:"),
        "eligibility.customers_file",
        message=f"line {rows}: {repeated!r} repeats line 3",
    )


@case("customers-file-without-header")
def _csv_header(root: Path) -> Expect:
    replace_text(root, "promotions/beta-testers.csv", "customer_id,email\n", "")
    rel = "promotions/beta-testers.yaml"
    return Expect(
        "promotion.customers-file",
        rel,
        line_of(root, rel, "customers_file:"),
        "eligibility.customers_file",
        message="no `customer_id` column",
        hint="header",
    )


# --- content ---


@case("content-card-unknown-plan")
def _card_plan(root: Path) -> Expect:
    replace_text(root, PAGE, "  - plan: premium\n", "  - plan: premiun\n")
    return Expect(
        "ref.unknown-plan",
        PAGE,
        line_of(root, PAGE, "plan: premiun"),
        "cards[2].plan",
        hint="did you mean `premium`?",
    )


@case("content-highlight-unknown-feature")
def _highlight(root: Path) -> Expect:
    replace_text(root, PAGE, "      - feature: backtesting\n", "      - feature: backtest\n")
    return Expect(
        "ref.unknown-feature",
        PAGE,
        line_of(root, PAGE, "feature: backtest"),
        "cards[1].highlights[4].feature",
        hint="did you mean `backtesting`?",
    )


@case("comparison-row-unknown-feature")
def _comparison(root: Path) -> Expect:
    replace_text(root, PAGE, "        - advanced_indicators\n", "        - advanced_indicator\n")
    return Expect(
        "ref.unknown-feature",
        PAGE,
        line_of(root, PAGE, "- advanced_indicator"),
        "comparison.groups[0].features[3]",
        hint="did you mean `advanced_indicators`?",
    )


@case("markdown-file-missing")
def _markdown(root: Path) -> Expect:
    delete_file(root, "content/intro.md")
    return Expect(
        "content.markdown-file",
        PAGE,
        line_of(root, PAGE, "file: intro.md"),
        "intro.file",
        message="'intro.md' does not exist",
        hint="content/intro.md",
    )


@case("cta-contrast-too-low")
def _contrast(root: Path) -> Expect:
    old = '      text: Start 30-day trial\n      action: checkout\n      color: "#4f46e5"\n'
    replace_text(root, PAGE, old, old.replace("#4f46e5", "#ffff00"))
    return Expect(
        "policy.cta_contrast",
        PAGE,
        line_of(root, PAGE, "text: Start 30-day trial"),
        "cards[2].cta",
        message="#ffffff on #ffff00",
        hint="4.5:1",
    )


# ----------------------------------------------------------------------------------------------- tests


def find(items: list[dict[str, Any]], expect: Expect) -> dict[str, Any]:
    candidates = [d for d in items if d["severity"] == "error" and d["code"] == expect.code]
    assert candidates, f"no {expect.code} error; got:\n{show(items)}"
    for item in candidates:
        if item["file"] == expect.file and item["path"] == expect.path and item["line"] == expect.line:
            return item
    raise AssertionError(
        f"no {expect.code} error at {expect.file}:{expect.line} {expect.path!r}; got:\n{show(items)}"
    )


def check_json(run: Run, expect: Expect) -> None:
    assert "Traceback" not in run.stdout + run.stderr, run.stdout + run.stderr
    assert run.exit_code == 1, f"exit {run.exit_code}\n{run.stdout}\n{run.stderr}"
    items = diagnostics_of(run)
    found = find(items, expect)
    if expect.column is not None:
        assert found["column"] == expect.column, show([found])
    if expect.message is not None:
        assert expect.message in found["message"], show([found])
    if expect.hint is not None:
        assert found["hint"] and expect.hint in found["hint"], show([found])
    # One mistake, one story: no unrelated errors cascading from it.
    allowed = {expect.code} | expect.also
    noise = [d for d in items if d["severity"] == "error" and d["code"] not in allowed]
    assert not noise, f"unexpected extra errors:\n{show(noise)}"


def check_text(run: Run, expect: Expect) -> None:
    assert "Traceback" not in run.stdout + run.stderr
    assert run.exit_code == 1
    out = run.stdout
    where = expect.file if expect.line is None else f"{expect.file}:{expect.line}:{expect.column or ''}"
    lines = [line for line in out.splitlines() if line.startswith(where) and f"({expect.code})" in line]
    assert lines, f"no line starting {where!r} with ({expect.code}) in:\n{out}"
    assert ": error" in lines[0]
    if expect.message:
        assert expect.message in lines[0]
    if expect.hint:
        assert any(line.strip().startswith("fix:") and expect.hint in line for line in out.splitlines()), out
    assert "error(s)" in out.splitlines()[-1]


def test_enough_distinct_cases() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 45


@pytest.mark.parametrize("broken", CASES, ids=[c.id for c in CASES])
def test_broken_config(tmp_path: Path, broken: Case) -> None:
    root = copy_config(tmp_path)
    expect = broken.edit(root)
    run = run_validate(root, "json", real=broken.real)
    check_json(run, expect)
    if broken.max_seconds is not None:
        assert run.seconds < broken.max_seconds, f"took {run.seconds:.1f}s"
    if broken.real:  # the in-process app must agree with the real process
        check_json(run_validate(root, "json"), expect)
    if broken.text:
        check_text(run_validate(root, "text", real=broken.real), expect)


def test_shipped_config_is_the_clean_baseline(tmp_path: Path) -> None:
    """Every case above starts from this: a clean copy validates with no findings at all."""
    run = run_validate(copy_config(tmp_path), real=True)
    assert run.exit_code == 0, run.stdout + run.stderr
    assert diagnostics_of(run) == []


# --------------------------------------------------------------------------------- positive controls


def test_norway_stays_a_country_code(tmp_path: Path) -> None:
    """Moving NO into a region of its own is valid: `NO` is the country code, never YAML 1.1's false."""
    root = copy_config(tmp_path)
    replace_text(root, "tariff.yaml", "SE, NO, FI", "SE, FI")
    replace_text(
        root,
        "tariff.yaml",
        "    locale: de_DE\n",
        "    locale: de_DE\n"
        "  NO:\n    name: Norway\n    currency: EUR\n    countries: [NO]\n    locale: nb_NO\n",
    )
    run = run_validate(root)
    assert run.exit_code == 0, show(diagnostics_of(run))
    assert diagnostics_of(run) == []
    from compiler.project import compile_config

    catalog = compile_config(root).catalog
    assert catalog is not None
    assert catalog.regions["NO"].countries == ("NO",)
    assert "NO" not in catalog.regions["EU"].countries


def test_symlinked_directory_outside_the_config_is_skipped_with_a_warning(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    shared = tmp_path / "shared-plans"
    shared.mkdir()
    (shared / "extra.yaml").write_text("id: extra\nname: [broken\n", encoding="utf-8")
    (root / "plans" / "shared").symlink_to(shared, target_is_directory=True)
    run = run_validate(root)
    assert run.exit_code == 0
    (item,) = diagnostics_of(run)
    assert (item["severity"], item["code"], item["file"]) == (
        "warning",
        "files.symlinked-dir",
        "plans/shared",
    )


def test_approval_lifts_the_discount_limit(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, DIWALI, "percent_off: 30\n", "percent_off: 90\n")
    assert run_validate(root).exit_code == 1
    replace_text(
        root,
        DIWALI,
        "duration: once\n",
        (
            "duration: once\n\napproval:\n  approved_by: finance@pinegenie.app\n"
            "  reason: Clearance offer signed off for Diwali 2026\n"
        ),
    )
    run = run_validate(root)
    assert run.exit_code == 0, show(diagnostics_of(run))
    assert diagnostics_of(run) == []


def test_approval_with_a_lower_ceiling_does_not_cover_a_bigger_discount(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, DIWALI, "percent_off: 30\n", "percent_off: 90\n")
    replace_text(
        root,
        DIWALI,
        "duration: once\n",
        (
            "duration: once\n\napproval:\n  approved_by: finance@pinegenie.app\n"
            "  reason: Approved up to seventy percent\n  up_to_percent: 70\n"
        ),
    )
    codes = {d["code"] for d in diagnostics_of(run_validate(root))}
    assert "policy.max_discount_percent" in codes


# ------------------------------------------------------------------------------------- all at once


def test_independent_errors_in_three_files_are_reported_in_one_run(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, PRO, "status: active\n", "stauts: active\n")
    replace_text(root, DIWALI, "timezone: Asia/Kolkata\n", "timezone: Asia/Kolkatta\n")
    replace_text(root, PAGE, "  - plan: premium\n", "  - plan: premiun\n")
    run = run_validate(root, real=True)
    assert run.exit_code == 1
    errors = [d for d in diagnostics_of(run) if d["severity"] == "error"]
    located = {(d["file"], d["code"], d["line"]) for d in errors}
    assert located == {
        (PRO, "schema.unknown-key", line_of(root, PRO, "stauts")),
        (DIWALI, "ref.timezone", line_of(root, DIWALI, "Kolkatta")),
        (PAGE, "ref.unknown-plan", line_of(root, PAGE, "premiun")),
    }, show(errors)


def test_a_broken_plan_file_does_not_flood_its_references(tmp_path: Path) -> None:
    """Pro is referenced by 10 other entries; a syntax error in pro.yaml must be ONE error, not eleven."""
    root = copy_config(tmp_path)
    replace_text(root, PRO, "name: Pro\n", "name: Pro: the best\n")
    errors = [d for d in diagnostics_of(run_validate(root)) if d["severity"] == "error"]
    assert [(d["file"], d["code"]) for d in errors] == [(PRO, "yaml.syntax")], show(errors)
    assert errors[0]["line"] == line_of(root, PRO, "name: Pro: the best")
    assert "quoted" in errors[0]["hint"]


def test_text_output_shows_location_severity_message_and_fix(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, PRO, "  monthly:\n", "  montly:\n")
    run = run_validate(root, "text", real=True)
    assert run.exit_code == 1
    assert "Traceback" not in run.stdout + run.stderr
    line = line_of(root, PRO, "montly:")
    lines = run.stdout.splitlines()
    header = next(i for i, text in enumerate(lines) if text.startswith(f"{PRO}:{line}:3"))
    assert "error" in lines[header]
    assert "prices.montly" in lines[header]
    assert "unknown billing cycle 'montly'" in lines[header]
    assert lines[header + 1].strip() == "fix: did you mean `monthly`?"
    assert lines[-1].startswith("3 error(s), 0 warning(s)")
