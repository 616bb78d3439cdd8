"""`make demo`: the main job on the shipped PineGenie config, step by step.

Each step runs the real `tariff` command, so what is printed is exactly what a user sees.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pricing"
TARIFF = [sys.executable, "-m", "cli"]


def step(title: str, *args: str, allowed: tuple[int, ...] = (0,)) -> None:
    print(f"\n\033[1m▶ {title}\033[0m\n  $ tariff {' '.join(args)}\n", flush=True)
    result = subprocess.run([*TARIFF, *args], cwd=ROOT, check=False)
    if result.returncode not in allowed:
        sys.exit(f"demo step failed with exit code {result.returncode}: {title}")


def main() -> None:
    step(
        "Validate the shipped PineGenie config (schemas, references, policies)",
        "validate",
        "--config",
        str(CONFIG),
    )
    with tempfile.TemporaryDirectory(prefix="tariff-demo-") as scratch:
        changed = Path(scratch) / "pricing"
        subprocess.run(
            [sys.executable, str(ROOT / "demo" / "change_pricing.py"), str(CONFIG), str(changed)], check=True
        )
        step(
            "Validate the scripted change: Pro +20% (approved), a Black Friday promotion, a retired feature",
            "validate",
            "--config",
            str(changed),
        )
        step(
            "Diff the shipped config against the change, as a reviewer sees it",
            "diff",
            f"{CONFIG}..{changed}",
        )
        step(
            "The same diff as a pull-request comment (Markdown)",
            "diff",
            f"{CONFIG}..{changed}",
            "--format",
            "markdown",
        )


if __name__ == "__main__":
    main()
