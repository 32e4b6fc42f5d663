"""Presentation helpers of the sign-off panel, the requests tab and the admin tables (pure)."""

from __future__ import annotations

import html
from typing import Any

SEVERITY_LABEL = {"block": "BLOCKING", "critical": "CRITICAL", "warn": "WARNING", "info": "info"}
DELIVERY_COLUMNS = ["Outbox", "Version", "Status of report", "Destination", "Delivery", "Attempts", "Last error",
                    "Acknowledgement", "Delivered (UTC)"]
ORDER_COLUMNS = ["Accession", "Status", "Priority", "Site", "Patient", "Procedure", "Indication", "Laterality",
                 "Ordering physician", "Hints"]
AUDIT_COLUMNS = ["Time (UTC)", "User", "Action", "Study", "Report", "Detail"]


def checks_markdown(results: list[Any]) -> str:
    """Pre-sign check results (dictation.lifecycle.CheckResult) as a list, open issues first."""
    if not results:
        return "✔ **No issues found.** The report can be signed."
    lines = []
    for r in sorted(results, key=lambda r: (r.resolved, r.issue.severity != "block")):
        issue = r.issue
        mark = "✔" if r.resolved else ("⛔" if issue.severity in ("block", "critical") else "⚠")
        state = f" — *{html.escape(r.resolution)}*" if r.resolved else ""
        lines.append(f"- {mark} **{SEVERITY_LABEL.get(issue.severity, issue.severity)}** "
                     f"`{html.escape(issue.key)}`: {html.escape(issue.message)}{state}")
    open_count = sum(not r.resolved for r in results)
    head = (f"**{open_count} open issue(s)** must be resolved, overridden with a reason, acknowledged or "
            "communicated before signing." if open_count else "✔ **All issues resolved.**")
    return head + "\n\n" + "\n".join(lines)


def open_issue_keys(results: list[Any]) -> list[str]:
    return [r.issue.key for r in results if not r.resolved]


def delivery_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [[i["id"], i["version"], i["report_status"], i["destination"], i["status"], i["attempts"],
             i["last_error"], i["acknowledgement"], (i["delivered_at"] or "")[:19].replace("T", " ")]
            for i in items]


def order_rows(orders: list[dict[str, Any]]) -> list[list[Any]]:
    rank = {"STAT": 0, "S": 0, "ASAP": 1, "A": 1, "URGENT": 1}
    ordered = sorted(orders, key=lambda o: (rank.get((o["priority"] or "").upper(), 2), o["created_at"] or ""))
    return [[o["accession"], o["status"], o["priority"], o["site"], o["patient_name"], o["procedure_description"],
             o["indication"], o["laterality"], o["ordering_physician"], "; ".join(o["hints"])] for o in ordered]


def order_markdown(order: dict[str, Any]) -> str:
    """One order for review: the request, hints and the suggested protocol."""
    esc = html.escape
    lines = [f"### {esc(order['procedure_description'])} · accession {esc(order['accession'])} · "
             f"{esc(order['status'])}",
             f"**Patient** {esc(order['patient_name'])} ({esc(order['patient_id'])}), {esc(order['patient_sex'])}, "
             f"born {esc(order['patient_birth_date'])} · **Site** {esc(order['site'])} · "
             f"**Priority** {esc(order['priority'] or 'routine')}",
             f"**Indication** {esc(order['indication'] or '—')} · **Laterality** {esc(order['laterality'] or '—')}",
             f"**Ordering physician** {esc(order['ordering_physician'] or '—')}"]
    if order.get("contrast_allergy"):
        lines.append(f"**Contrast allergy** {esc(order['contrast_allergy'])}")
    if order.get("egfr") is not None:
        lines.append(f"**eGFR** {order['egfr']}")
    for hint in order.get("hints") or []:
        lines.append(f"- ⚠ {esc(hint)}")
    suggestion = order.get("suggestion")
    if suggestion:
        name = suggestion.get("name") if isinstance(suggestion, dict) else getattr(suggestion, "name", "")
        why = suggestion.get("reason", "") if isinstance(suggestion, dict) else getattr(suggestion, "reason", "")
        lines.append(f"**Suggested protocol** `{esc(str(name))}` {esc(str(why))}")
    if order.get("review_note"):
        lines.append(f"**Review note** {esc(order['review_note'])}")
    return "\n\n".join(lines)


def audit_rows(rows: list[Any]) -> list[list[Any]]:
    out = []
    for r in rows:
        d = r.as_dict() if hasattr(r, "as_dict") else dict(r)
        out.append([str(d.get("at") or d.get("created_at") or "")[:19].replace("T", " "), d.get("user", ""),
                    d.get("action", ""), d.get("study_uid", ""), d.get("report_id", ""),
                    str(d.get("detail", ""))[:200]])
    return out
