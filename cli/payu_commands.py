"""`tariff payu`: PayU settings of an environment and the offline PayU simulator.

PayU modules are imported inside the commands so that other commands do not pay for `requests`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cli.errors import CommandError
from cli.options import ConfigOption, EnvOption, OutputFormat, OutputFormatOption
from cli.output import print_json, stdout_console

if TYPE_CHECKING:
    from publishers.payu.config import PayUConfig

payu_app = typer.Typer(
    help="PayU India: the settings of an environment and an offline PayU simulator for testing checkouts, "
    "webhooks, refunds and mandates.",
    no_args_is_help=True,
)


def payu_settings(config: Path, env: str | None) -> PayUConfig:
    """The PayU settings of --env from tariff.yaml, as a CommandError when the config or env is wrong."""
    from compiler.project import compile_config
    from publishers.payu.config import payu_config
    from publishers.payu.errors import PayUError

    result = compile_config(config)
    if not result.ok or result.catalog is None:
        raise CommandError(
            f"{config} does not compile ({len(result.diagnostics.errors)} error(s))",
            fix=f"run `tariff validate --config {config}` and fix what it reports",
        )
    try:
        return payu_config(result.catalog.settings, env)
    except PayUError as exc:
        raise CommandError(exc.message, exc.fix) from exc


@payu_app.command("settings")
def settings_command(
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Show the PayU mode, hosts, return URLs and credential variables of an environment.

    Says whether the key and salt variables are set, never what they hold.
    """
    cfg = payu_settings(config, env)
    data: dict[str, object] = dict(cfg.to_json())
    data["key_set"] = bool(os.environ.get(cfg.key_env))
    data["salt_set"] = bool(os.environ.get(cfg.salt_env))
    if format_ is OutputFormat.json:
        print_json(data)
        return
    console = stdout_console()
    for name, value in data.items():
        console.print(f"{name:>13}: {value if value is not None else '-'}", markup=False)
