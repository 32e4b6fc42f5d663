"""The PDF report (fpdf2): header, sections, signature, and the not-for-clinical-use note.

Built only from the signed version, with the signing time as the PDF's creation date, so that
the same version always gives the same bytes.
"""

from __future__ import annotations

import logging

from fpdf import FPDF

from readingroom import NOT_FOR_CLINICAL_USE

from reporting.delivery.document import DeliveryDoc

log = logging.getLogger(__name__)

STATUS_TITLES = {"preliminary": "PRELIMINARY REPORT", "final": "FINAL REPORT",
                 "addendum": "FINAL REPORT WITH ADDENDUM", "corrected": "CORRECTED REPORT"}


def _latin1(text: str) -> str:
    """The core PDF fonts cover Latin-1; anything else becomes '?' rather than failing."""
    return (text or "").encode("latin-1", "replace").decode("latin-1")


def _date(value: str) -> str:
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) >= 8 else value


def build_pdf(doc: DeliveryDoc) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(doc.signed_at)
    pdf.set_title(_latin1(f"{doc.description or 'Imaging report'} - {doc.patient_name}"))
    pdf.set_author(_latin1(doc.signed_by))
    pdf.set_creator("ReadingRoom")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()
    width = pdf.epw
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(width, 8, _latin1(doc.site or "Radiology report"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 7, _latin1(f"{STATUS_TITLES[doc.status]}  (version {doc.version})"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    header = [
        ("Patient", doc.patient_name.replace("^", " ")), ("Patient ID", doc.patient_id),
        ("Birth date", _date(doc.patient_birth_date)), ("Sex", doc.patient_sex),
        ("Accession", doc.accession), ("Study", doc.description), ("Study date", _date(doc.study_date)),
        ("Referring", doc.referring_physician.replace("^", " ")), ("Study UID", doc.study_uid),
    ]
    for label, value in header:
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(28, 5, _latin1(label + ":"))
        pdf.set_font("Helvetica", "", 9)
        pdf.cell(width - 28, 5, _latin1(value or "-"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    pdf.set_draw_color(120, 120, 120)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
    pdf.ln(3)
    for paragraph in doc.text.split("\n\n"):
        lines = paragraph.strip().splitlines()
        if not lines:
            continue
        first = lines[0]
        if first.endswith(":") and first.upper() == first or first.startswith(("ADDENDUM", "CRITICAL RESULT")):
            pdf.set_font("Helvetica", "B", 10)
            pdf.multi_cell(width, 5.5, _latin1(first), new_x="LMARGIN", new_y="NEXT")
            lines = lines[1:]
        pdf.set_font("Helvetica", "", 10)
        if paragraph.strip() == NOT_FOR_CLINICAL_USE or "UNVERIFIED" in paragraph:
            pdf.set_text_color(170, 0, 0)
            pdf.set_font("Helvetica", "B", 9)
        if lines:
            pdf.multi_cell(width, 5.5, _latin1("\n".join(lines)), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0, 0, 0)
        pdf.ln(2)
    pdf.ln(2)
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(width, 4, _latin1(f"Signed by {doc.signed_by} on {doc.signed_at:%Y-%m-%d %H:%M} UTC. "
                                     f"Content SHA-256: {doc.sha256}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(170, 0, 0)
    pdf.set_font("Helvetica", "B", 8)
    pdf.multi_cell(width, 4, _latin1(NOT_FOR_CLINICAL_USE), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
