"""Signed report versions: the signed text and content, the content hash, and the views.

A signed version stores its content (canonical JSON) and the SHA-256 of it; ``verify_signature``
says whether the stored content still hashes to the signature. ``ReportView`` and ``VersionView``
are what ``ReportService`` (``reporting.lifecycle``) hands to the page and the CLI. Pure.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Iterable

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.schema import CriticalCommunication, ReportVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionView:
    id: int
    number: int
    status: str
    text: str
    sha256: str
    signed_by: str
    signed_at: datetime
    reason: str
    content: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["signed_at"] = self.signed_at.isoformat(timespec="seconds") + "Z"
        return out


@dataclass(frozen=True)
class ReportView:
    id: int
    study_uid: str
    accession: str
    patient_id: str
    patient_name: str
    template: str
    status: str
    sections: dict[str, str]
    fields: dict[str, dict[str, str]]
    revision: int
    text: str                      # the draft rendered as it would be signed (without statements)
    updated_at: datetime
    versions: list[VersionView] = field(default_factory=list)
    communications: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["updated_at"] = self.updated_at.isoformat(timespec="seconds") + "Z"
        out["versions"] = [v.as_dict() for v in self.versions]
        return out


def content_hash(content: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of the signed content."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def verify_signature(version: VersionView | ReportVersion) -> bool:
    """True when the stored content still hashes to the signed SHA-256."""
    return content_hash(dict(version.content)) == version.sha256


def communication_statement(c: CriticalCommunication) -> str:
    """The sentence a critical-result communication adds to the signed report."""
    read_back = "read back and confirmed" if c.read_back else "NOT read back"
    what = f" ({c.finding})" if c.finding else ""
    return (f"Critical result{what} communicated to {c.recipient} by {c.method} on "
            f"{c.communicated_at.strftime('%Y-%m-%d at %H:%M')} UTC by {c.recorded_by}; {read_back}.")


def ai_summary(ai: Iterable[Any]) -> list[dict[str, Any]]:
    """The study's AI findings (rows with finding, positive, probability, model, version) as plain data."""
    return [{"finding": f.finding, "positive": bool(f.positive), "probability": float(f.probability),
             "model": f.model, "version": f.version} for f in ai]


def signed_text(body: str, *, statements: list[str], reason: str, user: str, signed_at: datetime, status: str,
                ai: list[dict[str, Any]]) -> str:
    """The text of a signed version: the body, the communications, the correction reason, the
    signature line, the AI results (UNVERIFIED) and the not-for-clinical-use statement."""
    text = body
    if statements:
        text += "\n\nCRITICAL RESULT COMMUNICATION:\n" + "\n".join(statements)
    if reason:
        text += f"\n\nCORRECTED REPORT. Reason: {reason}"
    text += f"\n\nElectronically signed by {user} on {signed_at.strftime('%Y-%m-%d %H:%M')} UTC ({status})."
    if ai:
        text += "\n\nAI triage results (UNVERIFIED, not for clinical use): " + "; ".join(
            f"{f['finding']} {'positive' if f['positive'] else 'negative'} (p={f['probability']:.2f}, "
            f"{f['model']} {f['version']})" for f in ai) + "."
    return text + "\n\n" + NOT_FOR_CLINICAL_USE
