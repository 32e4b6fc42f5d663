"""The composition root: the only module that knows every package. ``python app.py`` is ``readingroom run``.

- ``build_workers()``: the worker pool with every job handler (triage, order notices, report delivery);
- ``serve()``: the DICOM listener and study monitor (with the HL7 order listener), the workers and
  the web page (Gradio Blocks mounted on a FastAPI app, served by uvicorn); it seeds the demo on
  first start and stops everything cleanly on Ctrl-C;
- ``model_lines()``: every model checked, for the start-up banner and ``readingroom models``;
- ``main()``: the ``readingroom`` command line, assembled from each package's ``add_commands``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.cli import Context, add_dicom_arguments, dicom_overrides, wait_for_stop
from readingroom.db import Database, get_kv, set_kv
from readingroom.jobs import JobQueue, WorkerPool
from readingroom.settings import PROJECT_ROOT, Settings

from models.check import ModelLine, triage_lines

log = logging.getLogger(__name__)

DEMO_SEEDED_KEY = "demo_seeded"


def build_web_app(settings: Settings, db: Database, queue: Any = None, wake: Any = None):
    """FastAPI app: /healthz, login, the viewer and dictation routes, the FHIR ServiceRequest
    endpoint, and the Gradio page at /."""
    import gradio as gr
    from fastapi import FastAPI

    from workstation.pages import build_blocks, head_html
    from workstation.web import install_routes

    api = FastAPI(title="ReadingRoom", description=NOT_FOR_CLINICAL_USE)

    @api.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness only: it needs no login, so it tells nothing about the data."""
        return {"status": "ok"}

    from orders.fhir import build_router

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
    from models.phantoms import DEMO_STUDIES
    from orders.demo import seed_demo_orders
    from triage.demo import seed_demo

    if get_kv(db, DEMO_SEEDED_KEY):
        return
    try:
        seed_demo_orders(db, settings, DEMO_STUDIES)
        count = seed_demo(settings, port=port)
    except Exception:  # the workstation runs on without demo data
        log.exception("could not seed the demo worklist")
        return
    set_kv(db, DEMO_SEEDED_KEY, str(count))


def _warm_up_dictation(settings: Settings) -> None:
    """Load the Whisper models now, not when the first radiologist starts speaking."""
    try:
        from readingroom.settings import DictationSettings
        from dictation.live import shared_engine

        shared_engine(DictationSettings.from_mapping(settings.dictation))
    except Exception:  # dictation loads again on first use and reports its error then
        log.exception("could not load the dictation models at start")


def _whisper_lines(settings: Settings, checksum: bool, install: bool) -> list[ModelLine]:
    from dictation.install import check_whisper
    from dictation.models import models_dir

    found = check_whisper(settings.dictation, root=models_dir(settings.models_dir), install=install,
                          checksum=checksum)
    return [ModelLine(f"whisper {role}", check.name, "", str(check.path or ""), check.checked, check.problem)
            for role, check in found]


def model_lines(settings: Settings, *, checksum: bool = False, install: bool = False) -> list[ModelLine]:
    """Every model ReadingRoom uses, checked: the Whisper models (by size, or by SHA-256 with
    ``checksum``; a missing base is joined again with ``install``) and the triage models."""
    return _whisper_lines(settings, checksum, install) + triage_lines(settings, checksum)


def _short(path: str) -> str:
    """A path inside the checkout relative to it (the banner stays readable)."""
    try:
        return str(Path(path).relative_to(PROJECT_ROOT))
    except ValueError:
        return path


def _model_banner(models: list[ModelLine]) -> list[str]:
    rows = [m for m in models if m.role != "whisper spare"]
    lines = []
    for index, m in enumerate(rows):
        label = "  Models:         " if index == 0 else " " * 18
        name = f"{m.name} {m.version}".strip()
        lines.append(f"{label}{m.role:<14} {name:<18} " + ("ok" if m.ok else "MISSING") + f"  {_short(m.path)}")
    if not rows:
        lines.append("  Models:         none")
    if not any(m.role == "triage" and m.ok for m in rows):
        lines.append("  !!! No triage model is installed: the worklist is ordered without AI (docs/models.md).")
    live = next((m for m in rows if m.role == "whisper live"), None)
    for m in rows:
        if m.ok:
            continue
        lines.append(f"  !!! {m.role} model {m.name!r} is MISSING: {m.problem}")
        if m.role == "whisper final" and live is not None and live.ok:
            lines.append(f"  !!! Until it is installed the live model ({live.name}) writes the final text too, "
                         "less accurately. Install it, then restart.")
        elif m.role == "whisper live":
            lines.append("  !!! Dictation does not work until it is installed.")
        elif m.role == "triage":
            lines.append("  !!! Until it is fixed, the studies this model reads may get no AI result.")
    return lines


