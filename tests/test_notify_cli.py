"""`tariff notify` and template checks through the real CLI: validate, preview, send, list, retry."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from tests.ledger_support import REPO, publish_shipped
from tests.notify_support import (
    ENV,
    PRICE_PAYLOAD,
    SMTP_PASSWORD,
    WEBHOOK_SECRET,
    add_customer,
    queue,
    smtp_server,
    webhook_server,
)

Run = Callable[..., Any]
NOTIFY = "content/notifications"


def invoke(args: list[str], code: int = 0, env: dict[str, str] | None = None) -> Any:
    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, args)
    if isinstance(result.exception, CommandError):
        assert code == 1, f"{result.exception.message} ({result.exception.fix})"
        return result.exception
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


@pytest.fixture
def config(tmp_path: Path) -> Path:
    root = tmp_path / "pricing"
    shutil.copytree(REPO / "pricing", root)
    return root


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text("utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new), "utf-8")


def test_validate_reports_each_template_problem_with_file_line_and_fix(config: Path) -> None:
    edit(config, f"{NOTIFY}/low_balance.md", "**{{ balance }}**", "**{{ balanse }}**")
    edit(config, f"{NOTIFY}/promotion_started.md", "{% endif %}.", ".")
    edit(config, f"{NOTIFY}/promotion_ended.md", "{{ ends_date }}", "{{ ends_date | money }}")
    edit(config, f"{NOTIFY}/tokens_expired.md", "Subject: ", "Subjekt: ")
    (config / NOTIFY / "payment_failed.md").rename(config / NOTIFY / "payment_faild.md")
    edit(config, "tariff.yaml", "promotion_ended: [ops-webhook]", "promotion_ended: [ops-webhok]")

    result = invoke(["validate", "-c", str(config), "-f", "json"], code=1)
    found = {(d["code"], d["file"], d["line"]): d for d in json.loads(result.output)["diagnostics"]}
    variable = found["notifications.template-variable", f"{NOTIFY}/low_balance.md", 5]
    assert (
        "unknown variable 'balanse'" in variable["message"] and variable["hint"] == "did you mean `balance`?"
    )
    syntax = found["notifications.template-syntax", f"{NOTIFY}/promotion_started.md", 3]
    assert "'endif'" in syntax["message"]
    assert (
        "No filter named 'money'"
        in found["notifications.template-syntax", f"{NOTIFY}/promotion_ended.md", 3]["message"]
    )
    assert "`Subject: …`" in found["notifications.template-format", f"{NOTIFY}/tokens_expired.md", 1]["hint"]
    unknown = found["notifications.unknown-kind", f"{NOTIFY}/payment_faild.md", None]
    assert "payment_failed" in unknown["hint"]
    missing = found["notifications.template-missing", f"{NOTIFY}/payment_failed.md", None]
    assert "create content/notifications/payment_failed.md" in missing["hint"]
    channel = next(
        d for (code, file, _), d in found.items() if code == "ref.unknown-channel" and file == "tariff.yaml"
    )
    assert channel["path"].endswith("routes.promotion_ended[0]") and "ops-webhook" in channel["hint"]

    text = invoke(["validate", "-c", str(config)], code=1).output
    assert f"{NOTIFY}/low_balance.md:5:1: error: unknown variable 'balanse'" in text


def test_unknown_route_kind_is_a_schema_error(config: Path) -> None:
    edit(config, "tariff.yaml", "    low_balance: [email]", "    low_balanse: [email]")
    output = invoke(["validate", "-c", str(config)], code=1).output
    assert "tariff.yaml" in output and "low_balanse" in output


def test_preview_renders_sample_data_without_a_database(config: Path, tmp_path: Path) -> None:
    html = tmp_path / "notice.html"
    result = invoke(["notify", "preview", "price_change", "-c", str(config), "--out", str(html)])
    assert result.output.startswith("Subject: Your PineGenie Premium price changes on ")
    assert "You pay **$39** today" in result.output
    page = html.read_text("utf-8")
    assert "<strong>$39</strong>" in page and page.startswith("<!DOCTYPE html>")
    data = json.loads(invoke(["notify", "preview", "payment_failed", "-c", str(config), "-f", "json"]).output)
    assert data["subject"] == "Your PineGenie payment of $39 did not go through" and "<p>" in data["html"]

    wrong = invoke(["notify", "preview", "price_chnage", "-c", str(config)], code=1)
    assert "unknown notification kind 'price_chnage'" in wrong.message and "price_change" in wrong.fix


@pytest.fixture
def outbox(engine: Engine) -> Engine:
    publish_shipped(engine)
    add_customer(engine, "cus_asha", "asha@example.in", "IN")
    return engine


def test_send_list_retry_and_preview_a_real_row(
    outbox: Engine, pg_url: str, config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ["-c", str(config), "--database-url", pg_url]
    with smtp_server(tmp_path) as (mailbox, port, ca_file), webhook_server() as (hook, url):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        hook.default = 503
        edit(config, "tariff.yaml", "host: smtp.pinegenie.app", "host: 127.0.0.1")
        edit(config, "tariff.yaml", "port: 587", f"port: {port}")
        edit(config, "tariff.yaml", "url: https://pinegenie.app/api/tariff/events", f"url: {url}")
        edit(config, "tariff.yaml", "max_attempts: 8", "max_attempts: 2")
        mail = queue(outbox, "price_change", "email", PRICE_PAYLOAD, customer="cus_asha")
        event = queue(outbox, "promotion_started", "ops-webhook", {"promotion": "students"})

        preview = invoke(["notify", "preview", "price_change", "--customer", "cus_asha", *db]).output
        assert "You pay **₹1,499** today" in preview
        first = invoke(["notify", "send", "--now", "2026-06-01T09:00Z", *db], env=ENV).output
        assert "1 sent, 1 to be retried, 0 failed (2 due)" in first
        assert f"#{event} promotion_started via ops-webhook: POST http://127.0.0.1:" in first
        assert "HTTP 503" in first and "url-token-123" not in first
        second = invoke(["notify", "send", "--now", "2026-06-01T10:00Z", "-f", "json", *db], env=ENV).output
        assert json.loads(second)["failed"] == 1
    assert len(mailbox.messages) == 1 and len(hook.received) == 2
    for output in (preview, first, second):
        assert SMTP_PASSWORD not in output and WEBHOOK_SECRET not in output

    failed = json.loads(invoke(["notify", "list", "--failed", "-f", "json", *db]).output)
    assert [(r["id"], r["attempts"], r["status"]) for r in failed] == [(event, 2, "failed")]
    listed = invoke(["notify", "list", "--sent", "--customer", "cus_asha", *db]).output
    assert f"{mail}" in listed and "price_change" in listed and "sent 2026-06-01" in listed

    assert "exclude each other" in invoke(["notify", "list", "--failed", "--sent", *db], code=1).message
    assert "price_chang" in invoke(["notify", "list", "--kind", "price_chang", *db], code=1).message
    assert "--all-failed" in invoke(["notify", "retry", *db], code=1).fix
    assert "no notification 99999" in invoke(["notify", "retry", "99999", *db], code=1).message
    assert "has not failed" in invoke(["notify", "retry", str(mail), *db], code=1).message
    assert f"1 notification(s) queued again: {event}" in invoke(["notify", "retry", str(event), *db]).output
    pending = json.loads(invoke(["notify", "list", "--pending", "-f", "json", *db]).output)
    assert [(r["id"], r["attempts"]) for r in pending] == [(event, 0)]
    assert json.loads(invoke(["notify", "retry", "--all-failed", "-f", "json", *db]).output) == {
        "retried": []
    }


def test_send_refuses_a_config_with_errors(config: Path) -> None:
    edit(config, f"{NOTIFY}/low_balance.md", "{{ balance }}", "{{ balance")
    error = invoke(["notify", "send", "-c", str(config)], code=1)
    assert "error(s)" in error.message and "tariff validate" in error.fix


@pytest.mark.parametrize(
    "kind",
    [
        "price_change",
        "grandfathering_executed",
        "low_balance",
        "tokens_expired",
        "boost_ended",
        "package_renewal_due",
        "promotion_started",
        "promotion_ended",
        "payment_failed",
        "usage_anomaly",
    ],
)
def test_every_shipped_template_previews(config: Path, kind: str) -> None:
    data = json.loads(invoke(["notify", "preview", kind, "-c", str(config), "-f", "json"]).output)
    assert data["subject"] and data["text"].strip() and "<p>" in data["html"]
    assert "None" not in data["text"] and "{{" not in data["text"]


def test_templates_travel_with_the_published_config_files(tmp_path: Path) -> None:
    from compiler.emit_yaml import catalog_files
    from compiler.project import compile_config

    original = compile_config(REPO / "pricing").catalog
    assert original is not None
    for name, text in catalog_files(original).items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    again = compile_config(tmp_path)
    assert again.ok, [d.message for d in again.diagnostics.errors]
    assert again.catalog is not None and again.catalog.settings.templates == original.settings.templates
    assert again.catalog.settings.routes == original.settings.routes
    assert again.catalog.settings.delivery == original.settings.delivery
