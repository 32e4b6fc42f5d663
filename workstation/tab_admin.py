"""The Admin tab (shown to administrators only): sites and their destinations, users, the report
delivery outbox (retry), dead-letter jobs and the audit log. Every action checks the role again."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from readingroom import auth
from readingroom.auth import user_role
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


USER_COLUMNS = ["User", "Role", "Sites", "State", "Created (UTC)"]


def user_rows(db: Database) -> list[list[Any]]:
    """The users table: one row per account (never a password hash)."""
    return [[u.username, u.role, ", ".join(u.sites) or "(none)", "disabled" if u.disabled else "active",
             u.created_at.isoformat(sep=" ", timespec="minutes")] for u in auth.list_users(db)]


@dataclass
class UsersPanel:
    """The Users section: the table, a new user, and changes to one user (admins only)."""

    table: gr.Dataframe
    new_user: gr.Textbox
    new_password: gr.Textbox
    new_role: gr.Dropdown
    new_sites: gr.Textbox
    add_user: gr.Button
    user: gr.Textbox
    sites: gr.Textbox
    set_sites: gr.Button
    password: gr.Textbox
    set_password: gr.Button
    disable: gr.Button
    enable: gr.Button


def build_users_panel() -> UsersPanel:
    """Lay out the Users section where it is called (inside the Admin tab)."""
    sites_hint = 'Sites, comma-separated ("*": every site; empty: none)'
    gr.Markdown("### Users")
    table = gr.Dataframe(headers=USER_COLUMNS, interactive=False, elem_id="rr-users")
    with gr.Row():
        new_user = gr.Textbox(label="New user", scale=2)
        new_password = gr.Textbox(label="Password (8 characters or more)", type="password", scale=2)
        new_role = gr.Dropdown(list(auth.ROLES), value="radiologist", label="Role", scale=1)
        new_sites = gr.Textbox(label=sites_hint, scale=2)
        add_user = gr.Button("Add user", scale=1)
    with gr.Row():
        user = gr.Textbox(label="Change user", scale=2)
        sites = gr.Textbox(label=sites_hint, scale=2)
        set_sites = gr.Button("Set sites", size="sm", scale=1)
        password = gr.Textbox(label="New password", type="password", scale=2)
        set_password = gr.Button("Set password", size="sm", scale=1)
        disable = gr.Button("Disable", size="sm", variant="stop", scale=1)
        enable = gr.Button("Enable", size="sm", scale=1)
    return UsersPanel(table=table, new_user=new_user, new_password=new_password, new_role=new_role,
                      new_sites=new_sites, add_user=add_user, user=user, sites=sites, set_sites=set_sites,
                      password=password, set_password=set_password, disable=disable, enable=enable)


@dataclass
class AdminTab:
    """The Admin tab's components; ``tab`` is shown when an administrator loads the page."""

    tab: gr.Tab
    sites_table: gr.Dataframe
    users: UsersPanel
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
        return [self.sites_table, self.users.table, self.outbox, self.dead]


def build_admin(ctx: PageContext) -> AdminTab:
    """Lay out the Admin tab (hidden until the page knows the user is an administrator) and wire it."""
    with ctx.tab("Admin", "admin", visible=False) as admin_tab:
        gr.Markdown("### Sites and destinations")
        sites_table = gr.Dataframe(headers=["Site", "AE titles", "HL7 (RIS)", "FHIR", "PACS (SR)", "PDF"],
                                   interactive=False)
        users = build_users_panel()
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
    tab = AdminTab(tab=admin_tab, sites_table=sites_table, users=users, outbox=outbox, retry_id=retry_id,
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


def _wire_admin(ctx: PageContext, tab: AdminTab) -> None:
    """The tables (on opening the tab and on Refresh), the users, Retry delivery, audit search."""
    db, settings, reports = ctx.db, ctx.settings, ctx.reports

    def admin_only(request: gr.Request, what: str) -> None:
        if user_role(db, username(request) or "") != "admin":
            raise Refused(f"Only an administrator may {what}. Log out and log in as an administrator.")

    def table_values(request: gr.Request):
        admin_only(request, "see the admin tables")
        return (_site_rows(settings), user_rows(db), delivery_rows(reports.delivery_status()),
                dead_job_rows(db, settings))

    admin_tables = guarded("Admin")(table_values)

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
    _wire_users(tab.users, tab.tables, db, settings, admin_only, table_values)


def _wire_users(panel: UsersPanel, tables: list[Any], db: Database, settings: Settings, admin_only: Any,
                table_values: Any) -> None:
    """Add a user, set sites, set a password, disable/enable: thin over readingroom.auth, admins only.
    Each refreshes the admin tables; the password boxes are emptied."""
    known = [site.name for site in settings.sites]

    def changed(request: gr.Request, message: str, clear: int = 0):
        gr.Info(message)
        return (*table_values(request), *([""] * clear))

    @guarded("Add user")
    def create_user(name: str, password: str, role: str, sites: str, request: gr.Request):
        admin_only(request, "add users")
        auth.add_user(db, name.strip(), password, role, auth.parse_sites(sites or ""), known_sites=known)
        return changed(request, f"User {name.strip()} ({role}) added.", clear=1)

    @guarded("Set sites")
    def set_sites(name: str, sites: str, request: gr.Request):
        admin_only(request, "change a user's sites")
        auth.set_sites(db, name.strip(), auth.parse_sites(sites or ""), known_sites=known)
        return changed(request, f"User {name.strip()}: sites {sites.strip() or '(none)'}.")

    @guarded("Set password")
    def set_password(name: str, password: str, request: gr.Request):
        admin_only(request, "set passwords")
        auth.set_password(db, name.strip(), password)
        return changed(request, f"New password for {name.strip()}; their sessions have ended.", clear=1)

    def switch(name: str, disabled: bool, request: gr.Request):
        admin_only(request, "disable or enable users")
        if disabled and name.strip() == username(request):
            raise Refused("You cannot disable your own account; ask another administrator.")
        auth.set_disabled(db, name.strip(), disabled=disabled)
        return changed(request, f"User {name.strip()} {'disabled' if disabled else 'enabled'}.")

    @guarded("Disable user")
    def disable_user(name: str, request: gr.Request):
        return switch(name, True, request)

    @guarded("Enable user")
    def enable_user(name: str, request: gr.Request):
        return switch(name, False, request)

    panel.add_user.click(create_user, inputs=[panel.new_user, panel.new_password, panel.new_role, panel.new_sites],
                         outputs=[*tables, panel.new_password])
    panel.set_sites.click(set_sites, inputs=[panel.user, panel.sites], outputs=tables)
    panel.set_password.click(set_password, inputs=[panel.user, panel.password], outputs=[*tables, panel.password])
    panel.disable.click(disable_user, inputs=panel.user, outputs=tables)
    panel.enable.click(enable_user, inputs=panel.user, outputs=tables)
