"""The page's side of live dictation: the names the workstation uses, from ``dictation.live``.

The session loop (threading, the partial/final protocol, the shared engine, the registry of open
dictations) is step 6 of the workflow and lives in ``dictation.live``; resampling the browser's
audio is ``dictation.audio``. This boundary keeps ``from workstation.live import ...`` working
for the page (workstation.pages), the audio route (workstation.web) and app.py; new code imports
``dictation.live`` directly.
"""

from __future__ import annotations

import logging

from dictation.audio import Resampler, to_mono_float
from dictation.live import REGISTRY, Feedback, LiveDictation, LiveRegistry, shared_engine
from reporting.report import SECTION_ORDER, SECTION_TITLES

log = logging.getLogger(__name__)

__all__ = ["REGISTRY", "Feedback", "LiveDictation", "LiveRegistry", "SECTION_ORDER", "SECTION_TITLES", "Resampler",
           "shared_engine", "to_mono_float"]
