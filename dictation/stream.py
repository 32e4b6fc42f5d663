"""Streaming recognition: audio chunks in, partial text while speaking, final text per utterance.

Endpointing with the Silero VAD (dictation.vad): an utterance starts at speech (with
``speech_pad_ms`` of audio before it) and ends after ``min_silence_duration_ms`` of silence, or
at ``max_utterance_s``. While speaking, the current utterance (and only it) is re-decoded every
``partial_interval_ms`` for a partial result. Buffers are bounded: latency does not grow over a
long session. No speech, no decoding: silence and noise produce no text.

Two-pass: partials come from the live model; the final text of an utterance from the final model
(Engine(final=True)). With ``background=True`` the final decode runs on one worker thread and its
``Final`` is returned by a later ``feed()`` (finals stay in order; ``flush()`` waits for all), so
the partials of the next utterance are not held up by it.

When more than ``final_backlog`` utterances wait for their final text (continuous dictation on
a busy machine), a waiting utterance is decoded by the live model instead (``Final.fast``).

Commands: an utterance of at most ``command_max_s`` is first decoded with ``command_prompt``;
if ``is_command`` accepts that text it is the final text, otherwise the utterance is decoded as
dictation with the normal prompt (``decode_final``: the one rule, used by the asr workers too).

With ``remote`` (dictation.final_decode: queue), each ended utterance becomes a job on the ``asr``
queue at once (dictation.asr_queue.QueueFinals) and the final thread waits for its answer in
utterance order; an utterance no worker answered in time is decoded here (nothing is lost).
"""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from dictation.audio import SAMPLE_RATE
from readingroom.settings import DictationSettings
from dictation.transcribe import Engine, Transcript
from dictation.vad import FRAME_SAMPLES, StreamingVad

if TYPE_CHECKING:
    from dictation.asr_queue import FinalRequest, QueueFinals, Ticket

log = logging.getLogger(__name__)

FRAME_MS = FRAME_SAMPLES * 1000 / SAMPLE_RATE


@dataclass(frozen=True)
class Partial:
    text: str
    audio_end_s: float           # stream time of the last sample decoded
    decode_s: float
    final_pending: bool = False  # the whole utterance, at its end; its final text is being decoded
    utterance: int = -1          # with final_pending: the utterance's number (its Final carries it)


@dataclass(frozen=True)
class Final:
    text: str
    start_s: float
    end_s: float
    transcript: Transcript
    utterance: int = -1          # the utterance's number in the stream (0, 1, ...)
    fast: bool = False           # decoded by the live model: the final model was too far behind


