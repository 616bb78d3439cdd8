"""The simulator over HTTP as a browser and an app see it: checkout page, return post, webhooks, controls."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import requests

from publishers.payu.hashes import request_hash, reverse_hash, verify_reverse_hash
from publishers.payu.simulator import RunningSimulator, start_simulator
from tests.payu_support import SIM_KEY, SIM_SALT, Receiver, checkout_form, pay


class Forms(HTMLParser):
    """The forms of a page: action, and the value of every input, select (first option) and button."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.external: list[str] = []
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("script", "link", "img", "iframe") and (a.get("src") or a.get("href")):
            self.external.append(a.get("src") or a.get("href") or "")
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "fields": {}, "buttons": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["fields"][a.get("name", "")] = a.get("value", "")
        elif tag == "select" and self.forms:
            self._select = a.get("name", "")
        elif tag == "option" and self._select and self._select not in self.forms[-1]["fields"]:
            self.forms[-1]["fields"][self._select] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def parse(html: str) -> Forms:
    parser = Forms()
    parser.feed(html)
    return parser


def open_checkout(sim: RunningSimulator, receiver: Receiver, txnid: str, **extra: str) -> Forms:
    page = requests.post(sim.url + "/_payment", data=checkout_form(receiver.url, txnid, **extra), timeout=5)
    assert page.status_code == 200, page.text
    assert "text/html" in page.headers["Content-Type"]
    return parse(page.text)


def submit(sim: RunningSimulator, page: Forms, outcome: str, **overrides: str) -> Forms:
    form = page.forms[0]
    assert ("outcome", outcome) in form["buttons"] or outcome == "approve"
    data = {**form["fields"], **overrides, "outcome": outcome}
    answer = requests.post(sim.url + form["action"], data=data, timeout=5)
    assert answer.status_code == 200, answer.text
    return parse(answer.text)


