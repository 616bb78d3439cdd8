"""`tariff preview` as users run it: files written, messages, exit codes, --open, --serve and Ctrl-C."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import cli.preview_command as preview_command
from cli.errors import CommandError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
# Runs the real entry point (`cli.main:main`, which turns CommandError into exit 1) with `preview`
# registered the way cli/main.py registers it.
DRIVER = (
    "from cli import main as m\n"
    "from cli.preview_command import register\n"
    "if not any(c.name == 'preview' for c in m.app.registered_commands):\n"
    "    register(m.app)\n"
    "m.main()\n"
)


def tariff(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in ("TARIFF_DEBUG", "TARIFF_CONFIG", "TARIFF_CHROMIUM")
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**base, **(env or {})},
        check=False,
    )


def app() -> typer.Typer:
    local = typer.Typer()

    @local.callback()
    def root() -> None:
        """Tariff (test app)."""

    preview_command.register(local)
    return local


def test_writes_the_site_and_says_where_to_open_it(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    done = tariff("preview", "--config", str(SHIPPED), "--out", str(out), "--at", "2026-10-25T12:00+05:30")
    assert done.returncode == 0, done.stderr
    assert (out / "index.html").is_file() and (out / "pricing-in.html").is_file()
    assert (out / "pricing-eu.json").is_file()
    assert "pricing-in.html (India, INR, en_IN) — promotions: diwali-2026" in done.stdout
    assert f"Open {(out / 'index.html').resolve().as_uri()}" in done.stdout
    assert "Traceback" not in done.stderr


def test_region_and_locale_options(tmp_path: Path) -> None:
    out = tmp_path / "preview"
    done = tariff(
        "preview", "-c", str(SHIPPED), "-o", str(out), "--region", "US", "--region", "EU", "--locale", "en_IN"
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.glob("*.html")) == ["index.html", "pricing-eu.html", "pricing-us.html"]
    assert '"locale": "en_IN"' in (out / "pricing-eu.json").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--at", "next tuesday"], "--at 'next tuesday' is not an ISO 8601 date or time"),
        (["--region", "XX"], "unknown region 'XX': the config has IN, US, EU"),
        (["--locale", "xx_YY"], "unknown locale 'xx_YY'"),
    ],
)
def test_bad_options_exit_1_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    done = tariff("preview", "-c", str(SHIPPED), "-o", str(tmp_path / "out"), *args)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_config_errors_are_listed_and_exit_1(tmp_path: Path) -> None:
    config = tmp_path / "pricing"
    shutil.copytree(SHIPPED, config)
    pro = config / "plans" / "pro.yaml"
    pro.write_text(
        pro.read_text(encoding="utf-8").replace("trial_days: 14", "trial_days: soon"), encoding="utf-8"
    )
    done = tariff("preview", "-c", str(config), "-o", str(tmp_path / "out"))
    assert done.returncode == 1
    assert re.search(r"plans/pro\.yaml:\d+:\d+", done.stderr)
    assert "does not compile" in done.stderr


def test_screenshot_without_chromium_fails_clearly(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    # No TARIFF_CHROMIUM, no chromium on PATH, and the Debian path hidden by pointing it elsewhere.
    done = tariff(
        "preview",
        "-c",
        str(SHIPPED),
        "-o",
        str(tmp_path / "out"),
        "--screenshot",
        str(tmp_path / "shots"),
        env={"PATH": str(empty), "TARIFF_CHROMIUM": str(tmp_path / "missing-chromium")},
    )
    assert done.returncode == 1
    assert "install Chromium: apt-get install chromium, or set TARIFF_CHROMIUM" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "shots").exists()


def test_no_browser_found_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TARIFF_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("publishers.site.screenshot.SYSTEM_CHROMIUM", str(tmp_path / "chromium"))
    result = CliRunner().invoke(app(), ["preview", "-c", str(SHIPPED), "--screenshot", str(tmp_path / "s")])
    assert isinstance(result.exception, CommandError)
    assert result.exception.message == (
        "no Chromium found; install Chromium: apt-get install chromium, or set TARIFF_CHROMIUM"
    )


def test_open_opens_the_index(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opened: list[str] = []

    def fake_open(url: str) -> bool:
        opened.append(url)
        return True

    monkeypatch.setattr("webbrowser.open", fake_open)
    out = tmp_path / "out"
    result = CliRunner().invoke(app(), ["preview", "-c", str(SHIPPED), "-o", str(out), "--open"])
    assert result.exit_code == 0, result.output
    assert opened == [(out / "index.html").resolve().as_uri()]


def test_serve_prints_the_url_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "pricing"
    shutil.copytree(SHIPPED, config)
    base = {k: v for k, v in os.environ.items() if k != "TARIFF_CONFIG"}
    process = subprocess.Popen(
        [sys.executable, "-u", "-c", DRIVER, "preview", "--serve", "--port", "0", "-c", str(config)],
        cwd=REPO,
        env={**base, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for _ in range(20):
            line = process.stdout.readline()
            match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                url = match
                break
        assert url is not None, process.stderr.read() if process.stderr else ""
        conn = http.client.HTTPConnection("127.0.0.1", int(url.group(1)), timeout=10)
        conn.request("GET", "/pricing-us.html")
        response = conn.getresponse()
        assert response.status == 200 and b"<h1>" in response.read()
        conn.close()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "stopped" in stdout
    assert "Traceback" not in stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = tariff("preview", "--serve", "--port", str(port), "-c", str(SHIPPED))
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr
