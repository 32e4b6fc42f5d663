"""The final decode of each utterance on the asr queue (dictation.final_decode: queue, dictation/asr_queue.py).

Real parts: espeak-ng speech, the Silero VAD, tiny.en partials and base finals, the jobs table
(SQLite) with an in-process WorkerPool, and for the Celery engine a throwaway Redis and a real
``readingroom worker --queues asr`` process. The order, timeout and redelivery tests use a fake
engine that answers at once (the VAD still runs on real speech), so they test the queue, not Whisper.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from dictation.asr_queue import (
    FINAL_JOB, FinalDecodeHandler, FinalRequest, QueueFinals, asr_root, audio_path, queue_finals, result_path,
    sweep_stale, use_queue_finals,
)
from dictation.audio import SAMPLE_RATE, decode_audio
from dictation.live import LiveDictation
from dictation.session import DictationSession
from dictation.stream import Final
from dictation.transcribe import Engine, Transcript
from readingroom.db import Database, sync_sites
from readingroom.errors import ConfigError
from readingroom.jobs import DatabaseJobQueue, WorkerPool, kinds_for_queues, open_queue
from readingroom.schema import Job
from readingroom.settings import PROJECT_ROOT, DictationSettings
from tests.conftest import TEST_SITES, make_settings

pytestmark = pytest.mark.slow

UTTERANCES = [
    "Findings. There is no pleural effusion.",
    "Next field.",
    "The liver measures twenty one centimeters.",
    "Impression. No acute abnormality.",
]


def _speak(folder: Path, text: str, n: int) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run `make install` (it runs apt-get install espeak-ng)")
    path = folder / f"utterance{n}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    return decode_audio(path)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """The utterances spoken by espeak-ng, 1.2 s of silence after each (the VAD ends each one)."""
    folder = tmp_path_factory.mktemp("speech")
    gap = np.zeros(int(SAMPLE_RATE * 1.2), np.float32)
    return np.concatenate([part for n, text in enumerate(UTTERANCES) for part in (_speak(folder, text, n), gap)])


@pytest.fixture(scope="module")
def engine() -> Engine:
    """tiny.en (live) and base (final), as the workstation uses them."""
    return Engine(DictationSettings())


@pytest.fixture(scope="module")
def local_finals(engine, speech) -> list[Final]:
    """The finals decoded here (dictation.final_decode: local), the reference of the queue's."""
    finals = _finals(DictationSession(DictationSettings(), template="ct_head"), engine, speech)
    assert len(finals) == len(UTTERANCES)
    assert "effusion" in finals[0].text.lower() and "next field" in finals[1].text.lower()
    return finals


class FakeEngine:
    """Answers at once: the text names the utterance by its length (distinct per utterance)."""

    def __init__(self, settings: DictationSettings) -> None:
        self.settings = settings
        self.calls = 0
        self._lock = threading.Lock()

    def transcribe(self, audio, *, prompt=None, hotwords=None, final=False, **_kw) -> Transcript:
        with self._lock:
            self.calls += 1
        return Transcript(f"utterance of {len(audio)} samples", decode_s=0.001)


def _finals(session: DictationSession, engine, audio: np.ndarray, finals=None) -> list[Final]:
    """Stream ``audio`` in 100-ms chunks through the session's stream (finals in the background)."""
    stream = session.stream(engine, partials=False, background=True, finals=finals)
    events = []
    step = SAMPLE_RATE // 10
    for i in range(0, len(audio), step):
        events += stream.feed(audio[i : i + step])
    events += stream.flush()
    stream.close()
    return [e for e in events if isinstance(e, Final)]


def _key(finals: list[Final]) -> list[tuple]:
    return [(f.utterance, f.text, f.start_s, f.end_s) for f in finals]


def _jobs(db: Database) -> list[Job]:
    with db.reader() as session:
        return list(session.scalars(select(Job).where(Job.kind == FINAL_JOB).order_by(Job.id)))


def _leftovers(home: Path) -> list[str]:
    root = asr_root(home)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _queue_settings(**dictation) -> DictationSettings:
    return DictationSettings(final_decode="queue", **dictation)


# --- settings and wiring ----------------------------------------------------------------------------

def test_final_decode_is_local_by_default_and_its_kind_goes_to_the_asr_queue(tmp_path):
    settings = make_settings(tmp_path / "home")
    assert settings.dictation.final_decode == "local"
    assert settings.jobs.queues[FINAL_JOB] == "asr"
    assert kinds_for_queues(settings.jobs, ["triage_study", FINAL_JOB], ["asr"]) == [FINAL_JOB]
    with pytest.raises(ConfigError, match="valid values are local or queue"):
        DictationSettings.from_mapping({"final_decode": "remote"})
    with pytest.raises(ConfigError, match="queue_timeout_s must be > 0"):
        DictationSettings.from_mapping({"queue_timeout_s": 0})
    assert LiveDictation("free", DictationSettings(), engine=object()).final_decoder() is None


