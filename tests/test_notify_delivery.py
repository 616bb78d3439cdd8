"""Delivering the outbox: SMTP with STARTTLS and AUTH, signed webhooks, failures, backoff, concurrency."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from compiler.catalog import Catalog
from publishers.notify import outbox
from publishers.notify.deliver import deliver_due
from publishers.notify.webhook import verify
from tests.ledger_support import S, publish_shipped
from tests.notify_support import (
    ENV,
    PRICE_PAYLOAD,
    SMTP_PASSWORD,
    SMTP_USER,
    WEBHOOK_SECRET,
    add_customer,
    free_port,
    queue,
    row,
    shipped_catalog,
    smtp_server,
    webhook_server,
    with_channels,
)

AT = datetime.fromisoformat("2026-06-01T09:00:00+00:00")


@pytest.fixture
def published(engine: Engine) -> Engine:
    publish_shipped(engine)
    add_customer(engine, "cus_asha", "asha@example.in", "IN")
    return engine


@pytest.fixture
def catalog() -> Catalog:
    return shipped_catalog()


def _parts(message: Any) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    return text, html


def test_smtp_with_starttls_and_auth_sends_both_parts_in_the_customers_currency(
    published: Engine, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(tmp_path) as (mailbox, port, ca_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # trust the throwaway certificate only
        nid = queue(published, "price_change", "email", PRICE_PAYLOAD, customer="cus_asha", key="pc:1:asha")
        summary = deliver_due(published, S, AT, catalog=with_channels(catalog, smtp_port=port), environ=ENV)

    assert (summary["sent"], summary["failed"], summary["retry_scheduled"]) == (1, 0, 0), summary
    assert mailbox.logins == [(SMTP_USER, SMTP_PASSWORD)] and mailbox.tls == [True]
    assert mailbox.envelopes == [("billing@pinegenie.app", ["asha@example.in"])]
    message = mailbox.messages[0]
    assert message["Subject"] == "Your PineGenie Pro price changes on 1 July 2026"  # en_IN
    assert message["To"] == "asha@example.in" and message["X-Tariff-Idempotency-Key"] == "pc:1:asha"
    text, html = _parts(message)
    # Indian customer: rupees with Indian grouping, as on the pricing page.
    assert "You pay **₹1,499** today" in text and "**₹1,799**" in text
    assert "<strong>₹1,799</strong>" in html and "<strong>" not in text
    sent = row(published, nid)
    assert (sent["status"], sent["attempts"], sent["sent_at"], sent["last_error"]) == ("sent", 1, AT, None)
    # Nothing is due any more: a second run sends nothing.
    again = deliver_due(published, S, AT, catalog=with_channels(catalog, smtp_port=port), environ=ENV)
    assert again["claimed"] == 0


def test_smtp_failures_are_retried_and_never_reveal_the_password(
    published: Engine, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_customer(published, "cus_nomail", None, "US")
    with smtp_server(tmp_path) as (mailbox, port, ca_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        configured = with_channels(catalog, smtp_port=port)
        first = queue(
            published, "low_balance", "email", {"balance": 90, "allowance": 1000}, customer="cus_asha"
        )
        no_mail = queue(published, "tokens_expired", "email", {"credits": 5}, customer="cus_nomail")

        unset = deliver_due(published, S, AT, catalog=configured, environ={})
        assert (unset["retry_scheduled"], unset["failed"]) == (1, 1)
        missing = row(published, first)
        assert missing["status"] == "pending" and "TARIFF_SMTP_PASSWORD" in missing["last_error"]
        # No address will ever appear: failed at once, not after every attempt.
        gone = row(published, no_mail)
        assert (gone["status"], gone["attempts"]) == ("failed", 1)
        assert "has no e-mail address" in gone["last_error"]

        wrong = deliver_due(
            published,
            S,
            AT + timedelta(hours=1),
            catalog=configured,
            environ={"TARIFF_SMTP_PASSWORD": "nope"},
        )
        assert wrong["retry_scheduled"] == 1 and mailbox.messages == []
        refused = row(published, first)
        assert "535" in refused["last_error"] and "nope" not in refused["last_error"]
        assert refused["attempts"] == 2

        ok = deliver_due(published, S, AT + timedelta(hours=2), catalog=configured, environ=ENV)
        assert ok["sent"] == 1 and len(mailbox.messages) == 1
    with published.connect() as conn:
        stored = " ".join(
            str(v) for r in conn.execute(sa.text(f"SELECT * FROM {S}.notifications")).all() for v in r
        )
    assert SMTP_PASSWORD not in stored and SMTP_PASSWORD not in repr([unset, wrong, ok])


def test_webhook_is_signed_and_carries_a_stable_idempotency_key(published: Engine, catalog: Catalog) -> None:
    with webhook_server() as (hook, url):
        hook.script = [500]
        nid = queue(
            published, "promotion_started", "ops-webhook", {"promotion": "diwali-2026"}, key="promo:d"
        )
        configured = with_channels(catalog, webhook_url=url)
        failed = deliver_due(published, S, AT, catalog=configured, environ=ENV)
        retried = deliver_due(published, S, AT + timedelta(minutes=2), catalog=configured, environ=ENV)

    assert failed["retry_scheduled"] == 1 and "HTTP 500: internal trouble" in failed["errors"][0]["error"]
    assert "url-token-123" not in failed["errors"][0]["error"]  # a URL's query may hold a token
    assert retried["sent"] == 1
    assert len(hook.received) == 2
    keys = {r.headers["Idempotency-Key"] for r in hook.received}
    assert keys == {"promo:d"}
    last = hook.received[-1]
    assert verify(
        WEBHOOK_SECRET, last.body, last.headers["X-Tariff-Signature"], last.headers["X-Tariff-Timestamp"]
    )
    assert not verify(
        "another-secret", last.body, last.headers["X-Tariff-Signature"], last.headers["X-Tariff-Timestamp"]
    )
    assert not verify(
        WEBHOOK_SECRET,
        last.body + b" ",
        last.headers["X-Tariff-Signature"],
        last.headers["X-Tariff-Timestamp"],
    )
    stale = str(int(last.headers["X-Tariff-Timestamp"]) - 3600)
    assert not verify(WEBHOOK_SECRET, last.body, last.headers["X-Tariff-Signature"], stale)
    event = last.json()
    assert (event["id"], event["kind"], event["attempt"], event["customer"]) == (
        nid,
        "promotion_started",
        2,
        None,
    )
    assert event["message"]["subject"].startswith("Promotion started: Diwali")
    assert last.headers["X-Tariff-Event"] == "promotion_started"
    assert WEBHOOK_SECRET.encode() not in last.body
    done = row(published, nid)
    assert (done["status"], done["attempts"]) == ("sent", 2)


def test_backoff_grows_with_jitter_then_fails_and_retry_requeues(published: Engine, catalog: Catalog) -> None:
    refused_url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    configured = with_channels(catalog, webhook_url=refused_url, max_attempts=3)
    ids = [queue(published, "promotion_ended", "ops-webhook", {"promotion": "students"}) for _ in range(6)]

    at = AT
    delays: list[list[float]] = []
    for attempt in (1, 2):
        summary = deliver_due(published, S, at, catalog=configured, environ=ENV)
        assert summary["retry_scheduled"] == 6, summary
        rows = [row(published, i) for i in ids]
        assert all(r["attempts"] == attempt and "ConnectionError" in r["last_error"] for r in rows)
        delays.append([(r["next_attempt_at"] - at).total_seconds() for r in rows])
        # Not due before its time.
        assert (
            deliver_due(published, S, at + timedelta(seconds=29), catalog=configured, environ=ENV)["claimed"]
            == 0
        )
        at = max(r["next_attempt_at"] for r in rows)
    # 60 s then 120 s base, each with equal jitter (half fixed, half random), so never all alike.
    assert all(30 <= d <= 60 for d in delays[0]) and all(60 <= d <= 120 for d in delays[1])
    assert len(set(delays[0])) > 1

    last = deliver_due(published, S, at, catalog=configured, environ=ENV)
    assert last["failed"] == 6
    assert {row(published, i)["status"] for i in ids} == {"failed"}
    assert deliver_due(published, S, at + timedelta(days=30), catalog=configured, environ=ENV)["claimed"] == 0

    with published.begin() as conn:
        assert outbox.retry(conn, S, ids[0], at) == [ids[0]]
    with pytest.raises(outbox.NotificationNotFoundError, match="has not failed"), published.begin() as conn:
        outbox.retry(conn, S, ids[0], at)
    again = row(published, ids[0])
    assert (again["status"], again["attempts"], again["next_attempt_at"]) == ("pending", 0, at)


def test_a_slow_endpoint_times_out_and_is_retried(published: Engine, catalog: Catalog) -> None:
    with webhook_server() as (hook, url):
        hook.script = [("sleep", 3)]
        nid = queue(published, "promotion_started", "ops-webhook", {"promotion": "students"})
        started = time.monotonic()
        summary = deliver_due(
            published, S, AT, catalog=with_channels(catalog, webhook_url=url, timeout=1), environ=ENV
        )
        assert time.monotonic() - started < 2.9
    assert summary["retry_scheduled"] == 1
    assert "no answer within 1 s" in row(published, nid)["last_error"]


def test_unsigned_sends_are_refused_when_the_secret_is_missing(published: Engine, catalog: Catalog) -> None:
    with webhook_server() as (hook, url):
        nid = queue(published, "promotion_started", "ops-webhook", {"promotion": "students"})
        deliver_due(published, S, AT, catalog=with_channels(catalog, webhook_url=url), environ={})
    assert hook.received == []
    assert "TARIFF_WEBHOOK_SECRET (the signing secret) is not set" in row(published, nid)["last_error"]


def test_two_concurrent_senders_deliver_each_notification_once(published: Engine, catalog: Catalog) -> None:
    with webhook_server() as (hook, url):
        hook.delay = 0.01
        keys = [f"concurrent:{n}" for n in range(40)]
        for key in keys:
            queue(published, "promotion_started", "ops-webhook", {"promotion": "students"}, key=key)
        configured = with_channels(catalog, webhook_url=url)
        summaries: list[dict[str, Any]] = []
        barrier = threading.Barrier(2)

        def sender() -> None:
            barrier.wait()
            summaries.append(deliver_due(published, S, AT, catalog=configured, environ=ENV, limit=40))

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    received = [r.headers["Idempotency-Key"] for r in hook.received]
    assert sorted(received) == sorted(keys)  # every one, none twice
    assert sum(s["sent"] for s in summaries) == 40
    assert all(s["claimed"] > 0 for s in summaries), summaries  # both really worked
    with published.connect() as conn:
        assert (
            conn.execute(sa.text(f"SELECT count(*) FROM {S}.notifications WHERE status = 'sent'")).scalar()
            == 40
        )


def test_a_lapsed_lease_passes_the_row_on_and_the_old_claim_cannot_record(published: Engine) -> None:
    nid = queue(published, "promotion_started", "ops-webhook", {"promotion": "students"})
    first, second = uuid.uuid4(), uuid.uuid4()
    lease = timedelta(minutes=5)
    with published.begin() as conn:
        assert [c.id for c in outbox.claim(conn, S, first, 10, lease, AT)] == [nid]
        assert outbox.claim(conn, S, second, 10, lease, AT + timedelta(minutes=4)) == []
        assert [c.id for c in outbox.claim(conn, S, second, 10, lease, AT + timedelta(minutes=5))] == [nid]
        assert outbox.mark_sent(conn, S, nid, first, AT) is False
        assert outbox.mark_sent(conn, S, nid, second, AT) is True
    assert row(published, nid)["attempts"] == 2  # each claim is an attempt: at least once, counted


def test_values_are_escaped_in_the_html_part(
    published: Engine, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = "<script>alert(1)</script> [verify](https://evil.example) **now**"
    payload = {"amount_minor": 149900, "currency": "INR", "plan": "pro", "reason": reason}
    with smtp_server(tmp_path) as (mailbox, port, ca_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        queue(published, "payment_failed", "email", payload, customer="cus_asha")
        deliver_due(published, S, AT, catalog=with_channels(catalog, smtp_port=port), environ=ENV)
    text, html = _parts(mailbox.messages[0])
    assert reason in text
    assert "<script>" not in html and 'evil.example"' not in html and "<a " not in html
    assert "&lt;script&gt;" in html and "**now**" in html
    assert "<strong>₹1,499</strong>" in html and "<strong>Pro</strong>" in html


def test_unconfigured_channels_and_admin_mail(
    published: Engine, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = queue(published, "promotion_started", "pager", {"promotion": "students"})
    with smtp_server(tmp_path) as (mailbox, port, ca_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        admin = queue(published, "promotion_ended", "email", {"promotion": "students"})
        summary = deliver_due(published, S, AT, catalog=with_channels(catalog, smtp_port=port), environ=ENV)
    assert summary["sent"] == 1 and summary["retry_scheduled"] == 1
    assert "channel 'pager' is not configured" in row(published, lost)["last_error"]
    assert row(published, admin)["status"] == "sent"
    assert mailbox.envelopes[0][1] == ["admin@pinegenie.app"]


def test_enqueue_follows_routes_and_is_idempotent(published: Engine, catalog: Catalog) -> None:
    with published.begin() as conn:
        assert (
            outbox.enqueue(
                conn, S, catalog, "low_balance", "lb:asha:20", {"balance": 5}, customer_id="cus_asha"
            )
            == 1
        )
        assert (
            outbox.enqueue(
                conn, S, catalog, "low_balance", "lb:asha:20", {"balance": 5}, customer_id="cus_asha"
            )
            == 0
        )
        assert (
            outbox.enqueue(conn, S, catalog, "promotion_started", "ps:students", {"promotion": "students"})
            == 1
        )
        rows = conn.execute(sa.text(f"SELECT kind, channel FROM {S}.notifications ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("low_balance", "email"), ("promotion_started", "ops-webhook")]


def test_price_notices_written_by_apply_follow_routes_and_are_mailed_when_due(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_publish import apply, compile_dir, scripted_change, subscriber_base

    subscriber_base(engine)
    changed = scripted_change(tmp_path)
    tariff_yaml = changed / "tariff.yaml"
    tariff_yaml.write_text(
        tariff_yaml.read_text("utf-8").replace("price_change: [email]", "price_change: [email, ops-webhook]"),
        "utf-8",
    )
    result = apply(engine, compile_dir(changed))
    assert result.notifications == 6  # 3 customers × 2 channels
    with engine.connect() as conn:
        queued = conn.execute(
            sa.text(f"SELECT customer_id, channel, idempotency_key, next_attempt_at FROM {S}.notifications")
        ).all()
    rev = result.revision_id
    assert {(r.channel, r.idempotency_key) for r in queued if r.customer_id == "in-1"} == {
        ("email", f"price-change:{rev}:in-1"),
        ("ops-webhook", f"price-change:{rev}:in-1:ops-webhook"),
    }
    first_due = min(r.next_attempt_at for r in queued)
    with smtp_server(tmp_path) as (mailbox, port, ca_file), webhook_server() as (hook, url):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
        configured = with_channels(compile_dir(changed), smtp_port=port, webhook_url=url)
        early = deliver_due(engine, S, first_due - timedelta(seconds=1), catalog=configured, environ=ENV)
        assert early["claimed"] == 0  # the notice period has not begun
        due = deliver_due(engine, S, first_due + timedelta(days=40), catalog=configured, environ=ENV)
    assert due["sent"] == 6, due
    assert sorted(rcpt for _, [rcpt] in mailbox.envelopes) == [
        "in-1@example.com",
        "in-2@example.com",
        "in-3@example.com",
    ]
    text, _html = _parts(mailbox.messages[0])
    assert "₹1,499" in text and "₹1,799" in text
    assert {r.json()["customer"]["id"] for r in hook.received} == {"in-1", "in-2", "in-3"}
