"""Signed JSON webhooks.

Signature scheme (what a receiver checks):

    X-Tariff-Timestamp: <unix seconds when the request was signed>
    X-Tariff-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw request body)>

Recompute the HMAC over the exact bytes received, compare in constant time, and refuse timestamps older than
a few minutes (replays). `Idempotency-Key` is the same on every attempt of one notification: receivers keep
the keys they have processed and acknowledge a repeat without acting on it twice (delivery is at least once).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from compiler.catalog import Channel
from publishers.notify.errors import DeliveryError

SIGNATURE_HEADER = "X-Tariff-Signature"
TIMESTAMP_HEADER = "X-Tariff-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-Tariff-Event"
TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(
    secret: str,
    body: bytes,
    signature: str,
    timestamp: str,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> bool:
    """A receiver's check: the signature matches and the timestamp is fresh."""
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - signed_at) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, signed_at, body), signature)


def _where(url: str) -> str:
    # Never the query string or user info: a URL may carry a token.
    parts = urlsplit(url)
    return f"POST {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def post_event(
    channel: Channel,
    event: Mapping[str, Any],
    key: str,
    *,
    timeout: float,
    environ: Mapping[str, str],
) -> int:
    """POST the event as JSON; returns the HTTP status of a 2xx answer, raises DeliveryError otherwise."""
    url = str(channel.settings["url"])
    where = _where(url)
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Tariff-Notify/1",
        IDEMPOTENCY_HEADER: key,
        EVENT_HEADER: str(event.get("kind", "")),
    }
    secret_env = channel.settings.get("secret_env")
    if secret_env:
        secret = environ.get(str(secret_env))
        if not secret:
            raise DeliveryError(f"{where}: environment variable {secret_env} (the signing secret) is not set")
        timestamp = int(time.time())
        headers[TIMESTAMP_HEADER] = str(timestamp)
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout as exc:
        raise DeliveryError(f"{where}: no answer within {timeout:g} s") from exc
    except requests.RequestException as exc:
        reason = type(exc.__context__ or exc).__name__
        raise DeliveryError(f"{where}: {type(exc).__name__} ({reason})") from exc
    if 200 <= response.status_code < 300:
        return response.status_code
    snippet = " ".join(response.text[:200].split())
    raise DeliveryError(f"{where}: HTTP {response.status_code}{f': {snippet}' if snippet else ''}")
