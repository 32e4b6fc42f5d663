"""Run the triage models on a stored study: pick a series, read it, preprocess, infer, localize.

Pure of the database: the caller (triage/pipeline.py, models/evaluate.py) hands over the series
(``SeriesInfo``: UIDs, descriptions and files in instance order) and receives, per model, either
findings with probability, threshold, series and heatmap, or a reason why the model could not
run. ONNX Runtime runs the models; torch is the fallback when ONNX Runtime cannot (shipped
models carry model.pt). A failure is a reason, never an exception out of ``analyse``.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.registry import ModelCard
from models.series import SeriesError, read_series
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "ct-2.5d": {"modality": ["CT"], "body_part": ["HEAD", "BRAIN", "SKULL"],
                "description": r"HEAD|BRAIN|CRANI|SKULL|CEREB",
                "exclude_description": r"LOCALI[SZ]ER|SCOUT|TOPO|SURVIEW|DOSE|\bCTA\b|ANGIO|PERFUSION",
                "slice_thickness_mm": [0.5, 10.0], "orientation": "axial", "images": [1, 1000]},
    "cxr-2d": {"modality": ["CR", "DX"], "body_part": ["CHEST", "THORAX"],
               "description": r"CHEST|THORAX|CXR|LUNG",
               "exclude_description": r"\bLAT(ERAL)?\b|DECUB", "images": [1, 1]},
}


class ModelRunError(ReadingRoomError):
    """A model could not process a series; the message is the reason shown to the radiologist."""


@dataclass(frozen=True)
class SeriesInfo:
    series_uid: str
    modality: str
    description: str = ""
    body_part: str = ""
    study_description: str = ""
    files: tuple[Path, ...] = ()       # in instance order
    sop_uids: tuple[str, ...] = ()


@dataclass
class Finding:
    finding: str
    probability: float
    threshold: float | None
    model: str
    version: str
    series_uid: str
    heatmap: np.ndarray | None = None  # float32 0..1: CT (slices, R, C) in instance order; CXR (R, C)


@dataclass
class ModelRun:
    model: str
    version: str
    findings: list[Finding] = field(default_factory=list)
    reason: str = ""                   # why there is no result ("" when findings are there)
    series: SeriesInfo | None = None
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- series selection


def rules_for(card: ModelCard, config_rules: dict[str, Any] | None = None) -> dict[str, Any]:
    config_rules = config_rules or {}
    return card.rules or config_rules.get(card.name) or config_rules.get(card.kind) or DEFAULT_RULES.get(card.kind, {})


def _header(path: Path):
    from pydicom import dcmread

    return dcmread(path, stop_before_pixels=True)


def check_series(series: SeriesInfo, rules: dict[str, Any], header=None) -> str:
    """'' when the series meets the rules, else why not."""
    mods = [m.upper() for m in rules.get("modality", [])]
    if mods and series.modality.upper() not in mods:
        return f"modality {series.modality or '?'} (needs {'/'.join(mods)})"
    text = f"{series.description} {series.study_description}".upper()
    exclude = rules.get("exclude_description")
    if exclude and re.search(exclude, text):
        return f"description {series.description or series.study_description!r} is excluded"
    parts = [p.upper() for p in rules.get("body_part", [])]
    if parts:
        if series.body_part:
            if series.body_part.upper() not in parts:
                return f"body part {series.body_part} (needs {'/'.join(parts)})"
        elif not (rules.get("description") and re.search(rules["description"], text)):
            return "no body part, and the description does not name one"
    lo, hi = rules.get("images", [1, 100000])
    count = len(series.files)
    if header is not None and int(getattr(header, "NumberOfFrames", 1) or 1) > 1:
        return "multi-frame images are not supported"
    if not lo <= count <= hi:
        return f"{count} image(s) (needs {lo} to {hi})"
    if header is not None and "slice_thickness_mm" in rules and getattr(header, "SliceThickness", None):
        t = float(header.SliceThickness)
        t_lo, t_hi = rules["slice_thickness_mm"]
        if not t_lo <= t <= t_hi:
            return f"slice thickness {t:g} mm (needs {t_lo:g} to {t_hi:g})"
    if header is not None and rules.get("orientation") == "axial":
        iop = getattr(header, "ImageOrientationPatient", None)
        if iop is not None and len(iop) == 6:
            normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
            if abs(normal[2]) < 0.8:
                return "not an axial series"
    return ""


def select_series(card: ModelCard, series: Sequence[SeriesInfo], config_rules: dict[str, Any] | None = None,
                  ) -> tuple[SeriesInfo | None, str]:
    """The series this model reads (the one with the most images among those that qualify)."""
    rules = rules_for(card, config_rules)
    reasons, ok = [], []
    for s in series:
        if not s.files:
            reasons.append(f"series {s.series_uid[-8:]}: no images")
            continue
        why = check_series(s, {k: v for k, v in rules.items() if k in ("modality",)})
        if not why:
            try:
                why = check_series(s, rules, _header(s.files[0]))
            except Exception as exc:  # noqa: BLE001 - an unreadable header is a reason
                why = f"unreadable header ({exc})"
        (reasons.append(f"{s.modality} series {s.description or s.series_uid[-8:]}: {why}") if why else ok.append(s))
    if not ok:
        return None, "; ".join(reasons) or "no series"
    return max(ok, key=lambda s: len(s.files)), ""


# ----------------------------------------------------------------------------- reading


@dataclass
class CTVolume:
    hu: np.ndarray                     # (slices, rows, cols), inferior to superior, standard orientation
    order: np.ndarray                  # volume slice i is series file order[i]
    thickness_mm: float
    flip_rows: bool
    flip_cols: bool


def read_ct(files: Sequence[Path]) -> CTVolume:
    """The CT series as HU in slice order (models/series.py, the viewer's order too), in the
    standard display orientation; ``order`` maps the volume's slices back to ``files``."""
    try:
        series = read_series(files)
    except SeriesError as exc:
        raise ModelRunError(str(exc)) from None
    if series.multi_frame or series.color:
        raise ModelRunError("multi-frame or colour CT images are not supported")
    hu = series.pixels
    iop = series.orientation or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    # Standard display orientation: rows along +x (patient right -> left), columns along +y.
    flip_cols, flip_rows = bool(iop[0] < 0), bool(iop[4] < 0)
    if flip_cols:
        hu = hu[:, :, ::-1]
    if flip_rows:
        hu = hu[:, ::-1, :]
    return CTVolume(np.ascontiguousarray(hu), series.files, series.thickness_mm or 5.0, flip_rows, flip_cols)


def read_cxr(path: Path) -> tuple[np.ndarray, str]:
    from pydicom import dcmread

    try:
        ds = dcmread(path)
        arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001
        raise ModelRunError(f"cannot decode the radiograph ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2:
        raise ModelRunError("multi-frame or colour radiographs are not supported")
    return arr, str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))


