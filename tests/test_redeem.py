"""redeem() and the reversals: the ledger rows, refusals that record nothing, idempotency, and limits that
hold under concurrency (many threads, each on its own connection, released together by a barrier)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from database.promotions import (
    IdempotencyConflictError,
    InvalidRequestError,
    Item,
    Redemption,
    UnknownRedemptionError,
    UnknownReferenceError,
    quote,
    redeem,
    reverse,
)
from tests.promo_support import DIWALI, LAUNCH, SCHEMA, customers, publish, scenario_config, subscribe

T = TypeVar("T")
PRO_MONTHLY = Item(plan="pro", cycle="monthly")
PRO_ANNUAL = Item(plan="pro", cycle="annual")
LIMITED = """
id: limited
name: Limited code
discount: {percent_off: 25}
applies_to: {plans: [pro], cycles: [monthly]}
limits: {max_redemptions: 15, per_customer: 1}
schedule: {starts: "2026-01-01T00:00:00+05:30", ends: "2027-12-31T00:00:00+05:30"}
codes: {vanity: LIMITED25}
"""
MANY_PER_CUSTOMER = """
id: repeatable
name: Repeatable code
discount: {percent_off: 10}
applies_to: {plans: [pro], cycles: [monthly]}
limits: {per_customer: 3}
schedule: {starts: "2026-01-01T00:00:00+05:30", ends: "2027-12-31T00:00:00+05:30"}
codes: {vanity: AGAIN10}
"""


def r(
    target: Engine | Connection, customer: str, key: str, item: Item = PRO_MONTHLY, **kwargs: Any
) -> Redemption:
    """One redeem() in a transaction of its own (on a fresh pooled connection, or on `target`)."""
    kwargs.setdefault("at", LAUNCH)
    if isinstance(target, Connection):
        with target.begin():
            return redeem(target, SCHEMA, item, customer_id=customer, idempotency_key=key, **kwargs)
    with target.begin() as conn:
        return redeem(conn, SCHEMA, item, customer_id=customer, idempotency_key=key, **kwargs)


def redeemer(customer: str, key: str, *args: Any, **kwargs: Any) -> Callable[[Connection], Redemption]:
    return lambda conn: r(conn, customer, key, *args, **kwargs)


def count(engine: Engine, sql: str, **params: Any) -> int:
    with engine.begin() as conn:
        return int(conn.execute(sa.text(sql.replace("{s}", SCHEMA)), params).scalar_one())


def together(engine: Engine, jobs: list[Callable[[Connection], T]]) -> list[T]:
    """Run the jobs at the same moment, each on its own connection (connected before the start line)."""
    separate = sa.create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(len(jobs))

    def run(job: Callable[[Connection], T]) -> T:
        with separate.connect() as conn:
            barrier.wait(timeout=60)
            return job(conn)

    try:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            return list(pool.map(run, jobs))
    finally:
        separate.dispose()


@pytest.fixture
def shipped(engine: Engine) -> Engine:
    publish(engine)
    return engine


@pytest.fixture
def limited(engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    publish(engine, scenario_config(tmp_path, {"limited": LIMITED, "again": MANY_PER_CUSTOMER}))
    yield engine


# ------------------------------------------------------------------------------------------- happy path


def test_redeem_records_every_applied_promotion(shipped: Engine) -> None:
    customers(shipped, "new-in", country="IN")
    done = r(shipped, "new-in", "order-1", codes=["welcome20"])
    assert done.ok and not done.replayed and len(done.redemption_ids) == 1
    assert done.quote.final_minor == 119920
    with shipped.begin() as conn:
        row = conn.execute(
            sa.text(f"SELECT * FROM {SCHEMA}.redemptions WHERE id = :id"), {"id": done.redemption_ids[0]}
        ).one()
    assert (row.promotion_id, row.code, row.customer_id, row.item_kind, row.item_id, row.cycle) == (
        "welcome-code",
        "WELCOME20",
        "new-in",
        "plan",
        "pro",
        "monthly",
    )
    assert (row.currency.strip(), row.list_minor, row.discount_minor, row.final_minor) == (
        "INR",
        149900,
        29980,
        119920,
    )
    assert (row.status, row.duration, row.idempotency_key, row.redeemed_at) == (
        "redeemed",
        "once",
        "order-1",
        LAUNCH,
    )
    assert (
        count(shipped, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'welcome-code'")
        == 1
    )


def test_automatic_promotion_is_redeemed_without_a_code(shipped: Engine) -> None:
    customers(shipped, "new-in", country="IN")
    done = r(shipped, "new-in", "diwali-1", PRO_ANNUAL, at=DIWALI)
    assert done.ok and done.quote.final_minor == 1049300
    assert (
        count(shipped, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'diwali-2026'")
        == 1
    )
    again = r(shipped, "new-in", "diwali-2", PRO_ANNUAL, at=DIWALI)
    # The customer used their one Diwali discount: the purchase goes through at the list price.
    assert again.ok and again.redemption_ids == () and again.quote.final_minor == 1499000
    found = again.quote.promotion("diwali-2026")
    assert found is not None and found.reason == "per_customer_limit"


def test_bundle_is_redeemed_as_one_item(shipped: Engine) -> None:
    customers(shipped, "creator", country="IN")
    done = r(shipped, "creator", "bundle-1", Item(bundle="creator-bundle"))
    assert done.ok and len(done.redemption_ids) == 1
    with shipped.begin() as conn:
        row = conn.execute(sa.text(f"SELECT * FROM {SCHEMA}.redemptions")).one()
    assert (row.item_kind, row.item_id, row.cycle, row.promotion_id) == (
        "bundle",
        "creator-bundle",
        None,
        "creator-bundle",
    )
    assert (row.list_minor, row.discount_minor, row.final_minor) == (1648900, 49000, 1599900)
    second = r(shipped, "creator", "bundle-2", Item(bundle="creator-bundle"))
    assert not second.ok and second.reasons[0].reason == "per_customer_limit"


def test_bundle_out_of_its_window_is_refused(shipped: Engine) -> None:
    customers(shipped, "creator", country="IN")
    done = r(shipped, "creator", "bundle-early", Item(bundle="creator-bundle"), at=DIWALI)
    assert not done.ok
    assert [(x.promotion, x.reason) for x in done.reasons] == [("creator-bundle", "not_started")]
    assert count(shipped, "SELECT count(*) FROM {s}.redemption_requests") == 0


# ------------------------------------------------------------------------------ refusals record nothing


@pytest.mark.parametrize(
    ("codes", "at", "why"),
    [
        (["BOGUS"], LAUNCH, "unknown_code"),
        (["WELCOME2O"], LAUNCH, "unknown_code"),  # a lookalike O for 0
        (["welcome20"], DIWALI, "not_started"),
        (["welcome20"], datetime.fromisoformat("2027-05-01T00:00:00+05:30"), "ended"),
    ],
)
def test_refusals_record_nothing(shipped: Engine, codes: list[str], at: Any, why: str) -> None:
    customers(shipped, "new-in", country="IN")
    done = r(shipped, "new-in", "refused-1", codes=codes, at=at)
    assert done.status == "refused" and done.redemption_ids == ()
    assert [x.reason for x in done.reasons] == [why]
    for table in ("redemptions", "redemption_requests", "promotion_customer_usage"):
        assert count(shipped, f"SELECT count(*) FROM {{s}}.{table}") == 0, table
    assert count(shipped, "SELECT coalesce(sum(redeemed), 0) FROM {s}.promotion_usage") == 0


def test_code_not_eligible_is_refused(shipped: Engine) -> None:
    customers(shipped, "paid", country="IN")
    with shipped.begin() as conn:
        subscribe(conn, "paid", "pro")
    done = r(shipped, "paid", "k", codes=["WELCOME20"])
    assert [(x.code, x.reason, x.detail) for x in done.reasons] == [
        ("WELCOME20", "not_eligible", "new customers only")
    ]


def test_a_code_that_loses_to_a_better_offer_is_not_a_refusal(shipped: Engine) -> None:
    customers(shipped, "student", country="IN", segments=["students"])
    done = r(shipped, "student", "k", codes=["WELCOME20"])
    assert done.ok and [d.promotion for d in done.quote.discounts] == ["students"]
    outcome = done.quote.code("welcome20")
    assert outcome is not None and outcome.reason == "not_stackable_with:students"


def test_bad_input_raises_and_creates_nothing(shipped: Engine) -> None:
    with pytest.raises(UnknownReferenceError, match='unknown customer "ghost"'):
        r(shipped, "ghost", "k1", codes=["WELCOME20"])
    assert count(shipped, "SELECT count(*) FROM {s}.customers") == 0
    customers(shipped, "new-in", country="IN")
    with pytest.raises(InvalidRequestError, match="idempotency key"):
        r(shipped, "new-in", "has space")
    with shipped.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="a redemption needs a customer"):
        conn.execute(
            sa.text(f"SELECT {SCHEMA}.redeem(NULL, CAST(:i AS jsonb), p_idempotency_key => 'k')"),
            {"i": '{"plan": "pro", "cycle": "monthly"}'},
        )


# ---------------------------------------------------------------------------------------- idempotency


def test_same_key_replays_the_first_response(shipped: Engine) -> None:
    customers(shipped, "new-in", country="IN")
    first = r(shipped, "new-in", "order-7", codes=["welcome20"])
    again = r(shipped, "new-in", "order-7", codes=["WELCOME20 "])
    assert again.replayed and again.redemption_ids == first.redemption_ids
    assert again.quote.final_minor == first.quote.final_minor
    assert count(shipped, "SELECT count(*) FROM {s}.redemptions") == 1
    with pytest.raises(IdempotencyConflictError, match="already used for another redemption"):
        r(shipped, "new-in", "order-7", PRO_ANNUAL)


def test_same_key_concurrently_records_once(limited: Engine) -> None:
    customers(limited, "c", country="IN")
    results = together(limited, [lambda e: r(e, "c", "same-key", codes=["limited25"]) for _ in range(12)])
    ids = {result.redemption_ids for result in results}
    assert len(ids) == 1 and len(next(iter(ids))) == 1
    assert sum(not result.replayed for result in results) == 1
    assert count(limited, "SELECT count(*) FROM {s}.redemptions") == 1
    assert count(limited, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'limited'") == 1


# ---------------------------------------------------------------------------------------- concurrency


def test_limit_holds_under_concurrency(limited: Engine) -> None:
    """40 redeemers race for a code whose promotion has 10 redemptions left: exactly 10 win."""
    customers(limited, *[f"early-{n}" for n in range(5)], *[f"racer-{n}" for n in range(40)], country="IN")
    for n in range(5):
        assert r(limited, f"early-{n}", f"early-{n}", codes=["LIMITED25"]).ok
    results = together(
        limited,
        [redeemer(f"racer-{n}", f"race-{n}", codes=["limited25"]) for n in range(40)],
    )
    won = [x for x in results if x.ok]
    lost = [x for x in results if not x.ok]
    assert len(won) == 10 and len(lost) == 30
    assert {reason.reason for x in lost for reason in x.reasons} == {"limit_reached"}
    assert all(x.redemption_ids == () for x in lost)
    assert count(limited, "SELECT count(*) FROM {s}.redemptions WHERE promotion_id = 'limited'") == 15
    assert (
        count(limited, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'limited'") == 15
    )
    assert count(limited, "SELECT count(*) FROM {s}.redemption_requests") == 15
    with limited.begin() as conn:
        after = quote(conn, SCHEMA, PRO_MONTHLY, codes=["LIMITED25"], customer_id="racer-0", at=LAUNCH)
    assert after.refused_codes[0].reason in ("limit_reached", "per_customer_limit")


def test_per_customer_limit_holds_under_concurrency(limited: Engine) -> None:
    customers(limited, "eager", country="IN")
    results = together(
        limited,
        [redeemer("eager", f"eager-{n}", codes=["again10"]) for n in range(16)],
    )
    assert sum(x.ok for x in results) == 3  # per_customer: 3
    assert {reason.reason for x in results if not x.ok for reason in x.reasons} == {"per_customer_limit"}
    assert (
        count(limited, "SELECT redeemed FROM {s}.promotion_customer_usage WHERE customer_id = 'eager'") == 3
    )


def test_single_use_code_is_used_once_under_concurrency(shipped: Engine) -> None:
    with shipped.begin() as conn:
        code = conn.execute(
            sa.text(f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' LIMIT 1")
        ).scalar_one()
    customers(shipped, *[f"c{n}" for n in range(16)], country="IN")
    results = together(
        shipped,
        [redeemer(f"c{n}", f"k{n}", PRO_ANNUAL, codes=[code]) for n in range(16)],
    )
    assert sum(x.ok for x in results) == 1
    assert {reason.reason for x in results if not x.ok for reason in x.reasons} == {"code_used"}
    assert count(shipped, "SELECT count(*) FROM {s}.promotion_codes WHERE used") == 1


# ------------------------------------------------------------------------------------------ reversals


def test_reversal_frees_the_slot(limited: Engine) -> None:
    customers(limited, *[f"c{n}" for n in range(16)], country="IN")
    done = [r(limited, f"c{n}", f"k{n}", codes=["LIMITED25"]) for n in range(16)]
    assert [x.ok for x in done] == [True] * 15 + [False]
    assert done[-1].reasons[0].reason == "limit_reached"
    with limited.begin() as conn:
        rows = reverse(conn, SCHEMA, redemption_id=done[0].redemption_ids[0], reason="refund")
    assert rows[0]["status"] == "reversed" and rows[0]["already_reversed"] is False
    assert (
        count(limited, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'limited'") == 14
    )
    assert r(limited, "c15", "k15-again", codes=["LIMITED25"]).ok  # the freed slot
    assert r(limited, "c0", "k0-again", codes=["LIMITED25"]).ok is False  # the limit is full again
    with limited.begin() as conn:
        again = reverse(conn, SCHEMA, redemption_id=done[0].redemption_ids[0], reason="refund")
    assert again[0]["already_reversed"] is True
    assert count(limited, "SELECT count(*) FROM {s}.redemptions WHERE status = 'reversed'") == 1


def test_reversal_by_key_frees_the_customer_and_the_code(shipped: Engine) -> None:
    with shipped.begin() as conn:
        code = conn.execute(
            sa.text(f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' LIMIT 1")
        ).scalar_one()
    customers(shipped, "a", "b", country="IN")
    assert r(shipped, "a", "order-a", PRO_ANNUAL, codes=[code]).ok
    assert r(shipped, "b", "order-b", PRO_ANNUAL, codes=[code]).reasons[0].reason == "code_used"
    with shipped.begin() as conn:
        rows = reverse(conn, SCHEMA, idempotency_key="order-a", reason="refund")
    assert [row["promotion_id"] for row in rows] == ["launch-codes"]
    assert r(shipped, "b", "order-b2", PRO_ANNUAL, codes=[code]).ok
    assert r(shipped, "a", "order-a2", PRO_ANNUAL, codes=[code]).reasons[0].reason == "code_used"


def test_reversal_errors(shipped: Engine) -> None:
    with shipped.begin() as conn, pytest.raises(UnknownRedemptionError, match="unknown redemption 999"):
        reverse(conn, SCHEMA, redemption_id=999, reason="refund")
    with shipped.begin() as conn, pytest.raises(UnknownRedemptionError, match="no redemption was recorded"):
        reverse(conn, SCHEMA, idempotency_key="never", reason="refund")
    with shipped.begin() as conn, pytest.raises(InvalidRequestError, match="needs a reason"):
        reverse(conn, SCHEMA, redemption_id=1, reason=" ")
    with shipped.begin() as conn, pytest.raises(InvalidRequestError):
        reverse(conn, SCHEMA, reason="refund")


# --------------------------------------------------------------------------------------- usage slots


def test_slot_caps_share_the_limit_and_follow_config_changes(limited: Engine, tmp_path: Path) -> None:
    def caps() -> tuple[int, int, int]:
        with limited.begin() as conn:
            row = conn.execute(
                sa.text(
                    f"SELECT count(*), sum(cap), sum(redeemed) FROM {SCHEMA}.promotion_usage "
                    "WHERE promotion_id = 'limited'"
                )
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    assert caps() == (16, 15, 0)
    customers(limited, *[f"c{n}" for n in range(20)], country="IN")
    assert all(r(limited, f"c{n}", f"k{n}", codes=["LIMITED25"]).ok for n in range(5))
    config = tmp_path / "pricing"
    for new_max, expected in ((12, (16, 12, 5)), (3, (16, 5, 5)), (8, (16, 8, 4))):
        path = config / "promotions" / "limited.yaml"
        text = path.read_text("utf-8")
        path.write_text(
            text.replace(
                text[text.index("max_redemptions: ") :].split(",")[0], f"max_redemptions: {new_max}"
            ),
            "utf-8",
        )
        publish(limited, config)
        assert caps() == expected, new_max
        if new_max == 3:  # lowered below what was redeemed: nothing more, and nothing taken back
            assert r(limited, "c10", "k10", codes=["LIMITED25"]).reasons[0].reason == "limit_reached"
            with limited.begin() as conn:  # a refund leaves 4 redeemed, still above the limit of 3
                reverse(conn, SCHEMA, idempotency_key="k0", reason="refund")
            assert caps() == (16, 4, 4)
            assert r(limited, "c11", "k11", codes=["LIMITED25"]).reasons[0].reason == "limit_reached"
    assert caps() == (16, 8, 4)
    assert sum(r(limited, f"c{n}", f"later-{n}", codes=["LIMITED25"]).ok for n in range(5, 20)) == 4
    with limited.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="promotion_usage_check"):
        conn.execute(
            sa.text(f"UPDATE {SCHEMA}.promotion_usage SET redeemed = cap + 1 WHERE promotion_id = 'limited'")
        )


def test_reversals_racing_redemptions_never_overshoot(limited: Engine) -> None:
    customers(limited, *[f"first-{n}" for n in range(15)], *[f"next-{n}" for n in range(24)], country="IN")
    assert all(r(limited, f"first-{n}", f"first-{n}", codes=["LIMITED25"]).ok for n in range(15))

    def refund(key: str) -> Callable[[Connection], Any]:
        def run(conn: Connection) -> Any:
            with conn.begin():
                return reverse(conn, SCHEMA, idempotency_key=key, reason="refund")

        return run

    jobs: list[Callable[[Connection], Any]] = [refund(f"first-{n}") for n in range(6)]
    jobs += [redeemer(f"next-{n}", f"next-{n}", codes=["LIMITED25"]) for n in range(24)]
    results = together(limited, jobs)
    won = sum(1 for x in results[6:] if x.ok)
    assert won <= 6
    ledger = count(
        limited, "SELECT count(*) FROM {s}.redemptions WHERE promotion_id = 'limited' AND status = 'redeemed'"
    )
    assert ledger == 15 - 6 + won <= 15
    assert (
        count(limited, "SELECT sum(redeemed) FROM {s}.promotion_usage WHERE promotion_id = 'limited'")
        == ledger
    )
    assert count(limited, "SELECT sum(cap) FROM {s}.promotion_usage WHERE promotion_id = 'limited'") == 15


def _backend_pid(conn: Connection) -> int:
    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    conn.commit()
    return int(pid)


def _blocked_by(engine: Engine, pid: int, holders: set[int]) -> int:
    """Which of `holders` (backend pids) the backend `pid` waits for, once it waits for one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with engine.begin() as conn:
            blockers = conn.execute(sa.text("SELECT pg_blocking_pids(:p)"), {"p": pid}).scalar_one()
        found = {int(b) for b in blockers} & holders
        if found:
            return found.pop()
        time.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for any of {holders}")


