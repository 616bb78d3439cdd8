"""The schema fast path (`$ref`s inlined, compiled to a predicate) must judge every document exactly as the
real validator does.

Only its "valid" is trusted (a rejected document is validated again for the diagnostics), so a document
it wrongly accepted would lose its errors. These tests compare both verdicts on the shipped example and
on many deterministic mutations of it, and keyword by keyword on values where JSON Schema's rules are
easy to get wrong (True is not 1, 1.0 is an integer, Decimal is a number).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from compiler.diagnostics import Diagnostics
from compiler.project import discover
from compiler.schema_check import SCHEMA_FILES, _fast_check, _inlined, validate_document, validator_for
from compiler.schema_predicate import UnsupportedSchemaError, compile_schema
from compiler.yaml_loader import LoadedDocument, load_yaml_file

EXAMPLE = Path(__file__).resolve().parent.parent / "pricing"
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    Decimal("1.5"),
    Decimal("-0.01"),
    "",
    "x",
    "Not An Id",
    "INR",
    "IN",
    "monthly",
    "unlimited",
    "#fff",
    "12 months",
    "2026-01-01",
    [],
    ["a", "a"],
    [1, True],
    {},
    {"x": 1},
    {"INR": 5},
    {"file": "intro.md"},
]


def _documents() -> list[tuple[str, LoadedDocument]]:
    return [(kind, load_yaml_file(path, shown)) for kind, path, shown in discover(EXAMPLE, Diagnostics())]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutated(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    result = copy.deepcopy(data)
    paths = list(_paths(result))[1:]
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths)
        parent: Any = result
        try:
            for key in path[:-1]:
                parent = parent[key]
            roll = rng.random()
            if roll < 0.6:
                parent[path[-1]] = copy.deepcopy(rng.choice(ODD_VALUES))
            elif isinstance(parent, dict) and roll < 0.8:
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[rng.choice(["extra", "by_region", "USD", "cycles", "EU"])] = rng.choice(ODD_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
    return result


@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_every_shipped_schema_is_inlined_and_compiled(kind: str) -> None:
    inlined = _inlined(kind)
    assert inlined is not None
    assert "$ref" not in json.dumps(inlined)
    compile_schema(inlined)  # raises UnsupportedSchemaError if a keyword would need jsonschema after all


def test_fast_path_agrees_with_the_validator_on_mutated_documents() -> None:
    rng = random.Random(20261125)
    checked = rejected = 0
    for kind, document in _documents():
        fast = _fast_check(kind)
        assert fast is not None
        assert fast(document.data) == validator_for(kind).is_valid(document.data)
        for _ in range(40):
            data = _mutated(document.data, rng)
            expected = validator_for(kind).is_valid(data)
            assert fast(data) == expected, (kind, document.file, data)
            checked += 1
            rejected += not expected
    assert checked > 500 and rejected > checked // 2  # the mutations really exercise errors


def test_invalid_documents_still_get_their_diagnostics() -> None:
    kind, document = next((k, d) for k, d in _documents() if k == "plan")
    broken = LoadedDocument(
        document.file,
        {**document.data, "trial_days": "two weeks"},
        document.value_positions,
        document.key_positions,
    )
    problems = validate_document(kind, broken)
    assert problems and all(p.file == document.file for p in problems)
    assert any(p.path == "trial_days" for p in problems)


TRICKY: list[Any] = [*ODD_VALUES, 1.0, 2.5, Decimal("2"), Decimal("0"), 0.0, [1, True], [0, False], [1, 1.0]]
TRICKY += [[Decimal("1"), 1], [{"a": 1}, {"a": True}], [["x"], ["x"]], {"a": 1, "b": 2}, {"ab": 1}]
TRICKY += [{"a": None}]
KEYWORD_SCHEMAS: list[Any] = [
    True,
    False,
    {"type": "integer"},
    {"type": "number"},
    {"type": ["string", "null"]},
    {"type": "boolean"},
    {"type": "array"},
    {"type": "object"},
    {"enum": [1, "a", None]},
    {"enum": [True]},
    {"enum": ["monthly", "annual"]},
    {"enum": [[1], {"a": 1}]},
    {"const": 0},
    {"const": False},
    {"minimum": 1},
    {"maximum": 2},
    {"exclusiveMinimum": 0},
    {"exclusiveMaximum": Decimal("2")},
    {"minimum": 0.5, "maximum": 7},
    {"pattern": "^[A-Z]{3}$"},
    {"pattern": "a"},
    {"minLength": 1, "maxLength": 2},
    {"minItems": 1, "maxItems": 2},
    {"uniqueItems": True},
    {"items": {"type": "integer"}},
    {"items": False},
    {"minProperties": 1, "maxProperties": 1},
    {"required": ["a"]},
    {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"properties": {"a": {"type": "integer"}}, "patternProperties": {"^b": {"type": "null"}}},
    {"patternProperties": {"^a": {"minimum": 1}, "b$": True}, "additionalProperties": False},
    {"patternProperties": {"^a": True}, "additionalProperties": {"type": "string"}},
    {"propertyNames": {"pattern": "^[a-z]$"}},
    {"allOf": [{"type": "number"}, {"minimum": 1}]},
    {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    {"oneOf": [{"type": "number"}, {"type": "integer"}]},
    {"not": {"type": "array"}},
    {"type": "object", "description": "ignored", "x-editor-hint": 1, "default": 3},
]


@pytest.mark.parametrize("schema", KEYWORD_SCHEMAS, ids=lambda s: json.dumps(s, default=str))
def test_each_keyword_judges_tricky_values_as_jsonschema_does(schema: Any) -> None:
    check = compile_schema(schema)
    reference = Draft202012Validator(schema)
    for value in TRICKY:
        assert check(value) == reference.is_valid(value), value


@pytest.mark.parametrize(
    "schema",
    [
        {"multipleOf": 2},
        {"if": {"type": "string"}, "then": {"minLength": 2}},
        {"unevaluatedProperties": False},
        {"prefixItems": [{"type": "string"}]},
        {"contains": {"type": "string"}},
        {"format": "date"},
        {"type": "decimal"},
        {"properties": {"a": {"dependentRequired": {"a": ["b"]}}}},
    ],
)
def test_keywords_it_does_not_implement_are_refused_not_ignored(schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchemaError):
        compile_schema(schema)


def test_a_predicate_that_raises_leaves_the_verdict_to_the_validator(monkeypatch: pytest.MonkeyPatch) -> None:
    def raising(_data: Any) -> bool:
        raise ArithmeticError("cannot compare")

    monkeypatch.setattr("compiler.schema_check._fast_check", lambda _kind: raising)
    kind, document = next((k, d) for k, d in _documents() if k == "plan")
    assert validate_document(kind, document) == []
    broken = LoadedDocument(document.file, {**document.data, "trial_days": -1}, document.value_positions, {})
    assert [p.code for p in validate_document(kind, broken)] == ["schema.minimum"]
