"""A JSON Schema (draft 2020-12, `$ref`s already inlined) turned into one Python predicate: valid or not.

jsonschema walks a schema anew for every value, building a validator object at each step; in a large
config (60 prices in each of hundreds of plan files) that is most of a compile. Here the schema is
walked once, into nested closures, and checking a document is plain dict and list work.

Only the verdict is produced: a document the predicate rejects is validated again by jsonschema, whose
errors make the diagnostics, so the predicate must never accept what jsonschema rejects. Each keyword
below therefore does exactly what jsonschema's implementation of it does (jsonschema/_keywords.py and
the draft 2020-12 type checker), down to `True` not being the integer 1 in `enum` and `uniqueItems`.
A keyword jsonschema would evaluate that is not implemented here raises `UnsupportedSchemaError`, and
the caller uses jsonschema for that schema instead; keywords jsonschema ignores (descriptions, defaults,
unknown names) are ignored here too.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema._utils import equal, uniq

Predicate = Callable[[Any], bool]

# Everything jsonschema evaluates for draft 2020-12; anything else in a schema is an annotation to it.
_EVALUATED = frozenset(Draft202012Validator.VALIDATORS)
_IMPLEMENTED = frozenset(
    {"type", "enum", "const", "allOf", "anyOf", "oneOf", "not"}
    | {"properties", "patternProperties", "additionalProperties", "propertyNames", "required"}
    | {"minProperties", "maxProperties", "items", "minItems", "maxItems", "uniqueItems"}
    | {"pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
)


class UnsupportedSchemaError(ValueError):
    """The schema uses a keyword (or a form of one) this module does not evaluate."""


def compile_schema(schema: Any) -> Predicate:
    """A function telling whether an instance is valid under `schema`; raises UnsupportedSchemaError."""
    try:
        return _compile(schema)
    except (TypeError, AttributeError, re.error) as exc:  # a malformed schema: leave it to jsonschema
        raise UnsupportedSchemaError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------- types
# The draft 2020-12 type checker: bool is not a number, 1.0 is an integer, Decimal is a number.


def _is_number(value: Any) -> bool:
    kind = type(value)
    if kind is int or kind is Decimal or kind is float:
        return True
    return not isinstance(value, bool) and isinstance(value, numbers.Number)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, int)


_TYPES: dict[str, Predicate] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "number": _is_number,
    "integer": _is_integer,
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _type(names: Any) -> Predicate:
    listed = [names] if isinstance(names, str) else names
    if not isinstance(listed, list) or not listed or any(n not in _TYPES for n in listed):
        raise UnsupportedSchemaError(f"type {names!r}")
    checks = [_TYPES[n] for n in listed]
    if len(checks) == 1:
        return checks[0]
    return lambda v: any(check(v) for check in checks)


# ------------------------------------------------------------------------------------------- schemas


def _always(_value: Any) -> bool:
    return True


def _never(_value: Any) -> bool:
    return False


def _compile(schema: Any) -> Predicate:
    if schema is True:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict):
        raise UnsupportedSchemaError("a schema is a mapping or a boolean")
    missing = (schema.keys() & _EVALUATED) - _IMPLEMENTED
    if missing:
        raise UnsupportedSchemaError(", ".join(sorted(missing)))
    checks = [
        check
        for check in (
            _type(schema["type"]) if "type" in schema else None,
            _enum(schema["enum"]) if "enum" in schema else None,
            _const(schema["const"]) if "const" in schema else None,
            _object(schema),
            _array(schema),
            _string(schema),
            _number(schema),
            *_combinators(schema),
        )
        if check is not None
    ]
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    return lambda v: all(check(v) for check in checks)


def _enum(options: Any) -> Predicate:
    if not isinstance(options, list):
        raise UnsupportedSchemaError("enum is a list")
    if options and all(type(o) is str for o in options):
        # `equal` compares a string to anything with ==, so for a string this is membership.
        texts = frozenset(options)
        return lambda v: v in texts if type(v) is str else any(equal(o, v) for o in options)
    return lambda v: any(equal(o, v) for o in options)


def _const(expected: Any) -> Predicate:
    return lambda v: bool(equal(v, expected))


def _sub(schema: Mapping[str, Any], name: str) -> Predicate | None:
    return _compile(schema[name]) if name in schema else None


def _object(schema: dict[str, Any]) -> Predicate | None:
    keywords = (
        "properties",
        "patternProperties",
        "additionalProperties",
        "propertyNames",
        "required",
        "minProperties",
        "maxProperties",
    )
    if not any(k in schema for k in keywords):
        return None
    properties = {str(k): _compile(v) for k, v in schema.get("properties", {}).items()}
    patterns = [(re.compile(p), _compile(v)) for p, v in schema.get("patternProperties", {}).items()]
    # jsonschema decides "additional" with all patterns joined into one regex; so does this.
    joined = "|".join(schema.get("patternProperties", {}))
    covered = re.compile(joined) if joined else None
    additional_schema = schema.get("additionalProperties", True)
    no_additional = additional_schema is False
    additional = None if isinstance(additional_schema, bool) else _compile(additional_schema)
    names = _sub(schema, "propertyNames")
    required = tuple(schema.get("required", ()))
    least = schema.get("minProperties")
    most = schema.get("maxProperties")

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        for key in required:
            if key not in value:
                return False
        if least is not None and len(value) < least:
            return False
        if most is not None and len(value) > most:
            return False
        for key, item in value.items():
            if names is not None and not names(key):
                return False
            known = properties.get(key)
            if known is not None and not known(item):
                return False
            for pattern, sub in patterns:
                if pattern.search(key) and not sub(item):
                    return False
            extra = known is None and not (covered is not None and covered.search(key))
            if extra and (no_additional or (additional is not None and not additional(item))):
                return False
        return True

    return check


def _array(schema: dict[str, Any]) -> Predicate | None:
    if not any(k in schema for k in ("items", "minItems", "maxItems", "uniqueItems")):
        return None
    items = _sub(schema, "items")
    least = schema.get("minItems")
    most = schema.get("maxItems")
    unique = bool(schema.get("uniqueItems", False))

    def check(value: Any) -> bool:
        if not isinstance(value, list):
            return True
        if least is not None and len(value) < least:
            return False
        if most is not None and len(value) > most:
            return False
        if items is not None:
            for item in value:
                if not items(item):
                    return False
        return not unique or bool(uniq(value))

    return check


def _string(schema: dict[str, Any]) -> Predicate | None:
    if not any(k in schema for k in ("pattern", "minLength", "maxLength")):
        return None
    pattern = re.compile(schema["pattern"]) if "pattern" in schema else None
    least = schema.get("minLength")
    most = schema.get("maxLength")

    def check(value: Any) -> bool:
        if not isinstance(value, str):
            return True
        if least is not None and len(value) < least:
            return False
        if most is not None and len(value) > most:
            return False
        return pattern is None or pattern.search(value) is not None

    return check


def _number(schema: dict[str, Any]) -> Predicate | None:
    bounds = [
        (name, schema[name])
        for name in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if name in schema
    ]
    if not bounds:
        return None
    low = schema.get("minimum")
    high = schema.get("maximum")
    above = schema.get("exclusiveMinimum")
    below = schema.get("exclusiveMaximum")

    def check(value: Any) -> bool:
        if not _is_number(value):
            return True
        if low is not None and value < low:
            return False
        if high is not None and value > high:
            return False
        if above is not None and value <= above:
            return False
        return below is None or value < below

    return check


def _combined(name: str, subs: list[Predicate]) -> Predicate:
    if name == "allOf":
        return lambda v: all(s(v) for s in subs)
    if name == "anyOf":
        return lambda v: any(s(v) for s in subs)
    return lambda v: sum(1 for s in subs if s(v)) == 1  # oneOf


def _combinators(schema: dict[str, Any]) -> list[Predicate]:
    found: list[Predicate] = []
    for name in ("allOf", "anyOf", "oneOf"):
        if name not in schema:
            continue
        branches = schema[name]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchemaError(f"{name} is a non-empty list")
        found.append(_combined(name, [_compile(b) for b in branches]))
    if "not" in schema:
        negated = _compile(schema["not"])
        found.append(lambda v: not negated(v))
    return found
