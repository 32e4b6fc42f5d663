"""The Admin tab (shown to administrators only): sites and their destinations, users, the report
delivery outbox (retry), dead-letter jobs and the audit log. Every action checks the role again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from readingroom.auth import ensure_user, user_role
from readingroom.db import Database
from readingroom.jobs import DatabaseJobQueue
from readingroom.settings import Settings
from workstation.page_context import PageContext, Refused, guarded, username
from workstation.signoff import AUDIT_COLUMNS, DELIVERY_COLUMNS, audit_rows, delivery_rows

log = logging.getLogger(__name__)


def dead_job_rows(db: Database, settings: Settings) -> list[list[Any]]:
    jobs = DatabaseJobQueue(db, settings.jobs).list(status="dead", limit=50)
    return [[j.id, j.kind, str(j.payload), j.attempts, ((j.last_error or "").strip().splitlines() or [""])[-1]]
            for j in jobs]


@dataclass
class AdminTab:
    """The Admin tab's components; ``tab`` is shown when an administrator loads the page."""

    tab: gr.Tab
    sites_table: gr.Dataframe
    users_table: gr.Dataframe
    new_user: gr.Textbox
    new_password: gr.Textbox
    new_role: gr.Dropdown
    add_user: gr.Button
    outbox: gr.Dataframe
    retry_id: gr.Number
    retry_btn: gr.Button
    dead: gr.Dataframe
    audit_user: gr.Textbox
    audit_action: gr.Textbox
    audit_study: gr.Textbox
    audit_btn: gr.Button
    audit_table: gr.Dataframe
    refresh: gr.Button

    @property
    def tables(self) -> list[Any]:
        """What admin_tables fills: sites, users, outbox, dead-letter jobs."""
        return [self.sites_table, self.users_table, self.outbox, self.dead]


def build_admin(ctx: PageContext) -> AdminTab:
    """Lay out the Admin tab (hidden until the page knows the user is an administrator) and wire it."""
    with ctx.tab("Admin", "admin", visible=False) as admin_tab:
        gr.Markdown("### Sites and destinations")
        sites_table = gr.Dataframe(headers=["Site", "AE titles", "HL7 (RIS)", "FHIR", "PACS (SR)", "PDF"],
                                   interactive=False)
        gr.Markdown("### Users")
        users_table = gr.Dataframe(headers=["User", "Role", "Sites"], interactive=False)
        with gr.Row():
            new_user = gr.Textbox(label="New user", scale=2)
            new_password = gr.Textbox(label="Password", type="password", scale=2)
            new_role = gr.Dropdown(["radiologist", "admin"], value="radiologist", label="Role", scale=1)
            add_user = gr.Button("Add user", scale=1)
        gr.Markdown("### Report delivery (outbox)")
        outbox = gr.Dataframe(headers=DELIVERY_COLUMNS, interactive=False, elem_id="rr-outbox")
        with gr.Row():
            retry_id = gr.Number(label="Outbox id to retry", precision=0, scale=1)
            retry_btn = gr.Button("Retry delivery", size="sm", scale=1)
        gr.Markdown("### Dead-letter jobs")
        dead = gr.Dataframe(headers=["Job", "Kind", "Payload", "Attempts", "Last error"], interactive=False)
        gr.Markdown("### Audit log")
        with gr.Row():
            audit_user = gr.Textbox(label="User", scale=1)
            audit_action = gr.Textbox(label="Action (view, edit, sign, override, communicate, export…)",
                                      scale=2)
            audit_study = gr.Textbox(label="Study UID", scale=2)
            audit_btn = gr.Button("Search", size="sm", scale=0)
        audit_table = gr.Dataframe(headers=AUDIT_COLUMNS, interactive=False, elem_id="rr-audit")
        refresh = gr.Button("Refresh", size="sm")
    tab = AdminTab(tab=admin_tab, sites_table=sites_table, users_table=users_table, new_user=new_user,
                   new_password=new_password, new_role=new_role, add_user=add_user, outbox=outbox, retry_id=retry_id,
                   retry_btn=retry_btn, dead=dead, audit_user=audit_user, audit_action=audit_action,
                   audit_study=audit_study, audit_btn=audit_btn, audit_table=audit_table, refresh=refresh)
    _wire_admin(ctx, tab)
    return tab


def _site_rows(settings: Settings) -> list[list[Any]]:
    sites = []
    for s in settings.sites:
        d = s.destinations
        sites.append([s.name, ", ".join(s.ae_titles), f"{d.hl7.host}:{d.hl7.port}" if d.hl7 else "",
                      d.fhir_url or d.fhir_folder, f"{d.dicom.ae_title}@{d.dicom.host}:{d.dicom.port}"
                      if d.dicom else "", d.pdf_folder])
    return sites


def _user_rows(db: Database) -> list[list[Any]]:
    from sqlalchemy import select

    from readingroom.schema import User

    with db.reader() as session:
        return [[u.username, u.role, ", ".join(u.sites or [])]
                for u in session.scalars(select(User).order_by(User.username))]


def _wire_admin(ctx: PageContext, tab: AdminTab) -> None:
    """The tables (on opening the tab and on Refresh), Add user, Retry delivery, audit search."""
    db, settings, reports = ctx.db, ctx.settings, ctx.reports

    def admin_only(request: gr.Request, what: str) -> None:
        if user_role(db, username(request) or "") != "admin":
            raise Refused(f"Only an administrator may {what}. Log out and log in as an administrator.")

    @guarded("Admin")
    def admin_tables(request: gr.Request):
        admin_only(request, "see the admin tables")
        return (_site_rows(settings), _user_rows(db), delivery_rows(reports.delivery_status()),
                dead_job_rows(db, settings))

    @guarded("Add user")
    def create_user(name: str, password: str, role: str, request: gr.Request):
        admin_only(request, "add users")
        if not name.strip() or len(password) < 8:
            raise Refused("Give a user name and a password of at least 8 characters.")
        if not ensure_user(db, name.strip(), password, role=role):
            raise Refused(f"User {name} exists already; choose another name.")
        gr.Info(f"User {name} ({role}) added.")
        return admin_tables(request)

    @guarded("Retry delivery")
    def retry_delivery(outbox_id: float | None, request: gr.Request):
        admin_only(request, "retry deliveries")
        if not outbox_id:
            raise Refused("Give the outbox id of a failed delivery (the first column of the outbox table).")
        reports.retry_delivery(int(outbox_id), username(request) or "unknown")
        return admin_tables(request)

    @guarded("Search the audit log")
    def search_audit(user: str, action: str, study: str, request: gr.Request):
        admin_only(request, "search the audit log")
        return audit_rows(reports.audit(user=user.strip() or None, action=action.strip() or None,
                                        study_uid=study.strip() or None))

    tab.retry_btn.click(retry_delivery, inputs=tab.retry_id, outputs=tab.tables)
    tab.audit_btn.click(search_audit, inputs=[tab.audit_user, tab.audit_action, tab.audit_study],
                        outputs=tab.audit_table)
    tab.tab.select(admin_tables, outputs=tab.tables)
    tab.refresh.click(admin_tables, outputs=tab.tables)
    tab.add_user.click(create_user, inputs=[tab.new_user, tab.new_password, tab.new_role], outputs=tab.tables)
