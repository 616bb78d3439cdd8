"""E-mandates: consent checkouts that create them, price changes that reach them (plan, apply), and the
pre-debit notices `tariff tick` sends in the window before each debit — once, retried after failures."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.main import app
from compiler.project import compile_config
from database.payments import PaymentError, checkout
from publishers.payu.checkout import si_details
from publishers.payu.client import PayUClient
from publishers.payu.hashes import request_hash
from publishers.payu.mandates import retry_delay, send_due_pre_debits
from publishers.postgres.apply import Revision, apply_catalog
from publishers.postgres.plan import make_plan
from tests.ledger_support import S, publish_shipped
from tests.payment_support import add_buyer, scalar
from tests.payu_support import SIM_KEY, SIM_SALT
from tests.test_bad_configs import copy_config, replace_text
from tests.test_payu_flow import Shop, shop

__all__ = ["shop"]  # the fixture, imported for these tests

runner = CliRunner()
NOW = datetime.fromisoformat("2026-11-20T10:00:00+05:30")


def _mandate(engine: Engine, customer: str, max_minor: int, authpayuid: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.mandates (customer_id, subscription_id, authpayuid, currency, "
                "max_amount_minor, billing_cycle, status) "
                "SELECT :c, id, :auth, 'INR', :max, 'MONTHLY', 'active' "
                f"FROM {S}.subscriptions WHERE customer_id = :c"
            ),
            {"c": customer, "auth": authpayuid, "max": max_minor},
        )


def _reprice(engine: Engine, tmp_path: Path, monthly: str) -> Any:
    """Apply the shipped config with pro monthly at `monthly` INR; returns the apply result."""
    root = copy_config(tmp_path / f"reprice-{monthly}")
    replace_text(root, "plans/pro.yaml", "  monthly:\n    INR: 1499", f"  monthly:\n    INR: {monthly}")
    catalog = compile_config(root).catalog
    assert catalog is not None
    return apply_catalog(engine, S, catalog, Revision("test"), environment=None, database="test")


def _actions(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return [
            dict(r)
            for r in conn.execute(sa.text(f"SELECT * FROM {S}.payu_actions ORDER BY kind, id")).mappings()
        ]


def test_price_increase_reaches_mandates(engine: Engine, tmp_path: Path) -> None:
    publish_shipped(engine)
    add_buyer(engine, "tight", plan="pro")
    add_buyer(engine, "roomy", plan="pro")
    add_buyer(engine, "card", plan="pro")  # pays by card: no mandate, nothing for PayU
    _mandate(engine, "tight", 200000, "AUTH1")  # 2,000.00: 1,798 + 18% GST = 2,121.64 does not fit
    _mandate(engine, "roomy", 2000000, "AUTH2")
    root = copy_config(tmp_path)
    replace_text(root, "plans/pro.yaml", "  monthly:\n    INR: 1499", "  monthly:\n    INR: 1798")
    catalog = compile_config(root).catalog
    assert catalog is not None

    with engine.connect() as conn, conn.begin():
        plan = make_plan(conn, S, catalog, environment=None, database="test", now=NOW)
    assert plan.mandates is not None
    assert (plan.mandates.new_mandates, plan.mandates.pre_debits) == (1, 1)
    by_customer = {s["customer"]: s for s in plan.mandates.subscriptions}
    assert by_customer["tight"]["action"] == "new_mandate" and by_customer["tight"]["debit_minor"] == 212164
    assert by_customer["roomy"]["action"] == "pre_debit"
    assert plan.to_json()["payu_mandates"]["new_mandates"] == 1

    result = apply_catalog(engine, S, catalog, Revision("test"), environment=None, database="test", now=NOW)
    assert result.payu_actions == 2
    actions = _actions(engine)
    # Recorded with the debit they announce, and left for tick: nothing is sent at apply.
    assert [(a["kind"], a["amount_minor"], a["status"], a["attempts"]) for a in actions] == [
        ("new_mandate", 212164, "pending", 0),
        ("pre_debit", 212164, "pending", 0),
    ]
    effective = by_customer["roomy"]["effective_at"]
    assert actions[1]["debit_at"] == datetime.fromisoformat(effective)
    asked = scalar(
        engine, f"SELECT array_agg(customer_id) FROM {S}.notifications WHERE kind = 'mandate_required'"
    )
    assert asked == ["tight"]


# ------------------------------------------------------------------------------------- consent checkout


def _consent(shop: Shop, customer: str) -> dict[str, Any]:
    """`tariff payu checkout --mandate`, the form posted to the simulator, paid there; webhooks follow."""
    add_buyer(shop.engine, customer)
    ran = shop.cli(
        "payu", "checkout", "--customer", customer, "--plan", "pro", "--cycle", "monthly", "--mandate",
        "--format", "json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    form = json.loads(ran.stdout)
    page = requests.post(form["action"], data=form["fields"], timeout=10)
    assert page.status_code == 200 and "Standing instruction" in page.text, page.text
    paid = shop.sim_post("pay", txnid=form["fields"]["txnid"])
    assert [w["status_code"] for w in paid["webhooks"]] == [200]
    return {**form, "sim": paid}


@pytest.fixture
def narrow(shop: Shop) -> Shop:
    """The shop with 10% mandate headroom, so that a price increase within policy can exceed a mandate."""
    with shop.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.payment_rules SET mandate_headroom_percent = 10"))
    return shop


def test_mandate_checkout_creates_the_mandate_plan_sees(narrow: Shop, tmp_path: Path) -> None:
    shop = narrow
    consent = _consent(shop, "asha")
    fields = consent["fields"]
    # The consent: si=1 with api_version 7, and si_details hashed between the reserved slots and the salt.
    terms = json.loads(fields["si_details"])
    assert (fields["si"], fields["api_version"], fields["amount"]) == ("1", "7", "1768.82")
    assert terms == {
        # 1,499 + 18% GST = 1,768.82, plus 10% headroom = 1,945.70, rounded up to a whole rupee
        "billingAmount": "1946.00",
        "billingCurrency": "INR",
        "billingCycle": "MONTHLY",
        "billingInterval": 1,
        "paymentStartDate": terms["paymentStartDate"],
        "paymentEndDate": terms["paymentEndDate"],
        "billingRule": "MAX",
    }
    start = datetime.fromisoformat(terms["paymentStartDate"])
    assert datetime.fromisoformat(terms["paymentEndDate"]) == start.replace(year=start.year + 10)
    assert fields["hash"] == request_hash(SIM_KEY, SIM_SALT, fields)
    assert fields["hash"] != request_hash(SIM_KEY, SIM_SALT, {**fields, "si_details": ""})
    assert si_details({**terms, "max_amount_minor": 1}) == fields["si_details"]

    # The webhook's mihpayid is the mandate's authpayuid, at Tariff and at PayU.
    listed = shop.cli("payu", "mandates", "--format", "json")
    assert listed.exit_code == 0, listed.output
    [mandate] = json.loads(listed.stdout)
    auth = consent["sim"]["mihpayid"]
    assert (mandate["authpayuid"], mandate["customer_id"], mandate["status"]) == (auth, "asha", "active")
    assert (mandate["max_amount_minor"], mandate["billing_cycle"], mandate["consent_txnid"]) == (
        194600,
        "MONTHLY",
        fields["txnid"],
    )
    [at_payu] = shop.sim.state.snapshot()["mandates"]
    assert (at_payu["auth_payu_id"], at_payu["billing_amount"]) == (auth, "1946.00")
    subscription = scalar(
        shop.engine, f"SELECT subscription_id FROM {S}.payments WHERE txnid = :t", t=fields["txnid"]
    )
    assert mandate["subscription_id"] == subscription

    # Replayed webhooks record nothing twice.
    shop.sim.simulator.payment_webhooks(shop.sim.state.payments[auth], repeat=2)
    assert scalar(shop.engine, f"SELECT count(*) FROM {S}.mandates") == 1

    # 1,798 + GST = 2,121.64 is above the 1,946.00 the customer authorised: plan says a new mandate is needed.
    root = copy_config(tmp_path / "dearer")
    replace_text(root, "plans/pro.yaml", "  monthly:\n    INR: 1499", "  monthly:\n    INR: 1798")
    catalog = compile_config(root).catalog
    assert catalog is not None
    with shop.engine.connect() as conn, conn.begin():
        plan = make_plan(conn, S, catalog, environment=None, database="test")
    assert plan.mandates is not None
    [reached] = plan.mandates.subscriptions
    assert (reached["customer"], reached["action"], reached["mandate_max_minor"], reached["debit_minor"]) == (
        "asha",
        "new_mandate",
        194600,
        212164,
    )

    # The customer authorises a new mandate at the new price: it replaces the old one, resolves the
    # new_mandate action, and the debit's pre-debit notice is scheduled against the new mandate.
    apply_catalog(shop.engine, S, catalog, Revision("test"), environment=None, database="test")
    with shop.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.payment_rules SET mandate_headroom_percent = 25"))
    ran = shop.cli(
        "payu", "checkout", "--customer", "asha", "--plan", "pro", "--cycle", "monthly", "--mandate",
        "--format", "json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    renewal = json.loads(ran.stdout)
    assert renewal["payment"]["purpose"] == "renewal"
    requests.post(renewal["action"], data=renewal["fields"], timeout=10)
    second = shop.sim_post("pay", txnid=renewal["fields"]["txnid"])
    with shop.engine.begin() as conn:
        statuses = {
            str(r.authpayuid): str(r.status)
            for r in conn.execute(sa.text(f"SELECT authpayuid, status FROM {S}.mandates"))
        }
    assert statuses == {auth: "replaced", second["mihpayid"]: "active"}
    actions = _actions(shop.engine)
    assert [(a["kind"], a["status"]) for a in actions] == [("new_mandate", "done"), ("pre_debit", "pending")]
    assert "authorised mandate " + second["mihpayid"] in actions[0]["detail"]
    assert actions[1]["amount_minor"] == 212164 and actions[1]["debit_at"] == actions[0]["debit_at"]


def test_mandate_checkout_refuses_packages(shop: Shop) -> None:
    add_buyer(shop.engine, "ravi")
    ran = shop.cli("payu", "checkout", "--customer", "ravi", "--package", "extra-500", "--mandate")
    assert ran.exit_code == 1 and "--mandate goes with --plan only" in ran.output
    assert scalar(shop.engine, f"SELECT count(*) FROM {S}.payments") == 0


def test_the_plans_mandate_ceiling_caps_the_maximum(engine: Engine) -> None:
    publish_shipped(engine)
    add_buyer(engine, "ravi")

    def terms(ceiling: str, rule: str = "MAX") -> dict[str, Any]:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"UPDATE {S}.plans SET payu = jsonb_set(jsonb_set(payu, '{{mandate,max_amount,INR}}', "
                    "to_jsonb(CAST(:c AS text))), '{mandate,billing_rule}', to_jsonb(CAST(:r AS text))) "
                    "WHERE id = 'pro'"
                ),
                {"c": ceiling, "r": rule},
            )
            found: dict[str, Any] = checkout(
                conn, S, "ravi", {"plan": "pro", "cycle": "monthly"}, mandate=True
            )["mandate_terms"]
            return found

    # 1,768.82 a month (1,499 + GST): 25% headroom is 2,212.00, the plan's 20,000 leaves it be …
    assert terms("20000")["billingAmount"] == "2212.00"
    # … a ceiling of 2,000 caps it, EXACT asks for the debit itself …
    assert terms("2000")["billingAmount"] == "2000.00"
    assert (terms("20000", "EXACT")["billingAmount"], terms("20000", "EXACT")["billingRule"]) == (
        "1768.82",
        "EXACT",
    )
    # … and a ceiling below the price is a config error, refused before anything is written.
    before = scalar(engine, f"SELECT count(*) FROM {S}.payments")
    with pytest.raises(PaymentError) as refused:
        terms("1500")
    assert "above its mandate ceiling of 1500.00 INR" in refused.value.message
    assert "payu.mandate.max_amount.INR" in str(refused.value.fix)
    assert scalar(engine, f"SELECT count(*) FROM {S}.payments") == before


# ------------------------------------------------------------------------------------------ pre-debits


def _reached(shop: Shop, tmp_path: Path, *customers: str) -> list[dict[str, Any]]:
    """Customers on consented mandates, then pro monthly at 1,599 (1,886.82 with GST: fits 25% headroom)."""
    for customer in customers:
        _consent(shop, customer)
    result = _reprice(shop.engine, tmp_path, "1599")
    assert result.payu_actions == len(customers)
    actions = _actions(shop.engine)
    assert {a["kind"] for a in actions} == {"pre_debit"}
    return actions


def _notices(shop: Shop) -> dict[str, list[dict[str, Any]]]:
    return {m["auth_payu_id"]: m["pre_debits"] for m in shop.sim.state.snapshot()["mandates"]}


def test_pre_debit_goes_out_in_its_window_once_and_is_retried_after_a_failure(
    shop: Shop, tmp_path: Path
) -> None:
    [action] = _reached(shop, tmp_path, "asha")
    debit_at: datetime = action["debit_at"]
    auth = scalar(shop.engine, f"SELECT authpayuid FROM {S}.mandates")

    early = send_due_pre_debits(shop.engine, S, shop.client, debit_at - timedelta(days=3))
    assert (early["sent"], early["pending"]) == (0, 1) and _notices(shop)[auth] == []

    # Inside the 2-day window, PayU refuses once: recorded, visible, retried after the backoff.
    opened = debit_at - timedelta(hours=47)
    shop.sim.fail_next("refuse", command="pre_debit_SI")
    first = send_due_pre_debits(shop.engine, S, shop.client, opened)
    assert (first["sent"], first["failed"]) == (0, 1)
    assert "Pre-debit notification failed at bank" in first["errors"][0]["error"]
    listed = shop.cli("payu", "actions", "--status", "pending", "--format", "json")
    assert listed.exit_code == 0, listed.output
    [shown] = json.loads(listed.stdout)
    assert shown["attempts"] == 1 and "failed at bank" in shown["detail"]
    assert send_due_pre_debits(shop.engine, S, shop.client, opened)["sent"] == 0  # not before the backoff

    retried = send_due_pre_debits(shop.engine, S, shop.client, opened + retry_delay(1))
    assert retried["sent"] == 1
    [notice] = _notices(shop)[auth]
    # The amount the new price carries, for the day of the debit.
    assert (notice["amount"], notice["debitDate"]) == ("1886.82", action["debit_on"].isoformat())
    [done] = _actions(shop.engine)
    # A retry after a definite refusal is a new request, so PayU cannot answer it with "duplicate".
    assert (done["status"], done["attempts"], done["request_id"]) == ("done", 2, f"PD{done['id']}-2")
    assert done["response"]["status"] == 1 and done["response"]["invoiceId"]

    again = send_due_pre_debits(shop.engine, S, shop.client, opened + timedelta(hours=2))
    assert again["sent"] == 0 and len(_notices(shop)[auth]) == 1


def test_concurrent_senders_send_each_notice_once(shop: Shop, tmp_path: Path) -> None:
    _reached(shop, tmp_path, "asha", "ravi", "meera")
    at = _actions(shop.engine)[0]["debit_at"] - timedelta(hours=30)
    results: list[dict[str, Any]] = []

    def send() -> None:
        client = PayUClient(shop.sim.url, shop.credentials, timeout=5, retries=0)
        results.append(send_due_pre_debits(shop.engine, S, client, at))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r["sent"] for r in results) == 3 and sum(r["failed"] for r in results) == 0
    assert sorted(len(n) for n in _notices(shop).values()) == [1, 1, 1]


def test_a_lost_answer_is_not_sent_twice(shop: Shop, tmp_path: Path) -> None:
    asha, _ravi = _reached(shop, tmp_path, "asha", "ravi")
    at = asha["debit_at"] - timedelta(hours=40)
    # PayU takes the first notice, then the connection drops: it stays pending and goes out again …
    shop.sim.fail_next("lost", command="pre_debit_SI")
    client = PayUClient(shop.sim.url, shop.credentials, timeout=5, retries=0)
    lost = send_due_pre_debits(shop.engine, S, client, at)
    assert (lost["sent"], lost["failed"]) == (1, 1)
    # … with the same requestId, which PayU knows: the earlier attempt counts, nothing is sent twice.
    later = send_due_pre_debits(shop.engine, S, client, at + timedelta(hours=1))
    assert later["sent"] == 1
    assert sorted(len(n) for n in _notices(shop).values()) == [1, 1]
    assert {a["status"] for a in _actions(shop.engine)} == {"done"}


def test_a_notice_unsent_24_hours_before_its_debit_fails_and_is_never_sent(
    shop: Shop, tmp_path: Path
) -> None:
    [action] = _reached(shop, tmp_path, "asha")
    late = send_due_pre_debits(shop.engine, S, shop.client, action["debit_at"] - timedelta(hours=12))
    assert (late["sent"], late["expired"], late["pending"]) == (0, 1, 0)
    [failed] = _actions(shop.engine)
    assert failed["status"] == "failed" and "not sent 24 hours before the debit" in failed["detail"]
    assert [n for notices in _notices(shop).values() for n in notices] == []
    listed = shop.cli("payu", "actions", "--status", "failed", "--format", "json")
    assert listed.exit_code == 0 and "not sent 24 hours" in json.loads(listed.stdout)[0]["detail"]


def test_tick_sends_due_pre_debits_with_payu_settings_only(shop: Shop, tmp_path: Path) -> None:
    [action] = _reached(shop, tmp_path, "asha")
    settings = shop.config / "tariff.yaml"
    # Notifications go to a closed local port, so delivery fails fast instead of reaching the internet.
    settings.write_text(settings.read_text().replace("host: smtp.pinegenie.app", "host: 127.0.0.1", 1))
    when = (action["debit_at"] - timedelta(hours=36)).isoformat()

    # An environment without PayU settings keeps them recorded, and says so.
    settings.write_text(settings.read_text().replace("\npolicies:", "  offline: {}\n\npolicies:", 1))
    quiet = runner.invoke(
        app,
        ["tick", "--now", when, "--format", "json", "--config", str(shop.config), "--env", "offline",
         "--database-url", shop.url],
    )  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.stdout)["steps"]["pre_debits"] == {
        "not_sent": "this environment has no PayU settings",
        "pending": 1,
    }

    too_soon = (action["debit_at"] - timedelta(days=4)).isoformat()
    early = shop.cli("tick", "--now", too_soon, "--format", "json")
    assert early.exit_code == 0, early.output
    assert json.loads(early.stdout)["steps"]["pre_debits"]["sent"] == 0

    ran = shop.cli("tick", "--now", when, "--format", "json")
    assert ran.exit_code == 0, ran.output
    steps = json.loads(ran.stdout)["steps"]
    assert (steps["pre_debits"]["sent"], steps["pre_debits"]["pending"]) == (1, 0)
    assert len(_notices(shop)[_active_mandate(shop)]) == 1
    text = shop.cli("tick", "--now", when)
    assert "0 PayU pre-debit notice(s) sent" in text.stdout
    assert len(_notices(shop)[_active_mandate(shop)]) == 1


def _active_mandate(shop: Shop) -> str:
    return str(scalar(shop.engine, f"SELECT authpayuid FROM {S}.mandates WHERE status = 'active'"))


def test_a_notice_is_for_the_first_debit_at_the_new_price_dated_where_payu_debits(
    shop: Shop, tmp_path: Path
) -> None:
    _consent(shop, "asha")
    with shop.engine.begin() as conn:
        # The period ends at 20:00 UTC: 01:30 the next day in India, where the catalog (and PayU) date it.
        conn.execute(
            sa.text(
                f"UPDATE {S}.subscriptions SET current_period_end = "
                "date_trunc('day', current_period_end) + interval '20 hours'"
            )
        )
        period_end, tz = conn.execute(
            sa.text(
                f"SELECT current_period_end, (SELECT timezone FROM {S}.catalog_state) FROM {S}.subscriptions"
            )
        ).one()
    assert _reprice(shop.engine, tmp_path, "1599").payu_actions == 1
    [action] = _actions(shop.engine)
    assert action["debit_at"] >= period_end  # never before the period the customer has paid for ends
    local = action["debit_at"].astimezone(ZoneInfo(tz))
    assert local.date() != action["debit_at"].astimezone(UTC).date()  # the case where the zones disagree
    assert action["debit_on"] == local.date()


def test_a_later_price_change_supersedes_a_notice_not_yet_sent(shop: Shop, tmp_path: Path) -> None:
    [first] = _reached(shop, tmp_path, "asha")
    result = _reprice(shop.engine, tmp_path, "1649")  # before the first notice's window opens
    assert result.payu_actions == 1
    actions = {a["id"]: a for a in _actions(shop.engine)}
    assert actions[first["id"]]["status"] == "skipped"
    assert "superseded by revision" in actions[first["id"]]["detail"]
    [latest] = [a for a in actions.values() if a["status"] == "pending"]
    assert latest["amount_minor"] == 194582  # 1,649 + 18 % GST: what the rescheduled migration debits
    sent = send_due_pre_debits(shop.engine, S, shop.client, latest["debit_at"] - timedelta(hours=30))
    assert sent["sent"] == 1
    auth = scalar(shop.engine, f"SELECT authpayuid FROM {S}.mandates")
    assert [n["amount"] for n in _notices(shop)[auth]] == ["1945.82"]  # one amount per debit: the latest
