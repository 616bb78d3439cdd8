"""One measured operation, run in a fresh process so its peak memory is its own.

    python -m bench.measure {plan|apply} CONFIG_DIR DATABASE_URL SCHEMA [--profile FILE]

Prints one JSON object on stdout: `timed`, the seconds the target applies to (plan: compile_config +
make_plan; apply: the whole apply_catalog call), `wall` (everything after imports, connecting included),
`cpu` (this process's user + system seconds: the PostgreSQL server's work is not in it), the phases,
peak RSS of this process in MB (ru_maxrss: it includes the interpreter and imported modules, as a user's
`tariff` process would), and operation facts (changes, migrations written) that run.py checks.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from compiler.project import CompileResult, compile_config
from database.connection import create_engine, quote_schema
from publishers.postgres.apply import Revision, apply_catalog
from publishers.postgres.plan import make_plan

T = TypeVar("T")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def _compile(config: Path) -> CompileResult:
    result = compile_config(config, cache=True)  # as `tariff plan` and `apply` do
    if not result.ok or result.catalog is None:
        problems = "\n".join(str(d) for d in result.diagnostics)
        raise SystemExit(f"the benchmark config does not validate:\n{problems}")
    return result


def run_plan(config: Path, url: str, schema: str, timer: Timer) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        with timer.phase("compile"):
            compiled = _compile(config)
        assert compiled.catalog is not None
        with timer.phase("make_plan"), engine.connect() as conn, conn.begin():
            conn.execute(sa.text("SET TRANSACTION READ ONLY"))
            plan = make_plan(
                conn,
                schema,
                compiled.catalog,
                environment=None,
                database="bench",
                locations=compiled.locations,
            )
        with timer.phase("to_json"):
            body = json.dumps(plan.to_json(), default=str)
    finally:
        engine.dispose()
    return {
        "changes": len(plan.diff.changes),
        "price_changes": sum(1 for c in plan.diff.changes if c.kind == "price"),
        "blast_subscribers": sum(b.subscribers for b in plan.blast),
        "drift": plan.drift is not None and plan.drift.has_changes,
        "findings": len(plan.diff.findings),
        "plan_json_bytes": len(body),
    }


def run_apply(config: Path, url: str, schema: str, timer: Timer) -> dict[str, Any]:
    engine = create_engine(url)
    s = quote_schema(schema)
    try:
        with timer.phase("compile"):
            compiled = _compile(config)
        assert compiled.catalog is not None
        with timer.phase("apply_catalog"):
            result = apply_catalog(
                engine,
                schema,
                compiled.catalog,
                Revision("bench", None, None),
                environment=None,
                database="bench",
                locations=compiled.locations,
            )
        with engine.connect() as conn:
            migrations = conn.execute(
                sa.text(f"SELECT count(*) FROM {s}.price_migrations WHERE revision_id = :rev"),
                {"rev": result.revision_id},
            ).scalar_one()
            notifications = conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {s}.notifications "
                    "WHERE idempotency_key LIKE 'price-change:' || :rev || ':%'"
                ),
                {"rev": result.revision_id},
            ).scalar_one()
    finally:
        engine.dispose()
    return {
        "applied": result.applied,
        "changes": len(result.plan.diff.changes),
        "prices_opened": result.write.prices_opened,
        "scheduled": result.scheduled,
        "notifications": result.notifications,
        "price_migrations_rows": migrations,
        "notification_rows": notifications,
    }


OPERATIONS: dict[str, Callable[[Path, str, str, Timer], dict[str, Any]]] = {
    "plan": run_plan,
    "apply": run_apply,
}
# The phases each target is about: `plan` is compile + make_plan; `apply` is the apply_catalog call.
TIMED: dict[str, tuple[str, ...]] = {"plan": ("compile", "make_plan"), "apply": ("apply_catalog",)}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.measure")
    parser.add_argument("operation", choices=sorted(OPERATIONS))
    parser.add_argument("config", type=Path)
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the operation here")
    args = parser.parse_args(argv)
    timer = Timer()
    profiler = cProfile.Profile() if args.profile else None
    started, cpu_started = time.perf_counter(), cpu_seconds()
    if profiler is not None:
        profiler.enable()
    facts = OPERATIONS[args.operation](args.config, args.url, args.schema, timer)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(args.profile))
    report = {
        "timed": sum(timer.phases[name] for name in TIMED[args.operation]),
        "wall": time.perf_counter() - started,
        "cpu": cpu_seconds() - cpu_started,
        "phases": timer.phases,
        "peak_rss_mb": peak_rss_mb(),
        "facts": facts,
    }
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
