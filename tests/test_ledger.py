"""The token ledger on real PostgreSQL: draw order, limits in the rules' time zone, idempotency,
reservations, admin operations, purchases and concurrent admission on one account."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from database import ledger
from database.customers import UnknownCustomerError
from tests.ledger_support import S, add_customer, assert_ledger_consistent, publish_shipped

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The shipped catalog (token rules in Asia/Kolkata) with customers: `solo` (no plan), `pro1`, `free1`.
    After the test, every account's cached balance must equal its entries and its grants."""
    publish_shipped(engine)
    add_customer(engine, "solo")
    add_customer(engine, "pro1", "pro")
    add_customer(engine, "free1", "free")
    yield engine
    assert_ledger_consistent(engine)


def grant(engine: Engine, customer: str, amount: int, **options: Any) -> dict[str, Any]:
    options.setdefault("reason", "test")
    options.setdefault("at", T0 - timedelta(days=1))
    with engine.begin() as conn:
        return ledger.grant(conn, S, customer, amount, **options)


def consume(
    engine: Engine,
    customer: str,
    request_id: str,
    when: datetime = T0,
    *,
    model: str = "gpt-4o",
    input_tokens: int = 500,
    output_tokens: int = 0,
) -> ledger.Decision:
    with engine.begin() as conn:
        return ledger.consume(conn, S, customer, model, input_tokens, output_tokens, request_id, at=when)


def credits_tokens(credits: int) -> int:
    """Input tokens of gpt-4o (2 credits per 1k) that cost exactly `credits`."""
    return credits * 500


# ------------------------------------------------------------------------------------------- basics


def test_credits_follow_the_model_rates_rounded_up_with_a_minimum(db: Engine) -> None:
    grant(db, "solo", 1000)
    assert consume(db, "solo", "r1", input_tokens=1200, output_tokens=350).credits == 4  # ceil(2.4 + 0.7)
    low = consume(db, "solo", "r2", model="claude-3-5-sonnet", input_tokens=100, output_tokens=100)
    assert (low.credits, low.remaining) == (1, 995)
    assert consume(db, "solo", "r3", input_tokens=0).credits == 1  # the model's minimum
    with db.connect() as conn:
        usage = conn.execute(
            sa.text(f"SELECT credits, cost, cost_currency FROM {S}.token_usage WHERE request_id = 'r1'")
        ).one()
    assert usage[0] == 4 and str(usage[1]) == "0.00775" and usage[2] == "USD"


def test_draws_by_priority_then_earliest_expiry_then_oldest(db: Engine) -> None:
    late = grant(db, "solo", 10, source="admin", expires_at=T0 + timedelta(days=30))
    never = grant(db, "solo", 10, source="admin")
    soon = grant(db, "solo", 10, source="admin", expires_at=T0 + timedelta(days=2))
    first = grant(db, "solo", 10, source="allowance", expires_at=T0 + timedelta(days=60))
    older = grant(db, "solo", 5, source="admin", at=T0 - timedelta(days=3))
    newer = grant(db, "solo", 5, source="admin", at=T0 - timedelta(days=2))
    expired = grant(
        db, "solo", 50, source="boost", expires_at=T0 - timedelta(hours=1), at=T0 - timedelta(days=1)
    )

    decision = consume(db, "solo", "r1", input_tokens=credits_tokens(25))
    assert decision.allowed and decision.remaining == 25
    with db.connect() as conn:
        remaining: dict[int, int] = dict(
            conn.execute(sa.text(f"SELECT id, remaining FROM {S}.token_grants")).all()
        )
    assert remaining[first["id"]] == 0  # allowance (priority 100) before admin grants (300)
    assert remaining[soon["id"]] == 0  # then the earliest expiry
    assert remaining[late["id"]] == 5
    assert remaining[never["id"]] == 10  # never-expiring grants come last, oldest first
    assert (remaining[older["id"]], remaining[newer["id"]]) == (5, 5)
    assert remaining[expired["id"]] == 50  # an expired grant is never spent


