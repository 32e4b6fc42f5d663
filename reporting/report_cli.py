"""``readingroom report``: drive the report lifecycle without the UI.

    readingroom report new STUDY_UID [--template NAME] [--user NAME]
    readingroom report set REPORT_ID --section NAME --text TEXT [--field NAME]
    readingroom report check REPORT_ID [--json]              (exit 1 while a check is open)
    readingroom report override REPORT_ID KEY --reason TEXT --user NAME
    readingroom report ack REPORT_ID KEY --user NAME
    readingroom report communicate REPORT_ID --recipient WHO --method phone --read-back --user NAME
    readingroom report sign REPORT_ID --user NAME [--final]   (exit 3 when checks are open)
    readingroom report addendum REPORT_ID --text TEXT --user NAME
    readingroom report correct REPORT_ID --section NAME --text TEXT --reason TEXT --user NAME
    readingroom report export REPORT_ID --format hl7|fhir|sr|pdf --out FILE
    readingroom report show REPORT_ID|STUDY_UID [--json]
    readingroom report verify REPORT_ID                       (recompute the signatures' SHA-256)
    readingroom report list [--status draft] [--user NAME] [--json]
    readingroom report outbox [--status failed] [--report ID] [--json]
    readingroom report retry OUTBOX_ID --user NAME
    readingroom report audit [--user U] [--action A] [--study UID] [--report ID] [--since ISO] [--json]

Signed reports are delivered by the workers of ``readingroom run`` or ``readingroom worker``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Sequence

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


def _default_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="readingroom report", description="Report lifecycle: draft, checks, "
                                     "sign, addendum, delivery, audit. Not for clinical use.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="ACTION")

    def add(name: str, help_: str, report: bool = True, user: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        if report:
            p.add_argument("report_id", type=int, metavar="REPORT_ID")
        if user:
            p.add_argument("--user", default=_default_user(), help="who does it (default: your login name)")
        return p

    p = add("new", "create the draft report of a study (or print its existing report)", report=False)
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--template", default=None, help="template name from configs/templates (default: free)")
    p = add("set", "replace the text of a section (or of a template field with --field)")
    p.add_argument("--section", required=True, help="clinical_information, comparison, technique, findings, "
                                                     "impression or recommendations")
    p.add_argument("--field", help="a template field of that section (e.g. hemorrhage)")
    p.add_argument("--text", required=True)
    p = add("check", "run the pre-sign checks", user=False)
    p.add_argument("--json", action="store_true")
    p = add("override", "override a blocking check, with a reason (audited)")
    p.add_argument("key", help="the check key printed by `report check`")
    p.add_argument("--reason", required=True)
    p = add("ack", "acknowledge a warning (AI discordance)")
    p.add_argument("key")
    p.add_argument("--note", default="")
    p = add("communicate", "record a critical-result communication")
    p.add_argument("--recipient", required=True, help="name and role, e.g. 'Dr Smith, ED attending'")
    p.add_argument("--method", required=True, help="phone, in person, secure message, page or video call")
    p.add_argument("--read-back", action=argparse.BooleanOptionalAction, required=True,
                   help="whether the recipient read the result back")
    p.add_argument("--finding", default="", help="the finding communicated")
    p.add_argument("--at", help="when (ISO time, UTC; default: now)")
    p = add("sign", "sign the draft: preliminary, or final with --final")
    p.add_argument("--final", action="store_true", help="sign as final (default: preliminary)")
    p = add("addendum", "add an addendum to a final report")
    p.add_argument("--text", required=True)
    p = add("correct", "issue a corrected version of a final report")
    p.add_argument("--section", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--reason", required=True)
    p = add("export", "write the newest signed version as HL7 ORU, FHIR JSON, DICOM SR or PDF")
    p.add_argument("--format", required=True, choices=["hl7", "fhir", "sr", "pdf"])
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("show", help="print a report (by id or study UID)")
    p.add_argument("report", metavar="REPORT_ID|STUDY_UID")
    p.add_argument("--json", action="store_true")
    p.add_argument("--user", default=None, help="audit this view as this user")
    add("verify", "check that every signed version still matches its SHA-256", user=False)
    p = sub.add_parser("list", help="reports, newest change first")
    p.add_argument("--status", choices=["draft", "preliminary", "final", "addendum", "corrected"])
    p.add_argument("--user", help="only reports this user created")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("outbox", help="deliveries: pending, delivered, failed")
    p.add_argument("--status", choices=["pending", "delivered", "failed"])
    p.add_argument("--report", type=int)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("retry", help="queue a failed delivery again")
    p.add_argument("outbox_id", type=int)
    p.add_argument("--user", default=_default_user())
    p = sub.add_parser("audit", help="query the audit log, newest first")
    p.add_argument("--user")
    p.add_argument("--action")
    p.add_argument("--study")
    p.add_argument("--report", type=int)
    p.add_argument("--since", help="ISO date or time (UTC)")
    p.add_argument("--until", help="ISO date or time (UTC)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    return parser


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", ""))
    except ValueError:
        from reporting.errors import ReportError

        raise ReportError(f"{value!r} is not an ISO date or time; write e.g. 2026-11-29T04:10") from None


def _print_issues(results, as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return
    if not results:
        print("no issues")
    for r in results:
        state = "ok  " if r.resolved else "OPEN"
        print(f"{state} [{r.issue.severity}] {r.issue.key}\n      {r.issue.message}"
              + (f"\n      -> {r.resolution}" if r.resolution else ""))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from readingroom.cli import Context
    from readingroom.jobs import open_queue

    from reporting.errors import ChecksNotResolved
    from reporting.lifecycle import ReportService
    from reporting.versions import verify_signature

    ctx = Context()
    service = ReportService(ctx.db, ctx.settings, open_queue(ctx.db, ctx.settings.jobs))
    a = args.command
    if a == "new":
        view = service.create(args.study_uid, args.user, args.template)
        print(f"report {view.id} ({view.status}, template {view.template}) for study {view.study_uid}")
    elif a == "set":
        if args.field:
            section = args.section.strip().lower().replace(" ", "_")
            view = service.save_draft(args.report_id, args.user, fields={section: {args.field: args.text}})
        else:
            view = service.set_section(args.report_id, args.user, args.section, args.text)
        print(f"report {view.id} saved (revision {view.revision})")
    elif a == "check":
        results = service.run_checks(args.report_id)
        _print_issues(results, args.json)
        return 1 if any(not r.resolved for r in results) else 0
    elif a == "override":
        service.override(args.report_id, args.key, args.user, args.reason)
        print(f"overridden {args.key}")
    elif a == "ack":
        service.acknowledge(args.report_id, args.key, args.user, args.note)
        print(f"acknowledged {args.key}")
    elif a == "communicate":
        when = _when(args.at)
        out = service.record_communication(args.report_id, args.user, recipient=args.recipient, method=args.method,
                                           read_back=args.read_back, communicated_at=when, finding=args.finding)
        print(out["statement"])
    elif a in ("sign", "addendum", "correct"):
        try:
            if a == "sign":
                version = service.sign(args.report_id, args.user, final=args.final)
            elif a == "addendum":
                version = service.addendum(args.report_id, args.user, args.text)
            else:
                version = service.correct(args.report_id, args.user, {args.section: args.text}, args.reason)
        except ChecksNotResolved as exc:
            print(f"readingroom: {exc}", file=sys.stderr)
            return 3
        from reporting.delivery.outbox import report_site, sign_message, sites_file_label

        rows = service.delivery_status(args.report_id)
        queued = [row["destination"] for row in reversed(rows) if row["version"] == version.number]
        print(f"report {args.report_id} v{version.number} signed {version.status} by {version.signed_by} at "
              f"{version.signed_at.isoformat()}Z, sha256 {version.sha256}")
        print(sign_message(version.status, version.number, report_site(ctx.db, args.report_id), rows,
                           sites_file_label(ctx.settings)))
        print(f"queued for delivery to {', '.join(queued)}; `readingroom run` or `readingroom worker` delivers it"
              if queued else "to hand the report over anyway, write it out with `readingroom report export`")
    elif a == "export":
        path = service.export(args.report_id, args.format, args.out, user=args.user)
        print(f"wrote {path}")
    elif a == "show":
        view = service.get(int(args.report), args.user) if args.report.isdigit() else service.find(args.report)
        if view is None:
            print(f"no report for study {args.report}; create one with `readingroom report new {args.report}`",
                  file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(view.as_dict(), indent=2))
        else:
            print(f"report {view.id}  study {view.study_uid}  accession {view.accession}  patient "
                  f"{view.patient_name} ({view.patient_id})  status {view.status}  revision {view.revision}")
            for v in view.versions:
                print(f"  v{v.number} {v.status:<11} signed by {v.signed_by} at {v.signed_at.isoformat()}Z "
                      f"sha256 {v.sha256[:16]}...")
            print()
            print(view.versions[-1].text if view.versions else view.text or "(empty draft)")
    elif a == "verify":
        view = service.get(args.report_id)
        bad = [v.number for v in view.versions if not verify_signature(v)]
        for v in view.versions:
            print(f"v{v.number} {v.status}: {'ok' if v.number not in bad else 'CONTENT DOES NOT MATCH ITS SIGNATURE'}")
        return 1 if bad else 0
    elif a == "list":
        rows = service.list_reports(status=args.status, user=args.user, limit=args.limit)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['id']:>5} {r['status']:<11} {r['updated_at']} {r['accession']:<12} {r['patient_name']:<24} "
                      f"{r['description']}")
            if not rows:
                print("(no reports)")
    elif a == "outbox":
        rows = service.delivery_status(args.report, args.status, args.limit)
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                print(f"{r['id']:>5} report {r['report_id']} v{r['version']} {r['destination']:<6} {r['status']:<9} "
                      f"tries {r['attempts']}  {r['acknowledgement'] or r['last_error']}")
            if not rows:
                print("(no deliveries)")
    elif a == "retry":
        service.retry_delivery(args.outbox_id, args.user)
        print(f"delivery {args.outbox_id} queued again")
    elif a == "audit":
        since, until = _when(args.since), _when(args.until)
        rows = service.audit(user=args.user, action=args.action, study_uid=args.study, report_id=args.report,
                             since=since, until=until, limit=args.limit)
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], indent=2))
        else:
            for r in rows:
                print(f"{r.at.isoformat(timespec='seconds')}Z {r.user:<12} {r.action:<15} {r.study_uid} "
                      f"report {r.report_id}  {json.dumps(r.detail)[:120]}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReadingRoomError as exc:
        print(f"readingroom: {exc}", file=sys.stderr)
        sys.exit(2)
