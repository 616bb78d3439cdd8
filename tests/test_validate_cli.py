"""`tariff validate` as users run it: real processes, exit codes, summary, JSON, usage errors, help."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from compiler.project import compile_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
DIAGNOSTIC_KEYS = {"severity", "code", "message", "file", "line", "column", "path", "expected", "hint"}


def tariff(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("TARIFF_DEBUG", "TARIFF_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**base, **(env or {})},
        check=False,
    )


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr


def copy_config(tmp_path: Path) -> Path:
    target = tmp_path / "pricing"
    shutil.copytree(SHIPPED, target, symlinks=True)
    return target


# ----------------------------------------------------------------------------------------- success


def test_validate_the_shipped_config_from_the_repo_root() -> None:
    """No flags: the default --config is ./pricing."""
    done = tariff("validate")
    no_traceback(done)
    assert done.returncode == 0, done.stdout + done.stderr
    catalog = compile_config(SHIPPED).catalog
    assert catalog is not None
    summary = done.stdout.strip().splitlines()[-1]
    assert f"{len(catalog.plans)} plans" in summary
    assert f"{len(catalog.packages)} token packages" in summary
    assert f"{len(catalog.promotions)} promotions" in summary
    assert f"{len(catalog.regions)} regions" in summary
    assert catalog.fingerprint[:19] in summary
    assert "error" not in done.stdout


def test_validate_with_config_from_anywhere(tmp_path: Path) -> None:
    done = tariff("validate", "--config", str(SHIPPED), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 plans" in done.stdout


def test_config_from_the_environment(tmp_path: Path) -> None:
    done = tariff("validate", cwd=tmp_path, env={"TARIFF_CONFIG": str(SHIPPED)})
    assert done.returncode == 0, done.stdout + done.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "tariff"
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    done = subprocess.run(
        [str(script), "validate", "--config", str(SHIPPED)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_json_output_is_valid_and_versioned() -> None:
    done = tariff("validate", "--config", str(SHIPPED), "--format", "json")
    assert done.returncode == 0
    report: dict[str, Any] = json.loads(done.stdout)  # stdout holds nothing but the JSON document
    assert report["format_version"] == 1
    assert report["ok"] is True
    assert (report["errors"], report["warnings"], report["diagnostics"]) == (0, 0, [])
    catalog = compile_config(SHIPPED).catalog
    assert catalog is not None
    assert report["fingerprint"] == catalog.fingerprint


def test_short_format_flag() -> None:
    done = tariff("validate", "-c", str(SHIPPED), "-f", "json")
    assert done.returncode == 0
    assert json.loads(done.stdout)["ok"] is True


def test_warnings_alone_exit_zero(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    text = (root / "tariff.yaml").read_text(encoding="utf-8")
    assert "target: promotion:students" in text
    (root / "tariff.yaml").write_text(
        text.replace("target: promotion:students", "target: promotion:studnets"), encoding="utf-8"
    )
    done = tariff("validate", "--config", str(root))
    assert done.returncode == 0, done.stdout
    assert "warning" in done.stdout
    assert "0 error(s), 2 warning(s)" in done.stdout
    report = json.loads(tariff("validate", "--config", str(root), "--format", "json").stdout)
    assert (report["ok"], report["errors"], report["warnings"]) == (True, 0, 2)


# ---------------------------------------------------------------------------------------- failures


def test_json_output_on_errors(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    path = root / "plans" / "pro.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("status: active", "stauts: active"), "utf-8")
    done = tariff("validate", "--config", str(root), "--format", "json")
    no_traceback(done)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["format_version"] == 1
    assert (report["ok"], report["fingerprint"]) == (False, None)
    assert report["errors"] == 1
    (item,) = report["diagnostics"]
    assert set(item) == DIAGNOSTIC_KEYS
    assert item["file"] == "plans/pro.yaml"
    assert item["hint"] == "did you mean `status`?"


def test_unknown_option_is_a_clear_usage_error() -> None:
    done = tariff("validate", "--frobnicate")
    no_traceback(done)
    assert done.returncode == 1  # 2 is reserved for "changes present"
    assert "No such option: --frobnicate" in done.stderr
    assert "validate -h' for help" in done.stderr
    assert done.stdout == ""


def test_unknown_format_is_a_clear_usage_error() -> None:
    done = tariff("validate", "--format", "xml")
    no_traceback(done)
    assert done.returncode == 1
    assert "'xml' is not one of" in done.stderr
    assert "'json'" in done.stderr


def test_unknown_command() -> None:
    done = tariff("valdate")
    no_traceback(done)
    assert done.returncode == 1
    assert "No such command 'valdate'" in done.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_missing_config_directory(tmp_path: Path, fmt: str) -> None:
    missing = tmp_path / "no-such-dir"
    done = tariff("validate", "--config", str(missing), "--format", fmt)
    no_traceback(done)
    assert done.returncode == 1
    if fmt == "json":
        (item,) = json.loads(done.stdout)["diagnostics"]
        assert item["code"] == "files.no-config"
        text = item["message"]
    else:
        text = done.stdout
        assert "fix: pass --config DIR" in text
    assert f"{missing} does not exist" in text


def test_config_pointing_at_a_file(tmp_path: Path) -> None:
    done = tariff("validate", "--config", str(SHIPPED / "tariff.yaml"))
    no_traceback(done)
    assert done.returncode == 1
    assert "is not a directory" in done.stdout


def test_empty_config_directory(tmp_path: Path) -> None:
    done = tariff("validate", "--config", str(tmp_path))
    no_traceback(done)
    assert done.returncode == 1
    assert "tariff.yaml is missing" in done.stdout


# --------------------------------------------------------------------------------------------- help


def test_top_level_help() -> None:
    done = tariff("--help")
    assert done.returncode == 0
    assert "validate" in done.stdout
    assert "diff" in done.stdout


def test_validate_help_documents_its_flags() -> None:
    done = tariff("validate", "--help")
    assert done.returncode == 0
    for flag in ("--config", "--format", "text", "json"):
        assert flag in done.stdout
    assert "Exit 0" in done.stdout


def test_short_help_flag() -> None:
    assert tariff("validate", "-h").returncode == 0
