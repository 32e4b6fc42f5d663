"""One utterance -> text, with faster-whisper; hallucinations in silence filtered out.

``Engine`` wraps the shared WhisperModels (dictation.models.load_model) with our decoding
options: no conditioning on earlier text (every utterance stands alone, so errors do not carry
over), an optional initial prompt / hotwords, and a segment filter: a segment is dropped when its
no_speech_prob is high or its avg_logprob is low (Whisper's invented text in noise).

Two models: ``model`` (settings.model, fast: live partials) and ``final_model``
(settings.final_model at settings.final_beam_size: the final text of an utterance). When the
final model is not installed the live model does both, with a warning.
"""

from __future__ import annotations

import logging
import re
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from dictation.audio import SAMPLE_RATE
from dictation.models import load_model
from readingroom.settings import DictationSettings
from readingroom.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    text: str
    start_s: float
    end_s: float
    avg_logprob: float
    no_speech_prob: float


@dataclass
class Transcript:
    text: str
    segments: list[Segment] = field(default_factory=list)
    dropped: list[Segment] = field(default_factory=list)
    decode_s: float = 0.0


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: length of the text over its zlib-compressed length."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


_REPEATED_CHUNK = re.compile(r"(.{2,6}?)\1{5,}", re.S)       # "lylylylyly…"
_REPEATED_WORD = re.compile(r"\b(\w+)\b(?:\W+\1\b){4,}", re.I)   # a word 5+ times in a row


def is_degenerate(text: str, max_compression_ratio: float = 2.4) -> bool:
    """A repetition loop of the decoder: a word or a few characters repeated many times, or
    text that compresses too well (Whisper's own 2.4 threshold, for texts long enough)."""
    if not text:
        return False
    if _REPEATED_CHUNK.search(text) or _REPEATED_WORD.search(text):
        return True
    return len(text) >= 60 and compression_ratio(text) > max_compression_ratio


def _english_only(model) -> bool:
    return not getattr(model, "model", None) or not model.model.is_multilingual


class Engine:
    def __init__(self, settings: DictationSettings, model=None, final_model=None) -> None:
        self.settings = settings
        load = {"device": settings.device, "compute_type": settings.compute_type, "cpu_threads": settings.cpu_threads}
        self.model = model or load_model(settings.model, **load)
        if final_model is not None:
            self.final_model = final_model
        elif model is not None or not settings.final_model or settings.final_model == settings.model:
            self.final_model = self.model
        else:
            try:
                self.final_model = load_model(settings.final_model, **load, nice=settings.final_nice)
            except ConfigError as exc:
                log.warning("final model %r unavailable (%s); the live model decodes finals too",
                            settings.final_model, exc)
                self.final_model = self.model

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        prompt: str | None = None,
        hotwords: str | None = None,
        beam_size: int | None = None,
        filter_segments: bool = True,
        final: bool = False,
    ) -> Transcript:
        """Decode one utterance; ``final`` selects the final model and final beam size."""
        started = time.perf_counter()
        result = self._decode(audio, prompt, hotwords, beam_size, filter_segments, final)
        if final and self.settings.degenerate_fallback and is_degenerate(result.text):
            # A repetition loop (beam search at temperature 0 has no fallback of its own): decode
            # again without the prompt; if that loops too, the live model's plain text.
            log.warning("final text degenerate (%r…); decoding again without prompt", result.text[:60])
            retry = self._decode(audio, None, None, beam_size, filter_segments, final)
            if is_degenerate(retry.text) and self.final_model is not self.model:
                log.warning("still degenerate (%r…); live model text", retry.text[:60])
                retry = self._decode(audio, None, None, None, filter_segments, False)
            result = retry
        result.decode_s = time.perf_counter() - started
        return result

    def _decode(self, audio, prompt, hotwords, beam_size, filter_segments, final) -> Transcript:
        s = self.settings
        model = self.final_model if final else self.model
        beam = beam_size or (s.final_beam_size if final else s.beam_size)
        started = time.perf_counter()
        segments, _info = model.transcribe(
            audio.astype(np.float32),
            language=s.language if not _english_only(model) else None,
            beam_size=beam,
            initial_prompt=prompt,
            hotwords=hotwords,
            condition_on_previous_text=False,
            temperature=0.0,
            without_timestamps=True,
            vad_filter=False,
            no_speech_threshold=s.max_no_speech_prob,
            log_prob_threshold=s.min_avg_logprob,
        )
        kept, dropped = [], []
        for seg in segments:
            item = Segment(seg.text.strip(), seg.start, seg.end, seg.avg_logprob, seg.no_speech_prob)
            bad = item.no_speech_prob > s.max_no_speech_prob or item.avg_logprob < s.min_avg_logprob
            (dropped if filter_segments and bad else kept).append(item)
        text = " ".join(x.text for x in kept if x.text).strip()
        return Transcript(text, kept, dropped, time.perf_counter() - started)

    @property
    def _english_only(self) -> bool:
        return _english_only(self.model)

    def seconds(self, audio: np.ndarray) -> float:
        return len(audio) / SAMPLE_RATE
