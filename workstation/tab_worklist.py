"""The Worklist tab: the open studies in reading order (filters by site, modality and status), kept
fresh by a timer, with the critical-study alert. A click on a row opens the study in the Reading
tab (wired by workstation/tab_reading.py)."""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from readingroom.access import visible_to
from readingroom.db import Database
from readingroom.settings import Settings
from triage.notify import CRITICAL_FINDING, events_since
from triage.worklist import OPEN_STATUSES, Filters, open_studies
from workstation.page_context import PageContext, guarded, username

log = logging.getLogger(__name__)

WORKLIST_COLUMNS = ["#", "Priority", "SLA", "Status", "Modality", "Site", "Patient", "Accession", "Description",
                    "Images", "Received (UTC)", "AI (UNVERIFIED)", "Reason", "Study UID"]
# The worklist's status filter, (label, value): open studies by default; signed ones on request
# (to add an addendum); one open status; or everything.
STATUS_CHOICES = [("open", ""), ("new", "new"), ("triaged", "triaged"), ("in progress", "in_progress"),
                  ("receiving", "receiving"), ("preliminary", "preliminary"), ("signed (final)", "final"),
                  ("all", "all")]
SIGNED_STUDY_STATUSES = ("final",)


def sla_text(item: dict[str, Any]) -> str:
    remaining = item["sla"]["remaining_min"]
    if remaining is None:
        return ""
    if remaining < 0:
        return f"OVERDUE {-remaining:.0f} min"
    return f"{remaining:.0f} min" if remaining < 120 else f"{remaining / 60:.1f} h"


def worklist_query(status: str) -> tuple[tuple[str, ...], str | None]:
    """The status filter's value as (study statuses to list, one status to keep or None): "" the
    open studies, "final" the signed ones, "all" both, any other value that one open status."""
    if status == "all":
        return (*OPEN_STATUSES, *SIGNED_STUDY_STATUSES), None
    if status in SIGNED_STUDY_STATUSES:
        return SIGNED_STUDY_STATUSES, None
    return OPEN_STATUSES, status or None


def worklist_rows(db: Database, settings: Settings, user: str | None = None, site: str = "", modality: str = "",
                  status: str = "") -> list[list[Any]]:
    statuses, one_status = worklist_query(status or "")
    filters = Filters(site=site or None, modality=modality or None, status=one_status)
    rows = []
    for item in open_studies(db, settings, user=user, filters=filters, statuses=statuses):
        ai = "; ".join(f"{f['finding']} {f['probability']:.2f}" for f in item["ai"] if f["positive"])
        sla = "signed" if item["status"] in SIGNED_STUDY_STATUSES else sla_text(item)
        rows.append([item["position"], item["priority"]["label"], sla, item["status"], item["modality"],
                     item["site"], item["patient_name"], item["accession"], item["description"],
                     item["num_instances"], (item["received_at"] or "")[:19].replace("T", " "),
                     ai or item["ai_status"], item["priority"]["reason"], item["study_uid"]])
    return rows


def styled(rows: list[list[Any]]):  # a pandas Styler
    """Critical rows in red, urgent in amber, overdue SLAs in bold."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=WORKLIST_COLUMNS)
    colors = {"critical": "background-color: #7f1d1d; color: #fff", "urgent": "background-color: #78350f; color: #fff"}

    def row_style(row):
        return [colors.get(row["Priority"], "")] * len(row)

    return frame.style.apply(row_style, axis=1)


@dataclass
class WorklistTab:
    """What the page and the other tabs use of the Worklist tab."""

    table: gr.Dataframe        # a row's select opens the study (workstation/tab_reading.py)
    filters: list[Any]         # site, modality, status dropdowns
    refresh: gr.Button
    last_event: gr.State       # the last study event seen (set when the page loads)


def build_worklist(ctx: PageContext) -> WorklistTab:
    """Lay out the Worklist tab and wire its refreshes and the critical-study alert."""
    site_names = [""] + [s.name for s in ctx.settings.sites]
    with ctx.tab("Worklist", "worklist"):
        with gr.Row():
            f_site = gr.Dropdown(site_names, value="", label="Site", scale=1)
            f_modality = gr.Dropdown(["", "CT", "CR", "DX", "MR", "US", "NM", "XA"], value="",
                                     label="Modality", scale=1)
            f_status = gr.Dropdown(STATUS_CHOICES, value="", label="Status", scale=1,
                                   elem_id="rr-status-filter")
            refresh = gr.Button("Refresh", size="sm", scale=0)
        table = gr.Dataframe(headers=WORKLIST_COLUMNS, interactive=False, elem_id="worklist", wrap=True,
                             max_height=640)
        gr.Markdown("Click a row to open (and claim) the study. Critical rows are red; AI flags are UNVERIFIED. "
                    "Signed studies are under Status: signed (final), to add an addendum.")
    tab = WorklistTab(table=table, filters=[f_site, f_modality, f_status], refresh=refresh,
                      last_event=gr.State(0))
    _wire_refresh(ctx, tab)
    _wire_critical_alert(ctx, tab)
    return tab


def _wire_refresh(ctx: PageContext, tab: WorklistTab) -> None:
    """The table follows the filters, the Refresh button (api "refresh") and a 5 s timer."""

    @guarded("Refresh the worklist", quiet=True)
    def refresh_worklist(site: str, modality: str, status: str, request: gr.Request):
        return styled(worklist_rows(ctx.db, ctx.settings, username(request), site, modality, status))

    for control in tab.filters:
        control.change(refresh_worklist, inputs=tab.filters, outputs=tab.table, show_progress="hidden")
    tab.refresh.click(refresh_worklist, inputs=tab.filters, outputs=tab.table, api_name="refresh")
    gr.Timer(5).tick(refresh_worklist, inputs=tab.filters, outputs=tab.table, api_name="worklist",
                     show_progress="hidden")


def _wire_critical_alert(ctx: PageContext, tab: WorklistTab) -> None:
    """Every second: new study events refresh the table; a critical one is a warning that stays
    and a sound (the hidden critical count changes)."""

    @guarded("Watch for critical studies", quiet=True)
    def poll_events(last_id: int, count: float, site: str, modality: str, status: str,
                    request: gr.Request):
        events = events_since(ctx.db, last_id)
        if not events:
            return last_id, count, gr.skip()
        criticals = [e for e in events if e.kind == CRITICAL_FINDING
                     and visible_to(ctx.db, username(request), e.study_uid)]
        for event in criticals:   # the summary holds DICOM strings (accession): shown as text, never HTML
            summary = html.escape(str(event.payload.get("summary", event.study_uid)))
            gr.Warning(f"CRITICAL (AI, UNVERIFIED): {summary}", duration=None)
        return (events[-1].id, count + len(criticals),
                styled(worklist_rows(ctx.db, ctx.settings, username(request), site, modality, status)))

    gr.Timer(1).tick(poll_events, inputs=[tab.last_event, ctx.critical_count, *tab.filters],
                     outputs=[tab.last_event, ctx.critical_count, tab.table], api_name="events",
                     show_progress="hidden")
    ctx.critical_count.change(None, js="() => { window.rrBeep && window.rrBeep(); }")
