"""`tariff payu settings` and `tariff payu simulator` through the real CLI; secrets never in the output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials

ROOT = Path(__file__).resolve().parents[1]
PRICING = str(ROOT / "pricing")
KEY = "Cl1Key"
SALT = "cli-salt-Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1J"


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, BaseException | None]:
    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, list(args))
    return result.exit_code, result.output, result.exception


def test_settings_json_names_variables_never_values() -> None:
    code, out, _ = run(
        "payu",
        "settings",
        "--config",
        PRICING,
        "--env",
        "production",
        "--format",
        "json",
        env={"PAYU_KEY": KEY, "PAYU_SALT": SALT},
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["api_url"] == "https://info.payu.in" and data["checkout_url"] == "https://secure.payu.in"
    assert data["key_env"] == "PAYU_KEY" and data["key_set"] is True and data["salt_set"] is True
    assert KEY not in out and SALT not in out


def test_settings_for_an_unknown_environment_explains() -> None:
    code, _, exc = run("payu", "settings", "--config", PRICING, "--env", "prod")
    assert code == 1 and isinstance(exc, CommandError)
    assert "prod" in exc.message and "production" in (exc.fix or "")


def test_simulator_refuses_a_busy_port_and_a_bad_webhook_url() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, exc = run("payu", "simulator", "--port", str(port))
        assert code == 1 and isinstance(exc, CommandError)
        assert "cannot listen" in exc.message and "--port" in (exc.fix or "")
    code, _, exc = run("payu", "simulator", "--port", "0", "--webhook-url", "ftp://x")
    assert code == 1 and isinstance(exc, CommandError)


def test_simulator_refuses_a_state_file_it_cannot_restore(tmp_path: Path) -> None:
    code, _, exc = run("payu", "simulator", "--port", "0", "--state", str(tmp_path))
    assert code == 1 and isinstance(exc, CommandError) and "is a directory" in exc.message
    broken = tmp_path / "state.json"
    broken.write_text("{not json", encoding="utf-8")
    code, _, exc = run("payu", "simulator", "--port", "0", "--state", str(broken))
    assert code == 1 and isinstance(exc, CommandError)
    assert "cannot restore the simulator" in exc.message and "new path" in (exc.fix or "")


def read_json_block(stream: object) -> dict[str, object]:
    lines = []
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line)
        if line.rstrip() == "}":
            break
    data: dict[str, object] = json.loads("".join(lines))
    return data


def test_simulator_command_serves_until_interrupted() -> None:
    env = {**os.environ, "PAYU_KEY": KEY, "PAYU_SALT": SALT}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "payu", "simulator", "--port", "0", "--format", "json", "-c", PRICING],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        info = read_json_block(proc.stdout)
        assert info["credentials"] == "from $PAYU_KEY and $PAYU_SALT" and "salt" not in info
        url = str(info["url"])
        assert requests.get(url + "/_sim/health", timeout=5).json() == {"ok": True}
        client = PayUClient(url, PayUCredentials(KEY, SALT))
        assert not client.verify_payment(["PGnone"])["PGnone"].found
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert KEY not in out + err and SALT not in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulator_defaults_are_printed_when_no_credentials_are_set() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PAYU_KEY", "PAYU_SALT")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "payu", "simulator", "--port", "0", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        info = read_json_block(proc.stdout)
        assert info["credentials"] == "simulator defaults"
        client = PayUClient(str(info["url"]), PayUCredentials(str(info["key"]), str(info["salt"])))
        assert client.get_all_refunds_from_txn_ids("x") == []
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
