"""PayU credentials come from named environment variables and never show in output, errors or logs."""

from __future__ import annotations

import logging

import pytest

from publishers.payu.credentials import PayUCredentials, redact
from publishers.payu.errors import PayUConfigError, PayUError

KEY = "Zq7Kp2"
SALT = "sAlT9f3e2d1c0b9a8f7e6d5c4b3a2f1e0d"


def test_loaded_from_the_named_variables() -> None:
    creds = PayUCredentials.from_env("SHOP_KEY", "SHOP_SALT", {"SHOP_KEY": f" {KEY} ", "SHOP_SALT": SALT})
    assert (creds.key, creds.salt) == (KEY, SALT)


def test_repr_and_str_show_neither_secret() -> None:
    creds = PayUCredentials(KEY, SALT)
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert KEY not in shown
        assert SALT not in shown
        assert "***" in shown


def test_missing_variables_name_the_variables_only() -> None:
    with pytest.raises(PayUConfigError) as caught:
        PayUCredentials.from_env("SHOP_KEY", "SHOP_SALT", {"SHOP_KEY": KEY})
    assert "SHOP_SALT" in caught.value.message
    assert "SHOP_KEY" not in caught.value.message
    assert KEY not in caught.value.message + (caught.value.fix or "")


def test_redact_removes_key_and_salt_from_any_text() -> None:
    creds = PayUCredentials(KEY, SALT)
    text = f"hash input {KEY}|txn|{SALT} failed"
    assert creds.redact(text) == "hash input ***|txn|*** failed"
    assert redact(text) == "hash input ***|txn|*** failed"


def test_errors_are_redacted_even_when_built_from_secret_text() -> None:
    PayUCredentials(KEY, SALT)
    error = PayUError(f"bad {KEY}", f"salt was {SALT}", code="x")
    assert KEY not in str(error) and KEY not in error.message
    assert SALT not in (error.fix or "")
    assert error.to_json() == {"message": "bad ***", "fix": "salt was ***", "code": "x"}


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    PayUCredentials(KEY, SALT)
    logger = logging.getLogger("tariff.payu")
    with caplog.at_level(logging.DEBUG, logger="tariff.payu"):
        logger.warning("posting key=%s salt=%s", KEY, SALT)
    assert caplog.records
    assert KEY not in caplog.text
    assert SALT not in caplog.text
    assert "key=*** salt=***" in caplog.text


def test_empty_key_or_salt_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        PayUCredentials("", SALT)
