"""Rows for report tests: a study with one series and one instance, straight into the database."""

from __future__ import annotations

from readingroom.db import Database
from readingroom.schema import AIFinding, Instance, Series, Site, Study

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def add_study(db: Database, *, uid: str = "1.2.826.0.1.3680043.8.498.1", site: str = "Test Hospital",
              sex: str = "M", birth: str = "19600101", description: str = "CT HEAD WO CONTRAST",
              accession: str = "ACC1", ai: list[tuple[str, bool, float]] = ()) -> str:
    with db.session() as session:
        site_row = session.query(Site).filter_by(name=site).one()
        study = Study(study_uid=uid, site_id=site_row.id, patient_id="P123", patient_name="DOE^JOHN",
                      patient_birth_date=birth, patient_sex=sex, accession=accession, study_date="20261129",
                      study_time="031500", description=description, referring_physician="SMITH^ANNA",
                      status="triaged")
        session.add(study)
        session.flush()
        series = Series(series_uid=uid + ".1", study_id=study.id, modality="CT", series_number=1)
        session.add(series)
        session.flush()
        session.add(Instance(sop_uid=uid + ".1.1", series_id=series.id, sop_class_uid=CT_IMAGE,
                             path=f"dicom/{uid}/{uid}.1/{uid}.1.1.dcm", size_bytes=1, sha256="0" * 64))
        for finding, positive, p in ai:
            session.add(AIFinding(study_id=study.id, finding=finding, probability=p, positive=positive,
                                  model="test-model", version="0.1"))
    return uid
