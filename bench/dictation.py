"""Dictation benchmark: plain faster-whisper vs the ReadingRoom pipeline, on the same audio.

Corpus: the reference texts of bench/dictation_corpus.txt spoken by espeak-ng (several voices,
130-190 wpm, with and without noise), cached as 16 kHz wav in var/bench/dictation/.
Figures: WER (Whisper-style normalization, dictation/wer.py), medical-term error rate (errors on
lexicon words of the reference), critical-word errors (negations, laterality, numbers, units),
command recognition and false-command rates, real-time factor, partial-result latency (100-ms
chunks fed in real time: latency = when the partial is ready - when its last chunk arrived).

Baseline (the reference of the targets): plain faster-whisper with the LIVE model (tiny.en by
default) at the live beam size (1): no prompt, no VAD endpointing, no correction, no
normalization, exact command match. A second line, "plain base", is plain faster-whisper with the
FINAL model (base) at the final beam size (5), so the gain of the pipeline over the model alone
is visible too. Ours: the pipeline (tiny.en partials, base finals, prompts, commands, correction).

    .venv/bin/python bench/dictation.py [--quick] [--model tiny.en|base|DIR] [--json-only]
    .venv/bin/python bench/dictation.py --final-decode queue [--asr-worker process|thread]
        # only the streaming latency of ours: finals decoded locally, then on the asr queue
        # (dictation.final_decode: queue) by a `readingroom worker --queues asr` process
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dictation.audio import SAMPLE_RATE, decode_audio
from dictation.commands import CommandGrammar
from dictation.lexicon import STOPWORDS, load_terms
from dictation.session import DictationSession
from readingroom.settings import DictationSettings
from dictation.stream import Partial, StreamingTranscriber
from dictation.transcribe import Engine
from dictation.wer import align, is_critical, normalize_for_wer

log = logging.getLogger("bench.dictation")

CORPUS = ROOT / "bench" / "dictation_corpus.txt"
CACHE = ROOT / "var" / "bench" / "dictation"
# (voice, words per minute, SNR in dB or None for clean)
CONDITIONS = [
    ("en-us", 150, None), ("en-us+f3", 175, 20), ("en-gb", 135, None),
    ("en-gb-x-rp", 190, 15), ("en-us+m3", 160, 10), ("en-us+f2", 130, None),
]
RENDERINGS = 3
TEMPLATE_BY_KEYWORD = [("head", "ct_head"), ("intracranial", "ct_head"), ("chest radiograph", "chest_radiograph")]


@dataclass
class Clip:
    text: str
    voice: str
    wpm: int
    snr_db: float | None
    path: Path
    kind: str = "dictation"
    action: str = ""

    @property
    def audio(self) -> np.ndarray:
        return read_wav(self.path)


def read_corpus(path: Path = CORPUS) -> tuple[list[str], list[tuple[str, str]]]:
    dictations, commands, part = [], [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.strip() in ("[dictations]", "[commands]"):
            part = line.strip()
            continue
        if part == "[dictations]":
            dictations.append(line.strip())
        elif part == "[commands]":
            action, spoken = line.split("\t")
            commands.append((action.strip(), spoken.strip()))
    return dictations, commands


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0


def synthesize(text: str, voice: str, wpm: int, snr_db: float | None, seed: int) -> Path:
    """espeak-ng -> 16 kHz, 0.5 s of silence around, optional noise at snr_db; cached."""
    key = hashlib.sha256(f"{text}|{voice}|{wpm}|{snr_db}|{seed}".encode()).hexdigest()[:16]
    path = CACHE / f"{key}.wav"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    raw = CACHE / f"{key}.espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), text], check=True)
    speech = decode_audio(raw)
    raw.unlink()
    silence = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([silence, speech, silence])
    if snr_db is not None:
        rng = np.random.default_rng(seed)
        rms = float(np.sqrt(np.mean(speech**2))) or 1e-3
        noise = rng.standard_normal(len(audio)).astype(np.float32)
        noise = np.convolve(noise, np.ones(4) / 4, mode="same")          # a little low-passed
        noise *= rms / (10 ** (snr_db / 20)) / float(np.sqrt(np.mean(noise**2)))
        audio = audio + noise
    write_wav(path, audio.astype(np.float32))
    return path


def build_corpus(quick: bool) -> tuple[list[Clip], list[Clip]]:
    dictations, commands = read_corpus()
    clips = []
    for i, text in enumerate(dictations):
        for r in range(RENDERINGS):
            voice, wpm, snr = CONDITIONS[(i + 2 * r) % len(CONDITIONS)]
            clips.append(Clip(text, voice, wpm, snr, synthesize(text, voice, wpm, snr, i * 10 + r)))
    cmd_clips = []
    for i, (action, spoken) in enumerate(commands):
        voice, wpm, snr = CONDITIONS[i % len(CONDITIONS)]
        cmd_clips.append(Clip(spoken, voice, wpm, snr, synthesize(spoken, voice, wpm, snr, 1000 + i), "command", action))
    if quick:
        clips = clips[::9][:8]
        cmd_clips = cmd_clips[::3]
    return clips, cmd_clips


def build_short_sentences(quick: bool) -> list[Clip]:
    """Dictated sentences of at most 4 words, each spoken alone (a short utterance: the
    command path's risk); for the false-command rate."""
    dictations, _ = read_corpus()
    seen: dict[str, None] = {}
    for text in dictations:
        for sentence in sentences(text):
            if len(sentence.split()) <= 4:
                seen.setdefault(sentence, None)
    clips = []
    for i, text in enumerate(seen):
        voice, wpm, snr = CONDITIONS[i % len(CONDITIONS)]
        clips.append(Clip(text, voice, wpm, snr, synthesize(text, voice, wpm, snr, 2000 + i), "short"))
    return clips[::3] if quick else clips


def medical_words(lexicon_path: Path) -> set[str]:
    words = set()
    for term in load_terms(lexicon_path):
        for w in normalize_for_wer(term):
            if len(w) >= 4 and w not in STOPWORDS and not is_critical(w) and not w.isdigit():
                words.add(w)
    return words


class Scores:
    def __init__(self, medical: set[str]) -> None:
        self.medical = medical
        self.errors = self.ref_words = 0
        self.med_errors = self.med_words = 0
        self.crit_errors = self.crit_words = 0

    def add(self, ref_text: str, hyp_text: str) -> None:
        a = align(normalize_for_wer(ref_text), normalize_for_wer(hyp_text))
        self.errors += a.errors
        self.ref_words += len(a.ref)
        crit_wrong = [w for w, wrong in zip(a.ref, a.ref_errors) if wrong and is_critical(w)]
        if crit_wrong:
            log.info("critical words wrong %s: %r -> %r", crit_wrong, ref_text[:80], hyp_text[:200])
        for word, wrong in zip(a.ref, a.ref_errors):
            if word in self.medical:
                self.med_words += 1
                self.med_errors += wrong
            if is_critical(word):
                self.crit_words += 1
                self.crit_errors += wrong

    def as_dict(self) -> dict:
        return {
            "wer": round(self.errors / max(1, self.ref_words), 4),
            "medical_term_error_rate": round(self.med_errors / max(1, self.med_words), 4),
            "critical_word_error_rate": round(self.crit_errors / max(1, self.crit_words), 4),
            "critical_word_errors": self.crit_errors,
            "critical_words": self.crit_words,
        }


def template_for(text: str) -> str:
    lowered = text.lower()
    for keyword, name in TEMPLATE_BY_KEYWORD:
        if keyword in lowered:
            return name
    return "ct_abdomen_pelvis" if re.search(r"liver|kidney|bowel|pancrea|appendi|pelvi|aort|colon", lowered) else "chest_radiograph"


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.?!])\s+", text.strip()) if s.strip()]


