"""The one head CT phantom: synthetic heads with or without a hemorrhage, and lesions in a real slice.

``ct_head`` draws a 3D head (scalp, skull with diploe, grey/white matter, sulci, ventricles, cisterns,
falx, dural sinuses, pineal and choroid plexus calcifications, petrous bone with beam hardening
streaks) in Hounsfield units with quantum noise. Positives carry one hemorrhage of five subtypes
(intraparenchymal, subdural, epidural, subarachnoid, intraventricular) from 3 mm and 50 HU up,
with partial-volume averaging over the slice thickness and mass effect when large. Negatives
carry the same mimics (calcifications, streaks, dense sinuses) as positives. ``head_phantom`` is
its negative volume alone, for the demo and the tests that need any well-formed head CT.

``ct_head_real`` inserts lesions into the real pydicom-data head CT slice ``693`` with augmentation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from models.phantoms.samples import sample_dir

log = logging.getLogger(__name__)

ICH_SUBTYPES = ("intraparenchymal", "subdural", "epidural", "subarachnoid", "intraventricular")
CT_FOV_MM = 230.0
# Visible blood: a voxel at least 30 % filled with blood whose noiseless value is hyperdense (>= 45
# HU: above grey matter at 39) and at least 10 HU above what it was without the blood. A bleed
# that partial volume spreads into brain-like values nowhere (a thin band on a curved skull, a
# 3 mm sphere in a 5 mm slice) is blood no reader could report, so it is not drawn as a positive.
VISIBLE_HU, VISIBLE_CONTRAST_HU, VISIBLE_MM2 = 45.0, 10.0, 3.0
SMALL_SHARE = 0.3   # share of the bleeds drawn small (3-5 mm) in every phantom set, unless training asks for more


def _lesion_size(rng: np.random.Generator, small_share: float = SMALL_SHARE) -> float:
    """Largest diameter in mm: ``small_share`` small and subtle (3-5 mm), the rest half medium
    (5-15 mm), half large (15-45 mm). Training may ask for more small ones than the evaluation
    sets hold; the random draws are the same, so the default reproduces every case."""
    u = rng.random()
    if u < small_share:
        return float(rng.uniform(3, 5))
    if u < (1 + small_share) / 2:   # 0.65 by default, exactly as before
        return float(rng.uniform(5, 15))
    return float(rng.uniform(15, 45))


def _blood_hu(rng: np.random.Generator, size_mm: float) -> float:
    return float(rng.uniform(50, 90) if size_mm < 6 else rng.uniform(58, 88))


@dataclass
class CTCase:
    hu: np.ndarray                 # (slices, rows, cols) float32, Hounsfield units
    lesion: np.ndarray             # (slices, rows, cols) bool: blood in the voxel (>= 30 %)
    ich: int
    subtype: str
    size_mm: float
    pixel_mm: float
    thickness_mm: float
    source: str = "synthetic"
    mimics: tuple[str, ...] = ()
    solid: np.ndarray | None = None  # (slices,) visible blood pixels (VISIBLE_HU): None = all of lesion

    @property
    def slice_labels(self) -> np.ndarray:
        return self.lesion.reshape(self.lesion.shape[0], -1).any(axis=1)

    def training_labels(self, min_area_mm2: float = 3.0) -> np.ndarray:
        """Per slice: 1 where the blood is visible (at least ``min_area_mm2`` of visible blood
        pixels, see VISIBLE_HU), 0 where there is none, -1 for a sliver of partial volume: blood
        by the ground truth but next to invisible, left out of training rather than taught as either."""
        has = self.slice_labels
        solid = self.solid if self.solid is not None else self.lesion.reshape(len(has), -1).sum(axis=1)
        visible = solid * self.pixel_mm ** 2 >= min_area_mm2
        return np.where(visible, 1, np.where(has, -1, 0)).astype(np.float32)


@dataclass
class _Head:
    A: float                       # lateral semi-axis (mm)
    B: float                       # antero-posterior semi-axis
    C: float                       # vertical semi-axis
    zc: float                      # centre height
    skull: float                   # skull thickness
    atrophy: float                 # 0..1: wider sulci, larger ventricles
    cx: float
    cy: float
    angle: float
    sulci_phase: np.ndarray = field(default_factory=lambda: np.zeros(3))
    shift: float = 0.0             # midline shift (mm, + to the right of the image) from mass effect


def ct_head(rng: np.random.Generator, *, n_slices: int = 32, size: int = 256, positive: bool | None = None,
            subtype: str | None = None, thickness_mm: float = 5.0, small_share: float = SMALL_SHARE) -> CTCase:
    """One synthetic non-contrast head CT. ``positive`` None draws it (50 %)."""
    if positive is None:
        positive = bool(rng.random() < 0.5)
    px = CT_FOV_MM / size
    head = _Head(A=rng.uniform(66, 76), B=rng.uniform(84, 97), C=rng.uniform(80, 90), zc=rng.uniform(55, 65),
                 skull=rng.uniform(5, 8), atrophy=rng.uniform(0, 1), cx=rng.uniform(-8, 8), cy=rng.uniform(-8, 8),
                 angle=rng.uniform(-0.14, 0.14), sulci_phase=rng.uniform(0, 2 * np.pi, size=3))
    z0 = rng.uniform(-5, 10)                       # first slice near the skull base
    zs = z0 + thickness_mm * np.arange(n_slices)
    coords = (np.arange(size) - (size - 1) / 2) * px
    gx, gy = np.meshgrid(coords, coords)           # x: patient left-right (image columns), y: rows
    ca, sa = math.cos(head.angle), math.sin(head.angle)
    X = ca * (gx - head.cx) + sa * (gy - head.cy)
    Y = -sa * (gx - head.cx) + ca * (gy - head.cy)
    lesion_spec = _draw_lesion(rng, head, subtype, small_share) if positive else None
    if lesion_spec is not None and lesion_spec["size"] >= 15 and lesion_spec["kind"] in (
            "intraparenchymal", "subdural", "epidural"):
        head.shift = -np.sign(lesion_spec["side"]) * min(8.0, lesion_spec["size"] * 0.2)
    mimics = _draw_mimics(rng)
    noise_sd = rng.uniform(3.5, 7.0) * (0.45 / px)
    hu = np.empty((n_slices, size, size), np.float32)
    lesion = np.zeros((n_slices, size, size), bool)
    solid = np.zeros(n_slices, np.int64)
    for k, z in enumerate(zs):
        base = _head_slice(rng, head, X, Y, z, mimics, px)
        if lesion_spec is not None:
            frac = np.zeros((size, size), np.float32)
            for dz in (-0.33, 0.0, 0.33):          # partial volume over the slice thickness
                frac += _lesion_mask(lesion_spec, head, X, Y, z + dz * thickness_mm, base["brain"],
                                     base["csf"], base["vent"])
            frac /= 3
            frac *= base["inside"]
            before = base["hu"]
            base["hu"] = before * (1 - frac) + lesion_spec["hu"] * frac
            lesion[k] = frac >= 0.3
            solid[k] = int((lesion[k] & (base["hu"] >= VISIBLE_HU)
                            & (base["hu"] - before >= VISIBLE_CONTRAST_HU)).sum())
        hu[k] = base["hu"] + rng.normal(0, noise_sd, size=(size, size)).astype(np.float32)
    if lesion_spec is not None and solid.max() * px * px < VISIBLE_MM2:   # nowhere visible: redraw
        return ct_head(rng, n_slices=n_slices, size=size, positive=True, subtype=subtype, thickness_mm=thickness_mm,
                       small_share=small_share)
    return CTCase(hu=hu, lesion=lesion, ich=int(positive), subtype=lesion_spec["kind"] if lesion_spec else "",
                  size_mm=round(lesion_spec["size"], 1) if lesion_spec else 0.0, pixel_mm=px,
                  thickness_mm=thickness_mm, mimics=tuple(sorted(k for k, v in mimics.items() if v is True)) + (
                      ("dense_sinus",) if mimics["sinus_hu"] > 60 else ()), solid=solid)


def head_phantom(n_slices: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """A normal head CT volume in HU (slices, rows, cols): ``ct_head``'s negative for ``seed``."""
    return ct_head(np.random.default_rng(seed), n_slices=n_slices, size=size, positive=False).hu


