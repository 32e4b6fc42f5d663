"""The Reading tab: the viewer, the report (template, dictation, typing, autosave) and the sign-off
area (checks, overrides, critical-result communication, signing, addendum, delivery).

Opening a study (a click on a worklist row) claims it, starts its report with the suggested
template and a LiveDictation session (dictation/live.py), and selects this tab. The viewer runs
in the browser (workstation/static/viewer.js) on the routes of workstation/web.py; here it is one
HTML block that names the open study.
"""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from typing import Any

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

from dictation.live import REGISTRY, LiveDictation   # module level too: callbacks are annotated with it

from readingroom.access import study_for_user
from readingroom.audit import record_access
from readingroom.errors import ReadingRoomError
from reporting.delivery.outbox import delivery_summary, report_site, sign_message, sites_file_label
from reporting.errors import ChecksNotResolved
from reporting.lifecycle import METHODS
from reporting.report import SECTION_ORDER, SECTION_TITLES, list_templates
from triage.worklist import claim
from workstation.page_context import PageContext, Refused, client_address, guarded, username
from workstation.signoff import (
    DELIVERY_COLUMNS, checks_markdown, delivery_rows, is_read_only, issue_choices, page_message, reading_header,
    signed_markdown,
)

log = logging.getLogger(__name__)

# Template suggested for a study, by modality and words of its description.
TEMPLATE_RULES = [("CT", ("HEAD", "BRAIN", "CRANI"), "ct_head"), ("CT", ("ABD", "PELV"), "ct_abdomen_pelvis"),
                  ("CR", ("CHEST", "THORAX", "LUNG"), "chest_radiograph"),
                  ("DX", ("CHEST", "THORAX", "LUNG"), "chest_radiograph")]


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
      <label>L <input id="rr-wc" type="number" step="1"></label>\
<label>W <input id="rr-ww" type="number" step="1"></label>
      <button type="button" id="rr-apply-wl">Apply W/L</button><button type="button" id="rr-invert">Invert</button>
      <button type="button" id="rr-zoom-in">Zoom +</button><button type="button" id="rr-zoom-out">Zoom −</button>
      <button type="button" id="rr-reset">Reset</button>
      <span id="rr-ai-controls" style="display:none"><label><input type="checkbox" id="rr-ai-toggle" checked>
        AI heatmap (UNVERIFIED)</label> \
<input type="range" id="rr-ai-opacity" min="0" max="1" step="0.05" value="0.5"></span>
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


@dataclass
class ReadingTab:
    """The Reading tab's components."""

    viewer: gr.HTML
    opened: gr.Markdown                 # the study line and the report's state
    template: gr.Dropdown
    normal: gr.Button
    partial: gr.Markdown                # what the dictation is hearing
    feedback: gr.Markdown               # the last voice command
    boxes: dict[str, gr.Textbox]        # one per report section
    autosaved: gr.Markdown
    # the sign-off area
    check_btn: gr.Button
    sign_prelim: gr.Button
    sign_final: gr.Button
    checks_md: gr.Markdown
    issue_key: gr.Dropdown
    issue_note: gr.Textbox
    override_btn: gr.Button
    ack_btn: gr.Button
    comm_recipient: gr.Textbox
    comm_method: gr.Dropdown
    comm_readback: gr.Checkbox
    comm_finding: gr.Textbox
    comm_btn: gr.Button
    signed_md: gr.Markdown
    addendum_text: gr.Textbox
    addendum_btn: gr.Button
    delivery_md: gr.Markdown
    delivery: gr.Dataframe

    @property
    def section_boxes(self) -> list[gr.Textbox]:
        return [self.boxes[s] for s in SECTION_ORDER]

    @property
    def lock_outputs(self) -> list[Any]:
        """What a signed final report locks (the report) and unlocks (the addendum); see lock_updates."""
        return [self.template, self.normal, self.sign_prelim, self.sign_final, self.addendum_text,
                self.addendum_btn, *self.section_boxes]

    @property
    def after_sign(self) -> list[Any]:
        """What a signature updates; see signed_outputs."""
        return [self.signed_md, self.delivery_md, self.delivery, self.opened, *self.lock_outputs]