def test_a_redeemer_keeps_no_lock_on_a_slot_it_found_full(engine: Engine, tmp_path: Path) -> None:
    """A redeemer waits for a slot held by a checkout in flight, which then fills it. Moving on to wait for
    another slot, it must not hold the full one: a reversal, which locks every slot in slot order, would
    deadlock with it (seen as test_reversals_racing_redemptions_never_overshoot failing now and then)."""
    two = LIMITED.replace("max_redemptions: 15", "max_redemptions: 2")  # slots 0 and 1 have room, 1 each
    publish(engine, scenario_config(tmp_path, {"limited": two}))
    customers(engine, "a", "b", "late", country="IN")
    separate = sa.create_engine(engine.url, poolclass=NullPool)
    try:
        with separate.connect() as a, separate.connect() as b, separate.connect() as late:
            pid = {name: _backend_pid(conn) for name, conn in (("a", a), ("b", b), ("late", late))}
            for name, conn in (("a", a), ("b", b)):  # two checkouts in flight, each holding one slot
                conn.begin()
                assert redeem(
                    conn,
                    SCHEMA,
                    PRO_MONTHLY,
                    customer_id=name,
                    idempotency_key=name,
                    codes=["LIMITED25"],
                    at=LAUNCH,
                ).ok
            result: list[Redemption] = []
            waiting = threading.Thread(
                target=lambda: result.append(r(late, "late", "late", codes=["LIMITED25"]))
            )
            waiting.start()
            holders = {pid["a"]: ("a", a), pid["b"]: ("b", b)}
            first, first_conn = holders.pop(_blocked_by(engine, pid["late"], set(holders)))
            first_conn.commit()  # its slot is full now
            _blocked_by(engine, pid["late"], set(holders))  # `late` waits for the other slot
            with engine.begin() as conn:
                slot = conn.execute(
                    sa.text(f"SELECT usage_slot FROM {SCHEMA}.redemptions WHERE idempotency_key = :k"),
                    {"k": first},
                ).scalar_one()
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            f"SELECT 1 FROM {SCHEMA}.promotion_usage "
                            "WHERE promotion_id = 'limited' AND slot = :s FOR UPDATE NOWAIT"
                        ),
                        {"s": slot},
                    )
                free = True
            except OperationalError:
                free = False
            for _, conn in holders.values():
                conn.commit()
            waiting.join(timeout=60)
        assert free, f"slot {slot}, found full, is still locked by the redeemer waiting for another one"
        assert [x.ok for x in result] == [False] and result[0].reasons[0].reason == "limit_reached"
    finally:
        separate.dispose()
