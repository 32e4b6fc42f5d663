"""``readingroom receive|import|worklist|claim``: the DICOM intake and the worklist from the command line.

A thin boundary: each command loads the settings once (``readingroom.cli.Context``) and calls the
triage cores (``triage.service``, ``triage.importer``, ``triage.worklist``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from readingroom.cli import Context, add_dicom_arguments, dicom_overrides, wait_for_stop

log = logging.getLogger(__name__)


def cmd_receive(args: argparse.Namespace) -> int:
    from readingroom.jobs import open_queue
    from triage.service import IntakeService

    overrides = dicom_overrides(args)
    if args.processes is not None:
        overrides.setdefault("dicom", {})["processes"] = args.processes
    ctx = Context(overrides, log_to_file=True)
    if ctx.settings.dicom.processes > 1:
        from triage.listener_group import run_listener_group

        return run_listener_group(ctx.settings, overrides, ctx.db)
    service = IntakeService(ctx.settings, ctx.db, open_queue(ctx.db, ctx.settings.jobs))
    service.start()
    print(f"DICOM listener {ctx.settings.dicom.ae_title} on {ctx.settings.dicom.host}:{service.listener.port}; "
          "Ctrl-C to stop", flush=True)
    if service.orders is not None:
        print(f"HL7 order listener on {ctx.settings.hl7.host}:{service.orders.port}", flush=True)
    try:
        wait_for_stop()
    finally:
        service.stop()
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from readingroom.jobs import open_queue
    from triage.importer import import_path
    from triage.intake import Intake
    from triage.studies import complete_due_studies

    ctx = Context()
    intake = Intake(ctx.settings, ctx.db)
    summary = import_path(Path(args.path), intake, progress=not args.quiet)
    # A folder is complete once read: no quiet period to wait for.
    complete_due_studies(ctx.db, open_queue(ctx.db, ctx.settings.jobs), ctx.settings,
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the triage subcommands on the ``readingroom`` parser."""
    p = sub.add_parser("receive", help="run the DICOM listener alone")
    add_dicom_arguments(p)
    p.add_argument("--processes", type=int, metavar="N",
                   help="listener processes sharing the port, about one per core (default: dicom.processes)")
    p.set_defaults(func=cmd_receive)

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