def test_build_workers_serves_the_asr_queue_and_sets_up_the_web_nodes_client(tmp_path):
    from app import build_workers

    settings = make_settings(tmp_path / "home", dictation={"final_decode": "queue"}, models={"enabled": False})
    db = Database(settings)
    db.upgrade()
    previous = use_queue_finals(None)
    try:
        pool = build_workers(db, settings, DatabaseJobQueue(db, settings.jobs))
        assert isinstance(pool.handlers[FINAL_JOB], FinalDecodeHandler)
        client = queue_finals()
        assert isinstance(client, QueueFinals) and client.root == settings.home / "asr"
        live = LiveDictation("free", settings.dictation, engine=object())
        assert live.final_decoder() is client
        client.close()
    finally:
        use_queue_finals(previous)
        db.dispose()


# --- the database engine, an in-process WorkerPool ------------------------------------------------

def test_finals_decoded_on_the_queue_equal_the_local_finals(settings, db, queue, engine, speech, local_finals,
                                                            caplog):
    dset = _queue_settings(queue_timeout_s=60)
    pool = WorkerPool(queue, settings.jobs, {FINAL_JOB: FinalDecodeHandler(settings.home, dset, engine=engine)})
    client = QueueFinals(queue, settings.home, dset, db=db, wake=pool.wake)
    pool.start()
    try:
        with caplog.at_level(logging.WARNING, logger="dictation"):
            remote = _finals(DictationSession(dset, template="ct_head"), engine, speech, finals=client)
    finally:
        pool.stop()
        client.close()
    assert _key(remote) == _key(local_finals)
    assert not [r for r in caplog.records if "decoded locally" in r.getMessage()]
    jobs = _jobs(db)
    assert [j.status for j in jobs] == ["done"] * len(UTTERANCES)
    assert all(set(j.payload) == {"key", "prompt", "hotwords", "command_prompt", "macros"} for j in jobs)
    assert _leftovers(settings.home) == []          # every answer taken: audio and answer removed


def test_finals_keep_the_utterance_order_when_the_answers_come_out_of_order(settings, db, queue, speech):
    dset = _queue_settings(queue_timeout_s=30)
    fake = FakeEngine(dset)
    real = FinalDecodeHandler(settings.home, dset, engine=fake)
    answered: list[str] = []
    first = threading.Event()

    def slow_first(payload):
        if not first.is_set():           # the first job taken waits: the next ones are answered before it
            first.set()
            time.sleep(1.5)
        real(payload)
        answered.append(payload["key"])

    jobs = settings.jobs.model_copy(update={"workers": 3, "poll_interval_s": 0.05})
    pool = WorkerPool(queue, jobs, {FINAL_JOB: slow_first})
    client = QueueFinals(queue, settings.home, dset, db=db, wake=pool.wake)
    pool.start()
    try:
        remote = _finals(DictationSession(dset), fake, speech, finals=client)
    finally:
        pool.stop()
        client.close()
    local = _finals(DictationSession(DictationSettings()), FakeEngine(dset), speech)
    assert [f.utterance for f in remote] == list(range(len(UTTERANCES)))
    assert _key(remote) == _key(local)
    keys = [j.payload["key"] for j in _jobs(db)]
    assert answered != keys and sorted(answered) == sorted(keys)   # answered out of order, shown in order


def test_no_worker_in_time_the_web_node_decodes_locally_and_nothing_is_lost(settings, db, queue, speech, caplog):
    dset = _queue_settings(queue_timeout_s=0.5)
    client = QueueFinals(queue, settings.home, dset, db=db)
    fake = FakeEngine(dset)
    with caplog.at_level(logging.WARNING, logger="dictation"):
        remote = _finals(DictationSession(dset), fake, speech, finals=client)
    local = _finals(DictationSession(DictationSettings()), FakeEngine(dset), speech)
    assert _key(remote) == _key(local)
    warnings = [r.getMessage() for r in caplog.records if "decoded locally" in r.getMessage()]
    assert len(warnings) == len(UTTERANCES)
    assert "readingroom worker --queues asr" in warnings[0] and "dictation.queue_timeout_s" in warnings[0]
    assert [j.status for j in _jobs(db)] == ["queued"] * len(UTTERANCES)
    assert _leftovers(settings.home) == []          # the audio went with the wait
    # A worker that comes late finds the audio gone: it decodes nothing and writes nothing.
    late = FakeEngine(dset)
    pool = WorkerPool(queue, settings.jobs, {FINAL_JOB: FinalDecodeHandler(settings.home, dset, engine=late)})
    while pool.run_once():
        pass
    client.close()
    assert late.calls == 0 and _leftovers(settings.home) == []
    assert [j.status for j in _jobs(db)] == ["done"] * len(UTTERANCES)


