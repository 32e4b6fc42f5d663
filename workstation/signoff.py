"""Presentation helpers of the sign-off panel, the requests tab and the admin tables (pure)."""

from __future__ import annotations

import html
import re
from typing import Any

from reporting.report import SECTION_TITLES

# Report states after which the text is fixed: it changes only by addendum or corrected version
# (reporting.lifecycle.SIGNED; a preliminary report can still be edited and signed final).
SIGNED_STATES = ("final", "addendum", "corrected")
STATE_LABEL = {"draft": "DRAFT", "preliminary": "PRELIMINARY", "final": "FINAL", "addendum": "FINAL + ADDENDUM",
               "corrected": "CORRECTED"}

SEVERITY_LABEL = {"blocking": "BLOCKING", "critical": "CRITICAL", "warn": "WARNING", "info": "info"}
DELIVERY_COLUMNS = ["Outbox", "Version", "Status of report", "Destination", "Delivery", "Attempts", "Last error",
                    "Acknowledgement", "Delivered (UTC)"]
ORDER_COLUMNS = ["Accession", "Status", "Priority", "Site", "Patient", "Procedure", "Indication", "Laterality",
                 "Ordering physician", "Hints"]
AUDIT_COLUMNS = ["Time (UTC)", "User", "Action", "Study", "Report", "Detail"]


def checks_markdown(results: list[Any]) -> str:
    """Pre-sign check results (reporting.signoff.CheckResult) as a list, open issues first."""
    if not results:
        return "**No issues found.** The report can be signed."
    lines = []
    for r in sorted(results, key=lambda r: (r.resolved, r.issue.severity != "blocking")):
        issue = r.issue
        mark = "Resolved:" if r.resolved else "OPEN"
        state = f" — *{html.escape(r.resolution)}*" if r.resolved else ""
        lines.append(f"- {mark} **{SEVERITY_LABEL.get(issue.severity, issue.severity)}** "
                     f"`{html.escape(issue.key)}`: {html.escape(issue_text(issue), quote=False)}{state}")
    open_count = sum(not r.resolved for r in results)
    head = (f"**{open_count} open issue(s)** must be resolved, overridden with a reason, acknowledged or "
            "communicated before signing." if open_count else "**All issues resolved.**")
    return head + "\n\n" + "\n".join(lines)


def open_issue_keys(results: list[Any]) -> list[str]:
    return [r.issue.key for r in results if not r.resolved]


