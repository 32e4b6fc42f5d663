"""End to end: espeak-ng speech -> tiny.en -> structured report; silence and noise -> no text."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dictation.audio import SAMPLE_RATE, ChunkDecoder, decode_audio
from dictation.session import DictationSession
from readingroom.settings import DictationSettings
from dictation.stream import Final, Partial, StreamingTranscriber
from dictation.transcribe import Engine

pytestmark = pytest.mark.slow

DICTATION = (
    "Findings. There is no pleural effusion. The liver measures twenty one centimeters. "
    "The right kidney is normal. Impression. No acute abnormality."
)


def _speak(tmp_path: Path, text: str) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run `make install` (it runs apt-get install espeak-ng)")
    path = tmp_path / "dictation.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(DictationSettings(model="tiny.en"))


def test_dictation_lands_in_sections(tmp_path, engine):
    audio = decode_audio(_speak(tmp_path, DICTATION))
    session = DictationSession(DictationSettings(), template="ct_abdomen_pelvis")
    timing = session.transcribe_audio(audio, engine)
    sections = session.report.as_dict()
    findings = sections["findings"].lower()
    assert "no pleural effusion" in findings and "right kidney" in findings
    assert "21 cm" in findings
    assert sections["impression"].startswith("No") and "kidney" not in sections["impression"].lower()
    assert timing["rtf"] < 1.0


def test_cli_json(tmp_path, engine, capsys):
    from dictation.cli import main

    path = _speak(tmp_path, "Findings. No pleural effusion. Impression. Normal chest.")
    assert main([str(path), "--template", "chest_radiograph", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "sections", "commands", "timing"}
    assert "effusion" in out["sections"]["findings"].lower()


def test_streaming_partials_and_final(tmp_path, engine):
    audio = decode_audio(_speak(tmp_path, DICTATION))
    audio = np.concatenate([audio, np.zeros(SAMPLE_RATE, np.float32)])
    stream = StreamingTranscriber(engine, prompt=None)
    events = []
    for i in range(0, len(audio), SAMPLE_RATE // 10):
        events += stream.feed(audio[i : i + SAMPLE_RATE // 10])
    events += stream.flush()
    partials = [e for e in events if isinstance(e, Partial)]
    finals = [e for e in events if isinstance(e, Final)]
    assert partials and finals
    assert "kidney" in " ".join(f.text for f in finals).lower()
    assert stream.buffered_s == 0


def test_silence_and_noise_invent_no_text(engine):
    rng = np.random.default_rng(0)
    silence = np.zeros(SAMPLE_RATE * 5, np.float32)
    hum = 0.01 * np.sin(2 * np.pi * 50 * np.arange(SAMPLE_RATE * 5) / SAMPLE_RATE).astype(np.float32)
    noise = (0.02 * rng.standard_normal(SAMPLE_RATE * 5)).astype(np.float32)
    for audio in (silence, hum, noise, silence + noise + hum):
        session = DictationSession(DictationSettings(), template="ct_head")
        session.transcribe_audio(audio, engine)
        assert session.transcript() == ""
        assert all(not v for v in session.report.as_dict().values())
    # and the engine alone, without the VAD gate: the segment filter drops invented text
    assert engine.transcribe(noise).text == ""


def test_webm_opus_stream_decodes(tmp_path):
    import av

    path = tmp_path / "tone.webm"
    with av.open(str(path), "w", format="webm") as container:
        stream = container.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
        for i in range(0, len(tone), 960):
            frame = av.AudioFrame.from_ndarray(tone[None, i : i + 960], format="flt", layout="mono")
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = path.read_bytes()
    decoder = ChunkDecoder("webm")
    pieces = [decoder.feed(data[i : i + 700]) for i in range(0, len(data), 700)]
    pieces.append(decoder.close())
    assert abs(len(np.concatenate(pieces)) - SAMPLE_RATE) < 1000
    assert abs(len(decode_audio(data)) - SAMPLE_RATE) < 1000


def test_two_pass_background_finals_in_order(tmp_path, engine):
    """Partials from tiny.en, finals from the final model on a worker thread, in order."""
    audio = decode_audio(_speak(tmp_path, "Scratch that. " + DICTATION))
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([audio, gap, audio, gap])
    session = DictationSession(DictationSettings(), template="ct_abdomen_pelvis")
    stream = session.stream(engine, partials=True, background=True)
    events = []
    for i in range(0, len(audio), SAMPLE_RATE // 10):
        events += stream.feed(audio[i : i + SAMPLE_RATE // 10])
    events += stream.flush()
    stream.close()
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.start_s for f in finals] == sorted(f.start_s for f in finals)
    assert sum("kidney" in f.text.lower() for f in finals) == 2
    assert stream.pending_finals == 0


def test_final_model_is_loaded_once(engine):
    from dictation.models import base_path

    if not (base_path() / "model.bin").exists():
        pytest.fail(f"Whisper base is not installed at {base_path()}: run `make install` "
                    "(or `python -m dictation.install`)")
    assert engine.final_model is not engine.model
    assert Engine(DictationSettings(model="tiny.en")).final_model is engine.final_model
