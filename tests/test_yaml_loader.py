"""compiler.yaml_loader: YAML-1.2-safe scalars, exact money, positions, and refusal of hostile input."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from compiler.yaml_loader import (
    MAX_DEPTH,
    LoadedDocument,
    YamlLoadError,
    decode_text,
    load_yaml_file,
    load_yaml_text,
)

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"


def load(text: str) -> Any:
    return load_yaml_text(text, "test.yaml").data


def failure(text: str) -> YamlLoadError:
    with pytest.raises(YamlLoadError) as caught:
        load_yaml_text(text, "test.yaml")
    assert caught.value.diagnostic.file == "test.yaml"
    return caught.value


def walk(value: Any) -> list[Any]:
    """Every scalar in a loaded document, keys included."""
    if isinstance(value, dict):
        return [item for key, child in value.items() for item in (key, *walk(child))]
    if isinstance(value, list):
        return [item for child in value for item in walk(child)]
    return [value]


# ---------------------------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    "word",
    ["NO", "No", "no", "yes", "Yes", "YES", "on", "On", "off", "OFF", "y", "n", "Y", "N"],
)
def test_yaml_11_booleans_stay_text(word: str) -> None:
    assert load(f"value: {word}\nlist: [{word}]\n") == {"value": word, "list": [word]}


def test_norway_country_list_stays_country_codes() -> None:
    assert load("countries: [SE, NO, FI, DK]\n")["countries"] == ["SE", "NO", "FI", "DK"]


@pytest.mark.parametrize("text", ["true", "True", "TRUE"])
def test_true_is_boolean(text: str) -> None:
    assert load(f"a: {text}\n")["a"] is True


@pytest.mark.parametrize("text", ["false", "False", "FALSE"])
def test_false_is_boolean(text: str) -> None:
    assert load(f"a: {text}\n")["a"] is False


@pytest.mark.parametrize("text", ["null", "~", ""])
def test_null_forms(text: str) -> None:
    assert load(f"a: {text}\n") == {"a": None}


@pytest.mark.parametrize(
    "text", ["1e3", "1E3", "1.5e-2", "2.0E+3", ".inf", "-.inf", ".nan", "0x1F", "0o17", "1_000"]
)
def test_exponents_and_other_number_spellings_stay_text(text: str) -> None:
    value = load(f"amount: {text}\n")["amount"]
    assert value == text
    assert isinstance(value, str)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("19.99", "19.99"),
        ("0.005", "0.005"),
        ("-0.5", "-0.5"),
        ("1499.00", "1499.00"),
        (".5", "0.5"),
        ("3.", "3"),
    ],
)
def test_decimals_are_exact_decimal(text: str, expected: str) -> None:
    value = load(f"amount: {text}\n")["amount"]
    assert isinstance(value, Decimal)
    assert value == Decimal(expected)


def test_decimal_keeps_written_precision() -> None:
    # 19.99 as a float would be 19.989999999999998…; as Decimal it is exact and keeps its two places.
    value = load("amount: 19.99\n")["amount"]
    assert value + Decimal("0.01") == Decimal("20.00")
    assert str(value) == "19.99"


@pytest.mark.parametrize(("text", "expected"), [("1499", 1499), ("0", 0), ("-7", -7), ("+12", 12)])
def test_integers_are_int(text: str, expected: int) -> None:
    value = load(f"a: {text}\n")["a"]
    assert type(value) is int
    assert value == expected


def test_no_float_anywhere_in_a_mixed_document() -> None:
    data = load(
        "prices: {INR: 1499.5, USD: 19.99, EUR: 18}\n"
        "rates: [0.03, 0.005, 1.5, 84.5]\n"
        "nested:\n  deeper:\n    - {cost: 0.002}\n    - 2.5\n"
    )
    scalars = walk(data)
    assert not [s for s in scalars if isinstance(s, float)]
    assert Decimal("0.005") in scalars


@pytest.mark.parametrize(
    "path", sorted(SHIPPED.rglob("*.yaml")), ids=lambda p: p.relative_to(SHIPPED).as_posix()
)
def test_no_float_anywhere_in_the_shipped_config(path: Path) -> None:
    document = load_yaml_file(path, path.name)
    assert not [s for s in walk(document.data) if isinstance(s, float)]


@pytest.mark.parametrize(
    "text", ["2026-10-20", "2026-10-20T00:00:00+05:30", "2026-10-20 10:00:00", "12:30:00"]
)
def test_dates_and_times_stay_text(text: str) -> None:
    assert load(f"when: {text}\n")["when"] == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"1499"', "1499"),
        ("'19.99'", "19.99"),
        ('"true"', "true"),
        ("'null'", "null"),
        ('""', ""),
        ("'~'", "~"),
    ],
)
def test_quoted_scalars_stay_text(text: str, expected: str) -> None:
    assert load(f"a: {text}\n") == {"a": expected}


def test_explicit_str_tag_keeps_text() -> None:
    assert load("a: !!str 123\nb: !!str true\nc: !!str 1.5\n") == {"a": "123", "b": "true", "c": "1.5"}


def test_block_scalars_stay_text() -> None:
    assert load("a: |\n  1499\nb: >-\n  19.99\n") == {"a": "1499\n", "b": "19.99"}


def test_keys_are_always_text() -> None:
    data = load("200: ok\nNO: norway\ntrue: x\n1.5: y\n")
    assert data == {"200": "ok", "NO": "norway", "true": "x", "1.5": "y"}


# -------------------------------------------------------------------------------------------- positions


NESTED = """\
# comment line
id: pro
prices:
  monthly:
    INR: 1499
    by_region:
      EU: {EUR: 18}
