"""`make demo`: the main job on the shipped PineGenie config, step by step, on the embedded database.

Each step runs the real `tariff` command, so what is printed is exactly what a user sees; the AI requests
are what the app does, one SQL call each. The demo uses its own database (`tariff_demo`) on the embedded
server and starts it from scratch on every run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import psycopg
from psycopg import sql

from database import embedded

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pricing"
WORK = ROOT / ".tariff" / "demo"
CHANGED = WORK / "pricing-changed"
DEMO_DATABASE = "tariff_demo"
TARIFF = [sys.executable, "-m", "cli"]


def step(title: str, *args: str, allowed: tuple[int, ...] = (0,)) -> None:
    print(f"\n\033[1m▶ {title}\033[0m\n  $ tariff {' '.join(args)}\n", flush=True)
    result = subprocess.run([*TARIFF, *args], cwd=ROOT, check=False)
    if result.returncode not in allowed:
        sys.exit(f"demo step failed with exit code {result.returncode}: {title}")


def fresh_database() -> str:
    """A clean demo database on the embedded server (started, or reused, under .tariff/pg)."""
    server = embedded.start(embedded.data_root(CONFIG))
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DEMO_DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    return server.url(DEMO_DATABASE)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _form_fields(page: Path) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the self-posting checkout page, as the browser would send them."""

    class Form(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.action = ""
            self.fields: dict[str, str] = {}

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            a = {k: v or "" for k, v in attrs}
            if tag == "form":
                self.action = a["action"]
            elif tag == "input":
                self.fields[a["name"]] = a["value"]

    form = Form()
    form.feed(page.read_text(encoding="utf-8"))
    return form.action, form.fields


def buy_through_payu(at_diwali: str) -> None:
    """Three purchases through the offline PayU simulator: checkout, payment, webhook, what was bought —
    the last one with an e-mandate for the later monthly debits."""
    import requests

    from publishers.payu.simulator import DEFAULT_KEY, DEFAULT_SALT, start_simulator

    sim = start_simulator(0, DEFAULT_KEY, DEFAULT_SALT, refund_settle_seconds=None)
    os.environ["PAYU_KEY"], os.environ["PAYU_SALT"] = DEFAULT_KEY, DEFAULT_SALT
    port = _free_port()
    config = WORK / "pricing-payu"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(CONFIG, config)
    settings = config / "tariff.yaml"
    settings.write_text(
        settings.read_text(encoding="utf-8")
        .replace(
            "      mode: simulator\n",
            f"      mode: simulator\n      checkout_url: {sim.url}\n      api_url: {sim.url}\n",
            1,
        )
        .replace("http://127.0.0.1:3000/api/payments/payu/webhook", f"http://127.0.0.1:{port}/"),
        encoding="utf-8",
    )
    payu = ["--env", "local", "--config", str(config)]
    print(
        f"\n\033[1m▶ PayU: the offline simulator at {sim.url}, "
        f"Tariff's webhook receiver on port {port}\033[0m"
    )
    receiver = subprocess.Popen([*TARIFF, "payu", "webhook", "--port", str(port), *payu], cwd=ROOT)
    try:
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        sim.simulator.webhook_url = f"http://127.0.0.1:{port}/"

        def pay(page: Path) -> str:
            action, fields = _form_fields(page)
            requests.post(action, data=fields, timeout=10).raise_for_status()  # the browser at PayU
            paid = requests.post(f"{sim.url}/_sim/pay", json={"txnid": fields["txnid"]}, timeout=30).json()
            print(
                f"  PayU: {fields['txnid']} {paid['status']} (mihpayid {paid['mihpayid']}), webhook → "
                f"HTTP {paid['webhooks'][0]['status_code']}",
                flush=True,
            )
            return fields["txnid"]

        annual = WORK / "checkout-annual.html"
        step(
            "Checkout: Pro annual at the Diwali price (30% off) + 18% GST, signed for PayU's hosted checkout",
            "payu",
            "checkout",
            "--customer",
            "demo-new",
            "--plan",
            "pro",
            "--cycle",
            "annual",
            "--at",
            at_diwali,
            "--html",
            str(annual),
            *payu,
        )
        annual_txnid = pay(annual)
        pack = WORK / "checkout-extra-500.html"
        step(
            "Checkout: 500 extra AI credits (extra-500) for the new Pro subscriber",
            "payu",
            "checkout",
            "--customer",
            "demo-new",
            "--package",
            "extra-500",
            "--html",
            str(pack),
            *payu,
        )
        pay(pack)
        mandate = WORK / "checkout-mandate.html"
        step(
            "Another new customer, who will pay monthly by e-mandate",
            *("customers", "add", "demo-mandate", "--country", "IN", "--email", "ravi@example.in"),
            *("--attr", "name=Ravi Iyer", "--attr", "phone=9876543211"),
        )
        step(
            "Checkout with an e-mandate: Pro monthly, and consent to later debits up to the price + 25%",
            *("payu", "checkout", "--customer", "demo-mandate", "--plan", "pro", "--cycle", "monthly"),
            *("--mandate", "--html", str(mandate), *payu),
        )
        pay(mandate)
        step("The e-mandate PayU registered, as Tariff recorded it", "payu", "mandates", *payu)
        step("The payments: verified with PayU, stored once, fulfilled once", "payu", "payments", *payu)
        step("One payment in full: its events and its GST invoice", "payu", "payments", annual_txnid, *payu)
        step("The credits the package granted", "tokens", "show", "demo-new", "--entries", "3", *payu)
        step("Reconcile with PayU: nothing disagrees", "payu", "reconcile", *payu)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
        sim.stop()


def main() -> None:
    step("Validate the shipped PineGenie config (schemas, references, policies)", "validate")
    if CHANGED.exists():
        shutil.rmtree(CHANGED)
    CHANGED.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, str(ROOT / "demo" / "change_pricing.py"), str(CONFIG), str(CHANGED)], check=True
    )
    step(
        "Diff the shipped config against a scripted change (Pro +20% approved, Black Friday, a retired "
        "feature), as a reviewer sees it",
        "diff",
        f"{CONFIG}..{CHANGED}",
    )

    os.environ["TARIFF_DATABASE_URL"] = fresh_database()
    os.environ.setdefault("TARIFF_ACTOR", "demo <demo@pinegenie.app>")
    step(
        "Plan against the empty embedded database (exit 2: changes present)",
        "plan",
        "--detailed-exitcode",
        allowed=(2,),
    )
    step("Apply it: one transaction, one revision", "apply", "--auto-approve")
    step("Plan again: nothing left to do", "plan", "--detailed-exitcode")
    step("Register PineGenie's existing customers", "customers", "import", "demo/customers.csv")
    step(
        "…and their subscriptions, each on the price version it pays",
        "subscriptions",
        "import",
        "demo/subscriptions.csv",
    )
    step(
        "A new customer in India",
        "customers",
        "add",
        "demo-new",
        "--country",
        "IN",
        "--email",
        "asha@example.in",
        "--attr",
        "name=Asha Rao",
        "--attr",
        "phone=9876543210",
    )
    at_diwali, later = "2026-10-25T12:00:00+05:30", "2026-11-25T12:00:00+05:30"
    step(
        "Quote: Pro annual during Diwali (30% off, applied automatically)",
        "quote",
        "--plan",
        "pro",
        "--cycle",
        "annual",
        "--customer",
        "demo-new",
        "--at",
        at_diwali,
    )
    step(
        "Quote: Pro monthly with the code welcome20 (codes are case-insensitive)",
        "quote",
        "--plan",
        "pro",
        "--cycle",
        "monthly",
        "--customer",
        "demo-new",
        "--code",
        "welcome20",
        "--at",
        later,
    )
    step(
        "Quote: the creator bundle (Pro annual + 500 credits at one price)",
        "quote",
        "--bundle",
        "creator-bundle",
        "--region",
        "IN",
        "--at",
        later,
    )
    step(
        "Quote: Diwali does not reach the US, and the quote says why",
        "quote",
        "--plan",
        "pro",
        "--cycle",
        "annual",
        "--region",
        "US",
        "--at",
        at_diwali,
    )
    buy_through_payu(at_diwali)
    step(
        "Plan the scripted change: blast radius and grandfathering on real subscribers",
        "plan",
        "--config",
        str(CHANGED),
        "--out",
        str(WORK / "plan.json"),
    )
    step("Apply exactly the reviewed plan", "apply", str(WORK / "plan.json"), "--config", str(CHANGED))
    step("The revisions", "history")
    step(
        "Seed a realistic 180-day history on the applied catalog: sign-ups, trials, conversions, churn, "
        "payments and refunds, promotions, a mid-history price change and AI usage with a few anomalies",
        "demo",
        "seed",
        "--customers",
        "2000",
        "--days",
        "180",
    )
    step(
        "AI credits: usage, peak hours, utilisation, margin per model and hints",
        "report",
        "tokens",
        "--by",
        "model",
    )
    step(
        "Revenue: MRR, movements, conversion, cohorts, pricing-change impact, promotions", "report", "revenue"
    )
    reports = ROOT / "out" / "reports"
    for name in ("tokens", "revenue"):
        for fmt in ("xlsx", "html"):
            step(
                f"The {name} report as {fmt.upper()}",
                "report",
                name,
                "--format",
                fmt,
                "--out",
                str(reports / f"{name}.{fmt}"),
            )
    print(f"\nReports written: {', '.join(str(p) for p in sorted(reports.glob('*.*')))}")
    preview = ["preview", "--out", "out/preview", "--at", "2026-10-25T12:00:00+05:30"]
    if shutil.which("chromium") or os.environ.get("TARIFF_CHROMIUM"):
        preview += ["--screenshot", "out/preview/screenshots"]
    step("Preview the pricing pages during Diwali (strikethrough prices in India)", *preview)
    print(f"\nOpen {ROOT / 'out' / 'preview' / 'index.html'} in a browser to see the pages.")
    ai_credits()
    print(
        "\nThe demo database is `tariff_demo` on the embedded server in .tariff/pg; "
        "`tariff db stop` stops it."
    )


