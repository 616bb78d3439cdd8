"""The JSON Schemas are the config reference: every property documented, no unknown keys anywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

SCHEMAS = sorted((Path(__file__).resolve().parent.parent / "schemas").glob("*.schema.json"))


def _objects(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{where}/{index}")


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text("utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_property_has_a_description(path: Path) -> None:
    schema = json.loads(path.read_text("utf-8"))
    undocumented = []
    for where, node in _objects(schema, "#"):
        for name, prop in node.get("properties", {}).items():
            documented = isinstance(prop, dict) and ("description" in prop or "$ref" in prop)
            if not documented:
                undocumented.append(f"{where}/properties/{name}")
    assert not undocumented, "properties without a description: " + ", ".join(undocumented)


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_object_refuses_unknown_keys_except_meta(path: Path) -> None:
    schema = json.loads(path.read_text("utf-8"))
    open_objects = []
    for where, node in _objects(schema, "#"):
        if where.endswith("/meta"):
            continue  # the one sanctioned escape hatch for user data
        if "additionalProperties" not in node and "properties" in node:
            open_objects.append(where)
    assert not open_objects, "objects that accept unknown keys: " + ", ".join(open_objects)


def test_referenced_definitions_carry_descriptions() -> None:
    """A property documented only by `$ref` must point at a definition that has a description."""
    common = json.loads((SCHEMAS[0].parent / "common.schema.json").read_text("utf-8"))
    missing = [name for name, node in common["$defs"].items() if "description" not in node]
    assert not missing, f"common definitions without a description: {missing}"


def test_every_example_file_names_its_schema_in_a_modeline() -> None:
    root = SCHEMAS[0].parent.parent / "pricing"
    for path in sorted(root.rglob("*.yaml")):
        first = path.read_text("utf-8").splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("$schema=", 1)[1]).resolve()
        assert target.exists(), f"{path}: modeline points at missing {target}"
