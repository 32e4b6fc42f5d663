"""Pure preprocessing shared by training, inference and evaluation (numpy only).

Head CT (``ct_inputs``): HU volume -> slices resampled to ~5 mm -> a square crop around the head
-> 128 x 128 -> five channels per slice (2.5D): brain window of the slice and its two
neighbours, subdural window, bone window. With ``detail`` 2 (the shipped ich-ct) the crop is
resampled to 256 x 256 and folded into 20 channels of 128 x 128 (``space_to_depth``). Chest
radiograph (``cxr_input``): stored pixels -> MONOCHROME1 inverted -> robust 1..99 percentile
scaling -> 192 x 192.

The windowing is the same as MONAI's ``ScaleIntensityRange(a_min=c-w/2, a_max=c+w/2, b_min=0,
b_max=1, clip=True)`` (a test checks it); it is written in numpy so that a worker does not pay
MONAI's import (about 2 s) for every process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

CT_SIZE = 128
CXR_SIZE = 192
CT_WINDOWS = ((40.0, 80.0), (75.0, 215.0), (600.0, 2800.0))   # brain, subdural, bone (centre, width)
CT_TARGET_THICKNESS_MM = 5.0
CT_CHANNELS = 5


def window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    lo = center - width / 2
    return np.clip((hu - lo) / width, 0.0, 1.0).astype(np.float32)


def _resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights: box averaging when shrinking, linear interpolation when growing."""
    m = np.zeros((n_out, n_in), np.float32)
    if n_out <= n_in:
        edges = np.linspace(0, n_in, n_out + 1)
        for i in range(n_out):
            a, b = edges[i], edges[i + 1]
            lo, hi = int(np.floor(a)), int(np.ceil(b))
            for j in range(lo, min(hi, n_in)):
                m[i, j] = min(b, j + 1) - max(a, j)
            m[i] /= m[i].sum()
    else:
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = pos - lo
        m[np.arange(n_out), lo] += 1 - frac
        m[np.arange(n_out), hi] += frac
    return m


def resize_stack(stack: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize (N, H, W) to (N, h, w) (area when shrinking, bilinear when growing)."""
    ry = _resample_matrix(stack.shape[1], shape[0])
    rx = _resample_matrix(stack.shape[2], shape[1])
    return np.einsum("ij,njk,lk->nil", ry, stack.astype(np.float32), rx, optimize=True)


@dataclass(frozen=True)
class CTGeometry:
    """How model slices map back onto the series: for the heatmaps."""

    n_slices: int                      # slices in the series
    rows: int
    cols: int
    groups: tuple[tuple[int, int], ...]  # per model slice: [first, last) series slices averaged
    box: tuple[int, int, int]          # square crop in the series grid: top, left, side


def ct_inputs(volume_hu: np.ndarray, thickness_mm: float = 5.0, size: int = CT_SIZE,
              detail: int = 1) -> tuple[np.ndarray, CTGeometry]:
    """(slices, rows, cols) HU, inferior to superior -> (model slices, 5, size, size) float32.

    ``detail`` > 1 keeps a finer grid at the same cost in the network: the crop is resampled to
    ``size * detail`` and each channel is folded into ``detail ** 2`` channels of ``size``
    (``space_to_depth``), giving (model slices, 5 * detail ** 2, size, size). A one-pixel-thin
    band of blood along the skull survives that; averaged into 1.4 mm pixels it does not."""
    n, rows, cols = volume_hu.shape
    step = max(1, int(round(CT_TARGET_THICKNESS_MM / max(thickness_mm, 0.1))))
    groups = tuple((i, min(i + step, n)) for i in range(0, n, step))
    vol = _group_slices(volume_hu, groups) if step > 1 else volume_hu
    head = (vol > -300).any(axis=0)
    ys, xs = np.nonzero(head)
    if len(ys) == 0:
        top, left, side = 0, 0, max(rows, cols)
    else:
        cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
        side = int(max(ys.max() - ys.min(), xs.max() - xs.min()) * 1.08) + 4
        side = max(side, 32)
        top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
    geom = CTGeometry(n, rows, cols, groups, (top, left, side))
    small = _crop_resize(vol, geom.box, size * detail, fill=-1000.0)
    brain = window(small, *CT_WINDOWS[0])
    padded = np.concatenate([brain[:1], brain, brain[-1:]])
    x = np.stack([padded[:-2], brain, padded[2:], window(small, *CT_WINDOWS[1]), window(small, *CT_WINDOWS[2])],
                 axis=1)
    return space_to_depth(x.astype(np.float32), detail), geom


def space_to_depth(x: np.ndarray, r: int) -> np.ndarray:
    """(N, C, H, W) -> (N, C * r * r, H / r, W / r), in the channel order of torch's
    ``pixel_unshuffle``: channel c's pixel (i, j) of each r x r block goes to c * r * r + i * r + j."""
    if r == 1:
        return x
    n, c, h, w = x.shape
    return np.ascontiguousarray(
        x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r))


