"""Apply the scripted pricing change used by the Tariff demo.

Usage::

    python demo/change_pricing.py SRC_DIR DEST_DIR

Copies the config directory SRC_DIR (normally ``pricing/``) to DEST_DIR, which
must not exist yet, and edits the copy the way a pricing manager would in a
pull request:

* raises Pro's INR prices from 1,499 to 1,799 a month and from 14,990 to
  17,990 a year, with a written approval on the plan;
* adds ``promotions/black-friday-2026.yaml``: 25% off Premium monthly in the
  US and EU regions from 27 November to 1 December 2026 (New York time);
* retires the ``custom_signatures`` feature and removes it from every plan and
  from the pricing-page highlights and comparison matrix.

Edits are made on the file text, so comments and layout survive. Every edit
checks that the text it expects is there and stops with a clear message if not;
the copy is assembled in a temporary directory, so a failed run leaves no
DEST_DIR behind.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

RETIRED_FEATURE = "custom_signatures"

PRO_APPROVAL = """\
approval:
  approved_by: Priya Sharma (CEO)
  reason: Costs of GPT-4 class models rose
  up_to_percent: 25

"""

BLACK_FRIDAY = """\
# yaml-language-server: $schema=../../schemas/promotion.schema.json
#
# Black Friday 2026 — applied automatically to Premium monthly in the US and
# EU regions, from Black Friday through Tuesday 1 December (New York time).

id: black-friday-2026
name: Black Friday 2026 — 25% off Premium
description: Holiday-weekend discount on the first month of Premium for international and European customers.
status: active

discount:
  percent_off: 25

applies_to:
  plans: [premium]
  cycles: [monthly]

eligibility:
  regions: [US, EU]

limits:
  per_customer: 1

schedule:
  starts: "2026-11-27T00:00:00"
  ends: "2026-12-02T00:00:00"
  timezone: America/New_York

duration: once

stacking:
  mode: exclusive

display:
  badge: Black Friday −25%
  strikethrough: true
  show_end_date: true
"""


def fail(message: str) -> SystemExit:
    """Build the exception that stops the script with ``message``."""
    return SystemExit(f"change_pricing: {message}")


def replace_once(text: str, old: str, new: str, where: Path) -> str:
    """Replace the single occurrence of ``old`` in ``text``; fail unless there is exactly one."""
    count = text.count(old)
    if count != 1:
        raise fail(f"{where}: expected exactly one occurrence of {old!r}, found {count}")
    return text.replace(old, new)


def sub_count(pattern: str, replacement: str, text: str, where: Path, *, minimum: int = 1) -> str:
    """Apply a multi-line regex substitution; fail if it matched fewer than ``minimum`` times."""
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count < minimum:
        raise fail(f"{where}: expected at least {minimum} match(es) of /{pattern}/, found {count}")
    return result


def read(path: Path) -> str:
    """Read a config file, failing clearly if it is missing."""
    if not path.is_file():
        raise fail(f"{path}: file not found")
    return path.read_text(encoding="utf-8")


def write(path: Path, text: str) -> None:
    """Write a config file as UTF-8."""
    path.write_text(text, encoding="utf-8")


def raise_pro_price(config: Path) -> None:
    """Raise Pro's INR prices by about 20% and record the approval."""
    path = config / "plans" / "pro.yaml"
    text = read(path)
    text = replace_once(text, "  monthly:\n    INR: 1499\n", "  monthly:\n    INR: 1799\n", path)
    text = replace_once(text, "  annual:\n    INR: 14990\n", "  annual:\n    INR: 17990\n", path)
    if re.search(r"^approval:", text, flags=re.MULTILINE):
        raise fail(f"{path}: already has an approval block")
    text = replace_once(text, "\npayu:\n", "\n" + PRO_APPROVAL + "payu:\n", path)
    write(path, text)


def add_black_friday(config: Path) -> None:
    """Add the Black Friday 2026 promotion file."""
    path = config / "promotions" / "black-friday-2026.yaml"
    if path.exists():
        raise fail(f"{path}: already exists")
    write(path, BLACK_FRIDAY)


def retire_feature(config: Path, feature: str) -> None:
    """Mark ``feature`` retired and remove it from every plan and pricing page."""
    features_path = config / "features.yaml"
    text = read(features_path)
    block = re.search(rf"^  {feature}:\n((?:    .*\n|\n)*?)(?=^  \S|\Z)", text, flags=re.MULTILINE)
    if block is None:
        raise fail(f"{features_path}: feature {feature!r} not found")
    if re.search(r"^    status:", block.group(1), flags=re.MULTILINE):
        raise fail(f"{features_path}: feature {feature!r} already has a status")
    type_line = re.search(r"^    type: .*\n", block.group(1), flags=re.MULTILINE)
    if type_line is None:
        raise fail(f"{features_path}: feature {feature!r} has no `type:` line")
    insert_at = block.start(1) + type_line.end()
    text = text[:insert_at] + "    status: retired\n" + text[insert_at:]
    write(features_path, text)

    plans_edited = 0
    for path in sorted((config / "plans").glob("*.yaml")):
        text = read(path)
        new_text, count = re.subn(rf"^  {feature}: .*\n", "", text, flags=re.MULTILINE)
        if count > 1:
            raise fail(f"{path}: feature {feature!r} is listed {count} times")
        if count:
            write(path, new_text)
            plans_edited += 1
    if plans_edited == 0:
        raise fail(f"no plan under {config / 'plans'} lists feature {feature!r}")

    for path in sorted((config / "content").glob("*.yaml")):
        text = read(path)
        # A card highlight: the `- feature:` line and any keys indented under it.
        text = sub_count(rf"^(?P<indent> *)- feature: {feature}\n(?:(?P=indent)  .*\n)*", "", text, path)
        # A row of the comparison matrix.
        text = sub_count(rf"^ *- {feature}\n", "", text, path)
        if re.search(rf"\b{feature}\b", text):
            raise fail(f"{path}: {feature!r} is still referenced after the edit")
        write(path, text)


def main(argv: Sequence[str] | None = None) -> int:
    """Copy the config and apply the demo change; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("src", type=Path, metavar="SRC_DIR", help="config directory to copy (e.g. pricing)")
    parser.add_argument("dest", type=Path, metavar="DEST_DIR", help="where to write the changed copy")
    args = parser.parse_args(argv)
    src: Path = args.src
    dest: Path = args.dest

    if not (src / "tariff.yaml").is_file():
        raise fail(f"{src}: not a Tariff config directory (no tariff.yaml)")
    if dest.exists():
        raise fail(f"{dest}: already exists; choose a new destination")

    # Edit a copy next to DEST and move it into place only when every edit
    # succeeded, so a failed run leaves nothing behind.
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    work = staging / dest.name
    try:
        shutil.copytree(src, work)
        raise_pro_price(work)
        add_black_friday(work)
        retire_feature(work, RETIRED_FEATURE)
        work.rename(dest)
    except SystemExit as exc:
        # Name the source file, not the temporary copy, in the message.
        message = str(exc.code).removeprefix("change_pricing: ").replace(str(work), str(src))
        raise fail(f"{message}; nothing was written to {dest}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    print(
        f"Wrote {dest}: Pro INR 1,499 → 1,799 / 14,990 → 17,990 (approved), "
        f"added black-friday-2026, retired {RETIRED_FEATURE}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
