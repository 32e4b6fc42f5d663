"""The ReadingRoom workstation: wiring only. ``python app.py`` is ``readingroom run``.

``serve()`` starts the DICOM listener and study monitor, the job workers and the web page
(Gradio Blocks mounted on a FastAPI app, served by uvicorn), seeds the demo on first start,
and stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.db import Database, get_kv, set_kv
from readingroom.settings import Settings

log = logging.getLogger(__name__)

WORKLIST_COLUMNS = ["#", "Priority", "Status", "Modality", "Site", "Patient", "Accession", "Description",
                    "Images", "Received (UTC)", "AI", "Reason"]
DEMO_SEEDED_KEY = "demo_seeded"


def worklist_rows(db: Database, settings: Settings) -> list[list[Any]]:
    from triage.worklist import open_studies

    rows = []
    for item in open_studies(db, settings):
        ai = "; ".join(f"{f['finding']} {f['probability']:.2f} (UNVERIFIED)" for f in item["ai"] if f["positive"])
        rows.append([item["position"], item["priority"]["label"], item["status"], item["modality"], item["site"],
                     item["patient_name"], item["accession"], item["description"], item["num_instances"],
                     (item["received_at"] or "")[:19].replace("T", " "), ai or item["ai_status"],
                     item["priority"]["reason"]])
    return rows


def dead_job_rows(db: Database, settings: Settings) -> list[list[Any]]:
    from readingroom.jobs import DatabaseJobQueue

    jobs = DatabaseJobQueue(db, settings.jobs).list(status="dead", limit=50)
    return [[j.id, j.kind, str(j.payload), j.attempts, ((j.last_error or "").strip().splitlines() or [""])[-1]]
            for j in jobs]


def build_blocks(settings: Settings, db: Database):  # noqa: ANN201
    import gradio as gr

    from triage.notify import events_since, latest_event_id

    with gr.Blocks(title="ReadingRoom", analytics_enabled=False) as blocks:
        gr.Markdown(f"## ReadingRoom worklist\n**{NOT_FOR_CLINICAL_USE}**", elem_id="banner")
        with gr.Tab("Worklist"):
            table = gr.Dataframe(headers=WORKLIST_COLUMNS, value=lambda: worklist_rows(db, settings), interactive=False,
                                 elem_id="worklist", wrap=True)
            refresh = gr.Button("Refresh", size="sm")
        with gr.Tab("Dead-letter jobs"):
            dead = gr.Dataframe(headers=["Job", "Kind", "Payload", "Attempts", "Last error"],
                                value=lambda: dead_job_rows(db, settings), interactive=False)

        def refresh_worklist() -> list[list[Any]]:
            return worklist_rows(db, settings)

        def refresh_all() -> tuple[list[list[Any]], list[list[Any]]]:
            return worklist_rows(db, settings), dead_job_rows(db, settings)

        gr.Timer(5).tick(refresh_worklist, outputs=table, api_name="worklist")

        # Critical AI findings: a toast within a second, and the worklist reordered.
        last_event = gr.State(0)

        def latest_event() -> int:
            return latest_event_id(db)

        def poll_events(last_id: int):  # noqa: ANN202 - a Gradio callback
            events = events_since(db, last_id)
            if not events:
                return last_id, gr.skip()
            for event in events:
                gr.Warning(f"CRITICAL: {event.payload.get('summary', event.study_uid)}", duration=None)
            return events[-1].id, worklist_rows(db, settings)

        blocks.load(latest_event, outputs=last_event)
        gr.Timer(1).tick(poll_events, inputs=last_event, outputs=[last_event, table], api_name="events")
        refresh.click(refresh_all, outputs=[table, dead], api_name="refresh")
    return blocks


def build_web_app(settings: Settings, db: Database):  # noqa: ANN201
    import gradio as gr
    from fastapi import FastAPI

    from readingroom.auth import authenticate

    api = FastAPI(title="ReadingRoom", description=NOT_FOR_CLINICAL_USE)

    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        from sqlalchemy import func, select

        from readingroom.schema import Study

        with db.reader() as session:
            studies = session.scalar(select(func.count(Study.id)))
        return {"status": "ok", "studies": studies, "notice": NOT_FOR_CLINICAL_USE}

    blocks = build_blocks(settings, db)
    return gr.mount_gradio_app(
        api, blocks, path="/", auth=lambda user, password: authenticate(db, user, password) is not None,
        auth_message=f"ReadingRoom. {NOT_FOR_CLINICAL_USE}", theme=gr.themes.Default(primary_hue="blue").set(),
    )


def _seed_demo_once(settings: Settings, db: Database, port: int) -> None:
    from triage.demo import seed_demo

    if get_kv(db, DEMO_SEEDED_KEY):
        return
    try:
        count = seed_demo(settings, port=port)
    except Exception:  # noqa: BLE001 - the workstation runs on without demo data
        log.exception("could not seed the demo worklist")
        return
    set_kv(db, DEMO_SEEDED_KEY, str(count))


def serve(settings: Settings, db: Database, demo: bool = False) -> int:
    import uvicorn

    from readingroom.auth import ensure_user
    from readingroom.jobs import DatabaseJobQueue
    from triage.service import IntakeService, build_workers

    queue = DatabaseJobQueue(db, settings.jobs)
    workers = build_workers(db, settings, queue)
    intake = IntakeService(settings, db, queue, on_complete=lambda _uids: workers.wake())
    ensure_user(db, settings.demo.username, settings.demo.password, role="radiologist")

    intake.start()
    workers.start()
    seeder = None
    if demo and settings.demo.seed:
        seeder = threading.Thread(target=_seed_demo_once, args=(settings, db, intake.listener.port),
                                  name="demo-seed", daemon=True)
        seeder.start()
    try:
        web = build_web_app(settings, db)
        server = uvicorn.Server(uvicorn.Config(web, host=settings.web.host, port=settings.web.port,
                                               log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
        url = f"http://{settings.web.host}:{settings.web.port}"
        print("\n" + "=" * 72
              + f"\nReadingRoom is running. {NOT_FOR_CLINICAL_USE}"
              + f"\n  Web page:       {url}"
              + f"\n  Login:          {settings.demo.username} / {settings.demo.password}"
              + f"\n  DICOM listener: AE {settings.dicom.ae_title} on {settings.dicom.host}:{intake.listener.port}"
              + f"\n  Data folder:    {settings.home}"
              + "\n  Stop:           Ctrl-C\n" + "=" * 72 + "\n", flush=True)
        try:
            server.run()   # returns on Ctrl-C or SIGTERM, after closing connections
        except KeyboardInterrupt:  # uvicorn re-raises the signal once it has shut down
            pass
    finally:
        log.info("shutting down")
        intake.stop()
        workers.stop()
        db.dispose()
    print("ReadingRoom stopped.", flush=True)
    return 0


if __name__ == "__main__":
    from readingroom.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
