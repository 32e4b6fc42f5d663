"""What a pre-sign check returns (``Issue``) and what it reads besides the text (``CheckContext``).

Severities: ``blocking`` (resolve or override with a reason), ``warn`` (acknowledge), ``critical``
(a final report needs a critical-result communication), ``info`` (logged for model QA).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)


SEVERITIES = ("blocking", "warn", "critical", "info")


@dataclass(frozen=True)
class Issue:
    key: str          # stable id: "laterality:order:right", "critical:pneumothorax"...
    check: str        # laterality, sex_age, findings_impression, critical, ai_discordance, ai_qa, template
    severity: str     # blocking, warn, critical, info
    message: str
    section: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class AIResult:
    """An AI finding of the study (UNVERIFIED): name as in findings.yaml (ich, pneumothorax...)."""

    finding: str
    positive: bool
    probability: float = 0.0
    model: str = ""
    version: str = ""


@dataclass(frozen=True)
class CheckContext:
    """Everything outside the report text that the checks compare it with. All optional."""

    patient_sex: str = ""                 # M, F, O or ""
    patient_age_years: float | None = None
    ordered_side: str | None = None       # left, right, bilateral or None
    indication: str = ""
    ai_findings: tuple[AIResult, ...] = ()
    # Fields of the template: {section: {field label: value}}; an empty value is an issue.
    template_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    # The findings told in the critical-result communications ("8 mm right subdural hematoma").
    communications: tuple[str, ...] = ()
