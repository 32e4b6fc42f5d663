"""``readingroom orders``: review orders from a terminal. A thin boundary over ``review``.

    readingroom orders list [--status new] [--json]
    readingroom orders show ACCESSION [--json]
    readingroom orders approve ACCESSION [--protocol NAME] [--set key=value ...]
    readingroom orders reject ACCESSION --reason TEXT
    readingroom orders question ACCESSION --text TEXT
    readingroom orders protocols
    readingroom orders messages [--errors] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

import yaml

from readingroom.schema import ORDER_STATUSES

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="readingroom orders", description="Review imaging orders: approve with "
                                     "a protocol, reject with a reason, or ask a question.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("list", help="orders, newest first")
    p.add_argument("--status", choices=ORDER_STATUSES)
    p.add_argument("--site")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="one order: request, hints, suggested protocol, history")
    p.add_argument("accession")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("approve", help="approve with a protocol (the suggested one unless --protocol)")
    p.add_argument("accession")
    p.add_argument("--protocol", help="a protocol name from configs/protocols.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="edit a protocol field, e.g. --set slice_thickness_mm=1 --set contrast=none")
    p.add_argument("--user", default="")
    p = sub.add_parser("reject", help="reject with a reason; the site's RIS is told over HL7")
    p.add_argument("accession")
    p.add_argument("--reason", required=True)
    p.add_argument("--user", default="")
    p = sub.add_parser("question", help="ask the ordering physician a question (sent to the RIS); the order waits")
    p.add_argument("accession")
    p.add_argument("--text", required=True)
    p.add_argument("--user", default="")
    sub.add_parser("protocols", help="the protocol library (configs/protocols.yaml)")
    p = sub.add_parser("messages", help="received order messages, with the ACK we sent (admin)")
    p.add_argument("--errors", action="store_true", help="only those answered AE or AR")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    return parser


def _edits(pairs: list[str]) -> dict[str, Any]:
    from orders.common import OrderError

    edits = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise OrderError(f"--set {pair!r}: write KEY=VALUE, e.g. --set contrast=none")
        edits[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return edits


def _table(orders: list[dict[str, Any]]) -> str:
    lines = [f"{'ACCESSION':<16} {'STATUS':<9} {'PRIO':<8} {'MOD':<4} {'SITE':<20} {'PATIENT':<20} "
             f"{'PROCEDURE':<32} {'PROTOCOL':<20} HINTS"]
    for o in orders:
        lines.append(f"{o['accession'][:16]:<16} {o['status']:<9} {o['priority'][:8]:<8} {o['modality'][:4]:<4} "
                     f"{o['site'][:20]:<20} {o['patient_name'][:20]:<20} {o['procedure_description'][:32]:<32} "
                     f"{o['protocol_name'][:20]:<20} {len(o['hints'])}")
    if not orders:
        lines.append("(no orders)")
    return "\n".join(lines)


def _show(order: dict[str, Any]) -> str:
    lines = [f"Order {order['accession']}  [{order['status']}]  {order['site']}",
             f"  Patient      {order['patient_name']} ({order['patient_id']}), born {order['patient_birth_date']}, "
             f"{order['patient_sex']}",
             f"  Procedure    {order['procedure_code']} {order['procedure_description']} ({order['modality']})"
             + (f", {order['laterality']}" if order["laterality"] else ""),
             f"  Priority     {order['priority'] or '-'}", f"  Indication   {order['indication'] or '-'}",
             f"  Ordered by   {order['ordering_physician'] or '-'}"]
    if order["contrast_allergy"] or order["egfr"] is not None:
        lines.append(f"  Contrast     allergy: {order['contrast_allergy'] or 'none on file'}; eGFR: "
                     f"{order['egfr'] if order['egfr'] is not None else '-'}")
    for hint in order["hints"]:
        lines.append(f"  HINT         {hint}")
    if order.get("suggestion") and order["status"] in ("new", "question"):
        s = order["suggestion"]
        lines.append(f"  Suggested    {s['name']}: {s['protocol'].get('title')} ({s['reason']})")
    if order["protocol_name"]:
        p = order["protocol"]
        lines.append(f"  Protocol     {order['protocol_name']}: {p.get('title')}; phases: "
                     f"{', '.join(p.get('phases') or [])}; contrast: {p.get('contrast')}; "
                     f"slices: {p.get('slice_thickness_mm')} mm" + (f"; edited: {', '.join(p['edited'])}"
                                                                    if p.get("edited") else ""))
        if p.get("instructions"):
            lines.append(f"               {p['instructions']}")
    if order["review_note"]:
        lines.append(f"  Note         {order['review_note']}")
    lines.append(f"  Studies      {', '.join(order.get('studies') or []) or 'none linked yet'}")
    for event in order.get("events", []):
        lines.append(f"  {event['at']}  {event['kind']:<18} {event['user']}  "
                     f"{json.dumps(event['detail']) if event['detail'] else ''}")
    return "\n".join(lines)


def _send_now(db: Any, settings: Any, accession: str, kind: str) -> str:
    """Run the queued notice now; when the RIS does not answer, the job stays for the workers."""
    from readingroom.jobs import DatabaseJobQueue, WorkerPool
    from orders import review

    pool = WorkerPool(DatabaseJobQueue(db, settings.jobs), settings.jobs)
    pool.register(review.SEND_JOB, review.OrderNoticeSender(db, settings))
    for _ in range(20):  # every due notice (normally just this one); bounded if the RIS keeps failing
        if not pool.run_once():
            break
    events = [e["kind"] for e in review.get_order(db, accession)["events"]]
    if f"{kind}_sent" in events[-2:]:
        return "the site's RIS acknowledged it"
    if f"{kind}_not_sent" in events[-2:]:
        return "the site has no HL7 destination: tell it another way"
    return "the RIS did not answer yet: queued, the workers retry (`readingroom jobs list`)"


def main(argv: Sequence[str] | None = None) -> int:
    from readingroom.cli import Context
    from readingroom.jobs import open_queue
    from orders import review
    from orders.protocols import load_library
    from orders.store import recent_messages

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    ctx = Context()
    db, settings = ctx.db, ctx.settings
    if args.action == "list":
        orders = review.list_orders(db, status=args.status, site=args.site, limit=args.limit)
        print(json.dumps(orders, indent=2) if args.json else _table(orders))
    elif args.action == "show":
        order = review.get_order(db, args.accession, settings)
        print(json.dumps(order, indent=2) if args.json else _show(order))
    elif args.action == "approve":
        order = review.approve(db, settings, args.accession, args.protocol, _edits(args.set), user=args.user)
        print(f"approved {order['accession']} with protocol {order['protocol_name']}: {order['protocol']['title']}; "
              "it is on the DICOM worklist now")
    elif args.action == "reject":
        review.reject(db, settings, open_queue(db, settings.jobs), args.accession, args.reason, user=args.user)
        print(f"rejected {args.accession}: {args.reason}; {_send_now(db, settings, args.accession, 'rejection')}")
    elif args.action == "question":
        review.ask(db, args.accession, args.text, user=args.user, queue=open_queue(db, settings.jobs))
        print(f"question recorded for {args.accession}; the order waits for the answer; "
              f"{_send_now(db, settings, args.accession, 'question')}")
    elif args.action == "protocols":
        for name, proto in sorted(load_library(settings).protocols.items()):
            print(f"{name:<24} {proto['modality']:<3} {proto['title']}")
    elif args.action == "messages":
        rows = recent_messages(db, limit=args.limit, errors_only=args.errors)
        if args.json:
            print(json.dumps(rows, indent=2))
        for row in [] if args.json else rows:
            print(f"{row['id']:>6} {row['received_at']} {row['ack'] or '--'} {row['message_type']:<8} "
                  f"{row['control_id'][:20]:<20} {row['accession'][:16]:<16} {row['error']}")
        if not rows and not args.json:
            print("(no order messages)")
    return 0
