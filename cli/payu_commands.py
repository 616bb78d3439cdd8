"""`tariff payu`: PayU settings of an environment and the offline PayU simulator.

PayU modules are imported inside the commands so that other commands do not pay for `requests`.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import CommandError
from cli.options import ConfigOption, EnvOption, OutputFormat, OutputFormatOption
from cli.output import print_json, stdout_console

if TYPE_CHECKING:
    from publishers.payu.config import PayUConfig

payu_app = typer.Typer(
    help="PayU India: checkouts priced by Tariff (with e-mandates), payment results and webhooks, refunds, "
    "reconciliation, mandates and their pre-debit notices, the settings of an environment and an offline "
    "PayU simulator.",
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


@payu_app.command("simulator")
def simulator_command(
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on (0 picks a free one).")
    ] = 8786,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (keep it on loopback).")
    ] = "127.0.0.1",
    config: ConfigOption = Path("pricing"),
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            "-e",
            help="Take the key and salt variable names and the webhook URL from this environment's "
            "PayU settings.",
            show_default=False,
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option(
            "--webhook-url",
            help="Where to send payment webhooks and refund callbacks (default: the environment's "
            "webhook_url).",
            show_default=False,
        ),
    ] = None,
    refund_settle_seconds: Annotated[
        float,
        typer.Option(
            "--refund-settle-seconds",
            min=0,
            help="Queued refunds turn SUCCESS after this long (POST /_sim/settle-refunds does it at once).",
        ),
    ] = 30.0,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Keep payments, refunds and mandates in this JSON file: a restarted simulator starts from "
            "it, and every change is written to it.",
            show_default=False,
        ),
    ] = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Run an offline PayU on localhost until Ctrl-C: checkout, webhooks, merchant API, refunds, mandates.

    Point your app's PayU URLs at it (checkout form to <url>/_payment, API calls to
    <url>/merchant/postservice.php?form=2) with the same key and salt. It uses the variables named by the
    environment (PAYU_KEY / PAYU_SALT by default) when they are set, and otherwise a well-known test key
    and salt that it prints. Test cards 5123456789012346 and 4012001037141112, OTP 123456.
    """
    import logging

    from publishers.payu.credentials import logger
    from publishers.payu.simulator import DEFAULT_KEY, DEFAULT_SALT, start_simulator

    key_env, salt_env = "PAYU_KEY", "PAYU_SALT"
    if env is not None:
        cfg = payu_settings(config, env)
        key_env, salt_env = cfg.key_env, cfg.salt_env
        webhook_url = webhook_url or cfg.webhook_url
    if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
        raise CommandError(
            f"--webhook-url {webhook_url!r} is not an http(s) URL", "e.g. http://127.0.0.1:3000/api/payu"
        )
    key = os.environ.get(key_env, "").strip()
    salt = os.environ.get(salt_env, "").strip()
    from_env = bool(key and salt)
    if not from_env:
        key, salt = DEFAULT_KEY, DEFAULT_SALT
    if state is not None and state.is_dir():
        raise CommandError(f"--state {state} is a directory", "name a file, e.g. --state payu-sim.json")
    try:
        sim = start_simulator(
            port,
            key,
            salt,
            host=host,
            webhook_url=webhook_url,
            refund_settle_seconds=refund_settle_seconds,
            state_file=state,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandError(
            f"--state {state}: cannot restore the simulator from it ({exc})",
            "pass the file a simulator with the same key wrote, or a new path to start empty",
        ) from exc
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            "Another process uses that port: pass --port with a free one (or --port 0 to pick any).",
        ) from exc
    # Each request and delivery as one line on stderr (the logger's filter keeps credentials out).
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    info: dict[str, object] = {
        "url": sim.url,
        "checkout_url": sim.url + "/_payment",
        "api_url": sim.url + "/merchant/postservice.php?form=2",
        "credentials": f"from ${key_env} and ${salt_env}" if from_env else "simulator defaults",
        "webhook_url": webhook_url,
        "state": str(state) if state is not None else None,
    }
    if not from_env:
        # The defaults are public test values, printed so an app can be configured with them.
        info.update({"key": DEFAULT_KEY, "salt": DEFAULT_SALT})
    try:
        if format_ is OutputFormat.json:
            print_json(info)
        else:
            console = stdout_console()
            console.print(f"PayU simulator at {sim.url}  (Ctrl-C stops it)", markup=False)
            for name, value in info.items():
                if name != "url":
                    console.print(f"  {name:>12}: {value if value is not None else '-'}", markup=False)
            console.print(
                "  test cards 5123456789012346 / 4012001037141112, expiry 05/30, CVV 123, OTP 123456",
                markup=False,
            )
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
