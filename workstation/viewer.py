"""The image viewer's core: stored DICOM series → slices → windowed 8-bit images.

Pure and testable; the web routes (``workstation.web``) and the browser code
(``workstation/static/viewer.js``) sit on top. A series is decoded once by the one series reader,
``models.series`` (every transfer syntax pydicom reads, multi-frame included; sorted by the slice
order the models read, so a heatmap slice lies on its image; modality values, HU for CT) and kept
in a small LRU cache, so that a slice change only windows and encodes one image: a few
milliseconds for a 512×512 CT.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.series import SeriesError, read_series
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

# Window presets as (center, width), in modality units (HU for CT).
PRESETS: dict[str, tuple[float, float]] = {
    "brain": (40, 80),
    "subdural": (75, 215),
    "stroke": (40, 40),
    "bone": (500, 2000),
    "lung": (-600, 1500),
    "mediastinum": (50, 350),
    "abdomen": (50, 400),
    "liver": (60, 160),
}

# Tags shown beside the image: (keyword, label).
KEY_TAGS = [
    ("PatientName", "Patient"), ("PatientID", "Patient ID"), ("PatientSex", "Sex"),
    ("PatientBirthDate", "Birth date"), ("AccessionNumber", "Accession"), ("StudyDate", "Study date"),
    ("StudyDescription", "Study"), ("SeriesDescription", "Series"), ("Modality", "Modality"),
    ("BodyPartExamined", "Body part"), ("Laterality", "Laterality"), ("ViewPosition", "View"),
    ("SliceThickness", "Slice thickness (mm)"), ("PixelSpacing", "Pixel spacing (mm)"),
    ("KVP", "kVp"), ("Manufacturer", "Manufacturer"), ("InstitutionName", "Institution"),
    ("ReferringPhysicianName", "Referring physician"),
]


class ViewerError(ReadingRoomError):
    """The series cannot be shown; the message says why."""


@dataclass
class Volume:
    """A series as slices of modality values (float32), or RGB (uint8) for color images."""

    series_uid: str
    pixels: np.ndarray                      # (slices, rows, cols) or (slices, rows, cols, 3)
    invert: bool = False                    # MONOCHROME1: high values are dark
    default_window: tuple[float, float] = (0.0, 1.0)
    tags: dict[str, str] = field(default_factory=dict)
    sop_uids: list[str] = field(default_factory=list)   # of each slice (a multi-frame image repeats)

    @property
    def slices(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def color(self) -> bool:
        return self.pixels.ndim == 4

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)


def _first(value: object) -> float | None:
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = list(value)[0]  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


def _tag_text(ds, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or value == "":
        return ""
    if type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def load_volume(series_uid: str, paths: list[Path]) -> Volume:
    """Decode a series' files into a Volume, in the one slice order of ``models.series`` (the
    models read the same order). Files that cannot be decoded are skipped and logged. Raises
    ViewerError with the reason."""
    if not paths:
        raise ViewerError(f"series {series_uid} has no stored images")
    try:
        series = read_series(paths, strict=False)
    except SeriesError as exc:
        raise ViewerError(f"series {series_uid}: {exc}") from None
    if series.problems:
        log.warning("series %s: %d file(s) could not be shown: %s", series_uid, len(series.problems),
                    series.problems[:3])
    first, pixels = series.header, series.pixels
    invert = str(first.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    tags = {label: _tag_text(first, kw) for kw, label in KEY_TAGS if _tag_text(first, kw)}
    return Volume(series_uid, pixels, invert, default_window(first, pixels), tags, series.sop_uids)


def default_window(ds, pixels: np.ndarray) -> tuple[float, float]:
    """The file's own window, else a preset for CT, else the 1st–99th percentile range."""
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width and width > 1:
        return center, width
    if str(ds.get("Modality", "")) == "CT":
        return PRESETS["brain"] if "HEAD" in str(ds.get("BodyPartExamined", "")).upper() else PRESETS["abdomen"]
    if pixels.ndim == 4:
        return 127.5, 255.0
    sample = pixels[:: max(1, pixels.shape[0] // 8), ::4, ::4]
    low, high = np.percentile(sample, [1, 99])
    return float(low + high) / 2, float(max(high - low, 1.0))


def window(image: np.ndarray, center: float, width: float, invert: bool = False) -> np.ndarray:
    """Modality values → 8-bit display values with a linear window (DICOM PS3.3 C.11.2.1.2)."""
    if image.ndim == 3:  # RGB: shown as stored
        return image.astype(np.uint8)
    width = max(float(width), 1.0)
    low = center - 0.5 - (width - 1) / 2
    scaled = (image - low) * (255.0 / (width - 1))
    out = np.clip(scaled, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def encode_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def render_slice(volume: Volume, index: int, center: float | None = None, width: float | None = None,
                 invert: bool | None = None) -> bytes:
    """One slice as PNG. The index is clamped to the series; None means the default window."""
    index = min(max(int(index), 0), volume.slices - 1)
    c, w = volume.default_window
    image = window(volume.pixels[index], c if center is None else center, w if width is None else width,
                   volume.invert if invert is None else invert)
    return encode_png(image)


def heatmap_layer(maps: np.ndarray, volume: Volume, index: int, map_sop_uids: list[str]) -> np.ndarray | None:
    """The heatmap of the volume's slice ``index``: a 2D map is for every slice; a stack is in
    the model's order, matched by SOP Instance UID when the sidecar lists them. None: no map."""
    if maps.ndim == 2:
        return maps
    index = min(max(int(index), 0), volume.slices - 1)
    if map_sop_uids and volume.sop_uids:
        uid = volume.sop_uids[index]
        return maps[map_sop_uids.index(uid)] if uid in map_sop_uids else None
    return maps[index] if maps.shape[0] == volume.slices else None


def heatmap_rgba(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A 0..1 heatmap → RGBA overlay of the image's size: transparent where cold, red where hot."""
    from PIL import Image

    values = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0, 1)
    if values.shape != shape:
        values = np.asarray(Image.fromarray(values).resize((shape[1], shape[0]), Image.BILINEAR))
    rgba = np.zeros((*shape, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 1] = (255 * np.clip(1.5 - 1.5 * values, 0, 1)).astype(np.uint8)  # yellow → red
    rgba[..., 3] = (200 * np.clip((values - 0.2) / 0.8, 0, 1)).astype(np.uint8)
    return rgba


class VolumeCache:
    """Decoded series, least recently used first out, bounded in bytes. Thread-safe."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Volume] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def get(self, series_uid: str, paths: list[Path]) -> Volume:
        with self._lock:
            if series_uid in self._items:
                self._items.move_to_end(series_uid)
                return self._items[series_uid]
            loading = self._loading.setdefault(series_uid, threading.Lock())
        with loading:  # one decode per series, however many requests wait for it
            with self._lock:
                if series_uid in self._items:
                    return self._items[series_uid]
            volume = load_volume(series_uid, paths)
            with self._lock:
                self._items[series_uid] = volume
                self._loading.pop(series_uid, None)
                while sum(v.nbytes for v in self._items.values()) > self.max_bytes and len(self._items) > 1:
                    self._items.popitem(last=False)
            return volume

    def drop(self, series_uid: str) -> None:
        with self._lock:
            self._items.pop(series_uid, None)