def _draw_mimics(rng: np.random.Generator) -> dict:
    return {"pineal": bool(rng.random() < 0.7), "choroid": bool(rng.random() < 0.45),
            "falx_calc": bool(rng.random() < 0.25), "streaks": rng.uniform(0.3, 1.0),
            "pineal_hu": rng.uniform(120, 400), "sinus_hu": rng.uniform(62, 80) if rng.random() < 0.5 else 45.0}


def _scale(head: _Head, z: float) -> float:
    t = (z - head.zc) / head.C
    if t >= 1:
        return 0.0
    return math.sqrt(max(0.0, 1 - 0.45 * t * t)) if t < 0 else math.sqrt(1 - t * t)


def _head_slice(rng, head: _Head, X, Y, z: float, mimics: dict, px: float) -> dict:
    s = _scale(head, z)
    hu = np.full(X.shape, -1000.0, np.float32)
    empty = np.zeros(X.shape, bool)
    if s < 0.15:
        return {"hu": hu, "brain": empty, "csf": empty, "vent": empty, "inside": empty.astype(np.float32)}
    t = (z - head.zc) / head.C
    a, b = head.A * s, head.B * s
    r_out = np.sqrt((X / (a + 5)) ** 2 + (Y / (b + 5)) ** 2)       # scalp
    r_sk = np.sqrt((X / a) ** 2 + (Y / b) ** 2)                     # outer table
    ai, bi = a - head.skull, b - head.skull
    r_in = np.sqrt((X / ai) ** 2 + (Y / bi) ** 2)                   # inner table
    depth = (1 - r_in) * min(ai, bi)                                # ~ mm inside the inner table
    theta = np.arctan2(Y, X)
    hu[r_out <= 1] = 35.0
    hu[(r_out <= 1) & (r_out > 0.985)] = -80.0                      # subcutaneous fat line
    skull = (r_sk <= 1) & (r_in > 1)
    skull_depth = (r_sk - 1) / (r_sk - r_in + 1e-6)
    hu[skull] = 1500.0 - 900.0 * np.exp(-((skull_depth[skull] - 0.5) / 0.2) ** 2)   # diploe
    brain = r_in <= 1
    inside = brain.astype(np.float32)
    # Cortex, white matter, sulci (wider with atrophy), a thin CSF film under the inner table.
    gyri = np.sin(9 * theta + head.sulci_phase[0] + 0.3 * np.sin(3 * theta + z / 20)) \
        * np.sin(5 * theta + head.sulci_phase[1] + z / 15)
    sulcus_depth = 9 + 6 * np.sin(4 * theta + head.sulci_phase[2])
    sulci = brain & (depth < sulcus_depth) & (gyri > 0.86 - 0.25 * head.atrophy)
    hu[brain] = 28.0
    hu[brain & (depth < 4.5 + 2 * np.cos(7 * theta))] = 39.0
    csf = sulci | (brain & (depth < 0.8 + 1.8 * head.atrophy))
    # Deep grey matter (basal ganglia, thalami) around the ventricle level.
    if -0.45 < t < 0.1:
        for side in (-1, 1):
            dg = ((X - side * 16 - head.shift) / 9) ** 2 + ((Y - 2) / 16) ** 2 <= 1
            hu[brain & dg] = 37.0
    vent = np.zeros(X.shape, bool)
    vscale = 0.7 + 0.8 * head.atrophy
    if -0.3 < t < 0.45:                                             # lateral ventricles
        h = math.sqrt(max(0.0, 1 - ((t - 0.08) / 0.38) ** 2))
        for side in (-1, 1):
            comp = 0.6 if head.shift and np.sign(head.shift) == -side else 1.0
            v = ((X - side * 9 * vscale - head.shift) / (5.5 * vscale * h * comp + 0.5)) ** 2 \
                + ((Y + 2) / (30 * h + 1)) ** 2 <= 1
            vent |= v
    if -0.42 < t < -0.12:                                           # third ventricle
        vent |= (np.abs(X - head.shift) < 1.2 + 1.5 * head.atrophy) & (np.abs(Y - 2) < 10)
    if -0.75 < t < -0.45:                                           # fourth ventricle
        vent |= ((X - head.shift) / 5) ** 2 + ((Y - 38) / 4) ** 2 <= 1
    if -0.55 < t < -0.35:                                           # basal cisterns around the midbrain
        rr = np.sqrt((X - head.shift) ** 2 + (Y - 8) ** 2)
        csf |= brain & (rr > 11) & (rr < 14 + 3 * head.atrophy)
        csf |= brain & (np.abs(X - head.shift) < 6) & (Y > -18) & (Y < -5)    # suprasellar
    vent &= brain
    csf |= vent
    hu[csf] = 6.0
    # Falx: a slightly dense midline line; sometimes calcified.
    falx = brain & (np.abs(X - head.shift) < 0.8) & (np.abs(Y) > 25) & (t > -0.2)
    hu[falx] = 48.0
    if mimics["falx_calc"] and t > 0.1:
        hu[falx & (Y < -40) & (Y > -55)] = 220.0
    # Dural venous sinuses: superior sagittal (posterior midline) and transverse (low, posterior).
    sss = brain & (((X - head.shift) / 4) ** 2 + ((Y - bi + 3) / 4) ** 2 <= 1) & (t > -0.35)
    hu[sss] = mimics["sinus_hu"]
    if -0.8 < t < -0.45:
        trans = brain & (depth < 4) & (Y > bi * 0.55)
        hu[trans] = mimics["sinus_hu"]
    # Calcifications: pineal (posterior to the third ventricle) and choroid plexus (atria).
    if mimics["pineal"] and -0.35 < t < -0.12:
        hu[((X - head.shift) ** 2 + (Y - 17) ** 2) <= 9] = mimics["pineal_hu"]
    if mimics["choroid"] and -0.05 < t < 0.2:
        for side in (-1, 1):
            hu[((X - side * 14 * vscale - head.shift) ** 2 + (Y - 20) ** 2) <= 6] = mimics["pineal_hu"] * 0.7
    # Skull base: petrous bone and the beam-hardening streaks between them.
    if t < -0.5:
        for side in (-1, 1):
            pet = ((X - side * 32) / 22) ** 2 + ((Y - 15) / 7) ** 2 <= 1
            hu[pet & brain] = 1300.0
        strength = mimics["streaks"] * (-0.5 - t) * 120
        streak = np.cos(14 * theta + z) * np.exp(-np.abs(Y - 15) / 20)
        hu[brain] += (strength * streak)[brain].astype(np.float32)
    return {"hu": hu, "brain": brain & ~csf, "csf": csf & ~vent, "vent": vent, "inside": inside}


