"""A checkout holds its promotions' places (migration 0024): a single-use code or the last place under a
limit can be charged for once, a failed or expired payment gives its places back, and a passing database
failure in fulfilment is retried instead of recorded."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database.payments import PaymentError, checkout, expire, retry_fulfilment, settle
from publishers.payu.checkout import form_for
from publishers.payu.client import PayUClient
from publishers.payu.config import PayUConfig
from publishers.payu.credentials import PayUCredentials
from publishers.payu.reconcile import reconcile
from publishers.payu.simulator import RunningSimulator, start_simulator
from tests.analytics_support import period, revenue, row_of
from tests.ledger_support import S, publish_shipped
from tests.payment_support import AT, add_buyer, balance, scalar
from tests.payu_support import SIM_KEY, SIM_SALT

ANNUAL = {"plan": "pro", "cycle": "annual"}


@pytest.fixture
def shop(engine: Engine) -> Engine:
    publish_shipped(engine)
    for customer in ("asha", "ravi"):
        add_buyer(engine, customer)
    return engine


def _launch_code(engine: Engine) -> str:
    return str(
        scalar(engine, f"SELECT min(code) FROM {S}.promotion_codes WHERE promotion_id = 'launch-codes'")
    )


def _checkout(engine: Engine, customer: str, codes: list[str], at: datetime = AT) -> dict[str, object]:
    with engine.begin() as conn:
        return checkout(conn, S, customer, ANNUAL, codes=codes, at=at)


def _settle(engine: Engine, pay: dict[str, object], status: str) -> dict[str, object]:
    with engine.begin() as conn:
        return settle(
            conn,
            S,
            str(pay["txnid"]),
            status,
            amount=str(pay["amount_text"]),
            verified=status == "success",
            at=AT,
        )


def _redemptions(engine: Engine) -> list[tuple[str, str]]:
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT customer_id, status FROM {S}.redemptions "
                "WHERE promotion_id = 'launch-codes' ORDER BY id"
            )
        ).all()
    return [(str(customer), str(status)) for customer, status in rows]


def test_a_single_use_code_is_charged_for_once(shop: Engine) -> None:
    code = _launch_code(shop)
    first = _checkout(shop, "asha", [code])
    assert first["redemption_status"] == "redeemed" and int(str(first["discount_minor"])) > 0
    with pytest.raises(PaymentError, match=f"code {code} does not apply"):
        _checkout(shop, "ravi", [code])
    assert scalar(shop, f"SELECT count(*) FROM {S}.payments WHERE customer_id = 'ravi'") == 0
    paid = _settle(shop, first, "success")
    assert paid["redemption"] == "redeemed" and paid["outcome"] == "applied"
    assert _redemptions(shop) == [("asha", "redeemed")]


def test_a_code_pasted_with_blanks_around_it_is_taken_by_the_app_s_sql_calls(shop: Engine) -> None:
    # What the app calls: payment_checkout() and redeem() with the code as the customer pasted it (from an
    # HTML e-mail: a non-breaking space before, a line break after); the single use is still counted once.
    code = _launch_code(shop)
    paid = _checkout(shop, "asha", [f"\u00a0{code.lower()}\r\n"])
    assert paid["redemption_status"] == "redeemed" and int(str(paid["discount_minor"])) > 0
    with shop.begin() as conn:
        again = conn.execute(
            sa.text(
                f"SELECT {S}.redeem('ravi', CAST(:item AS jsonb), p_codes => ARRAY[:code], "
                "p_idempotency_key => 'order-9', p_at => :at)"
            ),
            {"item": '{"plan": "pro", "cycle": "annual"}', "code": f"\t{code}\u200b", "at": AT},
        ).scalar_one()
    # Known (so refused as used), not unknown: the tab and the zero-width space were taken off.
    assert [(c["code"], c["reason"]) for c in again["codes"]] == [(code, "code_used")]
    with shop.begin() as conn:
        inside = conn.execute(
            sa.text(f"SELECT {S}.quote('ravi', CAST(:item AS jsonb), p_codes => ARRAY[:code], p_at => :at)"),
            {"item": '{"plan": "pro", "cycle": "annual"}', "code": f"{code[:3]} {code[3:]}", "at": AT},
        ).scalar_one()
    assert inside["codes"][0]["reason"] == "unknown_code"  # a blank inside a code is not trimmed
    assert _redemptions(shop) == [("asha", "redeemed")]


def test_concurrent_checkouts_with_one_code_charge_one_discount(shop: Engine) -> None:
    code = _launch_code(shop)
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def attempt(customer: str) -> None:
        start.wait()
        try:
            _checkout(shop, customer, [code])
            outcomes.append("priced")
        except PaymentError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=attempt, args=(c,)) for c in ("asha", "ravi")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("priced") == 1, outcomes
    assert scalar(shop, f"SELECT count(*) FROM {S}.payments WHERE discount_minor > 0") == 1
    assert len(_redemptions(shop)) == 1


def test_a_failed_payment_gives_its_code_back(shop: Engine) -> None:
    code = _launch_code(shop)
    first = _checkout(shop, "asha", [code])
    failed = _settle(shop, first, "failure")
    assert failed["payment_status"] == "failure"
    assert _redemptions(shop) == [("asha", "reversed")]
    second = _checkout(shop, "ravi", [code])
    assert _settle(shop, second, "success")["redemption"] == "redeemed"
    assert _redemptions(shop) == [("asha", "reversed"), ("ravi", "redeemed")]


def test_an_expired_payment_gives_its_code_back(shop: Engine) -> None:
    code = _launch_code(shop)
    first = _checkout(shop, "asha", [code])
    with shop.begin() as conn:
        assert expire(conn, S, str(first["txnid"]), at=AT + timedelta(hours=2)) is True
        assert expire(conn, S, str(first["txnid"]), at=AT + timedelta(hours=3)) is False
    assert scalar(shop, f"SELECT status FROM {S}.payments WHERE id = :p", p=first["id"]) == "expired"
    assert _redemptions(shop) == [("asha", "reversed")]
    _checkout(shop, "ravi", [code])


def test_checking_out_again_moves_the_customers_own_hold(shop: Engine) -> None:
    code = _launch_code(shop)
    abandoned = _checkout(shop, "asha", [code])
    again = _checkout(shop, "asha", [code], at=AT + timedelta(minutes=5))
    assert (
        scalar(shop, f"SELECT redemption_status FROM {S}.payments WHERE id = :p", p=abandoned["id"])
        == "reversed"
    )
    assert _redemptions(shop) == [("asha", "reversed"), ("asha", "redeemed")]
    assert _settle(shop, again, "success")["redemption"] == "redeemed"


def test_success_after_failure_takes_the_place_again_or_is_reported(shop: Engine) -> None:
    code = _launch_code(shop)
    late = _checkout(shop, "asha", [code])
    _settle(shop, late, "failure")
    # PayU reports attempts out of order: the payment succeeds after all, and the code is still free.
    paid = _settle(shop, late, "success")
    assert paid["payment_status"] == "success" and paid["redemption"] == "redeemed"
    assert _redemptions(shop) == [("asha", "reversed"), ("asha", "redeemed")]

    # Now the same story when someone else took the code in between: the customer keeps the price, and the
    # payment says its discount was not redeemed (reconcile reports it).
    other_code = str(
        scalar(shop, f"SELECT max(code) FROM {S}.promotion_codes WHERE promotion_id = 'launch-codes'")
    )
    add_buyer(shop, "meera")
    lost = _checkout(shop, "ravi", [other_code])
    _settle(shop, lost, "failure")
    taken = _checkout(shop, "meera", [other_code])
    _settle(shop, taken, "success")
    out = _settle(shop, lost, "success")
    assert out["payment_status"] == "success" and out["redemption"] == "refused"
    assert (
        scalar(
            shop,
            f"SELECT count(*) FROM {S}.redemptions WHERE code = :c AND status = 'redeemed'",
            c=other_code,
        )
        == 1
    )


def test_a_lock_timeout_in_fulfilment_fails_the_call_so_it_is_retried(shop: Engine) -> None:
    add_buyer(shop, "kiran", plan="pro")
    with shop.begin() as conn:
        pay = checkout(conn, S, "kiran", {"package": "extra-500"}, at=AT)
        conn.execute(sa.text(f"SELECT {S}.grant_tokens('kiran', 1, 'admin', p_reason => 'open the account')"))
    holder = shop.connect()
    try:
        holder.execute(sa.text(f"SELECT 1 FROM {S}.token_accounts WHERE customer_id = 'kiran' FOR UPDATE"))
        with shop.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(PaymentError, match="lock timeout") as raised:
                settle(
                    conn,
                    S,
                    str(pay["txnid"]),
                    "success",
                    amount=str(pay["amount_text"]),
                    verified=True,
                    at=AT,
                )
        assert raised.value.sqlstate == "55P03"
    finally:
        holder.rollback()
        holder.close()
    # Nothing was recorded, so PayU's retry is applied in full.
    assert scalar(shop, f"SELECT status FROM {S}.payments WHERE id = :p", p=pay["id"]) == "pending"
    assert _settle(shop, pay, "success")["outcome"] == "applied"
    assert balance(shop, "kiran") == 501


def test_a_recorded_fulfilment_failure_is_fulfilled_again(shop: Engine) -> None:
    add_buyer(shop, "kiran", plan="pro")
    with shop.begin() as conn:
        pay = checkout(conn, S, "kiran", {"package": "extra-500"}, at=AT)
        # The package leaves the customer's plan before the payment arrives: fulfilment fails, recorded.
        conn.execute(
            sa.text(f"UPDATE {S}.token_packages SET status = 'retired', retired_at = :at"), {"at": AT}
        )
    failed = _settle(shop, pay, "success")
    assert failed["outcome"] == "fulfilment_failed" and balance(shop, "kiran") == 0
    with shop.begin() as conn:
        still = retry_fulfilment(conn, S, str(pay["txnid"]), at=AT)
    assert still["outcome"] == "fulfilment_failed" and still["detail"]
    with shop.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.token_packages SET status = 'active', retired_at = NULL"))
        done = retry_fulfilment(conn, S, str(pay["txnid"]), at=AT)
        again = retry_fulfilment(conn, S, str(pay["txnid"]), at=AT)
    assert done["outcome"] == "applied" and done["tokens_granted"] == 500
    assert again["outcome"] == "not_needed"
    with shop.begin() as conn, pytest.raises(PaymentError, match="unknown txnid") as unknown:
        retry_fulfilment(conn, S, "NOSUCHTXN", at=AT)
    assert unknown.value.fix == "list payments with tariff payu payments"
    assert balance(shop, "kiran") == 500
    assert scalar(shop, f"SELECT fulfilment_error FROM {S}.payments WHERE id = :p", p=pay["id"]) is None


def test_the_promotion_report_counts_paid_checkouts_only(shop: Engine) -> None:
    code = _launch_code(shop)
    _settle(shop, _checkout(shop, "asha", [code]), "failure")  # held, then given back
    _settle(shop, _checkout(shop, "ravi", [code]), "success")
    add_buyer(shop, "meera")
    other = str(
        scalar(shop, f"SELECT max(code) FROM {S}.promotion_codes WHERE promotion_id = 'launch-codes'")
    )
    _checkout(shop, "meera", [other])  # held, still pending
    row = row_of(revenue(shop, period("2026-11-01", "2026-11-30")), "promotions", promotion="launch-codes")
    assert (row["redemptions"], row["reversed"]) == (1, 0)


# ------------------------------------------------------------------------------------ reconciliation


@pytest.fixture
def payu() -> Iterator[RunningSimulator]:
    sim = start_simulator(0, SIM_KEY, SIM_SALT, refund_settle_seconds=None)
    try:
        yield sim
    finally:
        sim.stop()


def _reconcile(engine: Engine, sim: RunningSimulator, now: datetime, fix: bool) -> dict[str, Any]:
    client = PayUClient(sim.url, PayUCredentials(SIM_KEY, SIM_SALT), timeout=5, retries=1, backoff=0)
    with engine.begin() as conn:
        return reconcile(conn, S, client, AT - timedelta(days=1), now, fix=fix)


def _paid_at_payu(sim: RunningSimulator, pay: dict[str, Any]) -> None:
    """The customer pays on PayU's page; no webhook arrives."""
    config = PayUConfig(
        "local",
        "simulator",
        sim.url,
        sim.url,
        success_url="http://127.0.0.1:9/ok",
        failure_url="http://127.0.0.1:9/no",
    )
    form = form_for(pay, config, PayUCredentials(SIM_KEY, SIM_SALT))
    assert requests.post(form.action, data=form.fields, timeout=10).status_code == 200
    paid = requests.post(
        f"{sim.url}/_sim/pay", json={"txnid": pay["txnid"], "outcome": "success"}, timeout=10
    )
    assert paid.status_code == 200, paid.text


