"""Compile a config directory: discover files → load YAML → schema → build → cross-file checks → Catalog."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.build_pages import build_page, check_page
from compiler.build_payments import build_payment_rules, check_downgrade_plan
from compiler.build_plans import build_features, build_plan
from compiler.build_promotions import build_promotion, check_promotion_references
from compiler.build_settings import ProjectSettings, build_settings, check_suppression_targets
from compiler.build_tokens import TokenSections, add_tokens_document, check_token_references
from compiler.canonical import fingerprint
from compiler.catalog import Catalog, Feature, Page, Plan, Promotion, TokenRules
from compiler.context import BuildContext
from compiler.diagnostics import Diagnostic, Diagnostics, Severity
from compiler.document_cache import CheckedFile, DocumentCache
from compiler.gc_pause import paused_gc
from compiler.notification_templates import load_templates
from compiler.promotion_checks import check_promotions
from compiler.schema_check import validate_document
from compiler.yaml_loader import LoadedDocument, YamlLoadError, decode_text, load_yaml_text, read_config_bytes

YAML_SUFFIXES = (".yaml", ".yml")
FOLDER_KINDS = {"plans": "plan", "promotions": "promotion", "tokens": "tokens", "content": "content"}
MAX_FILES = 5000


@dataclass
class CompileResult:
    catalog: Catalog | None
    diagnostics: Diagnostics
    locations: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.catalog is not None and not self.diagnostics.has_errors


def discover(root: Path, diagnostics: Diagnostics) -> Iterator[tuple[str, Path, str]]:
    """(kind, path, display name) for every config file, in a stable order."""
    for name, kind in (("tariff", "tariff"), ("features", "features")):
        for suffix in YAML_SUFFIXES:
            candidate = root / f"{name}{suffix}"
            if candidate.exists() or candidate.is_symlink():
                yield kind, candidate, candidate.name
    count = 0
    for folder, kind in FOLDER_KINDS.items():
        directory = root / folder
        if not directory.is_dir():
            continue
        for path in sorted(_walk(directory, diagnostics, root)):
            if path.suffix not in YAML_SUFFIXES:
                continue
            count += 1
            if count > MAX_FILES:
                diagnostics.error("files.too-many", f"more than {MAX_FILES} config files", file=folder)
                return
            yield kind, path, path.relative_to(root).as_posix()
    for path in sorted(root.iterdir()):
        if path.suffix in YAML_SUFFIXES and path.stem not in ("tariff", "features"):
            diagnostics.warning(
                "files.unknown-kind",
                "not a Tariff file kind; it is ignored",
                file=path.name,
                hint="plans go in plans/, promotions in promotions/, token files in tokens/, "
                "pages in content/",
            )


def _walk(directory: Path, diagnostics: Diagnostics, root: Path) -> Iterator[Path]:
    """Files below `directory`, following no symlinked directories (so loops cannot hang us)."""
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = list(current.iterdir())
        except OSError as exc:
            diagnostics.error(
                "files.unreadable",
                f"cannot list directory: {exc.strerror or exc}",
                file=current.relative_to(root).as_posix(),
            )
            continue
        for entry in entries:
            if entry.is_symlink() and _is_loop(entry):
                diagnostics.error(
                    "files.symlink-loop",
                    "symlink loop: the link points back at itself or at a folder that contains it",
                    file=entry.relative_to(root).as_posix(),
                    hint="delete the symlink, or point it at a real file",
                )
            elif entry.is_symlink() and entry.is_dir():
                diagnostics.warning(
                    "files.symlinked-dir",
                    "symlinked directory skipped",
                    file=entry.relative_to(root).as_posix(),
                    hint="copy the files in, or point the symlink at a file",
                )
            elif entry.is_dir():
                stack.append(entry)
            else:
                yield entry


def _is_loop(link: Path) -> bool:
    """True for a symlink that resolves to itself, or to a folder that contains it."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return False  # dangling: reported when the file is read
    except (OSError, RuntimeError):  # Python < 3.13 raises RuntimeError for a loop
        return True
    return target.is_dir() and link.parent.resolve().is_relative_to(target)