# A Pro annual subscriber in India: 500 AI credits every month from the 20th (14:58 IST); limits 50 credits
# per request and 300 a day. gpt-4o costs 2 credits per 1,000 tokens.
CREDIT_CUSTOMER = "cmwutevcpjsnc7vkvzt10dxyf"
REQUESTS = [
    # (time in IST, request id, input tokens, output tokens)
    *((f"2026-11-26T10:0{n}:00+05:30", f"req-1126-{n}", 20_000, 5_000) for n in range(5)),
    ("2026-11-26T10:30:00+05:30", "req-1126-big", 40_000, 10_000),  # 100 credits: above the per-request limit
    ("2026-11-26T11:00:00+05:30", "req-1126-5", 20_000, 5_000),
    ("2026-11-26T11:30:00+05:30", "req-1126-6", 20_000, 5_000),  # the day's 300 are used: refused
    *((f"2026-11-27T10:0{n}:00+05:30", f"req-1127-{n}", 20_000, 5_000) for n in range(3)),
]


def consume_requests(url: str) -> None:
    """What the app does for each AI request: one call to tariff.consume() with its own request id."""
    print(f"\n\033[1m▶ The app consumes AI credits for {CREDIT_CUSTOMER} (SQL: tariff.consume)\033[0m\n")
    with psycopg.connect(url, autocommit=True) as conn:
        for when, request_id, input_tokens, output_tokens in REQUESTS:
            decision = conn.execute(
                "SELECT tariff.consume(%s, 'gpt-4o', %s, %s, %s, 'chat', %s::timestamptz)",
                (CREDIT_CUSTOMER, input_tokens, output_tokens, request_id, when),
            ).fetchone()
            assert decision is not None
            d = decision[0]
            outcome = f"allowed, {d['remaining']} left" if d["allowed"] else f"REFUSED: {d['message']}"
            print(
                f"  {when[:16].replace('T', ' ')}  {request_id:<13} {input_tokens + output_tokens:>6} tokens "
                f"= {d['credits']:>3} credits  {outcome}"
            )


