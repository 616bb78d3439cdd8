"""PayUClient against the offline simulator: every command, PayU's error codes, and network failures."""

from __future__ import annotations

import logging
import socket
import time
from datetime import date
from decimal import Decimal

import pytest
import requests

from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials
from publishers.payu.errors import PayUError, PayUNetworkError
from publishers.payu.simulator import RunningSimulator
from tests.payu_support import SIM_KEY, SIM_SALT, Receiver, pay

SI_DETAILS = (
    '{"billingAmount":"1769.00","billingCurrency":"INR","billingCycle":"MONTHLY","billingInterval":1,'
    '"paymentStartDate":"2026-12-01","paymentEndDate":"2031-12-01","billingRule":"MAX"}'
)


def control(sim: RunningSimulator, action: str, **data: object) -> dict[str, object]:
    response = requests.post(f"{sim.url}/_sim/{action}", json=data, timeout=5)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


# -- payments -------------------------------------------------------------------------------------


def test_verify_payment_reports_success_failure_and_unknown(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    paid = pay(payu_sim, receiver.url, "PGok1", "1769")
    pay(payu_sim, receiver.url, "PGko1", "499.00", outcome="failure")
    found = payu_client.verify_payment(["PGok1", "PGko1", "PGnever"])
    ok, ko, never = found["PGok1"], found["PGko1"], found["PGnever"]
    assert ok.succeeded and ok.mihpayid == paid["mihpayid"] and ok.unmappedstatus == "captured"
    assert ok.amount == Decimal("1769.00") and ok.net_amount_debit == Decimal("1769.00")
    assert ok.udf[0] == "pro" and ok.udf[2] == "ck9x"
    assert ko.status == "failure" and ko.unmappedstatus == "failed" and not ko.succeeded
    assert not never.found and never.mihpayid is None


def test_a_failed_txnid_can_be_paid_again_and_verify_shows_the_success(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    pay(payu_sim, receiver.url, "PGretry", outcome="cancel")
    second = pay(payu_sim, receiver.url, "PGretry")
    assert payu_client.verify_payment(["PGretry"])["PGretry"].mihpayid == second["mihpayid"]


def test_check_payment_by_mihpayid(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    paid = pay(payu_sim, receiver.url, "PGcheck", "10.50")
    payment = payu_client.check_payment(str(paid["mihpayid"]))
    assert (payment.txnid, payment.status, payment.amount) == ("PGcheck", "success", Decimal("10.50"))
    with pytest.raises(PayUError) as caught:
        payu_client.check_payment("999")
    assert caught.value.code == "not_found"


def test_wrong_salt_is_an_invalid_hash_error_and_not_retried(payu_sim: RunningSimulator) -> None:
    sleeps: list[float] = []
    client = PayUClient(payu_sim.url, PayUCredentials(SIM_KEY, "not-the-salt"), sleep=sleeps.append)
    with pytest.raises(PayUError) as caught:
        client.verify_payment(["x"])
    assert caught.value.code == "invalid_hash"
    assert "PAYU" not in caught.value.message and "salt" in (caught.value.fix or "")
    assert sleeps == []


def test_wrong_key_is_reported(payu_sim: RunningSimulator) -> None:
    client = PayUClient(payu_sim.url, PayUCredentials("Wr0ngK", SIM_SALT))
    with pytest.raises(PayUError) as caught:
        client.verify_payment(["x"])
    assert caught.value.code == "invalid_key"
    assert "Wr0ngK" not in caught.value.message


# -- refunds --------------------------------------------------------------------------------------


def test_partial_refunds_then_settlement(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    paid = pay(payu_sim, receiver.url, "PGref1", "1769.00")
    mihpayid = str(paid["mihpayid"])
    first = payu_client.cancel_refund_transaction(mihpayid, "rf-a", Decimal("500"))
    second = payu_client.cancel_refund_transaction(
        mihpayid, "rf-b", Decimal("269.00"), callback_url=receiver.url + "/refunds"
    )
    assert first.request_id and first.request_id != second.request_id
    assert first.amount == Decimal("500.00") and first.error_code == "102" and not first.recovered
    [queued] = payu_client.check_action_status(first.request_id)
    assert (queued.status, queued.amount, queued.token, queued.final) == (
        "QUEUED",
        Decimal("500.00"),
        "rf-a",
        False,
    )

    control(payu_sim, "settle-refunds")
    [done] = payu_client.check_action_status(first.request_id)
    assert done.status == "SUCCESS" and done.final
    all_refunds = payu_client.get_all_refunds_from_txn_ids("PGref1")
    assert sorted((r.token, r.status, r.amount) for r in all_refunds) == [
        ("rf-a", "SUCCESS", Decimal("500.00")),
        ("rf-b", "SUCCESS", Decimal("269.00")),
    ]
    actions = payu_client.check_action_status_by_mihpayid(mihpayid)
    assert {a.action for a in actions} == {"capture", "refund"}
    assert [r.token for r in payu_client.refunds_for_payment(mihpayid)] == ["rf-a", "rf-b"]
    # the refund with a callback URL reports there, as JSON
    callbacks = [r for r in receiver.wait_for(3) if r.path == "/refunds"]
    assert callbacks and callbacks[0].json["token"] == "rf-b" and callbacks[0].json["status"] == "success"
    assert callbacks[0].json["action"] == "refund" and callbacks[0].json["merchantTxnId"] == "PGref1"


def test_refund_error_codes_are_explained(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    mihpayid = str(pay(payu_sim, receiver.url, "PGref2", "2000.00")["mihpayid"])
    payu_client.cancel_refund_transaction(mihpayid, "tok1", Decimal("600"))

    def refused(token: str, amount: str, target: str = mihpayid) -> PayUError:
        with pytest.raises(PayUError) as caught:
            payu_client.cancel_refund_transaction(target, token, Decimal(amount))
        return caught.value

    over = refused("tok2", "1400.01")
    assert over.code == "105" and "amount" in over.message and "left to refund" in (over.fix or "")
    assert refused("tok1", "1").code == "106"
    assert refused("tok3", "1", target="123456789").code == "116"
    same = refused("tok4", "600")
    assert same.code == "214" and "5 minutes" in same.message
    control(payu_sim, "advance", seconds=301)
    assert payu_client.cancel_refund_transaction(mihpayid, "tok4", Decimal("600")).amount == Decimal("600.00")


def test_refund_arguments_are_checked_before_calling_payu(payu_client: PayUClient) -> None:
    for token, amount in (("", "1"), ("x" * 24, "1"), ("ok", "0"), ("ok", "1.005"), ("ok", "-3")):
        with pytest.raises(PayUError) as caught:
            payu_client.cancel_refund_transaction("1", token, Decimal(amount))
        assert caught.value.code in ("invalid_token", "invalid_amount")


def test_a_refund_whose_answer_was_lost_is_recovered_not_repeated(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    mihpayid = str(pay(payu_sim, receiver.url, "PGlost", "900.00")["mihpayid"])
    # PayU queues the refund, then the connection drops before the answer arrives
    control(payu_sim, "fail-next", mode="lost", command="cancel_refund_transaction")
    refund = payu_client.cancel_refund_transaction(mihpayid, "rf-lost", Decimal("900"))
    assert refund.recovered and refund.amount == Decimal("900.00")
    refunds = payu_client.refunds_for_payment(mihpayid)
    assert [(r.token, r.request_id) for r in refunds] == [("rf-lost", refund.request_id)]


def test_a_refund_retried_after_a_timeout_is_made_once(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    mihpayid = str(pay(payu_sim, receiver.url, "PGslowrf", "900.00")["mihpayid"])
    client = PayUClient(payu_sim.url, payu_sim.credentials, timeout=0.3, retries=2, sleep=lambda _: None)
    # the first attempt is still being processed when the client gives up and sends the same token again
    control(payu_sim, "fail-next", mode="timeout", delay=0.8, command="cancel_refund_transaction")
    refund = client.cancel_refund_transaction(mihpayid, "rf-slow", Decimal("900"))
    time.sleep(1.0)  # let the slow first attempt finish on the PayU side
    refunds = client.refunds_for_payment(mihpayid)
    assert [(r.token, r.request_id, r.amount) for r in refunds] == [
        ("rf-slow", refund.request_id, Decimal("900.00"))
    ]


def test_a_reused_token_on_the_first_attempt_is_an_error_not_a_recovery(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    mihpayid = str(pay(payu_sim, receiver.url, "PGreuse", "900.00")["mihpayid"])
    payu_client.cancel_refund_transaction(mihpayid, "rf-1", Decimal("100"))
    with pytest.raises(PayUError) as caught:
        payu_client.cancel_refund_transaction(mihpayid, "rf-1", Decimal("200"))
    assert caught.value.code == "106"


def test_refunds_settle_by_themselves_after_the_delay(receiver: Receiver) -> None:
    from publishers.payu.simulator import start_simulator

    with start_simulator(
        key=SIM_KEY, salt=SIM_SALT, webhook_url=receiver.url + "/hook", refund_settle_seconds=0.3
    ) as sim:
        client = PayUClient(sim.url, sim.credentials)
        mihpayid = str(pay(sim, receiver.url, "PGauto")["mihpayid"])
        refund = client.cancel_refund_transaction(mihpayid, "auto1", Decimal("1"))
        refund_callbacks = [r for r in receiver.wait_for(2) if r.json is not None]
        assert refund_callbacks and refund_callbacks[0].json["request_id"] == refund.request_id
        assert client.check_action_status(refund.request_id)[0].status == "SUCCESS"


def test_unknown_request_id_has_no_status(payu_client: PayUClient) -> None:
    assert payu_client.check_action_status("1") == []
    assert payu_client.get_all_refunds_from_txn_ids("nothing") == []


# -- standing instructions ------------------------------------------------------------------------


def mandate(sim: RunningSimulator, receiver: Receiver, txnid: str = "PGsi1") -> str:
    consent = pay(sim, receiver.url, txnid, "1.00", si="1", api_version="7", si_details=SI_DETAILS)
    assert consent["status"] == "success"
    return str(consent["mihpayid"])


def test_mandate_debit_after_pre_debit_notice(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    auth = mandate(payu_sim, receiver)
    notice = payu_client.pre_debit_si(auth, "pd-1", date(2026, 12, 1), Decimal("1769"))
    assert notice.invoice_id and notice.request_id == "pd-1"
    debit = payu_client.si_transaction(auth, "PGrec1", Decimal("1769.00"), email="asha@example.in")
    assert debit.succeeded and debit.amount == Decimal("1769.00") and debit.mihpayid
    verified = payu_client.verify_payment(["PGrec1"])["PGrec1"]
    assert verified.succeeded and verified.mihpayid == debit.mihpayid
    # the debit is reported to the webhook like any payment
    hooks = [r for r in receiver.wait_for(2) if r.path == "/webhook" and r.form.get("txnid") == "PGrec1"]
    assert hooks and hooks[0].form["status"] == "success"


def test_a_price_above_the_mandate_cannot_be_debited(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    auth = mandate(payu_sim, receiver)
    with pytest.raises(PayUError, match="billing amount"):
        payu_client.pre_debit_si(auth, "pd-2", "2026-12-01", Decimal("2499.00"))
    payu_client.pre_debit_si(auth, "pd-3", "2026-12-01", Decimal("1769.00"))
    with pytest.raises(PayUError, match="new mandate"):
        payu_client.si_transaction(auth, "PGrec2", Decimal("2499.00"))


def test_debit_without_notice_or_mandate_is_refused(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    auth = mandate(payu_sim, receiver)
    with pytest.raises(PayUError, match="Pre-debit"):
        payu_client.si_transaction(auth, "PGrec3", Decimal("100"))
    with pytest.raises(PayUError, match="not active"):
        payu_client.pre_debit_si("000", "pd-4", "2026-12-01", Decimal("1"))


def test_a_declined_debit_is_a_failure_result(
    payu_sim: RunningSimulator, receiver: Receiver, payu_client: PayUClient
) -> None:
    auth = mandate(payu_sim, receiver)
    payu_client.pre_debit_si(auth, "pd-5", "2026-12-01", Decimal("1769.00"))
    control(payu_sim, "fail-next", mode="decline")
    debit = payu_client.si_transaction(auth, "PGrec4", Decimal("1769.00"))
    assert debit.status == "failure" and not debit.succeeded


# -- network failures ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_retries_with_backoff_then_fails(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    key, salt = "Rf9KeY", "refused-salt-0123456789abcdefghij"
    client = PayUClient(
        f"http://127.0.0.1:{free_port()}",
        PayUCredentials(key, salt),
        retries=3,
        backoff=0.1,
        sleep=sleeps.append,
    )
    with caplog.at_level(logging.WARNING, logger="tariff.payu"), pytest.raises(PayUNetworkError) as caught:
        client.verify_payment(["PG1"])
    assert sleeps == [0.1, 0.2, 0.4]
    assert "after 4 attempt(s)" in caught.value.message and caught.value.code == "network"
    assert len(caplog.records) == 4
    for text in (caught.value.message, caught.value.fix or "", caplog.text):
        assert key not in text and salt not in text


def test_503_then_success(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PG503")
    sleeps: list[float] = []
    client = PayUClient(payu_sim.url, payu_sim.credentials, retries=3, backoff=0.5, sleep=sleeps.append)
    control(payu_sim, "fail-next", mode="503", count=2)
    assert client.verify_payment(["PG503"])["PG503"].succeeded
    assert sleeps == [0.5, 1.0]


def test_gateway_errors_beyond_the_retries_fail(payu_sim: RunningSimulator) -> None:
    client = PayUClient(payu_sim.url, payu_sim.credentials, retries=1, sleep=lambda _: None)
    control(payu_sim, "fail-next", mode="504", count=2)
    with pytest.raises(PayUNetworkError, match="HTTP 504"):
        client.verify_payment(["PGx"])


def test_timeout_is_retried(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PGslow")
    client = PayUClient(payu_sim.url, payu_sim.credentials, timeout=0.3, retries=1, sleep=lambda _: None)
    control(payu_sim, "fail-next", mode="timeout", delay=1.5)
    assert client.verify_payment(["PGslow"])["PGslow"].succeeded


def test_timeout_everywhere_fails_with_network_error(payu_sim: RunningSimulator) -> None:
    client = PayUClient(payu_sim.url, payu_sim.credentials, timeout=0.2, retries=1, sleep=lambda _: None)
    control(payu_sim, "fail-next", mode="timeout", delay=0.8, count=2)
    with pytest.raises(PayUNetworkError, match=r"no answer within 0\.2 s"):
        client.verify_payment(["PGx"])


def test_dropped_connection_is_retried(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PGdrop")
    client = PayUClient(payu_sim.url, payu_sim.credentials, retries=1, sleep=lambda _: None)
    control(payu_sim, "fail-next", mode="drop")
    assert client.verify_payment(["PGdrop"])["PGdrop"].succeeded


def test_business_errors_are_never_retried(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    mihpayid = str(pay(payu_sim, receiver.url, "PGbiz", "100.00")["mihpayid"])
    sleeps: list[float] = []
    client = PayUClient(payu_sim.url, payu_sim.credentials, sleep=sleeps.append)
    with pytest.raises(PayUError) as caught:
        client.cancel_refund_transaction(mihpayid, "big", Decimal("101"))
    assert caught.value.code == "105" and sleeps == []


def test_non_json_answer_is_a_clear_error(receiver: Receiver) -> None:
    # the receiver answers "ok" to every POST, like a wrong host would
    client = PayUClient(receiver.url, PayUCredentials("Nj5Key", "nonjson-salt-0123456789abcdefghij"))
    with pytest.raises(PayUError) as caught:
        client.verify_payment(["PG1"])
    assert caught.value.code == "bad_response" and "api_url" in (caught.value.fix or "")