def test_refusals_and_unknown_names(db: Engine) -> None:
    grant(db, "solo", 3)
    refused = consume(db, "solo", "r1", input_tokens=credits_tokens(4))
    assert not refused.allowed and refused.reason == "insufficient_balance"
    assert refused.message == "insufficient balance: 4 credits needed, 3 available"
    assert consume(db, "solo", "r2", input_tokens=credits_tokens(3)).remaining == 0
    with pytest.raises(UnknownCustomerError):
        consume(db, "nobody", "r3")
    with pytest.raises(ledger.UnknownLedgerReferenceError, match='unknown AI model "gpt-9"'):
        consume(db, "solo", "r4", model="gpt-9")
    with pytest.raises(ledger.LedgerError, match="invalid request id"):
        consume(db, "solo", "has space")
    grant(db, "pro1", 100)
    premium_only = consume(db, "pro1", "r5", model="gpt-4")
    assert premium_only.reason == "model_not_in_plan"
    assert premium_only.message == "model gpt-4 is not available on plan pro"


def test_repeated_request_id_returns_the_first_answer_and_changes_nothing(db: Engine) -> None:
    grant(db, "solo", 10)
    first = consume(db, "solo", "r1", input_tokens=credits_tokens(4))
    again = consume(db, "solo", "r1", input_tokens=credits_tokens(9), when=T0 + timedelta(hours=1))
    assert again.replayed and not first.replayed
    assert (again.allowed, again.credits, again.remaining) == (True, 4, 6)
    refused = consume(db, "solo", "r2", input_tokens=credits_tokens(50))
    assert consume(db, "solo", "r2").reason == refused.reason == "insufficient_balance"
    with db.connect() as conn:
        assert conn.execute(sa.text(f"SELECT balance FROM {S}.token_accounts")).scalar_one() == 6
        assert conn.execute(sa.text(f"SELECT count(*) FROM {S}.token_usage")).scalar_one() == 1
    grant(db, "pro1", 10)
    with pytest.raises(ledger.LedgerConflictError, match='request id "r1" was already used'):
        consume(db, "pro1", "r1")


def test_entries_are_append_only(db: Engine) -> None:
    grant(db, "solo", 10)
    for statement in ("UPDATE {S}.token_entries SET amount = 1000", "DELETE FROM {S}.token_entries"):
        with pytest.raises(DBAPIError, match="append-only"), db.begin() as conn:
            conn.execute(sa.text(statement.format(S=S)))
    with pytest.raises(DBAPIError, match="credit_balance_not_negative"), db.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.token_accounts SET balance = -1"))


# ------------------------------------------------------------------------------------------- limits


def test_daily_limit_resets_at_midnight_in_the_rules_time_zone(db: Engine) -> None:
    grant(db, "pro1", 5000, at=at("2026-03-01T00:00:00+00:00"))
    start = at("2026-03-10T17:00:00+00:00")  # 22:30 IST; pro: daily 300, per request 50, 200/min
    for i in range(6):
        decision = consume(
            db, "pro1", f"d{i}", start + timedelta(minutes=2 * i), input_tokens=credits_tokens(45)
        )
        assert decision.allowed, decision.message
    refused = consume(db, "pro1", "d6", start + timedelta(minutes=12), input_tokens=credits_tokens(45))
    assert refused.reason == "daily_limit"
    assert refused.message == "daily limit 300 reached, resets 00:00 IST"
    assert refused.raw["resets_at"].startswith("2026-03-10T18:30:00")
    assert refused.raw["limits"]["daily_used"] == 270
    small = consume(db, "pro1", "d7", start + timedelta(minutes=14), input_tokens=credits_tokens(30))
    assert small.allowed  # 270 + 30 fits exactly
    with db.begin() as conn:  # the IST label must not leak into the caller's session time zone
        conn.execute(sa.text("SET LOCAL TimeZone = 'America/New_York'"))
        late = ledger.consume(conn, S, "pro1", "gpt-4o", 500, 0, "d8", at=at("2026-03-10T18:29:59+00:00"))
        assert late.message == "daily limit 300 reached, resets 00:00 IST"
        assert conn.execute(sa.text("SELECT current_setting('TimeZone')")).scalar_one() == "America/New_York"
    assert consume(db, "pro1", "d9", at("2026-03-10T18:30:00+00:00")).allowed