def _unloaded(kind: str, display: str, data: Any) -> set[str]:
    """Entities a file that failed to load would define (`plan:pro`; `feature:*` when unknown)."""
    if kind in ("plan", "promotion", "content"):
        item_id = data.get("id") if isinstance(data, dict) else None
        names = {Path(display).stem} | ({item_id} if isinstance(item_id, str) else set())
        return {f"{'page' if kind == 'content' else kind}:{name}" for name in names}
    sections = {"features": ("features", "feature"), "tokens": ("packages", "package")}
    if kind not in sections:
        return set()
    section, what = sections[kind]
    items = data.get(section) if isinstance(data, dict) else None
    if not isinstance(items, dict):
        return {f"{what}:*"}
    return {f"{what}:{item}" for item in items}


def _checked_file(kind: str, path: Path, display: str, store: DocumentCache | None) -> CheckedFile:
    """A file read, parsed and checked against its schema, from the cache when its bytes were seen before.

    Raises YamlLoadError when the file cannot be read at all (missing, too large, a symlink loop).
    """
    raw = read_config_bytes(path, display)
    if store is not None and (hit := store.get(kind, display, raw)) is not None:
        return hit
    try:
        document = load_yaml_text(decode_text(raw, display), display)
    except YamlLoadError as exc:
        checked = CheckedFile(None, (), exc.diagnostic)
    else:
        problems = validate_document(kind, document) if isinstance(document.data, dict) else []
        checked = CheckedFile(document, tuple(problems))
    if store is not None:
        store.put(kind, display, raw, checked)
    return checked


def compile_config(root: Path, *, cache: bool = False) -> CompileResult:
    """Compile the config in `root`. With `cache`, files whose bytes were checked before are not read
    and checked again (compiler/document_cache.py); the result is the same either way."""
    with paused_gc():
        return _compile(Path(root), cache=cache)


def _compile(root: Path, *, cache: bool) -> CompileResult:
    ctx = BuildContext(root)
    if not root.is_dir():
        ctx.diagnostics.error(
            "files.no-config",
            f"config directory {root} " + ("is not a directory" if root.exists() else "does not exist"),
            hint="pass --config DIR, or run from the folder that holds pricing/",
        )
        return CompileResult(None, ctx.diagnostics)

    documents: dict[str, list[LoadedDocument]] = {}
    store = DocumentCache.for_config(root) if cache else None
    for kind, path, display in discover(root, ctx.diagnostics):
        try:
            checked = _checked_file(kind, path, display, store)
        except YamlLoadError as exc:
            ctx.diagnostics.add(exc.diagnostic)
            ctx.unloaded |= _unloaded(kind, display, None)
            continue
        if checked.error is not None:
            ctx.diagnostics.add(checked.error)
            ctx.unloaded |= _unloaded(kind, display, None)
            continue
        document = checked.document
        assert document is not None
        if not isinstance(document.data, dict):
            ctx.unloaded |= _unloaded(kind, display, None)
            ctx.diagnostics.add(
                Diagnostic(
                    Severity.ERROR,
                    "schema.type",
                    "expected a mapping (key: value) at the top of the file",
                    hint="a config file is a YAML mapping, not a list or a single value",
                    **document.locate(()),
                )
            )
            continue
        problems = checked.problems
        ctx.diagnostics.extend(problems)
        if any(p.severity is Severity.ERROR for p in problems):
            ctx.unloaded |= _unloaded(kind, display, document.data)
            continue
        documents.setdefault(kind, []).append(document)

    if store is not None:
        store.prune()
    settings_docs = documents.get("tariff", [])
    if not settings_docs:
        if not any(d.file in ("tariff.yaml", "tariff.yml") for d in ctx.diagnostics):
            ctx.diagnostics.error(
                "files.no-settings",
                "tariff.yaml is missing",
                file="tariff.yaml",
                hint=f"create {root.name}/tariff.yaml with project, currencies, regions and default_region",
            )
        return CompileResult(None, ctx.diagnostics, ctx.locations)
    if len(settings_docs) > 1:
        ctx.diagnostics.error(
            "files.two-settings", "both tariff.yaml and tariff.yml exist", file=root.name, hint="keep one"
        )
    project = build_settings(ctx, settings_docs[0])
    templates = load_templates(root, ctx.diagnostics, required=bool(project.settings.channels))
    project = dataclasses.replace(
        project, settings=dataclasses.replace(project.settings, templates=templates)
    )
    catalog = _build_catalog(ctx, project, documents)
    payment_rules = build_payment_rules(ctx, settings_docs[0], project.currencies, project.settings.channels)
    check_downgrade_plan(ctx, settings_docs[0], payment_rules, catalog.plans)
    catalog = dataclasses.replace(catalog, payment_rules=payment_rules)
    catalog = dataclasses.replace(catalog, fingerprint=fingerprint(catalog))
    return CompileResult(catalog, ctx.diagnostics, ctx.locations)


