"""Promotions agree from config to checkout: what `tariff validate` accepts applies, a special price saves
money, the pricing page shows what checkout charges and when it charges it, `tariff promo check` reads a
pasted code as checkout does, and the promotion report sees every year of a yearly promotion. Real
PostgreSQL throughout: the site and the compiler are compared with the SQL functions themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from compiler.catalog import Catalog, Discount, Schedule
from compiler.diagnostics import Diagnostic
from compiler.money import ROUNDING_MODES, Currency
from compiler.project import compile_config
from database.promo_codes import PASTED_BLANKS, normalize_code
from database.promotions import Item, check_code, quote
from publishers.site import build_page_model
from publishers.site.offers import apply_discount, current_window
from tests.analytics_support import at as local_at
from tests.analytics_support import customer as add_customer
from tests.analytics_support import payment, period, revenue, row_of, setup, states
from tests.ledger_support import S as LEDGER_SCHEMA
from tests.promo_support import LAUNCH, SCHEMA, compile_dir, publish, scenario_config
from tests.test_validate_cli import no_traceback, tariff

WINDOW = 'schedule: {starts: "2026-01-01T00:00:00+05:30", ends: "2027-12-31T00:00:00+05:30"}\n'


def promotion(promo_id: str, discount: str, applies_to: str, extra: str = "") -> str:
    return (
        f"id: {promo_id}\nname: {promo_id}\ndiscount: {discount}\napplies_to: {applies_to}\n" + WINDOW + extra
    )


def errors(config: Path, code: str) -> list[Diagnostic]:
    result = compile_config(config)
    return [d for d in result.diagnostics.errors if d.code == code]


# ---------------------------------------------------------------- 1. percent_off fits numeric(5, 2)


def test_a_third_decimal_in_percent_off_is_a_located_error_with_the_fix(tmp_path: Path) -> None:
    config = scenario_config(
        tmp_path, {"precise": promotion("precise", "{percent_off: 33.335}", "{packages: [extra-500]}")}
    )
    [found] = errors(config, "promotion.percent-precision")
    assert (found.file, found.line, found.path) == ("promotions/precise.yaml", 3, "discount.percent_off")
    assert "33.335 has more than two decimals" in found.message
    assert found.hint is not None and "at most two decimals" in found.hint and "33.34" in found.hint

    done = tariff("validate", "--config", str(config))
    no_traceback(done)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "promotions/precise.yaml:3" in done.stdout + done.stderr


@pytest.mark.parametrize("percent", ["0.07", "12.5", "33.33", "59.99"])
def test_two_decimals_apply_and_read_back(engine: Engine, tmp_path: Path, percent: str) -> None:
    # 0.07 is the value jsonschema's float multipleOf misjudges; it must stay accepted.
    config = scenario_config(
        tmp_path, {"p": promotion("p", f"{{percent_off: {percent}}}", "{packages: [extra-500]}")}
    )
    publish(engine, config)
    with engine.begin() as conn:
        stored = conn.execute(sa.text(f"SELECT percent_off FROM {SCHEMA}.promotions WHERE id = 'p'")).scalar()
    assert stored == Decimal(percent)


def test_limits_beyond_the_database_integer_are_refused_by_validate(tmp_path: Path) -> None:
    body = promotion(
        "big", "{percent_off: 10}", "{packages: [extra-500]}", "limits: {max_redemptions: 3000000000}\n"
    )
    config = scenario_config(tmp_path, {"big": body})
    result = compile_config(config)
    assert [(d.file, d.line) for d in result.diagnostics.errors] == [("promotions/big.yaml", 6)]


# ------------------------------------------------------------ 2. a special price must save money


def test_a_special_price_not_below_the_list_price_is_an_error_naming_where(tmp_path: Path) -> None:
    body = promotion(
        "overpriced", "{fixed_price: {INR: 1499, USD: 9}}", "{plans: [pro], cycles: [monthly, annual]}"
    )
    config = scenario_config(tmp_path, {"overpriced": body})
    [found] = errors(config, "promotion.price-not-below-list")
    assert (found.file, found.line, found.path) == (
        "promotions/overpriced.yaml",
        3,
        "discount.fixed_price.INR",
    )
    # Equal to pro monthly's list price: named; pro annual (14990) is discounted, so it is not.
    assert (
        found.message == "special price 1499 INR is not below the list price of plan 'pro' monthly (1499 INR)"
    )
    assert found.hint is not None and "below 1499 INR" in found.hint


def test_a_bundle_priced_at_its_parts_together_is_an_error(tmp_path: Path) -> None:
    config = scenario_config(tmp_path, {}, keep_shipped=True)
    bundle = config / "promotions" / "creator-bundle.yaml"
    bundle.write_text(bundle.read_text("utf-8").replace("INR: 15999", "INR: 16489"), "utf-8")  # 14990 + 1499
    [found] = errors(config, "promotion.price-not-below-list")
    assert "bundle 'creator-bundle'" in found.message and "16489 INR" in found.message


def test_special_prices_below_list_compile_and_redeem_with_a_saving(engine: Engine, tmp_path: Path) -> None:
    body = promotion("special", "{fixed_price: {INR: 999}}", "{plans: [pro], cycles: [monthly]}")
    publish(engine, scenario_config(tmp_path, {"special": body}))
    with engine.begin() as conn:
        priced = quote(conn, SCHEMA, Item(plan="pro", cycle="monthly"), region="IN", at=LAUNCH)
    assert (priced.list_minor, priced.final_minor) == (149900, 99900)


# ------------------------------------------------- 3. the pricing page shows what checkout charges


RULES = tuple(ROUNDING_MODES)


def test_site_discounts_round_like_sql_round_minor(engine: Engine) -> None:
    """Every percent discount step, for many prices, percentages and all four rounding rules, equals the
    SQL step of quote(): list − round_minor(list × percent / 100)."""
    amounts = [149900, 1999, 1900, 25, 1, *range(100, 20000, 37)]
    percents = ["12.5", "0.5", "7.5", "33.33", "50", "0.07", "99.99", "100"]
    rows = [(a, p, r) for a in amounts for p in percents for r in RULES]
    with engine.begin() as conn:
        charged = conn.execute(
            sa.text(
                f"SELECT a - least({SCHEMA}.round_minor(a * p / 100, r), a) "
                "FROM unnest(CAST(:a AS bigint[]), CAST(:p AS numeric[]), CAST(:r AS text[])) "
                "WITH ORDINALITY AS x(a, p, r, n) ORDER BY n"
            ),
            {"a": [r[0] for r in rows], "p": [r[1] for r in rows], "r": [r[2] for r in rows]},
        ).scalars()
        expected = [int(v) for v in charged]
    shown = []
    for (minor, percent, rule), sql_final in zip(rows, expected, strict=True):
        currency = Currency("INR", 2, rule)
        amount = currency.from_minor(minor)
        site = apply_discount(amount, Discount("percent_off", percent=Decimal(percent)), currency)
        shown.append(currency.to_minor(site) if site is not None else sql_final)
    mismatches = [(row, s, e) for row, s, e in zip(rows, shown, expected, strict=True) if s != e]
    assert not mismatches, mismatches[:10]


def test_pricing_page_price_is_the_checkout_price(engine: Engine, tmp_path: Path) -> None:
    """INR 1499 at 12.5 % off: checkout charges 1311.62 (the discount 187.375 rounds up); then a stacked
    7.5 % and a fixed amount: each step rounds its own discount, as quote() does."""
    single = {"half": promotion("half", "{percent_off: 12.5}", "{plans: [pro], cycles: [monthly]}")}
    stacked = {
        "first": promotion(
            "first",
            "{percent_off: 12.5}",
            "{plans: [pro, premium], cycles: [monthly]}",
            "stacking: {mode: stackable, priority: 10}\n",
        ),
        "second": promotion(
            "second",
            "{percent_off: 7.5}",
            "{plans: [pro, premium], cycles: [monthly]}",
            "stacking: {mode: stackable, priority: 20}\n",
        ),
        "third": promotion(
            "third",
            "{amount_off: {INR: 0.5, USD: 0.25, EUR: 0.35}}",
            "{plans: [pro, premium], cycles: [monthly]}",
            "stacking: {mode: stackable, priority: 30}\n",
        ),
    }
    for index, promos in enumerate((single, stacked)):
        config = scenario_config(tmp_path / str(index), promos)
        catalog = compile_dir(config)
        publish(engine, config)
        for region in ("IN", "US", "EU"):
            for plan in ("pro", "premium"):
                with engine.begin() as conn:
                    charged = quote(conn, SCHEMA, Item(plan=plan, cycle="monthly"), region=region, at=LAUNCH)
                assert page_amount(catalog, region, plan) == charged.final_price, (
                    promos.keys(),
                    region,
                    plan,
                )
    assert page_amount(compile_dir(scenario_config(tmp_path / "0", single)), "IN", "pro") == Decimal(
        "1311.62"
    )


def page_amount(catalog: Catalog, region: str, plan: str) -> Decimal:
    model = build_page_model(catalog, "pricing", region, None, LAUNCH)
    [card] = [c for c in model.cards if c.plan == plan]
    return card.prices["monthly"].amount


# ------------------------------------------ 4. yearly windows on the page are checkout's windows


SCHEDULES = [
    # New Year in India (ahead of UTC): 1 Jan 00:30 IST is still 31 Dec in UTC.
    ("2027-01-01T00:00:00+05:30", "2027-01-10T00:00:00+05:30", "Asia/Kolkata"),
    # A window across New Year, in India and behind UTC.
    ("2026-12-20T00:00:00+05:30", "2027-01-05T00:00:00+05:30", "Asia/Kolkata"),
    ("2026-12-30T20:00:00-08:00", "2027-01-02T06:00:00-08:00", "America/Los_Angeles"),
    ("2026-12-31T23:00:00+13:00", "2027-01-01T12:00:00+13:00", "Pacific/Auckland"),
    # 01:30 on 7 November is an ordinary hour in 2026 and happens twice in 2027 (clocks go back).
    ("2026-11-07T01:30:00-05:00", "2026-11-20T00:00:00-05:00", "America/New_York"),
    # 02:30 on 8 March exists in 2025 and is skipped in 2026 (clocks go forward).
    ("2025-03-08T02:30:00-05:00", "2025-03-20T00:00:00-04:00", "America/New_York"),
    # From 29 February: later years start on the 28th.
    ("2028-02-29T10:00:00+00:00", "2028-03-02T00:00:00+00:00", "UTC"),
]


def moments(schedule: Schedule) -> list[datetime]:
    """Every 30 minutes for two days around each year's window edges, for five years."""
    assert schedule.starts is not None and schedule.ends is not None
    out = []
    for year in range(-1, 5):
        for edge in (schedule.starts, schedule.ends):
            centre = edge.astimezone(UTC) + timedelta(days=365 * year)
            out += [centre + timedelta(minutes=30 * step) for step in range(-96, 97)]
    return out


