"""A small PayU webhook receiver: payment webhooks (form-encoded) and refund callbacks (JSON).

Each POST is one body, taken in its own transaction through publishers.payu.results (hash checked, success
confirmed with PayU, stored once, acted on once). Answers: 200 with the outcome (duplicates included, so
PayU stops retrying), 400 for a body Tariff refuses (nothing written), 503 when PayU or the database could not
be reached (nothing written; PayU delivers again).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.engine import Engine

from database.errors import DatabaseError
from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials, redact
from publishers.payu.errors import PayUError
from publishers.payu.results import MAX_BODY, PayloadError, parse_body, take_in

log = logging.getLogger("tariff.payu.webhook")


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
        except DatabaseError as exc:
            if getattr(exc, "sqlstate", None):
                return 400, {"ok": False, "message": exc.message, "fix": exc.fix}
            return 503, {"ok": False, "message": exc.message}
        except PayUError as exc:
            return 503, {"ok": False, **exc.to_json()}
        if self.on_result is not None:
            self.on_result(result)
        return 200, {"ok": True, "result": result}


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
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
