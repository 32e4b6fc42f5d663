"""ReadingRoom: an open-source teleradiology reading assistant. Not for clinical use.

This is the kernel, which imports no feature package (docs/architecture.md):

- ``settings``: every setting typed, loaded once (YAML, then READINGROOM_* variables);
- ``db``, ``schema``, ``migrations/``: SQLAlchemy over SQLite (default) or PostgreSQL, Alembic;
- ``storage``: atomic files; ``jobs``: the durable job queue and the worker pool; ``celery_queue``:
  the same jobs carried by Celery on Redis (``jobs.engine: celery``);
- ``auth``, ``audit``: users, roles, server-side sessions, login throttling, the audit trail of
  every view of patient data;
- ``errors``: ``ReadingRoomError`` and its kin; ``logs``: logging set up by the CLI or the app;
- ``mllp``, ``hl7``: MLLP framing and the one HL7 v2 toolkit (escaping, MSH, ACK);
- ``dicom_net``: the one DICOM C-STORE/C-ECHO client;
- ``tls``: TLS contexts and handshakes of the DICOM and MLLP listeners and senders;
- ``sites_check``: ``readingroom sites``; ``users_cli``: ``readingroom users``; ``cli``: the command
  line's context and dispatcher.

The feature packages sit above it, in workflow order: ``orders`` (steps 1-4), ``triage``
(step 5), ``models``, ``dictation`` and ``reporting`` (steps 6-7), ``workstation`` (the page).
"""

__version__ = "0.1.0"

NOT_FOR_CLINICAL_USE = (
    "ReadingRoom is a research and demonstration system. It is NOT FOR CLINICAL USE; "
    "AI results are UNVERIFIED."
)

# The submodules are imported where they are used (``from readingroom.db import Database``).
__all__ = ["NOT_FOR_CLINICAL_USE", "__version__", "audit", "auth", "celery_queue", "cli", "db", "dicom_net", "errors",
           "hl7", "jobs", "logs", "mllp", "schema", "settings", "sites_check", "storage", "tls", "users_cli"]
