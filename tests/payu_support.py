"""Test helpers for PayU: the offline simulator as a fixture, a receiver for webhooks and return posts, and
a checkout form builder. Import the fixtures into a test module to use them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from publishers.payu.client import PayUClient
from publishers.payu.hashes import request_hash
from publishers.payu.simulator import RunningSimulator, start_simulator

SIM_KEY = "Tk9xQ2"
SIM_SALT = "q8X2vR7pL0mN4sT6uW1yZ3aB5cD7eF9g"


@dataclass
class Received:
    path: str
    content_type: str
    form: dict[str, str]
    json: Any


@dataclass
class Receiver:
    """An app endpoint stand-in: records every POST (form or JSON) and answers 200."""

    url: str
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        import time

        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.received)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            kind = self.headers.get("Content-Type") or ""
            holder.received.append(
                Received(
                    self.path,
                    kind,
                    dict(parse_qsl(body, keep_blank_values=True)) if "form" in kind else {},
                    json.loads(body) if "json" in kind else None,
                )
            )
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.url = f"http://127.0.0.1:{server.server_address[1]}"
    holder.server = server
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield holder
    server.shutdown()
    server.server_close()


@pytest.fixture
def payu_sim(receiver: Receiver) -> Iterator[RunningSimulator]:
    """A simulator whose webhooks go to `receiver` (…/webhook); refunds settle only when told to."""
    sim = start_simulator(
        key=SIM_KEY, salt=SIM_SALT, webhook_url=receiver.url + "/webhook", refund_settle_seconds=None
    )
    yield sim
    sim.stop()


@pytest.fixture
def payu_client(payu_sim: RunningSimulator) -> PayUClient:
    return PayUClient(payu_sim.url, payu_sim.credentials, timeout=3, retries=2, backoff=0.01)


def checkout_form(receiver_url: str, txnid: str, amount: str = "1769.00", **extra: str) -> dict[str, str]:
    fields = {
        "key": SIM_KEY,
        "txnid": txnid,
        "amount": amount,
        "productinfo": "PineGenie Pro monthly",
        "firstname": "Asha",
        "email": "asha@example.in",
        "phone": "9876543210",
        "surl": receiver_url + "/success",
        "furl": receiver_url + "/failure",
        "udf1": "pro",
        "udf3": "ck9x",
    }
    fields.update(extra)
    fields["hash"] = request_hash(SIM_KEY, SIM_SALT, fields)
    return fields


def pay(
    sim: RunningSimulator, receiver_url: str, txnid: str, amount: str = "1769.00", **extra: Any
) -> dict[str, Any]:
    """Open a checkout and finish it through the control API; returns the /_sim/pay answer."""
    form_extra = {
        k: v for k, v in extra.items() if k in ("si", "si_details", "api_version", "curl", "offer_key")
    }
    control = {k: v for k, v in extra.items() if k not in form_extra}
    page = requests.post(
        sim.url + "/_payment", data=checkout_form(receiver_url, txnid, amount, **form_extra), timeout=5
    )
    assert page.status_code == 200, page.text
    answer = requests.post(sim.url + "/_sim/pay", json={"txnid": txnid, **control}, timeout=5)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def money(text: str) -> Decimal:
    return Decimal(text)
