"""PayU hash vectors: each expected digest is SHA-512 of a sequence spelled out by hand from the formula."""

from __future__ import annotations

import hashlib

import pytest

from publishers.payu.hashes import (
    command_hash,
    request_hash,
    reverse_hash,
    verify_command_hash,
    verify_reverse_hash,
)

KEY = "gtKFFx"
SALT = "4R38IvwiV57FwVpsgOvTXBdLE4tHUXFW"


def sha(text: str) -> str:
    return hashlib.sha512(text.encode("utf-8")).hexdigest()


CHECKOUT = {
    "txnid": "PG20261125ab12",
    "amount": "1769.00",
    "productinfo": "PineGenie Pro monthly",
    "firstname": "Asha",
    "email": "asha@example.in",
    "udf1": "pro",
    "udf2": "sub_1",
    "udf3": "ck9x",
    "udf4": "pay_1",
    "udf5": '{"cycle":"monthly"}',
}


def response(**overrides: str) -> dict[str, str]:
    fields = {
        "key": KEY,
        "status": "success",
        "txnid": "PG20261125ab12",
        "amount": "1769.00",
        "productinfo": "PineGenie Pro monthly",
        "firstname": "Asha",
        "email": "asha@example.in",
        "udf1": "pro",
        "udf2": "sub_1",
        "udf3": "ck9x",
        "udf4": "pay_1",
        "udf5": '{"cycle":"monthly"}',
        "mihpayid": "403993715521937565",
    }
    fields.update(overrides)
    return fields


def test_published_example_from_payu_integration_guide() -> None:
    # PayU's integration guide: udf2 and udf4 posted, udf1/3/5 not, amount posted as "10".
    fields = {
        "txnid": "12345",
        "amount": "10",
        "productinfo": "Shopping",
        "firstname": "Test",
        "email": "test@test.com",
        "udf2": "abc",
        "udf4": "15",
    }
    assert request_hash("C0Dr8m", "3sf0jURk", fields) == (
        "ffcdbf04fa5beefdcc2dd476c18bc410f02b3968e7f4f54e8f43f1e1a310bb32"
        "e3b4dec9305232bb89db5b1d0c009a53bcace6f4bd8ec2f695baf3d43ba730ce"
    )


def test_request_hash_matches_payu_formula() -> None:
    spelled = (
        "gtKFFx|PG20261125ab12|1769.00|PineGenie Pro monthly|Asha|asha@example.in|"
        'pro|sub_1|ck9x|pay_1|{"cycle":"monthly"}'
        "||||||" + SALT
    )
    assert request_hash(KEY, SALT, CHECKOUT) == sha(spelled)
    assert len(request_hash(KEY, SALT, CHECKOUT)) == 128


def test_request_hash_with_empty_udfs_keeps_the_placeholders() -> None:
    fields = {"txnid": "t1", "amount": "10", "productinfo": "p", "firstname": "A", "email": "a@b.in"}
    assert request_hash(KEY, SALT, fields) == sha(f"{KEY}|t1|10|p|A|a@b.in|||||||||||{SALT}")
    # only udf3 set: its place is fixed by the empty ones before it
    expected = sha(f"{KEY}|t1|10|p|A|a@b.in|||x||||||||{SALT}")
    assert request_hash(KEY, SALT, {**fields, "udf3": "x"}) == expected


def test_amount_is_hashed_exactly_as_posted() -> None:
    fields = {"txnid": "t1", "amount": "10", "productinfo": "p", "firstname": "A", "email": "a@b.in"}
    assert request_hash(KEY, SALT, fields) != request_hash(KEY, SALT, {**fields, "amount": "10.00"})
    assert request_hash(KEY, SALT, {**fields, "amount": "10.00"}) == sha(
        f"{KEY}|t1|10.00|p|A|a@b.in|||||||||||{SALT}"
    )


def test_si_details_goes_between_reserved_slots_and_salt() -> None:
    si = '{"billingAmount":"1769.00","billingCurrency":"INR","billingCycle":"MONTHLY"}'
    fields = {"txnid": "t1", "amount": "1.00", "productinfo": "p", "firstname": "A", "email": "a@b.in"}
    assert request_hash(KEY, SALT, {**fields, "si_details": si}) == sha(
        f"{KEY}|t1|1.00|p|A|a@b.in|||||||||||{si}|{SALT}"
    )