def _draw_lesion(rng: np.random.Generator, head: _Head, subtype: str | None, small_share: float = SMALL_SHARE) -> dict:
    kind = subtype or str(rng.choice(ICH_SUBTYPES))
    size = _lesion_size(rng, small_share)
    side = float(rng.choice([-1, 1]))
    spec = {"kind": kind, "size": size, "side": side, "hu": _blood_hu(rng, size)}
    if kind == "intraparenchymal":
        zc = head.zc + rng.uniform(-0.4, 0.6) * head.C
        s = _scale(head, zc)
        spec.update(cx=side * rng.uniform(8, 0.55 * head.A * s), cy=rng.uniform(-0.55, 0.55) * head.B * s,
                    cz=zc, r=size / 2, lobes=rng.uniform(0, 2 * np.pi, 2))
    elif kind in ("subdural", "epidural"):
        spec.update(theta0=rng.uniform(-np.pi, np.pi),
                    width=rng.uniform(0.5, 1.1) if kind == "subdural" else rng.uniform(0.3, 0.55),
                    cz=head.zc + rng.uniform(-0.3, 0.6) * head.C,
                    zext=rng.uniform(20, 60) if kind == "subdural" else rng.uniform(15, 35),
                    thick=max(1.5, size * (0.3 if kind == "subdural" else 0.45)))
    elif kind == "subarachnoid":
        spec.update(theta0=rng.uniform(-np.pi, np.pi), width=size / 60 + 0.15,
                    cz=head.zc + rng.uniform(-0.55, 0.6) * head.C, zext=max(6.0, size * 0.8))
    else:  # intraventricular
        spec.update(level=rng.uniform(0.2, 0.9), cz=head.zc + rng.uniform(-0.05, 0.25) * head.C,
                    zext=max(5.0, size * 0.6))
    return spec


