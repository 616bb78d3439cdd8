"""PayU errors: a message, a fix and PayU's own error code, with the merchant key and salt never in them."""

from __future__ import annotations


class PayUError(Exception):
    """PayU refused a request or answered something Tariff cannot use. Never retried."""

    def __init__(self, message: str, fix: str | None = None, code: str | None = None) -> None:
        from publishers.payu.credentials import redact

        self.message = redact(message)
        self.fix = redact(fix) if fix else None
        self.code = code
        super().__init__(self.message)

    def to_json(self) -> dict[str, str | None]:
        return {"message": self.message, "fix": self.fix, "code": self.code}


class PayUNetworkError(PayUError):
    """PayU could not be reached or answered with a gateway error, after every retry."""


class PayUConfigError(PayUError):
    """The PayU settings or credentials are missing or wrong before any request is made."""


# PayU's refund error codes (cancel_refund_transaction), as a message and what to do about it.
REFUND_ERRORS: dict[str, tuple[str, str]] = {
    "105": (
        "PayU refused the refund amount",
        "Refund a positive amount with at most two decimals that is no more than what is left to refund "
        "on this payment (its amount minus earlier refunds).",
    ),
    "106": (
        "a refund with this token already exists",
        "Each refund needs its own token; to see the earlier refund, look it up with "
        "check_action_status by mihpayid.",
    ),
    "116": (
        "PayU does not know this transaction",
        "Check the mihpayid, and that the key and salt belong to the same PayU environment (test or "
        "production) as the payment.",
    ),
    "214": (
        "the same amount was refunded on this transaction less than 5 minutes ago",
        "If this is a second refund on purpose, wait 5 minutes; otherwise check the refunds already made "
        "with getAllRefundsFromTxnIds.",
    ),
}

REFUND_SUCCESS_CODES = frozenset({"100", "102"})

HASH_FIX = (
    "Check that the key and salt variables hold this PayU environment's credentials (test keys do not work "
    "in production and the other way round)."
)
