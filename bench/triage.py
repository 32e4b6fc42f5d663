"""Triage-model benchmark: per-study time on 2 cores (ONNX Runtime against torch) and the
held-out evaluation of the shipped models.

Part 1, timing: a 32-slice 512 x 512 head CT and a 2048 x 2048 chest radiograph (phantoms,
written as DICOM), each read ``--repeats`` times: decode (pydicom), preprocess (numpy), model
(ONNX Runtime; then torch with the same weights). Median seconds per study. Targets: at most
3 s per head CT, 1 s per radiograph (decode + preprocess + ONNX model).

Part 2, accuracy: ``readingroom evaluate`` on freshly generated held-out phantoms (seeds 9001
and 9002: never used in training, which uses seeds below 9000), ``--n`` studies per task
(default 200). Targets: AUROC >= 0.97 (ICH) and >= 0.95 (each CXR finding), sensitivity >= 0.90
at the shipped threshold.

Run it from the repository root::

    .venv/bin/python bench/triage.py [--n 200] [--repeats 5] [--skip-eval] [--json]

Everything it writes goes under var/bench/triage/ (git-ignored). Exit status: 0 every target
met; 1 TARGET MISSED.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import statistics
import time

import numpy as np

OUT = Path("var/bench/triage")
TARGETS = {"ct_s": 3.0, "cxr_s": 1.0, "auroc": {"ich": 0.97, "pneumothorax": 0.95, "effusion": 0.95,
                                               "consolidation": 0.95}, "sensitivity": 0.90}


def timing(repeats: int, threads: int) -> dict:
    import torch

    from models import phantoms
    from models.inference import Runner, ct_detail, read_ct, read_cxr
    from models.networks import build
    from models.preprocess import ct_inputs, cxr_input
    from models.registry import installed_models

    torch.set_num_threads(threads)
    cards = {c.name: c for c in installed_models()}
    rng = np.random.default_rng(9003)
    ct = phantoms.ct_head(rng, n_slices=32, size=512, positive=True, subtype="intraparenchymal")
    _, ct_files = phantoms.write_case("ich", ct, OUT / "timing", "ct", 9003, 0)
    cxr = phantoms.cxr_image(rng, size=2048, findings={"pneumothorax": 1})
    _, cxr_files = phantoms.write_case("cxr", cxr, OUT / "timing", "cxr", 9003, 1)
    results = {}
    for name, files in (("ich-ct", ct_files), ("cxr-chest", cxr_files)):
        card = cards[name]
        onnx = Runner(card, threads=threads)
        model = build(card.metadata["task"], card.metadata.get("architecture"))
        model.load_state_dict(torch.load(card.torch_weights, weights_only=True))
        model.eval()
        rows = []
        for _ in range(repeats + 1):                   # the first run warms up
            t0 = time.perf_counter()
            if name == "ich-ct":
                vol = read_ct(files)
                t1 = time.perf_counter()
                x, _ = ct_inputs(vol.hu, vol.thickness_mm, detail=ct_detail(card))
            else:
                pixels, photometric = read_cxr(files[0])
                t1 = time.perf_counter()
                x = cxr_input(pixels, photometric)[None]
            t2 = time.perf_counter()
            onnx(x)
            t3 = time.perf_counter()
            with torch.no_grad():
                model(torch.from_numpy(x))
            t4 = time.perf_counter()
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        rows = rows[1:]
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        results[name] = {"decode_s": round(med[0], 3), "preprocess_s": round(med[1], 3),
                         "onnx_s": round(med[2], 3), "torch_s": round(med[3], 3),
                         "total_onnx_s": round(med[0] + med[1] + med[2], 3),
                         "total_torch_s": round(med[0] + med[1] + med[3], 3),
                         "input": list(x.shape)}
    return results


def held_out(n: int) -> dict:
    from models.evaluate import evaluate
    from models.phantoms import GENERATOR_VERSION, write_dataset
    from models.registry import installed_models

    cards = {c.name: c for c in installed_models()}
    out = {}
    for task, seed, name, size in (("ich", 9001, "ich-ct", 256), ("cxr", 9002, "cxr-chest", 1024)):
        data = OUT / f"held-out-{task}-{seed}-{n}-g{GENERATOR_VERSION}"   # never a stale generator's
        if not (data / "labels.csv").exists():
            t0 = time.perf_counter()
            write_dataset(task, n, seed, data, size=size)
            print(f"{task}: wrote {n} held-out phantoms in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        summary = evaluate(cards[name], data, data / "labels.csv", data / f"eval-{name}")
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        out[name] = summary
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="held-out studies per task")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpus": os.cpu_count(), "load_average": os.getloadavg()}
    report["timing"] = timing(args.repeats, args.threads)
    missed = []
    print("Per-study time (median of %d; 2 cores; load average %.1f):" % (args.repeats, report["load_average"][0]))
    for name, key in (("ich-ct", "ct_s"), ("cxr-chest", "cxr_s")):
        t = report["timing"][name]
        ok = t["total_onnx_s"] <= TARGETS[key]
        missed += [] if ok else [f"{name} time"]
        print(f"  {name}: decode {t['decode_s']} s, preprocess {t['preprocess_s']} s, model ONNX {t['onnx_s']} s "
              f"/ torch {t['torch_s']} s; total ONNX {t['total_onnx_s']} s (target <= {TARGETS[key]} s: "
              f"{'met' if ok else 'TARGET MISSED'}), torch {t['total_torch_s']} s")
    if not args.skip_eval:
        report["held_out"] = held_out(args.n)
        print(f"Held-out phantoms ({args.n} per task, seeds 9001/9002):")
        for name, summary in report["held_out"].items():
            for f, m in summary["findings"].items():
                op = m["operating_point"]
                ok_auc = (m["auroc"] or 0) >= TARGETS["auroc"][f]
                ok_sens = (op["sensitivity"] or 0) >= TARGETS["sensitivity"]
                missed += [] if ok_auc else [f"{f} AUROC"]
                missed += [] if ok_sens else [f"{f} sensitivity"]
                print(f"  {name} {f}: AUROC {m['auroc']} (95% CI {m['auroc_ci95'][0]}-{m['auroc_ci95'][1]}; "
                      f"target >= {TARGETS['auroc'][f]}: {'met' if ok_auc else 'TARGET MISSED'}); at threshold "
                      f"{op['threshold']}: sensitivity {op['sensitivity']} ({'met' if ok_sens else 'TARGET MISSED'}),"
                      f" specificity {op['specificity']}, PPV {op['ppv']}, NPV {op['npv']}; "
                      f"{m['positives']}/{m['n']} positive")
            print(f"  {name}: report {summary['data']}/eval-{name}/report.md ({summary['seconds']} s)")
    (OUT / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    print("all targets met" if not missed else "TARGET MISSED: " + ", ".join(missed))
    return 0 if not missed else 1


if __name__ == "__main__":
    raise SystemExit(main())