def test_browser_checkout_returns_a_signed_response_to_surl_and_a_webhook(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    page = open_checkout(payu_sim, receiver, "PGweb1", amount="1769")
    assert page.external == []  # self-contained: nothing from a CDN
    assert page.forms[0]["action"].startswith("/_sim/checkout/")
    assert page.forms[0]["fields"]["card_number"] == "5123456789012346"
    assert ("outcome", "approve") in page.forms[0]["buttons"]

    back = submit(payu_sim, page, "approve")
    [form] = back.forms
    fields = form["fields"]
    assert form["action"] == receiver.url + "/success"
    assert fields["status"] == "success" and fields["unmappedstatus"] == "captured"
    assert fields["amount"] == "1769.00"  # echoed with two decimals though "1769" was posted
    assert fields["udf1"] == "pro" and fields["udf3"] == "ck9x" and fields["key"] == SIM_KEY
    assert verify_reverse_hash(SIM_SALT, fields)
    assert not verify_reverse_hash(SIM_SALT, {**fields, "amount": "1769"})

    [hook] = receiver.wait_for(1)
    assert hook.path == "/webhook" and "x-www-form-urlencoded" in hook.content_type
    assert hook.form == fields and verify_reverse_hash(SIM_SALT, hook.form)


def test_submitting_the_payment_page_twice_shows_an_error_page(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    page = open_checkout(payu_sim, receiver, "PGtwiceweb")
    submit(payu_sim, page, "approve")
    form = page.forms[0]
    again = requests.post(
        payu_sim.url + form["action"], data={**form["fields"], "outcome": "approve"}, timeout=5
    )
    assert again.status_code == 409 and "already success" in again.text and "Error Reason" in again.text
    assert len(receiver.wait_for(1)) == 1  # one webhook only


def test_wrong_otp_fails_to_furl_and_cancel_goes_to_curl(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    back = submit(payu_sim, open_checkout(payu_sim, receiver, "PGotp"), "approve", otp="000000")
    fields = back.forms[0]["fields"]
    assert back.forms[0]["action"] == receiver.url + "/failure"
    assert fields["status"] == "failure" and fields["error_Message"] == "Incorrect OTP"
    assert verify_reverse_hash(SIM_SALT, fields)

    page = open_checkout(payu_sim, receiver, "PGcancel", curl=receiver.url + "/cancelled")
    back = submit(payu_sim, page, "cancel")
    assert back.forms[0]["action"] == receiver.url + "/cancelled"
    assert back.forms[0]["fields"]["unmappedstatus"] == "userCancelled"


def test_visa_test_card_and_unknown_card(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    ok = submit(
        payu_sim, open_checkout(payu_sim, receiver, "PGvisa"), "approve", card_number="4012001037141112"
    )
    assert ok.forms[0]["fields"]["status"] == "success"
    assert ok.forms[0]["fields"]["card_no"].endswith("1112")
    ko = submit(
        payu_sim, open_checkout(payu_sim, receiver, "PGbadcard"), "approve", card_number="4111111111111111"
    )
    assert ko.forms[0]["fields"]["status"] == "failure"


def error_of(response: requests.Response) -> str:
    assert response.status_code == 400
    assert "Error Reason" in response.text
    return response.text


def test_checkout_refuses_what_payu_refuses(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    url = payu_sim.url + "/_payment"
    missing = checkout_form(receiver.url, "PGmiss")
    del missing["phone"], missing["surl"]
    assert "phone, surl" in error_of(requests.post(url, data=missing, timeout=5))

    tampered = checkout_form(receiver.url, "PGtamper")
    tampered["amount"] = "1.00"
    page = error_of(requests.post(url, data=tampered, timeout=5))
    assert "incorrectly calculated hash" in page
    assert "|1.00|" in page and "&lt;SALT&gt;" in page and SIM_SALT not in page

    long_id = checkout_form(receiver.url, "P" * 26)
    assert "25 characters" in error_of(requests.post(url, data=long_id, timeout=5))

    wrong_key = checkout_form(receiver.url, "PGkey", key="Other1")
    assert "Invalid merchant key" in error_of(requests.post(url, data=wrong_key, timeout=5))

    bad_amount = checkout_form(receiver.url, "PGamt", amount="10.005")
    assert "Invalid amount" in error_of(requests.post(url, data=bad_amount, timeout=5))

    get = requests.get(url, timeout=5)
    assert get.status_code == 405 and "POST" in get.text


def test_duplicate_successful_txnid_is_refused(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PGdup")
    again = requests.post(payu_sim.url + "/_payment", data=checkout_form(receiver.url, "PGdup"), timeout=5)
    assert "Duplicate Transaction ID" in error_of(again)


def test_mandate_consent_hashes_si_details(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    si = (
        '{"billingAmount":"2998.00","billingCurrency":"INR","billingCycle":"MONTHLY","billingInterval":1,'
        '"paymentStartDate":"2026-12-01"}'
    )
    form = checkout_form(receiver.url, "PGsi", "1.00", si="1", api_version="7", si_details=si)
    without_si = {k: v for k, v in form.items() if k != "si_details"}
    assert form["hash"] != request_hash(SIM_KEY, SIM_SALT, without_si)
    page = requests.post(payu_sim.url + "/_payment", data=form, timeout=5)
    assert page.status_code == 200 and "Standing instruction" in page.text and "2998.00" in page.text
    # the plain hash is refused for a consent
    plain = {
        **form,
        "txnid": "PGsi2",
        "hash": request_hash(SIM_KEY, SIM_SALT, {**without_si, "txnid": "PGsi2"}),
    }
    error_of(requests.post(payu_sim.url + "/_payment", data=plain, timeout=5))
    broken = checkout_form(receiver.url, "PGsi3", "1.00", si="1", si_details='{"billingAmount":"1"}')
    assert "billingCurrency" in error_of(requests.post(payu_sim.url + "/_payment", data=broken, timeout=5))
    # PayU takes a consent only with api_version 7.
    old_api = checkout_form(receiver.url, "PGsi4", "1.00", si="1", si_details=si)
    assert "api_version must be 7" in error_of(
        requests.post(payu_sim.url + "/_payment", data=old_api, timeout=5)
    )


def test_refuse_control_answers_refunds_with_payu_error_codes(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    from publishers.payu.client import PayUClient
    from publishers.payu.errors import PayUError

    paid = pay(payu_sim, receiver.url, "PGrefuse")
    client = PayUClient(payu_sim.url, payu_sim.credentials, timeout=3, retries=0)
    for code in (105, 116, 214):
        payu_sim.fail_next("refuse", command="cancel_refund_transaction", code=code)
        try:
            client.cancel_refund_transaction(paid["mihpayid"], f"tok{code}", Decimal("100.00"))
        except PayUError as exc:
            assert exc.code == str(code)
        else:
            raise AssertionError(f"code {code} was not refused")
    assert payu_sim.state.snapshot()["payments"][0]["refunds"] == []
    # Only the commands it can apply to: a bad combination is a clear 400.
    bad = requests.post(
        payu_sim.url + "/_sim/fail-next", json={"mode": "refuse", "command": "verify_payment"}, timeout=5
    )
    assert bad.status_code == 400 and "refuse applies to" in bad.json()["error"]


def test_additional_charges_use_the_prefixed_reverse_hash(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    result = pay(payu_sim, receiver.url, "PGfee", "1000.00", additional_charges="23.60")
    fields = result["fields"]
    assert fields["additionalCharges"] == "23.60" and fields["net_amount_debit"] == "1023.60"
    assert verify_reverse_hash(SIM_SALT, fields)
    plain = {k: v for k, v in fields.items() if k != "additionalCharges"}
    assert fields["hash"] != reverse_hash(SIM_SALT, plain)


def test_pay_control_can_repeat_webhooks_and_post_the_return_form(
    payu_sim: RunningSimulator, receiver: Receiver
) -> None:
    result = pay(payu_sim, receiver.url, "PGtwice", webhook_repeat=2, post_redirect=True)
    assert [w["status_code"] for w in result["webhooks"]] == [200, 200]
    assert result["redirect"]["status_code"] == 200
    received = receiver.wait_for(3)
    assert [r.path for r in received] == ["/webhook", "/webhook", "/success"]
    assert received[0].form == received[1].form == received[2].form


def test_pending_payment_can_be_resolved_later(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    assert pay(payu_sim, receiver.url, "PGpend", outcome="pending")["status"] == "pending"
    done = requests.post(
        payu_sim.url + "/_sim/pay", json={"txnid": "PGpend", "outcome": "success"}, timeout=5
    )
    assert done.json()["status"] == "success"
    again = requests.post(payu_sim.url + "/_sim/pay", json={"txnid": "PGpend"}, timeout=5)
    assert again.status_code == 409


def test_controls_explain_bad_requests(payu_sim: RunningSimulator) -> None:
    unknown = requests.post(payu_sim.url + "/_sim/pay", json={"txnid": "nope"}, timeout=5)
    assert unknown.status_code == 404 and "POST /_payment first" in unknown.json()["error"]
    bad_mode = requests.post(payu_sim.url + "/_sim/fail-next", json={"mode": "explode"}, timeout=5)
    assert bad_mode.status_code == 400
    assert requests.post(payu_sim.url + "/_sim/nothing", json={}, timeout=5).status_code == 404


def test_state_index_and_reset(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PGstate", "42.00")
    state = requests.get(payu_sim.url + "/_sim/state", timeout=5).json()
    assert [(p["txnid"], p["amount"], p["status"]) for p in state["payments"]] == [
        ("PGstate", "42.00", "success")
    ]
    assert state["deliveries"][0]["kind"] == "payment"
    index = requests.get(payu_sim.url + "/", timeout=5)
    assert "PGstate" in index.text and parse(index.text).external == []
    requests.post(payu_sim.url + "/_sim/reset", json={}, timeout=5)
    assert requests.get(payu_sim.url + "/_sim/state", timeout=5).json()["payments"] == []


def test_merchant_api_checks_the_command_hash(payu_sim: RunningSimulator) -> None:
    answer = requests.post(
        payu_sim.url + "/merchant/postservice.php?form=2",
        data={"key": SIM_KEY, "command": "verify_payment", "var1": "x", "hash": "0" * 128},
        timeout=5,
    ).json()
    assert answer == {"status": 0, "msg": "Invalid Hash."}


def test_concurrent_checkouts_get_distinct_ids(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: pay(payu_sim, receiver.url, f"PGc{i}", "10.00"), range(16)))
    assert len({r["mihpayid"] for r in results}) == 16
    assert all(r["status"] == "success" for r in results)


def test_stopped_simulator_frees_its_port() -> None:
    sim = start_simulator(key=SIM_KEY, salt=SIM_SALT)
    port = int(sim.url.rsplit(":", 1)[1])
    sim.stop()
    sim.stop()  # idempotent
    again = start_simulator(port=port, key=SIM_KEY, salt=SIM_SALT)
    try:
        assert requests.get(again.url + "/_sim/health", timeout=5).json() == {"ok": True}
    finally:
        again.stop()


def test_amounts_are_decimal_in_state(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    pay(payu_sim, receiver.url, "PGdec", "0.10")
    [payment] = payu_sim.state.payments.values()
    assert payment.amount == Decimal("0.10")


def test_python_controls_match_the_http_ones(payu_sim: RunningSimulator, receiver: Receiver) -> None:
    from publishers.payu.client import PayUClient

    requests.post(payu_sim.url + "/_payment", data=checkout_form(receiver.url, "PGpy", "300.00"), timeout=5)
    result = payu_sim.pay("PGpy")
    assert result["status"] == "success" and verify_reverse_hash(SIM_SALT, result["fields"])
    client = PayUClient(payu_sim.url, payu_sim.credentials, sleep=lambda _: None)
    refund = client.cancel_refund_transaction(str(result["mihpayid"]), "py1", Decimal("300"))
    assert [r["request_id"] for r in payu_sim.settle_refunds()["settled"]] == [refund.request_id]
    payu_sim.fail_next("503", count=1)
    assert client.check_action_status(refund.request_id)[0].status == "SUCCESS"


def test_a_restarted_simulator_keeps_its_state_file(receiver: Receiver, tmp_path: Path) -> None:
    from publishers.payu.client import PayUClient

    path = tmp_path / "payu-sim.json"
    si = (
        '{"billingAmount":"2212.00","billingCurrency":"INR","billingCycle":"MONTHLY","billingInterval":1,'
        '"paymentStartDate":"2026-12-26"}'
    )
    with start_simulator(0, SIM_KEY, SIM_SALT, refund_settle_seconds=None, state_file=path) as first:
        paid = pay(first, receiver.url, "PGkeep")
        consent = pay(first, receiver.url, "PGkeepsi", "1768.82", si="1", api_version="7", si_details=si)
        client = PayUClient(first.url, first.credentials, timeout=3, retries=0)
        client.cancel_refund_transaction(paid["mihpayid"], "tokkeep", Decimal("100.00"))
    with start_simulator(0, SIM_KEY, SIM_SALT, refund_settle_seconds=None, state_file=path) as second:
        client = PayUClient(second.url, second.credentials, timeout=3, retries=0)
        assert client.verify_payment(["PGkeep"])["PGkeep"].status == "success"
        [refund] = client.refunds_for_payment(paid["mihpayid"])
        assert (refund.token, refund.amount, refund.status) == ("tokkeep", Decimal("100.00"), "QUEUED")
        notice = client.pre_debit_si(consent["mihpayid"], "PDkeep", "2026-12-26", Decimal("1886.82"))
        assert notice.invoice_id
        # a paid txnid stays paid
        again = requests.post(second.url + "/_payment", data=checkout_form(receiver.url, "PGkeep"), timeout=5)
        assert "Duplicate Transaction ID" in error_of(again)
    # Another merchant's simulator refuses the file instead of mixing accounts.
    with pytest.raises(ValueError, match="another merchant key"):
        start_simulator(0, "OTHER1", SIM_SALT, state_file=path)