def _lesion_mask(spec: dict, head: _Head, X, Y, z: float, brain, csf, vent) -> np.ndarray:
    kind = spec["kind"]
    if kind == "intraparenchymal":
        dz = z - spec["cz"]
        r = spec["r"]
        if abs(dz) >= r:
            return np.zeros(X.shape, np.float32)
        rr = math.sqrt(r * r - dz * dz)
        ang = np.arctan2(Y - spec["cy"], X - spec["cx"])
        wobble = 1 + 0.18 * np.sin(3 * ang + spec["lobes"][0]) + 0.1 * np.sin(5 * ang + spec["lobes"][1])
        m = np.sqrt((X - spec["cx"]) ** 2 + (Y - spec["cy"]) ** 2) <= rr * wobble
        return (m & (brain | csf)).astype(np.float32)
    s = _scale(head, z)
    if s < 0.15:
        return np.zeros(X.shape, np.float32)
    if kind in ("subdural", "epidural"):
        dz = (z - spec["cz"]) / (spec["zext"] / 2)
        if abs(dz) >= 1:
            return np.zeros(X.shape, np.float32)
        ai, bi = head.A * s - head.skull, head.B * s - head.skull
        r_in = np.sqrt((X / ai) ** 2 + (Y / bi) ** 2)
        depth = (1 - r_in) * min(ai, bi)
        theta = np.arctan2(Y, X)
        d = np.angle(np.exp(1j * (theta - spec["theta0"]))) / spec["width"]
        profile = np.clip(1 - d * d, 0, None)
        if kind == "subdural":   # crescent: thin tapering ends over a wide arc
            thick = spec["thick"] * np.sqrt(profile) * math.sqrt(1 - dz * dz)
        else:                    # lens: biconvex, short arc
            thick = spec["thick"] * profile * (1 - dz * dz)
        return ((r_in <= 1) & (depth < thick)).astype(np.float32)
    if kind == "subarachnoid":
        dz = (z - spec["cz"]) / (spec["zext"] / 2)
        if abs(dz) >= 1:
            return np.zeros(X.shape, np.float32)
        theta = np.arctan2(Y, X)
        d = np.abs(np.angle(np.exp(1j * (theta - spec["theta0"]))))
        return (csf & (d < spec["width"])).astype(np.float32)
    dz = (z - spec["cz"]) / (spec["zext"] / 2)       # intraventricular: dependent blood (posterior)
    if abs(dz) >= 1 or not vent.any():
        return np.zeros(X.shape, np.float32)
    ys = Y[vent]
    cut = ys.max() - spec["level"] * (ys.max() - ys.min())
    return (vent & (Y >= cut) & (spec["side"] * X > -6)).astype(np.float32)