def test_monthly_limit_override_and_month_boundary_in_ist(db: Engine) -> None:
    grant(db, "pro1", 5000, at=at("2026-03-01T00:00:00+00:00"))
    with db.begin() as conn:
        limits = ledger.set_limits(
            conn,
            S,
            "pro1",
            per_request=None,
            daily=None,
            monthly=100,
            reason="abuse review",
            actor="ops",
            at=at("2026-03-01T00:00:00+00:00"),
        )
    assert (limits["monthly"], limits["daily"], limits["per_request"], limits["overridden"]) == (
        100,
        300,
        50,
        True,
    )
    end = at("2026-03-31T18:00:00+00:00")  # 23:30 IST on 31 March
    assert consume(db, "pro1", "m1", end, input_tokens=credits_tokens(45)).allowed
    assert consume(db, "pro1", "m2", end + timedelta(minutes=5), input_tokens=credits_tokens(45)).allowed
    refused = consume(db, "pro1", "m3", end + timedelta(minutes=10), input_tokens=credits_tokens(45))
    assert refused.message == "monthly limit 100 reached, resets 2026-04-01 00:00 IST"
    assert consume(db, "pro1", "m4", at("2026-03-31T18:30:00+00:00"), input_tokens=credits_tokens(45)).allowed


def test_per_request_limit_and_throttles(db: Engine) -> None:
    grant(db, "pro1", 5000, at=at("2026-03-01T00:00:00+00:00"))
    over = consume(db, "pro1", "p0", T0, input_tokens=credits_tokens(51))
    assert over.message == "request needs 51 credits, above the per-request limit 50"
    for i in range(20):  # pro: 20 requests per rolling minute
        assert consume(db, "pro1", f"q{i}", T0 + timedelta(seconds=i)).allowed
    assert consume(db, "pro1", "q20", T0 + timedelta(seconds=30)).reason == "throttle_requests"
    assert consume(db, "pro1", "q21", T0 + timedelta(seconds=61)).allowed
    later = T0 + timedelta(hours=1)  # 200 credits per rolling minute
    for i in range(4):
        assert consume(db, "pro1", f"c{i}", later, input_tokens=credits_tokens(45)).allowed
    assert consume(db, "pro1", "c4", later, input_tokens=credits_tokens(45)).reason == "throttle_credits"
    assert consume(db, "pro1", "c5", later, input_tokens=credits_tokens(20)).allowed


def test_admission_reads_only_its_own_customers_usage_once_the_rollup_is_analysed(db: Engine) -> None:
    """With the daily rollup analysed while it holds a day or two of many customers (as autovacuum leaves it
    early in a month), a request still reads its own customer's usage rows and no one else's, also once
    PostgreSQL has switched the admission to its cached generic plans (after five calls in a session)."""
    day = T0.astimezone(ZoneInfo("Asia/Kolkata")).date()
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.token_usage_daily (day, customer_id, model_id, request_type, requests, "
                "input_tokens, output_tokens, credits, cost, cost_currency) "
                "SELECT d, 'other-' || n, 'gpt-4o', 'chat', 1, 500, 0, 1, 0.001, 'USD' "
                "FROM generate_series(1, 400) n, unnest(ARRAY[CAST(:day AS date) - 1, CAST(:day AS date)]) d"
            ),
            {"day": day},
        )
        conn.execute(sa.text(f"ANALYZE {S}.token_usage_daily"))
        ledger.set_limits(
            conn,
            S,
            "solo",
            per_request=None,
            daily=1000,
            monthly=10000,
            reason="test",
            at=T0 - timedelta(days=1),
        )
    grant(db, "solo", 100)
    fetched = sa.text(
        "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) FROM pg_stat_xact_user_tables "
        "WHERE schemaname = :schema AND relname = 'token_usage_daily'"
    )
    with db.connect() as conn:
        for n in range(8):
            with conn.begin():
                # Counted by this session since its stats were last flushed, which may span transactions.
                before = conn.execute(fetched, {"schema": S}).scalar_one()
                decision = ledger.consume(conn, S, "solo", "gpt-4o", 500, 0, f"own-{n}", at=T0)
                read = conn.execute(fetched, {"schema": S}).scalar_one() - before
            assert decision.allowed and decision.raw["limits"]["daily_used"] == n + 1
            # Its own row of the day (and the write's look at it), not the 800 rows of the others.
            assert read <= 5, f"call {n + 1} read {read} rows of token_usage_daily"


# ------------------------------------------------------------------------------------------- reservations