def run_baseline(model, clips, cmd_clips, beam_size, medical, grammar, short_clips=()) -> dict:
    scores = Scores(medical)
    audio_s = compute_s = 0.0
    dictated = false_cmds = 0
    for clip in clips:
        audio = clip.audio
        t = time.perf_counter()
        segments, _ = model.transcribe(audio, beam_size=beam_size, language=None if not model.model.is_multilingual else "en")
        text = " ".join(s.text.strip() for s in segments)
        compute_s += time.perf_counter() - t
        audio_s += len(audio) / SAMPLE_RATE
        scores.add(clip.text, text)
        for sentence in sentences(text):
            dictated += 1
            false_cmds += grammar.parse(sentence) is not None
    exact = CommandGrammar(grammar.phrases, grammar.punctuation, grammar.sections, [], 1.0, 0.0)
    short_false = 0
    for clip in short_clips:
        segments, _ = model.transcribe(clip.audio, beam_size=beam_size, language=None if not model.model.is_multilingual else "en")
        text = " ".join(s.text.strip() for s in segments)
        short_false += exact.parse(text, MACROS) is not None
    recognized = 0
    for clip in cmd_clips:
        segments, _ = model.transcribe(clip.audio, beam_size=beam_size, language=None if not model.model.is_multilingual else "en")
        text = " ".join(s.text.strip() for s in segments)
        cmd = exact.parse(text, MACROS)
        recognized += cmd is not None and cmd.action == clip.action
    return _figures(scores, compute_s, audio_s, recognized, len(cmd_clips), false_cmds, dictated,
                    short_false, len(short_clips))