def build_reading(ctx: PageContext, worklist_table: gr.Dataframe) -> ReadingTab:
    """Lay out the Reading tab and wire it; a select on ``worklist_table`` opens a study here."""
    templates = ["free", *[t for t in list_templates(ctx.settings.dictation.templates_dir) if t != "free"]]
    with ctx.tab("Reading", "reading"):
        with gr.Row():
            with gr.Column(scale=3):
                viewer = gr.HTML(viewer_html(None), elem_id="rr-viewer-block")
            with gr.Column(scale=2, elem_id="rr-report"):
                report = _report_column(templates)
                with gr.Group(elem_id="rr-signoff"):
                    signoff = _signoff_area()
    tab = ReadingTab(viewer=viewer, **report, **signoff)
    sites_file = sites_file_label(ctx.settings)
    _wire_open_study(ctx, tab, worklist_table, templates, sites_file)
    _wire_editing(ctx, tab)
    _wire_dictation(ctx, tab)
    _wire_checks(ctx, tab)
    _wire_signing(ctx, tab, sites_file)
    return tab


def _report_column(templates: list[str]) -> dict[str, Any]:
    """The report: the study line, template, record button, dictation feedback, one box a section."""
    opened = gr.Markdown("No study open.", elem_id="rr-opened")
    with gr.Row():
        template = gr.Dropdown(templates, value="free", label="Template", scale=2, elem_id="rr-template")
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
    return dict(opened=opened, template=template, normal=normal, partial=partial, feedback=feedback, boxes=boxes,
                autosaved=autosaved)


def _signoff_area() -> dict[str, Any]:
    """Checks and sign-off: checks, issues, communication, signing, addendum, delivery."""
    gr.Markdown("#### Checks and sign-off")
    with gr.Row():
        check_btn = gr.Button("Run checks", size="sm", elem_id="rr-check")
        sign_prelim = gr.Button("Sign preliminary", size="sm", elem_id="rr-sign-prelim")
        sign_final = gr.Button("Sign final", size="sm", variant="primary", elem_id="rr-sign-final")
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
        addendum_text = gr.Textbox(label="Addendum (to a final report)", scale=4, elem_id="rr-addendum",
                                   interactive=False, placeholder="An addendum follows a final report.")
        addendum_btn = gr.Button("Sign addendum", size="sm", scale=1, interactive=False,
                                 elem_id="rr-sign-addendum")
    delivery_md = gr.Markdown("", elem_id="rr-delivery-note")
    delivery = gr.Dataframe(headers=DELIVERY_COLUMNS, interactive=False, elem_id="rr-delivery",
                            label="Delivery to the site")
    return dict(check_btn=check_btn, sign_prelim=sign_prelim, sign_final=sign_final, checks_md=checks_md,
                issue_key=issue_key, issue_note=issue_note, override_btn=override_btn, ack_btn=ack_btn,
                comm_recipient=comm_recipient, comm_method=comm_method, comm_readback=comm_readback,
                comm_finding=comm_finding, comm_btn=comm_btn, signed_md=signed_md, addendum_text=addendum_text,
                addendum_btn=addendum_btn, delivery_md=delivery_md, delivery=delivery)


# ---- shared by the callbacks below

def section_label(section: str, session: LiveDictation | None) -> str:
    title = SECTION_TITLES[section]
    if session is not None and session.read_only:
        return f"{title} (signed, read-only)"
    return f"{title} (dictating here)" if session and session.active_section == section else title


def lock_updates(session: LiveDictation, view, with_text: bool = False) -> list[Any]:
    """Updates for ReadingTab.lock_outputs: a signed report is read-only and takes an addendum."""
    editable, signed = not is_read_only(view), is_read_only(view)
    session.read_only = signed
    texts = session.display_sections()
    boxes_out = [gr.update(value=texts[s], label=section_label(s, session), interactive=editable) if with_text
                 else gr.update(label=section_label(s, session), interactive=editable) for s in SECTION_ORDER]
    return [gr.update(value=view.template, interactive=editable), *[gr.update(interactive=editable)] * 3,
            gr.update(interactive=signed), gr.update(interactive=signed), *boxes_out]