@pytest.mark.parametrize(("starts", "ends", "zone"), SCHEDULES)
def test_yearly_window_on_the_page_is_sql_promotion_window(
    engine: Engine, starts: str, ends: str, zone: str
) -> None:
    schedule = Schedule(datetime.fromisoformat(starts), datetime.fromisoformat(ends), zone, True)
    assert schedule.starts is not None and schedule.ends is not None
    times = moments(schedule)
    with engine.begin() as conn:
        sql = conn.execute(
            sa.text(
                f"SELECT w.state, w.window_starts, w.window_ends FROM unnest(CAST(:at AS timestamptz[])) "
                f"WITH ORDINALITY AS x(at, n) CROSS JOIN LATERAL {SCHEMA}.promotion_window("
                "CAST(:starts AS timestamptz), CAST(:ends AS timestamptz), true, :zone, x.at) w ORDER BY n"
            ),
            {"at": times, "starts": schedule.starts, "ends": schedule.ends, "zone": zone},
        ).all()
    wrong = []
    for moment, (state, sql_starts, sql_ends) in zip(times, sql, strict=True):
        expected = (sql_starts, sql_ends) if state == "active" else None
        window = current_window(schedule, moment, "UTC")
        # Compared as instants: Python never finds a fold=1 time equal to a time in another zone.
        shown = None if window is None else tuple(w.astimezone(UTC) if w else None for w in window)
        if shown != expected:
            wrong.append((moment.isoformat(), state, shown))
    assert not wrong, wrong[:5]


