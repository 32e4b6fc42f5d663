"""The live dictation session: microphone chunks in, partial text, commands and report out.

Step 6 of the workflow (speech -> structured report), for a browser that streams audio. One
``LiveDictation`` per radiologist and open study, shared by the page's callbacks and the audio
route (``REGISTRY``). The Whisper engine is loaded once per process (``shared_engine``). The page
posts 16-bit PCM chunks in order; ``feed`` resamples them to 16 kHz (dictation.audio.Resampler)
and only queues them (the route must answer at once), and a worker thread runs the same
``StreamingTranscriber`` that the CLI and the benchmark use, with finals decoded in the
background. The partial/final protocol: a partial is shown where it will go, the live model's
text of a finished utterance stays on screen (``Feedback.pending``) until its final text is in
the report. The page (workstation/tab_reading.py) only shows what this returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from dictation.audio import Resampler
from dictation.session import DictationSession
from readingroom.settings import DictationSettings
from reporting.report import SECTION_ORDER

log = logging.getLogger(__name__)

_engine = None
_engine_lock = threading.Lock()


def shared_engine(settings: DictationSettings):  # dictation.transcribe.Engine
    """The process's Whisper engine, loaded on first use (a few seconds), then reused."""
    global _engine
    with _engine_lock:
        if _engine is None:
            from dictation.transcribe import Engine

            started = time.perf_counter()
            _engine = Engine(settings)
            log.info("dictation engine loaded in %.1f s", time.perf_counter() - started)
        return _engine


@dataclass
class Feedback:
    partial: str = ""
    # Live-model text of the utterances whose final text is pending, by utterance number (finals
    # come in order; on a busy machine several may wait).
    pending: dict[int, str] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    last_final_at: float | None = None     # time.time() of the last final text

    @property
    def provisional(self) -> str:
        """What is shown in the active section until the finals replace it."""
        return " ".join(self.pending.values())

    def resolved(self, utterance: int) -> None:
        """The final of ``utterance`` came: its provisional text (and any older one) goes."""
        self.pending = {k: v for k, v in self.pending.items() if utterance >= 0 and k > utterance}


