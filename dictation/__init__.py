"""Hands-free dictation: offline speech recognition (faster-whisper) into a structured report.

Audio (16 kHz PCM, or wav/webm/opus/ogg decoded with PyAV) is endpointed with the Silero VAD,
decoded per utterance with Whisper (tiny.en by default, int8 on CPU, one shared model), biased
with a radiology lexicon, post-corrected, normalized ("nine millimeters" -> "9 mm", "L four L
five" -> "L4-L5"), and routed into report sections and template fields; whole-utterance voice
commands ("next field", "scratch that", "insert normal") edit the report. Not for clinical use.

Modules: settings, models (install/load), audio (decoding, the one resampler), vad, transcribe
(one utterance), stream (partials and finals), lexicon (bias and post-correction), normalize,
commands (the grammar), session (glue), live (the browser's live session loop: worker thread,
partial/final protocol, shared engine, registry), asr_queue (the final decodes as jobs on the
asr queue, ``dictation.final_decode: queue``), cli (``readingroom transcribe``), install
(``python -m dictation.install``).
The report it fills (sections, templates, fields) is ``reporting.report``; sign-off and delivery
are the rest of ``reporting/`` (docs/reporting.md).
"""

from dictation.audio import Resampler, decode_audio, to_mono_float
from dictation.commands import Command, CommandGrammar
from dictation.lexicon import Lexicon
from dictation.live import REGISTRY, LiveDictation, LiveRegistry, shared_engine
from dictation.models import install_base, load_model, resolve_model
from dictation.normalize import normalize_report_text
from dictation.session import DictationSession, Utterance
from readingroom.settings import DictationSettings

__all__ = [
    "REGISTRY", "Command", "CommandGrammar", "DictationSession", "DictationSettings", "Lexicon", "LiveDictation",
    "LiveRegistry", "Resampler", "Utterance", "decode_audio", "install_base", "load_model", "normalize_report_text",
    "resolve_model", "shared_engine", "to_mono_float",
]
