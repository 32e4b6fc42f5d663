"""``readingroom evaluate --model NAME --data DIR``: score a model on a folder of DICOM studies.

The folder holds one sub-folder per study and ``labels.csv`` (the phantom format, see
docs/models.md): ``study_uid``, ``path`` (the study's folder, relative to DIR) and a 0/1 column per
finding; ``subtype`` and ``lesion_size_mm`` are optional and give the breakdown. Outputs (in
``--out``, default ``DIR/eval-<model>``): ``scores.csv`` (study_uid, <finding>, <finding>_label:
what ``readingroom simulate`` reads), ``summary.json``, ``report.md``, ``roc.png``,
``calibration.png`` and ``confusion.png``. Results are UNVERIFIED; phantoms are not patients.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from models.metrics import auroc, bootstrap_auroc_ci, operating_point, roc_curve, threshold_for_sensitivity
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


class EvaluationError(ReadingRoomError):
    """The data folder or the labels cannot be evaluated; the message says what to fix."""


def read_labels(data: Path, labels_path: Path, findings: Sequence[str]) -> list[dict[str, Any]]:
    if not data.is_dir():
        raise EvaluationError(f"data folder {data} does not exist or is not a folder")
    if not labels_path.is_file():
        raise EvaluationError(f"labels file {labels_path} not found: give --labels, or put labels.csv in {data}")
    try:
        with labels_path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvaluationError(f"cannot read {labels_path}: {exc}") from None
    missing = [c for c in ("study_uid", "path") if c not in columns]
    if missing:
        raise EvaluationError(f"{labels_path} lacks the column(s) {', '.join(missing)} (the format: docs/models.md)")
    present = [f for f in findings if f in columns]
    if not present:
        raise EvaluationError(f"{labels_path} has no label column for this model's findings "
                              f"({', '.join(findings)}); its columns: {', '.join(columns)}")
    if not rows:
        raise EvaluationError(f"{labels_path} has no rows")
    for n, row in enumerate(rows, start=2):
        folder = data / (row.get("path") or "")
        if not row.get("path") or not folder.exists():
            raise EvaluationError(f"{labels_path} line {n}: path {row.get('path')!r} not found in {data}")
        for f in present:
            if row[f] not in ("0", "1"):
                raise EvaluationError(f"{labels_path} line {n}: {f} must be 0 or 1, not {row[f]!r}")
    return rows


def study_series(folder: Path):
    """The series of a study folder (every readable DICOM file below it), files in instance order."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    from models.inference import SeriesInfo

    groups: dict[str, list] = defaultdict(list)
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "SeriesInstanceUID" not in ds:
            continue
        groups[ds.SeriesInstanceUID].append((int(getattr(ds, "InstanceNumber", 0) or 0), path, ds))
    out = []
    for uid, items in groups.items():
        items.sort(key=lambda t: (t[0], str(t[1])))
        ds = items[0][2]
        out.append(SeriesInfo(uid, str(getattr(ds, "Modality", "")), str(getattr(ds, "SeriesDescription", "")),
                              str(getattr(ds, "BodyPartExamined", "")), str(getattr(ds, "StudyDescription", "")),
                              tuple(p for _, p, _ in items), tuple(str(d.SOPInstanceUID) for _, _, d in items)))
    return out