ADMIN_PASSWORD_ENV = "READINGROOM_ADMIN_PASSWORD"   # in readingroom.settings.NOT_SETTINGS


def demo_hosts_problem(settings: Settings) -> str | None:
    """Why ``--demo`` may not start with these settings: its passwords are known to everyone,
    so it listens on loopback only."""
    from readingroom.tls import is_loopback

    hosts = {"web.host": settings.web.host, "dicom.host": settings.dicom.host}
    if settings.hl7.enabled:
        hosts["hl7.host"] = settings.hl7.host
    wide = [f"{name}={host}" for name, host in hosts.items() if not is_loopback(host)]
    if not wide:
        return None
    return (f"--demo listens on loopback only, because its logins are known ({', '.join(wide)}): "
            "set these to 127.0.0.1, or start without --demo")


def web_host_problem(settings: Settings) -> str | None:
    """Why the web page may not listen where it is set to: off loopback it needs HTTPS."""
    from readingroom.tls import listen_problem

    web = settings.web
    return listen_problem(web.host, web.tls, web.allow_insecure_remote, "web")


def initial_logins(settings: Settings, db: Database, demo: bool, environ: dict[str, str]) -> str:
    """The accounts a start needs, created if missing; returns the banner's Logins line.

    ``--demo``: the demo radiologist and admin with the settings' passwords, for every site.
    Otherwise there is no known password: the first start creates the admin with the password
    in $READINGROOM_ADMIN_PASSWORD, or a random one printed here once."""
    import secrets

    from readingroom.auth import ensure_user
    from readingroom.schema import User

    if demo:
        d = settings.demo
        ensure_user(db, d.username, d.password, role="radiologist", sites=["*"])
        ensure_user(db, d.admin_username, d.admin_password, role="admin", sites=["*"])
        return (f"{d.username} / {d.password} (radiologist), {d.admin_username} / {d.admin_password} "
                "(admin): demo passwords, loopback only")
    from sqlalchemy import select

    with db.reader() as session:
        has_admin = session.scalar(select(User.id).where(User.role == "admin").limit(1)) is not None
    if has_admin:
        return "the accounts in the database (readingroom users list)"
    password = environ.get(ADMIN_PASSWORD_ENV) or secrets.token_urlsafe(12)
    ensure_user(db, "admin", password, role="admin", sites=["*"])
    if environ.get(ADMIN_PASSWORD_ENV):
        return f"admin, with the password in ${ADMIN_PASSWORD_ENV} (first start: the admin was created)"
    return (f"admin / {password}  <- shown once, now: note it, or change it with "
            "`readingroom users passwd admin --password-stdin`")


def startup_banner(settings: Settings, models: list[ModelLine], *, dicom_port: int | None,
                   hl7_port: int | None = None, logins: str = "") -> str:
    """What ``readingroom run`` prints once it listens: where to go, how to log in, the ports,
    the data folder and every model it uses (a missing one loudly, with what to do)."""
    url = f"{'https' if settings.web.tls else 'http'}://{settings.web.host}:{settings.web.port}"
    lines = [
        "=" * 72,
        f"ReadingRoom is running. {NOT_FOR_CLINICAL_USE}",
        f"  Web page:       {url}",
        f"  Logins:         {logins or 'the accounts in the database (readingroom users list)'}",
        f"  DICOM listener: AE {settings.dicom.ae_title} on {settings.dicom.host}:{dicom_port}"
        " (C-STORE, C-ECHO, modality worklist C-FIND)" if dicom_port is not None else
        "  Web node only:  no DICOM or HL7 listener, no job workers (`readingroom receive`, `readingroom worker`)",
    ]
    if hl7_port is not None:
        lines.append(f"  HL7 orders:     MLLP on {settings.hl7.host}:{hl7_port}")
    lines.append(f"  Data folder:    {settings.home}")
    lines += _model_banner(models)
    lines += ["  Stop:           Ctrl-C", "=" * 72]
    return "\n" + "\n".join(lines) + "\n"


def announce(settings: Settings, intake: Any, logins: str = "") -> list[ModelLine]:
    """Check the models (quickly: sizes), log each missing one, and print the banner for the
    started intake service (its listener's and order listener's ports; None: a web node only)."""
    models = model_lines(settings)
    for line in models:
        if not line.ok:
            log.warning("%s model %r is missing: %s", line.role, line.name, line.problem)
    print(startup_banner(settings, models, dicom_port=intake.listener.port if intake else None,
                         hl7_port=intake.orders.port if intake and intake.orders else None, logins=logins),
          flush=True)
    return models


