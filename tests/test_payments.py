"""Payments in the database: checkout pricing, idempotent results, refunds and dunning (migration 0011)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database.payments import PaymentError, checkout, record_refund, request_refund, run_dunning, settle
from tests.ledger_support import S, publish_shipped
from tests.payment_support import AT, add_buyer, balance, scalar


@pytest.fixture
def shop(engine: Engine) -> Engine:
    publish_shipped(engine)
    return engine


def _checkout(engine: Engine, customer: str, item: dict[str, str], **kw: object) -> dict[str, object]:
    with engine.begin() as conn:
        return checkout(conn, S, customer, item, at=kw.pop("at", AT), **kw)  # type: ignore[arg-type]


def _settle(engine: Engine, txnid: str, status: str, amount: object, **kw: object) -> dict[str, object]:
    with engine.begin() as conn:
        return settle(conn, S, txnid, status, amount=str(amount), at=kw.pop("at", AT), **kw)  # type: ignore[arg-type]


def test_checkout_prices_with_promotion_and_gst(shop: Engine) -> None:
    add_buyer(shop, "asha")
    pay = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, codes=["welcome20"])
    # 1,499.00 − 20% = 1,199.20; 18% GST = 215.856 → 215.86 (half up); charged 1,415.06.
    assert (pay["list_minor"], pay["discount_minor"], pay["net_minor"]) == (149900, 29980, 119920)
    assert (pay["tax_name"], pay["tax_minor"], pay["amount_minor"]) == ("GST", 21586, 141506)
    assert pay["amount_text"] == "1415.06"
    assert pay["status"] == "pending" and pay["promotion_ids"] == ["welcome-code"]
    assert len(str(pay["txnid"])) <= 25 and str(pay["txnid"]).isalnum()
    assert pay["firstname"] == "Asha" and pay["email"] == "asha@example.in"


def test_checkout_refusals_write_nothing(shop: Engine) -> None:
    add_buyer(shop, "sam", country="US")
    add_buyer(shop, "asha")
    with pytest.raises(PaymentError, match="PayU is not configured to charge USD") as usd:
        _checkout(shop, "sam", {"plan": "pro", "cycle": "monthly"})
    assert "payments.currencies" in (usd.value.fix or "")
    with pytest.raises(PaymentError, match="code NOPE does not apply"):
        _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, codes=["nope"])
    with pytest.raises(PaymentError, match="for plans pro, premium"):
        _checkout(shop, "asha", {"package": "extra-500"})
    with pytest.raises(PaymentError, match="nothing to pay"):
        _checkout(shop, "asha", {"plan": "free", "cycle": "monthly"})
    first = _checkout(shop, "asha", {"plan": "pro", "cycle": "annual"}, txnid="ORDER1")
    with pytest.raises(PaymentError, match="already used"):
        _checkout(shop, "asha", {"plan": "pro", "cycle": "annual"}, txnid=str(first["txnid"]))
    assert scalar(shop, f"SELECT count(*) FROM {S}.payments") == 1


def test_success_activates_once_and_replays_change_nothing(shop: Engine) -> None:
    add_buyer(shop, "asha")
    pay = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, codes=["WELCOME20"])
    txnid = str(pay["txnid"])
    done = _settle(shop, txnid, "success", "1415.06", verified=True, mihpayid="4039001")
    assert done["outcome"] == "applied" and done["payment_status"] == "success"
    assert done["redemption"] == "redeemed"
    sub = scalar(shop, f"SELECT to_jsonb(s) FROM {S}.subscriptions s WHERE customer_id = 'asha'")
    assert (
        sub["plan_id"] == "pro"
        and sub["status"] == "active"
        and sub["price_version_id"] == pay["price_version_id"]
    )
    invoice = scalar(shop, f"SELECT to_jsonb(i) FROM {S}.invoices i WHERE payment_id = :p", p=pay["id"])
    assert (invoice["net_minor"], invoice["tax_minor"], invoice["total_minor"]) == (119920, 21586, 141506)
    assert invoice["tax_name"] == "GST" and float(invoice["tax_percent"]) == 18

    again = _settle(shop, txnid, "success", "1415.06", verified=True)
    late_failure = _settle(shop, txnid, "failure", "1415.06")
    assert again["duplicate"] is True
    assert late_failure["outcome"] == "ignored" and late_failure["payment_status"] == "success"
    counts = scalar(
        shop,
        f"SELECT jsonb_build_object('subs', (SELECT count(*) FROM {S}.subscriptions), "
        f"'redemptions', (SELECT count(*) FROM {S}.redemptions), "
        f"'invoices', (SELECT count(*) FROM {S}.invoices), "
        f"'events', (SELECT count(*) FROM {S}.payment_events), "
        f"'notifications', (SELECT count(*) FROM {S}.notifications WHERE kind = 'payment_failed'))",
    )
    assert counts == {"subs": 1, "redemptions": 1, "invoices": 1, "events": 2, "notifications": 0}


def test_failure_then_success_and_amount_checks(shop: Engine) -> None:
    add_buyer(shop, "asha", plan="pro")
    pay = _checkout(shop, "asha", {"package": "extra-500"})
    txnid = str(pay["txnid"])
    assert pay["amount_text"] == "1768.82"  # 1,499.00 + 18% GST
    with pytest.raises(PaymentError, match="amount mismatch"):
        _settle(shop, txnid, "success", "1768.00", verified=True)
    with pytest.raises(PaymentError, match="not confirmed with PayU"):
        _settle(shop, txnid, "success", "1768.82", verified=False)
    failed = _settle(shop, txnid, "failure", "1768.82", error="Bank declined")
    assert failed["payment_status"] == "failure"
    assert scalar(shop, f"SELECT count(*) FROM {S}.notifications WHERE kind = 'payment_failed'") == 1
    # PayU echoes amounts with decimals of its own choosing: 1768.820 is the same amount.
    paid = _settle(shop, txnid, "success", "1768.820", verified=True)
    assert paid["payment_status"] == "success" and paid["tokens_granted"] == 500
    assert balance(shop, "asha") == 500
    unknown = _settle(shop, "NEVERISSUED1", "success", "10.00", verified=True)
    assert unknown["outcome"] == "unknown_txnid"


def test_partial_then_full_refund_reverses_tokens_and_redemption(shop: Engine) -> None:
    add_buyer(shop, "asha")
    plan_pay = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, codes=["WELCOME20"])
    _settle(shop, str(plan_pay["txnid"]), "success", plan_pay["amount_text"], verified=True)
    pay = _checkout(shop, "asha", {"package": "extra-500"})
    _settle(shop, str(pay["txnid"]), "success", pay["amount_text"], verified=True)
    assert balance(shop, "asha") == 500

    with shop.begin() as conn:
        half = request_refund(conn, S, str(pay["txnid"]), 88441, "half the pack was unused")
    with shop.begin() as conn:
        retry = request_refund(conn, S, str(pay["txnid"]), 88441, "half the pack was unused")
    assert retry["retry"] is True and retry["token"] == half["token"]
    with shop.begin() as conn, pytest.raises(PaymentError, match="still unanswered"):
        request_refund(conn, S, str(pay["txnid"]), 100, "another")
    with shop.begin() as conn:
        record_refund(conn, S, int(half["id"]), "QUEUED", request_id="RQ1")
        done = record_refund(conn, S, int(half["id"]), "SUCCESS", request_id="RQ1")
        replay = record_refund(conn, S, int(half["id"]), "SUCCESS", request_id="RQ1")
    assert done["payment_status"] == "partially_refunded" and done["tokens_revoked"] == 250
    assert replay["duplicate"] is True
    assert balance(shop, "asha") == 250

    with shop.begin() as conn, pytest.raises(PaymentError, match="left to refund"):
        request_refund(conn, S, str(pay["txnid"]), 100000, "too much")
    with shop.begin() as conn:
        full = request_refund(conn, S, str(plan_pay["txnid"]), None, "changed their mind")
        out = record_refund(conn, S, int(full["id"]), "SUCCESS", request_id="RQ2")
    assert out["payment_status"] == "refunded"
    assert {a["action"] for a in out["actions"]} == {"redemption_reversed", "subscription_canceled"}
    assert scalar(shop, f"SELECT status FROM {S}.redemptions") == "reversed"


def test_failed_renewal_is_dunned_then_downgraded(shop: Engine) -> None:
    add_buyer(shop, "asha")
    first = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"})
    _settle(shop, str(first["txnid"]), "success", first["amount_text"], verified=True)
    with shop.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.payment_rules SET dunning_downgrade_to = 'free', dunning_suspend_tokens = true"
            )
        )
        conn.execute(
            sa.text(f"SELECT {S}.grant_tokens('asha', 40, 'admin', NULL, 'test', 'test', p_at => :at)"),
            {"at": AT},
        )
    later = AT + timedelta(days=30)
    renewal = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, at=later)
    assert renewal["purpose"] == "renewal"
    _settle(shop, str(renewal["txnid"]), "failure", renewal["amount_text"], at=later)
    case = scalar(shop, f"SELECT to_jsonb(d) FROM {S}.dunning_cases d")
    assert case["status"] == "open" and case["reason"] == "payment_failed"

    with shop.begin() as conn:
        r1 = run_dunning(conn, S, later + timedelta(days=1, minutes=1))
        r1_again = run_dunning(conn, S, later + timedelta(days=1, minutes=1))
    assert r1["reminders_sent"] == 1 and r1_again["reminders_sent"] == 0
    with shop.begin() as conn:
        lapsed = run_dunning(conn, S, later + timedelta(days=20))
    assert lapsed["cases_lapsed"] == 1
    subs = scalar(
        shop, f"SELECT jsonb_object_agg(plan_id, status) FROM {S}.subscriptions WHERE customer_id = 'asha'"
    )
    assert subs == {"pro": "canceled", "free": "active"}
    assert balance(shop, "asha") == 0
    assert scalar(shop, f"SELECT count(*) FROM {S}.notifications WHERE kind = 'payment_failed'") >= 3


def test_dunning_reminders_name_what_paying_the_renewal_costs(shop: Engine) -> None:
    add_buyer(shop, "asha")  # India: prices exclude the 18% GST
    first = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"})
    _settle(shop, str(first["txnid"]), "success", first["amount_text"], verified=True)
    unpaid = AT + timedelta(days=31)  # the paid month is over and nothing renewed it
    with shop.begin() as conn:
        assert run_dunning(conn, S, unpaid)["reminders_sent"] == 1
    reminder = scalar(shop, f"SELECT payload FROM {S}.notifications WHERE kind = 'payment_failed'")
    renewal = _checkout(shop, "asha", {"plan": "pro", "cycle": "monthly"}, at=unpaid)
    assert renewal["purpose"] == "renewal"
    # 1,499.00 + 18% GST: the reminder once said 1499.00, the price before tax.
    assert reminder["amount"] == renewal["amount_text"] == "1768.82"
    assert reminder["currency"] == "INR"


def test_bundle_buys_the_plan_and_the_credits(shop: Engine) -> None:
    add_buyer(shop, "maya")
    pay = _checkout(shop, "maya", {"bundle": "creator-bundle"})
    # Fixed price 15,999.00 + 18% GST = 18,878.82.
    assert (pay["kind"], pay["net_minor"], pay["amount_text"]) == ("bundle", 1599900, "18878.82")
    done = _settle(shop, str(pay["txnid"]), "success", "18878.82", verified=True)
    assert done["outcome"] == "applied" and done["redemption"] == "redeemed" and done["tokens_granted"] == 500
    assert scalar(
        shop, f"SELECT plan_id || '/' || cycle FROM {S}.subscriptions WHERE customer_id = 'maya'"
    ) == ("pro/annual")
    assert balance(shop, "maya") == 500


def test_concurrent_deliveries_of_one_success_act_once(shop: Engine) -> None:
    import threading

    add_buyer(shop, "asha", plan="pro")
    pay = _checkout(shop, "asha", {"package": "extra-500"})
    barrier = threading.Barrier(4)
    results: list[dict[str, object]] = []

    def deliver() -> None:
        barrier.wait()
        results.append(_settle(shop, str(pay["txnid"]), "success", "1768.82", verified=True))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(str(r["outcome"]) for r in results) == ["applied", "duplicate", "duplicate", "duplicate"]
    assert balance(shop, "asha") == 500
    assert scalar(shop, f"SELECT count(*) FROM {S}.invoices") == 1
