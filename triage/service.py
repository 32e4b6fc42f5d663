"""The intake service: the DICOM listener plus the study monitor that queues triage."""

from __future__ import annotations

import logging
from typing import Callable

from readingroom.db import Database
from readingroom.jobs import JobQueue
from readingroom.settings import Settings
from readingroom.storage import remove_stale_temp_files
from triage.intake import Intake
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

    def start(self) -> None:
        remove_stale_temp_files(self.settings.dicom_dir)
        self.monitor.start()
        self.listener.start()
        if self.orders is not None:
            try:
                self.orders.start()
            except Exception:
                self.listener.stop()
                self.monitor.stop()
                raise

    def stop(self) -> None:
        if self.orders is not None:
            self.orders.stop()
        self.listener.stop()
        self.monitor.stop()

