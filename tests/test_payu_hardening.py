"""PayU results, refunds and the webhook receiver against forged bodies, unclear answers and a busy database.

Everything runs against real PostgreSQL and the shipped PayU simulator over HTTP (the `shop` fixture of
test_payu_flow): forged fields are what a customer's browser or an unauthenticated sender could post, and
the unclear answers come from a proxy in front of the simulator that forwards the request and mangles the
answer.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from publishers.payu.client import PayUClient
from publishers.payu.errors import PayUError
from publishers.payu.hashes import reverse_hash
from publishers.payu.refunds import RefundPendingError, refund, withdraw
from publishers.payu.webhook import status_for_sqlstate
from tests.ledger_support import S
from tests.payment_support import add_buyer, balance, scalar
from tests.payu_support import SIM_SALT
from tests.test_payu_flow import Shop, _count, _payment, shop

__all__ = ["shop"]  # the fixture, imported for these tests


def _genuine_body(shop: Shop, mihpayid: str) -> dict[str, str]:
    """What PayU posts to surl/furl and the webhook for this payment, signed with the reverse hash."""
    return dict(shop.sim.state.response_fields(shop.sim.state.payments[mihpayid]))


def _refunds_at_payu(shop: Shop, txnid: str) -> list[dict[str, Any]]:
    state = requests.get(f"{shop.sim.url}/_sim/state", timeout=5).json()
    return [r for p in state["payments"] if p["txnid"] == txnid for r in p["refunds"]]


def _refund_row(shop: Shop, txnid: str) -> dict[str, Any]:
    return dict(
        scalar(
            shop.engine,
            f"SELECT to_jsonb(r) FROM {S}.refunds r JOIN {S}.payments p ON p.id = r.payment_id "
            "WHERE p.txnid = :t ORDER BY r.id DESC LIMIT 1",
            t=txnid,
        )
    )


def _unpaid_at_tariff(shop: Shop, customer: str) -> dict[str, Any]:
    """A payment captured at PayU whose webhook never arrived: pending in Tariff."""
    shop.sim.simulator.webhook_url = None
    paid = shop.buy(customer, {"package": "extra-500"})
    shop.sim.simulator.webhook_url = shop.webhook.url
    return paid


# ----------------------------------------------------------------------------- payment results (1, 5)


def test_a_forged_mihpayid_is_refused_and_the_refund_goes_to_the_payment_made(shop: Shop) -> None:
    add_buyer(shop.engine, "victim", plan="pro")
    add_buyer(shop.engine, "mallory", plan="pro")
    victim = shop.buy("victim", {"package": "extra-500"})
    mine = _unpaid_at_tariff(shop, "mallory")
    events = _count(shop.engine, "payment_events")
    # mihpayid is not covered by the reverse hash: the browser can change it and keep a valid hash.
    forged = {**_genuine_body(shop, mine["sim"]["mihpayid"]), "mihpayid": victim["sim"]["mihpayid"]}
    assert forged["hash"] == reverse_hash(SIM_SALT, forged)

    answer = requests.post(shop.webhook.url, data=forged, timeout=10)
    assert answer.status_code == 400 and answer.json()["code"] == "mihpayid_mismatch"
    ingested = shop.cli("payu", "ingest", "-", stdin=urlencode(forged))
    assert ingested.exit_code == 1 and "mihpayid mismatch" in ingested.output
    assert _count(shop.engine, "payment_events") == events
    assert _payment(shop.engine, mine["txnid"])["status"] == "pending"

    genuine = requests.post(shop.webhook.url, data=_genuine_body(shop, mine["sim"]["mihpayid"]), timeout=10)
    assert genuine.status_code == 200 and genuine.json()["result"]["outcome"] == "applied"
    assert _payment(shop.engine, mine["txnid"])["mihpayid"] == mine["sim"]["mihpayid"]
    refunded = shop.cli("payu", "refund", mine["txnid"], "--reason", "customer asked")
    assert refunded.exit_code == 0, refunded.output
    assert len(_refunds_at_payu(shop, mine["txnid"])) == 1
    assert _refunds_at_payu(shop, victim["txnid"]) == []


def test_a_success_records_the_payment_mode_payu_confirms_not_the_bodys(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    paid = _unpaid_at_tariff(shop, "asha")
    body = {**_genuine_body(shop, paid["sim"]["mihpayid"]), "mode": "FORGED"}
    answer = requests.post(shop.webhook.url, data=body, timeout=10)
    assert answer.status_code == 200, answer.text
    at_payu = shop.sim.state.payments[paid["sim"]["mihpayid"]].mode
    assert at_payu and _payment(shop.engine, paid["txnid"])["payment_mode"] == at_payu


def test_an_unconfirmed_failure_never_replaces_a_mihpayid_tariff_knows(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    shop.sim.simulator.webhook_url = None
    failed = shop.buy("asha", {"package": "extra-500"}, outcome="failure")
    with shop.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {S}.payments SET mihpayid = :m WHERE txnid = :t"),
            {"m": failed["sim"]["mihpayid"], "t": failed["txnid"]},
        )
    body = {**_genuine_body(shop, failed["sim"]["mihpayid"]), "mihpayid": "403993715521937565"}
    answer = requests.post(shop.webhook.url, data=body, timeout=10)
    assert answer.status_code == 200 and answer.json()["result"]["outcome"] == "applied"
    stored = _payment(shop.engine, failed["txnid"])
    assert (stored["status"], stored["mihpayid"]) == ("failure", failed["sim"]["mihpayid"])


def test_a_success_spelled_with_a_capital_is_confirmed_and_granted(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    paid = _unpaid_at_tariff(shop, "asha")
    body = {**_genuine_body(shop, paid["sim"]["mihpayid"]), "status": "Success"}
    body["hash"] = reverse_hash(SIM_SALT, body)
    answer = requests.post(shop.webhook.url, data=body, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["outcome"] == "applied"
    assert _payment(shop.engine, paid["txnid"])["status"] == "success"
    assert balance(shop.engine, "asha") == 500


# ------------------------------------------------------------------------------------------ refunds (2)


class _MangledAnswers(requests.Session):
    """A proxy in front of PayU: the refund request reaches PayU, the answer comes back mangled, once."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def post(self, url: str | bytes, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().post(url, data=data, **kwargs)
        if self.how and isinstance(data, dict) and data.get("command") == "cancel_refund_transaction":
            if self.how == "http_500":
                response.status_code = 500
            response._content = b"<html><body>Internal Server Error</body></html>"
            self.how = ""
        return response


