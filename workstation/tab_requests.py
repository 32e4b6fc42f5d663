"""The Requests tab: imaging orders waiting for review (orders/). Approve with a protocol (the order
joins the modality worklist), reject with a reason (the site's RIS is told), or ask a question.

The tab shows and acts on the orders of the logged-in user's sites only (every call passes
``as_user``; readingroom.access decides): another site's order is answered like a missing one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr   # at module level: Gradio resolves the callbacks' annotations (gr.Request...) here

import orders as order_api
from orders.protocols import load_library
from workstation.page_context import PageContext, Refused, guarded, username
from workstation.signoff import ORDER_COLUMNS, order_markdown, order_rows

log = logging.getLogger(__name__)


@dataclass
class RequestsTab:
    """The Requests tab's components, and its list of requests (which the page fills at load)."""

    status: gr.Dropdown
    refresh: gr.Button
    table: gr.Dataframe
    accession: gr.State                 # the request open for review ("" none)
    order_md: gr.Markdown
    protocol: gr.Dropdown
    approve_btn: gr.Button
    review_text: gr.Textbox
    reject_btn: gr.Button
    ask_btn: gr.Button
    list_requests: Callable[[str, gr.Request], Any]   # the table's rows for a status filter and user (guarded)


def build_requests(ctx: PageContext) -> RequestsTab:
    """Lay out the Requests tab and wire the review."""
    with ctx.tab("Requests", "requests"):
        gr.Markdown("### Requests waiting for review\nApprove with a protocol (the order joins the "
                    "modality worklist), reject with a reason (the site's RIS is told), or ask a question.")
        with gr.Row():
            status = gr.Dropdown(["new", "question", "approved", "rejected", "cancelled", ""],
                                 value="new", label="Status", scale=1)
            refresh = gr.Button("Refresh", size="sm", scale=0)
        table = gr.Dataframe(headers=ORDER_COLUMNS, interactive=False, elem_id="rr-orders")
        accession = gr.State("")
        order_md = gr.Markdown("Click a request to review it.", elem_id="rr-order")
        with gr.Row():
            protocol = gr.Dropdown([], label="Protocol", scale=2, elem_id="rr-protocol")
            approve_btn = gr.Button("Approve", variant="primary", size="sm", scale=1)
        with gr.Row():
            review_text = gr.Textbox(label="Reason (reject) or question (ask)", scale=3)
            reject_btn = gr.Button("Reject", size="sm", scale=1)
            ask_btn = gr.Button("Ask", size="sm", scale=1)
    tab = RequestsTab(status=status, refresh=refresh, table=table, accession=accession, order_md=order_md,
                      protocol=protocol, approve_btn=approve_btn, review_text=review_text, reject_btn=reject_btn,
                      ask_btn=ask_btn, list_requests=_request_lister(ctx))
    _wire_review(ctx, tab)
    return tab


def _request_lister(ctx: PageContext) -> Callable[[str, gr.Request], Any]:
    @guarded("List the requests")
    def list_requests(status: str, request: gr.Request):
        return order_rows(order_api.list_orders(ctx.db, status=status or None, as_user=username(request)))
    return list_requests


def _wire_review(ctx: PageContext, tab: RequestsTab) -> None:
    """List the requests, open one, and approve, reject or ask."""
    db, settings, queue, list_requests = ctx.db, ctx.settings, ctx.queue, tab.list_requests
    protocol_names = sorted(load_library(settings).protocols)

    @guarded("Open the request")
    def pick_request(evt: gr.SelectData, request: gr.Request):
        row = evt.row_value if evt.row_value is not None else []
        if not row:
            return gr.skip(), gr.skip(), gr.skip()
        order = order_api.get_order(db, str(row[0]), settings, as_user=username(request))
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
            as_user = username(request)
            user = as_user or "unknown"
            if kind == "approve":
                order_api.approve(db, settings, accession, protocol_name=protocol_name or None, user=user,
                                  as_user=as_user)
            elif kind == "reject":
                order_api.reject(db, settings, queue, accession, text, user=user, as_user=as_user)
            else:
                order_api.ask(db, accession, text, user=user, queue=queue, as_user=as_user)
            if ctx.wake is not None:
                ctx.wake()
            gr.Info(f"Order {accession}: {kind} done.")
            return (order_markdown(order_api.get_order(db, accession, settings, as_user=as_user)),
                    list_requests(status, request))
        return handler

    tab.refresh.click(list_requests, inputs=tab.status, outputs=tab.table)
    tab.status.change(list_requests, inputs=tab.status, outputs=tab.table)
    tab.table.select(pick_request, outputs=[tab.accession, tab.order_md, tab.protocol])
    review_inputs = [tab.accession, tab.protocol, tab.review_text, tab.status]
    tab.approve_btn.click(review("approve"), inputs=review_inputs, outputs=[tab.order_md, tab.table])
    tab.reject_btn.click(review("reject"), inputs=review_inputs, outputs=[tab.order_md, tab.table])
    tab.ask_btn.click(review("ask"), inputs=review_inputs, outputs=[tab.order_md, tab.table])
