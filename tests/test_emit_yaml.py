"""Catalog → YAML (the writing half of `tariff import`) compiles back into the same catalog."""

from __future__ import annotations

from pathlib import Path

from compiler.diff import diff_catalogs
from compiler.emit_yaml import catalog_files
from compiler.project import compile_config

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"


def _write(files: dict[str, str], root: Path) -> Path:
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, "utf-8")
    return root


def test_emitted_config_compiles_back_to_an_equal_catalog(tmp_path: Path) -> None:
    original = compile_config(SHIPPED)
    assert original.ok and original.catalog is not None
    emitted = compile_config(_write(catalog_files(original.catalog), tmp_path / "pricing"))
    assert [d.message for d in emitted.diagnostics] == []
    assert emitted.catalog is not None
    assert emitted.catalog.fingerprint == original.catalog.fingerprint
    assert not diff_catalogs(original.catalog, emitted.catalog).has_changes


def test_emitted_files_carry_schema_modelines_and_keep_country_codes_as_text(tmp_path: Path) -> None:
    original = compile_config(SHIPPED)
    assert original.catalog is not None
    files = catalog_files(original.catalog)
    for name, text in files.items():
        if name.endswith(".yaml"):
            assert text.startswith("# yaml-language-server: $schema="), name
    # Norway must survive a YAML 1.1 round trip too: the emitter quotes it.
    assert "'NO'" in files["tariff.yaml"]
    assert "customer_id" in files["promotions/beta-testers.csv"]


def test_emission_is_deterministic() -> None:
    original = compile_config(SHIPPED)
    assert original.catalog is not None
    assert catalog_files(original.catalog) == catalog_files(compile_config(SHIPPED).catalog)  # type: ignore[arg-type]
