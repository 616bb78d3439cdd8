"""The cycle collector is off while a catalog is compiled or planned, and always restored afterwards."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

import compiler.project as project
from compiler.diagnostics import Diagnostic
from compiler.gc_pause import paused_gc
from compiler.project import compile_config
from compiler.schema_check import validate_document
from compiler.yaml_loader import LoadedDocument

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_compile_runs_with_the_collector_paused_and_turns_it_back_on(
    collector_on: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def watching(kind: str, document: LoadedDocument) -> list[Diagnostic]:
        seen.append(gc.isenabled())
        return validate_document(kind, document)

    monkeypatch.setattr(project, "validate_document", watching)
    assert compile_config(SHIPPED).ok
    assert seen and not any(seen)
    assert gc.isenabled()


def test_the_collector_is_back_on_after_an_error(collector_on: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(project, "validate_document", failing)
    with pytest.raises(RuntimeError):
        compile_config(SHIPPED)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off(collector_on: None) -> None:
    gc.disable()
    with paused_gc():
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert not gc.isenabled()
    gc.enable()
    with paused_gc(), paused_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