def _unique(ctx: BuildContext, kind: str, docs: list[LoadedDocument]) -> Iterator[LoadedDocument]:
    seen: dict[str, LoadedDocument] = {}
    for doc in docs:
        item_id = doc.data["id"]
        if item_id in seen:
            ctx.error(
                doc,
                ("id",),
                "id.duplicate",
                f"{kind} id {item_id!r} is already used by {seen[item_id].file}",
                hint="ids must be unique; rename one",
            )
            continue
        seen[item_id] = doc
        stem = Path(doc.file).stem
        if stem != item_id:
            ctx.warning(
                doc,
                ("id",),
                "id.file-name",
                f"file name {stem!r} differs from id {item_id!r}",
                hint=f"rename the file to {item_id}{Path(doc.file).suffix} so it is easy to find",
            )
        yield doc


def _build_catalog(
    ctx: BuildContext, project: ProjectSettings, documents: dict[str, list[LoadedDocument]]
) -> Catalog:
    features: dict[str, Feature] = {}
    for doc in documents.get("features", []):
        features.update(build_features(ctx, doc))

    plans: dict[str, Plan] = {}
    plan_docs: dict[str, LoadedDocument] = {}
    for doc in _unique(ctx, "plan", documents.get("plan", [])):
        plans[doc.data["id"]] = build_plan(ctx, doc, project, features)
        plan_docs[doc.data["id"]] = doc

    tokens = TokenSections()
    for doc in documents.get("tokens", []):
        add_tokens_document(ctx, doc, project, tokens)
    check_token_references(ctx, tokens, set(plans))

    promotions: dict[str, Promotion] = {}
    promo_docs: dict[str, LoadedDocument] = {}
    for doc in _unique(ctx, "promotion", documents.get("promotion", [])):
        promo = build_promotion(ctx, doc, project)
        check_promotion_references(
            ctx, doc, promo, plans, tokens.packages, set(project.regions), set(project.cycles)
        )
        promotions[promo.id] = promo
        promo_docs[promo.id] = doc
    check_promotions(ctx, promotions, promo_docs, plans, tokens.packages, project)

    pages: dict[str, Page] = {}
    cta_ratio = ctx.policies.get("cta_contrast")
    min_ratio = float(cta_ratio.limit) if cta_ratio and cta_ratio.limit is not None else 4.5
    for doc in _unique(ctx, "page", documents.get("content", [])):
        page = build_page(ctx, doc)
        check_page(ctx, doc, page, plans, features, set(project.cycles), min_ratio)
        pages[page.id] = page

    targets = (
        {f"plan:{p}" for p in plans}
        | {f"package:{p}" for p in tokens.packages}
        | {f"promotion:{p}" for p in promotions}
        | {f"page:{p}" for p in pages}
        | {"content:page"}
    )
    check_suppression_targets(ctx, targets)

    # Fingerprinted by compile_config, once the payment rules are in.
    return Catalog(
        project=project.project,
        currencies=project.currencies,
        cycles=project.cycles,
        regions=project.regions,
        default_region=project.default_region,
        name=project.name,
        timezone=project.timezone,
        features=features,
        plans=plans,
        packages=tokens.packages,
        models=tokens.models,
        token_rules=tokens.rules or TokenRules(timezone=project.timezone),
        pools=tokens.pools,
        promotions=promotions,
        pages=pages,
        settings=project.settings,
    )