def test_new_year_offer_shows_in_the_first_local_hours() -> None:
    """The reviewer's case: 1 Jan 2028 00:30 in India is 31 Dec 19:00 UTC."""
    ist = ZoneInfo("Asia/Kolkata")
    schedule = Schedule(
        datetime(2027, 1, 1, tzinfo=ist), datetime(2027, 1, 10, tzinfo=ist), "Asia/Kolkata", True
    )
    window = current_window(schedule, datetime(2027, 12, 31, 19, 0, tzinfo=UTC), "UTC")
    assert window == (datetime(2028, 1, 1, tzinfo=ist), datetime(2028, 1, 10, tzinfo=ist))


# --------------------------------------------------- 5. a pasted code reads as checkout reads it


PASTED = [
    "save125",
    "  SAVE125  ",
    "SAVE125\t",
    "SAVE125\n",
    "\tSAVE125",
    "SAVE125\u00a0",
    "SAVE125\u3000",
    "\ufeff\u200bSAVE125\u2060\r\n",
    "SAVE\u200b125",
    "SAVE 125",
]


def test_promo_check_and_checkout_agree_on_pasted_codes(engine: Engine, tmp_path: Path) -> None:
    body = promotion(
        "coded", "{percent_off: 12.5}", "{plans: [premium], cycles: [monthly]}", "codes: {vanity: SAVE125}\n"
    )
    publish(engine, scenario_config(tmp_path, {"coded": body}))
    verdicts = {}
    for typed in PASTED:
        with engine.begin() as conn:
            found = check_code(conn, SCHEMA, typed, at=LAUNCH)
            priced = quote(conn, SCHEMA, Item(plan="premium", cycle="monthly"), codes=[typed], at=LAUNCH)
        outcome = priced.code(typed)
        assert outcome is not None, typed
        at_checkout = outcome.reason != "unknown_code"
        assert (found is not None) == at_checkout, (typed, found, outcome)
        verdicts[typed] = at_checkout
    # Blanks pasted at either end are taken off in both places; a blank inside leaves the code unknown.
    assert [t for t, ok in verdicts.items() if not ok] == ["SAVE\u200b125", "SAVE 125"]


