"""JSON Schema validation turned into located, actionable diagnostics."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

from compiler.diagnostics import Diagnostic, Severity
from compiler.schema_predicate import UnsupportedSchemaError, compile_schema
from compiler.yaml_loader import LoadedDocument

SCHEMA_FILES = {
    "tariff": "tariff.schema.json",
    "features": "features.schema.json",
    "plan": "plan.schema.json",
    "tokens": "tokens.schema.json",
    "promotion": "promotion.schema.json",
    "content": "content.schema.json",
}

_EXPONENT = re.compile(r"[-+]?[0-9]*\.?[0-9]+[eE][-+]?[0-9]+")


@cache
def _registry() -> Registry[Any]:
    folder = resources.files("schemas")
    pairs = []
    for entry in folder.iterdir():
        if entry.name.endswith(".schema.json"):
            pairs.append((entry.name, Resource.from_contents(json.loads(entry.read_text("utf-8")))))
    return Registry().with_resources(pairs)


@cache
def validator_for(kind: str) -> Draft202012Validator:
    schema = _registry().contents(SCHEMA_FILES[kind])
    return Draft202012Validator(schema, registry=_registry())


# Fast path. Most of the time jsonschema spends on a valid document goes to resolving `$ref`s and to
# building a validator object for every value it descends into (60 prices per plan file, thousands of
# files in a large config). `_fast_check` judges the same schema with every `$ref` inlined, compiled
# into one predicate (compiler/schema_predicate.py), which gives the same verdict; only its "valid" is
# used. A document it rejects is validated again by `validator_for`, whose errors make the diagnostics.
_SCHEMA_VALUED = frozenset(
    {"items", "additionalProperties", "propertyNames", "not", "if", "then", "else", "contains"}
    | {"unevaluatedItems", "unevaluatedProperties", "contentSchema"}
)
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_NOT_INLINED = frozenset({"$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$recursiveRef"})
_ANNOTATIONS = frozenset({"description", "default", "title", "examples", "$comment"})
_MAX_INLINE_DEPTH = 64


def _resolve(ref: str, base: str) -> tuple[Any, str]:
    """The subschema a `$ref` names (a schema file and/or a JSON pointer), and the file it is in."""
    name, _, pointer = ref.partition("#")
    name = name or base  # another file of the registry (a miss raises LookupError), or this one
    if "%" in pointer or (pointer and not pointer.startswith("/")):
        raise ValueError(f"$ref fragment {pointer!r} is not a plain JSON pointer")
    node = _registry().contents(name)
    for escaped in pointer.split("/")[1:]:
        part = escaped.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, name


def _inline_refs(schema: Any, base: str, depth: int = 0) -> Any:
    """`schema` with each `$ref` replaced by its target (`allOf` when it has other assertions beside it).

    Raises ValueError for what this does not handle (anchors, dynamic refs, recursion): no fast path then.
    """
    if depth > _MAX_INLINE_DEPTH:
        raise ValueError("schema nested too deeply (a recursive $ref?)")
    if isinstance(schema, bool):
        return schema
    if not isinstance(schema, dict) or _NOT_INLINED & schema.keys():
        raise ValueError("not a plain schema")
    inlined: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$ref", "$defs"):
            continue
        if key in _SCHEMA_VALUED:
            inlined[key] = _inline_refs(value, base, depth + 1)
        elif key in _SCHEMA_MAPS:
            inlined[key] = {name: _inline_refs(sub, base, depth + 1) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS:
            inlined[key] = [_inline_refs(sub, base, depth + 1) for sub in value]
        else:
            inlined[key] = value
    if "$ref" not in schema:
        return inlined
    target, target_base = _resolve(schema["$ref"], base)
    resolved = _inline_refs(target, target_base, depth + 1)
    # In draft 2020-12 `$ref` applies beside its sibling keywords, exactly like one more `allOf` entry.
    siblings = {k: v for k, v in inlined.items() if k not in _ANNOTATIONS}
    if not siblings:
        return resolved
    return {**siblings, "allOf": [resolved, *siblings.get("allOf", [])]}


@cache
def _inlined(kind: str) -> dict[str, Any] | None:
    """The kind's schema with every `$ref` replaced by its target; None when it cannot be inlined."""
    name = SCHEMA_FILES[kind]
    try:
        inlined = _inline_refs(_registry().contents(name), name)
    except (ValueError, LookupError, TypeError):
        return None
    return inlined if isinstance(inlined, dict) else None


