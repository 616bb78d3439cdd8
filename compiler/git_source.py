"""The config directory as it was at a git revision, for `tariff diff BASE..HEAD` without a database.

A revision is exported with `git archive` into a private folder, so the working tree, the index and
the checked-out branch are never touched and uncommitted edits survive.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

GIT_TIMEOUT_SECONDS = 120


class GitSourceError(Exception):
    """A revision or directory could not be read; the message names it and says how to fix it."""


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a range: a git revision, a config directory on disk, or (neither) the working tree."""

    revision: str | None = None
    directory: Path | None = None

    @property
    def label(self) -> str:
        if self.revision is not None:
            return self.revision
        if self.directory is not None:
            return str(self.directory)
        return "working tree"


WORKING_TREE = Side()


def parse_range(spec: str) -> tuple[Side, Side]:
    """`BASE..HEAD` → (base, head).

    Each side is a revision (commit, branch, tag, `HEAD~1`) or an existing directory, which is used
    as the config directory as-is (and wins over a branch of the same name: write `refs/heads/NAME`
    for the branch).  `BASE..` and a bare `BASE` compare against the working tree.  Git forbids `..`
    inside ref names, so only directory paths can contain it (`../old-pricing..pricing`).
    """
    text = spec.strip()
    if not text:
        raise GitSourceError(
            "empty range: write BASE..HEAD (e.g. main..HEAD), or BASE to compare with the working tree"
        )
    if Path(text).is_dir():
        return Side(directory=Path(text)), WORKING_TREE
    if "..." in text.replace("../", "").replace("/..", ""):
        raise GitSourceError(
            f"three-dot range {spec!r} is not supported: write BASE..HEAD, e.g. "
            "`$(git merge-base origin/main HEAD)..HEAD` to diff against the branch point"
        )
    for match in re.finditer(r"\.\.", text):
        base, head = text[: match.start()], text[match.end() :]
        if _plausible(base) and (head == "" or _plausible(head)):
            return _side(base), (_side(head) if head else WORKING_TREE)
    if ".." not in text:
        return _side(text), WORKING_TREE
    raise GitSourceError(
        f"cannot read range {spec!r}: write BASE..HEAD where each side is a revision "
        "(main, HEAD~1, a tag or commit) or an existing directory"
    )


def _plausible(side: str) -> bool:
    if not side:
        return False
    if Path(side).is_dir():
        return True
    return ".." not in side and not side.startswith(("/", ".")) and not side.endswith("/")


def _side(text: str) -> Side:
    return Side(directory=Path(text)) if Path(text).is_dir() else Side(revision=text)


def resolve_side(side: Side, config: Path, workdir: Path) -> Path:
    """The config directory for one side: as given, exported from git, or the working tree's."""
    if side.directory is not None:
        return side.directory
    if side.revision is not None:
        return materialize(side.revision, str(config), workdir)
    return config


def materialize(spec: str, config_subdir: str, workdir: Path) -> Path:
    """Write the config directory as it was at revision `spec` into a new folder under `workdir`.

    `config_subdir` is the config directory as the user names it (relative to the current directory,
    or absolute); the repository is the one that contains it.  Returns the exported config directory.
    """
    if spec.startswith("-"):
        raise GitSourceError(f"revision {spec!r} looks like an option: name a branch, tag or commit")
    config = Path(config_subdir).absolute()
    top = _toplevel(config)
    relative = _relative_to_repo(config, top)
    commit = _commit(spec, top)
    _require_directory(spec, commit, relative, top)
    target = Path(tempfile.mkdtemp(prefix=_safe_name(spec) + "-", dir=workdir))
    _export(commit, relative, top, target, spec)
    return target.joinpath(*relative.parts)


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("git") is None:
        raise GitSourceError(
            "git is not installed or not on PATH: install git to diff revisions, or "
            "give two config directories (OLD_DIR..NEW_DIR)"
        )
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=GIT_TIMEOUT_SECONDS
    )


