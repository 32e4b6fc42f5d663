"""``readingroom audit verify``: check the audit log's hash chain and its append-only triggers.

Exit status 0 when intact, 1 with one line per problem. It prints the number of entries and the
head hash: keep that somewhere else (a ticket, a log server) to detect a rewritten tail later.
(``readingroom report audit`` queries the log.)
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from readingroom import audit
from readingroom.cli import Context

log = logging.getLogger(__name__)


def cmd_audit(args: argparse.Namespace) -> int:
    """``audit verify`` (the only verb so far)."""
    check = audit.verify(Context().db)
    for problem in check.problems:
        print(f"readingroom: audit log: {problem}", file=sys.stderr)
    state = "intact" if check.ok else f"NOT intact ({len(check.problems)} problem(s))"
    print(f"audit log {state}: {check.entries} entries, head {check.head or '(empty)'}")
    return 0 if check.ok else 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser("audit", help="the audit log's integrity: audit verify")
    verbs = p.add_subparsers(dest="audit_command", required=True, metavar="verify")
    verbs.add_parser("verify", help="check the hash chain and the append-only triggers (exit 1 if broken)")
    p.set_defaults(func=cmd_audit)
