"""The ledger benchmark's targets, one line each: which durable client modes met it in this run, and which
missed it, with their figures. The table above it has every step; this says what they add up to.

The targets (issue: 32 clients, 2 cores): at least 3,000 consumes/s spread over 1,000 accounts and 800/s on
one hot account, p99 at most 20 ms. A hot account's p99 is judged at the target rate (calls arriving at
800/s): 32 clients calling one account back to back wait behind one another whatever a call costs, and even
the bare one-row UPDATE misses 20 ms there (docs/ledger.md, Speed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bench.load import Throughput

# Run keys (bench/ledger.py) of the durable modes, by how the clients call, for each kind of step.
BACK_TO_BACK = {
    "spread": {
        "32 connections": "consume spread",
        "pool": "consume spread pooled",
        "pgbench": "consume pgbench pgss",
        "batched": "consume batched spread",
    },
    "hot": {
        "32 connections": "consume hot",
        "pool": "consume hot pooled",
        "pgbench": "consume pgbench pghs",
        "batched": "consume batched hot",
    },
}
OFFERED = {
    side: {
        "32 connections": f"consume offered {side} connections",
        "pool": f"consume offered {side} pooled",
        "pgbench": f"consume offered {side} pgbench",
        "batched": f"consume offered {side} batched",
    }
    for side in ("spread", "hot")
}
# Keeping up with an offered load: 97 % of the offered calls made (bench/ledger.py measure_offered).
KEPT_UP = 0.97


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    met: list[str]
    missed: list[str]

    def line(self) -> str:
        met = f"met by {', '.join(self.met)}" if self.met else "MISSED by every mode"
        missed = f"; missed by {', '.join(self.missed)}" if self.met and self.missed else ""
        return f"{self.what}: {met}{missed}"


def _judge(
    what: str,
    runs: Mapping[str, Throughput],
    modes: Mapping[str, str],
    rate: float | None,
    p99_ms: float | None,
) -> Target:
    met: list[str] = []
    missed: list[str] = []
    for mode, key in modes.items():
        run = runs.get(key)
        if run is None:
            continue
        p99 = run.percentile(0.99)
        ok = (rate is None or run.rate >= rate) and (p99_ms is None or p99 <= p99_ms)
        figures = f"{run.rate:,.0f}/s" + (f", p99 {p99:.1f} ms" if p99_ms is not None else "")
        (met if ok else missed).append(f"{mode} ({figures})")
    return Target(what, met, missed)


def targets(
    runs: Mapping[str, Throughput],
    spread: float,
    hot: float,
    p99_ms: float,
    offered: tuple[float, float],
) -> list[Target]:
    """The targets against this run's durable steps; `offered` is the steps' offered (spread, hot) rates."""
    spread_offered, hot_offered = offered
    return [
        _judge(
            f"≥ {spread:,.0f}/s with p99 ≤ {p99_ms:g} ms, 1,000 accounts",
            runs,
            BACK_TO_BACK["spread"],
            spread,
            p99_ms,
        ),
        _judge(f"≥ {hot:,.0f}/s, one hot account", runs, BACK_TO_BACK["hot"], hot, None),
        _judge(
            f"p99 ≤ {p99_ms:g} ms, one hot account, {hot_offered:,.0f}/s offered",
            runs,
            OFFERED["hot"],
            hot_offered * KEPT_UP,
            p99_ms,
        ),
        _judge(
            f"p99 ≤ {p99_ms:g} ms, 1,000 accounts, {spread_offered:,.0f}/s offered "
            "(stricter than the target)",
            runs,
            OFFERED["spread"],
            spread_offered * KEPT_UP,
            p99_ms,
        ),
    ]