@cache
def _fast_check(kind: str) -> Callable[[Any], bool] | None:
    """A predicate that is True exactly when jsonschema finds no error, or None (no fast path)."""
    inlined = _inlined(kind)
    if inlined is None:
        return None
    try:
        return compile_schema(inlined)
    except UnsupportedSchemaError:
        return Draft202012Validator(inlined).is_valid


def schema_text(kind: str) -> str:
    return resources.files("schemas").joinpath(SCHEMA_FILES[kind]).read_text("utf-8")


def validate_document(kind: str, document: LoadedDocument) -> list[Diagnostic]:
    """Every schema violation in `document`, each located and explained."""
    fast = _fast_check(kind)
    if fast is not None and _judged_valid(fast, document.data):
        return []
    found: list[Diagnostic] = []
    for error in validator_for(kind).iter_errors(document.data):
        found.extend(_explain(_most_specific(error), document))
    return found


def _judged_valid(fast: Callable[[Any], bool], data: Any) -> bool:
    try:
        return fast(data)
    except Exception:  # e.g. comparing a NaN: jsonschema, run next, reports or raises as it always has
        return False


def _most_specific(error: ValidationError) -> ValidationError:
    # oneOf/anyOf report "is not valid under any of the given schemas"; the closest branch says more.
    while error.validator in ("oneOf", "anyOf") and error.context:
        deeper = best_match(error.context)
        if deeper is None or (deeper.validator in ("oneOf", "anyOf") and not deeper.context):
            break
        error = deeper
    return error


def _describe(schema: Any) -> str | None:
    if isinstance(schema, dict):
        text = schema.get("description")
        if isinstance(text, str):
            return text
    return None


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty value)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


