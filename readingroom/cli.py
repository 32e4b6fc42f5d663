"""The ``readingroom`` command line, the kernel's part: the shared context, the kernel's own
commands (``sites``, ``jobs``, ``db``, ``users`` in users_cli) and the dispatcher.

The kernel imports no feature package. The composition root (``app.py``) builds the parser from
every package's ``add_commands(sub)`` and the pass-through table (commands with their own
parser), and calls ``run_main``. Heavy imports (gradio, torch) happen inside the subcommands that
need them, so that ``readingroom worklist`` answers in a moment.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from readingroom import NOT_FOR_CLINICAL_USE, __version__
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

# name -> (module, function, help line): a subcommand that parses its own arguments.
Passthrough = Mapping[str, tuple[str, str, str]]
AddCommands = Callable[[Any], None]


class Context:
    """What every subcommand needs: settings (loaded once), logging, a migrated database."""

    def __init__(self, overrides: dict[str, Any] | None = None, log_to_file: bool = False) -> None:
        from readingroom import logs
        from readingroom.db import Database, sync_sites
        from readingroom.settings import load_settings

        self.settings = load_settings(overrides=overrides)
        log_file = self.settings.home / "logs" / "readingroom.log" if log_to_file else None
        logs.configure(self.settings.log_level, log_file)
        self.db = Database(self.settings)
        self.db.upgrade()
        sync_sites(self.db, [site.name for site in self.settings.sites])


def add_dicom_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="DICOM port (default: dicom.port)")
    parser.add_argument("--ae-title", help="our DICOM AE title (default: dicom.ae_title)")


def dicom_overrides(args: argparse.Namespace) -> dict[str, Any]:
    dicom: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        dicom["port"] = args.port
    if getattr(args, "ae_title", None):
        dicom["ae_title"] = args.ae_title
    return {"dicom": dicom} if dicom else {}


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass


def cmd_jobs(args: argparse.Namespace) -> int:
    from readingroom.jobs import open_queue

    ctx = Context()
    queue = open_queue(ctx.db, ctx.settings.jobs)
    if args.jobs_command == "retry":
        if not queue.retry_dead(args.id):
            print(f"job {args.id} is not in the dead-letter state; see `readingroom jobs list --status dead`",
                  file=sys.stderr)
            return 1
        print(f"job {args.id} queued again")
        return 0
    jobs = queue.list(status=args.status, limit=args.limit)
    rows = [{"id": j.id, "kind": j.kind, "status": j.status, "attempts": j.attempts, "payload": j.payload,
             "created_at": j.created_at.isoformat(timespec="seconds"),
             "last_error": ((j.last_error or "").strip().splitlines() or [""])[-1]} for j in jobs]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['id']:>6} {row['status']:<8} {row['kind']:<16} tries {row['attempts']}  "
                  f"{json.dumps(row['payload'])}  {row['last_error']}")
        if not rows:
            print("(no jobs)")
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    ctx = Context()
    print(f"database at the newest schema: {ctx.settings.database_url}")
    return 0


def cmd_sites(args: argparse.Namespace) -> int:
    from readingroom import logs
    from readingroom import sites_check as sc
    from readingroom.settings import load_settings

    # The sites are read raw (sites_check), so one bad entry does not stop the others' check.
    settings = load_settings(overrides={"sites": []})
    logs.configure(settings.log_level)
    entries, source = sc.raw_sites(settings, args.file)
    if args.sites_command == "list":
        reports = sc.check_sites(entries, settings, connect=False)
        print(json.dumps(sc.as_json(reports, [], source)["sites"], indent=2) if args.json
              else sc.format_list(reports, source))
        return 0
    reports = sc.check_sites(entries, settings, timeout_s=args.timeout)
    extra = sc.settings_problems(settings)
    result = sc.as_json(reports, extra, source)
    print(json.dumps(result, indent=2) if args.json else sc.format_check(reports, extra, source))
    return 0 if result["ok"] else 1


def add_commands(sub: Any) -> None:
    """Register the kernel's subcommands: sites, jobs, db, users."""
    p = sub.add_parser("sites", help="list the sites, or check them: AE titles, destinations reachable, "
                                     "TLS files")
    sites_sub = p.add_subparsers(dest="sites_command", required=True, metavar="ACTION")
    for action, text in (("list", "the sites, their AE titles and destinations"),
                         ("check", "every problem of the sites file, one line each; exit 1 if any")):
        q = sites_sub.add_parser(action, help=text)
        q.add_argument("--file", type=Path, help="sites file (default: READINGROOM_SITES or configs/sites.yaml)")
        q.add_argument("--json", action="store_true")
        if action == "check":
            q.add_argument("--timeout", type=float, default=2.0, help="seconds per TCP connect (default 2)")
    p.set_defaults(func=cmd_sites)

    p = sub.add_parser("jobs", help="list queued, running, done and dead jobs; retry a dead one")
    jobs_sub = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    q = jobs_sub.add_parser("list", help="list jobs, newest first")
    q.add_argument("--status", choices=["queued", "running", "done", "dead"])
    q.add_argument("--limit", type=int, default=50)
    q.add_argument("--json", action="store_true")
    q = jobs_sub.add_parser("retry", help="queue a dead job again")
    q.add_argument("id", type=int)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("db", help="create or upgrade the database schema")
    p.add_argument("action", choices=["upgrade"])
    p.set_defaults(func=cmd_db)

    from readingroom import users_cli   # here: users_cli imports this module's Context

    users_cli.add_commands(sub)


def build_parser(groups: Sequence[AddCommands], passthrough: Passthrough) -> argparse.ArgumentParser:
    """The ``readingroom`` parser: each group registers its subcommands; the pass-through ones are
    listed for --help (``run_main`` hands their arguments to their own parsers)."""
    parser = argparse.ArgumentParser(
        prog="readingroom",
        description=f"ReadingRoom {__version__}: teleradiology reading assistant. {NOT_FOR_CLINICAL_USE}",
    )
    parser.add_argument("--version", action="version", version=f"readingroom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in groups:
        add(sub)
    for name, (_module, _function, text) in passthrough.items():
        sub.add_parser(name, help=f"{text} (see its --help)", add_help=False)
    return parser


def dispatch_table(parser: argparse.ArgumentParser, passthrough: Passthrough) -> dict[str, str]:
    """Every subcommand and what runs it (``module:function``)."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table = {}
    for name, subparser in action.choices.items():
        func = subparser.get_default("func")
        table[name] = f"{func.__module__}:{func.__name__}" if func else ""
    table.update({name: f"{module}:{function}" for name, (module, function, _help) in passthrough.items()})
    return table


def run_main(argv: Sequence[str], parser: Callable[[], argparse.ArgumentParser], passthrough: Passthrough) -> int:
    """Run one command line; a ReadingRoomError becomes one line on stderr and exit status 2."""
    argv = list(argv)
    try:
        if argv and argv[0] in passthrough:
            module, function, _help = passthrough[argv[0]]
            return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
        args = parser().parse_args(argv)
        return int(args.func(args) or 0)
    except ReadingRoomError as exc:
        print(f"readingroom: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
