"""The workstation page (Gradio Blocks): Worklist, Reading (viewer + dictation + report), Lab, Admin.

Callbacks are thin: they call the plain Python APIs of triage/, dictation/ and models/ and turn
the results into components. The viewer itself runs in the browser (workstation/static/viewer.js)
on the routes of workstation/web.py; here it is one HTML block that names the open study.
"""

from __future__ import annotations

import functools
import html
import logging
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from workstation.live import REGISTRY, LiveDictation   # module level too: callbacks are annotated with it

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.db import Database
from readingroom.settings import Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
WORKLIST_COLUMNS = ["#", "Priority", "SLA", "Status", "Modality", "Site", "Patient", "Accession", "Description",
                    "Images", "Received (UTC)", "AI (UNVERIFIED)", "Reason", "Study UID"]
# The worklist's status filter, (label, value): open studies by default; signed ones on request
# (to add an addendum); one open status; or everything.
STATUS_CHOICES = [("open", ""), ("new", "new"), ("triaged", "triaged"), ("in progress", "in_progress"),
                  ("receiving", "receiving"), ("preliminary", "preliminary"), ("signed (final)", "final"),
                  ("all", "all")]
SIGNED_STUDY_STATUSES = ("final",)
# Template suggested for a study, by modality and words of its description.
TEMPLATE_RULES = [("CT", ("HEAD", "BRAIN", "CRANI"), "ct_head"), ("CT", ("ABD", "PELV"), "ct_abdomen_pelvis"),
                  ("CR", ("CHEST", "THORAX", "LUNG"), "chest_radiograph"),
                  ("DX", ("CHEST", "THORAX", "LUNG"), "chest_radiograph")]


class Refused(Exception):
    """A page action that cannot be done now; the message says what to do on the page."""


