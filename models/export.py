"""ONNX export, verified against torch."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17


def export_onnx(model, path: Path, example_shape: tuple[int, ...], seed: int = 0) -> float:
    """Export ``model`` (outputs: logits, maps) with a dynamic batch axis; returns the largest
    absolute difference between onnxruntime and torch on a random batch. Raises if above 1e-4."""
    import onnxruntime as ort
    import torch

    model.eval()
    example = torch.from_numpy(np.random.default_rng(seed).random((2, *example_shape[1:]), dtype=np.float32))
    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET, input_names=["input"],
                      output_names=["logits", "maps"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "maps": {0: "batch"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = [t.numpy() for t in model(example)]
    got = session.run(None, {"input": example.numpy()})
    diff = float(max(np.abs(a - b).max() for a, b in zip(ref, got)))
    if diff > 1e-4:
        raise RuntimeError(f"ONNX export of {path} differs from torch by {diff:.2e} (> 1e-4)")
    log.info("exported %s (max |onnx - torch| = %.2e)", path, diff)
    return diff