def report_updates(session: LiveDictation) -> list[Any]:
    """Updates for ReadingTab.section_boxes: the session's text and labels."""
    texts = session.display_sections()
    return [gr.update(value=texts[s], label=section_label(s, session)) for s in SECTION_ORDER]


def delivery_note(ctx: PageContext, view, sites_file: str) -> str:
    if not view.versions:
        return ""
    rows = ctx.reports.delivery_status(report_id=view.id)
    return delivery_summary(report_site(ctx.db, view.id), view.versions[-1].number, rows, sites_file)


def flush(ctx: PageContext, session: LiveDictation, user: str) -> None:
    """Save the session's text as the draft now, if it changed since the last save."""
    if not session.read_only and session.content_key() != session.saved_key:
        view = ctx.reports.save_draft(session.report_id, user, report=session.session.report,
                                      revision=session.revision)
        session.revision, session.saved_key = view.revision, session.content_key()


def open_first(session: LiveDictation | None) -> LiveDictation:
    if session is None or session.report_id is None:
        raise Refused("Open a study from the worklist first.")
    return session


def checks_outputs(results: list[Any]) -> tuple[str, Any]:
    choices = issue_choices(results)
    return checks_markdown(results), gr.update(choices=choices, value=choices[0][1] if choices else None)


def checks_now(ctx: PageContext, session: LiveDictation, request: gr.Request) -> tuple[str, Any]:
    flush(ctx, session, username(request) or "unknown")
    return checks_outputs(ctx.reports.run_checks(session.report_id))


def signed_outputs(ctx: PageContext, session: LiveDictation, version, sites_file: str) -> tuple[Any, ...]:
    """After a signature: what was signed, where it goes, the header, and the locks."""
    view = ctx.reports.get(session.report_id)
    rows = ctx.reports.delivery_status(report_id=view.id)
    gr.Info(sign_message(version.status, version.number, report_site(ctx.db, view.id), rows, sites_file),
            title="Signed")
    return (signed_markdown(view), delivery_note(ctx, view, sites_file), delivery_rows(rows),
            reading_header(session.study_line, view), *lock_updates(session, view))


# ---- the wiring

def _wire_open_study(ctx: PageContext, tab: ReadingTab, worklist_table: gr.Dataframe, templates: list[str],
                     sites_file: str) -> None:
    """A worklist row: claim the study, show it, start a report with the suggested template."""

    @guarded("Open the study")
    def open_study(evt: gr.SelectData, request: gr.Request):
        row = evt.row_value if evt.row_value is not None else []
        uid = row[-1] if row else ""
        user = username(request) or "unknown"
        if not uid:
            return gr.skip()
        study_for_user(ctx.db, user, uid)            # NotVisible for another site's study: one message
        record_access(ctx.db, user, "view", study_uid=uid, what="study opened", source=client_address(request))
        until = claim(ctx.db, ctx.settings, uid, user)
        view = ctx.reports.create(uid, user, template=suggest_template(row[4], row[8], templates))
        session = LiveDictation(view.template, ctx.settings.dictation, sections=view.sections, fields=view.fields)
        session.report_id, session.revision = view.id, view.revision
        session.study_line = (f"**{html.escape(str(row[6]))}** · {html.escape(str(row[8]))} · accession "
                              f"{html.escape(str(row[7]))} · claimed by {html.escape(user)} until "
                              f"{until:%H:%M} UTC")
        REGISTRY.put(user, uid, session)
        locks = lock_updates(session, view, with_text=True)
        return (uid, viewer_html(uid), reading_header(session.study_line, view), gr.Tabs(selected="reading"),
                session, "", gr.update(choices=[], value=None), signed_markdown(view),
                delivery_note(ctx, view, sites_file), delivery_rows(ctx.reports.delivery_status(report_id=view.id)),
                *locks)

    worklist_table.select(open_study, outputs=[ctx.open_uid, tab.viewer, tab.opened, ctx.tabs, ctx.live,
                                               tab.checks_md, tab.issue_key, tab.signed_md, tab.delivery_md,
                                               tab.delivery, *tab.lock_outputs])


