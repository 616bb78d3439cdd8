"""The simulator's memory: payments, refunds and mandates, and PayU's rules over them.

Everything here is pure bookkeeping under one lock; the HTTP layer (server.py) turns requests into calls
and delivers the webhooks these calls return. Time comes from ``now()``, which tests can move forward.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from publishers.payu.hashes import (
    masked_sequence,
    request_hash,
    request_sequence,
    reverse_hash,
)

MANDATORY = ("key", "txnid", "amount", "productinfo", "firstname", "email", "phone", "surl", "furl", "hash")
ECHOED = (
    "productinfo",
    "firstname",
    "lastname",
    "address1",
    "address2",
    "city",
    "state",
    "country",
    "zipcode",
    "email",
    "phone",
    *(f"udf{i}" for i in range(1, 11)),
)
TEST_CARDS = {"5123456789012346": "MAST", "4012001037141112": "VISA"}
TEST_OTP = "123456"
SI_REQUIRED = ("billingAmount", "billingCurrency", "billingCycle", "billingInterval", "paymentStartDate")
BILLING_CYCLES = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY", "ONCE", "ADHOC")
SAME_AMOUNT_WINDOW = timedelta(minutes=5)
TXNID = re.compile(r"^[A-Za-z0-9_\-./:]+$")
AMOUNT = re.compile(r"^[0-9]+(\.[0-9]{1,2})?$")
CENT = Decimal("0.01")


class CheckoutError(Exception):
    """A `_payment` request PayU would answer with its error page."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class SimulatorRequestError(Exception):
    """A bad call to a test-control endpoint (HTTP 4xx with a JSON error)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def two_decimals(value: Decimal) -> str:
    return f"{value.quantize(CENT)}"


@dataclass
class Refund:
    request_id: str
    mihpayid: str
    txnid: str
    token: str
    amount: Decimal
    created_at: datetime
    callback_url: str | None
    status: str = "queued"  # queued → success | failure
    settled_at: datetime | None = None
    bank_ref_num: str = ""
    bank_arn: str | None = None

    def action(self) -> dict[str, Any]:
        return {
            "mihpayid": self.mihpayid,
            "bank_ref_num": self.bank_ref_num,
            "request_id": self.request_id,
            "amt": two_decimals(self.amount),
            "mode": "CC",
            "action": "refund",
            "token": self.token,
            "status": self.status,
            "bank_arn": self.bank_arn,
            "settlement_id": None,
            "amount_settled": None,
            "UTR_no": None,
            "value_date": self.settled_at.strftime("%Y-%m-%d %H:%M:%S") if self.settled_at else None,
            "refund_mode": "Back to Source",
            "addedon": self.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        }

    def callback(self, key: str) -> dict[str, Any]:
        return {
            "key": key,
            "mihpayid": self.mihpayid,
            "request_id": self.request_id,
            "merchantTxnId": self.txnid,
            "token": self.token,
            "amt": two_decimals(self.amount),
            "status": self.status,
            "bank_ref_num": self.bank_ref_num,
            "bank_arn": self.bank_arn,
            "refund_mode": "Back to Source",
            "remark": "Refund processed" if self.status == "success" else "Refund failed at bank",
            "action": "refund",
        }


@dataclass
class Payment:
    mihpayid: str
    txnid: str
    amount: Decimal
    fields: dict[str, str]
    created_at: datetime
    status: str = "pending"  # pending | success | failure
    unmappedstatus: str = "initiated"
    mode: str = ""
    bankcode: str = ""
    card_no: str = ""
    bank_ref_num: str = ""
    error: str = "E000"
    error_message: str = "No Error"
    field9: str = ""
    additional_charges: Decimal = Decimal("0")
    auth_payu_id: str | None = None  # set on debits of a mandate
    capture_request_id: str = ""
    refunds: list[Refund] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.status in ("success", "failure")

    def capture_action(self) -> dict[str, Any]:
        return {
            "mihpayid": self.mihpayid,
            "bank_ref_num": self.bank_ref_num,
            "request_id": self.capture_request_id,
            "amt": two_decimals(self.amount),
            "mode": self.mode,
            "action": "capture",
            "token": "",
            "status": "SUCCESS",
            "bank_arn": None,
            "settlement_id": None,
            "amount_settled": None,
            "UTR_no": None,
            "value_date": None,
            "refund_mode": "-",
        }

    def refunded(self) -> Decimal:
        return sum((r.amount for r in self.refunds if r.status != "failure"), Decimal("0"))

    def details(self) -> dict[str, Any]:
        """verify_payment / check_payment shape."""
        f = self.fields
        amt = two_decimals(self.amount)
        return {
            "mihpayid": self.mihpayid,
            "request_id": "",
            "bank_ref_num": self.bank_ref_num,
            "amt": amt,
            "transaction_amount": amt,
            "txnid": self.txnid,
            "additional_charges": two_decimals(self.additional_charges),
            "productinfo": f.get("productinfo", ""),
            "firstname": f.get("firstname", ""),
            "bankcode": self.bankcode,
            **{f"udf{i}": f.get(f"udf{i}", "") for i in range(1, 6)},
            "field2": "",
            "field9": self.field9,
            "error_code": self.error,
            "addedon": self.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "payment_source": "payu",
            "card_type": self.bankcode,
            "error_Message": self.error_message,
            "net_amount_debit": two_decimals(self.amount + self.additional_charges)
            if self.status == "success"
            else "0",
            "disc": "0.00",
            "mode": self.mode,
            "PG_TYPE": f"{self.mode}-PG" if self.mode else "",
            "card_no": self.card_no,
            "name_on_card": f.get("firstname", ""),
            "status": self.status,
            "unmappedstatus": self.unmappedstatus,
            "Merchant_UTR": None,
            "Settled_At": "0000-00-00 00:00:00",
        }


@dataclass
class Mandate:
    auth_payu_id: str
    txnid: str
    billing_amount: Decimal
    billing_cycle: str
    billing_currency: str
    start: str
    end: str | None
    status: str = "active"
    notices: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Delivery:
    """A message the simulator must send: a form-encoded payment webhook or a JSON refund callback."""

    kind: str  # payment | refund
    url: str
    payload: dict[str, Any]


@dataclass
class FailPlan:
    mode: str  # 502 | 503 | 504 | drop | timeout | lost | decline | refuse
    command: str | None
    delay: float
    code: int | None = None  # refuse: PayU's error code for a refund (105, 106, 116, 214)


# What PayU answers a refund it refuses, by error code (test control `refuse`).
REFUSALS = {
    105: "Refund FAILURE - Invalid amount",
    106: "Refund FAILURE - Request for token already exists",
    116: "Refund FAILURE - Transaction not found",
    214: "Refund FAILURE - Same amount refund requested within 5 minutes",
}
REFUSABLE = ("cancel_refund_transaction", "pre_debit_SI")


class SimState:
    """PayU's side of the conversation for one merchant (key, salt)."""

    def __init__(self, key: str, salt: str, *, refund_settle_seconds: float | None = 30.0) -> None:
        self.key = key
        self.salt = salt
        self.refund_settle_seconds = refund_settle_seconds
        self.lock = threading.RLock()
        self.offset = timedelta(0)
        self.payments: dict[str, Payment] = {}  # by mihpayid
        self.attempts: dict[str, list[str]] = {}  # txnid → mihpayids, oldest first
        self.mandates: dict[str, Mandate] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.fail_plans: list[FailPlan] = []
        self._ids: set[str] = set()
        self._request_seq = 131278000 + secrets.randbelow(700000)
        self._invoice_seq = 49000

    # -- time and ids --------------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.offset += timedelta(seconds=seconds)

    def _new_id(self, digits: int) -> str:
        while True:
            candidate = str(secrets.randbelow(9 * 10 ** (digits - 1)) + 10 ** (digits - 1))
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _request_id(self) -> str:
        self._request_seq += 1
        return str(self._request_seq)

    # -- lookups -------------------------------------------------------------------------------

    def latest(self, txnid: str) -> Payment | None:
        ids = self.attempts.get(txnid)
        return self.payments[ids[-1]] if ids else None

    def succeeded(self, txnid: str) -> Payment | None:
        for mihpayid in self.attempts.get(txnid, ()):
            if self.payments[mihpayid].status == "success":
                return self.payments[mihpayid]
        return None

    def reported(self, txnid: str) -> Payment | None:
        """What verify_payment shows for a txnid: its successful attempt, else the latest one."""
        return self.succeeded(txnid) or self.latest(txnid)

    # -- hosted checkout -----------------------------------------------------------------------

    def start_checkout(self, form: Mapping[str, str]) -> Payment:
        """Validate a `_payment` POST like PayU does and open a pending payment for it."""
        missing = [name for name in MANDATORY if not (form.get(name) or "").strip()]
        if missing:
            raise CheckoutError(f"Mandatory parameter(s) missing: {', '.join(missing)}")
        if form["key"] != self.key:
            raise CheckoutError("Invalid merchant key", "The key does not belong to this PayU account.")
        txnid = form["txnid"]
        if len(txnid) > 25:
            raise CheckoutError("Transaction ID (txnid) is longer than 25 characters", f"txnid: {txnid}")
        if not TXNID.match(txnid):
            raise CheckoutError(
                "Transaction ID (txnid) has characters PayU does not accept", f"txnid: {txnid}"
            )
        raw_amount = form["amount"].strip()
        if not AMOUNT.match(raw_amount) or Decimal(raw_amount) <= 0:
            raise CheckoutError(
                "Invalid amount", f"amount: {form['amount']!r} (a positive number, ≤ 2 decimals)"
            )
        if len(form["productinfo"]) > 100:
            raise CheckoutError("productinfo is longer than 100 characters")
        if len(form["firstname"]) > 60:
            raise CheckoutError("firstname is longer than 60 characters")
        if "@" not in form["email"]:
            raise CheckoutError("Invalid email", f"email: {form['email']!r}")
        for name in ("surl", "furl", "curl"):
            value = form.get(name) or ""
            if value and not value.startswith(("http://", "https://")):
                raise CheckoutError(f"Invalid {name}", f"{name} must be an http(s) URL")
        si = form.get("si") == "1"
        si_details = None
        if si:
            si_details = self._si_details(form)
            if (form.get("api_version") or "").strip() != "7":
                raise CheckoutError(
                    "api_version must be 7 for a standing-instruction consent (si=1)",
                    f"api_version: {form.get('api_version')!r}",
                )
        fields = dict(form)
        if not si:
            fields.pop("si_details", None)
        try:
            sequence = request_sequence(self.key, self.salt, fields)
        except ValueError as exc:
            raise CheckoutError(
                "Transaction failed due to incorrectly calculated hash parameter", str(exc)
            ) from None
        if request_hash(self.key, self.salt, fields) != form["hash"].strip().lower():
            raise CheckoutError(
                "Transaction failed due to incorrectly calculated hash parameter",
                "PayU hashed: " + masked_sequence(sequence, self.salt),
            )
        with self.lock:
            if self.succeeded(txnid) is not None:
                raise CheckoutError("Duplicate Transaction ID", f"txnid {txnid} has already been paid")
            payment = Payment(
                mihpayid=self._new_id(18),
                txnid=txnid,
                amount=Decimal(raw_amount),
                fields=fields,
                created_at=self.now(),
            )
            if si_details is not None:
                payment.fields["_si_billing_amount"] = si_details["billingAmount"]
            self.payments[payment.mihpayid] = payment
            self.attempts.setdefault(txnid, []).append(payment.mihpayid)
            return payment

    @staticmethod
    def _si_details(form: Mapping[str, str]) -> dict[str, Any]:
        text = form.get("si_details") or ""
        if not text:
            raise CheckoutError("si_details is missing", "A mandate consent (si=1) needs si_details JSON.")
        try:
            details = json.loads(text)
        except ValueError:
            raise CheckoutError("si_details is not valid JSON") from None
        if not isinstance(details, dict):
            raise CheckoutError("si_details must be a JSON object")
        missing = [k for k in SI_REQUIRED if not str(details.get(k) or "").strip()]
        if missing:
            raise CheckoutError(f"si_details is missing {', '.join(missing)}")
        try:
            billing = Decimal(str(details["billingAmount"]))
        except InvalidOperation:
            billing = Decimal("-1")
        if billing <= 0:
            raise CheckoutError("si_details.billingAmount must be a positive amount")
        if str(details["billingCycle"]).upper() not in BILLING_CYCLES:
            raise CheckoutError(f"si_details.billingCycle must be one of {', '.join(BILLING_CYCLES)}")
        return details

    def complete(
        self,
        payment: Payment,
        outcome: str,
        *,
        method: str = "card",
        card_number: str = "5123456789012346",
        otp: str = TEST_OTP,
        vpa: str = "",
        additional_charges: Decimal = Decimal("0"),
    ) -> str:
        """Finish a checkout: approve (checked like PayU's test cards), fail, cancel, or leave pending."""
        with self.lock:
            if payment.final:
                raise SimulatorRequestError(f"payment {payment.txnid} is already {payment.status}", 409)
            if outcome == "approve":
                outcome = "success"
            if outcome == "success" and self.succeeded(payment.txnid) is not None:
                raise SimulatorRequestError(f"txnid {payment.txnid} has already been paid", 409)
            digits = re.sub(r"\D", "", card_number)
            payment.additional_charges = additional_charges
            if method == "upi":
                payment.mode, payment.bankcode, payment.card_no = "UPI", "UPI", ""
                if outcome == "success" and not vpa.lower().endswith("@payu"):
                    outcome, payment.error, payment.error_message = "failure", "E1204", "Invalid VPA"
            elif method == "netbanking":
                payment.mode, payment.bankcode, payment.card_no = "NB", "TESTNB", ""
            else:
                payment.mode = "CC"
                payment.bankcode = TEST_CARDS.get(digits, "CC")
                payment.card_no = f"{digits[:6]}XXXXXX{digits[-4:]}" if len(digits) >= 10 else ""
                if outcome == "success" and digits not in TEST_CARDS:
                    outcome, payment.error, payment.error_message = "failure", "E308", "Invalid card number"
                elif outcome == "success" and otp != TEST_OTP:
                    outcome, payment.error, payment.error_message = "failure", "E1105", "Incorrect OTP"
            if outcome == "success":
                payment.status, payment.unmappedstatus = "success", "captured"
                payment.error, payment.error_message = "E000", "No Error"
                payment.field9 = "Transaction Completed Successfully"
                payment.bank_ref_num = self._new_id(12)
                payment.capture_request_id = self._request_id()
                billing = payment.fields.get("_si_billing_amount")
                if payment.fields.get("si") == "1" and billing:
                    self._open_mandate(payment, Decimal(str(billing)))
            elif outcome == "cancel":
                payment.status, payment.unmappedstatus = "failure", "userCancelled"
                payment.error, payment.error_message = "E1605", "Transaction cancelled by the customer"
                payment.field9 = "Cancelled by user"
            elif outcome == "pending":
                payment.status, payment.unmappedstatus = "pending", "pending"
                payment.field9 = "Awaiting confirmation from the bank"
            elif outcome == "failure":
                payment.status, payment.unmappedstatus = "failure", "failed"
                if payment.error == "E000":
                    payment.error, payment.error_message = "E500", "Bank declined the transaction"
                payment.field9 = payment.error_message
            else:
                raise SimulatorRequestError(
                    f"unknown outcome {outcome!r}: use success, failure, cancel or pending"
                )
            return payment.status

    def _open_mandate(self, payment: Payment, billing_amount: Decimal) -> None:
        details = json.loads(payment.fields.get("si_details") or "{}")
        self.mandates[payment.mihpayid] = Mandate(
            auth_payu_id=payment.mihpayid,
            txnid=payment.txnid,
            billing_amount=billing_amount,
            billing_cycle=str(details.get("billingCycle", "")).upper(),
            billing_currency=str(details.get("billingCurrency", "INR")),
            start=str(details.get("paymentStartDate", "")),
            end=details.get("paymentEndDate"),
        )

    def response_fields(self, payment: Payment) -> dict[str, str]:
        """What PayU posts to surl/furl and to the payment webhook, with its reverse hash."""
        f = payment.fields
        out: dict[str, str] = {
            "mihpayid": payment.mihpayid,
            "mode": payment.mode,
            "status": payment.status,
            "unmappedstatus": payment.unmappedstatus,
            "key": self.key,
            "txnid": payment.txnid,
            "amount": two_decimals(payment.amount),
            "discount": "0.00",
            "net_amount_debit": two_decimals(payment.amount + payment.additional_charges)
            if payment.status == "success"
            else "0",
            "addedon": payment.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        }
        out.update({name: f.get(name, "") for name in ECHOED})
        out.update({f"field{i}": "" for i in range(1, 10)})
        out["field9"] = payment.field9
        out.update(
            {
                "card_no": payment.card_no,
                "bankcode": payment.bankcode,
                "PG_TYPE": f"{payment.mode}-PG" if payment.mode else "",
                "bank_ref_num": payment.bank_ref_num,
                "error": payment.error,
                "error_Message": payment.error_message,
                "payment_source": "payu",
            }
        )
        if f.get("offer_key"):
            out["offer_key"] = f["offer_key"]
            out["offer_availed"] = "0"
        if payment.additional_charges > 0:
            out["additionalCharges"] = two_decimals(payment.additional_charges)
        out["hash"] = reverse_hash(self.salt, out)
        return out

    def redirect_url(self, payment: Payment) -> str:
        f = payment.fields
        if payment.status == "success":
            return f["surl"]
        if payment.unmappedstatus == "userCancelled" and f.get("curl"):
            return f["curl"]
        return f["furl"]

    def pending_checkout(self, txnid: str) -> Payment:
        with self.lock:
            payment = self.latest(txnid)
            if payment is None:
                raise SimulatorRequestError(f"no checkout for txnid {txnid!r}: POST /_payment first", 404)
            return payment

    # -- refunds -------------------------------------------------------------------------------

    def refund(self, mihpayid: str, token: str, amount_text: str, callback_url: str | None) -> dict[str, Any]:
        with self.lock:
            payment = self.payments.get(mihpayid)
            if payment is None or payment.status != "success":
                return {
                    "status": 0,
                    "msg": "Refund FAILURE - Transaction not found",
                    "error_code": 116,
                    "mihpayid": mihpayid,
                }
            if not token:
                return {"status": 0, "msg": "Token is empty", "error_code": 105, "mihpayid": mihpayid}
            if len(token) > 23:
                return {
                    "status": 0,
                    "msg": "Refund FAILURE - Token is too long",
                    "error_code": 105,
                    "mihpayid": mihpayid,
                }
            if any(r.token == token for r in payment.refunds):
                return {
                    "status": 0,
                    "msg": "Refund FAILURE - Request for token already exists",
                    "error_code": 106,
                    "mihpayid": mihpayid,
                }
            try:
                amount = Decimal(amount_text.strip())
            except InvalidOperation:
                amount = Decimal("0")
            if (
                not amount.is_finite()
                or amount <= 0
                or amount != amount.quantize(CENT)
                or payment.refunded() + amount > payment.amount
            ):
                return {
                    "status": 0,
                    "msg": "Refund FAILURE - Invalid amount",
                    "error_code": 105,
                    "mihpayid": mihpayid,
                }
            now = self.now()
            if any(
                r.amount == amount and r.status != "failure" and now - r.created_at < SAME_AMOUNT_WINDOW
                for r in payment.refunds
            ):
                return {
                    "status": 0,
                    "msg": "Refund FAILURE - Same amount refund requested within 5 minutes",
                    "error_code": 214,
                    "mihpayid": mihpayid,
                }
            refund = Refund(
                request_id=self._request_id(),
                mihpayid=mihpayid,
                txnid=payment.txnid,
                token=token,
                amount=amount,
                created_at=now,
                callback_url=callback_url,
                bank_ref_num=self._new_id(12),
            )
            payment.refunds.append(refund)
            return {
                "status": 1,
                "msg": "Refund Request Queued",
                "request_id": refund.request_id,
                "bank_ref_num": refund.bank_ref_num,
                "mihpayid": int(mihpayid),
                "error_code": 102,
            }

    def all_refunds(self) -> list[Refund]:
        return [r for p in self.payments.values() for r in p.refunds]

    def settle_refunds(
        self, *, status: str = "success", request_id: str | None = None, due_only: bool = False
    ) -> list[Refund]:
        """Move queued refunds to a final state (all, one, or those older than the settle delay)."""
        if status not in ("success", "failure"):
            raise SimulatorRequestError("status must be success or failure")
        with self.lock:
            now = self.now()
            settled = []
            for refund in self.all_refunds():
                if refund.status != "queued" or (request_id is not None and refund.request_id != request_id):
                    continue
                if due_only and (
                    self.refund_settle_seconds is None
                    or (now - refund.created_at).total_seconds() < self.refund_settle_seconds
                ):
                    continue
                refund.status = status
                refund.settled_at = now
                if status == "success":
                    refund.bank_arn = self._new_id(12)
                settled.append(refund)
            if request_id is not None and not settled and not due_only:
                raise SimulatorRequestError(f"no queued refund with request_id {request_id}", 404)
            return settled

    # -- standing instructions -----------------------------------------------------------------

    def pre_debit(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        p = {k.lower(): v for k, v in payload.items()}
        base = {"action": "MANDATE_PRE_DEBIT"}
        with self.lock:
            mandate = self.mandates.get(str(p.get("authpayuid") or ""))
            if mandate is None or mandate.status != "active":
                return {"status": 0, **base, "message": "Mandate is not active"}
            request_id = str(p.get("requestid") or "").strip()
            if not request_id:
                return {"status": 0, **base, "message": "requestId is missing"}
            if any(n["requestId"] == request_id for n in mandate.notices):
                return {"status": 0, **base, "message": "Duplicate requestId"}
            try:
                debit_date = date.fromisoformat(str(p.get("debitdate") or ""))
                amount = Decimal(str(p.get("amount") or ""))
            except (ValueError, InvalidOperation):
                return {"status": 0, **base, "message": "Invalid debitDate or amount"}
            if amount <= 0:
                return {"status": 0, **base, "message": "Invalid amount"}
            if amount > mandate.billing_amount:
                return {
                    "status": 0,
                    **base,
                    "message": "Amount exceeds the mandate's billing amount of "
                    + two_decimals(mandate.billing_amount),
                }
            self._invoice_seq += 1
            invoice = f"INV{self._invoice_seq}"
            mandate.notices.append(
                {
                    "requestId": request_id,
                    "debitDate": debit_date.isoformat(),
                    "amount": amount,
                    "invoiceId": invoice,
                    "used": False,
                }
            )
            return {"status": 1, **base, "message": "Request Processed Successfully", "invoiceId": invoice}

    def debit(
        self, payload: Mapping[str, Any], *, decline: bool = False
    ) -> tuple[dict[str, Any], Payment | None]:
        p = {k.lower(): v for k, v in payload.items()}
        with self.lock:
            auth = str(p.get("authpayuid") or "")
            mandate = self.mandates.get(auth)
            txnid = str(p.get("txnid") or "").strip()
            if mandate is None or mandate.status != "active":
                return {"status": 0, "message": "Mandate is not active"}, None
            if not txnid or len(txnid) > 25:
                return {"status": 0, "message": "Invalid txnid"}, None
            if self.succeeded(txnid) is not None:
                return {"status": 0, "message": "Duplicate transaction ID"}, None
            try:
                amount = Decimal(str(p.get("amount") or ""))
            except InvalidOperation:
                amount = Decimal("0")
            if not amount.is_finite() or amount <= 0:
                return {"status": 0, "message": "Invalid amount"}, None
            if amount > mandate.billing_amount:
                return {
                    "status": 0,
                    "message": f"Amount {two_decimals(amount)} exceeds the mandate's billing amount "
                    f"{two_decimals(mandate.billing_amount)}; the customer must authorise a new mandate",
                }, None
            notice = next((n for n in mandate.notices if not n["used"] and n["amount"] >= amount), None)
            if notice is None:
                return {"status": 0, "message": "Pre-debit notification not sent for this amount"}, None
            notice["used"] = True
            consent = self.payments[auth]
            fields = {
                k: v
                for k, v in consent.fields.items()
                if not k.startswith("_") and k not in ("si", "si_details", "hash")
            }
            fields.update({"txnid": txnid, "amount": two_decimals(amount)})
            for name in ("firstname", "email", "phone", *(f"udf{i}" for i in range(1, 6))):
                if p.get(name):
                    fields[name] = str(p[name])
            payment = Payment(
                mihpayid=self._new_id(18),
                txnid=txnid,
                amount=amount,
                fields=fields,
                created_at=self.now(),
                mode=consent.mode,
                bankcode=consent.bankcode,
                card_no=consent.card_no,
                auth_payu_id=auth,
            )
            self.payments[payment.mihpayid] = payment
            self.attempts.setdefault(txnid, []).append(payment.mihpayid)
            if decline:
                payment.status, payment.unmappedstatus = "failure", "failed"
                payment.error, payment.error_message = "E1402", "Insufficient funds"
                payment.field9 = "Insufficient funds"
            else:
                payment.status, payment.unmappedstatus = "success", "captured"
                payment.bank_ref_num = self._new_id(12)
                payment.capture_request_id = self._request_id()
                payment.field9 = "Transaction Completed Successfully"
            entry = {
                "transactionId": txnid,
                "payuId": payment.mihpayid,
                "status": "captured" if payment.status == "success" else "failed",
                "amount": two_decimals(amount),
                "field9": payment.field9,
                "errorCode": payment.error,
                "errorMessage": payment.error_message,
                "bankReferenceNumber": payment.bank_ref_num,
            }
            return {
                "status": 1,
                "message": "Transaction Processed successfully",
                "details": {txnid: entry},
            }, payment

    # -- test controls -------------------------------------------------------------------------

    def fail_next(
        self,
        mode: str,
        count: int = 1,
        command: str | None = None,
        delay: float = 0.0,
        code: int | None = None,
    ) -> None:
        if mode not in ("502", "503", "504", "drop", "timeout", "lost", "decline", "refuse"):
            raise SimulatorRequestError("mode must be 502, 503, 504, drop, timeout, lost, decline or refuse")
        if not 1 <= count <= 100:
            raise SimulatorRequestError("count must be between 1 and 100")
        if mode == "refuse" and command is not None and command not in REFUSABLE:
            raise SimulatorRequestError(f"refuse applies to {' and '.join(REFUSABLE)}")
        if mode == "refuse" and command != "pre_debit_SI" and code is not None and code not in REFUSALS:
            raise SimulatorRequestError(f"code must be one of {', '.join(map(str, REFUSALS))}")
        with self.lock:
            self.fail_plans.extend(FailPlan(mode, command, delay, code) for _ in range(count))

    def take_fail_plan(self, command: str) -> FailPlan | None:
        with self.lock:
            for i, plan in enumerate(self.fail_plans):
                if plan.command not in (None, command):
                    continue
                if plan.mode == "decline" and command != "si_transaction":
                    continue
                if plan.mode == "refuse" and command not in REFUSABLE:
                    continue
                return self.fail_plans.pop(i)
            return None

    @staticmethod
    def refusal(plan: FailPlan, command: str, form: Mapping[str, str]) -> dict[str, Any]:
        """PayU's answer to a call it refuses (test control `refuse`); nothing is done."""
        if command == "pre_debit_SI":
            return {
                "status": 0,
                "action": "MANDATE_PRE_DEBIT",
                "message": "Pre-debit notification failed at bank",
            }
        code = plan.code if plan.code is not None else 105
        return {"status": 0, "msg": REFUSALS[code], "error_code": code, "mihpayid": form.get("var1", "")}

    def record(self, delivery: Delivery, result: str, status_code: int | None) -> None:
        with self.lock:
            self.deliveries.append(
                {
                    "kind": delivery.kind,
                    "url": delivery.url,
                    "payload": delivery.payload,
                    "result": result,
                    "status_code": status_code,
                    "at": self.now().isoformat(),
                }
            )

    def snapshot(self) -> dict[str, Any]:
        """Everything the simulator holds, as JSON (for tests and the index page)."""
        with self.lock:
            return {
                "now": self.now().isoformat(),
                "payments": [
                    {
                        "txnid": p.txnid,
                        "mihpayid": p.mihpayid,
                        "amount": two_decimals(p.amount),
                        "status": p.status,
                        "unmappedstatus": p.unmappedstatus,
                        "mandate_debit_of": p.auth_payu_id,
                        "refunds": [r.action() for r in p.refunds],
                    }
                    for p in self.payments.values()
                ],
                "mandates": [
                    {
                        "auth_payu_id": m.auth_payu_id,
                        "txnid": m.txnid,
                        "billing_amount": two_decimals(m.billing_amount),
                        "billing_cycle": m.billing_cycle,
                        "status": m.status,
                        "pre_debits": [{**n, "amount": two_decimals(n["amount"])} for n in m.notices],
                    }
                    for m in self.mandates.values()
                ],
                "deliveries": list(self.deliveries),
                "pending_failures": [plan.mode for plan in self.fail_plans],
            }

    def reset(self) -> None:
        with self.lock:
            self.payments.clear()
            self.attempts.clear()
            self.mandates.clear()
            self.deliveries.clear()
            self.fail_plans.clear()
            self.offset = timedelta(0)