def test_reserve_then_commit_or_release(db: Engine) -> None:
    grant(db, "solo", 100)
    with db.begin() as conn:
        held = ledger.reserve(conn, S, "solo", "gpt-4o", credits_tokens(30), 0, "s1", at=T0)
        assert held.allowed and held.remaining == 70
        settled = ledger.commit(conn, S, "s1", credits_tokens(12), 0, at=T0 + timedelta(minutes=1))
        assert (settled["charged"], settled["remaining"], settled["shortfall"]) == (12, 88, 0)
        assert ledger.commit(conn, S, "s1", 999, 0)["replayed"] is True
        ledger.reserve(conn, S, "solo", "gpt-4o", credits_tokens(50), 0, "s2", at=T0)
        released = ledger.release(conn, S, "s2", at=T0 + timedelta(minutes=1))
        assert (released["released"], released["remaining"]) == (50, 88)
        assert ledger.release(conn, S, "s2")["replayed"] is True
        with pytest.raises(ledger.LedgerError, match="was released"), conn.begin_nested():
            ledger.commit(conn, S, "s2", 1, 0)
        with (
            pytest.raises(ledger.UnknownLedgerReferenceError, match='no reservation "nope"'),
            conn.begin_nested(),
        ):
            ledger.release(conn, S, "nope")
        big = ledger.reserve(conn, S, "solo", "gpt-4o", credits_tokens(80), 0, "s3", at=T0)
        assert big.allowed and big.remaining == 8
        assert ledger.consume(conn, S, "solo", "gpt-4o", credits_tokens(9), 0, "s4", at=T0).reason == (
            "insufficient_balance"
        )
        # Unsettled for 15 minutes (token_rules): the next admission gives the credits back...
        after = ledger.consume(
            conn, S, "solo", "gpt-4o", credits_tokens(9), 0, "s5", at=T0 + timedelta(minutes=16)
        )
        assert after.allowed and after.remaining == 79
        # ...and a late commit still charges the work done, never beyond the balance.
        late = ledger.commit(conn, S, "s3", credits_tokens(100), 0, at=T0 + timedelta(minutes=17))
        assert (late["charged"], late["shortfall"], late["expired"], late["remaining"]) == (79, 21, True, 0)


# ------------------------------------------------------------------------------------------- admin


def test_grants_are_idempotent_per_reference_and_audited(db: Engine) -> None:
    first = grant(db, "solo", 300, reference="ticket-1", actor="asha")
    again = grant(db, "solo", 300, reference="ticket-1", actor="asha")
    assert (first["id"], first["replayed"], again["replayed"], again["balance"]) == (
        first["id"],
        False,
        True,
        300,
    )
    with pytest.raises(ledger.LedgerConflictError):
        grant(db, "pro1", 300, reference="ticket-1")
    with pytest.raises(ledger.LedgerError, match="need a reason"):
        grant(db, "solo", 5, reason=None)
    with pytest.raises(ledger.LedgerLimitError, match="above the maximum 100000"):
        grant(db, "solo", 100_001)
    with db.begin() as conn:
        revoked = ledger.revoke(conn, S, "solo", 100, reason="refund", actor="asha", at=T0)
        assert revoked["balance"] == 200
        with pytest.raises(ledger.LedgerLimitError, match="only 200 available"), conn.begin_nested():
            ledger.revoke(conn, S, "solo", 201, reason="refund", at=T0)
    with db.connect() as conn:
        entries = conn.execute(
            sa.text(f"SELECT kind, amount, balance_after, actor, reason FROM {S}.token_entries ORDER BY id")
        ).all()
    assert [tuple(e) for e in entries] == [
        ("grant", 300, 300, "asha", "test"),
        ("adjust", -100, 200, "asha", "refund"),
    ]


def test_boosts_are_capped_by_the_rules(db: Engine) -> None:
    with db.begin() as conn:
        boosted = ledger.boost(conn, S, "pro1", 500, timedelta(hours=48), reason="outage", at=T0)
        assert boosted["expires_at"].startswith("2026-03-12T06:00:00")
        with pytest.raises(ledger.LedgerLimitError, match="above the maximum 1000"), conn.begin_nested():
            ledger.boost(conn, S, "pro1", 1001, timedelta(hours=1), reason="x", at=T0)
        with pytest.raises(ledger.LedgerLimitError, match="longer than the maximum"), conn.begin_nested():
            ledger.boost(conn, S, "pro1", 10, timedelta(hours=73), reason="x", at=T0)
        ledger.boost(conn, S, "pro1", 10, timedelta(hours=1), reason="again", at=T0)
        with pytest.raises(ledger.LedgerLimitError, match="already had 2 boosts"), conn.begin_nested():
            ledger.boost(conn, S, "pro1", 10, timedelta(hours=1), reason="third", at=T0)
    # Boosts are drawn before everything else and stop counting when they end.
    grant(db, "pro1", 100, source="allowance")
    assert consume(db, "pro1", "b1", T0 + timedelta(minutes=30)).remaining == 609
    with db.connect() as conn:
        drawn = conn.execute(
            sa.text(f"SELECT source, amount - remaining FROM {S}.token_grants WHERE remaining < amount")
        ).all()
    assert [tuple(d) for d in drawn] == [("boost", 1)]
    assert consume(db, "pro1", "b2", T0 + timedelta(hours=49)).remaining == 99  # both boosts have ended