def _wire_editing(ctx: PageContext, tab: ReadingTab) -> None:
    """The template, Insert normal, and typing in the section boxes."""

    @guarded("Change the template")
    def change_template(name: str, session: LiveDictation | None, uid: str,
                        request: gr.Request):
        if not uid or session is None or session.report_id is None or session.read_only:
            return gr.skip()
        user = username(request) or "unknown"
        flush(ctx, session, user)
        view = ctx.reports.change_template(session.report_id, user, name)
        fresh = LiveDictation(view.template, ctx.settings.dictation, sections=view.sections, fields=view.fields)
        fresh.report_id, fresh.revision, fresh.study_line = view.id, view.revision, session.study_line
        REGISTRY.put(user, uid, fresh)
        return fresh, *report_updates(fresh)

    tab.template.input(change_template, inputs=[tab.template, ctx.live, ctx.open_uid],
                       outputs=[ctx.live, *tab.section_boxes])

    @guarded("Insert normal")
    def insert_normal(session: LiveDictation | None):
        if session is None or session.read_only:
            return gr.skip()
        session.insert_normal()
        return report_updates(session)

    tab.normal.click(insert_normal, inputs=ctx.live, outputs=tab.section_boxes)

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
        tab.boxes[s].input(typed(s), inputs=[tab.boxes[s], ctx.live], show_progress="hidden")
        tab.boxes[s].blur(typed(s), inputs=[tab.boxes[s], ctx.live], show_progress="hidden")


def _feedback_text(session: LiveDictation) -> tuple[str, str]:
    fb = session.feedback
    partial_text = f"Hearing: *{html.escape(fb.partial)}*" if fb.partial else ""
    command = f"Command: **{html.escape(fb.commands[-1])}**" if fb.commands else ""
    return partial_text, command


def _wire_dictation(ctx: PageContext, tab: ReadingTab) -> None:
    """Microphone chunks stream in (workstation/web.py); partials, commands and text stream out
    every 0.3 s; the draft autosaves every 2 s."""
    dictation_outputs = [ctx.live, tab.partial, tab.feedback, *tab.section_boxes]

    @guarded("Show the dictation", quiet=True)
    def poll_dictation(session: LiveDictation | None):
        if session is None:
            return gr.skip(), gr.skip(), gr.skip(), *[gr.skip()] * len(SECTION_ORDER)
        session.poll()
        partial_text, command = _feedback_text(session)
        shown = (partial_text, command, session.view_key())
        if shown == session.shown:        # nothing new: leave the page (and any typing) alone
            return gr.skip(), gr.skip(), gr.skip(), *[gr.skip()] * len(SECTION_ORDER)
        report_changed = shown[2] != (session.shown or ("", "", ""))[2]
        session.shown = shown
        boxes_out = report_updates(session) if report_changed else [gr.skip()] * len(SECTION_ORDER)
        return gr.skip(), partial_text, command, *boxes_out

    gr.Timer(0.3).tick(poll_dictation, inputs=ctx.live, outputs=dictation_outputs, show_progress="hidden")

    @guarded("Save the draft", quiet=True)
    def autosave(session: LiveDictation | None, request: gr.Request):
        if session is None or session.report_id is None or session.read_only:
            return gr.skip()
        key = session.content_key()
        if key == session.saved_key:
            return gr.skip()
        try:
            view = ctx.reports.save_draft(session.report_id, username(request) or "unknown",
                                          report=session.session.report, revision=session.revision)
        except ReadingRoomError as exc:
            return f"Not saved: {html.escape(page_message(str(exc)))}"
        session.revision, session.saved_key = view.revision, key
        return f"Draft saved {time.strftime('%H:%M:%S')} (revision {view.revision})"

    gr.Timer(2).tick(autosave, inputs=ctx.live, outputs=tab.autosaved, show_progress="hidden")


