"""The workstation page (Gradio Blocks): the header and five tabs, one module each.

    workstation/tab_worklist.py   Worklist: the studies in reading order, the critical-study alert
    workstation/tab_reading.py    Reading: viewer, dictation and report, checks and sign-off
    workstation/tab_requests.py   Requests: order review (approve with a protocol, reject, ask)
    workstation/tab_lab.py        Lab: model evaluation and the night-shift simulation
    workstation/tab_admin.py      Admin: sites, users, delivery outbox, dead jobs, audit log

Here the page is assembled: one PageContext (workstation/page_context.py) with what the tabs
share, each tab's ``build_<tab>(ctx)``, and the page load that fills several tabs at once.
Callbacks are thin: they call the plain Python APIs of triage/, orders/, reporting/, dictation/
and models/ and turn the results into components.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.auth import user_role
from readingroom.db import Database
from readingroom.jobs import DatabaseJobQueue
from readingroom.settings import Settings
from reporting.lifecycle import ReportService
from triage.notify import latest_event_id
from workstation.page_context import PageContext, guarded, username
from workstation.tab_admin import AdminTab, build_admin
from workstation.tab_lab import build_lab
from workstation.tab_reading import build_reading
from workstation.tab_requests import RequestsTab, build_requests
from workstation.tab_worklist import WorklistTab, build_worklist, styled, worklist_rows

log = logging.getLogger(__name__)

__all__ = ["STATIC", "build_blocks", "head_html"]

STATIC = Path(__file__).resolve().parent / "static"


def head_html() -> str:
    """Script and style for the page head (the viewer, hotkeys, the critical-study sound)."""
    return (f"<style>{(STATIC / 'workstation.css').read_text()}</style>\n"
            f"<script>{(STATIC / 'viewer.js').read_text()}</script>")


def build_blocks(settings: Settings, db: Database, queue: Any = None,
                 wake: Any = None) -> gr.Blocks:
    """The page. ``queue`` and ``wake`` (the worker pool's) let signed reports and order notices
    go out at once; without them a queue on the same database is used and the workers poll."""
    queue = queue or DatabaseJobQueue(db, settings.jobs)
    reports = ReportService(db, settings, queue, wake=wake)

    with gr.Blocks(title="ReadingRoom", analytics_enabled=False, fill_width=True) as blocks:
        with gr.Row(elem_id="rr-header"):
            gr.Markdown(f"**ReadingRoom** · {NOT_FOR_CLINICAL_USE}", elem_id="banner")
            who = gr.Markdown("", elem_id="rr-user")
        ctx = PageContext(settings=settings, db=db, queue=queue, wake=wake, reports=reports, blocks=blocks,
                          open_uid=gr.State(""), live=gr.State(None),
                          critical_count=gr.Number(0, visible=False, elem_id="rr-critical-count"),
                          tabs=gr.Tabs(selected="worklist"))   # each build_<tab> adds its tab (ctx.tab)
        worklist = build_worklist(ctx)
        build_reading(ctx, worklist.table)
        requests = build_requests(ctx)
        build_lab(ctx)
        admin = build_admin(ctx)
        _wire_page_load(ctx, who, worklist, requests, admin)
    return blocks


def _wire_page_load(ctx: PageContext, who: gr.Markdown, worklist: WorklistTab, requests: RequestsTab,
                    admin: AdminTab) -> None:
    """One round trip when the page loads: who is logged in, the Admin tab for an administrator,
    the worklist and the requests."""

    @guarded("Load the page")
    def page_load(request: gr.Request):
        user = username(request)
        role = user_role(ctx.db, user) if user else None
        return (f"{html.escape(user or '')} ({role}) · [Log out](/logout)", gr.update(visible=role == "admin"),
                latest_event_id(ctx.db), styled(worklist_rows(ctx.db, ctx.settings, user)),
                requests.list_requests("new", request))

    ctx.blocks.load(page_load, outputs=[who, admin.tab, worklist.last_event, worklist.table, requests.table])
