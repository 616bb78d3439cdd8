"""How a delivery attempt fails: retried later, or at once for good."""

from __future__ import annotations


class DeliveryError(Exception):
    """One attempt failed. `permanent`: retrying cannot help (no address), so the row fails at once."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