def test_request_hash_is_utf8() -> None:
    fields = {"txnid": "t1", "amount": "10.00", "productinfo": "प्रो योजना"}
    fields |= {"firstname": "Aśha", "email": "a@b.in"}
    assert (
        request_hash(KEY, SALT, fields)
        == hashlib.sha512(f"{KEY}|t1|10.00|प्रो योजना|Aśha|a@b.in|||||||||||{SALT}".encode()).hexdigest()
    )


def test_pipes_in_values_are_refused_because_they_make_the_hash_ambiguous() -> None:
    base = {"txnid": "t1", "amount": "10", "productinfo": "p", "firstname": "A", "email": "a@b.in"}
    with pytest.raises(ValueError, match="udf1"):
        request_hash(KEY, SALT, {**base, "udf1": "a|b"})


def test_missing_mandatory_field_is_refused() -> None:
    with pytest.raises(ValueError, match="amount"):
        request_hash(KEY, SALT, {"txnid": "t1", "productinfo": "p", "firstname": "A", "email": "a@b.in"})


def test_reverse_hash_matches_payu_formula() -> None:
    spelled = (
        f"{SALT}|success||||||"
        '{"cycle":"monthly"}|pay_1|ck9x|sub_1|pro|'
        "asha@example.in|Asha|PineGenie Pro monthly|1769.00|PG20261125ab12|" + KEY
    )
    assert reverse_hash(SALT, response()) == sha(spelled)


@pytest.mark.parametrize("spelling", ["additionalCharges", "additional_charges"])
def test_reverse_hash_with_additional_charges(spelling: str) -> None:
    fields = response(**{spelling: "35.38"})
    spelled = (
        f"35.38|{SALT}|success||||||"
        '{"cycle":"monthly"}|pay_1|ck9x|sub_1|pro|'
        "asha@example.in|Asha|PineGenie Pro monthly|1769.00|PG20261125ab12|" + KEY
    )
    assert reverse_hash(SALT, fields) == sha(spelled)
    assert verify_reverse_hash(SALT, {**fields, "hash": sha(spelled)})


@pytest.mark.parametrize("zero", ["0", "0.00", ""])
def test_zero_additional_charges_use_the_plain_formula(zero: str) -> None:
    assert reverse_hash(SALT, response(additionalCharges=zero)) == reverse_hash(SALT, response())


def test_verify_accepts_payu_response_and_uppercase_hex() -> None:
    fields = response()
    fields["hash"] = reverse_hash(SALT, fields)
    assert verify_reverse_hash(SALT, fields)
    assert verify_reverse_hash(SALT, {**fields, "hash": fields["hash"].upper()})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "failure"),
        ("amount", "1.00"),
        ("amount", "1769"),  # the stored amount instead of the echoed one
        ("txnid", "PG20261125ab13"),
        ("udf3", "someone-else"),
        ("email", "mallory@example.in"),
        ("additionalCharges", "10.00"),
    ],
)
def test_tampered_response_fails(field: str, value: str) -> None:
    fields = response()
    fields["hash"] = reverse_hash(SALT, fields)
    assert not verify_reverse_hash(SALT, {**fields, field: value})


def test_wrong_salt_missing_hash_or_fields_fail_without_raising() -> None:
    fields = response()
    fields["hash"] = reverse_hash(SALT, fields)
    assert not verify_reverse_hash("another-salt", fields)
    assert not verify_reverse_hash(SALT, response())
    assert not verify_reverse_hash(SALT, {**fields, "hash": ""})
    assert not verify_reverse_hash(SALT, {"hash": fields["hash"]})
    assert not verify_reverse_hash(SALT, {**fields, "hash": "é" * 128})


def test_command_hash_uses_only_var1() -> None:
    assert command_hash(KEY, "verify_payment", "t1|t2", SALT) == sha(f"{KEY}|verify_payment|t1|t2|{SALT}")
    assert command_hash(KEY, "cancel_refund_transaction", "403993715521937565", SALT) == sha(
        f"{KEY}|cancel_refund_transaction|403993715521937565|{SALT}"
    )
    good = command_hash(KEY, "check_payment", "1", SALT)
    assert verify_command_hash(KEY, "check_payment", "1", SALT, good)
    assert not verify_command_hash(KEY, "check_payment", "2", SALT, good)