def _figures(scores, compute_s: float, audio_s: float, recognized: int, n_commands: int, false_cmds: int,
             dictated: int, short_false: int, n_short: int) -> dict:
    """The figures of one pipeline (baseline or ours), in the benchmark's JSON shape."""
    return {
        **scores.as_dict(),
        "rtf": round(compute_s / audio_s, 4),
        "command_recognition_rate": round(recognized / max(1, n_commands), 4),
        "false_command_rate": round(false_cmds / max(1, dictated), 4),
        "dictated_sentences": dictated,
        "short_sentence_false_command_rate": round(short_false / max(1, n_short), 4),
        "short_sentences": n_short,
    }


MACROS = ["no acute", "normal chest", "normal head", "normal abdomen", "lines ok", "small vessel"]


def run_ours(engine, clips, cmd_clips, settings, medical, short_clips=()) -> dict:
    scores = Scores(medical)
    audio_s = compute_s = 0.0
    dictated = false_cmds = 0
    for clip in clips:
        session = DictationSession(settings, template=template_for(clip.text))
        audio = clip.audio
        timing = session.transcribe_audio(audio, engine)
        compute_s += timing["processing_s"]
        audio_s += timing["audio_s"]
        scores.add(clip.text, session.transcript())
        for u in session.utterances:
            for sentence in sentences(u.raw) if not u.command else [u.raw]:
                dictated += 1
                if session.grammar.parse(sentence, MACROS) is not None:
                    false_cmds += 1
                    log.info("dictated sentence parses as a command: %r (of %r)", sentence, clip.text[:60])
    recognized = 0
    for clip in cmd_clips:
        session = DictationSession(settings, template="chest_radiograph")
        session.transcribe_audio(clip.audio, engine)
        cmds = [u.command for u in session.utterances if u.command]
        if not cmds:   # a command the template lacks (macro): parse against all macros
            cmds = [c for u in session.utterances if (c := session.grammar.parse(u.raw, MACROS))]
        hit = len(cmds) == 1 and cmds[0].action == clip.action
        recognized += hit
        if not hit:
            log.info("command missed: %r -> %r", clip.text, [u.raw for u in session.utterances])
    short_false = 0
    for clip in short_clips:
        session = DictationSession(settings, template=template_for(clip.text))
        session.transcribe_audio(clip.audio, engine)
        taken = [u.raw for u in session.utterances if u.command]
        short_false += bool(taken)
        if taken:
            log.info("short sentence taken as a command: %r -> %r", clip.text, taken)
    return _figures(scores, compute_s, audio_s, recognized, len(cmd_clips), false_cmds, dictated,
                    short_false, len(short_clips))


