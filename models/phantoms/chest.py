"""The chest radiograph phantom: synthetic frontal radiographs, and findings in a real one.

``cxr_image`` draws an attenuation image (soft tissue, lungs with vessel markings, mediastinum,
heart, ribs, clavicles, diaphragm; AP or PA; varying exposure) with pneumothorax, effusion and
consolidation, independently, so findings can coexist. ``real=True`` draws the findings into the
real pydicom-data chest CR ``RG1`` with augmentation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.phantoms.samples import sample_dir

log = logging.getLogger(__name__)

CXR_FINDINGS = ("pneumothorax", "effusion", "consolidation")


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: bilinear upsampling of a coarse grid."""
    coarse = rng.uniform(-1, 1, size=(cells + 1, cells + 1))
    h, w = shape
    yi = np.linspace(0, cells, h)
    xi = np.linspace(0, cells, w)
    y0 = np.minimum(yi.astype(int), cells - 1)
    x0 = np.minimum(xi.astype(int), cells - 1)
    fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
    c00 = coarse[y0][:, x0]
    c01 = coarse[y0][:, x0 + 1]
    c10 = coarse[y0 + 1][:, x0]
    c11 = coarse[y0 + 1][:, x0 + 1]
    return (c00 * (1 - fy) * (1 - fx) + c01 * (1 - fy) * fx + c10 * fy * (1 - fx) + c11 * fy * fx)



@dataclass
class CXRCase:
    image: np.ndarray              # (rows, cols) float32 attenuation, about 0..1, bright = dense
    labels: dict[str, int]
    masks: dict[str, np.ndarray]   # per finding: where it is (for heatmap checks)
    view: str                      # AP or PA
    subtype: str                   # which findings, e.g. "pneumothorax+effusion"
    size_mm: float                 # the largest finding's extent
    pixel_mm: float
    source: str = "synthetic"


