"""A dictation session: final utterances become commands or report text.

Per utterance: if the whole utterance is a command (dictation.commands), it is executed on the
report; otherwise the text is post-corrected against the lexicon, normalized (numbers, units,
vertebral levels, spoken punctuation, sentences) and routed to the active section or field.
``process_text`` is pure (no model): the tests drive it directly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from dictation.audio import SAMPLE_RATE
from dictation.commands import Command, CommandGrammar
from dictation.lexicon import Correction, Lexicon
from dictation.normalize import normalize_report_text
from reporting.report import Report, Template, load_template
from readingroom.settings import DictationSettings

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    raw: str
    command: Command | None = None
    text: str = ""
    corrections: list[Correction] = field(default_factory=list)
    start_s: float = 0.0
    end_s: float = 0.0


def build_lexicon(settings: DictationSettings) -> Lexicon:
    from dictation.models import resolve_model

    try:
        tokenizer = resolve_model(settings.model) / "tokenizer.json"
    except Exception:  # noqa: BLE001 - no tokenizer: the lexicon works without one
        tokenizer = None
    return Lexicon.load(
        settings.lexicon_path,
        tokenizer_json=tokenizer,
        min_similarity=settings.correction_min_similarity,
        margin=settings.correction_margin,
    )


class DictationSession:
    def __init__(
        self,
        settings: DictationSettings | None = None,
        *,
        template: str | Template | None = None,
        lexicon: Lexicon | None = None,
        grammar: CommandGrammar | None = None,
        correct: bool = True,
    ) -> None:
        self.settings = settings or DictationSettings()
        name = template if template is not None else self.settings.template
        self.template = name if isinstance(name, Template) else load_template(name, self.settings.templates_dir)
        self.lexicon = lexicon or build_lexicon(self.settings)
        self.grammar = grammar or CommandGrammar.load(self.settings.commands_path)
        self.correct = correct
        self.report = Report(self.template)
        self.utterances: list[Utterance] = []

    # biasing --------------------------------------------------------------------------------
    def prompt(self) -> str | None:
        if not self.settings.use_prompt:
            return None
        return self.lexicon.prompt(self.template.terms, self.settings.prompt_max_terms)

    def command_prompt(self) -> str | None:
        """The prompt for a short utterance: command phrases (and this template's macros)."""
        if not self.settings.use_command_prompt:
            return None
        return self.grammar.prompt(self.template.macros.keys())

    def is_command(self, text: str) -> bool:
        return self.grammar.parse(text, self.template.macros.keys()) is not None

    def stream(self, engine, *, partials: bool = True, background: bool | None = None, provisional: bool = False,
               finals=None):
        """A StreamingTranscriber wired to this session's prompts and command grammar; ``finals``
        (a dictation.asr_queue.QueueFinals): the final texts are decoded by the asr workers."""
        from dictation.stream import StreamingTranscriber

        return StreamingTranscriber(
            engine, self.settings, prompt=self.prompt(), hotwords=self.hotwords(), partials=partials,
            command_prompt=self.command_prompt(), is_command=self.is_command,
            background=self.settings.final_in_background if background is None else background,
            provisional=provisional, remote=finals, command_macros=self.template.macros.keys(),
        )

    def hotwords(self) -> str | None:
        return self.lexicon.hotwords(self.template.terms) if self.settings.use_hotwords else None

    # text -----------------------------------------------------------------------------------
    def clean_text(self, raw: str) -> tuple[str, list[Correction]]:
        """Post-correction then normalization (no command handling, no report)."""
        corrections: list[Correction] = []
        text = raw
        if self.correct:
            text, corrections = self.lexicon.correct(text)
        return normalize_report_text(text), corrections

    def process_text(self, raw: str, start_s: float = 0.0, end_s: float = 0.0) -> Utterance:
        """One final utterance: a command is executed, anything else dictated."""
        utterance = Utterance(raw, start_s=start_s, end_s=end_s)
        command = self.grammar.parse(raw, self.template.macros.keys())
        if command is not None:
            utterance.command = command
            self.report.apply(command)
            log.info("command %s (%r)", command.action, raw)
        elif self.report.dictating:
            utterance.text, utterance.corrections = self.clean_text(raw)
            if utterance.text:
                self.report.dictate(utterance.text)
        self.utterances.append(utterance)
        return utterance

    # audio ----------------------------------------------------------------------------------
    def transcribe_audio(self, audio: np.ndarray, engine=None, chunk_ms: int = 100) -> dict:
        """A whole recording through the streaming path (no partials); returns timing."""
        from dictation.transcribe import Engine

        engine = engine or Engine(self.settings)
        stream = self.stream(engine, partials=False, background=False)
        step = SAMPLE_RATE * chunk_ms // 1000
        started = time.perf_counter()
        decode_s = 0.0
        for i in range(0, len(audio), step):
            for event in stream.feed(audio[i : i + step]):
                decode_s += event.transcript.decode_s
                self.process_text(event.text, event.start_s, event.end_s)
        for event in stream.flush():
            decode_s += event.transcript.decode_s
            self.process_text(event.text, event.start_s, event.end_s)
        elapsed = time.perf_counter() - started
        audio_s = len(audio) / SAMPLE_RATE
        return {
            "audio_s": round(audio_s, 3),
            "processing_s": round(elapsed, 3),
            "decode_s": round(decode_s, 3),
            "rtf": round(elapsed / audio_s, 4) if audio_s else 0.0,
            "model": self.settings.model,
            "final_model": (getattr(engine.final_model, "name", None) or self.settings.final_model
                            or self.settings.model),
            "final_beam_size": self.settings.final_beam_size,
        }

    def transcript(self) -> str:
        return " ".join(u.text for u in self.utterances if u.text).strip()


__all__ = ["DictationSession", "Utterance", "build_lexicon"]