def test_a_dead_job_is_decoded_locally_without_waiting_for_the_timeout(settings, db, queue, speech):
    dset = _queue_settings(queue_timeout_s=60)

    def broken(payload):
        raise RuntimeError("the asr worker's model is damaged")

    pool = WorkerPool(queue, settings.jobs, {FINAL_JOB: broken})   # max_attempts 3, backoff 0.1 s
    client = QueueFinals(queue, settings.home, dset, db=db, wake=pool.wake)
    fake = FakeEngine(dset)
    started = time.monotonic()
    pool.start()
    try:
        remote = _finals(DictationSession(dset), fake, speech[: len(speech) // 2], finals=client)
    finally:
        pool.stop()
        client.close()
    assert remote and fake.calls >= len(remote)
    assert time.monotonic() - started < 30
    assert {j.status for j in _jobs(db)} == {"dead"}


def test_a_redelivered_job_does_nothing_and_the_files_are_owner_only(settings, db, queue, speech):
    dset = _queue_settings(queue_timeout_s=5)
    client = QueueFinals(queue, settings.home, dset, db=db)
    audio = speech[: SAMPLE_RATE * 2]
    ticket = client.submit(audio, FinalRequest("Radiology report.", None, None, ()))
    job_id = ticket.job.result(timeout=10)
    saved = audio_path(client.root, ticket.key)
    assert saved.stat().st_mode & 0o777 == 0o600 and client.root.stat().st_mode & 0o777 == 0o700
    fake = FakeEngine(dset)
    handler = FinalDecodeHandler(settings.home, dset, engine=fake)
    pool = WorkerPool(queue, settings.jobs, {FINAL_JOB: handler})
    assert pool.run_once()
    answer = result_path(client.root, ticket.key)
    assert answer.stat().st_mode & 0o777 == 0o600 and fake.calls == 1
    with db.reader() as session:
        payload = session.get(Job, job_id).payload
    handler(payload)                                   # delivered again: the answer exists
    assert fake.calls == 1
    result = client.wait(ticket)
    assert result.answered and result.transcript.text == f"utterance of {len(audio)} samples"
    assert not saved.exists() and not answer.exists()   # taken: both removed
    handler(payload)                                   # delivered again after it was taken
    assert fake.calls == 1 and _leftovers(settings.home) == []
    with pytest.raises(ValueError, match="32 hex digits"):
        handler({"key": "../../etc/passwd"})
    client.close()
    closed = client.wait(client.submit(audio, FinalRequest(None)))   # e.g. at shutdown: decoded locally
    assert not closed.answered and "could not be queued" in closed.why


def test_stale_files_are_swept(tmp_path):
    root = tmp_path / "asr"
    root.mkdir()
    old, new = root / "a.json", root / "b.json"
    old.write_text("{}")
    new.write_text("{}")
    os.utime(old, (1000.0, 1000.0))
    now = os.stat(new).st_mtime
    assert sweep_stale(root, 600, now=now) == 1
    assert not old.exists() and new.exists()
    assert sweep_stale(tmp_path / "missing") == 0


# --- the Celery engine: a real Redis and a real `readingroom worker --queues asr` ---------------------

def _worker_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
    env.update({"READINGROOM_HOME": str(settings.home), "READINGROOM_SITES": json.dumps(TEST_SITES),
                "READINGROOM_MODELS__ENABLED": "false", "READINGROOM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                "READINGROOM_JOBS__ENGINE": "celery", "READINGROOM_JOBS__BROKER_URL": settings.jobs.broker_url,
                "READINGROOM_JOBS__SWEEP_INTERVAL_S": "5"})
    return env


@pytest.mark.integration
def test_a_celery_asr_worker_decodes_the_finals_as_the_web_node_would(tmp_path, redis_url, engine, speech,
                                                                      local_finals):
    import redis

    redis.Redis.from_url(redis_url).flushall()
    settings = make_settings(tmp_path / "home", jobs={"engine": "celery", "broker_url": redis_url},
                             dictation={"final_decode": "queue", "queue_timeout_s": 90})
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    queue = open_queue(db, settings.jobs)
    client = QueueFinals(queue, settings.home, settings.dictation, db=db)
    log = tmp_path / "worker.log"
    with log.open("ab") as handle:
        worker = subprocess.Popen([sys.executable, "-m", "app", "worker", "--queues", "asr"], env=_worker_env(settings),
                                  cwd=PROJECT_ROOT, stdout=handle, stderr=subprocess.STDOUT)
    try:
        remote = _finals(DictationSession(settings.dictation, template="ct_head"), engine, speech, finals=client)
        deadline = time.monotonic() + 30       # the row says done just after the answer is written
        while {j.status for j in _jobs(db)} != {"done"} and time.monotonic() < deadline:
            time.sleep(0.1)
        jobs = _jobs(db)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)
        client.close()
        db.dispose()
    output = log.read_text(errors="replace")[-3000:]
    assert [j.status for j in jobs] == ["done"] * len(UTTERANCES), output
    assert all(f":{worker.pid}:" in (j.locked_by or "") for j in jobs), output   # run by that worker
    assert _key(remote) == _key(local_finals)
    assert _leftovers(settings.home) == []