# ----------------------------------------------------------------------------- running


class Runner:
    """One loaded model: ONNX Runtime, else torch (shipped models only)."""

    def __init__(self, card: ModelCard, threads: int = 2) -> None:
        self.card = card
        self.backend = ""
        self._session = None
        self._torch = None
        self._threads = threads
        try:
            self._load_onnx()
        except Exception as exc:  # noqa: BLE001 - fall back to torch
            log.warning("%s: ONNX Runtime could not load the model (%s); trying torch", card.name, exc)
            self._load_torch()

    def _load_onnx(self) -> None:
        import onnxruntime as ort

        path = self.card.path
        if path.is_dir():   # a MONAI bundle: models/model.onnx, else TorchScript models/model.ts
            if (path / "models" / "model.onnx").exists():
                path = path / "models" / "model.onnx"
            else:
                raise FileNotFoundError("the bundle has no models/model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.backend = "onnxruntime"

    def _load_torch(self) -> None:
        import torch

        if self.card.path.is_dir() and (self.card.path / "models" / "model.ts").exists():
            self._torch = torch.jit.load(str(self.card.path / "models" / "model.ts"), map_location="cpu").eval()
        elif self.card.torch_weights is not None and self.card.metadata.get("task"):
            from models.networks import build

            model = build(self.card.metadata["task"], self.card.metadata.get("architecture"))
            model.load_state_dict(torch.load(self.card.torch_weights, map_location="cpu", weights_only=True))
            self._torch = model.eval()
        else:
            raise ModelRunError(f"model {self.card.name} cannot be loaded (no ONNX Runtime session, no torch weights)")
        self.backend = "torch"

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Returns (probabilities (N, findings), heatmaps (N, findings, h, w) 0..1 or None)."""
        if self._session is not None:
            outs = self._session.run(None, {self._input: x.astype(np.float32)})
        else:
            import torch

            with torch.no_grad():
                res = self._torch(torch.from_numpy(x.astype(np.float32)))
            outs = [t.numpy() for t in (res if isinstance(res, (tuple, list)) else (res,))]
        activation = self.card.metadata.get("output", {}).get("activation", "sigmoid")
        scores = np.asarray(outs[0], np.float32).reshape(len(x), -1)
        probs = 1 / (1 + np.exp(-scores)) if activation == "sigmoid" else scores
        maps = None
        if len(outs) > 1 and np.asarray(outs[1]).ndim == 4:
            m = np.asarray(outs[1], np.float32)
            maps = 1 / (1 + np.exp(-m)) if activation == "sigmoid" else np.clip(m, 0, 1)
        return probs, maps


_RUNNERS: dict[tuple[str, str], Runner] = {}
_LOCK = threading.Lock()


def runner_for(card: ModelCard) -> Runner:
    key = (card.name, str(card.path))
    with _LOCK:
        if key not in _RUNNERS:
            _RUNNERS[key] = Runner(card)
        return _RUNNERS[key]


def _input_size(card: ModelCard, default: int) -> int:
    shape = card.metadata.get("input", {}).get("shape")
    return int(shape[-1]) if shape and isinstance(shape[-1], int) else default


def ct_detail(card: ModelCard) -> int:
    """The card's sub-pixel factor (``input.detail``, 1 when absent): see ``ct_inputs``."""
    return int(card.metadata.get("input", {}).get("detail", 1))


def run_ct(card: ModelCard, series: SeriesInfo, heatmap_size: int = 128) -> ModelRun:
    import time

    from models.preprocess import CT_SIZE, ct_heatmap_to_series, ct_inputs, resize_stack

    run = ModelRun(card.name, card.version, series=series)
    t0 = time.perf_counter()
    vol = read_ct(series.files)
    t1 = time.perf_counter()
    x, geom = ct_inputs(vol.hu, vol.thickness_mm, _input_size(card, CT_SIZE), ct_detail(card))
    t2 = time.perf_counter()
    slice_probs, maps = runner_for(card)(x)
    t3 = time.perf_counter()
    run.timings = {"decode_s": t1 - t0, "preprocess_s": t2 - t1, "model_s": t3 - t2}
    body = None
    for k, finding in enumerate(card.findings):
        heat = None
        if maps is not None:
            heat = ct_heatmap_to_series(maps[:, k], geom, heatmap_size)
            if body is None:                      # no heat in the air around the head
                body = resize_stack(vol.hu, heat.shape[1:]) > -300
            heat = heat * body
            if vol.flip_cols:
                heat = heat[:, :, ::-1]
            if vol.flip_rows:
                heat = heat[:, ::-1, :]
            unsorted = np.empty_like(heat)
            unsorted[vol.order] = heat            # back to the series' instance order
            heat = np.ascontiguousarray(unsorted)
        run.findings.append(Finding(finding, float(slice_probs[:, k].max()), card.thresholds.get(finding),
                                    card.name, card.version, series.series_uid, heat))
    return run


def run_cxr(card: ModelCard, series: SeriesInfo, heatmap_size: int = 128) -> ModelRun:
    import time

    from models.preprocess import CXR_SIZE, cxr_input, resize_stack

    run = ModelRun(card.name, card.version, series=series)
    t0 = time.perf_counter()
    pixels, photometric = read_cxr(series.files[0])
    t1 = time.perf_counter()
    x = cxr_input(pixels, photometric, _input_size(card, CXR_SIZE))[None]
    t2 = time.perf_counter()
    probs, maps = runner_for(card)(x)
    t3 = time.perf_counter()
    run.timings = {"decode_s": t1 - t0, "preprocess_s": t2 - t1, "model_s": t3 - t2}
    rows, cols = pixels.shape
    scale = min(1.0, heatmap_size / max(rows, cols))
    out_shape = (max(1, round(rows * scale)), max(1, round(cols * scale)))
    for k, finding in enumerate(card.findings):
        heat = np.clip(resize_stack(maps[0, k][None], out_shape)[0], 0, 1) if maps is not None else None
        run.findings.append(Finding(finding, float(probs[0, k]), card.thresholds.get(finding), card.name,
                                    card.version, series.series_uid, heat))
    return run


def run_model(card: ModelCard, series: SeriesInfo, heatmap_size: int = 128) -> ModelRun:
    """Run one model on one series; any failure becomes ``reason``."""
    try:
        if card.kind == "ct-2.5d":
            return run_ct(card, series, heatmap_size)
        if card.kind == "cxr-2d":
            return run_cxr(card, series, heatmap_size)
        return ModelRun(card.name, card.version, reason=f"unknown input kind {card.kind!r}", series=series)
    except ModelRunError as exc:
        return ModelRun(card.name, card.version, reason=str(exc), series=series)
    except Exception as exc:  # never stop the worker over one study
        log.exception("model %s failed on series %s", card.name, series.series_uid)
        return ModelRun(card.name, card.version, reason=f"processing failed ({type(exc).__name__}: {exc})",
                        series=series)


def analyse(cards: Sequence[ModelCard], series: Sequence[SeriesInfo], config_rules: dict[str, Any] | None = None,
            heatmap_size: int = 128) -> list[ModelRun]:
    """Every model whose modality is in the study: select its series and run it."""
    modalities = {s.modality.upper() for s in series}
    runs = []
    for card in cards:
        if not modalities & {m.upper() for m in card.modalities}:
            continue
        chosen, why = select_series(card, series, config_rules)
        if chosen is None:
            runs.append(ModelRun(card.name, card.version, reason=f"no suitable series ({why})"))
            continue
        runs.append(run_model(card, chosen, heatmap_size))
    return runs
