"""`tariff plan`, `apply`, `import`, `history` and `show`: the GitOps loop against the live database."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.errors import CommandError
from cli.options import (
    BIGINT_MAX,
    ConfigOption,
    DatabaseUrlOption,
    EnvOption,
    OutputFormat,
    OutputFormatOption,
)
from cli.output import (
    EXIT_ERROR,
    check_output_file,
    diagnostics_json,
    dump_json,
    print_diagnostics,
    print_json,
    signal_changes,
    stderr_console,
    stdout_console,
    write_output,
)

# PostgreSQL's lock_timeout is an integer of milliseconds: 2147483647 ms, in whole seconds.
MAX_LOCK_TIMEOUT = 2_147_483


class PlanFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


def _compile(config: Path, format_: PlanFormat = PlanFormat.text) -> Any:
    from compiler.project import compile_config

    result = compile_config(config, cache=True)
    if not result.ok or result.catalog is None:
        if format_ is PlanFormat.json:
            # Standard output holds JSON only: the findings as `tariff validate --format json` gives them.
            print_json(diagnostics_json(result.diagnostics, ok=False))
            fix = "fix the errors in the JSON on standard output (tariff validate lists them too)"
        else:
            # Markdown on standard output is a pull-request comment: the findings go to standard error.
            print_diagnostics(
                stdout_console() if format_ is PlanFormat.text else stderr_console(), result.diagnostics
            )
            fix = "fix the errors above (tariff validate)"
        raise CommandError("the config does not validate; nothing was planned", fix=fix)
    return result


def plan(
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Save the plan as JSON for `tariff apply "
            "FILE`, which refuses it once config or database change.",
        ),
    ] = None,
    format_: Annotated[
        PlanFormat,
        typer.Option("--format", "-f", help="Output format; markdown is the pull-request comment."),
    ] = PlanFormat.text,
    markdown_out: Annotated[
        Path | None,
        typer.Option(
            "--markdown-out",
            help="Also write the Markdown comment to FILE (parts beyond the first: FILE.2.md, …).",
        ),
    ] = None,
    detailed_exitcode: Annotated[
        bool,
        typer.Option(
            "--detailed-exitcode",
            help="Exit 0 with no changes, 2 with changes (to the catalog or the notification routes, or "
            "drift), 1 on error.",
        ),
    ] = False,
) -> None:
    """Compare the config with the live database and show what `apply` would do. Writes nothing.

    Every change is listed with its impact; price changes add their blast radius: subscribers on the
    version being replaced, what grandfathering does to them and when, and the monthly revenue impact
    now and after grandfathering ends. Rows changed outside Tariff show as drift.
    """
    import sqlalchemy as sa

    from cli.diff_command import emit_markdown
    from cli.plan_render import plan_to_markdown, plan_to_text
    from cli.session import open_session
    from publishers.postgres.plan import make_plan

    # Output paths first: a typo there should not cost a compile and a database round trip.
    if out is not None:
        check_output_file(out, "--out", "plan.json")
    if markdown_out is not None:
        check_output_file(markdown_out, "--markdown-out", "plan.md")
    compiled = _compile(config, format_)
    console = stdout_console()
    # Notices (e.g. migrations applied) must not corrupt JSON or Markdown written to standard output.
    notices = console if format_ is PlanFormat.text else stderr_console()
    session = open_session(config, env, database_url, notices, settings=compiled.catalog.settings)
    with session.engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION READ ONLY"))
        result = make_plan(
            conn,
            session.schema,
            compiled.catalog,
            environment=env,
            database=session.target.display_url,
            locations=compiled.locations,
        )
    # `apply` refuses a plan with policy errors, so saving one would only invite a failing apply.
    saved = out if out is not None and not result.diff.has_errors else None
    if saved is not None:
        write_output(saved, dump_json(result.to_json()) + "\n", "--out")
    if format_ is PlanFormat.json:
        print_json(result.to_json())
    elif format_ is PlanFormat.markdown:
        emit_markdown(plan_to_markdown(result), None, console)
    else:
        console.print(plan_to_text(result))
    if markdown_out is not None:
        emit_markdown(plan_to_markdown(result), markdown_out, console, option="--markdown-out")
    if saved is not None and format_ is PlanFormat.text:
        console.print(f"\nSaved the plan to {saved}. Apply exactly this with: tariff apply {saved}")
    if result.diff.has_errors:
        if out is not None:
            raise CommandError(
                f"the plan has policy errors, so it was not saved to {out}",
                fix="fix the policy errors the plan lists (or add an approval), then plan again with --out",
            )
        raise typer.Exit(EXIT_ERROR)
    drifted = result.drift is not None and result.drift.has_changes
    if detailed_exitcode and (result.has_changes or result.has_route_changes or drifted):
        raise typer.Exit(signal_changes())


def apply(
    plan_file: Annotated[
        Path | None,
        typer.Argument(
            help="A plan saved by `tariff plan --out`; without it, the plan is made now and shown first."
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    auto_approve: Annotated[
        bool,
        typer.Option(
            "--auto-approve",
            help="Apply without asking. Required when standard input is not a terminal (CI).",
        ),
    ] = False,
    allow_destructive: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-destructive",
            help="Allow a destructive change by key or pattern (e.g. 'price:pro/*'); repeatable.",
        ),
    ] = None,
    lock_timeout: Annotated[
        float,
        typer.Option(
            "--lock-timeout",
            help="Seconds to wait for another apply on the same schema to finish; 0 refuses at once "
            "when one is running. At most 2147483 (PostgreSQL's lock_timeout limit, about 24 days).",
            min=0,
            max=MAX_LOCK_TIMEOUT,
        ),
    ] = 60.0,
) -> None:
    """Publish the config to the live database in one transaction, under a lock.

    Price changes create new price versions; existing subscribers are grandfathered as each plan's
    policy says (migrations scheduled, one notification per affected customer). Each apply records a
    revision. Applying an unchanged config changes nothing.
    """
    from rich.markup import escape

    from cli.plan_render import plan_to_text
    from cli.revision_context import actor, git_state
    from cli.session import open_session
    from publishers.notify.routes import route_lines
    from publishers.postgres.apply import ApplyRefusedError, Revision, apply_catalog, check_allowed
    from publishers.postgres.plan import make_plan

    saved = _load_plan(plan_file) if plan_file is not None else None
    compiled = _compile(config)
    console = stdout_console()
    session = open_session(config, env, database_url, console, settings=compiled.catalog.settings)
    if saved is None:
        with session.engine.connect() as conn, conn.begin():
            preview = make_plan(
                conn,
                session.schema,
                compiled.catalog,
                environment=env,
                database=session.target.display_url,
                locations=compiled.locations,
            )
        console.print(plan_to_text(preview))
        if not preview.has_changes and not preview.has_route_changes:
            return
        # Never ask "Apply these changes?" about a plan that apply would then refuse.
        try:
            check_allowed(preview, allow_destructive or [])
        except ApplyRefusedError as exc:
            raise CommandError(exc.message, exc.fix) from exc
        _confirm(auto_approve, session.environment.protected if session.environment else False)
        saved = preview.to_json()
    commit, dirty = git_state(config)
    try:
        result = apply_catalog(
            session.engine,
            session.schema,
            compiled.catalog,
            Revision(actor(config), commit, dirty),
            environment=env,
            database=session.target.display_url,
            saved_plan=saved,
            allow_destructive=allow_destructive or [],
            lock_timeout=lock_timeout,
            locations=compiled.locations,
        )
    except ApplyRefusedError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    routes = [escape(line) for line in route_lines(result.plan.routes)] if result.routes_changed else []
    if not result.applied:
        if routes:
            console.print(
                f"[green]Notification routes updated[/green] (no catalog changes, so no revision): "
                f"{'; '.join(routes)}",
                highlight=False,
            )
        else:
            console.print("No changes. The live catalog matches the config.")
        return
    write = result.write
    console.print(
        f"[green]Applied revision {result.revision_id}[/green]: {len(result.plan.diff.changes)} change(s); "
        f"{write.prices_opened} price version(s) opened, {write.prices_closed} closed; "
        f"{result.scheduled} subscription move(s) scheduled, {result.migrated_now} moved now; "
        f"{result.notifications} customer notification(s) queued; {result.pages} page snapshot(s) published."
    )
    if routes:
        console.print(f"Notification routes updated: {'; '.join(routes)}", highlight=False)
    if result.payu_actions:
        console.print(
            f"{result.payu_actions} PayU mandate action(s) recorded (tariff payu actions): pre-debit "
            "notices go out through `tariff tick` in the window before each debit "
            "(payments.mandates.pre_debit_notice); a customer whose new price exceeds the mandate is asked "
            "(mandate_required) to authorise a new one."
        )


def _load_plan(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise CommandError(
            f"plan file {path} does not exist", fix="make one with `tariff plan --out FILE`"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(
            f"plan file {path} is not readable JSON: {exc}",
            fix="make a new one with `tariff plan --out FILE`",
        ) from exc
    if not isinstance(data, dict):
        raise CommandError(
            f"plan file {path} is not a Tariff plan", fix="make one with `tariff plan --out FILE`"
        )
    return data


def _confirm(auto_approve: bool, protected: bool) -> None:
    if auto_approve:
        return
    if protected and os.environ.get("CI"):
        raise CommandError(
            "this environment is protected: applying from CI needs an explicit --auto-approve",
            fix="add --auto-approve to the reviewed, on-merge apply step",
        )
    if not sys.stdin.isatty():
        raise CommandError(
            "cannot ask for approval: standard input is not a terminal",
            fix="review the plan above, then run again with --auto-approve",
        )
    if not typer.confirm("Apply these changes?", default=False):
        raise CommandError("not applied", fix=None)


def import_(
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="Directory to write the config into (default: the --config directory)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
) -> None:
    """Write the live catalog as config files, to adopt Tariff on an existing database.

    Files carry schema modelines and a stable key order; `tariff plan` on the result shows no changes.
    Environments, policies and notification channels come from the config files the last revision
    stored with the catalog.
    """
    from cli.session import open_session
    from publishers.postgres.plan import last_published, published_files
    from publishers.postgres.read import read_catalog

    target = out or config
    console = stdout_console()
    session = open_session(target if target.exists() else config, env, database_url, console)
    with session.engine.connect() as conn:
        live = read_catalog(conn, session.schema)
        published = last_published(conn, session.schema)
    if live is not None and published is not None:
        live = dataclasses.replace(live, settings=published.settings)  # settings are not catalog rows
    if live is None:
        raise CommandError(
            f"nothing has been published to schema {session.schema!r} yet",
            fix="apply a config first, or check --env / --database-url",
        )
    files = published_files(live)
    existing = [name for name in files if (target / name).exists()]
    if existing and not force:
        raise CommandError(
            f"{len(existing)} file(s) already exist in {target}, e.g. {existing[0]}",
            fix="choose another --out directory, or pass --force to overwrite",
        )
    for name, text in files.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    console.print(
        f"Wrote {len(files)} file(s) to {target}: {len(live.plans)} plans, {len(live.packages)} "
        f"packages, {len(live.promotions)} promotions, {len(live.pages)} page(s)."
    )


def history(
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="How many revisions, newest first.", min=1, max=BIGINT_MAX)
    ] = 20,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Published revisions: who applied what, when, from which commit."""
    from rich.table import Table

    from cli.session import open_session
    from publishers.postgres.revisions import list_revisions

    console = stdout_console()
    notices = console if format_ is OutputFormat.text else stderr_console()
    session = open_session(config, env, database_url, notices)
    with session.engine.connect() as conn:
        rows = list_revisions(conn, session.schema, limit)
    if format_ is OutputFormat.json:
        print_json({"format_version": 1, "revisions": rows})
        return
    if not rows:
        console.print("No revisions yet: nothing has been applied.")
        return
    table = Table(show_edge=False)
    for column in ("Rev", "Applied (UTC)", "Actor", "Commit", "Environment", "Summary"):
        table.add_column(column)
    for row in rows:
        commit = (row["git_commit"] or "")[:10] + ("+dirty" if row["git_dirty"] else "")
        table.add_row(
            str(row["id"]),
            row["created_at"][:19].replace("T", " "),
            row["actor"],
            commit or "—",
            row["environment"] or "—",
            row["summary"] or "",
        )
    console.print(table)


