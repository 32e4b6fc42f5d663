"""Streaming voice activity: the Silero VAD that ships with faster-whisper, one frame at a time.

faster-whisper's ``SileroVADModel.__call__`` resets its state on every call (it is made for whole
files); here the ONNX session is driven directly with the recurrent state (h, c) and the 64-sample
context carried across calls, so probabilities are the same as for one long call.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

FRAME_SAMPLES = 512          # 32 ms at 16 kHz, what the model expects
CONTEXT_SAMPLES = 64


class StreamingVad:
    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session     # cached by faster-whisper
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def probabilities(self, frames: np.ndarray) -> np.ndarray:
        """Speech probability per 512-sample frame; ``frames`` length is a multiple of 512."""
        if frames.size == 0:
            return np.zeros(0, np.float32)
        batch = frames.reshape(-1, FRAME_SAMPLES).astype(np.float32)
        contexts = np.concatenate([self._context[None, :], batch[:-1, -CONTEXT_SAMPLES:]], axis=0)
        inputs = np.concatenate([contexts, batch], axis=1)
        out, self._h, self._c = self._session.run(
            None, {"input": inputs, "h": self._h, "c": self._c}
        )
        self._context = batch[-1, -CONTEXT_SAMPLES:].copy()
        return np.asarray(out, dtype=np.float32).reshape(-1)
