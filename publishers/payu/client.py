"""PayU's merchant API (``/merchant/postservice.php?form=2``): payment checks, refunds, mandate debits.

Retries: only when PayU was not heard from — a connection error, a timeout or a gateway status (502, 503,
504) — with exponential backoff. A business answer from PayU (``status: 0``, an error code) is never
retried: asking again would get the same answer, or worse, do the same thing twice.

Refunds are safe to retry because each carries the caller's ``token``: PayU refuses a second refund with
a token it has seen (error 106), so a retry after a lost answer can never refund twice. When a refund meets
106 (or 214, "same amount within 5 minutes"), an earlier call with this token may have reached PayU; the
client then looks the refund up by its token and returns it (``recovered=True``) when it is the same refund.

Only PayU's definite refusals of a refund raise a plain ``PayUError``. An answer that does not say whether
PayU acted (an HTTP error status, a body that is not JSON, an unknown error code, a 106 whose refund cannot
be found) raises ``PayUUnclearAnswerError``: the caller must treat the refund as possibly made and resend
the same token later, never ask again under a new one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from publishers.payu.config import API_PATH, PayUConfig
from publishers.payu.credentials import PayUCredentials, logger
from publishers.payu.errors import (
    HASH_FIX,
    REFUND_ERRORS,
    REFUND_SUCCESS_CODES,
    PayUError,
    PayUNetworkError,
)
from publishers.payu.hashes import command_hash
from publishers.payu.models import (
    MandateDebit,
    PreDebitNotice,
    RefundRequest,
    RefundStatus,
    Transaction,
)

RETRY_STATUSES = frozenset({502, 503, 504})
# PayU's refund error codes that mean it made no refund under this token: 105 invalid amount, 116 unknown
# transaction, 214 same amount within 5 minutes (once the token's own refund is known not to exist).
DEFINITE_REFUND_REFUSALS = frozenset({"105", "116", "214"})
MAX_TXNID = 25
MAX_TOKEN = 23
CENT = Decimal("0.01")


def format_amount(amount: Decimal | str | int, what: str = "amount") -> str:
    """A positive amount with at most two decimals, as PayU wants it (``Decimal("10")`` → ``"10.00"``)."""
    try:
        value = Decimal(str(amount))
        # quantize itself fails on amounts too large for two decimals (1e30), like a malformed one
        exact = value.is_finite() and value > 0 and value == value.quantize(CENT)
    except InvalidOperation:
        exact = False
    if not exact:
        raise PayUError(
            f"{what} {amount!s} is not a positive amount with at most two decimals",
            "Pass a Decimal such as Decimal('499.00').",
            code="invalid_amount",
        )
    return f"{value.quantize(CENT)}"


class PayUUnclearAnswerError(PayUError):
    """PayU (or something in front of it) answered, but not whether it acted: treat the call as maybe done."""


def _auth_error(body: Mapping[str, Any]) -> PayUError | None:
    """PayU's answer to a wrong key or hash, whatever the command."""
    msg = str(body.get("msg") or body.get("message") or "")
    lowered = msg.lower()
    if "hash" in lowered and ("invalid" in lowered or "mismatch" in lowered):
        return PayUError(f"PayU refused the request hash ({msg})", HASH_FIX, code="invalid_hash")
    if "key" in lowered and "invalid" in lowered:
        return PayUError(f"PayU does not know this merchant key ({msg})", HASH_FIX, code="invalid_key")
    return None


