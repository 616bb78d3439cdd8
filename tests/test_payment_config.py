"""tariff.yaml `payments`: validated with located errors, published by apply, shown by diff."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from compiler.diff import diff_catalogs
from compiler.project import compile_config
from publishers.postgres.apply import Revision, apply_catalog
from tests.ledger_support import PUBLISHED_AT, S
from tests.test_bad_configs import copy_config, diagnostics_of, line_of, replace_text, run_validate

SETTINGS = "tariff.yaml"


def _errors(root: Path) -> list[dict[str, object]]:
    return [d for d in diagnostics_of(run_validate(root)) if d["severity"] == "error"]


def test_unknown_downgrade_plan_is_located_with_a_suggestion(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, SETTINGS, "downgrade_to: free", "downgrade_to: fre")
    [error] = _errors(root)
    assert error["code"] == "ref.unknown-plan" and error["line"] == line_of(
        root, SETTINGS, "downgrade_to: fre"
    )
    assert error["path"] == "payments.dunning.after_grace.downgrade_to" and "free" in str(error["hint"])


def test_unknown_currency_channel_and_bad_duration(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, SETTINGS, "  currencies: [INR]\n  refunds:", "  currencies: [INR, USX]\n  refunds:")
    replace_text(root, SETTINGS, "    channel: email\n", "    channel: emial\n")
    codes = {(e["code"], e["path"]) for e in _errors(root)}
    assert ("ref.unknown-currency", "payments.currencies[1]") in codes or (
        "ref.unknown-currency",
        "payments.currencies.1",
    ) in codes
    assert any(code == "ref.unknown-notification-channel" for code, _ in codes)

    root2 = copy_config(tmp_path / "two")
    replace_text(root2, SETTINGS, "grace_period: 7 days", "grace_period: a week")
    [error] = _errors(root2)
    assert str(error["code"]).startswith("schema") and "grace_period" in str(error["path"])


def test_apply_publishes_payment_rules_and_diff_shows_their_change(engine: Engine, tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    before = compile_config(root).catalog
    assert before is not None and before.payment_rules.dunning_downgrade_to == "free"
    apply_catalog(engine, S, before, Revision("test"), environment=None, database="test", now=PUBLISHED_AT)
    with engine.begin() as conn:
        row = conn.execute(sa.text(f"SELECT * FROM {S}.payment_rules")).mappings().one()
    assert row["currencies"] == ["INR"] and row["invoice_prefix"] == "PG-"
    assert row["dunning_retries"] == ["1 day", "3 days", "5 days"] and row["dunning_grace"] == "7 days"

    replace_text(root, SETTINGS, "suspend_tokens: false", "suspend_tokens: true")
    after = compile_config(root).catalog
    assert after is not None
    changes = diff_catalogs(before, after).changes
    assert [(c.kind, [f.field for f in c.fields]) for c in changes] == [
        ("payment-rules", ["dunning_suspend_tokens"])
    ]


def test_mandate_settings_are_checked_published_and_diffed(engine: Engine, tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    before = compile_config(root).catalog
    assert before is not None
    apply_catalog(engine, S, before, Revision("test"), environment=None, database="test", now=PUBLISHED_AT)
    with engine.begin() as conn:
        row = conn.execute(sa.text(f"SELECT * FROM {S}.payment_rules")).mappings().one()
    assert (row["mandate_headroom_percent"], row["mandate_valid_for"], row["pre_debit_notice"]) == (
        25,
        "10 years",
        "2 days",
    )
    replace_text(root, SETTINGS, "headroom_percent: 25", "headroom_percent: 12.5")
    after = compile_config(root).catalog
    assert after is not None
    assert [(c.kind, [f.field for f in c.fields]) for c in diff_catalogs(before, after).changes] == [
        ("payment-rules", ["mandate_headroom_percent"])
    ]

    # PayU needs a notice 24 hours before the debit: a window that short leaves no time to send it.
    short = copy_config(tmp_path / "short")
    replace_text(short, SETTINGS, "pre_debit_notice: 2 days", "pre_debit_notice: 24 hours")
    [error] = _errors(short)
    assert error["code"] == "payments.pre-debit-notice-too-short"
    assert error["line"] == line_of(short, SETTINGS, "pre_debit_notice: 24 hours")
    bad = copy_config(tmp_path / "bad")
    replace_text(bad, SETTINGS, "headroom_percent: 25", "headroom_percent: -5")
    [error] = _errors(bad)
    assert "headroom_percent" in str(error["path"])