def _lung_masks(X, Y, rng, ap: bool) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Two lung fields in normalised coordinates (x, y in -1..1, y down)."""
    lungs = np.zeros(X.shape, bool)
    params = []
    for side in (-1, 1):   # -1: patient right (image left)
        cx = side * rng.uniform(0.36, 0.42)
        w = rng.uniform(0.26, 0.31)
        top, bottom = rng.uniform(-0.78, -0.68), rng.uniform(0.45, 0.62) - (0.05 if side == 1 else 0)
        yn = (Y - top) / (bottom - top)                     # 0 apex .. 1 base
        half = w * np.sqrt(np.clip(yn, 0, 1)) ** 0.6 * (1 - 0.15 * yn)
        inner_cut = (side * (X - cx)) > -half * (0.6 if yn.mean() else 0.6)
        m = (yn >= 0) & (yn <= 1) & (np.abs(X - cx) <= half) & inner_cut
        dome = bottom - 0.08 * (1 - ((X - cx) / (w + 1e-6)) ** 2).clip(0, 1)
        m &= Y <= dome
        lungs |= m
        params.append({"side": side, "cx": cx, "w": w, "top": top, "bottom": bottom, "mask": m})
    return lungs, lungs, params


def cxr_image(rng: np.random.Generator, *, size: int = 512, findings: dict[str, int] | None = None,
              real: bool = False) -> CXRCase:
    """One synthetic frontal chest radiograph. ``findings`` None draws each (about 35 % each)."""
    if findings is None:
        findings = {f: int(rng.random() < 0.35) for f in CXR_FINDINGS}
    ap = bool(rng.random() < 0.4)
    pixel_mm = 430.0 / size
    coords = np.linspace(-1, 1, size)
    X, Y = np.meshgrid(coords, coords)
    shift_x, shift_y = rng.uniform(-0.04, 0.04, size=2)
    X, Y = X + shift_x, Y + shift_y
    if real:
        img, lungs, params = _real_cxr(rng, X, Y, size)
        markings = np.zeros_like(img)
        air = float(np.percentile(img[lungs], 3))
        body = np.ones(img.shape, bool)
    else:
        air = 0.08
        img = np.zeros((size, size), np.float32)
        body = (np.abs(X) < 0.92 - 0.1 * np.clip(-Y - 0.6, 0, None)) & (Y > -0.95)
        img[body] = 0.45
        shoulders = (((np.abs(X) - 0.75) / 0.25) ** 2 + ((Y + 0.82) / 0.16) ** 2) <= 1
        img[shoulders] = 0.55
        lungs, _, params = _lung_masks(X, Y, rng, ap)
        img[lungs] = 0.14
        # Lung markings: vessels branching from the hila, fainter towards the periphery.
        markings = np.zeros_like(img)
        for p in params:
            hx, hy = p["cx"] - p["side"] * p["w"] * 0.45, -0.05
            for _ in range(int(rng.integers(14, 22))):
                ang = rng.uniform(-np.pi, np.pi)
                length = rng.uniform(0.2, 0.6)
                ts = np.linspace(0, 1, 40)
                bend = rng.uniform(-0.3, 0.3)
                xs = hx + np.cos(ang + bend * ts) * length * ts
                ys = hy + np.sin(ang + bend * ts) * length * ts * 1.3
                for t, x, y in zip(ts[::2], xs[::2], ys[::2]):
                    r = 0.012 * (1 - 0.7 * t)
                    ci, ri = (x - shift_x + 1) / 2 * (size - 1), (y - shift_y + 1) / 2 * (size - 1)
                    half = int(3 * r * size / 2) + 2
                    r0, r1 = max(int(ri) - half, 0), min(int(ri) + half + 1, size)
                    c0, c1 = max(int(ci) - half, 0), min(int(ci) + half + 1, size)
                    if r0 >= r1 or c0 >= c1:
                        continue
                    d2 = (X[r0:r1, c0:c1] - x) ** 2 + (Y[r0:r1, c0:c1] - y) ** 2
                    blob = 0.09 * (1 - 0.6 * t) * np.exp(-d2 / (r * r))
                    markings[r0:r1, c0:c1] = np.maximum(markings[r0:r1, c0:c1], blob)
        markings *= lungs
        # Mediastinum and heart (larger on AP), diaphragm and abdomen below.
        medi = (np.abs(X) < 0.11 + 0.04 * (Y > -0.2)) & (Y > -0.95)
        img[medi] = 0.62
        heart_w = rng.uniform(0.2, 0.28) * (1.15 if ap else 1.0)
        heart = ((X - 0.07) / heart_w) ** 2 + ((Y - 0.28) / 0.24) ** 2 <= 1
        img[heart] = np.maximum(img[heart], 0.6)
        below = Y > (0.5 + 0.08 * np.abs(X))
        img[below & body & ~lungs] = 0.66
        # Ribs (posterior arcs), clavicles; on AP the clavicles sit higher and scapulae overlap.
        rib_phase = rng.uniform(0, 1)
        rib = np.sin(2 * np.pi * (Y * 5.2 + 0.9 * X ** 2 * np.sign(X + 1e-6) * 0 + 0.35 * np.abs(X) + rib_phase))
        img += (0.07 * (rib > 0.75) * body).astype(np.float32)
        cy = -0.72 if ap else -0.62
        for side in (-1, 1):
            clav = np.abs(Y - (cy + 0.18 * (side * X - 0.15) ** 2)) < 0.02
            img[clav & (side * X > 0.05) & (side * X < 0.6)] += 0.12
            if ap:
                scap = ((X - side * 0.68) / 0.12) ** 2 + ((Y + 0.35) / 0.3) ** 2 <= 1
                img[scap] += 0.05
    masks: dict[str, np.ndarray] = {}
    sizes: list[float] = []
    pnx = np.zeros(img.shape, bool)
    if findings.get("pneumothorax"):
        p = params[int(rng.integers(2))]
        frac = rng.choice([rng.uniform(0.06, 0.15), rng.uniform(0.15, 0.5)])  # small apical .. large
        lateral = p["side"] * (X - p["cx"])
        yn = (Y - p["top"]) / (p["bottom"] - p["top"])
        edge = p["w"] * (1 - frac * 2.2) - 0.15 * np.clip(yn - (0.3 + frac), 0, None)
        pnx = p["mask"] & ((lateral > edge) | (yn < frac * 0.9)) & (yn < 0.35 + frac * 1.6)
        masks["pneumothorax"] = pnx
        line = p["mask"] & ~pnx & _dilate(pnx, max(1, size // 256))
        markings[pnx] = 0
        img[pnx] = air
        img[line] += 0.1
        sizes.append(float(frac * p["w"] * 2 * 215))
    if findings.get("effusion"):
        p = params[int(rng.integers(2))]
        level = rng.uniform(0.05, 0.35)            # height of fluid as a fraction of the lung
        yn = (Y - p["top"]) / (p["bottom"] - p["top"])
        lateral = (p["side"] * (X - p["cx"]) / p["w"] + 1) / 2    # 0 medial .. 1 lateral
        meniscus = 1 - level - 0.12 * lateral ** 2                # higher laterally
        eff = p["mask"] & (yn > meniscus)
        soft = np.clip((yn - meniscus) / 0.04, 0, 1)
        img += (0.4 * soft * eff).astype(np.float32)
        markings[eff] *= 0.3
        masks["effusion"] = eff
        sizes.append(float(level * (p["bottom"] - p["top"]) * 215))
    if findings.get("consolidation"):
        p = params[int(rng.integers(2))]
        field = _smooth_noise(rng, img.shape, 10)
        zone_y = rng.uniform(-0.4, 0.35)
        zone = ((X - p["cx"]) / (p["w"] * rng.uniform(0.5, 1.0))) ** 2 + ((Y - zone_y) / rng.uniform(0.12, 0.3)) ** 2
        patch = np.clip(1 - zone, 0, 1) * (0.6 + 0.4 * field)
        cons = p["mask"] & (patch > 0.25) & ~pnx
        if cons.sum() < 20:
            cons = p["mask"] & (zone < 1) & ~pnx
        dens = rng.uniform(0.18, 0.32)
        add = dens * np.clip((patch - 0.25) / 0.2, 0, 1) * cons
        # Air bronchograms: dark branching lines inside the opacity.
        bron = np.zeros(img.shape, bool)
        for _ in range(3):
            ang = rng.uniform(-np.pi, np.pi)
            ts = np.linspace(0, 0.25, 30)
            x0, y0 = p["cx"], zone_y
            for t in ts:
                bron |= ((X - x0 - np.cos(ang) * t) ** 2 + (Y - y0 - np.sin(ang) * t) ** 2) < 0.006 ** 2 * 4
        add[bron & cons] *= 0.3
        img += add.astype(np.float32)
        masks["consolidation"] = cons
        ys, xs = np.nonzero(cons)
        sizes.append(float(max(np.ptp(ys), np.ptp(xs)) * pixel_mm) if len(ys) else 0.0)
    img += markings
    # Exposure, detector noise and blur of edges (a cheap 3-tap blur).
    img = _blur(img)
    gamma = rng.uniform(0.8, 1.25)
    img = np.clip(img, 0, None) ** gamma * rng.uniform(0.85, 1.15) + rng.uniform(-0.05, 0.05)
    img += rng.normal(0, rng.uniform(0.01, 0.025) * math.sqrt(512 / size), img.shape).astype(np.float32)
    present = [f for f in CXR_FINDINGS if findings.get(f)]
    return CXRCase(image=img.astype(np.float32), labels={f: int(bool(findings.get(f))) for f in CXR_FINDINGS},
                   masks=masks, view="PA" if real else ("AP" if ap else "PA"), subtype="+".join(present),
                   size_mm=round(max(sizes), 1) if sizes else 0.0, pixel_mm=pixel_mm,
                   source="real" if real else "synthetic")


@lru_cache(maxsize=1)
def _real_cxr_pixels() -> np.ndarray:
    """The real chest CR of pydicom-data (RG1), as attenuation (MONOCHROME1 inverted), 0..1."""
    from pydicom import dcmread

    ds = dcmread(sample_dir() / "RG1_UNCI.dcm")
    img = ds.pixel_array.astype(np.float32)
    img = img.max() - img                       # MONOCHROME1: high stored value = less dense
    lo, hi = np.percentile(img[::4, ::4], (1, 99))
    return np.clip((img - lo) / (hi - lo), 0, 1)


# Lung fields of RG1 in normalised coordinates (x, y in -1..1), read off the image.
_RG1_LUNGS = ({"side": -1, "cx": -0.45, "w": 0.3, "top": -0.72, "bottom": 0.5},
              {"side": 1, "cx": 0.46, "w": 0.3, "top": -0.72, "bottom": 0.45})


def _real_cxr(rng, X, Y, size: int):
    from models.preprocess import resize_stack

    img = resize_stack(_real_cxr_pixels()[None], (size, size))[0]
    flip = rng.random() < 0.5
    if flip:
        img = img[:, ::-1].copy()
    lungs = np.zeros(img.shape, bool)
    params = []
    for p in _RG1_LUNGS:
        q = dict(p)
        if flip:
            q["side"], q["cx"] = -q["side"], -q["cx"]
        q["cx"] += rng.uniform(-0.02, 0.02)
        yn = (Y - q["top"]) / (q["bottom"] - q["top"])
        m = (yn >= 0) & (yn <= 1) & (np.abs(X - q["cx"]) <= q["w"] * np.sqrt(np.clip(yn, 0, 1)) ** 0.6)
        q["mask"] = m
        lungs |= m
        params.append(q)
    return img.astype(np.float32), lungs, params


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(n):
        out = out | np.roll(out, 1, 0) | np.roll(out, -1, 0) | np.roll(out, 1, 1) | np.roll(out, -1, 1)
    return out


def _blur(img: np.ndarray) -> np.ndarray:
    out = img.copy()
    for axis in (0, 1):
        out = 0.25 * np.roll(out, 1, axis) + 0.5 * out + 0.25 * np.roll(out, -1, axis)
    return out

