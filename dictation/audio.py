"""Audio in: files and browser chunks (webm/opus, ogg, wav) decoded with PyAV to 16 kHz mono.

``decode_audio()`` decodes a whole file or byte string. ``ChunkDecoder`` decodes a stream that
arrives in pieces (MediaRecorder chunks): raw 16-bit PCM is converted directly; a container is
fed through a pipe to a PyAV demuxer on a background thread, so memory stays bounded over a
long session. ``Resampler`` is the one resampler (to 16 kHz mono float32): decoded frames here,
browser microphone chunks in the live session (dictation.live).
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from pathlib import Path

import numpy as np

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AudioError(ReadingRoomError):
    """The audio could not be decoded; the message says which format is expected."""


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit mono PCM -> float32 in [-1, 1]."""
    if len(data) % 2:
        raise AudioError("PCM chunk has an odd number of bytes; send whole 16-bit samples.")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """Browser audio (int16 or float, mono or stereo) -> float32 mono in [-1, 1]."""
    data = np.asarray(samples)
    if data.ndim == 2:
        data = data.mean(axis=1) if data.shape[1] <= 2 else data.mean(axis=0)
    if data.dtype.kind == "i":
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    return data.astype(np.float32).reshape(-1)


def _frames_to_array(frames) -> np.ndarray:
    arrays = [f.to_ndarray().reshape(-1) for f in frames]
    return np.concatenate(arrays).astype(np.float32) if arrays else np.zeros(0, np.float32)


class Resampler:
    """Stateful resampling to 16 kHz mono float32 (PyAV's filter, so no aliasing and no seams
    between chunks). ``sample_rate``: the rate of the arrays given to ``__call__`` (microphone
    chunks); decoded PyAV frames carry their own rate and go to ``frame()``."""

    def __init__(self, sample_rate: int | None = None) -> None:
        import av

        self.sample_rate = int(sample_rate) if sample_rate is not None else None
        self._av = av
        passthrough = self.sample_rate == SAMPLE_RATE
        self._resampler = None if passthrough else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """An array of ``sample_rate`` audio (int16 or float, mono or stereo) -> 16 kHz mono float32."""
        data = to_mono_float(samples)
        if self._resampler is None or not len(data):
            return data
        if self.sample_rate is None:
            raise AudioError("Resampler() without a sample_rate takes decoded frames (frame()); "
                             "give Resampler(sample_rate) for sample arrays.")
        frame = self._av.AudioFrame.from_ndarray(data.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        return self.frame(frame)

    def frame(self, frame) -> np.ndarray:
        """One decoded PyAV audio frame (None: the end, what the filter still holds) -> samples."""
        if self._resampler is None:   # 16 kHz arrays pass through; a frame still needs the conversion
            self._resampler = self._av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        return _frames_to_array(self._resampler.resample(frame))


def decode_audio(source: str | Path | bytes) -> np.ndarray:
    """Any audio file PyAV reads (wav, webm/opus, ogg, mp3, ...) -> float32 16 kHz mono."""
    import av

    handle = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.audio:
                raise AudioError(f"{source!r:.80} has no audio stream; send wav, webm/opus or ogg.")
            resampler = Resampler()
            out = []
            for frame in container.decode(audio=0):
                frame.pts = None
                out.append(resampler.frame(frame))
            out.append(resampler.frame(None))
    except FileNotFoundError:
        raise AudioError(f"Audio file {source} not found.") from None
    except av.FFmpegError as exc:
        raise AudioError(
            f"Could not decode {str(source)[:80]!r}: {exc}. Supported: wav, webm/opus, ogg, "
            "or raw 16 kHz 16-bit PCM (ChunkDecoder('pcm'))."
        ) from None
    return np.concatenate(out).astype(np.float32)


class ChunkDecoder:
    """Decode a stream in pieces. ``kind``: 'pcm' (16 kHz s16le), or 'webm'/'ogg'/'wav'."""

    def __init__(self, kind: str = "pcm") -> None:
        if kind not in ("pcm", "webm", "ogg", "wav"):
            raise AudioError(f"Unknown stream kind {kind!r}; use pcm, webm, ogg or wav.")
        self.kind = kind
        self._samples: "queue.Queue[np.ndarray | BaseException]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._writer = None

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        reader = os.fdopen(read_fd, "rb", buffering=0)
        fmt = {"webm": "webm", "ogg": "ogg", "wav": "wav"}[self.kind]

        def run() -> None:
            import av

            try:
                with av.open(_Unseekable(reader), mode="r", format=fmt) as container:
                    resampler = Resampler()
                    for frame in container.decode(audio=0):
                        frame.pts = None
                        self._samples.put(resampler.frame(frame))
                    self._samples.put(resampler.frame(None))
            except Exception as exc:  # noqa: BLE001 - surfaced to the caller by read()
                self._samples.put(exc)
            finally:
                reader.close()

        self._thread = threading.Thread(target=run, name=f"decode-{self.kind}", daemon=True)
        self._thread.start()

    def feed(self, chunk: bytes) -> np.ndarray:
        """Give a chunk; returns the samples decoded so far (may be empty for containers)."""
        if self.kind == "pcm":
            return pcm16_to_float(chunk)
        if self._thread is None:
            self._start()
        try:
            self._writer.write(chunk)
        except BrokenPipeError:
            pass
        return self._drain(block=False)

    def close(self) -> np.ndarray:
        """End of stream: the remaining samples."""
        if self.kind == "pcm" or self._thread is None:
            return np.zeros(0, np.float32)
        self._writer.close()
        self._thread.join(timeout=10)
        return self._drain(block=False)

    def _drain(self, block: bool) -> np.ndarray:
        out = []
        while True:
            try:
                item = self._samples.get(block=block, timeout=0.05 if block else None)
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise AudioError(f"Could not decode the {self.kind} stream: {item}") from item
            out.append(item)
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class _Unseekable(io.RawIOBase):
    """A pipe as a read-only, non-seekable file for PyAV."""

    def __init__(self, raw) -> None:
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n
