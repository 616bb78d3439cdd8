"""What PayU's merchant API answers, as typed values with exact amounts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

# check_action_status and getAllRefundsFromTxnIds spell refund states in either case; these are the
# upper-case forms Tariff keeps.
REFUND_STATES = ("QUEUED", "SUCCESS", "FAILURE", "IN PROGRESS", "REQUESTED", "PENDING")
FINAL_REFUND_STATES = frozenset({"SUCCESS", "FAILURE"})


def money(value: Any) -> Decimal | None:
    """PayU's amount strings (``"10.00"``, ``10``, ``""``, ``null``) as Decimal, or None when absent."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip().replace(",", "")
    if not text:
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        return None
    return amount if amount.is_finite() else None


def text(value: Any) -> str | None:
    if value is None:
        return None
    out = str(value).strip()
    return out or None


@dataclass(frozen=True, slots=True)
class Transaction:
    """One payment attempt as PayU reports it (verify_payment, check_payment)."""

    txnid: str
    mihpayid: str | None
    status: str  # success | failure | pending | not found (lower case)
    unmappedstatus: str | None = None
    amount: Decimal | None = None
    transaction_amount: Decimal | None = None
    additional_charges: Decimal = Decimal("0")
    discount: Decimal = Decimal("0")
    net_amount_debit: Decimal | None = None
    mode: str | None = None
    bank_ref_num: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    field9: str | None = None
    addedon: str | None = None
    productinfo: str | None = None
    udf: tuple[str, str, str, str, str] = ("", "", "", "", "")
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def found(self) -> bool:
        return self.status != "not found"

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @classmethod
    def from_details(cls, txnid: str, details: Mapping[str, Any]) -> Transaction:
        mihpayid = text(details.get("mihpayid"))
        status = (text(details.get("status")) or "").lower()
        if mihpayid is None or mihpayid.lower() == "not found" or status in ("", "not found"):
            return cls(txnid=txnid, mihpayid=None, status="not found", raw=dict(details))
        udf = tuple(str(details.get(f"udf{i}") or "") for i in range(1, 6))
        return cls(
            txnid=text(details.get("txnid")) or txnid,
            mihpayid=mihpayid,
            status=status,
            unmappedstatus=text(details.get("unmappedstatus")),
            amount=money(details.get("amt", details.get("amount"))),
            transaction_amount=money(details.get("transaction_amount")),
            additional_charges=money(details.get("additional_charges")) or Decimal("0"),
            discount=money(details.get("disc", details.get("discount"))) or Decimal("0"),
            net_amount_debit=money(details.get("net_amount_debit")),
            mode=text(details.get("mode")),
            bank_ref_num=text(details.get("bank_ref_num")),
            error_code=text(details.get("error_code")),
            error_message=text(details.get("error_Message", details.get("error_message"))),
            field9=text(details.get("field9")),
            addedon=text(details.get("addedon")),
            productinfo=text(details.get("productinfo")),
            udf=(udf[0], udf[1], udf[2], udf[3], udf[4]),
            raw=dict(details),
        )


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """PayU accepted a refund request (cancel_refund_transaction); its outcome comes later."""

    request_id: str
    mihpayid: str
    token: str
    amount: Decimal
    message: str
    error_code: str | None = None
    bank_ref_num: str | None = None
    # True when an earlier attempt of this same call had already reached PayU and this is that refund.
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class RefundStatus:
    """One action on a payment (a refund, or the capture itself) as PayU reports it."""

    request_id: str
    mihpayid: str | None
    status: str  # upper case: QUEUED, SUCCESS, FAILURE, IN PROGRESS, REQUESTED, PENDING, …
    amount: Decimal | None
    action: str = "refund"
    token: str | None = None
    bank_ref_num: str | None = None
    bank_arn: str | None = None
    refund_mode: str | None = None
    created_at: str | None = None
    settled_at: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def final(self) -> bool:
        return self.status in FINAL_REFUND_STATES

    @classmethod
    def from_action(cls, details: Mapping[str, Any]) -> RefundStatus:
        return cls(
            request_id=str(details.get("request_id") or ""),
            mihpayid=text(details.get("mihpayid")),
            status=(text(details.get("status")) or "").upper(),
            amount=money(details.get("amt", details.get("amount"))),
            action=(text(details.get("action")) or "refund").lower(),
            token=text(details.get("token")),
            bank_ref_num=text(details.get("bank_ref_num")),
            bank_arn=text(details.get("bank_arn")),
            refund_mode=text(details.get("refund_mode")),
            created_at=text(details.get("addedon", details.get("created_at"))),
            settled_at=text(details.get("value_date")),
            raw=dict(details),
        )

    @classmethod
    def from_refund_details(cls, details: Mapping[str, Any]) -> RefundStatus:
        """An entry of getAllRefundsFromTxnIds' ``Refund Details`` (PayuID, RequestID, RefundToken, …)."""
        return cls(
            request_id=str(details.get("RequestID") or ""),
            mihpayid=text(details.get("PayuID")),
            status=(text(details.get("Status")) or "").upper(),
            amount=money(details.get("Amount")),
            action="refund",
            token=text(details.get("RefundToken")),
            bank_ref_num=text(details.get("bank_ref_no")),
            bank_arn=text(details.get("bank_arn")),
            created_at=text(details.get("RefundCreationDate")),
            settled_at=text(details.get("success_at")),
            raw=dict(details),
        )


@dataclass(frozen=True, slots=True)
class PreDebitNotice:
    """PayU's answer to pre_debit_SI: the customer is told about an upcoming mandate debit."""

    request_id: str
    invoice_id: str | None
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MandateDebit:
    """PayU's answer to si_transaction: a debit on a standing-instruction mandate."""

    txnid: str
    mihpayid: str | None
    status: str  # success | failure | pending
    amount: Decimal | None
    message: str
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def succeeded(self) -> bool:
        return self.status == "success"