def streaming_latency(clips, stream: StreamingTranscriber, realtime: bool) -> dict:
    """Feed the clips back to back as one session in 100-ms chunks.

    ``realtime``: chunks are fed at the pace they would arrive (sleeping when ahead), so work on
    the final-decode thread competes for the CPU as it would live; latency = wall time the
    partial is ready - arrival time of its last chunk. Otherwise (everything synchronous) the
    real-time clock is simulated from the measured compute times.
    """
    step = SAMPLE_RATE // 10
    latencies: list[float] = []
    final_latencies: list[float] = []
    gaps: list[float] = []
    busy_until = audio_time = compute = 0.0
    last_partial_at: float | None = None
    max_buffer = 0.0
    t0 = time.perf_counter()

    def handle(events, ready_at: float) -> None:
        nonlocal last_partial_at, compute
        for event in events:
            if isinstance(event, Partial):
                latencies.append(ready_at - audio_time)
                if last_partial_at is not None and ready_at - last_partial_at < 3:
                    gaps.append(ready_at - last_partial_at)
                last_partial_at = ready_at
            else:
                final_latencies.append(max(0.0, ready_at - event.end_s))
                if realtime:
                    compute += event.transcript.decode_s       # done on the worker thread
                last_partial_at = None

    for clip in clips:
        audio = clip.audio
        for i in range(0, len(audio), step):
            chunk = audio[i : i + step]
            audio_time += len(chunk) / SAMPLE_RATE
            if realtime:
                ahead = audio_time - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            start = max(busy_until, audio_time)             # the chunk arrives at audio_time
            t = time.perf_counter()
            events = stream.feed(chunk)
            spent = time.perf_counter() - t
            compute += spent
            busy_until = start + spent
            max_buffer = max(max_buffer, stream.buffered_s)
            handle(events, time.perf_counter() - t0 if realtime else busy_until)
    t = time.perf_counter()
    events = stream.flush()
    handle(events, time.perf_counter() - t0 if realtime else busy_until + time.perf_counter() - t)
    stream.close()
    values = latencies
    half = len(values) // 2
    return {
        "partial_latency_median_s": round(statistics.median(values), 3) if values else None,
        "partial_latency_p95_s": round(float(np.percentile(values, 95)), 3) if values else None,
        "partial_latency_first_half_median_s": round(statistics.median(values[:half]), 3) if half else None,
        "partial_latency_second_half_median_s": round(statistics.median(values[half:]), 3) if half else None,
        "partial_interval_median_s": round(statistics.median(gaps), 3) if gaps else None,
        "partials": len(values),
        "final_latency_median_s": round(statistics.median(final_latencies), 3) if final_latencies else None,
        "final_latency_p95_s": round(float(np.percentile(final_latencies, 95)), 3) if final_latencies else None,
        "stream_session_s": round(audio_time, 1),
        "stream_compute_rtf": round(compute / audio_time, 4) if audio_time else None,
        "max_buffered_s": round(max_buffer, 2),
    }


