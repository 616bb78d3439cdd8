"""Shared credit pools on real PostgreSQL: creation from the template, members and their caps, the draw
rule (own credits first, then the pool), reservations split across the two accounts, the CLI, and 64
concurrent members racing for one pool."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.token_commands import tokens_app
from database import ledger, pools
from database.customers import UnknownCustomerError
from tests.ledger_support import S, add_customer, assert_ledger_consistent, publish_shipped

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)  # 11:30 IST
Run = Callable[..., Any]


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The shipped catalog (template `team`: premium owners, 10 members, 200/day and 1000/month each); `boss`
    on premium, `pro1` on pro, members m0…m11 with no plan (so no limits of their own)."""
    publish_shipped(engine)
    add_customer(engine, "boss", "premium")
    add_customer(engine, "pro1", "pro")
    for n in range(12):
        add_customer(engine, f"m{n}")
    yield engine
    assert_ledger_consistent(engine)


def tx(engine: Engine, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with engine.begin() as conn:
        return fn(conn, S, *args, **kwargs)


def team(engine: Engine, members: int = 3, credits: int = 1000) -> None:
    tx(
        engine,
        pools.create_pool,
        "acme",
        "team",
        "boss",
        reason="signed",
        actor="asha",
        at=T0 - timedelta(days=1),
    )
    for n in range(members):
        tx(engine, pools.add_member, "acme", f"m{n}", reason="joined", at=T0 - timedelta(days=1))
    tx(engine, pools.grant_pool, "acme", credits, reason="team credits", at=T0 - timedelta(days=1))


def consume(
    engine: Engine, customer: str, request_id: str, credits: int, when: datetime = T0
) -> ledger.Decision:
    """gpt-4o costs 2 credits per 1k input tokens: 500 tokens a credit."""
    with engine.begin() as conn:
        return ledger.consume(conn, S, customer, "gpt-4o", credits * 500, 0, request_id, at=when)


def test_members_draw_their_own_credits_first_then_the_pool(db: Engine) -> None:
    team(db)
    tx(db, ledger.grant, "m0", 30, reason="own", at=T0 - timedelta(days=1))
    first = consume(db, "m0", "r1", 20)
    assert first.allowed and first.raw["pool"]["drawn"] == 0 and first.remaining == 10 + 1000
    split = consume(db, "m0", "r2", 25)  # 10 own + 15 from the pool
    assert split.allowed and split.raw["pool"]["drawn"] == 15 and split.raw["pool"]["remaining"] == 985
    assert (split.raw["balance"], split.raw["pool"]["member_daily_used"]) == (0, 15)
    with db.connect() as conn:
        entries = conn.execute(
            sa.text(
                f"SELECT a.kind, e.amount FROM {S}.token_entries e "
                f"JOIN {S}.token_accounts a ON a.id = e.account_id WHERE e.request_id = 'r2' ORDER BY a.kind"
            )
        ).all()
        usage = conn.execute(
            sa.text(f"SELECT credits FROM {S}.token_usage WHERE request_id = 'r2'")
        ).scalar_one()
    assert [tuple(e) for e in entries] == [("customer", -10), ("pool", -15)] and usage == 25
    # Outsiders never touch the pool.
    outsider = consume(db, "m9", "r3", 5)
    assert outsider.reason == "insufficient_balance" and "pool" not in outsider.raw
    assert consume(db, "m0", "r2", 25).replayed


def test_member_caps_refuse_with_the_reset_time_in_the_rules_zone(db: Engine) -> None:
    team(db, credits=5000)
    tx(db, pools.add_member, "acme", "m1", reason="smaller cap", daily=50, monthly=120, at=T0)
    for i in range(4):
        assert consume(db, "m0", f"a{i}", 50).allowed
    refused = consume(db, "m0", "a4", 1)
    assert refused.reason == "pool_member_daily_limit"
    assert refused.message == "pool member daily limit 200 reached, resets 00:00 IST"
    assert refused.raw["resets_at"].startswith("2026-03-10T18:30:00")
    assert consume(db, "m0", "a5", 1, T0 + timedelta(hours=13)).allowed  # 00:30 IST the next day
    assert consume(db, "m1", "b0", 50).allowed
    assert consume(db, "m1", "b1", 50, T0 + timedelta(days=1)).allowed
    monthly = consume(db, "m1", "b2", 30, T0 + timedelta(days=2))
    assert monthly.message == "pool member monthly limit 120 reached, resets 2026-04-01 00:00 IST"
    assert consume(db, "m1", "b3", 20, T0 + timedelta(days=2)).allowed  # 120 exactly
    # A reservation's pool part counts against the cap while it is open.
    held = tx(db, ledger.reserve, "m2", "gpt-4o", 150 * 500, 0, "h1", at=T0)
    assert held.allowed and held.raw["pool"]["drawn"] == 150
    assert consume(db, "m2", "h2", 51).reason == "pool_member_daily_limit"
    assert consume(db, "m2", "h3", 50).allowed


def test_reservations_settle_each_share_to_its_account(db: Engine) -> None:
    team(db)
    tx(db, ledger.grant, "m0", 10, reason="own", at=T0 - timedelta(days=1))
    held = tx(db, ledger.reserve, "m0", "gpt-4o", 40 * 500, 0, "s1", at=T0)
    assert held.allowed and held.raw["pool"]["drawn"] == 30 and held.remaining == 970
    done = tx(db, ledger.commit, "s1", 25 * 500, 0, at=T0 + timedelta(minutes=1))
    assert (done["charged"], done["pool"]["drawn"], done["remaining"]) == (25, 15, 985)
    tx(db, ledger.reserve, "m0", "gpt-4o", 100 * 500, 0, "s2", at=T0)
    released = tx(db, ledger.release, "s2", at=T0 + timedelta(minutes=1))
    assert released["remaining"] == 985
    # Commit beyond the member's cap: the pool pays only up to the cap; the rest is shortfall.
    tx(db, ledger.reserve, "m0", "gpt-4o", 100 * 500, 0, "s3", at=T0)
    late = tx(db, ledger.commit, "s3", 400 * 500, 0, at=T0 + timedelta(minutes=2))
    assert (late["charged"], late["shortfall"], late["pool"]["drawn"]) == (185, 215, 185)
    # Expired reservations give the pool its share back too.
    tx(db, ledger.reserve, "m1", "gpt-4o", 60 * 500, 0, "s4", at=T0)
    assert tx(db, ledger.tick, at=T0 + timedelta(minutes=20))["reservations_released"] == 1
    with db.connect() as conn:
        summary = pools.pool_summary(conn, S, "acme", at=T0 + timedelta(minutes=20))
    assert (
        summary["usable"] == 800 and {m["customer"]: m["used_today"] for m in summary["members"]}["m0"] == 200
    )


def test_pool_administration_rules(db: Engine) -> None:
    with pytest.raises(
        ledger.LedgerLimitError, match='is for plans premium, and customer "pro1" is on plan pro'
    ):
        tx(db, pools.create_pool, "p1", "team", "pro1", reason="x")
    with pytest.raises(ledger.UnknownLedgerReferenceError, match='unknown pool template "gang"'):
        tx(db, pools.create_pool, "p1", "gang", "boss", reason="x")
    with pytest.raises(ledger.LedgerError, match="invalid pool id"):
        tx(db, pools.create_pool, "Bad Id", "team", "boss", reason="x")
    with pytest.raises(UnknownCustomerError):
        tx(db, pools.create_pool, "p1", "team", "nobody", reason="x")
    created = tx(db, pools.create_pool, "acme", "team", "boss", reason="signed", actor="asha")
    again = tx(db, pools.create_pool, "acme", "team", "boss", reason="signed", actor="asha")
    assert (created["replayed"], again["replayed"], created["members"][0]["role"]) == (False, True, "owner")
    for n in range(9):
        tx(db, pools.add_member, "acme", f"m{n}", reason="joined")
    with pytest.raises(ledger.LedgerLimitError, match='pool "acme" is full: 10 members'):
        tx(db, pools.add_member, "acme", "m9", reason="joined")
    with pytest.raises(ledger.LedgerLimitError, match="above the template's 200"):
        tx(db, pools.add_member, "acme", "m0", reason="more", daily=201)
    with pytest.raises(ledger.LedgerLimitError, match="cannot be removed"):
        tx(db, pools.remove_member, "acme", "boss", reason="x")
    removed = tx(db, pools.remove_member, "acme", "m8", reason="left", actor="asha")
    assert len(removed["members"]) == 9
    with pytest.raises(ledger.UnknownLedgerReferenceError, match='"m8" is not a member'):
        tx(db, pools.remove_member, "acme", "m8", reason="left")
    with pytest.raises(ledger.UnknownLedgerReferenceError, match='unknown pool "nope"'):
        tx(db, pools.add_member, "nope", "m9", reason="x")
    with pytest.raises(ledger.LedgerError, match="needs a reason"):
        tx(db, pools.add_member, "acme", "m9", reason=" ")
    with db.connect() as conn:
        events = conn.execute(
            sa.text(f"SELECT kind, customer_id, actor, reason FROM {S}.token_pool_events ORDER BY id")
        ).all()
    assert [e[0] for e in events] == ["create"] + ["add"] * 9 + ["remove"]
    assert tuple(events[-1]) == ("remove", "m8", "asha", "left")


def test_concurrent_members_never_overspend_the_pool_nor_their_caps(db: Engine) -> None:
    """64 threads, each on its own connection, consume as 9 members of one pool (own credits, then the
    pool), with some request ids shared between threads (a retry racing its original). Afterwards the pool
    balance = its grants − the pool's share of accepted requests exactly, nothing is negative, every refusal
    has a reason, every request id was charged once and no member took more than their cap."""
    team(db, members=9, credits=1500)
    tx(db, pools.add_member, "acme", "m0", reason="tighter", daily=60, monthly=60, at=T0 - timedelta(days=1))
    for n in range(9):
        tx(db, ledger.grant, f"m{n}", 7, reason="own", at=T0 - timedelta(days=1))
    threads, per_thread = 64, 12
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(threads)
    results: list[tuple[str, str, ledger.Decision]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            barrier.wait()
            member = f"m{n % 9}"
            for i in range(per_thread):
                # Threads n and n + 9 act for the same member: every 3rd request id is shared by them.
                request_id = f"shared-{n % 9}-{n // 18}-{i}" if i % 3 == 0 else f"t{n}-{i}"
                with racer.begin() as conn:
                    decision = ledger.consume(conn, S, member, "gpt-4o", 5 * 500, 0, request_id, at=T0)
                with lock:
                    results.append((member, request_id, decision))
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

    accepted: dict[str, tuple[str, int]] = {}
    for member, request_id, decision in results:
        if decision.allowed:
            first = accepted.setdefault(request_id, (member, decision.raw["pool"]["drawn"]))
            assert first[0] == member
        else:
            assert decision.reason in ("pool_member_daily_limit", "insufficient_balance") and decision.message
    pool_share = sum(drawn for _, drawn in accepted.values())
    with db.connect() as conn:
        pool_balance = conn.execute(
            sa.text(
                f"SELECT a.balance FROM {S}.token_accounts a JOIN {S}.token_pools p ON p.account_id = a.id"
            )
        ).scalar_one()
        charged = conn.execute(
            sa.text(f"SELECT count(*), count(DISTINCT request_id), sum(credits) FROM {S}.token_usage")
        ).one()
        by_member: dict[str, int] = dict(
            conn.execute(
                sa.text(f"SELECT customer_id, sum(credits) FROM {S}.token_pool_usage GROUP BY customer_id")
            ).all()
        )
        negative = conn.execute(
            sa.text(f"SELECT count(*) FROM {S}.token_grants WHERE remaining < 0")
        ).scalar_one()
    assert pool_balance == 1500 - pool_share >= 0
    assert tuple(charged) == (len(accepted), len(accepted), 5 * len(accepted)) and negative == 0
    assert by_member.get("m0", 0) <= 60 and all(used <= 200 for used in by_member.values())
    assert by_member["m0"] == 58  # 7 own, then 3 + 11 × 5 from the pool: the next 5 would pass the cap of 60
    assert sum(by_member.values()) == pool_share
    # Demand (9 members × ~7 threads × 12 × 5 credits) far exceeds supply: the pool ends (nearly) empty.
    assert pool_balance < 5 or all(by_member[f"m{n}"] > 195 for n in range(1, 9))


def test_reservations_grants_and_tick_race_pool_members_without_deadlock(db: Engine) -> None:
    """Members reserve and commit (locking member and pool through the reservation) while others consume,
    the pool gets grants and tick runs: locks are always taken in account-id order, so nothing deadlocks,
    and afterwards no reservation is left open and no member passed a cap."""
    team(db, members=9, credits=600)
    threads = 32
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(threads + 2)
    errors: list[BaseException] = []
    charged: list[int] = []
    lock = threading.Lock()

    def member(n: int) -> None:
        try:
            barrier.wait()
            who = f"m{n % 9}"
            for i in range(6):
                with racer.begin() as conn:
                    if i % 2:
                        done = ledger.consume(conn, S, who, "gpt-4o", 4 * 500, 0, f"c{n}-{i}", at=T0)
                        credits = done.credits if done.allowed else 0
                    else:
                        held = ledger.reserve(conn, S, who, "gpt-4o", 4 * 500, 0, f"r{n}-{i}", at=T0)
                        credits = 0
                        if held.allowed:
                            credits = int(ledger.commit(conn, S, f"r{n}-{i}", 3 * 500, 0, at=T0)["charged"])
                with lock:
                    charged.append(credits)
        except BaseException as exc:  # collected, then re-raised by the test thread
            errors.append(exc)

    def admin() -> None:
        try:
            barrier.wait()
            for i in range(5):
                with racer.begin() as conn:
                    pools.grant_pool(conn, S, "acme", 20, reason="top-up", reference=f"top-{i}", at=T0)
                with racer.begin() as conn:
                    ledger.tick(conn, S, at=T0)
        except BaseException as exc:  # collected, then re-raised by the test thread
            errors.append(exc)

    def clock() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with racer.begin() as conn:
                    ledger.tick(conn, S, at=T0 + timedelta(seconds=1))
        except BaseException as exc:  # collected, then re-raised by the test thread
            errors.append(exc)

    workers = [threading.Thread(target=member, args=(n,)) for n in range(threads)]
    workers += [threading.Thread(target=admin), threading.Thread(target=clock)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert not errors, errors[0]
    with db.connect() as conn:
        open_ = conn.execute(
            sa.text(f"SELECT count(*) FROM {S}.token_requests WHERE status = 'open'")
        ).scalar_one()
        used = conn.execute(sa.text(f"SELECT max(credits), sum(credits) FROM {S}.token_pool_usage")).one()
        pool_balance = conn.execute(
            sa.text(
                f"SELECT a.balance FROM {S}.token_accounts a JOIN {S}.token_pools p ON p.account_id = a.id"
            )
        ).scalar_one()
        usage = conn.execute(sa.text(f"SELECT sum(credits) FROM {S}.token_usage")).scalar_one()
    assert open_ == 0 and used[0] <= 200
    assert pool_balance == 600 + 5 * 20 - used[1] and usage == sum(charged)


# ------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(db: Engine, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setenv("TARIFF_ACTOR", "asha@pinegenie.app")
    app = typer.Typer()
    app.add_typer(tokens_app, name="tokens")

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, [*args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        if isinstance(result.exception, CommandError):
            assert code == 1, f"{result.exception.message} ({result.exception.fix})"
            return result.exception
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def test_pool_commands(cli: Run, db: Engine) -> None:
    created = cli("tokens", "pool", "create", "acme", "--owner", "boss", "--reason", "signed").output
    assert "pool acme created: template team, owner boss, up to 10 members" in created
    added = cli(
        "tokens", "pool", "add", "acme", "m0", "--daily", "50", "--reason", "joined", "--actor", "ravi"
    )
    assert "m0 in pool acme: daily 50, monthly 1000; 2 of 10 members" in added.output
    granted = json.loads(
        cli("tokens", "pool", "grant", "acme", "500", "--reason", "credits", "-f", "json").output
    )
    assert (granted["balance"], granted["actor"]) == (500, "asha@pinegenie.app")
    assert consume(db, "m0", "c1", 20, datetime.now(UTC)).allowed
    shown = cli("tokens", "pool", "show", "acme").output
    assert "500 credits" not in shown and "480 credits (480 usable now)" in shown and "2 of 10" in shown
    data = json.loads(cli("tokens", "pool", "show", "acme", "--format", "json").output)
    member = next(m for m in data["members"] if m["customer"] == "m0")
    assert (member["daily"], member["used_today"]) == (50, 20)
    assert [(e["kind"], e["actor"]) for e in reversed(data["events"])] == [
        ("create", "asha@pinegenie.app"),
        ("add", "ravi"),
    ]
    mine = json.loads(cli("tokens", "show", "m0", "--format", "json").output)
    assert (mine["pool"]["pool"], mine["pool"]["role"], mine["pool"]["daily"]) == ("acme", "member", 50)
    assert "acme (member; 480 credits usable in the pool; daily 50" in cli("tokens", "show", "m0").output
    assert json.loads(cli("tokens", "show", "m5", "-f", "json").output)["pool"] is None
    removed = cli("tokens", "pool", "remove", "acme", "m0", "--reason", "left").output
    assert "m0 removed from pool acme; 1 of 10 members" in removed

    # Bad input: a clear message, exit 1, nothing written.
    assert cli("tokens", "pool", "show", "nope", code=1).message == 'unknown pool "nope"'
    over = cli("tokens", "pool", "add", "acme", "m1", "--daily", "500", "--reason", "x", code=1)
    assert "above the template's 200" in over.message and "member_limits.daily" in over.fix
    assert "not a member" in cli("tokens", "pool", "remove", "acme", "m3", "--reason", "x", code=1).message
    assert "--reason" in cli("tokens", "pool", "add", "acme", "m1", "--reason", "", code=1).message
    assert (
        "--actor"
        in cli("tokens", "pool", "add", "acme", "m1", "--reason", "x", "--actor", " ", code=1).message
    )
    owner = cli("tokens", "pool", "create", "team2", "--owner", "pro1", "--reason", "x", code=1)
    assert "is for plans premium" in owner.message
    bad_id = cli("tokens", "pool", "create", "Team 2", "--owner", "boss", "--reason", "x", code=1)
    assert "invalid pool id" in bad_id.message and "lower-case" in bad_id.fix
    negative = cli("tokens", "pool", "add", "acme", "m1", "--daily", "-5", "--reason", "x", code=2)
    assert "--daily" in negative.output and "greater than or equal to 0" in negative.output
    with db.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {S}.token_pool_events")).scalar_one() == 3
        assert conn.execute(sa.text(f"SELECT count(*) FROM {S}.token_pools")).scalar_one() == 1