class StreamingTranscriber:
    def __init__(
        self,
        engine: Engine,
        settings: DictationSettings | None = None,
        *,
        prompt: Callable[[], str | None] | str | None = None,
        hotwords: str | None = None,
        partials: bool = True,
        command_prompt: Callable[[], str | None] | str | None = None,
        is_command: Callable[[str], bool] | None = None,
        background: bool = False,
        provisional: bool = False,
        remote: "QueueFinals | None" = None,
        command_macros: Iterable[str] = (),
    ) -> None:
        self.engine = engine
        self.s = settings or engine.settings
        self._prompt = prompt
        self.hotwords = hotwords
        self.partials = partials
        self._command_prompt = command_prompt
        self.is_command = is_command
        # dictation.final_decode: queue: the final text of each utterance is a job on the asr
        # queue (dictation.asr_queue); ``command_macros``: the template's macros, for its command check.
        self.remote = remote
        self.command_macros = tuple(command_macros)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="final") if background else None
        # At each endpoint, decode the whole utterance with the live model at once (a Partial with
        # final_pending) while the final model works in the background: text on screen sooner.
        self.provisional = provisional and background
        self._jobs: deque[Future] = deque()
        self.vad = StreamingVad()
        self._pending = np.zeros(0, np.float32)
        pad_frames = max(1, int(self.s.speech_pad_ms / FRAME_MS))
        self._preroll: deque[np.ndarray] = deque(maxlen=pad_frames)
        self._utterance: list[np.ndarray] = []
        self._in_speech = False
        self._speech_frames = 0
        self._silence_frames = 0
        self._frames_seen = 0
        self._start_frame = 0
        self._last_partial_frame = 0
        self._last_partial_text = ""
        self._utterances = 0

    @property
    def prompt(self) -> str | None:
        return self._prompt() if callable(self._prompt) else self._prompt

    @property
    def command_prompt(self) -> str | None:
        return self._command_prompt() if callable(self._command_prompt) else self._command_prompt

    @property
    def pending_finals(self) -> int:
        return len(self._jobs)

    @property
    def buffered_s(self) -> float:
        """Audio held for the current utterance (bounded by max_utterance_s)."""
        return sum(len(a) for a in self._utterance) / SAMPLE_RATE

    def feed(self, samples: np.ndarray) -> list[Partial | Final]:
        """16 kHz float32 mono samples in; the events they complete out."""
        self._pending = np.concatenate([self._pending, np.asarray(samples, np.float32).reshape(-1)])
        usable = len(self._pending) // FRAME_SAMPLES * FRAME_SAMPLES
        frames, self._pending = self._pending[:usable], self._pending[usable:]
        events: list[Partial | Final] = []
        if not usable:
            return self.collect(wait=False)
        probs = self.vad.probabilities(frames)
        for i, p in enumerate(probs):
            events.extend(self._step(frames[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES], float(p)))
        if self._in_speech and self.partials:
            due = (self._frames_seen - self._last_partial_frame) * FRAME_MS >= self.s.partial_interval_ms
            if due and self._speech_frames * FRAME_MS >= self.s.min_speech_duration_ms:
                events.append(self._partial())
        events.extend(self.collect(wait=False))
        return events

    def collect(self, wait: bool = False) -> list[Final]:
        """The finals decoded in the background since the last call, in order (``wait``: all of
        them, waiting for the ones in progress). Without ``background``, always empty."""
        out: list[Final] = []
        while self._jobs and (wait or self._jobs[0].done()):
            out.extend(self._jobs.popleft().result())
        return out

    def flush(self) -> list[Partial | Final]:
        """End of stream: finish the utterance in progress."""
        events: list[Partial | Final] = []
        if len(self._pending):
            pad = np.zeros(FRAME_SAMPLES - len(self._pending) % FRAME_SAMPLES, np.float32)
            events.extend(self.feed(pad))
        if self._in_speech:
            events.extend(self._final())
        events.extend(self.collect(wait=True))
        return events

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ----------------------------------------------------------------------------------------
    def _step(self, frame: np.ndarray, prob: float) -> list[Final]:
        s = self.s
        self._frames_seen += 1
        if not self._in_speech:
            self._preroll.append(frame)
            if prob >= s.vad_threshold:
                self._in_speech = True
                self._utterance = list(self._preroll)
                self._preroll.clear()
                self._start_frame = self._frames_seen - len(self._utterance)
                self._speech_frames, self._silence_frames = 1, 0
                self._last_partial_frame = self._frames_seen
            return []
        self._utterance.append(frame)
        if prob >= s.vad_threshold - 0.15:
            self._speech_frames += 1
            self._silence_frames = 0
        else:
            self._silence_frames += 1
        ended = self._silence_frames * FRAME_MS >= s.min_silence_duration_ms
        too_long = len(self._utterance) * FRAME_MS >= s.max_utterance_s * 1000
        if ended or too_long:
            return self._final()
        return []

    def _audio(self) -> np.ndarray:
        return np.concatenate(self._utterance) if self._utterance else np.zeros(0, np.float32)

    def _partial(self) -> Partial:
        self._last_partial_frame = self._frames_seen
        result = self.engine.transcribe(self._audio(), prompt=self.prompt, hotwords=self.hotwords)
        if result.text:
            self._last_partial_text = result.text
        return Partial(self._last_partial_text, self._frames_seen * FRAME_MS / 1000, result.decode_s)

    def _final(self) -> list[Final]:
        s = self.s
        # keep speech_pad_ms of the trailing silence, drop the rest
        keep_silence = int(s.speech_pad_ms / FRAME_MS)
        drop = max(0, self._silence_frames - keep_silence)
        frames = self._utterance[: len(self._utterance) - drop] if drop else self._utterance
        start_s = self._start_frame * FRAME_MS / 1000
        end_s = (self._start_frame + len(frames)) * FRAME_MS / 1000
        speech_ms = self._speech_frames * FRAME_MS
        self._in_speech = False
        self._utterance, self._speech_frames, self._silence_frames = [], 0, 0
        self._last_partial_text = ""
        if speech_ms < s.min_speech_duration_ms:
            return []
        audio = np.concatenate(frames)
        number = self._utterances
        self._utterances += 1
        ticket = self.remote.submit(audio, self._request()) if self.remote is not None else None
        if self._executor is not None:
            if ticket is not None:
                self._jobs.append(self._executor.submit(self._queued_final, ticket, audio, start_s, end_s, number))
            else:
                self._jobs.append(self._executor.submit(self._decode_final, audio, start_s, end_s, number))
            if self.provisional:   # with half a second of silence after it: Whisper keeps the last word
                padded = np.concatenate([audio, np.zeros(SAMPLE_RATE // 2, np.float32)])
                quick = self.engine.transcribe(padded, prompt=self.prompt, hotwords=self.hotwords)
                return [Partial(quick.text, end_s, quick.decode_s, final_pending=True, utterance=number)] \
                    if quick.text else []
            return []
        if ticket is not None:
            return self._queued_final(ticket, audio, start_s, end_s, number)
        return self._decode_final(audio, start_s, end_s, number)

    def _behind(self, number: int) -> bool:
        """More than final_backlog utterances after this one wait for their final text."""
        backlog = self.s.final_backlog      # (decoded inline, an utterance is always the newest)
        return bool(backlog) and self._utterances - 1 - number >= backlog

    def _decode_final(self, audio: np.ndarray, start_s: float, end_s: float, number: int = -1) -> list[Final]:
        fast = self._behind(number)   # the final model cannot keep up: the live model decodes it
        if fast:
            log.info("final text of utterance %d from the live model: %d utterances wait", number,
                     self._utterances - 1 - number)
        result = decode_final(self.engine, self.s, audio, prompt=self.prompt, hotwords=self.hotwords,
                              command_prompt=self.command_prompt, is_command=self.is_command, fast=fast)
        return [Final(result.text, start_s, end_s, result, number, fast)] if result is not None else []

    def _request(self) -> "FinalRequest":
        """What a worker needs to decode an utterance as ``_decode_final`` would (dictation.asr_queue)."""
        from dictation.asr_queue import FinalRequest

        return FinalRequest(self.prompt, self.hotwords, self.command_prompt,
                            None if self.is_command is None else tuple(self.command_macros))

    def _queued_final(self, ticket: "Ticket", audio: np.ndarray, start_s: float, end_s: float,
                      number: int) -> list[Final]:
        """The final text of a ``dictation_final`` job; decoded here when no worker answered in time."""
        assert self.remote is not None
        answer = self.remote.wait(ticket)
        if not answer.answered:
            log.warning("final text of utterance %d decoded locally: %s", number, answer.why)
            return self._decode_final(audio, start_s, end_s, number)
        result = answer.transcript
        return [Final(result.text, start_s, end_s, result, number)] if result is not None else []


def decode_final(engine: Engine, settings: DictationSettings, audio: np.ndarray, *, prompt: str | None,
                 hotwords: str | None = None, command_prompt: str | None = None,
                 is_command: Callable[[str], bool] | None = None, fast: bool = False) -> Transcript | None:
    """The final text of one utterance (None: no text): a short one is first decoded with the
    command prompt and kept if it is a confirmed command; else decoded as dictation with
    ``prompt``. ``fast``: the live model instead of the final model. The one final-decode rule
    of the web node (StreamingTranscriber) and of the ``asr`` workers (dictation.asr_queue)."""
    spent = 0.0
    if is_command is not None and len(audio) / SAMPLE_RATE <= settings.command_max_s and command_prompt:
        result = engine.transcribe(audio, prompt=command_prompt, final=not fast)
        if result.text and is_command(result.text):
            confirmed, check_s = confirm_command(engine, settings, audio, result.text, is_command)
            result.decode_s += check_s
            if confirmed:
                return result
        spent = result.decode_s
    result = engine.transcribe(audio, prompt=prompt, hotwords=hotwords, final=not fast)
    result.decode_s += spent
    return result if result.text else None


def confirm_command(engine: Engine, settings: DictationSettings, audio: np.ndarray, command_text: str,
                    is_command: Callable[[str], bool] | None) -> tuple[bool, float]:
    """A command heard with the command prompt must not be a longer sentence without it.

    The command prompt pulls short dictated sentences towards command phrases ("Portable
    chest radiograph." came out as "Paragraph."). The live model decodes the same audio
    without any prompt; the command is dropped only when that text is no command, is not
    close to the command text (character similarity < command_confirm_similarity) and has
    at least command_confirm_extra_words more words: the prompt swallowed words. (Dropping
    on dissimilarity alone lost 1 command in 5: unprompted tiny.en mishears short commands;
    with 2 extra words, 3 in 50; with 3, none. Chosen on the benchmark corpus.)
    Returns (confirmed, seconds spent)."""
    if not settings.command_confirm:
        return True, 0.0
    check = engine.transcribe(audio, prompt=None, final=False)
    if not check.text or (is_command is not None and is_command(check.text)):
        return True, check.decode_s
    similarity = text_similarity(check.text, command_text)
    extra = len(check.text.split()) - len(command_text.split())
    if similarity < settings.command_confirm_similarity and extra >= settings.command_confirm_extra_words:
        log.info("command %r not confirmed: without the prompt it is %r (similarity %.2f, %d more words); "
                 "kept as text", command_text, check.text, similarity, extra)
        return False, check.decode_s
    return True, check.decode_s


def text_similarity(a: str, b: str) -> float:
    """Character similarity (0..1) of two texts, ignoring case, punctuation and spacing."""
    from difflib import SequenceMatcher

    def squash(t: str) -> str:
        return "".join(ch for ch in t.lower() if ch.isalnum())

    return SequenceMatcher(None, squash(a), squash(b)).ratio()



__all__ = ["FRAME_MS", "Final", "Partial", "StreamingTranscriber", "confirm_command", "decode_final",
           "text_similarity"]