@pytest.mark.parametrize("how", ["http_500", "not_json"])
def test_an_unclear_refund_answer_leaves_it_requested_and_never_refunds_twice(shop: Shop, how: str) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    proxy = PayUClient(
        shop.sim.url, shop.credentials, timeout=5, retries=1, backoff=0, session=_MangledAnswers(how)
    )
    with pytest.raises(RefundPendingError) as caught:
        refund(shop.engine, S, proxy, txnid, 88441, "half unused")
    assert "recorded as requested" in caught.value.message
    assert "run the same command again" in (caught.value.fix or "")
    first = _refund_row(shop, txnid)
    assert first["status"] == "requested" and first["error_code"] is None
    # The amount is not free for a refund under another token while PayU may have made this one.
    other = shop.cli("payu", "refund", txnid, "--amount", "100", "--reason", "x")
    assert other.exit_code == 1 and "still unanswered" in other.output

    again = shop.cli(
        "payu", "refund", txnid, "--amount", "884.41", "--reason", "half unused", "--format", "json"
    )
    assert again.exit_code == 0, again.output
    out = json.loads(again.stdout)
    assert (out["token"], out["status"], out["recovered"]) == (first["token"], "queued", True)
    assert [r["token"] for r in _refunds_at_payu(shop, txnid)] == [first["token"]]


