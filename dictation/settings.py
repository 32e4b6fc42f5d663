"""Dictation settings: one typed dataclass with the defaults the benchmark chose.

Not yet wired to configs/default.yaml; ``DictationSettings.from_mapping()`` takes the future
``dictation:`` block (a plain mapping) so the wiring is one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

from readingroom.errors import ConfigError
from readingroom.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

CONFIG_DIR = PROJECT_ROOT / "configs"


@dataclass(frozen=True)
class DictationSettings:
    # Model: "tiny.en", "base", or the path of any CTranslate2 Whisper directory.
    model: str = "tiny.en"
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    language: str = "en"
    # Two-pass: partials with ``model`` (fast), the final text of each utterance with
    # ``final_model`` at ``final_beam_size`` ("" = ``model``). In streaming the final decode runs
    # on a worker thread so partials of the next utterance are not held up.
    final_model: str = "base"
    final_beam_size: int = 5
    final_in_background: bool = True
    # Linux nice value of the final model's threads: the final pass yields the CPU to partials.
    final_nice: int = 10
    # While more than this many utterances wait for their final text (the CPU cannot keep up
    # with continuous dictation), the waiting ones are decoded by the live model instead: the
    # text stays within seconds of the speech. 0 turns this off.
    final_backlog: int = 2
    # Commands: an utterance of at most this many seconds is first decoded with a prompt of
    # command phrases; it is kept only if the whole text is a command, else decoded as text.
    command_max_s: float = 3.0
    use_command_prompt: bool = True
    # ...and confirmed by a decode without the prompt (see StreamingTranscriber._confirm_command).
    command_confirm: bool = True
    command_confirm_similarity: float = 0.6
    command_confirm_extra_words: int = 3
    # Biasing: hotwords/prompt from the lexicon and the active template.
    use_prompt: bool = True
    use_hotwords: bool = False
    prompt_max_terms: int = 20
    # Hallucination filter: drop a segment above/below these.
    max_no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.0
    # A final text that is a repetition loop ("lylyly…", compression ratio > 2.4) is decoded
    # again without the prompt, then by the live model.
    degenerate_fallback: bool = True
    # Streaming / endpointing (Silero VAD).
    vad_threshold: float = 0.5
    min_silence_duration_ms: int = 600
    min_speech_duration_ms: int = 200
    speech_pad_ms: int = 200
    partial_interval_ms: int = 800
    max_utterance_s: float = 25.0
    # Post-correction: accept a lexicon term only if it is this close (0..1) and this much
    # closer than the runner-up.
    correction_min_similarity: float = 0.82
    correction_margin: float = 0.05
    # Files.
    lexicon_path: Path = CONFIG_DIR / "lexicon.txt"
    commands_path: Path = CONFIG_DIR / "commands.yaml"
    templates_dir: Path = CONFIG_DIR / "templates"
    template: str = "free"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "DictationSettings":
        """Build from the ``dictation:`` YAML block; unknown keys are an error naming them."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"Unknown dictation setting(s) {unknown}; valid keys are {sorted(known)}."
            )
        for key, value in list(data.items()):
            if key.endswith("_path") or key.endswith("_dir"):
                data[key] = Path(value)
        settings = cls(**data)
        if settings.cpu_threads < 1:
            raise ConfigError("dictation.cpu_threads must be >= 1 (2 is the tested value).")
        if settings.beam_size < 1 or settings.final_beam_size < 1:
            raise ConfigError("dictation.beam_size and dictation.final_beam_size must be >= 1.")
        if not 0 <= settings.command_confirm_similarity <= 1:
            raise ConfigError("dictation.command_confirm_similarity must be between 0 and 1 (0.6 is the tested value).")
        return settings

    def with_(self, **changes: Any) -> "DictationSettings":
        return replace(self, **changes)
