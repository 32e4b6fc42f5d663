import pytest

from readingroom.jobs import DatabaseJobQueue
from triage.service import IntakeService


@pytest.fixture
def listener(settings, db):
    """The real listener (pynetdicom) with its study monitor, on a free port."""
    service = IntakeService(settings, db, DatabaseJobQueue(db, settings.jobs))
    service.start()
    yield service
    service.stop()
