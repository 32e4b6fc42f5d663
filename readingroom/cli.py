"""``readingroom``: one command line with subcommands. A thin boundary over the cores.

Heavy imports (gradio, torch) happen inside the subcommands that need them, so that
``readingroom worklist`` answers in a moment.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from readingroom import NOT_FOR_CLINICAL_USE, __version__
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


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


def _dicom_overrides(args: argparse.Namespace) -> dict[str, Any]:
    dicom: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        dicom["port"] = args.port
    if getattr(args, "ae_title", None):
        dicom["ae_title"] = args.ae_title
    return {"dicom": dicom} if dicom else {}


def cmd_run(args: argparse.Namespace) -> int:
    import app

    overrides = _dicom_overrides(args)
    if args.web_port is not None:
        overrides["web"] = {"port": args.web_port}
    ctx = Context(overrides, log_to_file=True)
    return app.serve(ctx.settings, ctx.db, demo=args.demo)


def _wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    import signal
    import threading

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass


def cmd_receive(args: argparse.Namespace) -> int:
    from readingroom.jobs import DatabaseJobQueue
    from triage.service import IntakeService

    ctx = Context(_dicom_overrides(args), log_to_file=True)
    service = IntakeService(ctx.settings, ctx.db, DatabaseJobQueue(ctx.db, ctx.settings.jobs))
    service.start()
    print(f"DICOM listener {ctx.settings.dicom.ae_title} on {ctx.settings.dicom.host}:{service.listener.port}; "
          "Ctrl-C to stop", flush=True)
    if service.orders is not None:
        print(f"HL7 order listener on {ctx.settings.hl7.host}:{service.orders.port}", flush=True)
    try:
        _wait_for_stop()
    finally:
        service.stop()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from readingroom.jobs import DatabaseJobQueue
    from triage.service import build_workers

    ctx = Context(log_to_file=True)
    pool = build_workers(ctx.db, ctx.settings, DatabaseJobQueue(ctx.db, ctx.settings.jobs))
    if args.once:
        ran = 0
        while pool.run_once():
            ran += 1
        print(f"ran {ran} job(s)")
        return 0
    pool.start()
    try:
        _wait_for_stop()
    finally:
        pool.stop()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from readingroom.jobs import DatabaseJobQueue
    from triage.importer import import_path
    from triage.intake import Intake
    from triage.studies import complete_due_studies

    ctx = Context()
    intake = Intake(ctx.settings, ctx.db)
    summary = import_path(Path(args.path), intake, progress=not args.quiet)
    # A folder is complete once read: no quiet period to wait for.
    complete_due_studies(ctx.db, DatabaseJobQueue(ctx.db, ctx.settings.jobs), ctx.settings,
                         only=summary.study_uids, ignore_quiet_period=True)
    print(summary.format())
    return 2 if summary.rejected else 0


def cmd_worklist(args: argparse.Namespace) -> int:
    from triage.worklist import Filters, format_table, open_studies

    ctx = Context()
    filters = Filters(site=args.site, modality=args.modality, status=args.status, priority=args.priority)
    items = open_studies(ctx.db, ctx.settings, user=args.user, filters=filters, limit=args.limit)
    if args.json:
        print(json.dumps(items, indent=2))
    else:
        print(format_table(items))
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    from triage.worklist import claim, release

    ctx = Context()
    if args.release:
        if not release(ctx.db, args.study_uid, args.user):
            print(f"{args.user} did not hold study {args.study_uid}", file=sys.stderr)
            return 1
        print(f"released {args.study_uid}")
        return 0
    until = claim(ctx.db, ctx.settings, args.study_uid, args.user)
    print(f"{args.user} holds {args.study_uid} until {until.isoformat(timespec='seconds')}Z")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from readingroom.jobs import DatabaseJobQueue

    ctx = Context()
    queue = DatabaseJobQueue(ctx.db, ctx.settings.jobs)
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


def cmd_models(args: argparse.Namespace) -> int:
    import app
    from readingroom import logs
    from readingroom.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level)
    lines = app.model_lines(settings, checksum=True, install=not args.check)
    if args.json:
        print(json.dumps([{**vars(line), "ok": line.ok} for line in lines], indent=2))
    else:
        for line in lines:
            state = f"ok ({line.checked})" if line.ok else "MISSING"
            print(f"{state:<14} {line.role:<14} {(line.name + ' ' + line.version).strip():<18} {line.path}")
    problems = [line for line in lines if not line.ok]
    for line in problems:
        print(f"readingroom: {line.role} model {line.name!r}: {line.problem}", file=sys.stderr)
    return 1 if problems else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="readingroom",
        description=f"ReadingRoom {__version__}: teleradiology reading assistant. {NOT_FOR_CLINICAL_USE}",
    )
    parser.add_argument("--version", action="version", version=f"readingroom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="start the workstation: DICOM listener, workers and the web page")
    p.add_argument("--demo", action="store_true", help="seed the demo worklist on first start")
    p.add_argument("--port", type=int, help="DICOM port (default: dicom.port)")
    p.add_argument("--ae-title", help="our DICOM AE title (default: dicom.ae_title)")
    p.add_argument("--web-port", type=int, help="web page port (default: web.port)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("receive", help="run the DICOM listener alone")
    p.add_argument("--port", type=int, help="DICOM port (default: dicom.port)")
    p.add_argument("--ae-title", help="our DICOM AE title (default: dicom.ae_title)")
    p.set_defaults(func=cmd_receive)

    p = sub.add_parser("worker", help="run the job workers alone (triage and delivery jobs)")
    p.add_argument("--once", action="store_true", help="run the jobs that are due, then exit")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("import", help="import a DICOM file or folder through the listener's code path")
    p.add_argument("path")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("worklist", help="print the open studies in reading order, with the policy's reasons")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per study")
    p.add_argument("--user", help="only the sites this radiologist is credentialed for")
    p.add_argument("--site", help="only this site")
    p.add_argument("--modality", help="only studies with this modality (CT, CR, MR...)")
    p.add_argument("--status", choices=["receiving", "new", "triaged", "in_progress", "preliminary"])
    p.add_argument("--priority", help="only this class (critical, urgent, routine)")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_worklist)

    p = sub.add_parser("claim", help="lock a study for a radiologist (or --release it)")
    p.add_argument("study_uid")
    p.add_argument("--user", required=True)
    p.add_argument("--release", action="store_true", help="give the study back")
    p.set_defaults(func=cmd_claim)

    # Listed for --help; main() hands their arguments to their own parsers.
    for name, (_module, _function, text) in PASSTHROUGH.items():
        sub.add_parser(name, help=f"{text} (see its --help)", add_help=False)

    p = sub.add_parser("models", help="check every model (Whisper by SHA-256, triage weights) and install "
                                      "a missing Whisper model")
    p.add_argument("--check", action="store_true", help="only check; exit 1 if a model is missing or damaged")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per model")
    p.set_defaults(func=cmd_models)

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
    return parser


# Subcommands with their own argument parser: everything after the name is theirs.
# name -> (module, function, help line); build_parser lists every one in --help.
PASSTHROUGH = {
    "transcribe": ("dictation.cli", "main", "transcribe a dictation into a structured report"),
    "orders": ("orders.cli", "main", "review imaging orders: list, show, approve, reject"),
    "simulate": ("triage.simulator.engine", "main", "night-shift simulator: report turnaround under FIFO and AI ordering"),
    "report": ("reporting.report_cli", "main",
               "report lifecycle: new, set, check, sign, addendum, export, outbox, audit"),
    "phantoms": ("models.cli", "phantoms", "write synthetic DICOM studies with their ground truth and labels.csv"),
    "train": ("models.cli", "train", "train a triage model on phantoms, export ONNX, write its model card"),
    "evaluate": ("models.cli", "evaluate", "score a triage model on a folder of labelled studies"),
}


def dispatch_table() -> dict[str, str]:
    """Every subcommand and what runs it (``module:function``): the parser's own commands and
    the PASSTHROUGH ones. tests/test_cli_help.py holds --help and the README to it."""
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    table = {}
    for name, subparser in action.choices.items():
        func = subparser.get_default("func")
        table[name] = f"{func.__module__}:{func.__name__}" if func else ""
    table.update({name: f"{module}:{function}" for name, (module, function, _help) in PASSTHROUGH.items()})
    return table


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        import importlib

        module, function, _help = PASSTHROUGH[argv[0]]
        try:
            return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
        except ReadingRoomError as exc:
            print(f"readingroom: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ReadingRoomError as exc:
        print(f"readingroom: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
