"""The errors of the report lifecycle and its sign-off gate.

``ReportError``: an action on a report that is not allowed now; its message says what to do
instead. ``ChecksNotResolved``: the sign-off gate refused a version because pre-sign checks are
still open (``reporting.signoff``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from readingroom.errors import ReadingRoomError

if TYPE_CHECKING:
    from reporting.signoff import CheckResult

log = logging.getLogger(__name__)


class ReportError(ReadingRoomError):
    """A report action that is not allowed now; the message says what to do instead."""


class ChecksNotResolved(ReportError):
    def __init__(self, report_id: int, open_issues: list[CheckResult]) -> None:
        self.open_issues = open_issues
        lines = "\n  ".join(f"[{c.issue.severity}] {c.issue.key}: {c.issue.message}" for c in open_issues)
        super().__init__(f"report {report_id} cannot be signed yet; resolve, override (with a reason), "
                         f"acknowledge or communicate:\n  {lines}")
