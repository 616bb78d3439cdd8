"""Canonical plain-data form of a Catalog: the basis of its fingerprint, its JSON and of diffs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from compiler.money import plain
from compiler.timeutil import Duration

_LEAVES: frozenset[type] = frozenset({str, int, bool, type(None)})
# One converter per type, found once: a catalog has hundreds of thousands of values, mostly leaves,
# and looking the type up in a dict is cheaper than the chain of isinstance checks it replaces.
_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


def to_plain(value: Any) -> Any:
    """Recursively convert catalog values to JSON-safe data (Decimal as exact strings, sets sorted)."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    convert = _CONVERTERS.get(kind) or _converter(kind)
    return convert(value)


def _utc_iso(value: datetime) -> str:
    # One instant, one spelling: `+05:30` in config and UTC read back from PostgreSQL must compare equal.
    return value.astimezone(UTC).isoformat()


def _items(values: Any) -> list[Any]:
    return [v if type(v) in _LEAVES else to_plain(v) for v in values]


def _mapping(value: Mapping[Any, Any]) -> dict[str, Any]:
    if all(type(k) is str for k in value):
        keys = sorted(value)  # unique strings: the same order as sorting by str(key), and faster
        return {k: v if type(v := value[k]) in _LEAVES else to_plain(v) for k in keys}
    return {str(k): to_plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}


def _identity(value: Any) -> Any:
    return value


def _dataclass(cls: type) -> Callable[[Any], dict[str, Any]]:
    names = tuple(f.name for f in dataclasses.fields(cls))

    def convert(value: Any) -> dict[str, Any]:
        result = {}
        for name in names:
            item = getattr(value, name)
            result[name] = item if type(item) in _LEAVES else to_plain(item)
        return result

    return convert


def _converter(kind: type) -> Callable[[Any], Any]:
    """How to convert values of `kind`, chosen in the order the checks have always run."""
    convert: Callable[[Any], Any]
    if issubclass(kind, Decimal):
        convert = plain
    elif issubclass(kind, Duration):
        convert = str
    elif issubclass(kind, datetime):
        convert = _utc_iso
    elif dataclasses.is_dataclass(kind):
        convert = _dataclass(kind)
    elif issubclass(kind, Mapping):
        convert = _mapping
    elif issubclass(kind, tuple | list):
        convert = _items
    elif issubclass(kind, bool | int | str):
        convert = _identity  # a StrEnum or an IntEnum member: JSON writes its value
    else:
        raise TypeError(f"cannot serialise {kind.__name__}")
    _CONVERTERS[kind] = convert
    return convert


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