def _toplevel(config: Path) -> Path:
    # The config directory may not exist in the working tree any more, so ask from its nearest ancestor.
    anchor = next((p for p in (config, *config.parents) if p.is_dir()), Path.cwd())
    result = _git(["rev-parse", "--show-toplevel"], anchor)
    if result.returncode != 0:
        raise GitSourceError(
            f"{config} is not inside a git repository: run `tariff diff` from a git "
            "checkout, or compare two directories (OLD_DIR..NEW_DIR)"
        )
    return Path(result.stdout.strip()).resolve()


def _relative_to_repo(config: Path, top: Path) -> PurePosixPath:
    resolved = _resolve_existing(config)
    try:
        return PurePosixPath(resolved.relative_to(top).as_posix())
    except ValueError:
        raise GitSourceError(
            f"config directory {config} is outside the git repository at {top}: pass "
            "--config with a directory inside it"
        ) from None


def _resolve_existing(path: Path) -> Path:
    """Resolve symlinks in the part of `path` that exists; a deleted config dir keeps its name."""
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            return ancestor.resolve().joinpath(path.relative_to(ancestor))
    return path


def _commit(spec: str, top: Path) -> str:
    result = _git(["rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"], top)
    if result.returncode != 0 or not result.stdout.strip():
        raise GitSourceError(
            f"unknown revision {spec!r} in {top}: check the name with `git log --oneline` or "
            f"`git branch -a`; in CI, fetch it first (`git fetch origin <branch>`, or checkout with "
            f"fetch-depth: 0, since shallow clones lack older commits)"
        )
    return result.stdout.strip()


def _require_directory(spec: str, commit: str, relative: PurePosixPath, top: Path) -> None:
    if relative == PurePosixPath("."):
        return
    result = _git(["cat-file", "-t", f"{commit}:{relative.as_posix()}"], top)
    kind = result.stdout.strip()
    if result.returncode != 0:
        raise GitSourceError(
            f"config directory {relative.as_posix()!r} does not exist at revision {spec!r} "
            f"({commit[:12]}): pick a revision that has it, or pass --config with the directory's path "
            f"at that time"
        )
    if kind != "tree":
        raise GitSourceError(
            f"{relative.as_posix()!r} is a {kind}, not a directory, at revision {spec!r}: "
            "pass --config with the config directory"
        )


def _safe_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec)[:40] or "rev"


def _export(commit: str, relative: PurePosixPath, top: Path, target: Path, spec: str) -> None:
    args = ["git", "archive", "--format=tar", commit]
    if relative != PurePosixPath("."):
        args += ["--", relative.as_posix()]
    with subprocess.Popen(args, cwd=top, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        try:
            _extract(process.stdout, target)
        finally:
            process.stdout.close()
            stderr = process.stderr.read().decode("utf-8", "replace").strip()
            returncode = process.wait(timeout=GIT_TIMEOUT_SECONDS)
    if returncode != 0:
        raise GitSourceError(f"git archive failed for revision {spec!r}: {stderr or 'no message'}")


def _extract(stream: IO[bytes], target: Path) -> None:
    """Unpack a tar stream into `target`, refusing anything that would land outside it."""
    root = target.resolve()
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            destination = _member_path(root, member.name)
            if member.isdir():
                destination.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = archive.extractfile(member)
                if source is None:
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with source, destination.open("wb") as sink:
                    shutil.copyfileobj(source, sink)
            elif member.issym():
                _symlink(root, destination, member.linkname)
            else:
                raise GitSourceError(f"unsupported entry {member.name!r} in the exported revision")


def _member_path(root: Path, name: str) -> Path:
    member = PurePosixPath(name)
    if member.is_absolute() or ".." in member.parts or name.startswith("\\"):
        raise GitSourceError(f"refusing archive entry {name!r}: it points outside the export folder")
    return root.joinpath(*member.parts)


def _symlink(root: Path, destination: Path, link: str) -> None:
    # Config files may be symlinked within the repository, never to anything outside the export.
    resolved = (destination.parent / link).resolve()
    if PurePosixPath(link).is_absolute() or not resolved.is_relative_to(root):
        raise GitSourceError(
            f"refusing symlink {destination.name!r} → {link!r}: it points outside the config repository"
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.symlink_to(link)
