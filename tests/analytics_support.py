"""Hand-built histories for the report tests: subscription states, payments, usage and grants written
row by row with explicit times, so every expected figure can be worked out in the test."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from analytics.model import Report
from analytics.period import Period, use_schema
from analytics.revenue_report import build_revenue_report
from analytics.token_report import TokenFilters, TokenGrouping, build_token_report
from tests.ledger_support import S, publish_shipped

TZ = "Asia/Kolkata"  # the shipped catalog's token_rules.timezone


def at(text: str) -> datetime:
    """A local time in the ledger's zone, e.g. at("2026-03-15 00:00")."""
    return datetime.fromisoformat(f"{text}+05:30")


def period(start: str, end: str) -> Period:
    return Period(date.fromisoformat(start), date.fromisoformat(end), TZ)


def setup(engine: Engine) -> None:
    publish_shipped(engine)


def customer(conn: Connection, cid: str, region: str = "IN") -> None:
    conn.execute(
        sa.text(f"INSERT INTO {S}.customers (id, region, created_at) VALUES (:id, :region, '2025-12-01')"),
        {"id": cid, "region": region},
    )


def price_version(conn: Connection, plan: str, cycle: str, currency: str) -> int:
    return int(
        conn.execute(
            sa.text(
                f"SELECT id FROM {S}.price_versions WHERE plan_id = :p AND cycle = :c AND currency = :cur "
                "AND valid_to IS NULL AND region IS NULL"
            ),
            {"p": plan, "c": cycle, "cur": currency},
        ).scalar_one()
    )


def states(
    conn: Connection, sub: str, cid: str, rows: list[tuple[str, str, str, str, int, str, str | None]]
) -> None:
    """A subscription and its states: (plan, cycle, currency, status, amount_minor, from, to)."""
    conn.execute(sa.text("SET LOCAL tariff.subscription_history = 'off'"))
    last = rows[-1]
    conn.execute(
        sa.text(
            f"INSERT INTO {S}.subscriptions (id, customer_id, plan_id, cycle, currency, price_version_id, status, "
            "current_period_start, current_period_end, created_at, updated_at) VALUES (:id, :c, :p, :cy, :cur, "
            ":pv, :st, :start, :start + interval '1 month', :start, :start)"
        ),
        {
            "id": sub,
            "c": cid,
            "p": last[0],
            "cy": last[1],
            "cur": last[2],
            "pv": price_version(conn, last[0], last[1], last[2]),
            "st": last[3],
            "start": at(last[5]),
        },
    )
    for plan, cycle, currency, status, amount, start, end in rows:
        months = 12 if cycle == "annual" else 1
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.subscription_history (subscription_id, customer_id, plan_id, cycle, currency, "
                "price_version_id, status, amount_minor, mrr_minor, valid_from, valid_to) VALUES (:s, :c, :p, :cy, "
                ":cur, :pv, :st, :amount, :mrr, :start, :end)"
            ),
            {
                "s": sub,
                "c": cid,
                "p": plan,
                "cy": cycle,
                "cur": currency,
                "pv": price_version(conn, plan, cycle, currency),
                "st": status,
                "amount": amount,
                "mrr": round(amount / months, 4) if status in ("active", "past_due") else 0,
                "start": at(start),
                "end": at(end) if end else None,
            },
        )
    conn.execute(sa.text("SET LOCAL tariff.subscription_history = 'on'"))


def payment(
    conn: Connection,
    txnid: str,
    cid: str,
    plan: str,
    currency: str,
    net_minor: int,
    when: str,
    *,
    status: str = "success",
    tax_minor: int = 0,
    refunded_minor: int = 0,
    discount_minor: int = 0,
) -> None:
    amount = net_minor + tax_minor
    paid = status in ("success", "partially_refunded", "refunded")
    conn.execute(
        sa.text(
            f"INSERT INTO {S}.payments (txnid, customer_id, kind, plan_id, cycle, price_version_id, currency, "
            "list_minor, discount_minor, net_minor, tax_minor, amount_minor, amount_text, quote, redemption_key, "
            "productinfo, status, refunded_minor, created_at, paid_at, failed_at) VALUES (:t, :c, 'plan', :p, "
            "'monthly', :pv, :cur, :list, :disc, :net, :tax, :amount, :text, '{}', :t, 'test', :st, :ref, :at, "
            ":paid, :failed)"
        ),
        {
            "t": txnid,
            "c": cid,
            "p": plan,
            "pv": price_version(conn, plan, "monthly", currency),
            "cur": currency,
            "list": net_minor + discount_minor,
            "disc": discount_minor,
            "net": net_minor,
            "tax": tax_minor,
            "amount": amount,
            "text": f"{amount / 100:.2f}",
            "st": status,
            "ref": refunded_minor,
            "at": at(when),
            "paid": at(when) if paid else None,
            "failed": at(when) if status == "failure" else None,
        },
    )


def usage(
    conn: Connection,
    cid: str,
    model: str,
    request: str,
    when: str,
    tokens_in: int,
    tokens_out: int,
    credits: int,
) -> None:
    """One accepted request through the ledger's own record_usage (daily rollup + analytics queue)."""
    conn.execute(
        sa.text(
            f"SELECT {S}.record_usage(:c, m, :r, 'chat', :i, :o, :cr, :tz, :at) FROM {S}.ai_models m WHERE m.id = :m"
        ),
        {
            "c": cid,
            "r": request,
            "i": tokens_in,
            "o": tokens_out,
            "cr": credits,
            "tz": TZ,
            "at": at(when),
            "m": model,
        },
    )


def allowance(conn: Connection, cid: str, amount: int, starts: str) -> None:
    conn.execute(
        sa.text(
            f"INSERT INTO {S}.token_accounts (customer_id) VALUES (:c) ON CONFLICT (customer_id) DO NOTHING"
        ),
        {"c": cid},
    )
    conn.execute(
        sa.text(
            f"INSERT INTO {S}.token_grants (account_id, source, amount, remaining, priority, starts_at, actor) "
            f"SELECT id, 'allowance', :a, :a, 100, :s, 'test' FROM {S}.token_accounts WHERE customer_id = :c"
        ),
        {"c": cid, "a": amount, "s": at(starts)},
    )


def revenue(engine: Engine, p: Period, by: str = "plan") -> Report:
    with engine.begin() as conn:
        use_schema(conn, S)
        return build_revenue_report(conn, p, by)  # type: ignore[arg-type]


def tokens(
    engine: Engine, p: Period, filters: TokenFilters | None = None, by: TokenGrouping = "day"
) -> Report:
    with engine.begin() as conn:
        use_schema(conn, S)
        return build_token_report(conn, p, filters or TokenFilters(), by)


def row_of(report: Report, section: str, **match: Any) -> dict[str, Any]:
    s = report.section(section)
    keys = [c.key for c in s.columns]
    for row in s.rows:
        record = dict(zip(keys, row, strict=True))
        if all(record[k] == v for k, v in match.items()):
            return record
    raise AssertionError(f"no row {match} in {section}: {s.rows}")