# ------------------------------------------------------------------------------------------- purchases


def test_purchase_grants_the_package_once_per_payment(db: Engine) -> None:
    with db.begin() as conn:
        bought = ledger.purchase(conn, S, "pro1", "extra-500", "pay_123", actor="payu", at=T0)
        again = ledger.purchase(
            conn, S, "pro1", "extra-500", "pay_123", actor="payu", at=T0 + timedelta(hours=1)
        )
    assert (bought["amount"], bought["source"], bought["package_id"], bought["priority"]) == (
        500,
        "package",
        "extra-500",
        200,
    )
    assert bought["expires_at"].startswith("2026-04-09T06:00:00")  # validity 30 days
    assert again["replayed"] and again["id"] == bought["id"] and again["balance"] == 500
    with db.begin() as conn, pytest.raises(ledger.LedgerLimitError, match="is for plans pro, premium"):
        ledger.purchase(conn, S, "free1", "extra-500", "pay_124", at=T0)
    with db.begin() as conn, pytest.raises(ledger.UnknownLedgerReferenceError, match="unknown token package"):
        ledger.purchase(conn, S, "pro1", "extra-9", "pay_125", at=T0)
    with db.begin() as conn, pytest.raises(ledger.LedgerConflictError):
        ledger.purchase(conn, S, "solo", "extra-500", "pay_123", at=T0)


def test_account_summary(db: Engine) -> None:
    grant(db, "pro1", 100, source="allowance")
    consume(db, "pro1", "a1", T0, input_tokens=credits_tokens(7))
    with db.connect() as conn:
        summary = ledger.account_summary(conn, S, "pro1", at=T0)
        with pytest.raises(UnknownCustomerError):
            ledger.account_summary(conn, S, "nobody")
    assert (summary["balance"], summary["usable"], summary["timezone"]) == (93, 93, "Asia/Kolkata")
    assert summary["usage_today"] == {"requests": 1, "credits": 7} == summary["usage_month"]
    assert summary["limits"]["daily"] == 300 and summary["grants"][0]["remaining"] == 93
    assert [e["kind"] for e in summary["entries"]] == ["consume", "grant"]


# ------------------------------------------------------------------------------------------- concurrency


