"""A small PayU webhook receiver: payment webhooks (form-encoded) and refund callbacks (JSON).

Each POST is one body, taken in its own transaction through publishers.payu.results (hash checked, success
confirmed with PayU, stored once, acted on once). Answers: 200 with the outcome (duplicates included, so
PayU stops retrying), 400 for a body Tariff refuses (nothing written; PayU must not deliver it again), 503
when PayU or the database could not be reached or was briefly busy — a lock timeout, a deadlock, a
serialization failure, a server restarting (nothing written; PayU delivers again), 500 for anything else.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from database.errors import DatabaseError
from database.sql_errors import refusal
from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials, redact
from publishers.payu.errors import PayUError
from publishers.payu.results import MAX_BODY, PayloadError, parse_body, take_in

log = logging.getLogger("tariff.payu.webhook")

# SQLSTATEs of a body the database refuses for good: data exceptions (22), integrity violations (23),
# RAISE without a code (P0001), and what Tariff's own functions raise to refuse a call.
REFUSAL_CLASSES = ("22", "23")
REFUSAL_CODES = frozenset({"P0001", "P0002", "55000", "55006"})
REFUSAL_PREFIX = "TRF"
# SQLSTATEs that pass: connection (08), rollbacks such as deadlock and serialization failure (40),
# resources (53), operator intervention such as a statement timeout or shutdown (57), system (58), and a
# lock that was not granted in time (55P03). PayU must deliver the body again.
TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
TRANSIENT_CODES = frozenset({"55P03"})


def status_for_sqlstate(sqlstate: str | None) -> int:
    """The HTTP answer for a database error: 400 refused for good, 503 try again, 500 Tariff's own fault."""
    if sqlstate is None:
        return 503  # no server answer at all: it could not be reached
    if sqlstate[:2] in REFUSAL_CLASSES or sqlstate in REFUSAL_CODES or sqlstate.startswith(REFUSAL_PREFIX):
        return 400
    if sqlstate[:2] in TRANSIENT_CLASSES or sqlstate in TRANSIENT_CODES:
        return 503
    return 500


def _database_answer(exc: DatabaseError | SQLAlchemyError) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, DatabaseError):
        sqlstate, message, fix = getattr(exc, "sqlstate", None), exc.message, exc.fix
    elif isinstance(exc, DBAPIError):
        raised = refusal(exc)
        sqlstate, message, fix = raised.sqlstate, raised.message, raised.hint
    else:
        sqlstate, message, fix = None, f"database unavailable ({type(exc).__name__})", None
    status = status_for_sqlstate(sqlstate)
    answer: dict[str, Any] = {"ok": False, "message": redact(message), "sqlstate": sqlstate}
    if status == 400 and fix:
        answer["fix"] = fix
    return status, answer


def _content_length(header: str | None) -> int | None:
    """The declared body size, or None when the header is not a plain number."""
    text = (header or "0").strip()
    return int(text) if text.isascii() and text.isdigit() else None


class WebhookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        schema: str,
        client: PayUClient,
        credentials: PayUCredentials,
        on_result: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.schema = schema
        self.client = client
        self.credentials = credentials
        self.on_result = on_result

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def handle_body(self, text: str, content_type: str | None) -> tuple[int, dict[str, Any]]:
        try:
            body = parse_body(text, "webhook", content_type)
            with self.engine.begin() as conn:
                [result] = take_in(conn, self.schema, [body], self.client, self.credentials, source="webhook")
        except PayloadError as exc:
            return 400, {"ok": False, **exc.to_json()}
        except (DatabaseError, SQLAlchemyError) as exc:
            return _database_answer(exc)
        except PayUError as exc:
            return 503, {"ok": False, **exc.to_json()}
        if self.on_result is not None:
            self.on_result(result)
        return 200, {"ok": True, "result": result}


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        length = _content_length(self.headers.get("Content-Length"))
        if length is None:
            self._answer(400, {"ok": False, "message": "Content-Length must be a number of bytes"})
            return
        if length <= 0 or length > MAX_BODY:
            self._answer(400, {"ok": False, "message": f"body must be 1 to {MAX_BODY} bytes"})
            return
        raw = self.rfile.read(length)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._answer(400, {"ok": False, "message": "body is not UTF-8"})
            return
        try:
            status, answer = self.server.handle_body(text, self.headers.get("Content-Type"))
        except Exception as exc:  # a bug must not kill the receiver; PayU retries on 5xx
            log.exception("webhook failed")
            status, answer = 500, {"ok": False, "message": redact(f"{type(exc).__name__}: {exc}")}
        self._answer(status, answer)

    def do_GET(self) -> None:
        self._answer(200, {"ok": True, "service": "tariff payu webhook"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info(redact(format % args))


def start_webhook_server(
    engine: Engine,
    schema: str,
    client: PayUClient,
    credentials: PayUCredentials,
    host: str = "127.0.0.1",
    port: int = 0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[WebhookServer, threading.Thread]:
    """Serve in a background thread; stop with `server.shutdown()`."""
    server = WebhookServer((host, port), engine, schema, client, credentials, on_result)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