class LiveDictation:
    """A dictation into one report. Thread-safe: Gradio may call feed() from worker threads."""

    def __init__(self, template: str = "free", settings: DictationSettings | None = None,
                 sections: dict[str, str] | None = None, engine=None,
                 fields: dict[str, dict[str, str]] | None = None, finals=None) -> None:
        self.settings = settings or DictationSettings()
        self._finals = finals     # dictation.asr_queue.QueueFinals, with dictation.final_decode: queue
        self.session = DictationSession(self.settings, template=template)
        report = self.session.report
        for name, text in (sections or {}).items():
            if name in report.sections:
                report.sections[name] = text or ""
        for name, values in (fields or {}).items():
            for key, value in (values or {}).items():
                if key in report.fields.get(name, {}):
                    report.fields[name][key] = value or ""
        # The stored draft this dictation autosaves into (reporting.lifecycle.ReportService).
        self.report_id: int | None = None
        self.revision: int | None = None
        self.saved_key = self.content_key()
        self.shown: tuple[str, str, str] | None = None   # (partial, command, view_key) on the page
        self._engine = engine
        self._stream = None
        self._lock = threading.Lock()
        self._audio: queue.Queue[np.ndarray | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._resampler: Resampler | None = None
        self.feedback = Feedback()
        self.recording = False
        # A signed final report: nothing may change it here (only an addendum, which the page adds).
        self.read_only = False
        self.study_line = ""      # the reading tab's header: patient, study, claim

    @property
    def engine(self):
        if self._engine is None:
            self._engine = shared_engine(self.settings)
        return self._engine

    def final_decoder(self):  # dictation.asr_queue.QueueFinals | None
        """With dictation.final_decode: queue, the client that sends each utterance's final decode
        to the asr queue (this process's, set up by app.build_workers); None: decoded here."""
        if self.settings.final_decode != "queue":
            return None
        if self._finals is None:
            from dictation.asr_queue import queue_finals

            self._finals = queue_finals()
            if self._finals is None:
                log.warning("dictation.final_decode is queue, but this process has no job queue for it "
                            "(app.build_workers sets it up): the final texts are decoded here")
        return self._finals

    def _events(self, events) -> None:
        from dictation.stream import Final

        for event in events:
            if isinstance(event, Final):
                utterance = self.session.process_text(event.text, event.start_s, event.end_s)
                self.feedback.partial = ""
                self.feedback.resolved(event.utterance)
                self.feedback.last_final_at = time.time()
                if utterance.command is not None:
                    label = utterance.command.action.replace("_", " ")
                    if utterance.command.argument:
                        label += f" {utterance.command.argument}"
                    self.feedback.commands.append(label)
                elif utterance.text:
                    self.feedback.finals.append(utterance.text)
            elif getattr(event, "final_pending", False) and not self.session.is_command(event.text):
                self.feedback.pending[event.utterance] = event.text   # in the box until its final comes
                self.feedback.partial = ""
            else:
                self.feedback.partial = event.text

    def feed(self, sample_rate: int, samples: np.ndarray) -> None:
        """Queue a microphone chunk; returns at once (a worker thread decodes). A signed report
        takes no dictation (the audio route refuses it first)."""
        if self.read_only:
            return
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="live-dictation", daemon=True)
            self._worker.start()
        self.recording = True
        if self._resampler is None or self._resampler.sample_rate != int(sample_rate):
            self._resampler = Resampler(sample_rate)
        self._audio.put(self._resampler(samples))

    def _take(self) -> tuple[np.ndarray | None, int, bool]:
        """The next audio to decode: every chunk queued by now in one piece (a worker that fell
        behind catches up with one partial decode, not one per stale chunk). Returns (audio or
        None, queue items taken, stop requested)."""
        chunk = self._audio.get()
        if chunk is None:
            return None, 1, True
        parts, taken, stop = [chunk], 1, False
        while True:
            try:
                more = self._audio.get_nowait()
            except queue.Empty:
                break
            taken += 1
            if more is None:
                stop = True
                break
            parts.append(more)
        return (np.concatenate(parts) if len(parts) > 1 else chunk), taken, stop

    def _work(self) -> None:
        while True:
            chunk, taken, stop = self._take()
            try:
                if chunk is not None:
                    self._decode_chunk(chunk)
                if stop:                                    # stop(): finish the utterance in progress
                    with self._lock:
                        if self._stream is not None:
                            self._events(self._stream.flush())
                            self._stream.close()
                            self._stream = None
                        self.feedback.partial = ""
                        self.feedback.pending.clear()       # every final is in
                    return
            except Exception:  # the page must keep working; the error is logged
                log.exception("live dictation failed at the end of a recording")
                if stop:
                    return
            finally:
                for _ in range(taken):
                    self._audio.task_done()

    def _decode_chunk(self, chunk: np.ndarray) -> None:
        try:
            with self._lock:
                if self._stream is None:
                    self._stream = self.session.stream(self.engine, partials=True, background=True,
                                                       provisional=True, finals=self.final_decoder())
                    self.session.report.dictating = True
                self._events(self._stream.feed(chunk))
        except Exception:  # the page must keep working; the error is logged
            log.exception("live dictation failed on a chunk")

    def poll(self) -> None:
        """Collect finals decoded in the background since the last chunk."""
        if not self._lock.acquire(timeout=0.05):
            return                                          # the worker is decoding; next poll
        try:
            if self._stream is not None:
                self._events(self._stream.collect(wait=False))
        finally:
            self._lock.release()

    def stop(self, wait: bool = True) -> None:
        """End of recording: the utterance in progress is finished and decoded."""
        self.recording = False
        if self._worker is not None and self._worker.is_alive():
            self._audio.put(None)
            if wait:
                self._audio.join()

    # report -------------------------------------------------------------------------------
    @property
    def active_section(self) -> str:
        return self.session.report.section

    def sections(self) -> dict[str, str]:
        return self.session.report.as_dict()

    def pending_text(self) -> str:
        """Dictated text not in the report yet: the live model's text of the utterances whose
        final is pending, then the partial text of the utterance being spoken (unless it is a
        voice command)."""
        fb = self.feedback
        partial = fb.partial if fb.partial and not self.session.is_command(fb.partial) else ""
        return " ".join(t for t in (fb.provisional, partial) if t)

    def field_labels(self, section: str) -> list[tuple[str, str]]:
        """(name, label) of the template fields of ``section``, in template order."""
        spec = self.session.report.template.sections.get(section)
        return [(f.name, f.label) for f in spec.fields] if spec else []

    def section_display(self, section: str) -> str:
        """A section as its box shows it. While the report can be edited, every template field has
        its own line ``Label: value``, the empty ones too, so that a field that blocks signing is
        seen where it can be filled in; then the section's own text. Signed: the signed text."""
        report = self.session.report
        fields = self.field_labels(section)
        if not fields or self.read_only:
            return report.section_text(section)
        lines = [f"{label}: {report.fields[section][name].strip()}" for name, label in fields]
        own = report.sections[section].strip()
        return "\n".join(lines + ([own] if own else []))

    def display_sections(self) -> dict[str, str]:
        """What the page shows: the report, plus the pending text where it will go (the active
        field's line, or the end of the active section)."""
        texts = {s: self.section_display(s) for s in SECTION_ORDER}
        pending = self.pending_text()
        if pending:
            section = self.active_section
            names = [name for name, _label in self.field_labels(section)]
            field_name = self.session.report.active_field
            if field_name in names and not self.read_only:
                lines = texts[section].split("\n")
                at = names.index(field_name)
                lines[at] = f"{lines[at].rstrip()} {pending}"
                texts[section] = "\n".join(lines)
            else:
                texts[section] = f"{texts[section]} {pending}".strip()
        return texts

    def typed_text(self, section: str, text: str) -> str | None:
        """What a keyboard edit of the box means for the report: None when the box holds what was
        shown (nothing typed), else the typed text without the pending dictated text (its final
        text comes by itself)."""
        if text == self.display_sections()[section] or text == self.sections()[section]:
            return None
        pending = self.pending_text()
        if pending and pending in text:
            at = text.rfind(pending)
            text = (text[:at].rstrip(" ") + text[at + len(pending):]).rstrip()
        return text

    def edit(self, section: str, text: str) -> None:
        """Keyboard edit of a section: the typed text replaces it. A line that starts with a
        template field's label (``Extra-axial spaces: ...``) fills that field; a field whose line
        was deleted is emptied; the other lines are the section's own text. Ignored when signed."""
        if self.read_only:
            return
        report = self.session.report
        fields = self.field_labels(section)
        by_label = {label.strip().lower(): name for name, label in fields}
        values = {name: "" for name, _label in fields}
        seen: set[str] = set()
        rest = []
        for line in text.split("\n") if fields else []:
            label, colon, value = line.partition(":")
            name = by_label.get(label.strip().lower()) if colon else None
            if name is not None and name not in seen:
                values[name] = value.strip()
                seen.add(name)
            else:
                rest.append(line)
        with self._lock:
            report.snapshot()
            report.sections[section] = "\n".join(rest).strip("\n") if fields else text
            for name, value in values.items():
                report.fields[section][name] = value

    def content_key(self) -> str:
        """Changes when the report's text changes (autosave compares it)."""
        import json

        report = self.session.report
        return json.dumps([report.sections, report.fields], sort_keys=True)

    def view_key(self) -> str:
        """Changes when the page's report boxes must change: text, or the active section."""
        report = self.session.report
        return f"{self.content_key()}|{report.section}|{report.field_index}|{self.pending_text()}"

    def goto(self, section: str) -> None:
        self.session.report.goto(section)

    def insert_normal(self) -> None:
        from dictation.commands import Command

        if self.read_only:
            return
        with self._lock:
            self.session.report.apply(Command("insert_normal", None, "insert normal"))


class LiveRegistry:
    """The open dictations, by (user, study): the page's callbacks and the audio route share them."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], LiveDictation] = {}
        self._lock = threading.Lock()

    def put(self, user: str, study_uid: str, live: LiveDictation) -> None:
        with self._lock:
            old = self._items.get((user, study_uid))
            self._items[(user, study_uid)] = live
        if old is not None and old is not live:
            old.stop(wait=False)

    def get(self, user: str, study_uid: str) -> LiveDictation | None:
        with self._lock:
            return self._items.get((user, study_uid))


REGISTRY = LiveRegistry()


__all__ = ["REGISTRY", "Feedback", "LiveDictation", "LiveRegistry", "shared_engine"]