def _nested_actions(node: Any, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """The action records inside check_action_status' ``transaction_details`` (nested by id, twice)."""
    if not isinstance(node, Mapping) or depth > 3:
        return
    if "request_id" in node and ("status" in node or "action" in node):
        yield node
        return
    for value in node.values():
        yield from _nested_actions(value, depth + 1)


def _refund_refusal(
    mihpayid: str, value: str, code: str, message: str, earlier: RefundStatus | None
) -> PayUError:
    """The error for a refund PayU did not queue: definite when PayU refused it, else unclear."""
    unknown = f"PayU answered error code {code or '(none)'} ({message or 'no reason given'})"
    what, fix = REFUND_ERRORS.get(code, (unknown, ""))
    detail = f" ({message})" if message and code in REFUND_ERRORS else ""
    text = f"refund of {value} on payment {mihpayid}: {what}{detail}"
    # A 106 whose token PayU shows for another amount is a reused token: this refund was not made.
    reused = code == "106" and earlier is not None and earlier.amount is not None
    if code in DEFINITE_REFUND_REFUSALS or reused:
        return PayUError(text, fix or None, code=code)
    return PayUUnclearAnswerError(
        f"{text}; PayU's answer does not say whether it made the refund",
        "Resend the same token later (PayU never refunds a token twice) or look it up by token.",
        code=code or "refund_unclear",
    )


class PayUClient:
    """A client for one PayU merchant account at ``api_url`` (e.g. https://info.payu.in)."""

    def __init__(
        self,
        api_url: str,
        credentials: PayUCredentials,
        timeout: float = 10,
        retries: int = 3,
        session: requests.Session | None = None,
        *,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be zero or more")
        self.api_url = api_url.rstrip("/")
        self.endpoint = self.api_url + API_PATH
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.session = session or requests.Session()
        self.backoff = backoff
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"PayUClient({self.api_url!r})"

    # -- transport -------------------------------------------------------------------------------

    def call(self, command: str, *variables: str) -> dict[str, Any]:
        """POST one command and return PayU's JSON object. Retries network failures only."""
        key = self.credentials.key
        var1 = variables[0] if variables else ""
        data = {
            "key": key,
            "command": command,
            "hash": command_hash(key, command, var1, self.credentials.salt),
        }
        for i, value in enumerate(variables, start=1):
            data[f"var{i}"] = value
        attempts = self.retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            try:
                response = self.session.post(
                    self.endpoint, data=data, timeout=self.timeout, headers={"Accept": "application/json"}
                )
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"could not connect ({type(exc).__name__})"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return self._decode(command, response)
                problem = f"HTTP {response.status_code}"
            logger.warning("PayU %s attempt %d of %d failed: %s", command, attempt, attempts, problem)
            if attempt < attempts:
                self._sleep(self.backoff * 2 ** (attempt - 1))
        raise PayUNetworkError(
            f"PayU at {self.api_url} did not answer {command}: {problem} (after {attempts} attempt(s))",
            "Check the network and the `payu.api_url` of this environment, then run the command again; "
            "it is safe to repeat.",
            code="network",
        )

    def _decode(self, command: str, response: requests.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise PayUUnclearAnswerError(
                f"PayU answered {command} with HTTP {response.status_code}",
                "Check `payu.api_url` (production uses https://info.payu.in for the merchant API).",
                code=f"http_{response.status_code}",
            )
        try:
            body = response.json()
        except ValueError:
            snippet = response.text[:120].replace("\n", " ")
            raise PayUUnclearAnswerError(
                f"PayU answered {command} with something other than JSON: {snippet!r}",
                "Check that `payu.api_url` points at PayU's merchant API host.",
                code="bad_response",
            ) from None
        if not isinstance(body, dict):
            raise PayUUnclearAnswerError(f"PayU answered {command} with unexpected JSON", code="bad_response")
        auth = _auth_error(body)
        if auth is not None and str(body.get("status")) != "1":
            raise auth
        return body

    # -- payments --------------------------------------------------------------------------------

    def verify_payment(self, txnids: Sequence[str]) -> dict[str, Transaction]:
        """The state of each merchant txnid; a txnid PayU never saw has ``status == "not found"``."""
        wanted = [t.strip() for t in txnids if t and t.strip()]
        if not wanted:
            raise PayUError("verify_payment needs at least one txnid", code="invalid_txnid")
        body = self.call("verify_payment", "|".join(wanted))
        details = body.get("transaction_details")
        if not isinstance(details, Mapping):
            raise PayUError(
                f"PayU could not verify {', '.join(wanted)}: {body.get('msg')}", code="verify_failed"
            )
        out: dict[str, Transaction] = {}
        for txnid in wanted:
            entry = details.get(txnid)
            out[txnid] = Transaction.from_details(txnid, entry if isinstance(entry, Mapping) else {})
        return out

    def check_payment(self, mihpayid: str) -> Transaction:
        """The state of one payment by PayU's id."""
        body = self.call("check_payment", mihpayid)
        details = body.get("transaction_details")
        if str(body.get("status")) != "1" or not isinstance(details, Mapping):
            raise PayUError(
                f"PayU has no payment {mihpayid}: {body.get('msg')}",
                "Check the mihpayid and that the credentials belong to the payment's PayU environment.",
                code="not_found",
            )
        if mihpayid in details and isinstance(details[mihpayid], Mapping):
            details = details[mihpayid]
        return Transaction.from_details(str(details.get("txnid") or ""), details)

    # -- refunds ---------------------------------------------------------------------------------

    def cancel_refund_transaction(
        self, mihpayid: str, token: str, amount: Decimal, callback_url: str | None = None
    ) -> RefundRequest:
        """Ask PayU to refund ``amount`` (all or part) of a payment. ``token`` makes the call idempotent.

        Use a token that you store with the refund before calling (≤ 23 characters, unique per refund).
        """
        token = token.strip()
        if not token or len(token) > MAX_TOKEN or "|" in token:
            raise PayUError(
                f"refund token {token!r} must be 1 to {MAX_TOKEN} characters without '|'",
                "Use a short unique id stored with the refund, e.g. 'rf' + 16 hex characters.",
                code="invalid_token",
            )
        value = format_amount(amount, "refund amount")
        variables = [mihpayid, token, value]
        if callback_url:
            variables += ["", callback_url]
        body = self.call("cancel_refund_transaction", *variables)
        code = str(body.get("error_code") or "").strip()
        message = str(body.get("msg") or "")
        if str(body.get("status")) == "1" and (not code or code in REFUND_SUCCESS_CODES):
            return RefundRequest(
                request_id=str(body.get("request_id") or ""),
                mihpayid=str(body.get("mihpayid") or mihpayid),
                token=token,
                amount=Decimal(value),
                message=message,
                error_code=code or None,
                bank_ref_num=str(body.get("bank_ref_num") or "") or None,
            )
        earlier = self.refund_by_token(mihpayid, token) if code in ("106", "214") else None
        if earlier is not None and earlier.amount == Decimal(value):
            return RefundRequest(
                request_id=earlier.request_id,
                mihpayid=mihpayid,
                token=token,
                amount=Decimal(value),
                message=f"refund already queued by an earlier attempt ({earlier.status})",
                error_code=code,
                bank_ref_num=earlier.bank_ref_num,
                recovered=True,
            )
        raise _refund_refusal(mihpayid, value, code, message, earlier)

    def check_action_status(self, request_id: str) -> list[RefundStatus]:
        """The state of one refund request by its request_id (empty when PayU has none)."""
        body = self.call("check_action_status", request_id)
        return [RefundStatus.from_action(a) for a in _nested_actions(body.get("transaction_details"))]

    def check_action_status_by_mihpayid(self, mihpayid: str) -> list[RefundStatus]:
        """Every action on a payment: its capture and each refund (``action`` says which)."""
        body = self.call("check_action_status", mihpayid, "payuid")
        return [RefundStatus.from_action(a) for a in _nested_actions(body.get("transaction_details"))]

    def refunds_for_payment(self, mihpayid: str) -> list[RefundStatus]:
        return [a for a in self.check_action_status_by_mihpayid(mihpayid) if a.action == "refund"]

    def refund_by_token(self, mihpayid: str, token: str) -> RefundStatus | None:
        """The refund made on a payment with this token, if PayU has one."""
        for refund in self.refunds_for_payment(mihpayid):
            if refund.token == token:
                return refund
        return None

    def get_all_refunds_from_txn_ids(self, txnid: str) -> list[RefundStatus]:
        """Every refund of a payment, by the merchant txnid."""
        body = self.call("getAllRefundsFromTxnIds", txnid)
        details = body.get("Refund Details")
        out: list[RefundStatus] = []
        if isinstance(details, Mapping):
            for entries in details.values():
                if isinstance(entries, Sequence) and not isinstance(entries, str):
                    out.extend(RefundStatus.from_refund_details(e) for e in entries if isinstance(e, Mapping))
        return out

    # -- standing instructions (recurring mandates) ----------------------------------------------

    def pre_debit_si(
        self,
        auth_payu_id: str,
        request_id: str,
        debit_date: date | str,
        amount: Decimal,
        invoice_display_number: str | None = None,
    ) -> PreDebitNotice:
        """Tell the customer about an upcoming mandate debit (needed before each ``si_transaction``)."""
        payload: dict[str, str] = {
            "authPayuId": auth_payu_id,
            "requestId": request_id,
            "debitDate": debit_date.isoformat() if isinstance(debit_date, date) else debit_date,
            "amount": format_amount(amount),
        }
        if invoice_display_number:
            payload["invoiceDisplayNumber"] = invoice_display_number
        body = self.call("pre_debit_SI", json.dumps(payload, separators=(",", ":")))
        message = str(body.get("message") or body.get("msg") or "")
        if str(body.get("status")) != "1":
            raise PayUError(
                f"PayU refused the pre-debit notice for mandate {auth_payu_id}: {message}",
                "Check that the mandate is active and the amount is within its billing amount; a higher "
                "price needs a new mandate from the customer.",
                # A repeated requestId means an earlier attempt of this notice reached PayU.
                code="duplicate_request" if "duplicate" in message.lower() else str(body.get("status")),
            )
        return PreDebitNotice(
            request_id, str(body.get("invoiceId") or "").strip() or None, message, dict(body)
        )

    def si_transaction(
        self,
        auth_payu_id: str,
        txnid: str,
        amount: Decimal,
        *,
        firstname: str = "",
        email: str = "",
        phone: str = "",
        udf: Mapping[str, str] | None = None,
    ) -> MandateDebit:
        """Debit a mandate (after a pre-debit notice). A refusal comes back as ``status == "failure"``."""
        if not txnid or len(txnid) > MAX_TXNID:
            raise PayUError(f"txnid {txnid!r} must be 1 to {MAX_TXNID} characters", code="invalid_txnid")
        payload: dict[str, str] = {
            "authpayuid": auth_payu_id,
            "amount": format_amount(amount),
            "txnid": txnid,
        }
        for name, value in (("firstname", firstname), ("email", email), ("phone", phone)):
            if value:
                payload[name] = value
        payload.update(udf or {})
        body = self.call("si_transaction", json.dumps(payload, separators=(",", ":")))
        message = str(body.get("message") or body.get("msg") or "")
        details = body.get("details")
        entry = details.get(txnid) if isinstance(details, Mapping) else None
        if str(body.get("status")) != "1" or not isinstance(entry, Mapping):
            raise PayUError(
                f"PayU refused the debit {txnid} on mandate {auth_payu_id}: {message}",
                "Send a pre-debit notice first (pre_debit_SI) and keep the amount within the mandate's "
                "billing amount; a higher price needs a new mandate.",
                code=str(body.get("error_code") or body.get("status")),
            )
        raw_status = str(entry.get("status") or "").lower()
        status = (
            "success"
            if raw_status in ("captured", "success")
            else "failure"
            if raw_status in ("failed", "failure", "bounced")
            else "pending"
        )
        return MandateDebit(
            txnid=txnid,
            mihpayid=str(entry.get("payuId") or entry.get("mihpayid") or "") or None,
            status=status,
            amount=Decimal(str(entry.get("amount"))) if entry.get("amount") else None,
            message=str(entry.get("field9") or message),
            raw=dict(body),
        )


def client_for(config: PayUConfig, environ: Mapping[str, str] | None = None, **options: Any) -> PayUClient:
    """A client for an environment's PayU settings, with the key and salt from its variables."""
    return PayUClient(config.api_url, config.credentials(environ), **options)
