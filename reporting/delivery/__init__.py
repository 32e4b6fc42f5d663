"""Delivery of signed reports back to the hospital, through a durable outbox.

Each signed version gets one outbox row per destination of its study's site (sites.yaml
``destinations``) and one job in the durable job queue; the worker pool delivers it, retries it
with backoff across restarts, and marks it delivered only when the destination acknowledged it:

- ``hl7``: HL7 v2.5.1 ORU^R01 over MLLP to the RIS (``hl7.py``; delivered on an AA acknowledgement);
- ``fhir``: FHIR R4 DiagnosticReport with impression Observations and the PDF (``fhir.py``),
  POSTed to ``fhir_url`` (2xx) or written to ``fhir_folder``;
- ``dicom``: Comprehensive SR with TID 2000 sections (``sr.py``), C-STORE to the PACS (status 0x0000);
- ``pdf``: the PDF report (``pdf.py``) written to ``pdf_folder``.

Every output states that ReadingRoom is not for clinical use and that AI results are UNVERIFIED.
``document.py`` gathers what the builders need; ``outbox.py`` is the worker side and the status.
"""

from reporting.delivery.document import DeliveryDoc, load_document
from reporting.delivery.outbox import DESTINATIONS, Deliverer, delivery_status, destinations_for, export, retry

__all__ = ["DESTINATIONS", "Deliverer", "DeliveryDoc", "delivery_status", "destinations_for", "export",
           "load_document", "retry"]