_TYPE_NAMES = {
    "object": "a mapping (key: value)",
    "array": "a list",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _explain(error: ValidationError, document: LoadedDocument) -> Iterator[Diagnostic]:
    path = tuple(error.absolute_path)
    where = document.locate(path)
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    described = _describe(schema)
    instance = error.instance
    kind = error.validator
    rule: Any = error.validator_value

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        for key in instance:
            if key in allowed or any(re.search(p, key) for p in patterns):
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"did you mean `{close[0]}`?" if close else None
            if not hint and allowed:
                hint = "remove it, or move your own data under `meta:`"
            yield Diagnostic(
                Severity.ERROR,
                "schema.unknown-key",
                f"unknown key {key!r}",
                expected="one of: " + ", ".join(allowed) if allowed else None,
                hint=hint,
                **document.locate((*path, key), key=True),
            )
        return
    if kind == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        for key in missing or [str(rule)]:
            prop_schema = schema.get("properties", {}).get(key)
            yield Diagnostic(
                Severity.ERROR,
                "schema.missing-key",
                f"missing required key {key!r}",
                expected=_describe(prop_schema),
                hint=f"add `{key}:`",
                **where,
            )
        return
    if kind == "type":
        expected = rule
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        hint = None
        if isinstance(instance, str) and _EXPONENT.fullmatch(instance) and {"number", "integer"} & set(names):
            hint = f"write the number in plain digits, e.g. {Decimal(instance):f}"
        elif isinstance(instance, str) and {"number", "integer"} & set(names):
            hint = "remove the quotes, unit or currency symbol: write only digits (e.g. 1499 or 19.99)"
        elif isinstance(instance, str) and "boolean" in names:
            hint = "write true or false (yes/no/on/off are text in Tariff's YAML)"
        elif instance is None:
            hint = "the value is empty; write it after the colon, or remove the key"
        elif isinstance(instance, Decimal) and "integer" in names:
            hint = "write a whole number"
        yield Diagnostic(
            Severity.ERROR,
            "schema.type",
            f"expected {wanted}, got {_show(instance)}",
            expected=described,
            hint=hint,
            **where,
        )
        return
    if kind in ("enum", "const"):
        options = rule if kind == "enum" else [rule]
        close = difflib.get_close_matches(str(instance), [str(o) for o in options], n=1, cutoff=0.5)
        yield Diagnostic(
            Severity.ERROR,
            "schema.enum",
            f"{_show(instance)} is not allowed here",
            expected="one of: " + ", ".join(str(o) for o in options),
            hint=f"did you mean `{close[0]}`?" if close else None,
            **where,
        )
        return
    if kind == "pattern" and "propertyNames" in error.absolute_schema_path:
        yield Diagnostic(
            Severity.ERROR,
            "schema.key-format",
            f"key {_show(instance)} is not in the expected form",
            expected=described or f"keys matching {rule}",
            hint=_pattern_hint(instance),
            **document.locate((*path, str(instance)), key=True),
        )
        return
    if kind == "pattern":
        yield Diagnostic(
            Severity.ERROR,
            "schema.format",
            f"{_show(instance)} is not in the expected form",
            expected=described or f"text matching {rule}",
            hint=_pattern_hint(instance),
            **where,
        )
        return
    if kind in (
        "minimum",
        "exclusiveMinimum",
        "maximum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "uniqueItems",
        "multipleOf",
    ):
        yield Diagnostic(
            Severity.ERROR,
            f"schema.{kind}",
            _range_message(kind, error),
            expected=described,
            hint=_bound_hint(kind, rule),
            **where,
        )
        return
    yield Diagnostic(Severity.ERROR, f"schema.{kind}", error.message, expected=described, **where)


def _bound_hint(kind: str, bound: Any) -> str | None:
    """The fix for a number outside its bounds: the nearest value the schema allows."""
    if not isinstance(bound, int | Decimal) or isinstance(bound, bool):
        return None
    if kind == "minimum":
        return f"write {bound} or more"
    if kind == "maximum":
        return f"write at most {bound}"
    if kind == "exclusiveMinimum":
        return f"write more than {bound}"
    if kind == "exclusiveMaximum":
        return f"write less than {bound}"
    return None


def _pattern_hint(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    if value != value.strip():
        return "remove the leading or trailing spaces"
    if re.fullmatch(r"[a-zA-Z]{3}", value) and value != value.upper():
        return f"codes are uppercase: `{value.upper()}`"
    suggestion = re.sub(r"[\s_]+", "-", value.strip().lower())
    if suggestion != value and re.fullmatch(r"[a-z][a-z0-9-]{0,63}", suggestion):
        return f"ids are lowercase with dashes: `{suggestion}`"
    return None


def _range_message(kind: str, error: ValidationError) -> str:
    value: Any = error.validator_value
    instance = error.instance
    messages = {
        "minimum": f"{_show(instance)} is below the minimum {value}",
        "exclusiveMinimum": f"{_show(instance)} must be greater than {value}",
        "maximum": f"{_show(instance)} is above the maximum {value}",
        "exclusiveMaximum": f"{_show(instance)} must be less than {value}",
        "minLength": f"text is shorter than {value} character(s)",
        "maxLength": f"text is longer than {value} characters",
        "minItems": f"list needs at least {value} item(s)",
        "maxItems": f"list may have at most {value} items",
        "minProperties": f"mapping needs at least {value} entr{'y' if value == 1 else 'ies'}",
        "maxProperties": f"mapping may have at most {value} entr{'y' if value == 1 else 'ies'}",
        "uniqueItems": "list contains the same item twice",
        "multipleOf": f"{_show(instance)} is not a multiple of {value}",
    }
    return messages[kind]