def delivery_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    """Outbox rows for the delivery tables; a pending row reads "queued" (the workers send it)."""
    from reporting.delivery.outbox import DELIVERY_STATE

    return [[i["id"], i["version"], i["report_status"], i["destination"],
             DELIVERY_STATE.get(i["status"], i["status"]), i["attempts"],
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
        lines.append(f"- **Hint:** {esc(hint)}")
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


# --- the reading tab after signing (issue 17, item 6) ------------------------------------------
def is_read_only(view: Any) -> bool:
    """A final report (or one with an addendum or a correction) cannot be edited: its boxes are
    read-only and only an addendum can be added. A draft or a preliminary report stays editable."""
    return view.status in SIGNED_STATES


def report_state(view: Any) -> str:
    """The report's state for the reading tab's header: ``DRAFT, not signed yet`` or
    ``FINAL v1, signed by demo at 03:12Z on 2026-11-30`` (the newest signed version)."""
    if not view.versions:
        return f"{STATE_LABEL.get(view.status, view.status.upper())}, not signed yet"
    v = view.versions[-1]
    return (f"{STATE_LABEL.get(v.status, v.status.upper())} v{v.number}, signed by {v.signed_by} at "
            f"{v.signed_at:%H:%M}Z on {v.signed_at:%Y-%m-%d}")


def reading_header(study_line: str, view: Any) -> str:
    """The reading tab's header: the study line (patient, study, claim) and the report's state."""
    return f"{study_line} · report {view.id}: **{html.escape(report_state(view))}**"


def addendum_text(versions: list[Any], index: int) -> str:
    """The text an addendum version added (its body minus the previous version's body, without the
    ``ADDENDUM (time, user):`` line), or "" for a version that is not an addendum."""
    version = versions[index]
    if version.status != "addendum" or index == 0:
        return ""
    body = str(version.content.get("body", ""))
    previous = str(versions[index - 1].content.get("body", ""))
    added = body[len(previous):] if body.startswith(previous) else body.rsplit("\n\nADDENDUM (", 1)[-1]
    return re.sub(r"^\s*(?:ADDENDUM )?\([^)]*\):\s*", "", added.strip()).strip()


def signed_markdown(view: Any) -> str:
    """Every signed version of the report, newest last; an addendum with the text it added."""
    if not view.versions:
        return f"Report {view.id}: **{view.status}** (not signed yet). Drafts save themselves."
    lines = [f"Report {view.id}: **{html.escape(report_state(view))}**. Every signed version is kept; a final "
             "report changes only by addendum."]
    for i, v in enumerate(view.versions):
        line = (f"- v{v.number} {v.status} signed by {html.escape(v.signed_by)} at "
                f"{v.signed_at:%Y-%m-%d %H:%M:%S} UTC · SHA-256 `{v.sha256[:16]}…`")
        added = addendum_text(view.versions, i)
        if added:
            line += f"\n  - Addendum (v{v.number}): {html.escape(added)}"
        lines.append(line)
    return "\n".join(lines)


def _template_issue(key: str) -> tuple[str, str] | None:
    """(section title, field label or "") of a template completeness issue, else None."""
    parts = key.split(":", 3)
    if len(parts) == 4 and parts[:2] == ["template", "field"]:
        return SECTION_TITLES.get(parts[2], parts[2]), parts[3]
    if len(parts) == 3 and parts[:2] == ["template", "empty"]:
        return SECTION_TITLES.get(parts[2], parts[2]), ""
    return None


def issue_title(issue: Any) -> str:
    """An open issue as the "Open issue" list names it: a template field in full
    ("Findings > Extra-axial spaces is empty"), any other issue by its key and message."""
    where = _template_issue(issue.key)
    if where is not None:
        section, label = where
        return f"{section} > {label} is empty" if label else f"{section} is empty"
    text = f"{issue.key}: {issue.message}"
    return text if len(text) <= 140 else text[:139] + "…"


def issue_text(issue: Any) -> str:
    """The issue's message; for an empty template field, also where to fill it in on the page."""
    where = _template_issue(issue.key)
    if where is None:
        return issue.message
    section, label = where
    if label:
        return (f"{section} > {label} is empty. Type it after \"{label}:\" in the {section} box, dictate it, "
                "say \"insert normal\", or override with a reason.")
    return f"{section} is empty. Type or dictate it in the {section} box before signing."


def issue_choices(results: list[Any]) -> list[tuple[str, str]]:
    """The open issues for the "Open issue" list: (full name shown, check key chosen)."""
    return [(issue_title(r.issue), r.issue.key) for r in results if not r.resolved]


_CLI_ASIDE = re.compile(r"\s*\([^()]*`(?:readingroom|report) [^`]*`[^()]*\)")
_CLI_CLAUSE = re.compile(r"`(?:readingroom|report) [^`]*`")


def page_message(text: str, hint: str = "") -> str:
    """An error message for the page: what went wrong and what to do there, without the command
    lines that the same message names for the CLI (a parenthesis or a clause that holds a
    `readingroom ...` command goes). ``hint`` says what to do on the page instead."""
    joined = " ".join(line.strip() for line in str(text).strip().splitlines()) or "Something went wrong"
    message = _CLI_ASIDE.sub("", joined)
    clauses = [c.strip() for c in re.split(r";\s+", message) if c.strip() and not _CLI_CLAUSE.search(c)]
    message = "; ".join(clauses) or "That could not be done"
    message = message[:1].upper() + message[1:]
    if not message.endswith((".", "!", "?")):
        message += "."
    return f"{message} {hint}".strip()