def build_workers(db: Database, settings: Settings, queue: JobQueue) -> WorkerPool:
    """The worker pool with every job handler registered: triage, notices to a site's RIS
    (order rejections and questions), report delivery (outbox) and the final decode of a
    dictated utterance (the asr queue). With ``dictation.final_decode: queue`` this process's
    live dictation sends its final decodes to ``queue`` (dictation.asr_queue)."""
    from dictation.asr_queue import FINAL_JOB, FinalDecodeHandler, QueueFinals, use_queue_finals
    from orders.review import SEND_JOB, OrderNoticeSender
    from reporting.delivery.outbox import DELIVERY_JOB, Deliverer
    from triage.notify import Notifier
    from triage.pipeline import TriagePipeline
    from triage.studies import TRIAGE_JOB

    workers = WorkerPool(queue, settings.jobs)
    workers.register(TRIAGE_JOB, TriagePipeline(db, settings, Notifier(db, settings)))
    workers.register(SEND_JOB, OrderNoticeSender(db, settings))
    workers.register(DELIVERY_JOB, Deliverer(db, settings))
    workers.register(FINAL_JOB, FinalDecodeHandler(settings.home, settings.dictation))
    if settings.dictation.final_decode == "queue":
        use_queue_finals(QueueFinals(queue, settings.home, settings.dictation, db=db, wake=workers.wake))
    return workers


def serve(settings: Settings, db: Database, demo: bool = False, web_only: bool = False) -> int:
    """The workstation: the web page, and (unless ``web_only``: a web node of a larger
    deployment, docs/deploy.md) the DICOM and HL7 listeners and the job workers."""
    import os

    import uvicorn

    from readingroom.errors import ReadingRoomError
    from readingroom.jobs import open_queue
    from triage.service import IntakeService

    for problem in (demo_hosts_problem(settings) if demo else None, web_host_problem(settings)):
        if problem:
            raise ReadingRoomError(problem)
    if demo and web_only:
        raise ReadingRoomError("--demo seeds the worklist through this node's own DICOM listener, which "
                               "--web-only does not start: use one of them")
    if demo:  # the demo hospitals' RIS (a daemon thread) and folders, for the sites without destinations
        from triage.demo_site import start_demo_site

        start_demo_site(settings)
    queue = open_queue(db, settings.jobs)
    workers = build_workers(db, settings, queue)
    intake = None if web_only else IntakeService(settings, db, queue, on_complete=lambda _uids: workers.wake())
    logins = initial_logins(settings, db, demo, dict(os.environ))

    if intake is not None:
        intake.start()
    if web_only:
        log.info("web node only: the jobs it queues (report delivery, dictation finals) are run by "
                 "`readingroom worker` processes")
    elif settings.jobs.engine == "database":
        workers.start()
    else:   # Celery workers (`readingroom worker`) run the jobs
        log.info("jobs go to Celery at %s; start `readingroom worker` to run them", getattr(queue, "broker", ""))
    threading.Thread(target=_warm_up_dictation, args=(settings,), name="dictation-warm-up", daemon=True).start()
    seeder = None
    if demo and settings.demo.seed and intake is not None:
        seeder = threading.Thread(target=_seed_demo_once, args=(settings, db, intake.listener.port),
                                  name="demo-seed", daemon=True)
        seeder.start()
    try:
        web = build_web_app(settings, db, queue=queue, wake=workers.wake)
        tls = {"ssl_certfile": settings.web.tls_certfile, "ssl_keyfile": settings.web.tls_keyfile} \
            if settings.web.tls else {}
        server = uvicorn.Server(uvicorn.Config(web, host=settings.web.host, port=settings.web.port, **tls,
                                               log_level="warning", lifespan="on", timeout_graceful_shutdown=5))
        announce(settings, intake, logins)
        try:
            server.run()   # returns on Ctrl-C or SIGTERM, after closing connections
        except KeyboardInterrupt:  # uvicorn re-raises the signal once it has shut down
            pass
    finally:
        log.info("shutting down")
        if intake is not None:
            intake.stop()
        workers.stop()
        db.dispose()
    print("ReadingRoom stopped.", flush=True)
    return 0


# ---- the command line -------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    overrides = dicom_overrides(args)
    if args.web_port is not None:
        overrides["web"] = {"port": args.web_port}
    ctx = Context(overrides, log_to_file=True)
    return serve(ctx.settings, ctx.db, demo=args.demo, web_only=args.web_only)