@lru_cache(maxsize=1)
def _real_ct_slice() -> tuple[np.ndarray, float]:
    """The real head CT slice of pydicom-data (693), in HU, and its pixel spacing."""
    from pydicom import dcmread

    ds = dcmread(sample_dir() / "693_UNCI.dcm")
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    return np.clip(hu, -1024, 3071), float(ds.PixelSpacing[0])


def ct_head_real(rng: np.random.Generator, *, n_slices: int = 8, size: int = 256,
                 positive: bool | None = None, small_share: float = SMALL_SHARE) -> CTCase:
    """Lesions inserted into the real slice 693, stacked into a short volume with augmentation
    (flip, scale, HU offset, fresh noise per slice).

    Every slice is resampled (a scale drawn per volume, never exactly 1) and the lesion's centre
    slice is drawn: with the lesion always on an unscaled middle slice, a network learnt to
    call that slice positive from its resampling alone, lesion or not."""
    from models.preprocess import resize_stack

    if positive is None:
        positive = bool(rng.random() < 0.5)
    real, spacing = _real_ct_slice()
    base = resize_stack(real[None], (size, size))[0]
    if rng.random() < 0.5:
        base = base[:, ::-1]
    px = spacing * real.shape[0] / size
    brain = (base > 10) & (base < 60)
    ys, xs = np.nonzero(brain)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - cy, xx - cx)
    ray = (np.degrees(np.arctan2(yy - cy, xx - cx)).astype(int) + 180) % 360
    table = np.full(360, float(size))            # per degree: the distance to the inner table
    skull = base > 150                             # past the partial volume of the bone's edge
    np.minimum.at(table, ray[skull], radius[skull])
    hu = np.empty((n_slices, size, size), np.float32)
    lesion = np.zeros((n_slices, size, size), bool)
    mid = n_slices // 2
    scale = rng.uniform(0.9, 1.1)
    if abs(scale - 1) < 0.01:
        scale = 1.01
    size_mm = _lesion_size(rng, small_share) if positive else 0.0
    kind = str(rng.choice(["intraparenchymal", "subdural"])) if positive else ""
    blood = _blood_hu(rng, size_mm)
    if positive:   # a point well inside the brain, on a slice drawn
        pick = rng.integers(len(ys))
        ly, lx = ys[pick], xs[pick]
        centre = int(rng.integers(1, n_slices - 1))
    for k in range(n_slices):
        f = (1 - 0.015 * abs(k - mid)) * scale
        sl = _zoom_about(base, f, cy, cx) + rng.uniform(-3, 3)
        if positive:
            dz = (k - centre) * 5.0
            r = size_mm / 2
            if abs(dz) < r or (kind == "subdural" and abs(dz) < size_mm):
                rr = math.sqrt(max(r * r - dz * dz, 0.0)) if kind == "intraparenchymal" else r * 0.5
                ky, kx = cy + (ly - cy) * f, cx + (lx - cx) * f     # the lesion point on this scaled slice
                if kind == "intraparenchymal":
                    m = ((yy - ky) ** 2 + (xx - kx) ** 2) * px * px <= rr * rr
                else:   # extra-axial band: along the inner table of this scaled slice, on one side
                    inner = table[ray] * f
                    rim = (radius < inner) & (radius >= inner - max(1.0, size_mm * 0.3 / px))
                    m = rim & ((xx - cx) * (1 if kx > cx else -1) > 0) & (np.abs(yy - ky) * px < size_mm * 1.5)
                # blood replaces brain (and CSF, for an extra-axial band) that is less dense than it, as
                # in the synthetic heads' visibility rule; never the bone or the dense cortex by the skull
                m &= (sl > (0 if kind == "intraparenchymal" else -200)) & (sl < blood - VISIBLE_CONTRAST_HU)
                sl = np.where(m, blood, sl)
                lesion[k] = m
        hu[k] = sl + rng.normal(0, rng.uniform(2, 5), size=(size, size))
    if positive and lesion.reshape(n_slices, -1).sum(axis=1).max() * px * px < VISIBLE_MM2:   # nowhere visible
        return ct_head_real(rng, n_slices=n_slices, size=size, positive=True, small_share=small_share)
    return CTCase(hu=hu, lesion=lesion, ich=int(positive), subtype=kind, size_mm=round(size_mm, 1), pixel_mm=px,
                  thickness_mm=5.0, source="real")


def _zoom_about(img: np.ndarray, f: float, cy: float, cx: float) -> np.ndarray:
    h, w = img.shape
    yi = np.clip(np.round(cy + (np.arange(h) - cy) / f).astype(int), 0, h - 1)
    xi = np.clip(np.round(cx + (np.arange(w) - cx) / f).astype(int), 0, w - 1)
    return img[yi][:, xi]