def outbox(url: str) -> None:
    print("\n\033[1m▶ The notifications outbox tick wrote (delivered by the notification sender)\033[0m\n")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT kind, count(*), count(customer_id), min(idempotency_key) FROM tariff.notifications "
            "GROUP BY kind ORDER BY kind"
        ).fetchall()
    for kind, count, to_customers, example in rows:
        print(f"  {kind:<20} {count:>3} ({count - to_customers} to admins)  e.g. {example}")


def ai_credits() -> None:
    url = os.environ["TARIFF_DATABASE_URL"]
    step(
        "tariff tick: November allowances for every live subscriber, promotions announced, due price moves",
        "tick",
        "--now",
        "2026-11-26T09:00",
    )
    consume_requests(url)
    step(
        "tick two days later: subscriptions whose month began meanwhile renew, and the Pro customer is "
        "below 20% of the allowance",
        "tick",
        "--now",
        "2026-11-28T23:00",
    )
    step(
        "Running it again changes nothing (idempotent; safe from cron every few minutes)",
        "tick",
        "--now",
        "2026-11-28T23:00",
    )
    outbox(url)
    step("The customer's credits", "tokens", "show", CREDIT_CUSTOMER, "--at", "2026-11-28T23:00", "-n", "6")


if __name__ == "__main__":
    main()
