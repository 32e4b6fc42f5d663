"""The intake service: the DICOM listener plus the study monitor that queues triage.

At start, before it listens: temporary files of interrupted writes are removed, then the
reconcile (``Intake.reconcile``) indexes or quarantines any ``.dcm`` file without a database row.
"""

from __future__ import annotations

import logging
from typing import Callable

from readingroom.db import Database
from readingroom.jobs import JobQueue
from readingroom.settings import Settings
from readingroom.storage import remove_stale_temp_files
from triage.intake import Intake, ReconcileSummary
from triage.scp import DicomListener
from triage.studies import StudyMonitor

log = logging.getLogger(__name__)


class IntakeService:
    """The DICOM listener (C-STORE, and the modality worklist C-FIND), the study monitor, and the
    HL7 order listener when ``hl7.enabled``."""

    def __init__(self, settings: Settings, db: Database, queue: JobQueue,
                 on_complete: Callable[[list[str]], None] | None = None) -> None:
        self.settings = settings
        self.monitor = StudyMonitor(db, queue, settings, on_complete=on_complete)
        self.intake = Intake(settings, db, on_instance=self.monitor.note_instance)
        self.listener = DicomListener(settings, self.intake)
        self.orders = None
        if settings.hl7.enabled:
            from orders.listener import OrderListener

            self.orders = OrderListener(settings, db)

    def start(self, reconcile: bool = True) -> None:
        """``reconcile`` False: another process did the start-up clean-up and reconcile (one of
        several listener processes on a port, triage/listener_group.py)."""
        if reconcile:
            self.clean_up()
        self.monitor.start()
        self.listener.start()
        if self.orders is not None:
            try:
                self.orders.start()
            except Exception:
                self.listener.stop()
                self.monitor.stop()
                raise

    def clean_up(self) -> ReconcileSummary | None:
        """What a listener does before it listens: remove the temporary files of interrupted
        writes, then the reconcile."""
        remove_stale_temp_files(self.settings.dicom_dir)
        return self.reconcile()

    def reconcile(self) -> ReconcileSummary | None:
        """The start-up reconcile (``Intake.reconcile``), logged: INFO when every file on disk
        was indexed already, WARNING when it indexed or quarantined any. A failure is logged
        and the listener starts anyway (None): images keep arriving, the next start retries."""
        try:
            summary = self.intake.reconcile()
        except Exception:
            log.exception("start-up reconcile of %s failed; the listener starts anyway. Restart it to "
                          "try again, and see the error above", self.settings.dicom_dir)
            return None
        level = logging.WARNING if summary.changed else logging.INFO
        log.log(level, "start-up reconcile of %s: %s", self.settings.dicom_dir, summary.format())
        if summary.left:
            log.warning("%d file(s) under %s could not be indexed nor quarantined now (see above); "
                        "the next start tries again", summary.left, self.settings.dicom_dir)
        return summary

    def stop(self) -> None:
        if self.orders is not None:
            self.orders.stop()
        self.listener.stop()
        self.monitor.stop()

