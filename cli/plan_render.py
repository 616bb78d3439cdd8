"""How a plan reads: the diff, then what it does to subscribers (blast radius), then drift."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from compiler.diff import format_amount
from compiler.diff_format import diff_to_markdown, diff_to_text
from publishers.notify.routes import route_lines
from publishers.postgres.plan import BlastRadius, Plan


def _date(value: datetime | None) -> str:
    return value.date().isoformat() if value else "—"


def _money(amount: Decimal, currency: str) -> str:
    sign = "+" if amount > 0 else ""
    return f"{sign}{format_amount(amount)} {currency}"


def _rollout(item: BlastRadius) -> str:
    parts = []
    if item.kept:
        parts.append(f"{item.kept} kept on their price")
    if item.migrated_now:
        parts.append(f"{item.migrated_now} moved now")
    if item.scheduled:
        window = _date(item.first_effective)
        if (
            item.last_effective
            and item.last_effective.date() != (item.first_effective or item.last_effective).date()
        ):
            window += f" … {_date(item.last_effective)}"
        parts.append(f"{item.scheduled} move at renewal {window}")
    if item.first_notice:
        parts.append(f"notified from {_date(item.first_notice)}")
    return "; ".join(parts) or "no subscribers"


def header_lines(plan: Plan, *, with_database: bool = True) -> list[str]:
    # The PR comment leaves the server address out: a public repository must not show it.
    where = f"environment {plan.environment}" if plan.environment else "the default database"
    server = f"{plan.database}, " if with_database else ""
    live = f"live revision {plan.live_revision}" if plan.live_revision else "nothing published yet"
    return [f"Plan for {where} ({server}schema {plan.schema}) — {live}"]


def pages_note(plan: Plan) -> str | None:
    """Page copy changes are copy-only; a price change also changes every page that shows the price."""
    if plan.desired is None or not plan.desired.pages:
        return None
    priced = {c.owner for c in plan.diff.changes if c.kind in ("price", "package-price") and c.owner}
    if not priced:
        return None
    pages = ", ".join(sorted(plan.desired.pages))
    return f"Pricing pages re-published with the new prices ({', '.join(sorted(priced))}): {pages}"


def promotion_lines(plan: Plan) -> list[str]:
    """For each promotion the plan touches: who is eligible among registered customers, and its use so far."""
    return [
        f"{promotion}: {impact['eligible_customers']} registered customer(s) eligible now, "
        f"{impact['redemptions']} redemption(s) so far"
        for promotion, impact in sorted(plan.promotion_impact.items())
    ]


def plan_to_text(plan: Plan) -> RenderableType:
    items: list[RenderableType] = [Text(header_lines(plan)[0], style="dim")]
    if plan.drift is not None and plan.drift.has_changes:
        items.append(
            Text("\nDrift: live rows were changed outside Tariff since the last apply", style="bold red")
        )
        items.append(diff_to_text(plan.drift))
        items.append(Text("Applying restores the config's values.\n", style="red"))
    if not plan.has_changes:
        if not plan.has_route_changes:
            items.append(Text("No changes. The live catalog matches the config.", style="green"))
            return Group(*items)
        items.append(Text("No catalog changes. The live catalog matches the config.", style="green"))
        items.extend(routes_text(plan))
        return Group(*items)
    items.append(diff_to_text(plan.diff))
    items.extend(routes_text(plan))
    note = pages_note(plan)
    if note:
        items.append(Text(f"\n{note}", style="yellow"))
    if plan.promotion_impact:
        items.append(Text("\nPromotion reach", style="bold underline"))
        items.extend(Text(f"  {line}") for line in promotion_lines(plan))
    if plan.blast:
        items.append(Text("\nBlast radius (existing subscribers)", style="bold underline"))
        table = Table(show_edge=False, pad_edge=False)
        for column in ("Price", "Subscribers", "Rollout", "MRR now", "MRR after grandfathering"):
            table.add_column(column, justify="right" if column.startswith(("Sub", "MRR")) else "left")
        for item in plan.blast:
            table.add_row(
                item.change_key.removeprefix("price:"),
                str(item.subscribers),
                _rollout(item),
                _money(item.mrr_now, item.currency),
                _money(item.mrr_after, item.currency),
            )
        items.append(table)
    if plan.mandates is not None and (plan.mandates.new_mandates or plan.mandates.pre_debits):
        items.append(Text("\nPayU e-mandates", style="bold underline"))
        items.extend(Text(f"  {line}") for line in mandate_lines(plan))
    return Group(*items)


ROUTES_TITLE = "Notification routes (tariff.yaml notifications.routes; published without a revision)"


def routes_text(plan: Plan) -> list[RenderableType]:
    if not plan.has_route_changes:
        return []
    return [
        Text(f"\n{ROUTES_TITLE}", style="bold underline"),
        *(Text(f"  ~ {line}", style="yellow") for line in route_lines(plan.routes)),
    ]


def routes_markdown(plan: Plan) -> list[str]:
    if not plan.has_route_changes:
        return []
    return [f"### {ROUTES_TITLE}", "", *(f"- `{line}`" for line in route_lines(plan.routes))]


def mandate_lines(plan: Plan) -> list[str]:
    """Subscribers on e-mandates a price change reaches: new mandates needed, pre-debits with new amounts."""
    if plan.mandates is None:
        return []
    return [
        f"{plan.mandates.new_mandates} subscriber(s) need a new mandate: the new price is above their "
        "mandate's maximum",
        f"{plan.mandates.pre_debits} pre-debit notification(s) must carry the new amount (sent by "
        "`tariff tick` before each debit)",
    ]


def blast_markdown(plan: Plan) -> list[str]:
    if not plan.blast:
        return []
    lines = [
        "### Blast radius (existing subscribers)",
        "",
        "| Price | Subscribers | Rollout | MRR now | MRR after grandfathering |",
        "|---|--:|---|--:|--:|",
    ]
    for item in plan.blast:
        lines.append(
            f"| `{item.change_key.removeprefix('price:')}` | {item.subscribers} | {_rollout(item)} | "
            f"{_money(item.mrr_now, item.currency)} | {_money(item.mrr_after, item.currency)} |"
        )
    return lines


def drift_markdown(plan: Plan) -> list[str]:
    if plan.drift is None or not plan.drift.has_changes:
        return []
    lines = [
        "### ⚠ Drift",
        "",
        "Live rows were changed outside Tariff since the last apply; applying restores the config's values:",
        "",
    ]
    lines.extend(f"- `{c.key}`: {c.summary}" for c in plan.drift.changes)
    return lines


def plan_to_markdown(plan: Plan) -> list[str]:
    note = pages_note(plan)
    reach = ["### Promotion reach", "", *(f"- {line}" for line in promotion_lines(plan))]
    blocks = (
        header_lines(plan, with_database=False),
        drift_markdown(plan),
        routes_markdown(plan),
        blast_markdown(plan),
        [f"_{note}_"] if note else [],
        reach if plan.promotion_impact else [],
        ["### PayU e-mandates", "", *(f"- {line}" for line in mandate_lines(plan))]
        if plan.mandates is not None and (plan.mandates.new_mandates or plan.mandates.pre_debits)
        else [],
    )
    sections = [block for block in blocks if block]
    return diff_to_markdown(plan.diff, title="Tariff plan", sections=sections)
