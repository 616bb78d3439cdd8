"""A cache of config files already read and schema-checked, keyed by their bytes.

Reading YAML with positions and checking it against the JSON Schemas is most of a compile; both depend
only on a file's bytes, its kind and name, the schemas and Tariff's own code. So each result is stored
under `.tariff/cache/documents/` next to the config directory, named by a SHA-256 of exactly those
inputs: any change to a file, a schema, Tariff or its YAML and schema libraries names another entry, and
the old one is never read again. Everything after this step (building the catalog, cross-file checks,
CSV and Markdown files) runs on every compile.

An entry is trusted only if it carries an HMAC made with a secret that lives outside the project (in the
user's cache directory, `~/.cache/tariff/document-cache.key`, readable by the user alone): an entry
copied from another machine or committed to the repository, a truncated write or a flipped bit fails
that check and is ignored, and the file is read again. Entries are pickles of plain values and Decimals
only, unpickled after the check and with every other class refused.

`TARIFF_CACHE=off` turns the cache off.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import secrets
import sys
import tempfile
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from compiler.diagnostics import Diagnostic, Severity
from compiler.yaml_loader import LoadedDocument

FORMAT = b"tariff-document-cache:1\n"
MAGIC = b"TDC1"
MAX_ENTRIES = 20_000  # pruned to half, oldest first, when a compile leaves more
KEY_BYTES = 32
# The modules whose output is cached: a change to any of them must name other entries.
_PRODUCERS = (
    "yaml_loader.py",
    "schema_check.py",
    "schema_predicate.py",
    "diagnostics.py",
    "document_cache.py",
)


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """A config file read and checked: its document and schema findings, or the error that stopped it."""

    document: LoadedDocument | None
    problems: tuple[Diagnostic, ...] = ()
    error: Diagnostic | None = None


def enabled() -> bool:
    return os.environ.get("TARIFF_CACHE", "").strip().lower() not in ("off", "0", "false", "no")


def cache_directory(config_root: Path) -> Path:
    """`.tariff/cache/documents` next to the config directory (`repo/.tariff/…` for `repo/pricing`)."""
    return Path(config_root).resolve().parent / ".tariff" / "cache" / "documents"


def key_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tariff" / "document-cache.key"


def _secret() -> bytes | None:
    """The user's cache secret, created on first use; None when it cannot be read or made safely."""
    try:
        path = key_file()
    except (RuntimeError, KeyError):  # no home directory to keep it in
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(KEY_BYTES))
        status = path.stat()
        # Another user's key, or one others can read, could have signed entries we did not write.
        if status.st_uid != os.getuid() or status.st_mode & 0o077:
            return None
        secret = path.read_bytes()
    except OSError:
        return None
    return secret if len(secret) == KEY_BYTES else None


@cache
def salt() -> bytes:
    """What besides a file's bytes decides the result: this format, Tariff, its libraries, schemas, code."""
    digest = hashlib.sha256(FORMAT)
    versions = [sys.version]
    for package in ("tariff", "pyyaml", "jsonschema", "referencing"):
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}=?")
    digest.update("\n".join(versions).encode("utf-8"))
    schemas = resources.files("schemas")
    for entry in sorted(schemas.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            digest.update(entry.name.encode("utf-8") + b"\0" + entry.read_bytes())
    here = Path(__file__).resolve().parent
    for name in _PRODUCERS:
        digest.update(name.encode("utf-8") + b"\0" + (here / name).read_bytes())
    return digest.digest()


class _PlainUnpickler(pickle.Unpickler):
    """Builds plain values and Decimals only: an entry can name no other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("decimal", "Decimal"):
            return Decimal
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in the document cache")


def _diagnostic_to_plain(d: Diagnostic) -> tuple[Any, ...]:
    return (d.severity.value, d.code, d.message, d.file, d.line, d.column, d.path, d.expected, d.hint)


def _diagnostic_from_plain(t: tuple[Any, ...]) -> Diagnostic:
    return Diagnostic(Severity(t[0]), *t[1:])


class DocumentCache:
    """Checked config files by content; get() returns None for anything missing, stale or untrusted."""

    def __init__(self, directory: Path, secret: bytes) -> None:
        self.directory = directory
        self._secret = secret
        self._salt = salt()
        self.hits = 0
        self.written = 0

    @classmethod
    def for_config(cls, config_root: Path) -> DocumentCache | None:
        if not enabled():
            return None
        secret = _secret()
        return cls(cache_directory(config_root), secret) if secret is not None else None

    def name(self, kind: str, display: str, raw: bytes) -> str:
        digest = hashlib.sha256(self._salt)
        digest.update(f"{kind}\0{display}\0".encode())
        digest.update(raw)
        return digest.hexdigest()

    def _mac(self, name: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, self._salt + name.encode("ascii") + payload, hashlib.sha256).digest()

    def get(self, kind: str, display: str, raw: bytes) -> CheckedFile | None:
        name = self.name(kind, display, raw)
        try:
            blob = (self.directory / name).read_bytes()
        except OSError:
            return None
        head, mac, payload = blob[: len(MAGIC)], blob[len(MAGIC) : len(MAGIC) + 32], blob[len(MAGIC) + 32 :]
        if head != MAGIC or not hmac.compare_digest(mac, self._mac(name, payload)):
            return None
        try:
            plain = _PlainUnpickler(io.BytesIO(payload)).load()
            checked = _from_plain(plain)
        except Exception:  # a signed entry we cannot read is as good as none
            return None
        self.hits += 1
        return checked

    def put(self, kind: str, display: str, raw: bytes, checked: CheckedFile) -> None:
        name = self.name(kind, display, raw)
        payload = pickle.dumps(_to_plain(checked), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(MAGIC + self._mac(name, payload) + payload)
                Path(temporary).replace(self.directory / name)  # readers see a whole entry or none
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return  # a read-only or full disk only costs speed
        self.written += 1

    def prune(self, limit: int = MAX_ENTRIES) -> None:
        """Keep the newest `limit // 2` entries once there are more than `limit`."""
        if not self.written:
            return
        try:
            entries = [e for e in os.scandir(self.directory) if e.is_file() and not e.name.startswith(".")]
            if len(entries) <= limit:
                return
            entries.sort(key=lambda e: e.stat().st_mtime)
            for entry in entries[: len(entries) - limit // 2]:
                Path(entry.path).unlink(missing_ok=True)
        except OSError:
            return


def _to_plain(checked: CheckedFile) -> tuple[Any, ...]:
    if checked.error is not None:
        return ("error", _diagnostic_to_plain(checked.error))
    doc = checked.document
    assert doc is not None
    problems = [_diagnostic_to_plain(p) for p in checked.problems]
    return ("document", doc.file, doc.data, doc.value_positions, doc.key_positions, problems)


def _from_plain(plain: Any) -> CheckedFile:
    if plain[0] == "error":
        return CheckedFile(None, (), _diagnostic_from_plain(plain[1]))
    if plain[0] != "document":
        raise ValueError("unknown entry")
    _tag, file, data, values, keys, problems = plain
    document = LoadedDocument(file, data, values, keys)
    return CheckedFile(document, tuple(_diagnostic_from_plain(p) for p in problems))
