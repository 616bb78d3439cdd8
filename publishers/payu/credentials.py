"""PayU merchant credentials, read from environment variables only and kept out of every message.

The key and the salt are secrets by Tariff's rules: they never appear in ``repr``/``str``, in error text
(``PayUError`` runs its message through ``redact``) or in log records (``RedactingFilter``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

REDACTED = "***"

_known_lock = threading.Lock()
_known_secrets: set[str] = set()


def _remember(*secrets: str) -> None:
    with _known_lock:
        _known_secrets.update(s for s in secrets if s)


def redact(text: str) -> str:
    """``text`` with every key and salt this process has loaded replaced by ``***``."""
    if not text:
        return text
    with _known_lock:
        secrets = sorted(_known_secrets, key=len, reverse=True)  # longest first: a salt may contain a key
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


@dataclass(frozen=True, slots=True)
class PayUCredentials:
    """A merchant key and salt. ``repr`` and ``str`` show neither."""

    key: str = field(repr=False)
    salt: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.key or not self.salt:
            raise ValueError("a PayU key and salt must both be non-empty")
        _remember(self.key, self.salt)

    def __repr__(self) -> str:
        return f"PayUCredentials(key={REDACTED}, salt={REDACTED})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """``text`` without this key and salt (and any other loaded credentials)."""
        return redact(text.replace(self.salt, REDACTED).replace(self.key, REDACTED))

    @classmethod
    def from_env(
        cls, key_env: str = "PAYU_KEY", salt_env: str = "PAYU_SALT", environ: Mapping[str, str] | None = None
    ) -> PayUCredentials:
        """Read the key and salt from the named environment variables; the error names only the variables."""
        from publishers.payu.errors import PayUConfigError

        env = os.environ if environ is None else environ
        missing = [name for name in (key_env, salt_env) if not env.get(name, "").strip()]
        if missing:
            raise PayUConfigError(
                f"PayU credentials missing: {' and '.join(missing)} not set",
                f"Export {' and '.join(missing)} with this environment's merchant key and salt (PayU "
                "dashboard → Developers → API keys), or point `payu.key_env` / `payu.salt_env` in "
                "tariff.yaml at the variables that hold them.",
                code="credentials_missing",
            )
        return cls(env[key_env].strip(), env[salt_env].strip())


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's message without loaded PayU keys and salts."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        return True


logger = logging.getLogger("tariff.payu")
logger.addFilter(RedactingFilter())