def test_concurrent_consumers_never_overspend_one_account(db: Engine, pg_url: str) -> None:
    """64 threads, each on its own connection, hammer one account with 3-credit requests (some request ids
    shared between threads). Afterwards: balance = grants − accepted credits, nothing negative, every refusal
    has a reason and every request id was charged at most once."""
    grant(db, "solo", 400)
    grant(db, "solo", 200, source="allowance", expires_at=T0 + timedelta(days=1))
    threads, per_thread = 64, 8
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(threads)
    results: list[tuple[str, ledger.Decision]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                # Every 4th request id is shared by a pair of threads: a retry racing its original.
                request_id = f"shared-{n // 2}-{i}" if i % 4 == 0 else f"t{n}-{i}"
                with racer.begin() as conn:
                    decision = ledger.consume(conn, S, "solo", "gpt-4o", 1500, 0, request_id, at=T0)
                with lock:
                    results.append((request_id, decision))
        except BaseException as exc:  # collected, then re-raised by the test thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert not errors, errors[0]
    assert len(results) == threads * per_thread

    accepted: dict[str, int] = {}
    for request_id, decision in results:
        if decision.allowed:
            assert accepted.setdefault(request_id, decision.credits) == decision.credits
        else:
            assert decision.reason == "insufficient_balance" and decision.message
    assert sum(accepted.values()) == 600  # 200 of the 448 distinct requests fit, to the credit
    with db.connect() as conn:
        balance = conn.execute(sa.text(f"SELECT balance FROM {S}.token_accounts")).scalar_one()
        charged = conn.execute(
            sa.text(f"SELECT count(*), count(DISTINCT request_id), sum(credits) FROM {S}.token_usage")
        ).one()
        entries = conn.execute(
            sa.text(f"SELECT count(*) FROM {S}.token_entries WHERE kind = 'consume'")
        ).scalar_one()
    assert balance == 600 - sum(accepted.values()) == 0
    assert tuple(charged) == (len(accepted), len(accepted), 600) and entries == len(accepted)


def test_concurrent_consumers_never_overshoot_a_daily_limit(db: Engine) -> None:
    """The limit check and the charge happen under the same lock: 64 racing requests fill a 100-credit
    daily limit to 99 (33 × 3) and not one credit more, though the balance would allow far more."""
    grant(db, "solo", 1000)
    with db.begin() as conn:
        ledger.set_limits(
            conn,
            S,
            "solo",
            per_request=None,
            daily=100,
            monthly=None,
            reason="cap",
            at=T0 - timedelta(days=1),
        )
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(64)
    decisions: list[ledger.Decision] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            with racer.begin() as conn:
                decisions.append(ledger.consume(conn, S, "solo", "gpt-4o", 1500, 0, f"l{n}", at=T0))
        except BaseException as exc:  # collected, then re-raised by the test thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(64)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert not errors, errors[0]
    allowed = [d for d in decisions if d.allowed]
    assert len(allowed) == 33 and sum(d.credits for d in allowed) == 99
    assert {d.reason for d in decisions if not d.allowed} == {"daily_limit"}


# ------------------------------------------------------------------------------------------- tick


def _tick(engine: Engine, when: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        return ledger.tick(conn, S, at=when)


def test_tick_renews_monthly_allowances_and_expires_grants_once(db: Engine) -> None:
    # pro: 500 credits every month; the subscription's period runs 2026-01-01 .. 2027-01-01 (annual-like).
    first = _tick(db, at("2026-01-15T00:00:00+00:00"))
    assert (first["allowances_granted"], first["credits_granted"], first["grants_expired"]) == (1, 500, 0)
    assert _tick(db, at("2026-01-20T00:00:00+00:00"))["allowances_granted"] == 0  # same period: nothing more
    assert consume(db, "pro1", "t1", at("2026-01-20T00:00:00+00:00"), input_tokens=credits_tokens(40)).allowed

    second = _tick(db, at("2026-02-01T00:00:01+00:00"))  # January's allowance lapses, February's arrives
    assert (second["grants_expired"], second["credits_expired"]) == (1, 460)
    assert (second["allowances_granted"], second["credits_granted"]) == (1, 500)
    again = _tick(db, at("2026-02-01T00:00:02+00:00"))
    assert (again["grants_expired"], again["allowances_granted"]) == (0, 0)
    with db.connect() as conn:
        summary = ledger.account_summary(conn, S, "pro1", at=at("2026-02-02T00:00:00+00:00"))
    assert summary["balance"] == 500 and len(summary["grants"]) == 1
    assert summary["grants"][0]["reference"].endswith(":2026-02-01T00:00:00Z")
    kinds = [e["kind"] for e in reversed(summary["entries"])]
    assert kinds == ["grant", "consume", "expire", "grant"]


def test_tick_releases_idle_reservations(db: Engine) -> None:
    grant(db, "solo", 50)
    with db.begin() as conn:
        ledger.reserve(conn, S, "solo", "gpt-4o", credits_tokens(20), 0, "idle", at=T0)
    assert _tick(db, T0 + timedelta(minutes=5))["reservations_released"] == 0
    assert _tick(db, T0 + timedelta(minutes=15))["reservations_released"] == 1
    with db.connect() as conn:
        assert ledger.account_summary(conn, S, "solo", at=T0)["usable"] == 50


def test_two_concurrent_ticks_change_nothing_more_than_one(db: Engine) -> None:
    for n in range(20):
        add_customer(db, f"sub{n}", "pro")
    grant(db, "solo", 10, expires_at=T0 - timedelta(hours=1), at=T0 - timedelta(days=2))
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def work() -> None:
        barrier.wait()
        with racer.begin() as conn:
            results.append(ledger.tick(conn, S, at=T0))

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    counts = sorted((r["allowances_granted"], r["grants_expired"]) for r in results)
    assert counts == [(0, 0), (21, 1)]  # 20 new subscribers + pro1; the lapsed admin grant
    with db.connect() as conn:
        grants = conn.execute(
            sa.text(
                f"SELECT count(*), count(DISTINCT reference) FROM {S}.token_grants WHERE source = 'allowance'"
            )
        ).one()
    assert tuple(grants) == (21, 21)
