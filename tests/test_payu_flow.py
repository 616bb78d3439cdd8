"""Payments end to end against the PayU simulator over HTTP: checkout → payment → webhook → what was bought,
refunds (partial, interrupted), replays, reordering, tampering, reconciliation and the CLI's refusals."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from database.payments import checkout
from publishers.payu.checkout import form_for
from publishers.payu.client import PayUClient
from publishers.payu.config import PayUConfig
from publishers.payu.credentials import PayUCredentials
from publishers.payu.hashes import reverse_hash
from publishers.payu.simulator import RunningSimulator, start_simulator
from publishers.payu.webhook import WebhookServer, start_webhook_server
from tests.ledger_support import REPO, S, publish_shipped
from tests.payment_support import AT, add_buyer, balance, scalar
from tests.payu_support import SIM_KEY, SIM_SALT

runner = CliRunner()


@dataclass
class Ran:
    exit_code: int
    output: str
    stdout: str


@dataclass
class Shop:
    engine: Engine
    url: str
    sim: RunningSimulator
    client: PayUClient
    credentials: PayUCredentials
    webhook: WebhookServer
    config: Path

    @property
    def payu(self) -> PayUConfig:
        return PayUConfig(
            "local",
            "simulator",
            self.sim.url,
            self.sim.url,
            success_url="http://127.0.0.1:9/ok",
            failure_url="http://127.0.0.1:9/fail",
            webhook_url=self.webhook.url,
        )

    def cli(self, *args: str, stdin: str | None = None) -> Ran:
        """Run `tariff ARGS`; a CommandError comes back as `tariff` prints it (error, fix, exit 1)."""
        result = runner.invoke(
            app,
            [*args, "--config", str(self.config), "--env", "local", "--database-url", self.url],
            input=stdin,
        )
        if isinstance(result.exception, CommandError):
            exc = result.exception
            return Ran(1, f"error: {exc.message}\n" + (f"  fix: {exc.fix}\n" if exc.fix else ""), "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Ran(result.exit_code, result.output, result.stdout)

    def sim_post(self, path: str, **data: Any) -> dict[str, Any]:
        response = requests.post(f"{self.sim.url}/_sim/{path}", json=data, timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def buy(
        self,
        customer: str,
        item: dict[str, str],
        codes: list[str] | None = None,
        outcome: str = "success",
        **sim: Any,
    ) -> dict[str, Any]:
        """Checkout in Tariff, post the signed form to PayU, pay (or fail) there; webhooks follow."""
        with self.engine.begin() as conn:
            # Promotions are priced at a fixed moment inside their schedules; everything else now.
            payment = checkout(conn, S, customer, item, codes=codes, at=AT if codes else None)
        form = form_for(payment, self.payu, self.credentials)
        page = requests.post(form.action, data=form.fields, timeout=10)
        assert page.status_code == 200, page.text
        result = self.sim_post("pay", txnid=payment["txnid"], outcome=outcome, **sim)
        return {**payment, "sim": result}


@pytest.fixture
def shop(engine: Engine, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Shop]:
    publish_shipped(engine)
    sim = start_simulator(0, SIM_KEY, SIM_SALT, refund_settle_seconds=None)
    credentials = PayUCredentials(SIM_KEY, SIM_SALT)
    client = PayUClient(sim.url, credentials, timeout=5, retries=1, backoff=0)
    server, _thread = start_webhook_server(engine, S, client, credentials)
    sim.simulator.webhook_url = server.url
    config = tmp_path / "pricing"
    shutil.copytree(REPO / "pricing", config)
    settings = config / "tariff.yaml"
    settings.write_text(
        settings.read_text()
        .replace(
            "      mode: simulator\n",
            f"      mode: simulator\n      checkout_url: {sim.url}\n      api_url: {sim.url}\n",
            1,
        )
        .replace("http://127.0.0.1:3000/api/payments/payu/webhook", server.url)
    )
    monkeypatch.setenv("PAYU_KEY", SIM_KEY)
    monkeypatch.setenv("PAYU_SALT", SIM_SALT)
    try:
        yield Shop(engine, pg_url, sim, client, credentials, server, config)
    finally:
        server.shutdown()
        server.server_close()
        sim.stop()


def _payment(engine: Engine, txnid: str) -> dict[str, Any]:
    return dict(scalar(engine, f"SELECT to_jsonb(p) FROM {S}.payments p WHERE txnid = :t", t=txnid))


def _count(engine: Engine, table: str) -> int:
    return int(scalar(engine, f"SELECT count(*) FROM {S}.{table}"))


def test_end_to_end_purchase_webhooks_and_partial_refund(shop: Shop) -> None:
    add_buyer(shop.engine, "asha")
    plan = shop.buy("asha", {"plan": "pro", "cycle": "monthly"}, ["WELCOME20"], webhook_repeat=3)
    assert [w["status_code"] for w in plan["sim"]["webhooks"]] == [200, 200, 200]
    paid = _payment(shop.engine, plan["txnid"])
    assert paid["status"] == "success" and paid["mihpayid"] == plan["sim"]["mihpayid"]
    assert paid["redemption_status"] == "redeemed"
    assert (
        scalar(shop.engine, f"SELECT status FROM {S}.subscriptions WHERE id = :s", s=paid["subscription_id"])
        == "active"
    )
    assert _count(shop.engine, "payment_events") == 1  # three deliveries, stored once

    pack = shop.buy("asha", {"package": "extra-500"})
    assert pack["amount_text"] == "1768.82"
    assert balance(shop.engine, "asha") == 500
    invoice = scalar(
        shop.engine, f"SELECT to_jsonb(i) FROM {S}.invoices i WHERE payment_id = :p", p=pack["id"]
    )
    assert (invoice["net_minor"], invoice["tax_name"], invoice["tax_minor"], invoice["total_minor"]) == (
        149900,
        "GST",
        26982,
        176882,
    )

    refund = shop.cli(
        "payu",
        "refund",
        str(pack["txnid"]),
        "--amount",
        "884.41",
        "--reason",
        "half unused",
        "--format",
        "json",
    )
    assert refund.exit_code == 0, refund.output
    queued = json.loads(refund.stdout)
    assert queued["status"] == "queued" and queued["request_id"]
    settled = shop.sim_post("settle-refunds")
    assert [c["status_code"] for c in settled["callbacks"]] == [200]
    after = _payment(shop.engine, pack["txnid"])
    assert after["status"] == "partially_refunded" and after["refunded_minor"] == 88441
    assert balance(shop.engine, "asha") == 250
    polled = shop.cli("payu", "refunds", "--poll", "--format", "json")
    assert polled.exit_code == 0, polled.output
    assert [r["status"] for r in json.loads(polled.stdout)] == ["success"]


def test_failure_then_success_and_late_failure_change_nothing_twice(shop: Shop) -> None:
    add_buyer(shop.engine, "ravi")
    with shop.engine.begin() as conn:
        payment = checkout(conn, S, "ravi", {"plan": "pro", "cycle": "annual"})
    form = form_for(payment, shop.payu, shop.credentials)
    requests.post(form.action, data=form.fields, timeout=10)
    shop.sim_post("pay", txnid=payment["txnid"], outcome="failure")
    assert _payment(shop.engine, payment["txnid"])["status"] == "failure"
    assert _count(shop.engine, "notifications") == 1
    requests.post(form.action, data=form.fields, timeout=10)  # the customer tries again, same order
    shop.sim_post("pay", txnid=payment["txnid"], outcome="success")
    assert _payment(shop.engine, payment["txnid"])["status"] == "success"

    # A failure report arriving after the success (PayU delivers out of order) is kept and ignored.
    late = {**form.fields, "status": "failure", "mihpayid": "1", "amount": payment["amount_text"]}
    late["hash"] = reverse_hash(SIM_SALT, late)
    answer = requests.post(shop.webhook.url, data=late, timeout=10)
    assert answer.status_code == 200 and answer.json()["result"]["outcome"] in ("ignored", "duplicate")
    assert _payment(shop.engine, payment["txnid"])["status"] == "success"
    assert _count(shop.engine, "subscriptions") == 1 and _count(shop.engine, "invoices") == 1
    # The simulator refuses a third checkout of a paid txnid as a duplicate.
    again = requests.post(form.action, data=form.fields, timeout=10)
    assert "Duplicate Transaction ID" in again.text


def _signed_result(shop: Shop, txnid: str, amount: str, salt: str = SIM_SALT, **extra: str) -> dict[str, str]:
    with shop.engine.begin() as conn:
        row = (
            conn.execute(sa.text(f"SELECT * FROM {S}.payments WHERE txnid = :t"), {"t": txnid})
            .mappings()
            .one()
        )
    fields = {
        "key": SIM_KEY,
        "txnid": txnid,
        "amount": amount,
        "productinfo": row["productinfo"],
        "firstname": "Asha",
        "email": f"{row['customer_id']}@example.in",
        "status": "success",
        "mihpayid": "999",
        "udf1": "",
        "udf2": "",
        "udf3": "",
        "udf4": "",
        "udf5": "",
        **extra,
    }
    fields["hash"] = reverse_hash(salt, fields)
    return fields


def test_ingest_refuses_tampered_wrong_salt_and_bad_bodies_writing_nothing(
    shop: Shop, tmp_path: Path
) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    pay = shop.buy("asha", {"package": "extra-500"}, outcome="failure")
    txnid = str(pay["txnid"])
    events = _count(shop.engine, "payment_events")
    from urllib.parse import urlencode

    tampered = _signed_result(shop, txnid, "1768.82")
    tampered["amount"] = "1.00"
    cases = {
        "tampered": urlencode(tampered),
        "wrong salt": urlencode(
            _signed_result(shop, txnid, "1768.82", salt="another-salt-0000000000000000000")
        ),
        "not a body": "this is not a payu body",
        "missing fields": "txnid=abc&status=success",
        "bad json": '{"txnid": ',
    }
    for name, body in cases.items():
        path = tmp_path / "body.txt"
        path.write_text(body + "\n")
        result = shop.cli("payu", "ingest", str(path))
        assert result.exit_code == 1, (name, result.output)
        assert "error:" in result.output and "fix:" in result.output, name
    assert "hash does not match" in shop.cli("payu", "ingest", "-", stdin=urlencode(tampered)).output
    # One good body and one bad one in a file: the batch is refused as a whole.
    good = urlencode({**_signed_result(shop, txnid, "1768.82"), "status": "failure"})
    mixed = tmp_path / "mixed.txt"
    mixed.write_text(good + "\n" + cases["tampered"] + "\n")
    assert shop.cli("payu", "ingest", str(mixed)).exit_code == 1
    assert _count(shop.engine, "payment_events") == events

    answer = requests.post(shop.webhook.url, data=tampered, timeout=10)
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_hash"
    assert _count(shop.engine, "payment_events") == events


def test_echoed_amount_compared_as_money(shop: Shop, tmp_path: Path) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    with shop.engine.begin() as conn:
        payment = checkout(conn, S, "asha", {"package": "extra-2000"})
    form = form_for(payment, shop.payu, shop.credentials)
    assert form.fields["amount"] == payment["amount_text"] == "5898.82"
    requests.post(form.action, data=form.fields, timeout=10)
    from urllib.parse import urlencode

    # The simulator's record says the payment was captured; a body echoing "5898" is not that amount.
    shop.sim.simulator.webhook_url = None
    paid = shop.sim_post("pay", txnid=payment["txnid"], outcome="success")
    short = tmp_path / "short.txt"
    short.write_text(urlencode(_signed_result(shop, str(payment["txnid"]), "5898")))
    refused = shop.cli("payu", "ingest", str(short))
    assert refused.exit_code == 1 and "amount mismatch" in refused.output
    padded = tmp_path / "padded.txt"
    padded.write_text(
        urlencode(_signed_result(shop, str(payment["txnid"]), "5898.820", mihpayid=str(paid["mihpayid"])))
    )
    taken = shop.cli("payu", "ingest", str(padded), "--format", "json")
    assert taken.exit_code == 0, taken.output
    assert json.loads(taken.stdout)[0]["payment_status"] == "success"
    assert balance(shop.engine, "asha") == 2000


def test_network_failure_mid_refund_never_refunds_twice(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    pay = shop.buy("asha", {"package": "extra-500"})
    txnid = str(pay["txnid"])
    # PayU makes the refund but the answer is lost, then stops answering: the command gives up.
    shop.sim_post("fail-next", mode="lost", count=1, command="cancel_refund_transaction")
    shop.sim_post("fail-next", mode="503", count=3, command="cancel_refund_transaction")
    first = shop.cli("payu", "refund", txnid, "--reason", "duplicate charge")
    assert first.exit_code == 1 and "run the same command again" in first.output
    assert scalar(shop.engine, f"SELECT status FROM {S}.refunds") == "requested"
    second = shop.cli("payu", "refund", txnid, "--reason", "duplicate charge", "--format", "json")
    assert second.exit_code == 0, second.output
    out = json.loads(second.stdout)
    assert out["recovered"] is True and out["status"] == "queued"
    state = requests.get(f"{shop.sim.url}/_sim/state", timeout=5).json()
    refunds = [r for p in state["payments"] if p["txnid"] == txnid for r in p["refunds"]]
    assert len(refunds) == 1 and refunds[0]["token"] == out["token"]
    assert _count(shop.engine, "refunds") == 1


def test_refund_errors_are_clear_and_recorded(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    pay = shop.buy("asha", {"package": "extra-500"})
    too_much = shop.cli("payu", "refund", str(pay["txnid"]), "--amount", "5000", "--reason", "x")
    assert too_much.exit_code == 1 and "left to refund" in too_much.output
    bad = shop.cli("payu", "refund", str(pay["txnid"]), "--amount", "1.234", "--reason", "x")
    assert bad.exit_code == 1 and "at most 2 decimals" in bad.output
    unknown = shop.cli("payu", "refund", "NOSUCHTXN", "--reason", "x")
    assert unknown.exit_code == 1 and "unknown txnid" in unknown.output
    assert _count(shop.engine, "refunds") == 0


def test_reconcile_reports_and_fixes_payments_paid_at_payu(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    shop.sim.simulator.webhook_url = None  # the webhook never arrives
    pay = shop.buy("asha", {"package": "extra-500"})
    assert _payment(shop.engine, pay["txnid"])["status"] == "pending"
    report = shop.cli("payu", "reconcile", "--format", "json")
    assert report.exit_code == 0, report.output
    [issue] = json.loads(report.stdout)["mismatches"]
    assert issue["issue"] == "paid_at_payu" and issue["fixable"] and not issue["fixed"]
    assert _payment(shop.engine, pay["txnid"])["status"] == "pending"
    fixed = shop.cli("payu", "reconcile", "--fix", "--format", "json")
    assert json.loads(fixed.stdout)["fixed"] == 1
    assert _payment(shop.engine, pay["txnid"])["status"] == "success"
    assert balance(shop.engine, "asha") == 500
    clean = shop.cli("payu", "reconcile", "--format", "json")
    assert json.loads(clean.stdout)["mismatches"] == []


def test_checkout_cli_signs_the_form_and_refuses_bad_arguments(shop: Shop, tmp_path: Path) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    add_buyer(shop.engine, "sam", country="US")
    page = tmp_path / "checkout.html"
    ok = shop.cli(
        "payu",
        "checkout",
        "--customer",
        "asha",
        "--package",
        "extra-500",
        "--html",
        str(page),
        "--format",
        "json",
    )
    assert ok.exit_code == 0, ok.output
    form = json.loads(ok.stdout)
    assert form["action"] == f"{shop.sim.url}/_payment" and form["fields"]["amount"] == "1768.82"
    assert form["fields"]["udf1"] == "extra-500" and form["fields"]["udf3"] == "asha"
    assert SIM_SALT not in ok.stdout and SIM_SALT not in page.read_text()
    assert "document.getElementById('payu').submit()" in page.read_text()
    assert requests.post(form["action"], data=form["fields"], timeout=10).status_code == 200

    with shop.engine.begin() as conn:
        conn.execute(sa.text(f"SELECT {S}.register_customer('nophone', 'np@example.in', p_country => 'IN')"))
        conn.execute(
            sa.text(
                f"SELECT {S}.register_subscription('nophone', 'pro', 'monthly', "
                "p_current_period_start => now() - interval '1 day')"
            )
        )
    before = _count(shop.engine, "payments")
    refusals = {
        ("--customer", "nophone", "--package", "extra-500"): "no phone number",
        ("--customer", "asha", "--package", "extra-500", "--at", "soon"): "--at:",
        ("--customer", "asha"): "name exactly one item",
        ("--customer", "asha", "--plan", "pro"): "needs --cycle",
        (
            "--customer",
            "asha",
            "--plan",
            "pro",
            "--cycle",
            "monthly",
            "--package",
            "extra-500",
        ): "exactly one",
        ("--customer", "sam", "--plan", "pro", "--cycle", "monthly"): "not configured to charge USD",
        ("--customer", "nobody", "--package", "extra-500"): "unknown customer",
        ("--customer", "asha", "--package", "extra-500", "--txnid", "bad-txn!"): "invalid txnid",
        ("--customer", "asha", "--package", "extra-500", "--txnid", form["fields"]["txnid"]): "already used",
    }
    for args, message in refusals.items():
        result = shop.cli("payu", "checkout", *args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    assert _count(shop.engine, "payments") == before


@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("105", "PayU refused the refund amount"),
        ("116", "PayU does not know this transaction"),
        ("214", "the same amount was refunded on this transaction less than 5 minutes ago"),
    ],
)
def test_refund_payu_refuses_is_recorded_and_takes_nothing_back(shop: Shop, code: str, says: str) -> None:
    add_buyer(shop.engine, "asha")
    plan = shop.buy("asha", {"plan": "pro", "cycle": "monthly"}, ["WELCOME20"])
    pack = shop.buy("asha", {"package": "extra-500"})
    assert balance(shop.engine, "asha") == 500
    live = f"SELECT count(*) FROM {S}.redemptions WHERE status = 'redeemed'"
    redemptions = scalar(shop.engine, live)
    assert redemptions >= 1

    for bought in (plan, pack):
        shop.sim.fail_next("refuse", command="cancel_refund_transaction", code=int(code))
        ran = shop.cli("payu", "refund", str(bought["txnid"]), "--reason", "customer asked")
        assert ran.exit_code == 1
        assert says in ran.output and "fix:" in ran.output, ran.output
        paid = _payment(shop.engine, bought["txnid"])
        [refund] = scalar(
            shop.engine,
            f"SELECT jsonb_agg(to_jsonb(r)) FROM {S}.refunds r WHERE payment_id = :p",
            p=bought["id"],
        )
        # Recorded as refused with PayU's code; nothing refunded, nothing taken back.
        assert (refund["status"], refund["error_code"], refund["settled_at"] is not None) == (
            "error",
            code,
            True,
        )
        assert (paid["status"], paid["refunded_minor"], paid["tokens_revoked"]) == ("success", 0, 0)
    assert balance(shop.engine, "asha") == 500
    assert _payment(shop.engine, plan["txnid"])["redemption_status"] == "redeemed"
    assert scalar(shop.engine, live) == redemptions
    sub = _payment(shop.engine, plan["txnid"])["subscription_id"]
    assert scalar(shop.engine, f"SELECT status FROM {S}.subscriptions WHERE id = :s", s=sub) == "active"
    assert [p["refunds"] for p in shop.sim.state.snapshot()["payments"]] == [[], []]

    # A refused refund blocks nothing: the next one goes through under a new token.
    retried = shop.cli("payu", "refund", str(pack["txnid"]), "--reason", "customer asked", "--format", "json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout)["status"] == "queued"