def _wire_checks(ctx: PageContext, tab: ReadingTab) -> None:
    """Run checks; override or acknowledge an open issue; record a critical-result communication."""
    checks_out = [tab.checks_md, tab.issue_key]

    @guarded("Run the checks")
    def run_checks(session: LiveDictation | None, request: gr.Request):
        return checks_now(ctx, open_first(session), request)

    tab.check_btn.click(run_checks, inputs=ctx.live, outputs=checks_out)

    def resolve(kind: str):
        @guarded("Override" if kind == "override" else "Acknowledge")
        def handler(session: LiveDictation | None, key: str | None, note: str, request: gr.Request):
            if session is None or session.report_id is None or not key:
                raise Refused("Press Run checks, then choose an open issue in the list.")
            action = ctx.reports.override if kind == "override" else ctx.reports.acknowledge
            action(session.report_id, key, username(request) or "unknown", note)
            return checks_now(ctx, session, request)
        return handler

    tab.override_btn.click(resolve("override"), inputs=[ctx.live, tab.issue_key, tab.issue_note], outputs=checks_out)
    tab.ack_btn.click(resolve("acknowledge"), inputs=[ctx.live, tab.issue_key, tab.issue_note], outputs=checks_out)

    @guarded("Record the communication")
    def communicate(session: LiveDictation | None, recipient: str, method: str, read_back: bool, finding: str,
                    request: gr.Request):
        done = ctx.reports.record_communication(open_first(session).report_id, username(request) or "unknown",
                                                recipient=recipient, method=method, read_back=read_back,
                                                finding=finding)
        gr.Info(done["statement"])
        return checks_now(ctx, session, request)

    tab.comm_btn.click(communicate, inputs=[ctx.live, tab.comm_recipient, tab.comm_method, tab.comm_readback,
                                            tab.comm_finding], outputs=checks_out)


def _wire_signing(ctx: PageContext, tab: ReadingTab, sites_file: str) -> None:
    """Sign preliminary or final, sign an addendum, and follow the delivery (every 3 s)."""

    def sign(final: bool):
        @guarded("Sign final" if final else "Sign preliminary")
        def handler(session: LiveDictation | None, request: gr.Request):
            session, user = open_first(session), username(request) or "unknown"
            try:
                flush(ctx, session, user)
                version = ctx.reports.sign(session.report_id, user, final=final)
            except ChecksNotResolved:
                gr.Warning("Not signed: resolve the open issues listed under Checks and sign-off first.",
                           title="Not signed")
                return *checks_now(ctx, session, request), *[gr.skip()] * (4 + len(tab.lock_outputs))
            return "**Signed.**", gr.update(choices=[], value=None), *signed_outputs(ctx, session, version,
                                                                                     sites_file)
        return handler

    tab.sign_prelim.click(sign(False), inputs=ctx.live, outputs=[tab.checks_md, tab.issue_key, *tab.after_sign])
    tab.sign_final.click(sign(True), inputs=ctx.live, outputs=[tab.checks_md, tab.issue_key, *tab.after_sign])

    @guarded("Sign the addendum")
    def add_addendum(session: LiveDictation | None, text: str, request: gr.Request):
        session = open_first(session)
        version = ctx.reports.addendum(session.report_id, username(request) or "unknown", text)
        return "", *signed_outputs(ctx, session, version, sites_file)

    tab.addendum_btn.click(add_addendum, inputs=[ctx.live, tab.addendum_text],
                           outputs=[tab.addendum_text, *tab.after_sign])

    @guarded("Show the delivery", quiet=True)
    def refresh_delivery(session: LiveDictation | None):
        if session is None or session.report_id is None:
            return gr.skip()
        view = ctx.reports.get(session.report_id)
        return (delivery_note(ctx, view, sites_file),
                delivery_rows(ctx.reports.delivery_status(report_id=session.report_id)))

    gr.Timer(3).tick(refresh_delivery, inputs=ctx.live, outputs=[tab.delivery_md, tab.delivery],
                     show_progress="hidden")
