"""Renderers (JSON, Markdown with splitting, rich text) and the `tariff diff` command function."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from cli.diff_command import PART_SEPARATOR, diff, markdown_part_paths
from compiler.catalog import Catalog, Plan, Price
from compiler.diagnostics import Diagnostics
from compiler.diff import CatalogDiff, diff_catalogs
from compiler.diff_format import MARKDOWN_LIMIT, diff_to_json, diff_to_markdown, diff_to_text
from compiler.project import CompileResult
from tests.catalog_factory import make_catalog, page, plan, prices, replace, with_plan, with_prices


def sample_diff() -> CatalogDiff:
    old = make_catalog()
    new = with_plan(old, name="Pro | Plus", features={"ai_chat": False, "strategies": 50})
    new = with_prices(
        new, "pro", Price("monthly", "INR", Decimal(1999)), Price("monthly", "EUR", Decimal(18), "EU")
    )
    new = replace(new, pages={"pricing": page(headline="Trade <b>smarter</b>")})
    return diff_catalogs(old, new)


def test_json_has_format_version_counts_and_changes() -> None:
    result = sample_diff()
    data = diff_to_json(result)
    assert data["format_version"] == 1
    assert data["base_fingerprint"] == result.base_fingerprint
    assert data["has_changes"] is True
    assert data["counts"]["price_increase"] == 1
    assert data["counts"]["breaking"] == 1
    assert [c["key"] for c in data["changes"]] == [c.key for c in result.changes]
    price = next(c for c in data["changes"] if c["key"] == "price:pro/monthly/INR")
    assert (price["old_amount"], price["new_amount"], price["percent"]) == ("1499", "1999", "33.4")
    assert price["fields"][0] == {
        "field": "amount",
        "old": "1499",
        "new": "1999",
        "percent": "33.4",
        "impact": "price_increase",
    }
    assert data["findings"][0]["code"] == "policy.max_price_increase_percent"
    json.dumps(data)  # everything is plain JSON


def test_markdown_summary_findings_sections_and_table() -> None:
    [text] = diff_to_markdown(sample_diff(), title="Pricing")
    assert text.startswith("## Pricing\n")
    assert "**4 changes: 1 breaking, 1 price increase, 1 additive, 1 copy only**" in text
    assert text.index("### Policy findings") < text.index("### Plans") < text.index("### Prices")
    assert text.index("### Prices") < text.index("### Content")
    assert "| Plan | Cycle | Currency/Region | Old | New | Change | Impact |" in text
    # Names and copy come from config, so table pipes and HTML are escaped.
    assert "| Pro \\| Plus | monthly | INR | 1,499 | 1,999 | +33.4% | price increase |" in text
    assert "| Pro \\| Plus | monthly | EUR @ EU | — | 18 | new | additive |" in text
    assert "`features.ai_chat`: `true` → `false` _(breaking)_" in text
    # Markup from config stays inert: escaped in prose, literal inside code spans.
    assert "- **changed** `plan:pro` — **Pro \\| Plus** _(breaking)_" in text
    assert "→ `Trade <b>smarter</b>`" in text


def test_markdown_without_changes() -> None:
    catalog = make_catalog()
    [text] = diff_to_markdown(diff_catalogs(catalog, catalog))
    assert "No catalog changes." in text
    assert "part" not in text


def many_plans(count: int, *, amount: int, suffix: str) -> list[Plan]:
    def one(i: int) -> Plan:
        price_list = (*prices("monthly", {"INR": amount + i, "USD": 10}), *prices("annual", {"INR": 9000}))
        return plan(
            f"p{i:04d}",
            name=f"Plan {i:04d}{suffix}",
            features={"ai_chat": True, "strategies": i},
            price_list=price_list,
        )

    return [one(i) for i in range(count)]


def big_diff() -> CatalogDiff:
    old = make_catalog(plans=many_plans(700, amount=1000, suffix=""), price_limit="1")
    new = make_catalog(plans=many_plans(700, amount=1100, suffix=" renamed"), price_limit="1")
    return diff_catalogs(old, new)


def test_markdown_splits_under_limit_and_keeps_every_change_once() -> None:
    result = big_diff()
    parts = diff_to_markdown(result)
    assert sum(len(p) for p in parts) > MARKDOWN_LIMIT
    assert len(parts) > 1
    joined = "\n".join(parts)
    for index, part in enumerate(parts, start=1):
        assert len(part) < MARKDOWN_LIMIT
        assert part.startswith(f"## Tariff diff (part {index} of {len(parts)})\n")
    for change in result.changes:
        if change.kind == "plan":
            assert joined.count(f"`{change.key}`") == 1, change.key
        else:
            row = f"| {change.label} | {change.cycle} | {change.currency} | "
            assert joined.count(row) == 1, row
    for finding in result.findings:
        assert joined.count(finding.message.replace("|", "\\|")) <= 1


def test_split_table_repeats_its_header() -> None:
    parts = diff_to_markdown(big_diff())
    header = "| Plan | Cycle | Currency/Region | Old | New | Change | Impact |"
    with_rows = [p for p in parts if re.search(r"^\| Plan \d{4}", p, flags=re.M)]
    assert len(with_rows) > 1
    for part in with_rows:
        first_row = re.search(r"^\| Plan \d{4}", part, flags=re.M)
        assert first_row is not None and part.index(header) < first_row.start()


def test_text_renderer_groups_and_labels() -> None:
    console = Console(record=True, width=160, color_system=None)
    console.print(diff_to_text(sample_diff()))
    text = console.export_text()
    assert text.startswith("4 changes: 1 breaking")
    assert "Policy findings" in text
    assert "features.ai_chat: true → false  (breaking)" in text
    assert "1,499" in text and "+33.4%" in text


def test_markdown_part_paths() -> None:
    assert markdown_part_paths(Path("out/plan.md"), 3) == [
        Path("out/plan.md"),
        Path("out/plan.2.md"),
        Path("out/plan.3.md"),
    ]
    assert markdown_part_paths(Path("comment"), 2) == [Path("comment"), Path("comment.2.md")]


# ------------------------------------------------------------------------------------- the command

Capture = pytest.CaptureFixture[str]


def fake_compiler(catalogs: dict[str, Catalog | None]) -> Callable[[Path], CompileResult]:
    """Compiles a side by looking up its directory name, so tests need no YAML."""

    def compile_config(path: Path) -> CompileResult:
        catalog = catalogs[path.name]
        diagnostics = Diagnostics()
        if catalog is None:
            diagnostics.error("schema.type", "broken", file="tariff.yaml", line=3)
        return CompileResult(catalog, diagnostics)

    return compile_config


@pytest.fixture
def sides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_command_json_and_exit_code_for_error_finding(sides: Path, capsys: Capture) -> None:
    old = make_catalog()
    new = with_prices(old, "pro", Price("monthly", "INR", Decimal(2999)))
    compiler = fake_compiler({"old": old, "new": new})
    assert diff("old..new", Path("new"), "json", None, compiler=compiler) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["format_version"] == 1
    assert data["findings"][0]["severity"] == "error"


def test_command_text_ok(sides: Path, capsys: Capture) -> None:
    old = make_catalog()
    compiler = fake_compiler({"old": old, "new": with_plan(old, name="Pro 2")})
    assert diff("old..new", Path("new"), "text", None, compiler=compiler) == 0
    assert "Plan Pro 2: name Pro → Pro 2" in capsys.readouterr().out


def test_command_reports_compile_errors(sides: Path, capsys: Capture) -> None:
    compiler = fake_compiler({"old": make_catalog(), "new": None})
    assert diff("old..new", Path("new"), "text", None, compiler=compiler) == 1
    err = capsys.readouterr().err
    assert "head (new) does not compile" in err
    assert "tariff.yaml:3:1" in err


def test_command_markdown_parts_to_files(sides: Path, capsys: Capture) -> None:
    old = make_catalog(plans=many_plans(700, amount=1000, suffix=""), price_limit=None)
    new = make_catalog(plans=many_plans(700, amount=1100, suffix=" renamed"), price_limit=None)
    compiler = fake_compiler({"old": old, "new": new})
    assert diff("old..new", Path("new"), "markdown", sides / "comment.md", compiler=compiler) == 0
    files = sorted(sides.glob("comment*.md"))
    assert len(files) > 1
    assert (sides / "comment.2.md").exists()
    assert all(len(f.read_text(encoding="utf-8")) < MARKDOWN_LIMIT for f in files)
    assert diff("old..new", Path("new"), "markdown", None, compiler=compiler) == 0
    assert capsys.readouterr().out.count(PART_SEPARATOR) == len(files) - 1


def test_command_rejects_unknown_format_and_bad_range(sides: Path, capsys: Capture) -> None:
    assert diff("old..new", Path("new"), "yaml", None) == 1
    assert diff("a...b", Path("new"), "text", None) == 1
    assert "three-dot" in capsys.readouterr().err


def test_command_on_the_shipped_config(capsys: Capture) -> None:
    config = Path(__file__).resolve().parents[1] / "pricing"
    if not (config / "tariff.yaml").exists():
        pytest.skip("no shipped pricing/ config")
    assert diff(f"{config}..{config}", config, "json", None) == 0
    assert json.loads(capsys.readouterr().out)["has_changes"] is False