features: [a, b,
  c]
"""


def test_value_positions_of_nested_values() -> None:
    doc = load_yaml_text(NESTED, "plans/pro.yaml")
    assert doc.value_positions[("id",)] == (2, 5)
    assert doc.value_positions[("prices", "monthly", "INR")] == (5, 10)
    assert doc.value_positions[("prices", "monthly", "by_region", "EU", "EUR")] == (7, 17)
    assert doc.value_positions[("features", 2)] == (9, 3)


def test_key_positions() -> None:
    doc = load_yaml_text(NESTED, "plans/pro.yaml")
    assert doc.key_positions[("prices",)] == (3, 1)
    assert doc.key_positions[("prices", "monthly")] == (4, 3)
    assert doc.key_positions[("prices", "monthly", "by_region", "EU")] == (7, 7)


def test_position_walks_up_to_the_nearest_known_parent() -> None:
    doc = load_yaml_text(NESTED, "plans/pro.yaml")
    # A missing key (e.g. a required one) is reported where its parent mapping starts.
    assert doc.position(("prices", "monthly", "USD")) == (5, 5)
    assert doc.position(("prices", "monthly"), key=True) == (4, 3)
    assert doc.position(("prices", "monthly", "INR"), key=True) == (5, 5)


def test_locate_gives_diagnostic_fields() -> None:
    doc = load_yaml_text(NESTED, "plans/pro.yaml")
    assert doc.locate(("features", 1)) == {
        "file": "plans/pro.yaml",
        "line": 8,
        "column": 15,
        "path": "features[1]",
    }


def test_loaded_document_is_immutable() -> None:
    doc = load_yaml_text("a: 1\n", "x.yaml")
    assert isinstance(doc, LoadedDocument)
    with pytest.raises(AttributeError):
        doc.file = "y.yaml"  # type: ignore[misc]


# ------------------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_is_an_error_at_the_second_key() -> None:
    error = failure("id: pro\nname: Pro\nid: pro2\n").diagnostic
    assert error.code == "yaml.duplicate-key"
    assert (error.line, error.column, error.path) == (3, 1, "id")
    assert "first defined on line 1" in error.message
    assert error.hint


def test_duplicate_key_in_a_nested_mapping() -> None:
    error = failure("prices:\n  monthly:\n    INR: 1499\n    USD: 19\n    INR: 1599\n").diagnostic
    assert error.code == "yaml.duplicate-key"
    assert (error.line, error.column, error.path) == (5, 5, "prices.monthly.INR")
    assert "line 3" in error.message


def test_duplicate_key_in_a_flow_mapping() -> None:
    error = failure("prices: {INR: 1, INR: 2}\n").diagnostic
    assert (error.code, error.line, error.column) == ("yaml.duplicate-key", 1, 18)


def test_same_key_in_sibling_mappings_is_fine() -> None:
    assert load("a: {x: 1}\nb: {x: 2}\n") == {"a": {"x": 1}, "b": {"x": 2}}


# ------------------------------------------------------------------------------------ anchors, merges


def test_merge_keys_copy_a_mapping_and_explicit_keys_win() -> None:
    data = load("base: &base {currency: INR, amount: 1499}\nplan:\n  <<: *base\n  amount: 1599\n")
    assert data["plan"] == {"currency": "INR", "amount": 1599}
    assert data["base"] == {"currency": "INR", "amount": 1499}


def test_merge_key_with_a_list_of_mappings_first_one_wins() -> None:
    data = load("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n")
    assert data["c"] == {"x": 1, "y": 1, "z": 2}


def test_merge_of_a_scalar_is_an_error() -> None:
    error = failure("a: &a 5\nc:\n  <<: *a\n").diagnostic
    assert error.code == "yaml.merge"
    assert error.path == "c"


def test_plain_aliases_are_expanded() -> None:
    assert load("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


def test_recursive_alias_is_rejected_where_it_closes_the_loop() -> None:
    error = failure("id: rec\nname: &self\n  again: *self\n").diagnostic
    assert error.code == "yaml.recursive-alias"
    assert (error.line, error.path) == (3, "name.again")


def test_recursive_alias_in_a_list_is_rejected() -> None:
    assert failure("a: &l [1, *l]\n").diagnostic.code == "yaml.recursive-alias"


def test_alias_bomb_fails_fast_with_a_clear_message() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    started = time.monotonic()
    error = failure("\n".join(lines) + "\n").diagnostic
    assert time.monotonic() - started < 5
    assert error.code == "yaml.too-large"
    assert "aliases" in error.message
    assert error.path == "f"  # the first entry that expands past the cap, not the innocent anchor


# ------------------------------------------------------------------------------------------ limits


def test_depth_cap() -> None:
    deep = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    error = failure(deep).diagnostic
    assert error.code == "yaml.too-deep"
    assert error.line == 1
    assert str(MAX_DEPTH) in error.message


def test_nesting_at_the_cap_is_allowed() -> None:
    lists = MAX_DEPTH - 1  # the mapping is level 0, so the innermost value sits at MAX_DEPTH
    data = load("a: " + "[" * lists + "1" + "]" * lists + "\n")["a"]
    for _ in range(lists):
        data = data[0]
    assert data == 1
    assert failure("a: " + "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH + "\n").diagnostic.code == "yaml.too-deep"


def test_absurd_nesting_is_an_error_not_a_crash() -> None:
    error = failure("a: " + "[" * 100_000 + "\n")
    assert error.diagnostic.code in ("yaml.syntax", "yaml.too-deep")


# --------------------------------------------------------------------------------------------- tags


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [echo hi]\n",
        "a: !!python/name:os.system\n",
        "a: !!float 1\n",
        "a: !!int '5'\n",
        "a: !!binary aGk=\n",
        "a: !!timestamp 2026-10-20\n",
        "a: !custom x\n",
        "a: !!set {x, y}\n",
    ],
)
def test_tags_are_rejected(text: str) -> None:
    error = failure(text).diagnostic
    assert error.code == "yaml.tag"
    assert (error.line, error.column, error.path) == (1, 4, "a")
    assert error.hint and "remove the tag" in error.hint


def test_complex_keys_are_rejected() -> None:
    assert failure("? [a, b]\n: 1\n").diagnostic.code == "yaml.complex-key"


# ------------------------------------------------------------------------------------ empty, syntax


@pytest.mark.parametrize(
    "text", ["", "   \n\n", "# only a comment\n", "# a\n\n   # b\n", "---\n", "--- # nothing\n"]
)
def test_empty_documents(text: str) -> None:
    error = failure(text).diagnostic
    assert error.code == "yaml.empty"
    assert error.line == 1


def test_syntax_error_points_at_the_problem_and_the_opening_bracket() -> None:
    error = failure("a: 1\nb: [1, 2\nc: 3\n").diagnostic
    assert error.code == "yaml.syntax"
    assert error.line == 3
    assert "starts on line 2" in error.message
    assert error.hint and "`]`" in error.hint


def test_unclosed_quote_names_the_line_it_opened() -> None:
    error = failure('name: "Pro\nid: pro\n').diagnostic
    assert error.code == "yaml.syntax"
    assert "starts on line 1" in error.message
    assert error.hint and "quote" in error.hint


def test_tab_indentation_hint() -> None:
    error = failure("a:\n\tb: 1\n").diagnostic
    assert (error.code, error.line, error.column) == ("yaml.syntax", 2, 1)
    assert error.hint == "YAML indentation must use spaces, not tabs"


def test_unquoted_colon_hint() -> None:
    error = failure("name: Pro: the best\n").diagnostic
    assert (error.code, error.line) == ("yaml.syntax", 1)
    assert error.hint and "quoted" in error.hint


def test_several_documents_in_one_file_are_an_error() -> None:
    assert failure("a: 1\n---\nb: 2\n").diagnostic.code == "yaml.syntax"


# --------------------------------------------------------------------------------------- decoding


def test_decode_strips_a_byte_order_mark() -> None:
    assert decode_text("\ufeffid: pro\n".encode(), "x.yaml") == "id: pro\n"


def test_decode_rejects_nul_bytes_with_the_line() -> None:
    with pytest.raises(YamlLoadError) as caught:
        decode_text(b"a: 1\nb: 2\n\x00\x01\x02", "x.yaml")
    assert (caught.value.diagnostic.code, caught.value.diagnostic.line) == ("file.binary", 3)


def test_decode_rejects_invalid_utf8_with_line_and_column() -> None:
    with pytest.raises(YamlLoadError) as caught:
        decode_text(b"a: 1\nname: caf\xe9\n", "x.yaml")
    error = caught.value.diagnostic
    assert (error.code, error.line, error.column) == ("file.encoding", 2, 10)
    assert "0xe9" in error.message


def test_utf8_text_is_kept() -> None:
    assert load("badge: Diwali −30%\nsymbol: ₹\n") == {"badge": "Diwali −30%", "symbol": "₹"}