def test_a_106_whose_refund_payu_cannot_show_leaves_it_requested(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    shop.sim.fail_next("refuse", command="cancel_refund_transaction", code=106)
    first = shop.cli("payu", "refund", txnid, "--reason", "customer asked")
    assert first.exit_code == 1
    assert "recorded as requested" in first.output and "run the same command again" in first.output
    assert _refund_row(shop, txnid)["status"] == "requested"
    polled = shop.cli("payu", "refunds", "--poll", "--format", "json")
    assert polled.exit_code == 0 and [r["status"] for r in json.loads(polled.stdout)] == ["requested"]
    again = shop.cli("payu", "refund", txnid, "--reason", "customer asked", "--format", "json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["status"] == "queued" and len(_refunds_at_payu(shop, txnid)) == 1


def test_poll_reports_a_refund_state_tariff_does_not_know_and_updates_the_others(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    odd, fine = (str(shop.buy("asha", {"package": "extra-500"})["txnid"]) for _ in range(2))
    for txnid in (odd, fine):
        assert shop.cli("payu", "refund", txnid, "--reason", "customer asked").exit_code == 0
    [odd_at_payu] = [r for r in shop.sim.state.all_refunds() if r.txnid == odd]
    [fine_at_payu] = [r for r in shop.sim.state.all_refunds() if r.txnid == fine]
    odd_at_payu.status = "reversed"  # a state PayU may report that Tariff does not know
    fine_at_payu.status = "success"

    polled = shop.cli("payu", "refunds", "--poll", "--format", "json")
    assert polled.exit_code == 0, polled.output
    states = {r["txnid"]: r["status"] for r in json.loads(polled.stdout)}
    assert states == {odd: "queued", fine: "success"}
    assert "warning" in polled.output and "REVERSED" in polled.output
    assert _payment(shop.engine, fine)["refunded_minor"] == 176882


# --------------------------------------------------------------------------------- refund callbacks (3)


def _unanswered_refund(shop: Shop, txnid: str) -> str:
    """A refund Tariff asked for whose request never reached PayU: requested, no request id yet."""
    shop.sim_post("fail-next", mode="503", count=4, command="cancel_refund_transaction")
    assert shop.cli("payu", "refund", txnid, "--reason", "customer asked").exit_code == 1
    return str(_refund_row(shop, txnid)["token"])


def _untouched(shop: Shop, txnid: str, customer: str) -> None:
    paid = _payment(shop.engine, txnid)
    assert (paid["status"], paid["refunded_minor"], paid["tokens_revoked"]) == ("success", 0, 0)
    assert balance(shop.engine, customer) == 500


def test_a_refund_callback_with_another_refunds_request_id_changes_nothing(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    add_buyer(shop.engine, "ravi", plan="pro")
    asha = shop.buy("asha", {"package": "extra-500"})
    ravi = shop.buy("ravi", {"package": "extra-500"})
    token = _unanswered_refund(shop, asha["txnid"])
    foreign = shop.client.cancel_refund_transaction(ravi["sim"]["mihpayid"], "DASH1", Decimal("100.00"))
    shop.sim.state.settle_refunds(request_id=foreign.request_id)

    forged = {"action": "refund", "token": token, "request_id": foreign.request_id, "status": "SUCCESS"}
    answer = requests.post(shop.webhook.url, json=forged, timeout=10)
    assert answer.status_code == 400 and answer.json()["code"] == "not_confirmed"
    _untouched(shop, asha["txnid"], "asha")
    assert _refund_row(shop, asha["txnid"])["status"] == "requested"


def test_a_refund_callback_must_carry_the_request_id_payu_gave_tariff(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    add_buyer(shop.engine, "ravi", plan="pro")
    asha = shop.buy("asha", {"package": "extra-500"})
    ravi = shop.buy("ravi", {"package": "extra-500"})
    assert shop.cli("payu", "refund", asha["txnid"], "--reason", "customer asked").exit_code == 0
    ours = _refund_row(shop, asha["txnid"])
    foreign = shop.client.cancel_refund_transaction(ravi["sim"]["mihpayid"], "DASH1", Decimal("100.00"))
    shop.sim.state.settle_refunds(request_id=foreign.request_id)

    forged = {
        "action": "refund",
        "token": ours["token"],
        "request_id": foreign.request_id,
        "status": "SUCCESS",
    }
    answer = requests.post(shop.webhook.url, json=forged, timeout=10)
    assert answer.status_code == 400 and answer.json()["code"] == "refund_mismatch"
    _untouched(shop, asha["txnid"], "asha")
    settled = shop.sim_post("settle-refunds", request_id=ours["request_id"])
    assert [c["status_code"] for c in settled["callbacks"]] == [200]
    assert _payment(shop.engine, asha["txnid"])["status"] == "refunded"


def test_a_refund_payu_holds_under_tariffs_token_for_another_amount_is_not_recorded(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    asha = shop.buy("asha", {"package": "extra-500"})
    token = _unanswered_refund(shop, asha["txnid"])
    # Someone else used Tariff's token at PayU for another amount; its callback names Tariff's token.
    other = shop.client.cancel_refund_transaction(asha["sim"]["mihpayid"], token, Decimal("100.00"))
    settled = shop.sim_post("settle-refunds", request_id=other.request_id)
    assert [c["status_code"] for c in settled["callbacks"]] == [400]
    _untouched(shop, asha["txnid"], "asha")
    polled = shop.cli("payu", "refunds", "--poll", "--format", "json")
    assert polled.exit_code == 0 and [r["status"] for r in json.loads(polled.stdout)] == ["requested"]
    assert "not Tariff's refund" in polled.output and "amount 100.00" in polled.output
    _untouched(shop, asha["txnid"], "asha")


# ------------------------------------------------------------------------ withdrawing an unanswered refund


def _age(shop: Shop, token: str, minutes: int = 20) -> None:
    """As if the refund had been requested, and last sent, `minutes` earlier."""
    with shop.engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.refunds SET created_at = created_at - make_interval(mins => :m), "
                "updated_at = updated_at - make_interval(mins => :m) WHERE token = :t"
            ),
            {"m": minutes, "t": token},
        )


def test_an_unanswered_refund_no_longer_wanted_is_withdrawn_and_frees_its_amount(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    token = _unanswered_refund(shop, txnid)
    blocked = shop.cli("payu", "refund", txnid, "--amount", "100", "--reason", "partial")
    assert blocked.exit_code == 1 and "still unanswered" in blocked.output
    assert "tariff payu refund-withdraw" in blocked.output

    early = shop.cli("payu", "refund-withdraw", token, "--reason", "paid back by bank transfer")
    assert early.exit_code == 1 and "PayU may still be answering it" in early.output
    assert _refund_row(shop, txnid)["status"] == "requested"

    # Sent again (still unanswered): the wait starts over, as the resend may still be on its way to PayU.
    _age(shop, token)
    shop.sim_post("fail-next", mode="503", count=4, command="cancel_refund_transaction")
    assert shop.cli("payu", "refund", txnid, "--reason", "customer asked").exit_code == 1
    resent = shop.cli("payu", "refund-withdraw", token, "--reason", "paid back by bank transfer")
    assert resent.exit_code == 1 and "was last sent to PayU at" in resent.output

    _age(shop, token)
    done = shop.cli("payu", "refund-withdraw", token, "--reason", "paid back by bank transfer")
    assert done.exit_code == 0, done.output
    assert f"refund {token} of 1768.82 INR on {txnid}: withdrawn" in done.stdout
    row = _refund_row(shop, txnid)
    assert (row["status"], row["error_code"]) == ("error", "withdrawn")
    assert row["history"][-1]["source"] == "withdrawn"
    assert "paid back by bank transfer" in row["history"][-1]["detail"]
    _untouched(shop, txnid, "asha")  # nothing was refunded or taken back
    assert _refunds_at_payu(shop, txnid) == []

    # The amount is free again, for a new refund under a new token.
    again = shop.cli("payu", "refund", txnid, "--amount", "100", "--reason", "partial", "--format", "json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["token"] != token
    assert [r["token"] for r in _refunds_at_payu(shop, txnid)] == [json.loads(again.stdout)["token"]]
    twice = shop.cli("payu", "refund-withdraw", token, "--reason", "again")
    assert twice.exit_code == 1 and "already settled (error)" in twice.output


def test_a_refund_payu_made_after_all_is_recorded_not_withdrawn(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    # PayU makes the refund but its answer is lost, then it stops answering: Tariff holds it as requested.
    shop.sim_post("fail-next", mode="lost", count=1, command="cancel_refund_transaction")
    shop.sim_post("fail-next", mode="503", count=3, command="cancel_refund_transaction")
    assert shop.cli("payu", "refund", txnid, "--reason", "duplicate charge").exit_code == 1
    token = str(_refund_row(shop, txnid)["token"])
    _age(shop, token)

    refused = shop.cli("payu", "refund-withdraw", token, "--reason", "changed our mind")
    assert refused.exit_code == 1, refused.output
    assert f"PayU has refund {token}" in refused.output and "instead of withdrawing it" in refused.output
    row = _refund_row(shop, txnid)
    assert row["status"] == "queued" and row["request_id"]  # recorded as PayU has it
    assert row["error_code"] is None
    again = shop.cli("payu", "refund-withdraw", token, "--reason", "changed our mind")
    assert again.exit_code == 1 and "PayU has it, so it cannot be withdrawn" in again.output


class _NoActions(requests.Session):
    """PayU answering check_action_status with a bare status 0, as it may when it is busy."""

    def post(self, url: str | bytes, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().post(url, data=data, **kwargs)
        if isinstance(data, dict) and data.get("command") == "check_action_status":
            response._content = b'{"status": 0, "msg": "temporarily unavailable"}'
        return response


@pytest.mark.parametrize(
    "payu", ["unreachable", "answers without listing the payment", "holds the token for another amount"]
)
def test_a_refund_is_not_withdrawn_unless_payu_shows_it_has_none(shop: Shop, payu: str) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    asha = shop.buy("asha", {"package": "extra-500"})
    token = _unanswered_refund(shop, asha["txnid"])
    _age(shop, token)
    if payu == "unreachable":
        shop.sim_post("fail-next", mode="503", count=10, command="check_action_status")
        says = "did not answer check_action_status"
    elif payu == "answers without listing the payment":  # a status-0 answer is no proof of "no refund"
        proxy = PayUClient(shop.sim.url, shop.credentials, timeout=5, retries=1, session=_NoActions())
        with pytest.raises(PayUError, match="cannot show that refund"):
            withdraw(shop.engine, S, proxy, token, "not wanted")
        assert _refund_row(shop, asha["txnid"])["status"] == "requested"
        return
    else:
        shop.client.cancel_refund_transaction(asha["sim"]["mihpayid"], token, Decimal("100.00"))
        says = "not Tariff's refund"
    refused = shop.cli("payu", "refund-withdraw", token, "--reason", "not wanted")
    assert refused.exit_code == 1 and says in refused.output
    assert _refund_row(shop, asha["txnid"])["status"] == "requested"


def test_a_withdrawn_refund_payu_reports_made_after_all_is_reopened_and_recorded(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    asha = shop.buy("asha", {"package": "extra-500"})
    txnid = str(asha["txnid"])
    token = _unanswered_refund(shop, txnid)
    _age(shop, token)
    assert shop.cli("payu", "refund-withdraw", token, "--reason", "not wanted").exit_code == 0
    # However unlikely after PayU showed none: PayU makes the refund under that token and says so in its
    # callback. PayU's word is what counts.
    late = shop.client.cancel_refund_transaction(asha["sim"]["mihpayid"], token, Decimal("1768.82"))
    settled = shop.sim_post("settle-refunds", request_id=late.request_id)
    assert [c["status_code"] for c in settled["callbacks"]] == [200]
    row = _refund_row(shop, txnid)
    assert (row["status"], row["request_id"]) == ("success", late.request_id)
    assert [h["status"] for h in row["history"]][-3:] == ["error", "requested", "success"]
    assert "reopened: PayU reported SUCCESS after it was withdrawn" in row["history"][-2]["detail"]
    assert _payment(shop.engine, txnid)["status"] == "refunded"
    assert balance(shop.engine, "asha") == 0  # the pack's credits were taken back with the refund


def test_withdrawing_names_what_is_wrong(shop: Shop) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    unknown = shop.cli("payu", "refund-withdraw", "NOSUCHTOKEN", "--reason", "x")
    assert unknown.exit_code == 1 and 'unknown refund token "NOSUCHTOKEN"' in unknown.output
    assert "tariff payu refunds" in unknown.output
    blank = shop.cli("payu", "refund-withdraw", "NOSUCHTOKEN", "--reason", "  ")
    assert blank.exit_code == 1 and "--reason must not be empty" in blank.output
    assert shop.cli("payu", "refund", txnid, "--reason", "customer asked").exit_code == 0
    queued = _refund_row(shop, txnid)
    _age(shop, str(queued["token"]))
    refused = shop.cli("payu", "refund-withdraw", str(queued["token"]), "--reason", "x")
    assert refused.exit_code == 1 and "is queued at PayU" in refused.output
    assert _refund_row(shop, txnid)["status"] == "queued"


# ------------------------------------------------------------------------------------ the receiver (4)


@pytest.fixture
def short_lock_wait(shop: Shop) -> Iterator[Engine]:
    """The shop's engine, each of its connections waiting at most 300 ms for a row lock."""

    def set_lock_timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET lock_timeout = '300ms'")
        cursor.close()

    sa.event.listen(shop.engine, "connect", set_lock_timeout)
    shop.engine.dispose()
    yield shop.engine
    sa.event.remove(shop.engine, "connect", set_lock_timeout)
    shop.engine.dispose()


def test_a_busy_payment_row_is_answered_retry_and_the_redelivery_is_taken(
    shop: Shop, short_lock_wait: Engine
) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    paid = _unpaid_at_tariff(shop, "asha")
    body = _genuine_body(shop, paid["sim"]["mihpayid"])
    with short_lock_wait.connect() as blocker, blocker.begin():
        blocker.execute(
            sa.text(f"SELECT 1 FROM {S}.payments WHERE txnid = :t FOR UPDATE"), {"t": paid["txnid"]}
        )
        busy = requests.post(shop.webhook.url, data=body, timeout=20)
    assert busy.status_code == 503 and busy.json()["sqlstate"] == "55P03"
    assert _payment(shop.engine, paid["txnid"])["status"] == "pending"
    redelivered = requests.post(shop.webhook.url, data=body, timeout=20)
    assert redelivered.status_code == 200 and redelivered.json()["result"]["outcome"] == "applied"


@pytest.mark.parametrize(
    ("sqlstate", "answer"),
    [
        ("40001", 503),  # serialization failure
        ("40P01", 503),  # deadlock
        ("55P03", 503),  # lock not available
        ("57014", 503),  # statement timeout
        ("57P01", 503),  # server shutting down
        ("08006", 503),  # connection lost
        ("53300", 503),  # too many connections
        (None, 503),  # no server answer
        ("22023", 400),  # invalid parameter value: Tariff's functions refusing a body
        ("22000", 400),  # data exception: an amount mismatch
        ("23505", 400),
        ("P0001", 400),
        ("P0002", 400),
        ("TRF01", 400),
        ("42883", 500),  # undefined function: Tariff's own fault, not the body's
    ],
)
def test_database_errors_are_answered_retry_or_refused_by_their_class(
    sqlstate: str | None, answer: int
) -> None:
    assert status_for_sqlstate(sqlstate) == answer


@pytest.mark.parametrize("length", ["abc", "1e3", "0x10"])
def test_a_content_length_that_is_not_a_number_is_answered_400(shop: Shop, length: str) -> None:
    address = urlsplit(shop.webhook.url)
    conn = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=10)
    try:
        conn.putrequest("POST", "/")
        conn.putheader("Content-Type", "application/x-www-form-urlencoded")
        conn.putheader("Content-Length", length)
        conn.endheaders(b"txnid=x")
        response = conn.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["ok"] is False
    finally:
        conn.close()


# ------------------------------------------------------------------------------------------ amounts (6)


@pytest.mark.parametrize("amount", ["1e30", "1e20", "99999999999999999999999999999999.99"])
def test_a_huge_refund_amount_is_a_clear_error(shop: Shop, amount: str) -> None:
    add_buyer(shop.engine, "asha", plan="pro")
    txnid = str(shop.buy("asha", {"package": "extra-500"})["txnid"])
    ran = shop.cli("payu", "refund", txnid, "--amount", amount, "--reason", "x")
    assert ran.exit_code == 1 and "must be positive with at most 2 decimals" in ran.output
    assert "fix:" in ran.output
    assert _count(shop.engine, "refunds") == 0


def test_the_client_refuses_a_huge_refund_amount_before_calling_payu(shop: Shop) -> None:
    with pytest.raises(PayUError) as caught:
        shop.client.cancel_refund_transaction("1", "tok", Decimal("1e30"))
    assert caught.value.code == "invalid_amount"
