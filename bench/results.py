"""What a load benchmark reports: result rows against their targets, the table they print as, the machine
they ran on, and the checks whose failure makes a run exit 1."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    name: str
    value: float
    unit: str
    target: str
    ok: bool | None  # None: not a target
    notes: str = ""


class CheckFailedError(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailedError(message)


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text("utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        total_kib = int(Path("/proc/meminfo").read_text("utf-8").split()[1])
        memory = f", {total_kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    cpu = f"{os.cpu_count()} CPU(s)" + (f" ({model})" if model else "")
    return f"{cpu}{memory}, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}"


def print_table(rows: list[Row]) -> None:
    headers = ("step", "result", "target", "", "notes")
    lines = [
        (
            row.name,
            f"{row.value:,.1f} {row.unit}".strip() if row.unit != "" else f"{row.value:,.0f}",
            row.target,
            "-" if row.ok is None else ("ok" if row.ok else "MISSED"),
            row.notes,
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