def test_reconcile_expires_a_checkout_payu_never_saw_and_frees_its_code(
    shop: Engine, payu: RunningSimulator
) -> None:
    code = _launch_code(shop)
    abandoned = _checkout(shop, "asha", [code])
    report = _reconcile(shop, payu, AT + timedelta(hours=2), fix=True)
    assert [(m["issue"], m["fixed"]) for m in report["mismatches"]] == [("not_at_payu", True)]
    assert scalar(shop, f"SELECT status FROM {S}.payments WHERE id = :p", p=abandoned["id"]) == "expired"
    assert _redemptions(shop) == [("asha", "reversed")]
    assert _checkout(shop, "ravi", [code])["redemption_status"] == "redeemed"


def test_reconcile_fix_fulfils_a_paid_payment_again(shop: Engine, payu: RunningSimulator) -> None:
    add_buyer(shop, "kiran", plan="pro")
    with shop.begin() as conn:
        pay = checkout(conn, S, "kiran", {"package": "extra-500"})
        conn.execute(sa.text(f"UPDATE {S}.token_packages SET status = 'retired', retired_at = now()"))
    _paid_at_payu(payu, pay)
    with shop.begin() as conn:
        failed = settle(conn, S, str(pay["txnid"]), "success", amount=str(pay["amount_text"]), verified=True)
        conn.execute(sa.text(f"UPDATE {S}.token_packages SET status = 'active', retired_at = NULL"))
    assert failed["outcome"] == "fulfilment_failed"
    now = datetime.now(AT.tzinfo)
    [seen] = _reconcile(shop, payu, now, fix=False)["mismatches"]
    assert (seen["issue"], seen["fixable"], seen["fixed"]) == ("fulfilment_failed", True, False)
    report = _reconcile(shop, payu, now, fix=True)
    assert report["fixed"] == 1 and balance(shop, "kiran") == 500
    assert _reconcile(shop, payu, now, fix=False)["mismatches"] == []


def test_reconcile_reports_a_discount_it_could_not_redeem(shop: Engine, payu: RunningSimulator) -> None:
    code = _launch_code(shop)
    lost = _checkout(shop, "asha", [code])
    _settle(shop, lost, "failure")
    _settle(shop, _checkout(shop, "ravi", [code]), "success")
    assert _settle(shop, lost, "success")["redemption"] == "refused"
    issues = {
        m["txnid"]: m for m in _reconcile(shop, payu, AT + timedelta(minutes=5), fix=True)["mismatches"]
    }
    assert issues[str(lost["txnid"])]["issue"] == "discount_not_redeemed"
    assert not issues[str(lost["txnid"])]["fixable"]
