"""Price changes and e-mandates: plan counts new mandates and pre-debits, apply records and performs them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from compiler.project import compile_config
from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials
from publishers.payu.mandates import perform_actions
from publishers.payu.simulator import start_simulator
from publishers.postgres.apply import Revision, apply_catalog
from publishers.postgres.plan import make_plan
from tests.ledger_support import S, publish_shipped
from tests.payment_support import add_buyer
from tests.payu_support import SIM_KEY, SIM_SALT
from tests.test_bad_configs import copy_config, replace_text

NOW = datetime.fromisoformat("2026-11-20T10:00:00+05:30")


def _mandate(engine: Engine, customer: str, max_minor: int, authpayuid: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.mandates (customer_id, subscription_id, authpayuid, currency, "
                "max_amount_minor, billing_cycle, status) "
                "SELECT :c, id, :auth, 'INR', :max, 'MONTHLY', 'active' "
                f"FROM {S}.subscriptions WHERE customer_id = :c"
            ),
            {"c": customer, "auth": authpayuid, "max": max_minor},
        )


def test_price_increase_reaches_mandates(engine: Engine, tmp_path: Path) -> None:
    publish_shipped(engine)
    add_buyer(engine, "tight", plan="pro")
    add_buyer(engine, "roomy", plan="pro")
    add_buyer(engine, "card", plan="pro")  # pays by card: no mandate, nothing for PayU
    _mandate(engine, "tight", 200000, "AUTH1")  # 2,000.00: 1,798 + 18% GST = 2,121.64 does not fit
    _mandate(engine, "roomy", 2000000, "AUTH2")
    root = copy_config(tmp_path)
    replace_text(root, "plans/pro.yaml", "  monthly:\n    INR: 1499", "  monthly:\n    INR: 1798")
    catalog = compile_config(root).catalog
    assert catalog is not None

    with engine.connect() as conn, conn.begin():
        plan = make_plan(conn, S, catalog, environment=None, database="test", now=NOW)
    assert plan.mandates is not None
    assert (plan.mandates.new_mandates, plan.mandates.pre_debits) == (1, 1)
    by_customer = {s["customer"]: s for s in plan.mandates.subscriptions}
    assert by_customer["tight"]["action"] == "new_mandate" and by_customer["tight"]["debit_minor"] == 212164
    assert by_customer["roomy"]["action"] == "pre_debit"
    assert plan.to_json()["payu_mandates"]["new_mandates"] == 1

    result = apply_catalog(engine, S, catalog, Revision("test"), environment=None, database="test", now=NOW)
    assert result.payu_actions == 2
    with engine.begin() as conn:
        actions = conn.execute(
            sa.text(f"SELECT kind, amount_minor, status FROM {S}.payu_actions ORDER BY kind")
        ).all()
        asked = (
            conn.execute(
                sa.text(f"SELECT customer_id FROM {S}.notifications WHERE kind = 'mandate_required'")
            )
            .scalars()
            .all()
        )
    assert [tuple(a) for a in actions] == [
        ("new_mandate", 212164, "pending"),
        ("pre_debit", 212164, "pending"),
    ]
    assert asked == ["tight"]

    unreachable = PayUClient("http://127.0.0.1:9", PayUCredentials(SIM_KEY, SIM_SALT), timeout=1, retries=0)
    assert perform_actions(engine, S, unreachable)["pending"] == 1
    with start_simulator(0, SIM_KEY, SIM_SALT) as sim:
        client = PayUClient(sim.url, PayUCredentials(SIM_KEY, SIM_SALT), timeout=5, retries=0)
        counts = perform_actions(engine, S, client)
    # The simulator holds no mandate AUTH2, so PayU refuses the notice, and says why.
    assert counts == {"done": 0, "failed": 1, "pending": 0}
    with engine.begin() as conn:
        rows: dict[str, str] = dict(conn.execute(sa.text(f"SELECT kind, status FROM {S}.payu_actions")).all())
        detail = conn.execute(
            sa.text(f"SELECT detail FROM {S}.payu_actions WHERE kind = 'pre_debit'")
        ).scalar()
    assert rows == {"new_mandate": "done", "pre_debit": "failed"} and "AUTH2" in str(detail)