def show(
    revision: Annotated[int, typer.Argument(help="Revision id (see tariff history).", max=BIGINT_MAX)],
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
    page: Annotated[
        str | None,
        typer.Option(
            "--page",
            help="Print the pricing page this revision published "
            "for region R (HTML; JSON with --format json).",
            metavar="R",
        ),
    ] = None,
    page_id: Annotated[
        str | None, typer.Option("--page-id", help="Which page, when there are several (default: the first).")
    ] = None,
) -> None:
    """One revision: its metadata and the plan it executed, or a page it published (--page R)."""
    from cli.session import open_session
    from publishers.postgres.pages import published_page
    from publishers.postgres.revisions import get_revision

    console = stdout_console()
    notices = console if format_ is OutputFormat.text else stderr_console()
    session = open_session(config, env, database_url, notices)
    with session.engine.connect() as conn:
        row = get_revision(conn, session.schema, revision)
        snapshot = published_page(conn, session.schema, revision, page_id, page) if page else None
    if row is None:
        raise CommandError(f"no revision {revision}", fix="list them with `tariff history`")
    if page is not None:
        if snapshot is None:
            raise CommandError(
                f"revision {revision} published no page for region {page!r}",
                fix="check the region code (tariff.yaml `regions`) and --page-id",
            )
        if format_ is OutputFormat.json:
            print_json(snapshot["data"])
        else:
            sys.stdout.write(snapshot["html"])
        return
    if format_ is OutputFormat.json:
        print_json(row)
        return
    console.print(
        f"[bold]Revision {row['id']}[/bold] applied {row['created_at']} by {row['actor']}"
        + (f" from {row['git_commit']}{' (dirty)' if row['git_dirty'] else ''}" if row["git_commit"] else "")
    )
    console.print(row["summary"] or "")
    changes = (row["plan"].get("changes") or {}).get("changes", [])
    for change in changes:
        console.print(
            f"  {change['action']:<11} {change['key']:<40} {change.get('summary', '')}  [{change['impact']}]",
            markup=False,
        )
    for item in row["plan"].get("blast_radius") or []:
        console.print(
            f"  blast radius {item['change_key']}: {item['subscribers']} subscriber(s), "
            f"{item['scheduled']} scheduled, {item['migrated_now']} moved now",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    app.command()(plan)
    app.command()(apply)
    app.command("import")(import_)
    app.command()(history)
    app.command()(show)