def evaluate(card, data: Path, labels_path: Path, out: Path, *, n_bootstrap: int = 1000,
             target_sensitivity: float = 0.9, config_rules: dict | None = None, progress: bool = True) -> dict:
    from tqdm import tqdm

    from models.inference import analyse

    findings = [f for f in card.findings]
    rows = read_labels(data, labels_path, findings)
    findings = [f for f in findings if f in rows[0]]
    scored, unscored, timings = [], [], defaultdict(list)
    for row in tqdm(rows, desc=f"evaluate {card.name}", disable=not progress, unit="study"):
        series = study_series(data / row["path"])
        runs = analyse([card], series, config_rules, heatmap_size=64) if series else []
        run = runs[0] if runs else None
        if run is None or run.reason:
            unscored.append({"study_uid": row["study_uid"],
                             "reason": run.reason if run else "no DICOM series (or no matching modality)"})
            continue
        probs = {f.finding: f.probability for f in run.findings}
        scored.append((row, probs))
        for k, v in run.timings.items():
            timings[k].append(v)
    if not scored:
        raise EvaluationError(f"no study in {data} could be scored; first reason: {unscored[0]['reason']}")
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"model": card.name, "version": card.version, "status": "UNVERIFIED",
                               "data": str(data), "labels": str(labels_path), "n_studies": len(rows),
                               "n_scored": len(scored), "unscored": unscored, "findings": {},
                               "timing_mean_s": {k: round(float(np.mean(v)), 4) for k, v in timings.items()}}
    for f in findings:
        y = np.array([int(r[f]) for r, _ in scored])
        s = np.array([p[f] for _, p in scored])
        thr = card.thresholds.get(f, 0.5)
        auc = auroc(y, s)
        lo, hi = bootstrap_auroc_ci(y, s, n=n_bootstrap)
        t_target = threshold_for_sensitivity(y, s, target_sensitivity)
        summary["findings"][f] = {
            "n": int(len(y)), "positives": int(y.sum()),
            "auroc": _r(auc), "auroc_ci95": [_r(lo), _r(hi)],
            "operating_point": operating_point(y, s, thr),
            "target_sensitivity": target_sensitivity,
            "threshold_for_target": _r(t_target) if t_target is not None else None,
            "at_target": operating_point(y, s, t_target) if t_target is not None else None,
            "breakdown": breakdown(scored, f, thr),
        }
    write_scores(out / "scores.csv", scored, findings)
    plots(out, scored, findings, card)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(report(summary), encoding="utf-8")
    return summary