def test_code_normalisation_is_sql_upper_btrim_of_typed_codes(engine: Engine) -> None:
    # Locale-independent inputs only: PostgreSQL's upper() of non-ASCII letters follows the server's
    # LC_CTYPE (`ı` → `I` under C.UTF-8, unchanged under C).
    blanks = [f"{c}WELCOME20{c}" for c in PASTED_BLANKS]
    typed = [*PASTED, *blanks, "Welcome20", "straße", "\ufb01x20", "  ", "", "\u00a0\t"]
    with engine.begin() as conn:
        sql = conn.execute(
            sa.text(
                f"SELECT upper(btrim(c)) FROM unnest({SCHEMA}.typed_codes(CAST(:c AS text[]))) "
                "WITH ORDINALITY AS x(c, n) ORDER BY n"
            ),
            {"c": typed},
        ).scalars()
        assert [normalize_code(t) for t in typed] == list(sql)


# ------------------------------------------------ 6. the report sees every year of a yearly offer


def _festive_story(engine: Engine, cid: str, free_from: str, pays_from: str, *, redeems: bool = True) -> None:
    """Free plan from `free_from`, then Pro monthly from `pays_from`, with the festive 15 % if `redeems`."""
    with engine.begin() as conn:
        add_customer(conn, cid, "IN")
        states(
            conn,
            f"s{cid}",
            cid,
            [
                ("free", "monthly", "INR", "active", 0, free_from, pays_from),
                ("pro", "monthly", "INR", "active", 149900, pays_from, None),
            ],
        )
        payment(conn, f"T{cid}", cid, "pro", "INR", 127415, pays_from)
        if not redeems:
            return
        conn.execute(
            sa.text(
                f"INSERT INTO {LEDGER_SCHEMA}.redemption_requests (idempotency_key, customer_id, request, "
                "response, created_at) VALUES (:k, :c, '{}', '{}', :at)"
            ),
            {"k": "k" + cid, "c": cid, "at": local_at(pays_from)},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {LEDGER_SCHEMA}.redemptions (promotion_id, customer_id, item_kind, item_id, "
                "cycle, currency, list_minor, position, discount_minor, usage_slot, final_minor, duration, "
                "idempotency_key, redeemed_at) VALUES ('festive-season', :c, 'plan', 'pro', 'monthly', "
                "'INR', 149900, 1, 22485, 0, 127415, 'once', :k, :at)"
            ),
            {"c": cid, "k": "k" + cid, "at": local_at(pays_from)},
        )


def test_yearly_promotion_report_counts_eligible_customers_every_year(engine: Engine) -> None:
    """festive-season runs 20 Dec – 5 Jan India time every year from 2026."""
    setup(engine)
    _festive_story(engine, "first", "2026-12-01 00:00", "2026-12-22 09:00")
    _festive_story(engine, "second", "2027-12-01 00:00", "2027-12-22 09:00")
    # Converts on 3 Jan 2029: inside the window that started on 20 Dec 2028.
    _festive_story(engine, "third", "2028-12-27 00:00", "2029-01-03 09:00")
    # On the free plan through the 2026 and 2027 windows, paying from March 2028: eligible twice, never
    # converted inside a window.
    _festive_story(engine, "late", "2026-11-01 00:00", "2028-03-10 09:00", redeems=False)
    expected = {
        ("2026-12-01", "2026-12-31"): (2, Decimal("0.5")),
        ("2027-12-01", "2027-12-31"): (2, Decimal("0.5")),
        ("2029-01-01", "2029-01-31"): (1, Decimal(1)),
    }
    for (start, end), (eligible, conversion) in expected.items():
        row = row_of(revenue(engine, period(start, end)), "promotions", promotion="festive-season")
        assert (row["eligible"], row["eligible_conversion"]) == (eligible, conversion), (start, row)
    # A period spanning two windows counts a customer eligible in both once.
    row = row_of(
        revenue(engine, period("2026-12-01", "2028-03-31")), "promotions", promotion="festive-season"
    )
    assert (row["eligible"], row["eligible_conversion"]) == (3, Decimal("0.6667"))
