"""The simulator's memory on disk (`tariff payu simulator --state FILE`), so a restarted simulator keeps its
payments, refunds and mandates. One JSON file, rewritten atomically after every change; amounts stay exact
(Decimal as strings) and times keep their offsets."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from publishers.payu.simulator.state import Mandate, Payment, Refund, SimState

FORMAT = 1


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$time": value.isoformat()}
    raise TypeError(f"cannot store {type(value).__name__}")


def _decode(node: dict[str, Any]) -> Any:
    if set(node) == {"$decimal"}:
        return Decimal(node["$decimal"])
    if set(node) == {"$time"}:
        return datetime.fromisoformat(node["$time"])
    return node


def dump(state: SimState) -> dict[str, Any]:
    with state.lock:
        return {
            "format": FORMAT,
            "key": state.key,
            "offset_seconds": state.offset.total_seconds(),
            "request_seq": state._request_seq,
            "invoice_seq": state._invoice_seq,
            "ids": sorted(state._ids),
            "payments": [asdict(p) for p in state.payments.values()],
            "attempts": state.attempts,
            "mandates": [asdict(m) for m in state.mandates.values()],
            "deliveries": state.deliveries,
        }


def restore(state: SimState, data: dict[str, Any]) -> None:
    """Replace the state's memory with what `dump` wrote (for the same merchant key)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown simulator state format {data.get('format')!r}")
    if data.get("key") != state.key:
        raise ValueError("the state file belongs to another merchant key")
    payments = {}
    for raw in data["payments"]:
        refunds = [Refund(**r) for r in raw.pop("refunds")]
        payment = Payment(**raw, refunds=refunds)
        payments[payment.mihpayid] = payment
    with state.lock:
        state.payments = payments
        state.attempts = {k: list(v) for k, v in data["attempts"].items()}
        state.mandates = {m["auth_payu_id"]: Mandate(**m) for m in data["mandates"]}
        state.deliveries = list(data["deliveries"])
        state.offset = timedelta(seconds=float(data["offset_seconds"]))
        state._request_seq = int(data["request_seq"])
        state._invoice_seq = int(data["invoice_seq"])
        state._ids = set(data["ids"])


def save(state: SimState, path: Path) -> None:
    """Write the state to `path` atomically (a crash leaves the previous file)."""
    text = json.dumps(dump(state), default=_encode, separators=(",", ":"))
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def load(state: SimState, path: Path) -> bool:
    """Restore the state from `path` when it exists; returns whether it did."""
    if not path.exists():
        return False
    restore(state, json.loads(path.read_text(encoding="utf-8"), object_hook=_decode))
    return True