class _Count(logging.Handler):
    """Counts the log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text, self.count = text, 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.count += 1


def queue_latency(clips, settings: DictationSettings, engine, worker: str = "process", poll_s: float = 0.05) -> dict:
    """``streaming_latency`` (real time) with dictation.final_decode: queue: the finals are
    ``dictation_final`` jobs on the asr queue of the database engine in a throwaway home, decoded
    by a ``readingroom worker --queues asr`` process (``worker="process"``, polling every
    ``poll_s``) or by a WorkerPool thread of this process (``"thread"``). One utterance is decoded
    first, so that the worker has loaded its models."""
    import shutil
    import tempfile

    from dictation.asr_queue import FINAL_JOB, FinalDecodeHandler, FinalRequest, QueueFinals
    from readingroom.db import Database
    from readingroom.jobs import DatabaseJobQueue, WorkerPool
    from readingroom.settings import load_settings

    home = Path(tempfile.mkdtemp(prefix="bench-asr-"))
    qset = settings.with_(final_decode="queue", queue_timeout_s=120.0)
    app_settings = load_settings(environ={}, overrides={"home": str(home), "jobs": {"poll_interval_s": poll_s}})
    db = Database(app_settings)
    db.upgrade()
    queue = DatabaseJobQueue(db, app_settings.jobs)
    pool, process = None, None
    if worker == "thread":
        pool = WorkerPool(queue, app_settings.jobs, {FINAL_JOB: FinalDecodeHandler(home, qset, engine=engine)})
        pool.start()
    else:
        env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
        env.update({"READINGROOM_HOME": str(home), "READINGROOM_JOBS__POLL_INTERVAL_S": str(poll_s),
                    "READINGROOM_MODELS__ENABLED": "false", "READINGROOM_DICTATION__MODEL": settings.model,
                    "READINGROOM_DICTATION__FINAL_MODEL": settings.final_model,
                    "READINGROOM_DICTATION__FINAL_BEAM_SIZE": str(settings.final_beam_size),
                    "READINGROOM_DICTATION__CPU_THREADS": str(settings.cpu_threads)})
        process = subprocess.Popen([sys.executable, "-m", "app", "worker", "--queues", "asr"], env=env, cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = QueueFinals(queue, home, qset, db=db, wake=pool.wake if pool else None)
    fallbacks = _Count("decoded locally")
    logging.getLogger("dictation.stream").addHandler(fallbacks)
    try:
        t = time.perf_counter()
        warm = client.wait(client.submit(clips[0].audio[: SAMPLE_RATE * 3], FinalRequest(None)))
        if not warm.answered:
            raise RuntimeError(f"the asr worker did not answer: {warm.why}")
        warm_s = time.perf_counter() - t
        trips = decode_round_trips(clips, qset, engine, client)
        stream = DictationSession(qset, template=template_for(clips[0].text)).stream(engine, finals=client)
        figures = {**streaming_latency(clips, stream, realtime=True), **trips}
    finally:
        logging.getLogger("dictation.stream").removeHandler(fallbacks)
        if process is not None:
            process.terminate()
            process.wait(30)
        if pool is not None:
            pool.stop()
        client.close()
        db.dispose()
        shutil.rmtree(home, ignore_errors=True)
    return {**figures, "asr_worker": worker, "worker_poll_s": poll_s, "first_answer_s": round(warm_s, 2),
            "local_fallbacks": fallbacks.count}


def decode_round_trips(clips, settings: DictationSettings, engine, client, max_s: float = 10.0) -> dict:
    """One final decode at a time, nothing else running here: the first ``max_s`` of each clip
    decoded by ``decode_final`` in this process, then as a job (submit -> answer read), in turns.
    The difference is what the queue adds (files, row, poll), without streaming's CPU contention."""
    from dictation.asr_queue import FinalRequest
    from dictation.stream import decode_final

    local, queued = [], []
    for clip in clips:
        session = DictationSession(settings, template=template_for(clip.text))
        audio = clip.audio[: int(SAMPLE_RATE * max_s)]
        prompt, command_prompt = session.prompt(), session.command_prompt()
        t = time.perf_counter()
        mine = decode_final(engine, settings, audio, prompt=prompt, command_prompt=command_prompt,
                            is_command=session.is_command)
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        answer = client.wait(client.submit(audio, FinalRequest(prompt, None, command_prompt,
                                                               tuple(session.template.macros))))
        queued.append(time.perf_counter() - t)
        if not answer.answered or (answer.transcript.text if answer.transcript else "") != (mine.text if mine else ""):
            log.warning("round trip: the queue's answer differs from the local one (%s)", answer.why or "text")

    def stat(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)), 3)

    return {"round_trip_local_median_s": stat(local, 50), "round_trip_local_p95_s": stat(local, 95),
            "round_trip_queue_median_s": stat(queued, 50), "round_trip_queue_p95_s": stat(queued, 95),
            "round_trip_overhead_median_s": stat([q - m for q, m in zip(queued, local)], 50)}


