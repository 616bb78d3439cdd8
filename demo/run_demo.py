"""`make demo`: the main job on the shipped PineGenie config, step by step, on the embedded database.

Each step runs the real `tariff` command, so what is printed is exactly what a user sees. The demo uses
its own database (`tariff_demo`) on the embedded server and starts it from scratch on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
    print(
        "\nThe demo database is `tariff_demo` on the embedded server in .tariff/pg; "
        "`tariff db stop` stops it."
    )


if __name__ == "__main__":
    main()
