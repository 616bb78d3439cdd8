"""Exporting the config directory at a git revision, and reading BASE..HEAD ranges."""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from compiler.git_source import (
    WORKING_TREE,
    GitSourceError,
    Side,
    _extract,
    materialize,
    parse_range,
    resolve_side,
)

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose pricing/ changes between two commits, plus an uncommitted edit."""
    root = tmp_path / "repo"
    (root / "pricing" / "plans").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "pricing" / "tariff.yaml").write_text("project: one\n", encoding="utf-8")
    (root / "pricing" / "plans" / "pro.yaml").write_text("price: 1499\n", encoding="utf-8")
    (root / "README.md").write_text("not config\n", encoding="utf-8")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    git(root, "tag", "v1")
    (root / "pricing" / "plans" / "pro.yaml").write_text("price: 1799\n", encoding="utf-8")
    (root / "pricing" / "plans" / "team.yaml").write_text("price: 4999\n", encoding="utf-8")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "second")
    (root / "pricing" / "plans" / "pro.yaml").write_text("price: 2999\n", encoding="utf-8")
    return root


def test_materialize_returns_the_old_content(repo: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    old = materialize("HEAD~1", str(repo / "pricing"), work)
    assert old.name == "pricing"
    assert (old / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 1499\n"
    assert not (old / "plans" / "team.yaml").exists()
    assert not (old.parent / "README.md").exists()  # only the config directory is exported
    assert old.is_relative_to(work)
    # The working tree and its uncommitted edit are untouched.
    assert (repo / "pricing" / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 2999\n"


def test_materialize_head_tag_and_commit(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    head = materialize("HEAD", "pricing", tmp_path)
    assert (head / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 1799\n"
    tagged = materialize("v1", "pricing", tmp_path)
    assert (tagged / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 1499\n"
    sha = git(repo, "rev-parse", "HEAD~1")
    assert (materialize(sha[:10], "pricing", tmp_path) / "tariff.yaml").exists()
    assert head.parent != tagged.parent  # every export gets its own folder


def test_materialize_from_a_subdirectory_cwd(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(repo / "pricing")
    old = materialize("HEAD~1", ".", tmp_path)
    assert (old / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 1499\n"


def test_unknown_revision_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitSourceError, match=r"unknown revision 'no-such-branch'.*git fetch"):
        materialize("no-such-branch", str(repo / "pricing"), tmp_path)
    with pytest.raises(GitSourceError, match="unknown revision 'HEAD~5'"):
        materialize("HEAD~5", str(repo / "pricing"), tmp_path)


def test_option_like_revision_is_refused(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(GitSourceError, match="looks like an option"):
        materialize("--output=/tmp/x", str(repo / "pricing"), tmp_path)


def test_config_dir_absent_at_revision(repo: Path, tmp_path: Path) -> None:
    (repo / "later").mkdir()
    with pytest.raises(GitSourceError, match=r"'later' does not exist at revision 'HEAD~1'"):
        materialize("HEAD~1", str(repo / "later"), tmp_path)


def test_not_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain" / "pricing"
    plain.mkdir(parents=True)
    with pytest.raises(GitSourceError, match="not inside a git repository"):
        materialize("HEAD", str(plain), tmp_path)


def test_extract_refuses_paths_outside_the_target(tmp_path: Path) -> None:
    for name in ("../evil.yaml", "/etc/evil.yaml", "a/../../evil.yaml"):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo(name)
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
        buffer.seek(0)
        with pytest.raises(GitSourceError, match="outside"):
            _extract(buffer, tmp_path / "out")
    assert not (tmp_path / "evil.yaml").exists()


def test_extract_refuses_symlinks_leaving_the_target(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("pricing/plans/link.yaml")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../../secret"
        archive.addfile(info)
    buffer.seek(0)
    with pytest.raises(GitSourceError, match="refusing symlink"):
        _extract(buffer, tmp_path / "out")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("main..HEAD", (Side(revision="main"), Side(revision="HEAD"))),
        ("HEAD~1..", (Side(revision="HEAD~1"), WORKING_TREE)),
        ("v1.0..v2.0", (Side(revision="v1.0"), Side(revision="v2.0"))),
        ("origin/main..feature/x", (Side(revision="origin/main"), Side(revision="feature/x"))),
        ("abc123", (Side(revision="abc123"), WORKING_TREE)),
    ],
)
def test_parse_range_revisions(spec: str, expected: tuple[Side, Side]) -> None:
    assert parse_range(spec) == expected


def test_parse_range_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "work" / "new").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert parse_range("../old..new") == (Side(directory=Path("../old")), Side(directory=Path("new")))
    assert parse_range("../old..HEAD") == (Side(directory=Path("../old")), Side(revision="HEAD"))
    assert parse_range("new") == (Side(directory=Path("new")), WORKING_TREE)


@pytest.mark.parametrize("spec", ["", "a...b", "../missing..HEAD"])
def test_parse_range_errors(spec: str) -> None:
    with pytest.raises(GitSourceError):
        parse_range(spec)


def test_resolve_side(repo: Path, tmp_path: Path) -> None:
    config = repo / "pricing"
    assert resolve_side(WORKING_TREE, config, tmp_path) == config
    assert resolve_side(Side(directory=tmp_path), config, tmp_path) == tmp_path
    exported = resolve_side(Side(revision="v1"), config, tmp_path)
    assert (exported / "plans" / "pro.yaml").read_text(encoding="utf-8") == "price: 1499\n"


def test_diff_command_against_a_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: the shipped config committed, a price raised in the working tree, `diff HEAD`."""
    from cli.diff_command import diff

    shipped = Path(__file__).resolve().parents[1] / "pricing"
    if not (shipped / "tariff.yaml").exists():
        pytest.skip("no shipped pricing/ config")
    root = tmp_path / "repo"
    shutil.copytree(shipped, root / "pricing")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "shipped")
    plan_file = root / "pricing" / "plans" / "pro.yaml"
    text = plan_file.read_text(encoding="utf-8")
    assert "    INR: 1499\n" in text
    plan_file.write_text(text.replace("    INR: 1499\n", "    INR: 1599\n", 1), encoding="utf-8")
    monkeypatch.chdir(root)

    assert diff("HEAD", Path("pricing"), "json", None) == 0
    out = capsys.readouterr().out
    assert '"key": "price:pro/monthly/INR"' in out
    assert '"percent": "6.7"' in out
    assert diff("HEAD..HEAD", Path("pricing"), "json", None) == 0
    assert '"has_changes": false' in capsys.readouterr().out
