"""Hosted checkout priced by Tariff: a pending payment in the database, signed PayU form fields, HTML.

The database prices the item (promotions applied, tax added) and records the pending payment
(`payment_checkout`); this module signs the fields with the merchant salt, which never leaves the process.
The amount posted is exactly the string hashed (`amount_text`, two decimals for INR).

udf1..udf5 carry what the payment is for, so PayU's dashboard and its responses say it too:
udf1 plan or package or bundle id, udf2 billing cycle, udf3 customer id, udf4 Tariff's payment id,
udf5 the promotions applied (comma-separated).

A payment that is also an e-mandate consent (`payment_checkout_mandate`, `tariff payu checkout --mandate`)
posts `si=1`, `api_version=7` and `si_details`, PayU's standing-instruction terms as compact JSON in a fixed
key order; that exact string is hashed between the reserved slots and the salt.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from publishers.payu.config import PayUConfig
from publishers.payu.credentials import PayUCredentials
from publishers.payu.hashes import request_hash


@dataclass(frozen=True, slots=True)
class CheckoutForm:
    """What the browser posts to PayU: the URL and the signed fields."""

    action: str
    fields: dict[str, str]
    payment: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "fields": self.fields, "payment": self.payment}

    def html(self) -> str:
        """A self-contained page that posts the form at once (a button when scripts are off)."""
        inputs = "\n".join(
            f'    <input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in self.fields.items()
        )
        amount = html.escape(f"{self.payment['currency']} {self.payment['amount_text']}")
        return (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Redirecting to PayU</title></head>\n<body>\n"
            f'  <form id="payu" method="post" action="{html.escape(self.action)}">\n{inputs}\n'
            f'    <noscript><button type="submit">Pay {amount} with PayU</button></noscript>\n'
            "  </form>\n  <script>document.getElementById('payu').submit();</script>\n</body></html>\n"
        )


def udfs(payment: dict[str, Any]) -> dict[str, str]:
    item = payment.get("plan_id") or payment.get("package_id") or payment.get("bundle_id") or ""
    return {
        "udf1": str(item),
        "udf2": str(payment.get("cycle") or ""),
        "udf3": str(payment["customer_id"]),
        "udf4": str(payment["id"]),
        "udf5": ",".join(payment.get("promotion_ids") or []),
    }


# The si_details keys PayU reads, in the order Tariff serialises them (the string is hashed as posted).
SI_DETAIL_KEYS = (
    "billingAmount",
    "billingCurrency",
    "billingCycle",
    "billingInterval",
    "paymentStartDate",
    "paymentEndDate",
    "billingRule",
)


def si_details(terms: dict[str, Any]) -> str:
    """The ``si_details`` string of a payment's mandate terms (compact JSON, PayU's keys only)."""
    return json.dumps({k: terms[k] for k in SI_DETAIL_KEYS if k in terms}, separators=(",", ":"))


def form_for(payment: dict[str, Any], config: PayUConfig, credentials: PayUCredentials) -> CheckoutForm:
    """The signed `_payment` form for a pending payment returned by `payment_checkout`.

    Raises ValueError when a field PayU requires is missing (the customer's phone: attributes.phone).
    """
    if not str(payment.get("phone") or "").strip():
        raise ValueError(
            f"customer {payment['customer_id']!r} has no phone number, which PayU checkout requires"
        )
    fields: dict[str, str] = {
        "key": credentials.key,
        "txnid": str(payment["txnid"]),
        "amount": str(payment["amount_text"]),
        "productinfo": str(payment["productinfo"]),
        "firstname": str(payment["firstname"]),
        "email": str(payment["email"]),
        "phone": str(payment.get("phone") or ""),
        "surl": config.success_url or "",
        "furl": config.failure_url or "",
        **udfs(payment),
    }
    terms = payment.get("mandate_terms")
    if terms:
        fields.update({"api_version": "7", "si": "1", "si_details": si_details(terms)})
    fields["hash"] = request_hash(credentials.key, credentials.salt, fields)
    return CheckoutForm(config.payment_url, fields, payment)