def _r(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def breakdown(scored, finding: str, thr: float) -> dict[str, dict[str, Any]]:
    """Sensitivity of the positives by subtype, lesion size and source (synthetic or inserted into
    a real image); specificity of the negatives, with mimics, and by source."""
    from models.phantoms import size_bin

    groups: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row, probs in scored:
        y = int(row[finding])
        if y:
            if row.get("subtype"):
                for sub in row["subtype"].split("+"):
                    if sub in (finding,) or finding == "ich":
                        groups[f"subtype: {sub}"].append((y, probs[finding]))
            if row.get("lesion_size_mm") not in (None, ""):
                groups[f"size: {size_bin(float(row['lesion_size_mm']))}"].append((y, probs[finding]))
        else:
            groups["negatives"].append((y, probs[finding]))
            if row.get("mimics"):
                groups["negatives with mimics"].append((y, probs[finding]))
        if row.get("source"):
            groups[f"source: {row['source']}, {'positives' if y else 'negatives'}"].append((y, probs[finding]))
    out = {}
    for key in sorted(groups):
        ys = np.array([g[0] for g in groups[key]])
        ss = np.array([g[1] for g in groups[key]])
        hit = ss >= thr
        entry = {"n": int(len(ys)), "mean_probability": _r(float(ss.mean()))}
        entry["sensitivity" if ys.any() else "specificity"] = _r(float(hit.mean() if ys.any() else (~hit).mean()))
        out[key] = entry
    return out


def write_scores(path: Path, scored, findings: Sequence[str]) -> None:
    """One row per study: study_uid, <finding> (probability), <finding>_label: the simulator's format."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_uid", *[c for f in findings for c in (f, f"{f}_label")]])
        for row, probs in scored:
            writer.writerow([row["study_uid"], *[v for f in findings for v in (f"{probs[f]:.6f}", row[f])]])


def plots(out: Path, scored, findings: Sequence[str], card) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(findings)
    fig_roc, ax_roc = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    fig_cal, ax_cal = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    fig_cm, ax_cm = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    for k, f in enumerate(findings):
        y = np.array([int(r[f]) for r, _ in scored])
        s = np.array([p[f] for _, p in scored])
        fpr, tpr = roc_curve(y, s)
        a = ax_roc[0, k]
        a.plot(fpr, tpr, lw=2)
        a.plot([0, 1], [0, 1], "k:", lw=1)
        a.set(title=f"{f}: AUROC {auroc(y, s):.3f}", xlabel="1 - specificity", ylabel="sensitivity")
        bins = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(s, bins) - 1, 0, 9)
        xs = [s[idx == b].mean() for b in range(10) if (idx == b).any()]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
        a = ax_cal[0, k]
        a.plot([0, 1], [0, 1], "k:", lw=1)
        a.plot(xs, ys, "o-")
        a.set(title=f"{f}: calibration", xlabel="predicted probability", ylabel="observed frequency")
        op = operating_point(y, s, card.thresholds.get(f, 0.5))
        cm = np.array([[op["tn"], op["fp"]], [op["fn"], op["tp"]]])
        a = ax_cm[0, k]
        a.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            a.text(j, i, str(v), ha="center", va="center")
        a.set(title=f"{f} @ {op['threshold']:.3g}", xticks=[0, 1], yticks=[0, 1],
              xticklabels=["pred -", "pred +"], yticklabels=["true -", "true +"])
    for fig, name in ((fig_roc, "roc.png"), (fig_cal, "calibration.png"), (fig_cm, "confusion.png")):
        fig.suptitle(f"{card.name} {card.version} (UNVERIFIED)")
        fig.tight_layout()
        fig.savefig(out / name, dpi=80)
        plt.close(fig)


def report(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']} {summary['version']} (UNVERIFIED)", "",
             f"Data: `{summary['data']}`; {summary['n_scored']} of {summary['n_studies']} studies scored.", "",
             "| finding | n | positives | AUROC (95% CI) | threshold | sensitivity | specificity | PPV | NPV "
             "| threshold for target sensitivity |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f, m in summary["findings"].items():
        op = m["operating_point"]
        ci = m["auroc_ci95"]
        lines.append(f"| {f} | {m['n']} | {m['positives']} | {m['auroc']} ({ci[0]}-{ci[1]}) | {op['threshold']} | "
                     f"{op['sensitivity']} | {op['specificity']} | {op['ppv']} | {op['npv']} | "
                     f"{m['threshold_for_target']} (sens. >= {m['target_sensitivity']}) |")
    for f, m in summary["findings"].items():
        lines += ["", f"## {f}: breakdown at the operating threshold", "", "| group | n | sensitivity / specificity "
                  "| mean probability |", "|---|---|---|---|"]
        for key, b in m["breakdown"].items():
            val = b.get("sensitivity", b.get("specificity"))
            kind = "sens." if "sensitivity" in b else "spec."
            lines.append(f"| {key} | {b['n']} | {kind} {val} | {b['mean_probability']} |")
    if summary["unscored"]:
        lines += ["", "## Not scored", ""] + [f"- {u['study_uid']}: {u['reason']}" for u in summary["unscored"][:50]]
    lines += ["", "Plots: roc.png, calibration.png, confusion.png. Per-study scores: scores.csv "
              "(the format `readingroom simulate` reads).", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from models.registry import WEIGHTS_DIR, find_model, load_config
    from readingroom.settings import PROJECT_ROOT, load_settings

    p = argparse.ArgumentParser(prog="readingroom evaluate", description="Evaluate a triage model on labelled DICOM.")
    p.add_argument("--model", required=True, help="model name (models/weights or configs/models.yaml) or folder")
    p.add_argument("--data", type=Path, required=True, help="folder of studies")
    p.add_argument("--labels", type=Path, default=None, help="labels CSV (default: DATA/labels.csv)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: DATA/eval-MODEL)")
    p.add_argument("--json", action="store_true", help="print the JSON summary")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the AUROC CI")
    p.add_argument("--target-sensitivity", type=float, default=0.9)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(list(argv) if argv is not None else None)
    settings = load_settings()
    config = load_config(settings.config_dir / settings.models.file)
    card = find_model(args.model, WEIGHTS_DIR, config, PROJECT_ROOT)
    if card is None:
        raise EvaluationError(f"no model named {args.model!r}: see models/weights/ and configs/models.yaml")
    out = args.out or args.data / f"eval-{card.name}"
    t0 = time.perf_counter()
    summary = evaluate(card, args.data, args.labels or args.data / "labels.csv", out, n_bootstrap=args.bootstrap,
                       target_sensitivity=args.target_sensitivity, config_rules=config["rules"],
                       progress=not args.quiet)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for f, m in summary["findings"].items():
            op = m["operating_point"]
            print(f"{f}: AUROC {m['auroc']} (95% CI {m['auroc_ci95'][0]}-{m['auroc_ci95'][1]}), "
                  f"sensitivity {op['sensitivity']}, specificity {op['specificity']} at {op['threshold']}")
        print(f"UNVERIFIED; {summary['n_scored']}/{summary['n_studies']} studies scored; report: {out / 'report.md'}")
    return 0
