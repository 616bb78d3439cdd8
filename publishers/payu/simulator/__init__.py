"""An offline PayU on localhost: hosted checkout, webhooks, merchant API, refunds and mandates.

``start_simulator()`` runs it in a background thread (tests, demos); ``tariff payu simulator`` runs it in
the foreground for trying an app's own PayU integration without PayU's network.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from publishers.payu.credentials import PayUCredentials

DEFAULT_KEY = "SIMKEY"
# Not a secret: the simulator's well-known salt, for apps pointed at the simulator.
DEFAULT_SALT = "tariff-payu-simulator-salt-0000000000"


@dataclass
class RunningSimulator:
    """A simulator serving at ``url`` until ``stop()``."""

    url: str
    credentials: PayUCredentials
    simulator: Any = field(repr=False)
    _server: Any = field(repr=False)
    _threads: list[threading.Thread] = field(repr=False)
    _stopped: threading.Event = field(repr=False)

    @property
    def state(self) -> Any:
        return self.simulator.state

    def pay(self, txnid: str, outcome: str = "success", **options: Any) -> dict[str, Any]:
        """Finish an open checkout like ``POST /_sim/pay`` (returns the response fields and deliveries)."""
        result: dict[str, Any] = self.simulator.control(
            "pay", {"txnid": txnid, "outcome": outcome, **options}
        )
        self.simulator.persist()
        return result

    def settle_refunds(self, status: str = "success", request_id: str | None = None) -> dict[str, Any]:
        """Queued refunds → ``status`` now, with their callbacks, like ``POST /_sim/settle-refunds``."""
        result: dict[str, Any] = self.simulator.control(
            "settle-refunds", {"status": status, "request_id": request_id}
        )
        self.simulator.persist()
        return result

    def fail_next(
        self,
        mode: str = "503",
        count: int = 1,
        command: str | None = None,
        delay: float = 0,
        code: int | None = None,
    ) -> None:
        """Make the next merchant-API calls fail, like ``POST /_sim/fail-next`` (``refuse`` takes a code)."""
        self.simulator.control(
            "fail-next", {"mode": mode, "count": count, "command": command, "delay": delay, "code": code}
        )

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_simulator(
    port: int = 0,
    key: str = DEFAULT_KEY,
    salt: str = DEFAULT_SALT,
    *,
    host: str = "127.0.0.1",
    webhook_url: str | None = None,
    refund_settle_seconds: float | None = 30.0,
    state_file: Path | None = None,
) -> RunningSimulator:
    """Start the simulator on ``host:port`` (0 picks a free port) and return once it accepts requests.

    With ``state_file`` it starts from what that file holds (when it exists) and writes every change to it.
    """
    from publishers.payu.simulator.server import Simulator, SimulatorServer

    simulator = Simulator(
        key, salt, webhook_url=webhook_url, refund_settle_seconds=refund_settle_seconds, state_file=state_file
    )
    server = SimulatorServer((host, port), simulator)
    bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    simulator.url = f"http://{shown}:{bound_port}"
    stopped = threading.Event()

    def tick() -> None:
        while not stopped.wait(0.2):
            simulator.tick()

    threads = [
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True),
        threading.Thread(target=tick, daemon=True),
    ]
    for thread in threads:
        thread.start()
    return RunningSimulator(simulator.url, PayUCredentials(key, salt), simulator, server, threads, stopped)