def cmd_worker(args: argparse.Namespace) -> int:
    from readingroom.errors import ReadingRoomError
    from readingroom.jobs import kinds_for_queues, open_queue, select_queues

    ctx = Context(log_to_file=True)
    jobs = ctx.settings.jobs
    queue = open_queue(ctx.db, jobs)
    pool = build_workers(ctx.db, ctx.settings, queue)
    queues = select_queues(jobs, args.queues.split(",") if args.queues is not None else None)
    if jobs.engine == "celery":
        from readingroom.celery_queue import run_worker

        if args.once:
            raise ReadingRoomError("--once runs the due jobs of the database engine; with jobs.engine: celery "
                                   "start `readingroom worker` and stop it with Ctrl-C")
        return run_worker(queue, pool.handlers, queues, loglevel=ctx.settings.log_level)
    if args.queues is not None:   # the database engine: the queues choose the job kinds
        pool.handlers = {kind: pool.handlers[kind] for kind in kinds_for_queues(jobs, pool.handlers, queues)}
    if args.once:
        ran = 0
        while pool.run_once():
            ran += 1
        print(f"ran {ran} job(s)")
        return 0
    pool.start()
    try:
        wait_for_stop()
    finally:
        pool.stop()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from readingroom import logs
    from readingroom.settings import load_settings

    settings = load_settings()
    logs.configure(settings.log_level)
    lines = model_lines(settings, checksum=True, install=not args.check)
    if args.json:
        print(json.dumps([{**vars(line), "ok": line.ok} for line in lines], indent=2))
    else:
        for line in lines:
            state = f"ok ({line.checked})" if line.ok else "MISSING"
            print(f"{state:<14} {line.role:<14} {(line.name + ' ' + line.version).strip():<18} {line.path}")
    problems = [line for line in lines if not line.ok]
    for line in problems:
        print(f"readingroom: {line.role} model {line.name!r}: {line.problem}", file=sys.stderr)
    return 1 if problems else 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The commands that need the whole application: run, worker, models."""
    p = sub.add_parser("run", help="start the workstation: DICOM listener, workers and the web page")
    p.add_argument("--demo", action="store_true", help="seed the demo worklist on first start")
    add_dicom_arguments(p)
    p.add_argument("--web-port", type=int, help="web page port (default: web.port)")
    p.add_argument("--web-only", action="store_true",
                   help="the web page alone: no DICOM or HL7 listener, no job workers (a web node, docs/deploy.md)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="run the job workers alone (triage, dictation finals, delivery); a Celery worker "
                                      "with jobs.engine: celery")
    p.add_argument("--once", action="store_true", help="run the jobs that are due, then exit (database engine)")
    p.add_argument("--queues", metavar="Q1,Q2",
                   help="serve only these queues (triage, asr, delivery; jobs.queues maps job kinds to them)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("models", help="check every model (Whisper by SHA-256, triage weights) and install "
                                      "a missing Whisper model")
    p.add_argument("--check", action="store_true", help="only check; exit 1 if a model is missing or damaged")
    p.add_argument("--json", action="store_true", help="a JSON list, one object per model")
    p.set_defaults(func=cmd_models)


# Subcommands with their own argument parser: everything after the name is theirs.
# name -> (module, function, help line); --help lists every one.
PASSTHROUGH = {
    "orders": ("orders.cli", "main", "review imaging orders: list, show, approve, reject"),
    "simulate": ("triage.simulator.cli", "main",
                 "night-shift simulator: report turnaround under FIFO and AI ordering"),
    "phantoms": ("models.cli", "phantoms", "write synthetic DICOM studies with their ground truth and labels.csv"),
    "train": ("models.cli", "train", "train a triage model on phantoms, export ONNX, write its model card"),
    "evaluate": ("models.cli", "evaluate", "score a triage model on a folder of labelled studies"),
    "transcribe": ("dictation.cli", "main", "transcribe a dictation into a structured report"),
    "report": ("reporting.report_cli", "main",
               "report lifecycle: new, set, check, sign, addendum, export, outbox, audit"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``readingroom`` parser, in workflow order: the application, triage, the pass-through
    commands (orders, models, dictation, reporting), then the kernel's."""
    from readingroom import audit_cli
    from readingroom import cli as kernel_cli
    from triage import cli as triage_cli

    return kernel_cli.build_parser([add_commands, triage_cli.add_commands, kernel_cli.add_commands,
                                    audit_cli.add_commands], PASSTHROUGH)


def dispatch_table() -> dict[str, str]:
    """Every subcommand and what runs it (``module:function``); tests/test_cli_help.py holds
    --help and the README to it."""
    from readingroom import cli as kernel_cli

    return kernel_cli.dispatch_table(build_parser(), PASSTHROUGH)


def main(argv: list[str] | None = None) -> int:
    """``readingroom``: the console script, and ``python app.py [COMMAND ...]`` (no command: ``run``)."""
    import os

    from readingroom import cli as kernel_cli
    from readingroom.storage import PRIVATE_UMASK

    os.umask(PRIVATE_UMASK)   # every file it writes holds patient data: owner only (0600, folders 0700)
    return kernel_cli.run_main(sys.argv[1:] if argv is None else argv, build_parser, PASSTHROUGH)


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        args = ["run", *args]
    sys.exit(main(args))