def guarded(action: str, quiet: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a page callback so that it never raises into Gradio (which marks every output with a
    bare "Error" badge): a refusal or a ReadingRoom error becomes a warning that says what to do
    (without command lines), an unexpected error is logged and said so, and the outputs stay.
    ``quiet`` (the timers, every few seconds): logged only, never a toast each tick."""
    from readingroom.errors import ReadingRoomError
    from workstation.signoff import page_message

    def warn(message: str, title: str) -> None:
        if quiet:
            log.warning("page refresh %r: %s", action, message)
        else:
            gr.Warning(message, title=title)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)   # Gradio reads the wrapped signature (gr.Request, gr.SelectData...)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Refused as exc:
                warn(str(exc), action)
            except ReadingRoomError as exc:
                warn(page_message(str(exc)), f"{action}: not done")
            except Exception:  # the page keeps working; the traceback is in the log
                log.exception("page action %r failed", action)
                warn(f"{action} did not work because of a problem in ReadingRoom; it is written in the log. "
                     "Try again, and if it fails again, tell your administrator.", f"{action}: not done")
            return gr.skip()
        return inner
    return wrap


def head_html() -> str:
    """Script and style for the page head (the viewer, hotkeys, the critical-study sound)."""
    return (f"<style>{(STATIC / 'workstation.css').read_text()}</style>\n"
            f"<script>{(STATIC / 'viewer.js').read_text()}</script>")


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
    from triage.worklist import OPEN_STATUSES

    if status == "all":
        return (*OPEN_STATUSES, *SIGNED_STUDY_STATUSES), None
    if status in SIGNED_STUDY_STATUSES:
        return SIGNED_STUDY_STATUSES, None
    return OPEN_STATUSES, status or None


def worklist_rows(db: Database, settings: Settings, user: str | None = None, site: str = "", modality: str = "",
                  status: str = "") -> list[list[Any]]:
    from triage.worklist import Filters, open_studies

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


def dead_job_rows(db: Database, settings: Settings) -> list[list[Any]]:
    from readingroom.jobs import DatabaseJobQueue

    jobs = DatabaseJobQueue(db, settings.jobs).list(status="dead", limit=50)
    return [[j.id, j.kind, str(j.payload), j.attempts, ((j.last_error or "").strip().splitlines() or [""])[-1]]
            for j in jobs]


def suggest_template(modality: str, description: str, available: list[str]) -> str:
    words = (description or "").upper()
    for mod, keys, name in TEMPLATE_RULES:
        if mod in (modality or "").split("/") and any(k in words for k in keys) and name in available:
            return name
    return "free"


def viewer_html(study_uid: str | None) -> str:
    """The viewer's markup; viewer.js fills it in for ``data-study``."""
    if not study_uid:
        return '<div id="rr-viewer-empty">Open a study from the worklist.</div>'
    presets = "".join(f'<button type="button" class="rr-preset" data-preset="{p}" title="key {i}">{p}</button>'
                      for i, p in enumerate(["brain", "subdural", "stroke", "bone", "lung", "mediastinum",
                                             "abdomen", "liver"], 1))
    return f"""
<div id="rr-viewer" data-study="{html.escape(study_uid)}">
  <div class="rr-main">
    <div class="rr-toolbar">{presets}
      <label>L <input id="rr-wc" type="number" step="1"></label><label>W <input id="rr-ww" type="number" step="1"></label>
      <button type="button" id="rr-apply-wl">Apply W/L</button><button type="button" id="rr-invert">Invert</button>
      <button type="button" id="rr-zoom-in">Zoom +</button><button type="button" id="rr-zoom-out">Zoom −</button>
      <button type="button" id="rr-reset">Reset</button>
      <span id="rr-ai-controls" style="display:none"><label><input type="checkbox" id="rr-ai-toggle" checked>
        AI heatmap (UNVERIFIED)</label> <input type="range" id="rr-ai-opacity" min="0" max="1" step="0.05" value="0.5"></span>
    </div>
    <div id="rr-stage"><div id="rr-transform"><img id="rr-image" alt="slice"><img id="rr-overlay" alt=""
      style="display:none"></div></div>
    <input type="range" id="rr-slice" min="0" max="0" value="0" aria-label="slice">
    <div id="rr-status">Loading…</div>
  </div>
  <div class="rr-side">
    <h4>Series</h4><div id="rr-series-list"></div>
    <h4>Order and patient</h4><div id="rr-info"></div>
    <h4>AI triage <span class="rr-unverified">UNVERIFIED</span></h4><div id="rr-ai"></div>
    <h4>Key tags</h4><div id="rr-tags"></div>
    <h4>Prior studies</h4><div id="rr-priors"></div>
  </div>
</div>"""


def build_blocks(settings: Settings, db: Database, queue: Any = None,  # one page, wired in one place
                 wake: Any = None) -> gr.Blocks:
    """The page. ``queue`` and ``wake`` (the worker pool's) let signed reports and order notices
    go out at once; without them a queue on the same database is used and the workers poll."""
    from reporting.lifecycle import METHODS, ChecksNotResolved, ReportService
    from reporting.report import SECTION_ORDER, SECTION_TITLES, list_templates
    from readingroom.settings import DictationSettings
    from readingroom.auth import user_role
    from readingroom.errors import ReadingRoomError
    from readingroom.jobs import DatabaseJobQueue
    import orders as order_api
    from triage.notify import CRITICAL_FINDING, events_since, latest_event_id
    from orders.protocols import load_library
    from triage.worklist import claim
    from reporting.delivery.outbox import delivery_summary, report_site, sign_message, sites_file_label
    from workstation.signoff import (
        AUDIT_COLUMNS, DELIVERY_COLUMNS, ORDER_COLUMNS, audit_rows, checks_markdown, delivery_rows, is_read_only,
        issue_choices, order_markdown, order_rows, page_message, reading_header, signed_markdown,
    )

    queue = queue or DatabaseJobQueue(db, settings.jobs)
    reports = ReportService(db, settings, queue, wake=wake)

    dictation_settings = DictationSettings.from_mapping(settings.dictation)
    templates = ["free", *[t for t in list_templates(dictation_settings.templates_dir) if t != "free"]]
    site_names = [""] + [s.name for s in settings.sites]

    def username(request: gr.Request | None) -> str | None:
        return getattr(request, "username", None) if request is not None else None

    with gr.Blocks(title="ReadingRoom", analytics_enabled=False, fill_width=True) as blocks:
        with gr.Row(elem_id="rr-header"):
            gr.Markdown(f"**ReadingRoom** · {NOT_FOR_CLINICAL_USE}", elem_id="banner")
            who = gr.Markdown("", elem_id="rr-user")
        open_uid = gr.State("")
        live = gr.State(None)
        critical_count = gr.Number(0, visible=False, elem_id="rr-critical-count")

        with gr.Tabs(selected="worklist") as tabs:
            # ---------------------------------------------------------------- worklist
            with gr.Tab("Worklist", id="worklist"):
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
            # ---------------------------------------------------------------- reading
            with gr.Tab("Reading", id="reading"):
                with gr.Row():
                    with gr.Column(scale=3):
                        viewer = gr.HTML(viewer_html(None), elem_id="rr-viewer-block")
                    with gr.Column(scale=2, elem_id="rr-report"):
                        opened = gr.Markdown("No study open.", elem_id="rr-opened")
                        with gr.Row():
                            template = gr.Dropdown(templates, value="free", label="Template", scale=2,
                                                   elem_id="rr-template")
                            normal = gr.Button("Insert normal", size="sm", scale=1)
                        gr.HTML('<button type="button" id="rr-record" data-recording="0">● Record (F4)</button>'
                                '<span class="rr-hint">Say "next field", "go to impression", "scratch that"…</span>',
                                elem_id="rr-mic")
                        partial = gr.Markdown("", elem_id="rr-partial")
                        feedback = gr.Markdown("", elem_id="rr-command")
                        boxes = {s: gr.Textbox(label=SECTION_TITLES[s], lines=3 if s in ("findings", "impression") else 1,
                                               max_lines=20, elem_id=f"rr-section-{s}", interactive=True)
                                 for s in SECTION_ORDER}
                        autosaved = gr.Markdown("", elem_id="rr-autosave")
                        with gr.Group(elem_id="rr-signoff"):
                            gr.Markdown("#### Checks and sign-off")
                            with gr.Row():
                                check_btn = gr.Button("Run checks", size="sm", elem_id="rr-check")
                                sign_prelim = gr.Button("Sign preliminary", size="sm", elem_id="rr-sign-prelim")
                                sign_final = gr.Button("Sign final", size="sm", variant="primary",
                                                       elem_id="rr-sign-final")
                            checks_md = gr.Markdown("", elem_id="rr-checks")
                            with gr.Row():
                                issue_key = gr.Dropdown([], label="Open issue", scale=2, elem_id="rr-issue")
                                issue_note = gr.Textbox(label="Reason (override) or note (acknowledge)", scale=3)
                                override_btn = gr.Button("Override", size="sm", scale=1)
                                ack_btn = gr.Button("Acknowledge", size="sm", scale=1)
                            with gr.Accordion("Critical-result communication", open=False):
                                with gr.Row():
                                    comm_recipient = gr.Textbox(label="Recipient (name, role)", scale=3)
                                    comm_method = gr.Dropdown(list(METHODS), value="phone", label="Method", scale=2)
                                    comm_readback = gr.Checkbox(label="Read back", value=True, scale=1)
                                comm_finding = gr.Textbox(label="Finding communicated")
                                comm_btn = gr.Button("Record communication", size="sm")
                            signed_md = gr.Markdown("", elem_id="rr-signed")
                            with gr.Row():
                                addendum_text = gr.Textbox(label="Addendum (to a final report)", scale=4,
                                                           elem_id="rr-addendum", interactive=False,
                                                           placeholder="An addendum follows a final report.")
                                addendum_btn = gr.Button("Sign addendum", size="sm", scale=1, interactive=False,
                                                         elem_id="rr-sign-addendum")
                            delivery_md = gr.Markdown("", elem_id="rr-delivery-note")
                            delivery = gr.Dataframe(headers=DELIVERY_COLUMNS, interactive=False, elem_id="rr-delivery",
                                                    label="Delivery to the site")
            # ---------------------------------------------------------------- requests
            with gr.Tab("Requests", id="requests"):
                gr.Markdown("### Requests waiting for review\nApprove with a protocol (the order joins the "
                            "modality worklist), reject with a reason (the site's RIS is told), or ask a question.")
                with gr.Row():
                    order_status = gr.Dropdown(["new", "question", "approved", "rejected", "cancelled", ""],
                                               value="new", label="Status", scale=1)
                    orders_refresh = gr.Button("Refresh", size="sm", scale=0)
                orders_table = gr.Dataframe(headers=ORDER_COLUMNS, interactive=False, elem_id="rr-orders")
                order_acc = gr.State("")
                order_md = gr.Markdown("Click a request to review it.", elem_id="rr-order")
                with gr.Row():
                    protocol = gr.Dropdown([], label="Protocol", scale=2, elem_id="rr-protocol")
                    approve_btn = gr.Button("Approve", variant="primary", size="sm", scale=1)
                with gr.Row():
                    review_text = gr.Textbox(label="Reason (reject) or question (ask)", scale=3)
                    reject_btn = gr.Button("Reject", size="sm", scale=1)
                    ask_btn = gr.Button("Ask", size="sm", scale=1)
            # ---------------------------------------------------------------- lab
            with gr.Tab("Lab", id="lab"):
                from models.registry import WEIGHTS_DIR, all_models, load_config
                from readingroom.settings import PROJECT_ROOT
                from triage.simulator.engine import shipped_scenarios
                from workstation.lab import (
                    SAMPLE_STUDIES, data_for_model, evaluate_folder, evaluation_inputs, make_sample, model_task,
                )

                model_config = load_config(settings.config_dir / settings.models.file)
                model_names = [c.name for c in all_models(WEIGHTS_DIR, model_config, PROJECT_ROOT)]
                gr.Markdown("### Model evaluation\nScore a triage model on a folder of DICOM studies with a "
                            "labels CSV (the phantom format; docs/models.md). No folder yet? *Make a sample "
                            "set* writes synthetic studies for the chosen model. Results are UNVERIFIED.")
                with gr.Row():
                    eval_model = gr.Dropdown(model_names, value=(model_names or [None])[0], label="Model", scale=1)
                    # Filled when the page loads, and only with a folder that exists (workstation/lab.py).
                    eval_data = gr.Textbox(label="Data folder", scale=2, elem_id="rr-eval-data",
                                           placeholder="a folder of DICOM studies with labels.csv, "
                                                       "or press Make a sample set")
                    eval_labels = gr.Textbox(label="Labels CSV (default: labels.csv in the folder)", scale=2)
                    with gr.Column(scale=0, min_width=200):
                        evaluate_btn = gr.Button("Run evaluation", variant="primary")
                        sample_btn = gr.Button(f"Make a sample set ({SAMPLE_STUDIES} studies)", size="sm",
                                               elem_id="rr-eval-sample")
                sample_md = gr.Markdown("", elem_id="rr-eval-sample-note")
                eval_table = gr.Markdown(elem_id="rr-eval-table")
                eval_plots = gr.Gallery(label="ROC, calibration and confusion plots", columns=3, height=360,
                                        elem_id="rr-eval-plots")

                gr.Markdown("### Night-shift simulation\nWhat a triage policy does to report turnaround "
                            "(RTAT) per finding. Simulated studies; see docs/simulation.md.")
                with gr.Row():
                    scenario = gr.Dropdown(shipped_scenarios(), value=(shipped_scenarios() or [None])[0],
                                           label="Scenario")
                    seeds = gr.Slider(1, 20, value=5, step=1, label="Seeds")
                    simulate = gr.Button("Run simulation", variant="primary")
                sim_table = gr.Markdown(elem_id="rr-sim-table")
                sim_plots = gr.Gallery(label="RTAT charts", columns=2, height=420, elem_id="rr-sim-plots")
            # ---------------------------------------------------------------- admin
            with gr.Tab("Admin", id="admin", visible=False) as admin_tab:
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
                admin_refresh = gr.Button("Refresh", size="sm")

        # ===================================================================== callbacks
        @guarded("Load the page")
        def page_load(request: gr.Request):  # one round trip: who, tabs and the worklist
            user = username(request)
            role = user_role(db, user) if user else None
            return (f"{html.escape(user or '')} ({role}) · [Log out](/logout)", gr.update(visible=role == "admin"),
                    latest_event_id(db), styled(worklist_rows(db, settings, user)), list_requests("new"))

        @guarded("Refresh the worklist", quiet=True)
        def refresh_worklist(site: str, modality: str, status: str, request: gr.Request):
            return styled(worklist_rows(db, settings, username(request), site, modality, status))

        filters = [f_site, f_modality, f_status]
        last_event = gr.State(0)
        blocks.load(page_load, outputs=[who, admin_tab, last_event, table, orders_table])
        for control in filters:
            control.change(refresh_worklist, inputs=filters, outputs=table, show_progress="hidden")
        refresh.click(refresh_worklist, inputs=filters, outputs=table, api_name="refresh")
        gr.Timer(5).tick(refresh_worklist, inputs=filters, outputs=table, api_name="worklist", show_progress="hidden")

        @guarded("Watch for critical studies", quiet=True)
        def poll_events(last_id: int, count: float, site: str, modality: str, status: str,
                        request: gr.Request):
            events = events_since(db, last_id)
            if not events:
                return last_id, count, gr.skip()
            criticals = [e for e in events if e.kind == CRITICAL_FINDING]
            for event in criticals:
                gr.Warning(f"CRITICAL (AI, UNVERIFIED): {event.payload.get('summary', event.study_uid)}", duration=None)
            return (events[-1].id, count + len(criticals),
                    styled(worklist_rows(db, settings, username(request), site, modality, status)))

        gr.Timer(1).tick(poll_events, inputs=[last_event, critical_count, *filters],
                         outputs=[last_event, critical_count, table], api_name="events", show_progress="hidden")
        critical_count.change(None, js="() => { window.rrBeep && window.rrBeep(); }")

        # ---- open a study: claim it, show it, start a report with the suggested template
        sites_file = sites_file_label(settings)

        def _label(section: str, session: LiveDictation | None) -> str:
            title = SECTION_TITLES[section]
            if session is not None and session.read_only:
                return f"{title} (signed, read-only)"
            return f"{title} (dictating here)" if session and session.active_section == section else title

        section_boxes = [boxes[s] for s in SECTION_ORDER]
        # What a signed final report locks (the report) and unlocks (the addendum).
        lock_outputs = [template, normal, sign_prelim, sign_final, addendum_text, addendum_btn, *section_boxes]

        def lock_updates(session: LiveDictation, view, with_text: bool = False) -> list[Any]:
            editable, signed = not is_read_only(view), is_read_only(view)
            session.read_only = signed
            texts = session.display_sections()
            boxes_out = [gr.update(value=texts[s], label=_label(s, session), interactive=editable) if with_text
                         else gr.update(label=_label(s, session), interactive=editable) for s in SECTION_ORDER]
            return [gr.update(value=view.template, interactive=editable), *[gr.update(interactive=editable)] * 3,
                    gr.update(interactive=signed), gr.update(interactive=signed), *boxes_out]

        def delivery_note(view) -> str:
            if not view.versions:
                return ""
            rows = reports.delivery_status(report_id=view.id)
            return delivery_summary(report_site(db, view.id), view.versions[-1].number, rows, sites_file)

        @guarded("Open the study")
        def open_study(evt: gr.SelectData, request: gr.Request):
            row = evt.row_value if evt.row_value is not None else []
            uid = row[-1] if row else ""
            user = username(request) or "unknown"
            if not uid:
                return gr.skip()
            until = claim(db, settings, uid, user)
            view = reports.create(uid, user, template=suggest_template(row[4], row[8], templates))
            session = LiveDictation(view.template, dictation_settings, sections=view.sections, fields=view.fields)
            session.report_id, session.revision = view.id, view.revision
            session.study_line = (f"**{html.escape(str(row[6]))}** · {html.escape(str(row[8]))} · accession "
                                  f"{html.escape(str(row[7]))} · claimed by {html.escape(user)} until "
                                  f"{until:%H:%M} UTC")
            REGISTRY.put(user, uid, session)
            locks = lock_updates(session, view, with_text=True)
            return (uid, viewer_html(uid), reading_header(session.study_line, view), gr.Tabs(selected="reading"),
                    session, "", gr.update(choices=[], value=None), signed_markdown(view), delivery_note(view),
                    delivery_rows(reports.delivery_status(report_id=view.id)), *locks)

        table.select(open_study, outputs=[open_uid, viewer, opened, tabs, live, checks_md, issue_key, signed_md,
                                          delivery_md, delivery, *lock_outputs])

        def report_updates(session: LiveDictation):
            texts = session.display_sections()
            return [gr.update(value=texts[s], label=_label(s, session)) for s in SECTION_ORDER]

        @guarded("Change the template")
        def change_template(name: str, session: LiveDictation | None, uid: str,
                            request: gr.Request):
            if not uid or session is None or session.report_id is None or session.read_only:
                return gr.skip()
            user = username(request) or "unknown"
            flush(session, user)
            view = reports.change_template(session.report_id, user, name)
            fresh = LiveDictation(view.template, dictation_settings, sections=view.sections, fields=view.fields)
            fresh.report_id, fresh.revision, fresh.study_line = view.id, view.revision, session.study_line
            REGISTRY.put(user, uid, fresh)
            return fresh, *report_updates(fresh)

        template.input(change_template, inputs=[template, live, open_uid], outputs=[live, *section_boxes])

        @guarded("Insert normal")
        def insert_normal(session: LiveDictation | None):
            if session is None or session.read_only:
                return gr.skip()
            session.insert_normal()
            return report_updates(session)

        normal.click(insert_normal, inputs=live, outputs=section_boxes)

        def typed(section: str):
            @guarded("Edit the report")
            def handler(text: str, session: LiveDictation | None):
                if session is not None and not session.read_only:
                    text = session.typed_text(section, text)
                    if text is None:                          # the box holds what was shown
                        return
                    session.edit(section, text)
                    session.goto(section)
                    # what the page shows now: the poll must not write it back over the typing
                    session.shown = (*(session.shown or ("", ""))[:2], session.view_key())
            return handler

        for s in SECTION_ORDER:   # typing, and (for pasted or scripted text) leaving the box
            boxes[s].input(typed(s), inputs=[boxes[s], live], show_progress="hidden")
            boxes[s].blur(typed(s), inputs=[boxes[s], live], show_progress="hidden")

        # ---- dictation: microphone chunks stream in; partials, commands and text stream out
        def feedback_text(session: LiveDictation) -> tuple[str, str]:
            fb = session.feedback
            partial_text = f"Hearing: *{html.escape(fb.partial)}*" if fb.partial else ""
            command = f"Command: **{html.escape(fb.commands[-1])}**" if fb.commands else ""
            return partial_text, command

        dictation_outputs = [live, partial, feedback, *section_boxes]

        @guarded("Show the dictation", quiet=True)
        def poll_dictation(session: LiveDictation | None):
            if session is None:
                return gr.skip(), gr.skip(), gr.skip(), *[gr.skip()] * len(SECTION_ORDER)
            session.poll()
            partial_text, command = feedback_text(session)
            shown = (partial_text, command, session.view_key())
            if shown == session.shown:        # nothing new: leave the page (and any typing) alone
                return gr.skip(), gr.skip(), gr.skip(), *[gr.skip()] * len(SECTION_ORDER)
            report_changed = shown[2] != (session.shown or ("", "", ""))[2]
            session.shown = shown
            boxes_out = report_updates(session) if report_changed else [gr.skip()] * len(SECTION_ORDER)
            return gr.skip(), partial_text, command, *boxes_out

        gr.Timer(0.3).tick(poll_dictation, inputs=live, outputs=dictation_outputs, show_progress="hidden")

        # ---- drafts autosave; checks; sign-off; delivery
        @guarded("Save the draft", quiet=True)
        def autosave(session: LiveDictation | None, request: gr.Request):
            if session is None or session.report_id is None or session.read_only:
                return gr.skip()
            key = session.content_key()
            if key == session.saved_key:
                return gr.skip()
            try:
                view = reports.save_draft(session.report_id, username(request) or "unknown",
                                          report=session.session.report, revision=session.revision)
            except ReadingRoomError as exc:
                return f"Not saved: {html.escape(page_message(str(exc)))}"
            session.revision, session.saved_key = view.revision, key
            return f"Draft saved {time.strftime('%H:%M:%S')} (revision {view.revision})"

        gr.Timer(2).tick(autosave, inputs=live, outputs=autosaved, show_progress="hidden")

        def flush(session: LiveDictation, user: str) -> None:
            if not session.read_only and session.content_key() != session.saved_key:
                view = reports.save_draft(session.report_id, user, report=session.session.report,
                                          revision=session.revision)
                session.revision, session.saved_key = view.revision, session.content_key()

        def open_first(session: LiveDictation | None) -> LiveDictation:
            if session is None or session.report_id is None:
                raise Refused("Open a study from the worklist first.")
            return session

        def checks_outputs(results: list[Any]) -> tuple[str, Any]:
            choices = issue_choices(results)
            return checks_markdown(results), gr.update(choices=choices, value=choices[0][1] if choices else None)

        def checks_now(session: LiveDictation, request: gr.Request) -> tuple[str, Any]:
            flush(session, username(request) or "unknown")
            return checks_outputs(reports.run_checks(session.report_id))

        @guarded("Run the checks")
        def run_checks(session: LiveDictation | None, request: gr.Request):
            return checks_now(open_first(session), request)

        check_btn.click(run_checks, inputs=live, outputs=[checks_md, issue_key])

        def resolve(kind: str):
            @guarded("Override" if kind == "override" else "Acknowledge")
            def handler(session: LiveDictation | None, key: str | None, note: str, request: gr.Request):
                if session is None or session.report_id is None or not key:
                    raise Refused("Press Run checks, then choose an open issue in the list.")
                action = reports.override if kind == "override" else reports.acknowledge
                action(session.report_id, key, username(request) or "unknown", note)
                return checks_now(session, request)
            return handler

        override_btn.click(resolve("override"), inputs=[live, issue_key, issue_note], outputs=[checks_md, issue_key])
        ack_btn.click(resolve("acknowledge"), inputs=[live, issue_key, issue_note], outputs=[checks_md, issue_key])

        @guarded("Record the communication")
        def communicate(session: LiveDictation | None, recipient: str, method: str, read_back: bool, finding: str,
                        request: gr.Request):
            done = reports.record_communication(open_first(session).report_id, username(request) or "unknown",
                                                recipient=recipient, method=method, read_back=read_back,
                                                finding=finding)
            gr.Info(done["statement"])
            return checks_now(session, request)

        comm_btn.click(communicate, inputs=[live, comm_recipient, comm_method, comm_readback, comm_finding],
                       outputs=[checks_md, issue_key])

        def signed_outputs(session: LiveDictation, version) -> tuple[Any, ...]:
            """After a signature: what was signed, where it goes, the header, and the locks."""
            view = reports.get(session.report_id)
            rows = reports.delivery_status(report_id=view.id)
            gr.Info(sign_message(version.status, version.number, report_site(db, view.id), rows, sites_file),
                    title="Signed")
            return (signed_markdown(view), delivery_note(view), delivery_rows(rows),
                    reading_header(session.study_line, view), *lock_updates(session, view))

        def sign(final: bool):
            @guarded("Sign final" if final else "Sign preliminary")
            def handler(session: LiveDictation | None, request: gr.Request):
                session, user = open_first(session), username(request) or "unknown"
                try:
                    flush(session, user)
                    version = reports.sign(session.report_id, user, final=final)
                except ChecksNotResolved:
                    gr.Warning("Not signed: resolve the open issues listed under Checks and sign-off first.",
                               title="Not signed")
                    return *checks_now(session, request), *[gr.skip()] * (4 + len(lock_outputs))
                return "**Signed.**", gr.update(choices=[], value=None), *signed_outputs(session, version)
            return handler

        after_sign = [signed_md, delivery_md, delivery, opened, *lock_outputs]
        sign_prelim.click(sign(False), inputs=live, outputs=[checks_md, issue_key, *after_sign])
        sign_final.click(sign(True), inputs=live, outputs=[checks_md, issue_key, *after_sign])

        @guarded("Sign the addendum")
        def add_addendum(session: LiveDictation | None, text: str, request: gr.Request):
            session = open_first(session)
            version = reports.addendum(session.report_id, username(request) or "unknown", text)
            return "", *signed_outputs(session, version)

        addendum_btn.click(add_addendum, inputs=[live, addendum_text], outputs=[addendum_text, *after_sign])

        @guarded("Show the delivery", quiet=True)
        def refresh_delivery(session: LiveDictation | None):
            if session is None or session.report_id is None:
                return gr.skip()
            view = reports.get(session.report_id)
            return delivery_note(view), delivery_rows(reports.delivery_status(report_id=session.report_id))

        gr.Timer(3).tick(refresh_delivery, inputs=live, outputs=[delivery_md, delivery], show_progress="hidden")

        # ---- requests (orders): review, protocol, approve / reject / ask
        protocol_names = sorted(load_library(settings).protocols)

        @guarded("List the requests")
        def list_requests(status: str):
            return order_rows(order_api.list_orders(db, status=status or None))

        @guarded("Open the request")
        def pick_request(evt: gr.SelectData):
            row = evt.row_value if evt.row_value is not None else []
            if not row:
                return gr.skip(), gr.skip(), gr.skip()
            order = order_api.get_order(db, str(row[0]), settings)
            suggestion = (order.get("suggestion") or {}).get("name")
            chosen = order.get("protocol_name") or suggestion
            return (str(row[0]), order_markdown(order),
                    gr.update(choices=protocol_names, value=chosen if chosen in protocol_names else None))

        def review(kind: str):
            @guarded({"approve": "Approve", "reject": "Reject", "ask": "Ask"}[kind])
            def handler(accession: str, protocol_name: str | None, text: str, status: str,
                        request: gr.Request):
                if not accession:
                    raise Refused("Click a request in the list first.")
                user = username(request) or "unknown"
                if kind == "approve":
                    order_api.approve(db, settings, accession, protocol_name=protocol_name or None, user=user)
                elif kind == "reject":
                    order_api.reject(db, settings, queue, accession, text, user=user)
                else:
                    order_api.ask(db, accession, text, user=user, queue=queue)
                if wake is not None:
                    wake()
                gr.Info(f"Order {accession}: {kind} done.")
                return order_markdown(order_api.get_order(db, accession, settings)), list_requests(status)
            return handler

        orders_refresh.click(list_requests, inputs=order_status, outputs=orders_table)
        order_status.change(list_requests, inputs=order_status, outputs=orders_table)
        orders_table.select(pick_request, outputs=[order_acc, order_md, protocol])
        review_inputs = [order_acc, protocol, review_text, order_status]
        approve_btn.click(review("approve"), inputs=review_inputs, outputs=[order_md, orders_table])
        reject_btn.click(review("reject"), inputs=review_inputs, outputs=[order_md, orders_table])
        ask_btn.click(review("ask"), inputs=review_inputs, outputs=[order_md, orders_table])

        # ---- lab
        @guarded("Run the simulation")
        def run_simulation(name: str, n_seeds: float, progress=gr.Progress()):
            import tempfile

            from triage.simulator.engine import load_scenario, run, write_markdown, write_plots

            if not name:
                raise Refused("Choose a scenario in the list first.")
            progress(0.1, desc=f"Simulating {name} over {int(n_seeds)} seeds…")
            started = time.perf_counter()
            report = run(load_scenario(name), seeds=int(n_seeds))
            progress(0.8, desc="Plotting…")
            out = Path(tempfile.mkdtemp(prefix="rr-sim-"))
            plots = write_plots(report, out)
            table_md = write_markdown(report, out / "report.md").read_text()
            return f"{table_md}\n\n*{time.perf_counter() - started:.1f} s*", [str(p) for p in plots]

        simulate.click(run_simulation, inputs=[scenario, seeds], outputs=[sim_table, sim_plots])

        def lab_card(name: str | None):  # a ModelCard
            from models.registry import find_model

            card = find_model(name, WEIGHTS_DIR, model_config, PROJECT_ROOT) if name else None
            if card is None:
                raise Refused(f"No model {name!r}. Choose one of the models in the list.")
            return card

        @guarded("Run the evaluation")
        def run_evaluation(name: str, data: str, labels: str, progress=gr.Progress(track_tqdm=True)):
            import tempfile

            evaluation_inputs(data, labels)                   # a bad folder is said before the model loads
            card = lab_card(name)
            return evaluate_folder(card, data, labels, Path(tempfile.mkdtemp(prefix="rr-eval-")),
                                   rules=model_config["rules"], progress=True)

        evaluate_btn.click(run_evaluation, inputs=[eval_model, eval_data, eval_labels], outputs=[eval_table, eval_plots])

        @guarded("Make a sample set")
        def make_sample_set(name: str, progress=gr.Progress(track_tqdm=True)):
            task = model_task(lab_card(name))
            progress(0, desc=f"Writing {SAMPLE_STUDIES} SYNTHETIC studies…")
            folder, written = make_sample(settings.home, task, progress=True)
            done = "Wrote" if written else "Using the sample set already in"
            note = (f"{done} `{folder}`: {SAMPLE_STUDIES} SYNTHETIC {task} studies and their labels.csv "
                    "(the same as `readingroom phantoms`). Press Run evaluation.")
            gr.Info(f"Sample set ready: {folder}", title="Make a sample set")
            return str(folder), "", note

        sample_btn.click(make_sample_set, inputs=eval_model, outputs=[eval_data, eval_labels, sample_md])

        def lab_task(name: str | None) -> str | None:
            from models.registry import find_model

            card = find_model(name, WEIGHTS_DIR, model_config, PROJECT_ROOT) if name else None
            return model_task(card) if card is not None else None

        @guarded("Suggest a data folder", quiet=True)
        def lab_defaults(name: str | None, current: str):  # at load and on a model change
            return data_for_model(settings.home, lab_task(name), current)

        blocks.load(lab_defaults, inputs=[eval_model, eval_data], outputs=eval_data)
        eval_model.change(lab_defaults, inputs=[eval_model, eval_data], outputs=eval_data)

        # ---- admin
        def admin_only(request: gr.Request, what: str) -> None:
            if user_role(db, username(request) or "") != "admin":
                raise Refused(f"Only an administrator may {what}. Log out and log in as an administrator.")

        @guarded("Admin")
        def admin_tables(request: gr.Request):
            from sqlalchemy import select

            from readingroom.schema import User

            admin_only(request, "see the admin tables")
            sites = []
            for s in settings.sites:
                d = s.destinations
                sites.append([s.name, ", ".join(s.ae_titles), f"{d.hl7.host}:{d.hl7.port}" if d.hl7 else "",
                              d.fhir_url or d.fhir_folder, f"{d.dicom.ae_title}@{d.dicom.host}:{d.dicom.port}"
                              if d.dicom else "", d.pdf_folder])
            with db.reader() as session:
                users = [[u.username, u.role, ", ".join(u.sites or [])]
                         for u in session.scalars(select(User).order_by(User.username))]
            return sites, users, delivery_rows(reports.delivery_status()), dead_job_rows(db, settings)

        @guarded("Add user")
        def create_user(name: str, password: str, role: str, request: gr.Request):
            from readingroom.auth import ensure_user

            admin_only(request, "add users")
            if not name.strip() or len(password) < 8:
                raise Refused("Give a user name and a password of at least 8 characters.")
            if not ensure_user(db, name.strip(), password, role=role):
                raise Refused(f"User {name} exists already; choose another name.")
            gr.Info(f"User {name} ({role}) added.")
            return admin_tables(request)

        admin_outputs = [sites_table, users_table, outbox, dead]

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

        retry_btn.click(retry_delivery, inputs=retry_id, outputs=admin_outputs)
        audit_btn.click(search_audit, inputs=[audit_user, audit_action, audit_study], outputs=audit_table)
        admin_tab.select(admin_tables, outputs=admin_outputs)
        admin_refresh.click(admin_tables, outputs=admin_outputs)
        add_user.click(create_user, inputs=[new_user, new_password, new_role], outputs=admin_outputs)
    return blocks
