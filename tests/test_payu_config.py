"""PayU settings per environment: tariff.yaml → compiler → hosts filled in from the mode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compiler.catalog import PayUSettings
from compiler.project import compile_config
from publishers.payu.config import SIMULATOR_URL, payu_config, resolve
from publishers.payu.errors import PayUConfigError

SHIPPED = Path(__file__).resolve().parents[1] / "pricing"


def test_default_hosts_per_mode() -> None:
    test = resolve("staging", PayUSettings(mode="test"))
    assert (test.checkout_url, test.api_url) == ("https://test.payu.in", "https://test.payu.in")
    assert test.payment_url == "https://test.payu.in/_payment"
    live = resolve("production", PayUSettings(mode="production"))
    assert (live.checkout_url, live.api_url) == ("https://secure.payu.in", "https://info.payu.in")
    sim = resolve("local", PayUSettings(mode="simulator"))
    assert sim.api_url == sim.checkout_url == SIMULATOR_URL


def test_overrides_win_and_lose_trailing_slash() -> None:
    cfg = resolve("x", PayUSettings(mode="test", checkout_url="http://127.0.0.1:9/", api_url="http://h:1/"))
    assert (cfg.checkout_url, cfg.api_url) == ("http://127.0.0.1:9", "http://h:1")


def test_shipped_config_carries_payu_settings() -> None:
    result = compile_config(SHIPPED)
    assert result.ok and result.catalog is not None
    cfg = payu_config(result.catalog.settings, "production")
    assert cfg.mode == "production"
    assert cfg.webhook_url == "https://pinegenie.app/api/payments/payu/webhook"
    assert cfg.success_url == "https://pinegenie.app/api/payments/payu/success"
    assert (cfg.key_env, cfg.salt_env) == ("PAYU_KEY", "PAYU_SALT")
    assert payu_config(result.catalog.settings, "local").api_url == SIMULATOR_URL


def test_unknown_environment_and_missing_choice_are_explained() -> None:
    result = compile_config(SHIPPED)
    assert result.catalog is not None
    with pytest.raises(PayUConfigError, match="no environment 'prod'") as caught:
        payu_config(result.catalog.settings, "prod")
    assert "production" in (caught.value.fix or "")
    with pytest.raises(PayUConfigError, match="no environment chosen"):
        payu_config(result.catalog.settings, None)


def test_schema_refuses_unknown_payu_keys(tmp_path: Path) -> None:
    config = tmp_path / "pricing"
    shutil.copytree(SHIPPED, config)
    tariff = config / "tariff.yaml"
    text = tariff.read_text().replace("      mode: production\n", "      mode: production\n      salt: x\n")
    tariff.write_text(text)
    result = compile_config(config)
    assert not result.ok
    assert any("salt" in d.message for d in result.diagnostics.errors)
