"""PayU's SHA-512 hashes: the request hash, the reverse (response) hash and the merchant-API command hash.

Pure functions over strings: every value is hashed exactly as it is posted (``10`` and ``10.00`` are
different amounts to PayU), joined with ``|`` and encoded as UTF-8; the digest is lowercase hex.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation

# PayU's five "reserved" slots after udf5 are udf6..udf10; they are empty unless a merchant posts them.
UDFS = tuple(f"udf{i}" for i in range(1, 11))
REQUEST_REQUIRED = ("txnid", "amount", "productinfo", "firstname", "email")
REVERSE_REQUIRED = ("status", "txnid", "amount", "productinfo", "firstname", "email", "key")
ADDITIONAL_CHARGES_FIELDS = ("additionalCharges", "additional_charges")


def sha512_hex(text: str) -> str:
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


def request_sequence(key: str, salt: str, fields: Mapping[str, str]) -> list[str]:
    """The values joined for the request hash, in order (the last one is the salt).

    ``key|txnid|amount|productinfo|firstname|email|udf1|…|udf5||||||SALT``; with a non-empty ``si_details``
    (standing-instruction consent) it goes between the reserved slots and the salt.
    """
    missing = [name for name in REQUEST_REQUIRED if not fields.get(name)]
    if missing:
        raise ValueError(f"cannot hash a PayU request without {', '.join(missing)}")
    values = [key, *(fields[name] for name in REQUEST_REQUIRED), *(fields.get(u) or "" for u in UDFS)]
    si_details = fields.get("si_details") or ""
    if si_details:
        values.append(si_details)
    piped = [
        name
        for name, value in zip(("key", *REQUEST_REQUIRED, *UDFS, "si_details"), values, strict=False)
        if "|" in value
    ]
    if piped:
        # A pipe inside a value would let text move between fields without changing the hash.
        raise ValueError(f"PayU fields may not contain '|': {', '.join(piped)}")
    return [*values, salt]


def request_hash(key: str, salt: str, fields: Mapping[str, str]) -> str:
    """The ``hash`` to post to ``/_payment`` for these checkout fields.

    ``fields`` holds the strings exactly as posted: txnid, amount, productinfo, firstname, email,
    udf1..udf5 (missing udfs count as empty) and, for a mandate consent (``si=1``), ``si_details``.
    Raises ValueError when a mandatory field is empty or a hashed value contains ``|``.
    """
    return sha512_hex("|".join(request_sequence(key, salt, fields)))


def additional_charges(fields: Mapping[str, str]) -> str | None:
    """The additional-charges string PayU echoed, when it is present and above zero (either spelling)."""
    for name in ADDITIONAL_CHARGES_FIELDS:
        value = (fields.get(name) or "").strip()
        if not value:
            continue
        try:
            if Decimal(value) > 0:
                return value
        except InvalidOperation:
            return value  # hashed as sent: a malformed value simply fails verification
    return None


def reverse_sequence(salt: str, fields: Mapping[str, str]) -> list[str]:
    """``[additionalCharges|]SALT|status||||||udf5|…|udf1|email|firstname|productinfo|amount|txnid|key``."""
    missing = [name for name in REVERSE_REQUIRED if name not in fields]
    if missing:
        raise ValueError(f"cannot check a PayU response without {', '.join(missing)}")
    values = [
        salt,
        fields["status"],
        *(fields.get(u) or "" for u in reversed(UDFS)),
        fields["email"],
        fields["firstname"],
        fields["productinfo"],
        fields["amount"],
        fields["txnid"],
        fields["key"],
    ]
    charges = additional_charges(fields)
    return [charges, *values] if charges is not None else values


def reverse_hash(salt: str, fields: Mapping[str, str]) -> str:
    """The hash PayU puts on a browser response or payment webhook with these fields.

    Uses the echoed strings (``amount`` as PayU sent it, e.g. ``10.00``); when ``additionalCharges``
    (or ``additional_charges``) is present and above zero it is prefixed to the sequence.
    """
    return sha512_hex("|".join(reverse_sequence(salt, fields)))


def verify_reverse_hash(salt: str, fields: Mapping[str, str]) -> bool:
    """True when ``fields["hash"]`` is PayU's reverse hash of ``fields`` (compared in constant time).

    A response with a missing field or hash is simply not authentic: this returns False, never raises.
    """
    given = fields.get("hash")
    if not isinstance(given, str) or not given:
        return False
    try:
        expected = reverse_hash(salt, fields)
    except (ValueError, TypeError, AttributeError):
        return False
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8"))


def command_hash(key: str, command: str, var1: str, salt: str) -> str:
    """The merchant-API hash ``key|command|var1|SALT`` (only var1, even for commands with var2..varN)."""
    return sha512_hex(f"{key}|{command}|{var1}|{salt}")


def verify_command_hash(key: str, command: str, var1: str, salt: str, given: str) -> bool:
    expected = command_hash(key, command, var1, salt)
    return hmac.compare_digest(expected.encode("ascii"), given.strip().lower().encode("utf-8"))


def masked_sequence(values: Sequence[str], salt: str) -> str:
    """A hashed sequence with the salt replaced, safe to show when a hash does not match."""
    return "|".join("<SALT>" if v == salt else v for v in values)