def final_decode_comparison(clips, settings: DictationSettings, engine, worker: str) -> dict:
    """The streaming figures of ours with the finals decoded here (local), then on the asr queue."""
    out: dict = {"load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    local_session = DictationSession(settings, template=template_for(clips[0].text))
    out["local"] = streaming_latency(clips, local_session.stream(engine), realtime=True)
    out["queue"] = queue_latency(clips, settings, engine, worker=worker)
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def print_final_decode(result: dict) -> None:
    keys = ["partial_latency_median_s", "partial_latency_p95_s", "partial_interval_median_s", "partials",
            "final_latency_median_s", "final_latency_p95_s", "stream_compute_rtf"]
    print(f"final decode: local vs queue ({result['queue']['asr_worker']} worker), "
          f"{result['clips']} dictations ({result['audio_min']} min) streamed in real time")
    print(f"{'figure':36} {'local':>10} {'queue':>10}")
    for key in keys:
        print(f"{key:36} {str(result['local'].get(key)):>10} {str(result['queue'].get(key)):>10}")
    q = result["queue"]
    print(f"one final decode at a time (first 10 s of each dictation), median / p95: local "
          f"{q['round_trip_local_median_s']} / {q['round_trip_local_p95_s']} s, queue {q['round_trip_queue_median_s']} / "
          f"{q['round_trip_queue_p95_s']} s (median overhead {q['round_trip_overhead_median_s']} s)")
    print(f"queue: first answer (model load) {result['queue']['first_answer_s']} s, local fallbacks "
          f"{result['queue']['local_fallbacks']}; load average before {result['load_avg_before']}, "
          f"after {result['load_avg_after']}")


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc), MiB."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def drift_run(clips, settings: DictationSettings, engine, minutes: float = 30.0, block_min: float = 5.0,
              gap_s: float = 2.0, window_min: float = 5.0) -> dict:
    """Latency drift over a long session (simulated clock).

    A block of ~``block_min`` minutes (corpus dictations in order, ``gap_s`` of silence after
    each) is repeated until ``minutes`` of audio, so the first and the last ``window_min``
    minutes hold the same audio. It is streamed in 100-ms chunks through ONE streaming
    session (partials on; finals synchronous, i.e. on the feeding thread, and each final goes
    through DictationSession.process_text, so the report grows for the whole session). Chunks
    are fed as fast as the CPU allows; the clock is simulated from measured compute (a chunk
    "arrives" at its audio time; work starts when the previous work ends), so latency =
    simulated ready time - arrival time of the partial's last chunk. CPU time (process) per
    partial is recorded too: it does not depend on other load on the machine.
    """
    step = SAMPLE_RATE // 10
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    block: list[np.ndarray] = []
    block_s = 0.0
    for clip in clips:
        block += [clip.audio, gap]
        block_s += len(block[-2]) / SAMPLE_RATE + gap_s
        if block_s >= block_min * 60:
            break
    repeats = max(1, int(np.ceil(minutes * 60 / block_s)))
    session = DictationSession(settings, template="chest_radiograph")
    stream = session.stream(engine, background=False)
    records = []            # (audio_time, kind, latency, decode_s, cpu_s)
    chunk_times = []        # (audio_time, wall_s) of feeds that decoded nothing
    rss = [(0.0, round(rss_mb(), 1))]
    busy_until = audio_time = 0.0
    next_rss = 60.0
    t_start = time.perf_counter()
    for _ in range(repeats):
        for piece in block:
            for i in range(0, len(piece), step):
                chunk = piece[i : i + step]
                audio_time += len(chunk) / SAMPLE_RATE
                start = max(busy_until, audio_time)
                c0, t0 = time.process_time(), time.perf_counter()
                events = stream.feed(chunk)
                for event in events:
                    if not isinstance(event, Partial):
                        session.process_text(event.text, event.start_s, event.end_s)
                spent, cpu = time.perf_counter() - t0, time.process_time() - c0
                busy_until = start + spent
                if not events:
                    chunk_times.append((audio_time, spent))
                for event in events:
                    if isinstance(event, Partial):
                        records.append((audio_time, "partial", busy_until - audio_time, event.decode_s, cpu))
                    else:
                        records.append((audio_time, "final", busy_until - event.end_s, event.transcript.decode_s, cpu))
                if audio_time >= next_rss:
                    rss.append((round(audio_time / 60, 1), round(rss_mb(), 1)))
                    next_rss += 60.0
                    log.info("drift: %.1f min streamed in %.0f s, RSS %.0f MiB", audio_time / 60,
                             time.perf_counter() - t_start, rss[-1][1])
    for event in stream.flush():
        if not isinstance(event, Partial):
            session.process_text(event.text, event.start_s, event.end_s)
    stream.close()
    rss.append((round(audio_time / 60, 1), round(rss_mb(), 1)))
    w = window_min * 60

    def window(lo, hi, kind, idx):
        vals = [r[idx] for r in records if r[1] == kind and lo <= r[0] < hi]
        return vals

    def med(vals):
        return round(statistics.median(vals), 3) if vals else None

    def p95(vals):
        return round(float(np.percentile(vals, 95)), 3) if vals else None

    first, last = (0.0, w), (audio_time - w, audio_time + 1)
    out = {
        "drift_audio_min": round(audio_time / 60, 1), "drift_block_min": round(block_s / 60, 2),
        "drift_repeats": repeats, "drift_wall_s": round(time.perf_counter() - t_start, 1),
        "clock": "simulated (fed as fast as the CPU allows; finals synchronous)",
    }
    for name, (lo, hi) in (("first", first), ("last", last)):
        lat = window(lo, hi, "partial", 2)
        out[f"{name}_{window_min:g}min"] = {
            "partials": len(lat),
            "partial_latency_median_s": med(lat), "partial_latency_p95_s": p95(lat),
            "partial_decode_median_s": med(window(lo, hi, "partial", 3)),
            "partial_cpu_median_s": med(window(lo, hi, "partial", 4)),
            "final_decode_median_s": med(window(lo, hi, "final", 3)),
            "final_latency_median_s": med(window(lo, hi, "final", 2)),
            "idle_chunk_median_ms": med([1000 * s for a, s in chunk_times if lo <= a < hi]),
        }
    first, last = out[f"first_{window_min:g}min"], out[f"last_{window_min:g}min"]
    for key in ("partial_latency_median_s", "partial_decode_median_s", "partial_cpu_median_s", "idle_chunk_median_ms"):
        if first[key] and last[key] is not None:
            out[f"ratio_last_first_{key}"] = round(last[key] / first[key], 3)
    out["rss_mib"] = rss
    out["report_chars"] = len(session.report.render()) if hasattr(session.report, "render") else None
    out["utterances"] = len(session.utterances)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/dictation.py", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset (8 dictations, 17 commands)")
    parser.add_argument("--model", default=DictationSettings().model, help="tiny.en, base, or a CTranslate2 directory")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-clips", type=int, default=None, help="clips streamed for latency")
    parser.add_argument("--no-prompt", action="store_true", help="ours without the prompt (ablation)")
    parser.add_argument("--hotwords", action="store_true", help="ours with hotwords (ablation)")
    parser.add_argument("--final-model", default=DictationSettings().final_model, help="model of the final pass ('' = --model)")
    parser.add_argument("--final-beam", type=int, default=DictationSettings().final_beam_size)
    parser.add_argument("--skip-plain-final", action="store_true", help="skip the 'plain base' line")
    parser.add_argument("--verbose", action="store_true", help="log missed commands")
    parser.add_argument("--latency-only", action="store_true", help="only the streaming figures")
    parser.add_argument("--no-latency", action="store_true", help="skip the streaming figures")
    parser.add_argument("--json-only", action="store_true")
    parser.add_argument("--drift", action="store_true",
                        help="only the long-session drift run (simulated clock; see drift_run)")
    parser.add_argument("--drift-minutes", type=float, default=30.0)
    parser.add_argument("--ours-only", action="store_true",
                        help="skip the baseline and plain-base lines (they do not change with our code)")
    parser.add_argument("--final-decode", choices=["local", "queue"], default="local",
                        help="queue: only the streaming latency, with the finals decoded locally and then on "
                             "the asr queue (dictation.final_decode: queue), both printed")
    parser.add_argument("--asr-worker", choices=["process", "thread"], default="process",
                        help="with --final-decode queue: a `readingroom worker --queues asr` process, or a "
                             "worker thread in this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    if args.verbose:
        logging.getLogger("dictation").setLevel(logging.WARNING)
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    settings = DictationSettings(
        model=args.model, final_model=args.final_model, final_beam_size=args.final_beam,
        cpu_threads=args.threads, use_prompt=not args.no_prompt, use_hotwords=args.hotwords,
    )

    t0 = time.perf_counter()
    load_before = os.getloadavg()
    clips, cmd_clips = build_corpus(args.quick)
    total_audio = sum(len(c.audio) for c in clips) / SAMPLE_RATE
    gen_s = time.perf_counter() - t0
    short_clips = build_short_sentences(args.quick)
    engine = Engine(settings)
    medical = medical_words(settings.lexicon_path)
    session = DictationSession(settings)
    timings = {}
    if args.drift:
        all_clips, _ = build_corpus(False)
        result = drift_run(all_clips, settings, engine, minutes=args.drift_minutes)
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        result["load_avg_before"] = [round(x, 2) for x in load_before]
        result["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result, indent=1))
        return 0
    if args.final_decode == "queue":
        n_lat = args.latency_clips or (3 if args.quick else 8)
        lat_clips = clips[:: max(1, len(clips) // n_lat)][:n_lat]
        result = final_decode_comparison(lat_clips, settings, engine, args.asr_worker)
        result.update({"clips": len(lat_clips), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       "audio_min": round(sum(len(c.audio) for c in lat_clips) / SAMPLE_RATE / 60, 2),
                       "model": settings.model, "final_model": settings.final_model,
                       "final_beam_size": settings.final_beam_size, "bench_s": round(time.perf_counter() - t0, 1)})
        if not args.json_only:
            print_final_decode(result)
        print(json.dumps(result))
        return 0
    if args.latency_only:
        clips, cmd_clips, short_clips = clips[:24], [], []
    t = time.perf_counter()
    baseline = ({} if args.ours_only else
                run_baseline(engine.model, clips, cmd_clips, settings.beam_size, medical, session.grammar, short_clips))
    timings["baseline_s"] = round(time.perf_counter() - t, 1)
    plain_final = None
    if engine.final_model is not engine.model and not args.skip_plain_final and not args.ours_only:
        t = time.perf_counter()
        plain_final = run_baseline(engine.final_model, clips, cmd_clips, settings.final_beam_size, medical, session.grammar, short_clips)
        timings["plain_final_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    ours = run_ours(engine, clips, cmd_clips, settings, medical, short_clips)
    timings["ours_s"] = round(time.perf_counter() - t, 1)
    n_lat = args.latency_clips or (3 if args.quick else 8)
    lat_clips = clips[:: max(1, len(clips) // n_lat)][:n_lat]
    t = time.perf_counter()
    if args.no_latency or args.ours_only:
        lat_clips = []
    plain = settings.with_(max_no_speech_prob=1.0, min_avg_logprob=-99.0, final_model="", final_beam_size=settings.beam_size)
    if lat_clips:
        baseline.update(streaming_latency(lat_clips, StreamingTranscriber(Engine(plain, model=engine.model), plain), realtime=False))
        lat_session = DictationSession(settings, template=template_for(lat_clips[0].text))
        ours.update(streaming_latency(lat_clips, lat_session.stream(engine), realtime=settings.final_in_background))
    timings["latency_s"] = round(time.perf_counter() - t, 1)
    result = {
        "model": args.model, "final_model": settings.final_model or args.model,
        "final_beam_size": settings.final_beam_size, "threads": args.threads, "quick": args.quick,
        "utterances": len(clips), "audio_min": round(total_audio / 60, 2), "commands": len(cmd_clips),
        "short_sentences": len(short_clips),
        "baseline": baseline, "plain_final_model": plain_final, "ours": ours, "timings": timings,
        "wer_ratio": round(ours["wer"] / baseline["wer"], 3) if baseline.get("wer") else None,
        "medical_ratio": round(ours["medical_term_error_rate"] / baseline["medical_term_error_rate"], 3) if baseline.get("medical_term_error_rate") else None,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "corpus_s": round(gen_s, 1), "bench_s": round(time.perf_counter() - t0, 1),
    }
    if not args.json_only:
        print(f"model {args.model}, {args.threads} threads: {len(clips)} dictations ({total_audio/60:.1f} min), {len(cmd_clips)} commands")
        print(f"final pass: {result['final_model']} beam {settings.final_beam_size}; baseline: plain {args.model} beam {settings.beam_size}")
        print(f"{'figure':36} {'baseline':>10} {'plain ' + str(result['final_model']):>12} {'ours':>10}")
        for key in ours:
            if key in baseline or args.ours_only:
                other = plain_final.get(key, "") if plain_final else ""
                print(f"{key:36} {str(baseline.get(key, '')):>10} {str(other):>12} {str(ours[key]):>10}")
        print(f"timings {timings}; load average before {result['load_avg_before']}, after {result['load_avg_after']}")
        print(f"WER ratio ours/baseline {result['wer_ratio']}, medical-term ratio {result['medical_ratio']}, bench {result['bench_s']} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
