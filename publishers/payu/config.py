"""PayU settings of one environment, with the hosts filled in from its mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from compiler.catalog import PayUSettings, Settings
from publishers.payu.credentials import PayUCredentials
from publishers.payu.errors import PayUConfigError

Mode = Literal["test", "production", "simulator"]

SIMULATOR_HOST = "127.0.0.1"
SIMULATOR_PORT = 8786
SIMULATOR_URL = f"http://{SIMULATOR_HOST}:{SIMULATOR_PORT}"

# In production PayU serves the merchant API from a different host than the hosted checkout.
DEFAULT_HOSTS: dict[str, tuple[str, str]] = {
    "test": ("https://test.payu.in", "https://test.payu.in"),
    "production": ("https://secure.payu.in", "https://info.payu.in"),
    "simulator": (SIMULATOR_URL, SIMULATOR_URL),
}

PAYMENT_PATH = "/_payment"
API_PATH = "/merchant/postservice.php?form=2"


@dataclass(frozen=True, slots=True)
class PayUConfig:
    """Everything a PayU call needs except the secrets, which stay in the named variables."""

    environment: str
    mode: Mode
    checkout_url: str
    api_url: str
    key_env: str = "PAYU_KEY"
    salt_env: str = "PAYU_SALT"
    success_url: str | None = None
    failure_url: str | None = None
    webhook_url: str | None = None

    @property
    def payment_url(self) -> str:
        """Where the checkout form posts."""
        return self.checkout_url.rstrip("/") + PAYMENT_PATH

    def credentials(self, environ: Mapping[str, str] | None = None) -> PayUCredentials:
        return PayUCredentials.from_env(self.key_env, self.salt_env, environ)

    def to_json(self) -> dict[str, str | None]:
        """Settings as data: variable names, never their values."""
        return {
            "environment": self.environment,
            "mode": self.mode,
            "checkout_url": self.checkout_url,
            "api_url": self.api_url,
            "key_env": self.key_env,
            "salt_env": self.salt_env,
            "success_url": self.success_url,
            "failure_url": self.failure_url,
            "webhook_url": self.webhook_url,
        }


def resolve(environment: str, settings: PayUSettings) -> PayUConfig:
    """Fill in the default hosts of the mode where the settings do not override them."""
    checkout, api = DEFAULT_HOSTS[settings.mode]
    return PayUConfig(
        environment=environment,
        mode=settings.mode,
        checkout_url=(settings.checkout_url or checkout).rstrip("/"),
        api_url=(settings.api_url or api).rstrip("/"),
        key_env=settings.key_env,
        salt_env=settings.salt_env,
        success_url=settings.success_url,
        failure_url=settings.failure_url,
        webhook_url=settings.webhook_url,
    )


def payu_config(settings: Settings, environment: str | None) -> PayUConfig:
    """The PayU settings of ``environment`` from tariff.yaml, or a clear error saying what to add."""
    names = sorted(settings.environments)
    with_payu = [n for n in names if settings.environments[n].payu is not None]
    if environment is None:
        if len(with_payu) == 1:
            environment = with_payu[0]
        else:
            raise PayUConfigError(
                "no environment chosen for PayU",
                f"Pass --env with one of: {', '.join(with_payu) or '(none has a payu section)'} "
                "(or set TARIFF_ENV).",
                code="environment_missing",
            )
    env = settings.environments.get(environment)
    if env is None:
        raise PayUConfigError(
            f"tariff.yaml has no environment {environment!r}",
            f"Use one of: {', '.join(names) or '(none)'}, or add it under `environments:`.",
            code="environment_unknown",
        )
    if env.payu is None:
        raise PayUConfigError(
            f"environment {environment!r} has no PayU settings",
            f"Add `payu: {{mode: test}}` (or production / simulator) under `environments.{environment}` "
            "in tariff.yaml.",
            code="payu_missing",
        )
    return resolve(environment, env.payu)
