"""The compile cache: the same result as reading every file, every change seen, nothing untrusted used."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import compiler.project as project
from cli.main import app
from compiler import yaml_loader
from compiler.document_cache import DocumentCache, cache_directory, key_file
from compiler.project import CompileResult, compile_config

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    monkeypatch.delenv("TARIFF_CACHE", raising=False)
    target = tmp_path / "repo" / "pricing"
    shutil.copytree(SHIPPED, target)
    return target


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files actually parsed from YAML (not taken from the cache)."""
    names: list[str] = []
    real = yaml_loader.load_yaml_text

    def counting(text: str, display: str) -> yaml_loader.LoadedDocument:
        names.append(display)
        return real(text, display)

    monkeypatch.setattr(project, "load_yaml_text", counting)
    return names


def summary(result: CompileResult) -> tuple[object, ...]:
    assert result.catalog is not None
    return (
        result.catalog.fingerprint,
        result.catalog,
        [d.to_json() for d in result.diagnostics],
        result.locations,
    )


def yaml_files(config: Path) -> list[str]:
    return sorted(p.relative_to(config).as_posix() for p in config.rglob("*.y*ml"))


def entries(config: Path) -> list[Path]:
    return sorted(p for p in cache_directory(config).iterdir() if not p.name.startswith("."))


def test_a_cached_compile_equals_a_full_one_and_parses_nothing(config: Path, parsed: list[str]) -> None:
    uncached = compile_config(config)
    first = compile_config(config, cache=True)
    assert len(entries(config)) == len(yaml_files(config))
    parsed.clear()
    second = compile_config(config, cache=True)
    assert parsed == []
    assert summary(uncached) == summary(first) == summary(second)
    assert key_file().stat().st_mode & 0o777 == 0o600


def test_a_change_to_any_file_is_seen(config: Path, parsed: list[str]) -> None:
    compile_config(config, cache=True)
    for name in yaml_files(config):
        path = config / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        parsed.clear()
        compile_config(config, cache=True)
        assert parsed == [name], name
        path.write_bytes(original)


def test_an_edited_price_and_a_schema_error_show_on_the_next_compile(config: Path) -> None:
    compile_config(config, cache=True)
    plan = config / "plans" / "pro.yaml"
    text = plan.read_text("utf-8")
    assert "INR: 1499" in text
    plan.write_text(text.replace("INR: 1499", "INR: 1599", 1), "utf-8")
    changed = compile_config(config, cache=True)
    assert changed.ok and changed.catalog is not None
    assert summary(changed) == summary(compile_config(config))
    plan.write_text(text.replace("INR: 1499", "INR: lots", 1), "utf-8")
    broken = compile_config(config, cache=True)
    assert not broken.ok
    assert [d.to_json() for d in broken.diagnostics] == [
        d.to_json() for d in compile_config(config).diagnostics
    ]


def test_syntax_errors_are_reported_the_same_from_the_cache(config: Path, parsed: list[str]) -> None:
    (config / "plans" / "broken.yaml").write_text("id: broken\nname: [unclosed\n", "utf-8")
    first = compile_config(config, cache=True)
    parsed.clear()
    second = compile_config(config, cache=True)
    assert parsed == []
    assert [d.to_json() for d in first.diagnostics] == [d.to_json() for d in second.diagnostics]
    assert any(d.code == "yaml.syntax" for d in second.diagnostics)


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: b"",
        lambda blob: blob[: len(blob) // 2],
        lambda blob: blob[:-1] + bytes([blob[-1] ^ 1]),
        lambda blob: blob[:10] + bytes([blob[10] ^ 0x80]) + blob[11:],
        lambda blob: b"not a cache entry at all",
    ],
    ids=["empty", "truncated", "last-bit", "mac-bit", "garbage"],
)
def test_a_corrupted_cache_entry_is_ignored(config: Path, parsed: list[str], damage: object) -> None:
    expected = summary(compile_config(config, cache=True))
    for entry in entries(config):
        entry.write_bytes(damage(entry.read_bytes()))  # type: ignore[operator]
    parsed.clear()
    assert summary(compile_config(config, cache=True)) == expected
    assert sorted(parsed) == yaml_files(config)
    parsed.clear()
    compile_config(config, cache=True)  # the bad entries were replaced by good ones
    assert parsed == []


def test_entries_signed_with_another_key_are_not_trusted(
    config: Path, parsed: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another machine (or a commit) brings a cache that says pro costs 1 rupee: it must not be believed.
    plan = config / "plans" / "pro.yaml"
    text = plan.read_text("utf-8")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
    plan.write_text(text.replace("INR: 1499", "INR: 1", 1), "utf-8")
    compile_config(config, cache=True)
    namer = DocumentCache(cache_directory(config), b"k" * 32)
    forged = (cache_directory(config) / namer.name("plan", "plans/pro.yaml", plan.read_bytes())).read_bytes()
    plan.write_text(text, "utf-8")
    shutil.rmtree(cache_directory(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    honest = compile_config(config)
    # The forged entry under the name the honest file's bytes give, as an attacker would place it.
    cache_directory(config).mkdir(parents=True)
    (cache_directory(config) / namer.name("plan", "plans/pro.yaml", plan.read_bytes())).write_bytes(forged)
    parsed.clear()
    result = compile_config(config, cache=True)
    assert summary(result) == summary(honest)
    assert "plans/pro.yaml" in parsed
    parsed.clear()
    compile_config(config, cache=True)
    assert parsed == []


def test_a_forged_entry_under_the_right_name_is_refused(
    config: Path, parsed: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compile_config(config, cache=True)
    mine = {p.name for p in entries(config)}
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "someone-else"))
    shutil.rmtree(cache_directory(config))
    compile_config(config, cache=True)  # same names (same bytes), other key
    assert {p.name for p in entries(config)} == mine
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    parsed.clear()
    compile_config(config, cache=True)
    assert sorted(parsed) == yaml_files(config)


def test_a_key_others_can_read_turns_the_cache_off(config: Path, parsed: list[str]) -> None:
    compile_config(config, cache=True)
    key_file().chmod(0o644)
    parsed.clear()
    compile_config(config, cache=True)
    assert sorted(parsed) == yaml_files(config)


def test_tariff_cache_off_writes_nothing(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARIFF_CACHE", "off")
    compile_config(config, cache=True)
    assert not cache_directory(config).exists()


def test_validate_uses_the_cache_and_reports_the_same(config: Path, parsed: list[str]) -> None:
    runner = CliRunner()
    first = runner.invoke(app, ["validate", "--config", str(config), "--format", "json"])
    parsed.clear()
    second = runner.invoke(app, ["validate", "--config", str(config), "--format", "json"])
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert parsed == []
