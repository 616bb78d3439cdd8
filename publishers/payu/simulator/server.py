"""The simulator's HTTP side: PayU's checkout and merchant API on localhost, plus test controls.

Routes
  GET  /                                  index of payments
  POST /_payment                          hosted checkout (validates like PayU, shows the payment page)
  POST /_sim/checkout/<mihpayid>          the payment page's buttons → webhook, then return form to surl/furl
  POST /merchant/postservice.php?form=2   merchant API (verify_payment, check_payment, refunds, mandates)
  POST /_sim/pay                          finish a checkout without a browser
  POST /_sim/settle-refunds               move queued refunds to success (or failure) and send callbacks
  POST /_sim/fail-next                    make the next merchant-API calls fail (5xx, drop, timeout, lost,
                                          decline, refuse with a PayU error code)
  POST /_sim/advance                      move the simulator's clock forward
  POST /_sim/reset                        forget everything
  GET  /_sim/state                        everything as JSON
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from publishers.payu.credentials import logger
from publishers.payu.hashes import verify_command_hash
from publishers.payu.simulator import pages, persist
from publishers.payu.simulator.state import (
    CheckoutError,
    Delivery,
    Payment,
    SimState,
    SimulatorRequestError,
    two_decimals,
)

MAX_BODY = 1_000_000
DELIVERY_TIMEOUT = 5.0


class Simulator:
    """PayU's behaviour for one merchant; the HTTP handler calls into it."""

    def __init__(
        self,
        key: str,
        salt: str,
        *,
        webhook_url: str | None = None,
        refund_settle_seconds: float | None = 30.0,
        state_file: Path | None = None,
    ) -> None:
        self.state = SimState(key, salt, refund_settle_seconds=refund_settle_seconds)
        self.webhook_url = webhook_url
        self.url = ""
        self.state_file = state_file
        self._save_lock = threading.Lock()
        if state_file is not None:
            persist.load(self.state, state_file)

    def persist(self) -> None:
        """Write the state to --state FILE after a change (nothing without one)."""
        if self.state_file is not None:
            with self._save_lock:
                persist.save(self.state, self.state_file)

    # -- deliveries ----------------------------------------------------------------------------

    def deliver(self, delivery: Delivery) -> dict[str, Any]:
        """Send one webhook or callback now; the outcome is recorded, never raised."""
        try:
            if delivery.kind == "refund":
                response = requests.post(delivery.url, json=delivery.payload, timeout=DELIVERY_TIMEOUT)
            else:
                response = requests.post(delivery.url, data=delivery.payload, timeout=DELIVERY_TIMEOUT)
        except requests.RequestException as exc:
            self.state.record(delivery, f"error: {type(exc).__name__}", None)
            logger.warning(
                "simulator: %s delivery to %s failed: %s", delivery.kind, delivery.url, type(exc).__name__
            )
            return {
                "url": delivery.url,
                "kind": delivery.kind,
                "status_code": None,
                "error": type(exc).__name__,
            }
        self.state.record(delivery, "delivered", response.status_code)
        return {"url": delivery.url, "kind": delivery.kind, "status_code": response.status_code}

    def payment_webhooks(self, payment: Payment, repeat: int = 1) -> list[dict[str, Any]]:
        if not self.webhook_url or (payment.status == "pending" and payment.unmappedstatus == "initiated"):
            return []
        fields = self.state.response_fields(payment)
        return [self.deliver(Delivery("payment", self.webhook_url, fields)) for _ in range(max(1, repeat))]

    def refund_callbacks(self, refunds: list[Any]) -> list[dict[str, Any]]:
        out = []
        for refund in refunds:
            url = refund.callback_url or self.webhook_url
            if url:
                out.append(self.deliver(Delivery("refund", url, refund.callback(self.state.key))))
        return out

    def tick(self) -> None:
        """Settle refunds whose delay has passed (called by the ticker thread)."""
        if self.state.refund_settle_seconds is None:
            return
        settled = self.state.settle_refunds(due_only=True)
        if settled:
            self.refund_callbacks(settled)
            self.persist()

    # -- merchant API --------------------------------------------------------------------------

    def api(self, form: Mapping[str, str], decline: bool = False) -> dict[str, Any]:
        state = self.state
        command = form.get("command", "")
        var1 = form.get("var1", "")
        if form.get("key") != state.key:
            return {"status": 0, "msg": "Invalid key"}
        if not verify_command_hash(state.key, command, var1, state.salt, form.get("hash", "")):
            return {"status": 0, "msg": "Invalid Hash."}
        if command == "verify_payment":
            return self._verify(var1)
        if command == "check_payment":
            with state.lock:
                payment = state.payments.get(var1)
                if payment is None:
                    return {"status": 0, "msg": "Transaction not found"}
                return {
                    "status": 1,
                    "msg": "Transaction Fetched Successfully",
                    "transaction_details": payment.details(),
                }
        if command == "cancel_refund_transaction":
            callback = form.get("var5") or None
            return state.refund(var1, form.get("var2", "").strip(), form.get("var3", ""), callback)
        if command == "check_action_status":
            return self._action_status(var1, by_payuid=form.get("var2", "").lower() == "payuid")
        if command == "getAllRefundsFromTxnIds":
            return self._all_refunds(var1)
        if command in ("pre_debit_SI", "si_transaction"):
            try:
                payload = json.loads(var1)
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return {"status": 0, "message": "var1 must be a JSON object"}
            if command == "pre_debit_SI":
                return state.pre_debit(payload)
            body, payment = state.debit(payload, decline=decline)
            if payment is not None:
                threading.Thread(target=self.payment_webhooks, args=(payment,), daemon=True).start()
            return body
        return {"status": 0, "msg": f"Invalid command {command!r}"}

    def _verify(self, var1: str) -> dict[str, Any]:
        txnids = [t for t in var1.split("|") if t]
        details: dict[str, Any] = {}
        found = 0
        with self.state.lock:
            for txnid in txnids:
                payment = self.state.reported(txnid)
                if payment is None:
                    details[txnid] = {"mihpayid": "Not Found", "status": "Not Found"}
                else:
                    found += 1
                    details[txnid] = payment.details()
        return {
            "status": 1 if found else 0,
            "msg": f"{found} out of {len(txnids)} Transactions Fetched Successfully",
            "transaction_details": details,
        }

    def _action_status(self, var1: str, *, by_payuid: bool) -> dict[str, Any]:
        with self.state.lock:
            if by_payuid:
                payment = self.state.payments.get(var1)
                if payment is not None and payment.status == "success":
                    actions = {payment.capture_request_id: payment.capture_action()}
                    actions.update({r.request_id: r.action() for r in payment.refunds})
                    return {
                        "status": 1,
                        "msg": "1 out of 1 Transactions Fetched Successfully",
                        "transaction_details": {var1: actions},
                    }
            else:
                for refund in self.state.all_refunds():
                    if refund.request_id == var1:
                        return {
                            "status": 1,
                            "msg": "1 out of 1 Transactions Fetched Successfully",
                            "transaction_details": {var1: {var1: refund.action()}},
                        }
        return {
            "status": 0,
            "msg": "0 out of 1 Transactions Fetched Successfully",
            "transaction_details": {var1: "No action status found"},
        }

    def _all_refunds(self, txnid: str) -> dict[str, Any]:
        with self.state.lock:
            payment = self.state.succeeded(txnid)
            if payment is None or not payment.refunds:
                return {"status": 0, "msg": "No refunds found for this transaction"}
            entries = [
                {
                    "PayuID": payment.mihpayid,
                    "RequestID": r.request_id,
                    "RefundToken": r.token,
                    "PaymentGateway": "SIMPG",
                    "Amount": two_decimals(r.amount),
                    "Status": r.status,
                    "RefundCreationDate": r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    "bank_ref_no": r.bank_ref_num,
                    "bank_arn": r.bank_arn,
                    "success_at": r.settled_at.strftime("%Y-%m-%d %H:%M:%S") if r.settled_at else None,
                }
                for r in payment.refunds
            ]
            return {
                "status": 1,
                "msg": "Refunds fetched successfully.",
                "Refund Details": {payment.mihpayid: entries},
            }

    # -- test controls -------------------------------------------------------------------------

    def control(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        state = self.state
        if action == "pay":
            return self._pay(data)
        if action == "settle-refunds":
            settled = state.settle_refunds(
                status=str(data.get("status") or "success"), request_id=_opt(data.get("request_id"))
            )
            callbacks = self.refund_callbacks(settled)
            return {"settled": [r.action() for r in settled], "callbacks": callbacks}
        if action == "fail-next":
            code = data.get("code")
            state.fail_next(
                str(data.get("mode") or "503"),
                _int(data.get("count"), 1),
                _opt(data.get("command")),
                _float(data.get("delay"), 0.0),
                None if code in (None, "") else _int(code, 0),
            )
            return {"pending_failures": [p.mode for p in state.fail_plans]}
        if action == "advance":
            state.advance(_float(data.get("seconds"), 0.0))
            self.tick()
            return {"now": state.now().isoformat()}
        if action == "reset":
            state.reset()
            return {"reset": True}
        raise SimulatorRequestError(f"unknown control /_sim/{action}", 404)

    def _pay(self, data: Mapping[str, Any]) -> dict[str, Any]:
        txnid = str(data.get("txnid") or "")
        payment = self.state.pending_checkout(txnid)
        try:
            charges = Decimal(str(data.get("additional_charges") or "0"))
        except InvalidOperation:
            raise SimulatorRequestError("additional_charges must be an amount") from None
        self.state.complete(
            payment,
            str(data.get("outcome") or "success"),
            method=str(data.get("method") or "card"),
            card_number=str(data.get("card_number") or "5123456789012346"),
            otp=str(data.get("otp") or "123456"),
            vpa=str(data.get("vpa") or "anything@payu"),
            additional_charges=charges,
        )
        fields = self.state.response_fields(payment)
        url = self.state.redirect_url(payment)
        webhooks = self.payment_webhooks(payment, _int(data.get("webhook_repeat"), 1))
        redirect = None
        if _truthy(data.get("post_redirect")):
            redirect = self.deliver(Delivery("redirect", url, fields))
        return {
            "txnid": payment.txnid,
            "mihpayid": payment.mihpayid,
            "status": payment.status,
            "unmappedstatus": payment.unmappedstatus,
            "redirect_url": url,
            "fields": fields,
            "webhooks": webhooks,
            "redirect": redirect,
        }

    def checkout_submit(self, mihpayid: str, form: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """The payment page's buttons: returns (redirect URL, response fields posted there)."""
        with self.state.lock:
            payment = self.state.payments.get(mihpayid)
        if payment is None:
            raise SimulatorRequestError("unknown checkout", 404)
        self.state.complete(
            payment,
            form.get("outcome", "failure"),
            method=form.get("method", "card"),
            card_number=form.get("card_number", ""),
            otp=form.get("otp", "").strip(),
            vpa=form.get("vpa", ""),
        )
        fields = self.state.response_fields(payment)
        self.payment_webhooks(payment)
        return self.state.redirect_url(payment), fields


def _opt(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise SimulatorRequestError(f"not a whole number: {value!r}") from None


def _float(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        raise SimulatorRequestError(f"not a number: {value!r}") from None


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes", "on")


class Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    server_version = "PayUSimulator/1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("simulator: " + format, *args)

    # -- plumbing ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise SimulatorRequestError("request body too large", 413)
        return self.rfile.read(length) if length else b""

    def _form(self, body: bytes) -> dict[str, str]:
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))

    def _data(self, body: bytes) -> dict[str, Any]:
        """Control endpoints take JSON or a form."""
        if "json" in (self.headers.get("Content-Type") or ""):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise SimulatorRequestError("body is not valid JSON") from None
            if not isinstance(data, dict):
                raise SimulatorRequestError("body must be a JSON object")
            return data
        return self._form(body)

    def _send(self, status: int, body: str, content_type: str) -> None:
        if self.command == "POST":
            # Written before the answer leaves, so a caller that then restarts the simulator finds it.
            self.server.simulator.persist()
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data, default=str), "application/json")

    def _html(self, status: int, page: str) -> None:
        self._send(status, page, "text/html; charset=utf-8")

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        sim = self.server.simulator
        path = urlsplit(self.path).path
        if path == "/":
            self._html(200, pages.index_page(sim.state.snapshot(), sim.url))
        elif path == "/_sim/state":
            self._json(200, sim.state.snapshot())
        elif path == "/_sim/health":
            self._json(200, {"ok": True})
        elif path == "/_payment":
            self._html(405, pages.error_page("The checkout takes a form POST, not a GET"))
        else:
            self._json(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        sim = self.server.simulator
        path = urlsplit(self.path).path.rstrip("/")
        try:
            body = self._body()
            if path == "/_payment":
                try:
                    payment = sim.state.start_checkout(self._form(body))
                except CheckoutError as exc:
                    self._html(400, pages.error_page(exc.reason, exc.detail))
                    return
                self._html(200, pages.checkout_page(payment, sim.state.key))
            elif path.startswith("/_sim/checkout/"):
                try:
                    url, fields = sim.checkout_submit(path.rsplit("/", 1)[1], self._form(body))
                except SimulatorRequestError as exc:  # a page submitted twice, or a stale tab
                    self._html(exc.status, pages.error_page(exc.message))
                    return
                self._html(200, pages.return_form(url, fields))
            elif path in ("/merchant/postservice.php", "/merchant/postservice"):
                self._merchant_api(self._form(body))
            elif path.startswith("/_sim/"):
                self._json(200, sim.control(path.removeprefix("/_sim/"), self._data(body)))
            else:
                self._json(404, {"error": f"no route {path}"})
        except SimulatorRequestError as exc:
            self._json(exc.status, {"error": exc.message})

    def _merchant_api(self, form: dict[str, str]) -> None:
        sim = self.server.simulator
        plan = sim.state.take_fail_plan(form.get("command", ""))
        if plan is not None and plan.mode in ("502", "503", "504"):
            self._send(int(plan.mode), f"<html><body>{plan.mode} simulated</body></html>", "text/html")
            return
        if plan is not None and plan.mode == "drop":
            self.close_connection = True
            return
        if plan is not None and plan.mode == "timeout":
            time.sleep(plan.delay or 2.0)
        if plan is not None and plan.mode == "refuse":
            command = form.get("command", "")
            if form.get("key") == sim.state.key and verify_command_hash(
                sim.state.key, command, form.get("var1", ""), sim.state.salt, form.get("hash", "")
            ):
                self._json(200, sim.state.refusal(plan, command, form))
                return
        answer = sim.api(form, decline=plan is not None and plan.mode == "decline")
        if plan is not None and plan.mode == "lost":
            sim.persist()
            self.close_connection = True  # PayU did the work; the answer never arrives
            return
        self._json(200, answer)


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        super().__init__(address, Handler)
        self.simulator = simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout tests, a closed browser tab) is not the simulator's error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("simulator: client %s went away", client_address)
            return
        logger.exception("simulator: error while handling a request from %s", client_address)