def _crop_resize(vol: np.ndarray, box: tuple[int, int, int], size: int, fill: float) -> np.ndarray:
    """The square ``box`` (top, left, side) of (slices, rows, cols), padded with ``fill``, resized."""
    top, left, side = box
    rows, cols = vol.shape[1:]
    crop = np.full((vol.shape[0], side, side), fill, np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, rows), min(left + side, cols)
    crop[:, y0 - top:y1 - top, x0 - left:x1 - left] = vol[:, y0:y1, x0:x1]
    return resize_stack(crop, (size, size))


def ct_mask_to_model(mask: np.ndarray, geom: CTGeometry, size: int) -> np.ndarray:
    """A (series slices, rows, cols) mask -> (model slices, size, size): the fraction of each cell
    that the mask covers, in the same crop as ``ct_inputs`` (for dense training targets)."""
    return _crop_resize(_group_slices(mask.astype(np.float32), geom.groups), geom.box, size, fill=0.0)


def _group_slices(vol: np.ndarray, groups: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The mean of each group of thin slices: one model slice per group."""
    return np.stack([vol[a:b].mean(axis=0) for a, b in groups])


def ct_heatmap_to_series(maps: np.ndarray, geom: CTGeometry, out_size: int = 128) -> np.ndarray:
    """Model-slice maps (m, h, w) in the crop -> (series slices, R, C) on the series grid at a
    reduced resolution (R, C <= out_size, same aspect). float32 in 0..1."""
    scale = min(1.0, out_size / max(geom.rows, geom.cols))
    r, c = max(1, round(geom.rows * scale)), max(1, round(geom.cols * scale))
    top, left, side = geom.box
    crop = resize_stack(maps, (max(1, round(side * scale)), max(1, round(side * scale))))
    out = np.zeros((geom.n_slices, r, c), np.float32)
    t, lft = round(top * scale), round(left * scale)
    ys, xs = max(t, 0), max(lft, 0)
    ye, xe = min(t + crop.shape[1], r), min(lft + crop.shape[2], c)
    for m, (a, b) in enumerate(geom.groups):
        out[a:b, ys:ye, xs:xe] = crop[m, ys - t:ye - t, xs - lft:xe - lft]
    return np.clip(out, 0, 1)


def cxr_input(pixels: np.ndarray, photometric: str = "MONOCHROME2", size: int = CXR_SIZE) -> np.ndarray:
    """Stored radiograph pixels -> (1, size, size) float32, bright = dense, about 0..1."""
    img = pixels.astype(np.float32)
    if img.ndim == 3:                       # colour or multi-frame: the first plane
        img = img[..., 0] if img.shape[-1] in (3, 4) else img[0]
    if photometric.upper() == "MONOCHROME1":
        img = img.max() - img
    step = max(1, min(img.shape) // 512)    # percentiles on a subsample: fast, same answer
    lo, hi = np.percentile(img[::step, ::step], (1, 99))
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return resize_stack(img[None], (size, size))
