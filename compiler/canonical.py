"""Canonical plain-data form of a Catalog: the basis of its fingerprint, its JSON and of diffs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from compiler.money import plain
from compiler.timeutil import Duration


@cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The field names of dataclass `cls` (None for other types), looked up once per type."""
    if not dataclasses.is_dataclass(cls):
        return None
    return tuple(f.name for f in dataclasses.fields(cls))


def to_plain(value: Any) -> Any:
    """Recursively convert catalog values to JSON-safe data (Decimal as exact strings, sets sorted)."""
    # Hot path (a catalog has hundreds of thousands of leaves): plain scalars first, field names cached.
    if value is None or type(value) in (str, int, bool):
        return value
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, Duration):
        return str(value)
    if isinstance(value, datetime):
        # One instant, one spelling: `+05:30` in config and UTC read back from PostgreSQL must compare equal.
        return value.astimezone(UTC).isoformat()
    names = _field_names(value.__class__)
    if names is not None:
        return {name: to_plain(getattr(value, name)) for name in names}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    raise TypeError(f"cannot serialise {type(value).__name__}")


def catalog_content(catalog: Any) -> dict[str, Any]:
    """Everything that is published, without project settings or the fingerprint itself."""
    data = to_plain(catalog)
    data.pop("fingerprint", None)
    data.pop("settings", None)
    return data  # type: ignore[no-any-return]


def fingerprint(catalog: Any) -> str:
    content = catalog_content(catalog)
    # Prices come from YAML mappings, whose key order means nothing: `{USD: 19, INR: 1499}` is the
    # same price list as `{INR: 1499, USD: 19}`, so it must give the same fingerprint.
    for section in ("plans", "packages"):
        for entity in (content.get(section) or {}).values():
            entity["prices"] = sorted(
                entity["prices"], key=lambda p: (p["cycle"], p["currency"], p["region"] or "")
            )
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8")).hexdigest()
