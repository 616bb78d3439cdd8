"""Who applies, from which commit: recorded on every revision."""

from __future__ import annotations

import getpass
import os
import subprocess
from pathlib import Path


def _git(config: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(config), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def actor(config: Path) -> str:
    """TARIFF_ACTOR (CI sets it to the GitHub user), else git's user, else the login name."""
    explicit = os.environ.get("TARIFF_ACTOR", "").strip()
    if explicit:
        return explicit
    name = _git(config, "config", "user.name")
    email = _git(config, "config", "user.email")
    if name and email:
        return f"{name} <{email}>"
    try:
        return name or email or getpass.getuser()
    except OSError:
        return "unknown"


def git_state(config: Path) -> tuple[str | None, bool | None]:
    """The commit the config directory is at, and whether it has uncommitted changes."""
    commit = _git(config, "rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = _git(config, "status", "--porcelain", "--", ".")
    return commit, bool(status)
