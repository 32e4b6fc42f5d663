"""Metrics without scikit-learn: AUROC (Mann-Whitney), bootstrap CI, operating-point figures."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present. Ties count one half."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), float)
    sorted_s = s[order]
    i = 0
    while i < len(s):                       # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc_ci(labels, scores, n: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, float)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        v = auroc(y[idx], s[idx])
        if not np.isnan(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan")
    return float(np.quantile(vals, alpha / 2)), float(np.quantile(vals, 1 - alpha / 2))


def operating_point(labels, scores, threshold: float) -> dict:
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, float)
    pred = s >= threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 4) if b else None

    return {"threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn)}


def threshold_for_sensitivity(labels, scores, target: float) -> float | None:
    """The highest threshold whose sensitivity is at least ``target`` (None without positives)."""
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, float)
    pos = np.sort(s[y])[::-1]
    if len(pos) == 0:
        return None
    k = int(np.ceil(target * len(pos))) - 1
    return float(pos[min(max(k, 0), len(pos) - 1)])


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = np.asarray(labels).astype(bool), np.asarray(scores, float)
    thresholds = np.r_[np.inf, np.unique(s)[::-1]]
    tpr = np.array([((s >= t) & y).sum() / max(y.sum(), 1) for t in thresholds])
    fpr = np.array([((s >= t) & ~y).sum() / max((~y).sum(), 1) for t in thresholds])
    return fpr, tpr
