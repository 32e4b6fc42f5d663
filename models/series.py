"""The one DICOM series reader: a series' files -> slices in one order -> a volume with its geometry.

The models (``models.inference.read_ct``) and the viewer (``workstation.viewer.load_volume``)
both read series here, so that slice ``i`` is the same image for both and a heatmap slice lands on
the image it was computed on.

The slice order, the only one in ReadingRoom (``slice_order``):

1. by ImagePositionPatient projected on the slice normal (the cross product of the row and column
   directions of ImageOrientationPatient, the series' first image's), when every image has a
   position and the series an orientation: inferior to superior for an axial head first series;
2. else by InstanceNumber (images without one after those with one);
3. ties keep the instance number, then the order of the files given, then the frame order.

A multi-frame image gives one slice per frame, at the image's position. Grey images become
modality values (``apply_modality_lut``: HU for CT) in float32; colour images stay RGB uint8.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


class SeriesError(ReadingRoomError):
    """A series cannot be read into a volume; the message says why."""


@dataclass(frozen=True)
class SliceKey:
    """Where one slice goes: its position along the slice normal (mm, None when unknown), its
    InstanceNumber (None when absent), the index of its file among those given, its frame."""

    position_mm: float | None
    instance: int | None
    file_index: int
    frame: int = 0


def slice_order(keys: Sequence[SliceKey]) -> list[int]:
    """The indices of ``keys`` in slice order (the rule in the module docstring)."""
    by_position = bool(keys) and all(k.position_mm is not None for k in keys)

    def rank(i: int) -> tuple:
        k = keys[i]
        position = k.position_mm if by_position else 0.0
        return position, k.instance is None, k.instance or 0, k.file_index, k.frame

    return sorted(range(len(keys)), key=rank)


def slice_normal(orientation: Sequence[float] | None) -> np.ndarray | None:
    """The unit normal of ImageOrientationPatient (row x column direction), None when unusable."""
    try:
        iop = np.array([float(v) for v in orientation], dtype=float)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if iop.shape != (6,):
        return None
    normal = np.cross(iop[:3], iop[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else None


def slice_key(ds: Any, normal: np.ndarray | None, file_index: int, frame: int = 0) -> SliceKey:
    """The sort key of frame ``frame`` of the image ``ds`` (a pydicom dataset or header)."""
    position = None
    ipp = ds.get("ImagePositionPatient")
    if normal is not None and ipp is not None:
        try:
            values = np.array([float(v) for v in ipp], dtype=float)
            if values.shape == (3,) and np.isfinite(values).all():
                position = float(values @ normal)
        except (TypeError, ValueError):
            position = None
    try:
        instance = int(ds.get("InstanceNumber")) if ds.get("InstanceNumber") not in (None, "") else None
    except (TypeError, ValueError):
        instance = None
    return SliceKey(position, instance, file_index, frame)


@dataclass
class SeriesVolume:
    """A series read in slice order, with what its callers need of its header and geometry."""

    pixels: np.ndarray                  # (slices, rows, cols) float32 modality values, or (..., 3) uint8 RGB
    header: Any                         # the first decoded image's dataset (tags, window, photometric)
    keys: list[SliceKey]                # per slice, in slice order
    sop_uids: list[str]                 # per slice (a multi-frame image repeats its UID)
    orientation: tuple[float, ...] | None   # ImageOrientationPatient of the first image
    thickness_mm: float | None          # SliceThickness, else the median gap between positions
    pixel_spacing_mm: tuple[float, float] | None   # (row, column) spacing: PixelSpacing
    multi_frame: bool = False           # some image held more than one frame
    problems: list[str] = field(default_factory=list)   # images skipped (lenient reading only)

    @property
    def color(self) -> bool:
        return self.pixels.ndim == 4

    @property
    def files(self) -> np.ndarray:
        """Per slice, the index of its file among those given: slice ``i`` is file ``files[i]``."""
        return np.array([k.file_index for k in self.keys], dtype=int)


def _decode(ds: Any) -> np.ndarray:
    """The image's frames as (frames, rows, cols) modality values, or (frames, rows, cols, 3) RGB."""
    from pydicom.pixels import apply_modality_lut

    array = ds.pixel_array
    if int(ds.get("NumberOfFrames") or 1) == 1:
        array = array[np.newaxis]
    if int(ds.get("SamplesPerPixel") or 1) == 3:   # pydicom's pixel_array is RGB (YBR is converted)
        return array.astype(np.uint8) if array.dtype != np.uint8 else array
    return apply_modality_lut(array, ds).astype(np.float32)


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(math.isfinite(v) for v in out) else None


def _thickness(header: Any, positions: list[float | None]) -> float | None:
    try:
        thick = float(header.get("SliceThickness") or 0)
    except (TypeError, ValueError):
        thick = 0.0
    if thick > 0:
        return thick
    known = sorted(p for p in positions if p is not None)
    if len(known) > 1:
        gap = float(np.median(np.diff(known)))
        if gap > 0:
            return gap
    return None


def read_series(paths: Sequence[Path], *, strict: bool = True) -> SeriesVolume:
    """Read a series' files into a volume in slice order.

    ``strict`` (the models): an image that cannot be decoded, or one of another size than the
    first, raises SeriesError. Lenient (the viewer): such images are skipped and listed in
    ``problems``; SeriesError only when no image can be decoded."""
    import pydicom

    if not paths:
        raise SeriesError("no images")
    header, normal, shape = None, None, None
    frames: list[tuple[SliceKey, np.ndarray, str]] = []
    problems: list[str] = []
    multi_frame = False
    for i, path in enumerate(paths):
        try:
            ds = pydicom.dcmread(path)
            data = _decode(ds)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a reason (or, lenient, skipped)
            if strict:
                raise SeriesError(f"cannot decode image {i + 1} ({type(exc).__name__}: {exc})") from None
            problems.append(f"{Path(path).name}: {exc}")
            continue
        if header is None:
            header, shape = ds, data.shape[1:]
            normal = slice_normal(ds.get("ImageOrientationPatient"))
        if data.shape[1:] != shape:
            if strict:
                raise SeriesError(f"images of different sizes in one series ({shape} and {data.shape[1:]})")
            problems.append(f"{Path(path).name}: size {data.shape[1:]}, not {shape}")
            continue
        multi_frame = multi_frame or data.shape[0] > 1
        uid = str(ds.get("SOPInstanceUID", ""))
        frames += [(slice_key(ds, normal, i, f), data[f], uid) for f in range(data.shape[0])]
    if header is None:
        raise SeriesError(f"no image could be decoded: {'; '.join(problems[:3])}")
    if problems:
        log.warning("%d of %d image(s) skipped: %s", len(problems), len(paths), problems[:3])
    order = slice_order([f[0] for f in frames])
    keys = [frames[j][0] for j in order]
    pixels = np.stack([frames[j][1] for j in order])
    return SeriesVolume(pixels, header, keys, [frames[j][2] for j in order],
                        orientation=_floats(header.get("ImageOrientationPatient"), 6),
                        thickness_mm=_thickness(header, [k.position_mm for k in keys]),
                        pixel_spacing_mm=_floats(header.get("PixelSpacing"), 2),  # type: ignore[arg-type]
                        multi_frame=multi_frame, problems=problems)
