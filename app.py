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

DEMO_SEEDED_KEY = "demo_seeded"


def build_web_app(settings: Settings, db: Database, queue: Any = None, wake: Any = None):  # noqa: ANN201
    """FastAPI app: /healthz, login, the viewer and dictation routes, the FHIR ServiceRequest
    endpoint, and the Gradio page at /."""
    import gradio as gr
    from fastapi import FastAPI

    from workstation.pages import build_blocks, head_html
    from workstation.web import install_routes

    api = FastAPI(title="ReadingRoom", description=NOT_FOR_CLINICAL_USE)

    @api.get("/healthz")
    def healthz() -> dict[str, Any]:
        from sqlalchemy import func, select

        from readingroom.schema import Study

        with db.reader() as session:
            studies = session.scalar(select(func.count(Study.id)))
        return {"status": "ok", "studies": studies, "notice": NOT_FOR_CLINICAL_USE}

    from triage.orders.fhir import build_router

    api.include_router(build_router(db, settings))
    auth_dependency = install_routes(api, settings, db)
    blocks = build_blocks(settings, db, queue=queue, wake=wake)
    return gr.mount_gradio_app(
        api, blocks, path="/", auth_dependency=auth_dependency, head=head_html(),
        theme=gr.themes.Default(primary_hue="blue", neutral_hue="slate"), footer_links=[],
        js="() => { document.body.classList.add('dark'); }",
    )


def _seed_demo_once(settings: Settings, db: Database, port: int) -> None:
    """The demo's orders (through the HL7 path), then its images (through the DICOM listener):
    the studies link to their orders by accession number as they arrive."""
    from triage.demo import seed_demo
    from triage.orders.demo import seed_demo_orders

    if get_kv(db, DEMO_SEEDED_KEY):
        return
    try:
        seed_demo_orders(db, settings)
        count = seed_demo(settings, port=port)
    except Exception:  # noqa: BLE001 - the workstation runs on without demo data
        log.exception("could not seed the demo worklist")
        return
    set_kv(db, DEMO_SEEDED_KEY, str(count))


def _warm_up_dictation(settings: Settings) -> None:
    """Load the Whisper models now, not when the first radiologist starts speaking."""
    try:
        from dictation.settings import DictationSettings
        from workstation.live import shared_engine

        shared_engine(DictationSettings.from_mapping(settings.dictation))
    except Exception:  # noqa: BLE001 - dictation loads again on first use and reports its error then
        log.exception("could not load the dictation models at start")


def serve(settings: Settings, db: Database, demo: bool = False) -> int:
    import uvicorn

    from readingroom.auth import ensure_user
    from readingroom.jobs import DatabaseJobQueue
    from triage.service import IntakeService, build_workers

    queue = DatabaseJobQueue(db, settings.jobs)
    workers = build_workers(db, settings, queue)
    intake = IntakeService(settings, db, queue, on_complete=lambda _uids: workers.wake())
    ensure_user(db, settings.demo.username, settings.demo.password, role="radiologist")
    ensure_user(db, settings.demo.admin_username, settings.demo.admin_password, role="admin")

    intake.start()
    workers.start()
    threading.Thread(target=_warm_up_dictation, args=(settings,), name="dictation-warm-up", daemon=True).start()
    seeder = None
    if demo and settings.demo.seed:
        seeder = threading.Thread(target=_seed_demo_once, args=(settings, db, intake.listener.port),
                                  name="demo-seed", daemon=True)
        seeder.start()
    try:
        web = build_web_app(settings, db, queue=queue, wake=workers.wake)
        server = uvicorn.Server(uvicorn.Config(web, host=settings.web.host, port=settings.web.port,
                                               log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
        url = f"http://{settings.web.host}:{settings.web.port}"
        print("\n" + "=" * 72
              + f"\nReadingRoom is running. {NOT_FOR_CLINICAL_USE}"
              + f"\n  Web page:       {url}"
              + f"\n  Logins:         {settings.demo.username} / {settings.demo.password} (radiologist), "
              + f"{settings.demo.admin_username} / {settings.demo.admin_password} (admin)"
              + f"\n  DICOM listener: AE {settings.dicom.ae_title} on {settings.dicom.host}:{intake.listener.port}"
              + " (C-STORE, C-ECHO, modality worklist C-FIND)"
              + (f"\n  HL7 orders:     MLLP on {settings.hl7.host}:{intake.orders.port}" if intake.orders else "")
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
