"""The schema fast path (`$ref`s inlined) must judge every document exactly as the real validator does.

Only its "valid" is trusted (a rejected document is validated again for the diagnostics), so a document
it wrongly accepted would lose its errors. These tests compare both verdicts on the shipped example and
on many deterministic mutations of it.
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

from compiler.diagnostics import Diagnostics
from compiler.project import discover
from compiler.schema_check import SCHEMA_FILES, _fast_validator, validate_document, validator_for
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
def test_fast_validator_exists_and_has_no_refs(kind: str) -> None:
    fast = _fast_validator(kind)
    assert fast is not None
    assert "$ref" not in json.dumps(fast.schema)


def test_fast_path_agrees_with_the_validator_on_mutated_documents() -> None:
    rng = random.Random(20261125)
    checked = rejected = 0
    for kind, document in _documents():
        fast = _fast_validator(kind)
        assert fast is not None
        assert fast.is_valid(document.data) == validator_for(kind).is_valid(document.data)
        for _ in range(40):
            data = _mutated(document.data, rng)
            expected = validator_for(kind).is_valid(data)
            assert fast.is_valid(data) == expected, (kind, document.file, data)
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
