"""The final decode of each utterance as a job on the ``asr`` queue (``dictation.final_decode: queue``).

The web node keeps the VAD and the partials; the final text of an ended utterance is decoded by a
``readingroom worker --queues asr`` (on the database or the Celery engine, docs/jobs.md):

- **web node** (``QueueFinals.submit``, on its own thread so the audio loop never waits): the
  utterance's audio goes to ``<home>/asr/<key>.npy`` (atomic, 0600: it is PHI), then a
  ``dictation_final`` job is queued whose payload is the key and the prompts (no patient data in
  the jobs table);
- **worker** (``FinalDecodeHandler``): decodes the audio with the one final-decode rule
  (dictation.stream.decode_final) and writes ``<home>/asr/<key>.json`` atomically. Idempotent: a
  redelivered job whose answer exists, or whose audio is gone (the web node took the answer or
  decoded it itself), does nothing;
- **web node** (``QueueFinals.wait``, on the stream's final thread, in utterance order): polls for
  the answer every ``queue_poll_ms`` (and the job row, for a dead job), reads it and removes both
  files. No answer within ``queue_timeout_s`` of the utterance's end: the caller decodes it
  locally, with a warning. Nothing dictated is lost.

The key (a random hex string, in the payload) names the files because a handler gets
only its payload, not its job id; the answer records the worker. Files older than
``STALE_AFTER_S`` (an answer that came after its web node had given up) are swept.
``use_queue_finals`` sets the process's client (``app.build_workers``), ``queue_finals`` reads it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dictation.audio import SAMPLE_RATE
from dictation.stream import decode_final
from dictation.transcribe import Segment, Transcript
from readingroom.settings import DictationSettings
from readingroom.storage import atomic_write

log = logging.getLogger(__name__)

FINAL_JOB = "dictation_final"       # the job kind; jobs.queues maps it to the asr queue
ASR_FOLDER = "asr"                  # under the shared storage root (settings.home)
STALE_AFTER_S = 600.0               # files left this long are an answer nobody waits for
SWEEP_EVERY_S = 60.0
JOB_CHECK_S = 0.5                   # how often a waiting web node reads the job row (dead?)
_KEY = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class FinalRequest:
    """What a worker needs to decode an utterance as the web node would: its prompts, and the
    template's macros for the command check (None: no command check)."""
    prompt: str | None
    hotwords: str | None = None
    command_prompt: str | None = None
    macros: tuple[str, ...] | None = None

    def payload(self, key: str) -> dict[str, Any]:
        return {"key": key, "prompt": self.prompt, "hotwords": self.hotwords,
                "command_prompt": self.command_prompt,
                "macros": None if self.macros is None else list(self.macros)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "FinalRequest":
        macros = payload.get("macros")
        return cls(payload.get("prompt"), payload.get("hotwords"), payload.get("command_prompt"),
                   None if macros is None else tuple(str(m) for m in macros))


@dataclass(frozen=True)
class Ticket:
    """A submitted utterance: its key, when to stop waiting (time.monotonic()), its job id to come."""
    key: str
    deadline: float
    job: Future


@dataclass(frozen=True)
class Answer:
    """``answered``: a worker decoded it (``transcript`` None: no text); else ``why`` not."""
    answered: bool
    transcript: Transcript | None = None
    why: str = ""


# --- files: pure helpers -----------------------------------------------------------------------

def asr_root(home: Path) -> Path:
    return Path(home) / ASR_FOLDER


def check_key(key: Any) -> str:
    """The key of a job's files; ValueError for anything else (it names files)."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ValueError(f"a {FINAL_JOB} job's payload needs 'key', 32 hex digits (got {key!r}); "
                         "this job was not queued by dictation.asr_queue: remove it")
    return key


def audio_path(root: Path, key: str) -> Path:
    return root / f"{check_key(key)}.npy"


def result_path(root: Path, key: str) -> Path:
    return root / f"{check_key(key)}.json"


def encode_audio(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(audio, np.float32).reshape(-1), allow_pickle=False)
    return buffer.getvalue()


def read_audio(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        return np.asarray(np.load(handle, allow_pickle=False), np.float32)


def encode_answer(transcript: Transcript | None, key: str, worker: str = "") -> bytes:
    body: dict[str, Any] = {"key": key, "worker": worker, "transcript": None}
    if transcript is not None:
        body["transcript"] = {"text": transcript.text, "decode_s": transcript.decode_s,
                              "segments": [asdict(s) for s in transcript.segments],
                              "dropped": [asdict(s) for s in transcript.dropped]}
    return json.dumps(body).encode("utf-8")


def decode_answer(data: bytes) -> Transcript | None:
    body = json.loads(data.decode("utf-8"))["transcript"]
    if body is None:
        return None
    return Transcript(body["text"], [Segment(**s) for s in body["segments"]],
                      [Segment(**s) for s in body["dropped"]], float(body["decode_s"]))


def sweep_stale(root: Path, older_than_s: float = STALE_AFTER_S, now: float | None = None) -> int:
    """Remove the files under ``root`` not changed for ``older_than_s``; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file() and now - entry.stat().st_mtime > older_than_s:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d dictation file(s) older than %.0f s from %s", removed, older_than_s, root)
    return removed


# --- the worker --------------------------------------------------------------------------------

class FinalDecodeHandler:
    """The ``dictation_final`` job: decode ``<home>/asr/<key>.npy``, write ``<key>.json``."""

    def __init__(self, home: Path, settings: DictationSettings, engine: Any = None) -> None:
        self.root = asr_root(home)
        self.settings = settings
        self._engine = engine
        self._grammar: Any = None
        self._lock = threading.Lock()
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def engine(self) -> Any:
        """The process's Whisper engine (dictation.live.shared_engine), loaded at the first job."""
        if self._engine is None:
            from dictation.live import shared_engine

            self._engine = shared_engine(self.settings)
        return self._engine

    def _is_command(self, macros: tuple[str, ...] | None) -> Callable[[str], bool] | None:
        if macros is None:
            return None
        with self._lock:
            if self._grammar is None:
                from dictation.commands import CommandGrammar

                self._grammar = CommandGrammar.load(self.settings.commands_path)
        grammar = self._grammar
        return lambda text: grammar.parse(text, macros) is not None

    def __call__(self, payload: dict[str, Any]) -> None:
        key = check_key(payload.get("key"))
        answer, audio_file = result_path(self.root, key), audio_path(self.root, key)
        if answer.exists():
            log.info("%s %s: already answered; nothing to do", FINAL_JOB, key[:8])
            return
        try:
            audio = read_audio(audio_file)
        except FileNotFoundError:
            log.info("%s %s: its audio is gone (the web node has its text); nothing to do", FINAL_JOB, key[:8])
            return
        request = FinalRequest.from_payload(payload)
        started = time.perf_counter()
        transcript = decode_final(self.engine, self.settings, audio, prompt=request.prompt,
                                  hotwords=request.hotwords, command_prompt=request.command_prompt,
                                  is_command=self._is_command(request.macros))
        if not audio_file.exists():
            log.info("%s %s: the web node stopped waiting; answer dropped", FINAL_JOB, key[:8])
            return
        atomic_write(answer, encode_answer(transcript, key, self.worker), durable=False)
        log.info("%s %s: %.1f s of audio decoded in %.2f s", FINAL_JOB, key[:8], len(audio) / SAMPLE_RATE,
                 time.perf_counter() - started)


# --- the web node ------------------------------------------------------------------------------

class QueueFinals:
    """The web node's side: submit an utterance as a job, wait for its answer."""

    def __init__(self, queue: Any, home: Path, settings: DictationSettings, *, db: Any = None,
                 wake: Callable[[], None] | None = None) -> None:
        self.queue = queue                        # readingroom.jobs.JobQueue
        self.db = db if db is not None else getattr(queue, "db", None)
        self.root = asr_root(home)
        self.settings = settings
        self.wake = wake
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="asr-submit")
        self._swept_at = 0.0

    def submit(self, audio: np.ndarray, request: FinalRequest) -> Ticket:
        """Queue the utterance's final decode; returns at once (the files and the row are written
        on the submit thread, in order)."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + self.settings.queue_timeout_s
        try:
            job = self._submitter.submit(self._enqueue, key, np.asarray(audio), request)
        except RuntimeError as exc:           # closed: wait() says so, and the caller decodes it
            job = Future()
            job.set_exception(exc)
        return Ticket(key, deadline, job)

    def _enqueue(self, key: str, audio: np.ndarray, request: FinalRequest) -> int:
        if time.monotonic() - self._swept_at > SWEEP_EVERY_S or not self._swept_at:
            self._swept_at = time.monotonic()
            sweep_stale(self.root, max(STALE_AFTER_S, 6 * self.settings.queue_timeout_s))
        atomic_write(audio_path(self.root, key), encode_audio(audio), durable=False)
        try:
            job_id = int(self.queue.enqueue(FINAL_JOB, request.payload(key)))
        except Exception:
            self.discard(key)
            raise
        if self.wake is not None:
            self.wake()
        return job_id

    def wait(self, ticket: Ticket) -> Answer:
        """The worker's answer, or why there is none (then the caller decodes it)."""
        timeout_s = self.settings.queue_timeout_s
        try:
            job_id = ticket.job.result(timeout=max(0.0, ticket.deadline - time.monotonic()))
        except FutureTimeout:
            self.discard(ticket.key)
            return Answer(False, why=f"it could not be queued within dictation.queue_timeout_s ({timeout_s:g} s)")
        except Exception as exc:  # noqa: BLE001 - the database or the disk: decoded locally instead
            return Answer(False, why=f"it could not be queued ({exc}); check the database and {self.root}")
        answer_file = result_path(self.root, ticket.key)
        poll_s = self.settings.queue_poll_ms / 1000
        check_at = time.monotonic() + JOB_CHECK_S
        while True:
            try:
                data = answer_file.read_bytes()
            except FileNotFoundError:
                data = None
            if data is not None:
                self.discard(ticket.key)
                return Answer(True, decode_answer(data))
            now = time.monotonic()
            if now >= ticket.deadline:
                self.discard(ticket.key)
                return Answer(False, why=(f"no asr worker answered job {job_id} within dictation.queue_timeout_s "
                                          f"({timeout_s:g} s): start `readingroom worker --queues asr` "
                                          "(docs/jobs.md), or set dictation.final_decode: local"))
            if now >= check_at:
                check_at = now + JOB_CHECK_S
                if self._status(job_id) == "dead":
                    self.discard(ticket.key)
                    return Answer(False, why=(f"job {job_id} is dead: see `readingroom jobs list --status dead` "
                                              "and the asr worker's log"))
            time.sleep(min(poll_s, max(0.0, ticket.deadline - now)))

    def _status(self, job_id: int) -> str | None:
        if self.db is None:
            return None
        from sqlalchemy import select

        from readingroom.schema import Job

        try:
            with self.db.reader() as session:
                return session.scalar(select(Job.status).where(Job.id == job_id))
        except Exception:  # the answer file is what counts; the row is a hint
            log.debug("could not read job %s", job_id, exc_info=True)
            return None

    def discard(self, key: str) -> None:
        """Remove the utterance's audio and answer (taken, or no longer awaited)."""
        for path in (audio_path(self.root, key), result_path(self.root, key)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s (%s); it is swept after %.0f s", path, exc, STALE_AFTER_S)

    def close(self) -> None:
        self._submitter.shutdown(wait=True)


_client: QueueFinals | None = None
_client_lock = threading.Lock()


def use_queue_finals(client: QueueFinals | None) -> QueueFinals | None:
    """Set this process's client for ``dictation.final_decode: queue``; returns the one before."""
    global _client
    with _client_lock:
        previous, _client = _client, client
    return previous


def queue_finals() -> QueueFinals | None:
    """This process's client, or None (then the finals are decoded locally)."""
    with _client_lock:
        return _client


__all__ = [
    "ASR_FOLDER", "FINAL_JOB", "STALE_AFTER_S", "Answer", "FinalDecodeHandler", "FinalRequest", "QueueFinals",
    "Ticket", "asr_root", "audio_path", "check_key", "decode_answer", "encode_answer", "encode_audio",
    "queue_finals", "read_audio", "result_path", "sweep_stale", "use_queue_finals",
]
