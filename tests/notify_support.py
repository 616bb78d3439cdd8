"""Local receivers for delivery tests: an SMTP server with STARTTLS and AUTH (aiosmtpd), a scripted webhook
endpoint (http.server), a port nobody listens on, and outbox rows written the way apply writes them."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from sqlalchemy.engine import Engine

from compiler.catalog import Catalog, Channel, DeliveryPolicy
from compiler.project import compile_config
from tests.ledger_support import REPO, S

SMTP_USER = "tariff"
SMTP_PASSWORD = "s3cret-smtp-password-value"
WEBHOOK_SECRET = "whsec-very-secret-signing-key"
FROM = "PineGenie Billing <billing@pinegenie.app>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1, made offline with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    tls: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert isinstance(envelope.content, bytes)
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        self.tls.append(session.ssl is not None)
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == (SMTP_USER, SMTP_PASSWORD), handled=False)


@contextmanager
def smtp_server(directory: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    """An SMTP server on 127.0.0.1 that requires STARTTLS before AUTH; yields (mailbox, port, CA file)."""
    import ssl

    cert, key = self_signed_cert(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_require_tls=True,
        auth_required=True,
        authenticator=mailbox.authenticate,
        auth_exclude_mechanism=["LOGIN"],  # so a refused PLAIN login is final, as with most servers
    )
    controller.start()
    try:
        yield mailbox, port, cert
    finally:
        controller.stop()


@dataclass
class Received:
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Hook:
    """A webhook endpoint answering from a script: an int is a status, ("sleep", s) answers 200 late."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Any] = []
        self.default: Any = 200
        self.delay = 0.0
        self.lock = threading.Lock()

    def next_answer(self) -> Any:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@contextmanager
def webhook_server() -> Iterator[tuple[Hook, str]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            answer = hook.next_answer()
            with hook.lock:
                hook.received.append(Received(dict(self.headers.items()), body))
            if hook.delay:
                time.sleep(hook.delay)
            if isinstance(answer, tuple):
                time.sleep(answer[1])
                answer = 200
            self.send_response(answer)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if answer < 300 else b"internal trouble")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, f"http://127.0.0.1:{server.server_address[1]}/api/tariff/events?token=url-token-123"
    finally:
        server.shutdown()
        server.server_close()


def shipped_catalog() -> Catalog:
    result = compile_config(REPO / "pricing")
    assert result.ok and result.catalog is not None
    return result.catalog


def with_channels(
    catalog: Catalog,
    *,
    smtp_port: int | None = None,
    webhook_url: str | None = None,
    max_attempts: int = 3,
    timeout: int = 2,
) -> Catalog:
    channels = dict(catalog.settings.channels)
    if smtp_port is not None:
        channels["email"] = Channel(
            "email",
            "smtp",
            {
                "host": "127.0.0.1",
                "port": smtp_port,
                "starttls": True,
                "username": SMTP_USER,
                "password_env": "TARIFF_SMTP_PASSWORD",
                "from": FROM,
            },
        )
    if webhook_url is not None:
        channels["ops-webhook"] = Channel(
            "ops-webhook", "webhook", {"url": webhook_url, "secret_env": "TARIFF_WEBHOOK_SECRET"}
        )
    delivery = DeliveryPolicy(max_attempts, 60, 600, timeout)
    settings = dataclasses.replace(catalog.settings, channels=channels, delivery=delivery)
    return dataclasses.replace(catalog, settings=settings)


ENV = {"TARIFF_SMTP_PASSWORD": SMTP_PASSWORD, "TARIFF_WEBHOOK_SECRET": WEBHOOK_SECRET}


def add_customer(engine: Engine, customer: str, email: str | None, country: str = "IN") -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"SELECT {S}.register_customer(p_id => :id, p_email => :email, p_country => :country)"),
            {"id": customer, "email": email, "country": country},
        )


def queue(
    engine: Engine,
    kind: str,
    channel: str,
    payload: Mapping[str, Any],
    *,
    customer: str | None = None,
    key: str | None = None,
    due: str = "2026-06-01T00:00:00Z",
) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    f"INSERT INTO {S}.notifications (kind, customer_id, channel, payload, idempotency_key, "
                    "next_attempt_at) VALUES (:kind, :customer, :channel, CAST(:payload AS jsonb), "
                    "coalesce(:key, 'test:' || gen_random_uuid()), :due) RETURNING id"
                ),
                {
                    "kind": kind,
                    "customer": customer,
                    "channel": channel,
                    "payload": json.dumps(payload),
                    "key": key,
                    "due": due,
                },
            ).scalar_one()
        )


def row(engine: Engine, notification_id: int) -> sa.RowMapping:
    with engine.connect() as conn:
        return (
            conn.execute(sa.text(f"SELECT * FROM {S}.notifications WHERE id = :id"), {"id": notification_id})
            .mappings()
            .one()
        )


PRICE_PAYLOAD = {
    "revision": 1,
    "items": [
        {
            "subscription": "sub_1",
            "plan": "pro",
            "cycle": "monthly",
            "currency": "INR",
            "old_amount_minor": 149900,
            "new_amount_minor": 179900,
            "direction": "increase",
            "effective_at": "2026-07-01T00:00:00+00:00",
        }
    ],
}
