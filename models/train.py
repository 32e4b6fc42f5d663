"""``readingroom train --task ich|cxr``: generate phantoms, train, pick the threshold, export.

Training and validation sets are drawn from different phantom seeds (``--seed`` and
``--val-seed``); held-out evaluation (bench/triage.py) uses seeds from 9000 on, never used here.
The run stops when its CPU time reaches ``--cpu-minutes`` (30: single-threaded, that is at most 30
minutes on an idle 2-core machine; ``--resume`` counts the earlier runs too) or at ``--minutes`` of
wall time, whichever comes first. On a shared machine the wall time is longer; the card records
both. It keeps the checkpoint with the best validation AUROC, chooses the operating threshold on validation for
``--target-sensitivity``, exports ONNX (checked against torch) and writes the model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from models.metrics import auroc, operating_point, threshold_for_sensitivity
from models.phantoms import GENERATOR_VERSION, SMALL_SHARE, TASK_FINDINGS, draw_case
from models.preprocess import CT_SIZE, CXR_SIZE, ct_inputs, ct_mask_to_model, cxr_input, space_to_depth
from models.registry import WEIGHTS_DIR

log = logging.getLogger(__name__)

MODEL_NAMES = {"ich": "ich-ct", "cxr": "cxr-chest"}
MODEL_VERSIONS = {"ich": "0.5.0", "cxr": "0.1.0"}   # what a new run writes (the shipped recipes)
CT_DETAIL = 2          # CT input: 256 x 256 folded into 4 x 5 channels of 128 x 128 (ct_inputs' detail)
AREA_GRID = 32          # CT lesion areas are kept on a 32 x 32 grid per slice, pooled to the map's cells
MIN_AREA_MM2 = 3.0      # the visible-blood rule: slices and map cells with less are left out, not taught
TRAIN_REAL_FRACTION = 0.1   # streamed CT training: share of volumes on the real slice 693 (as evaluated)
PRECISIONS = ("fp32", "bf16")   # bf16: a CT step 2.5x cheaper on a CPU with AVX512-BF16 (bench/train_step.py)
INTENDED_USE = "demonstration; trained on synthetic data; not for clinical use"


# ----------------------------------------------------------------------------- data


class CTSet:
    """Slices of many volumes, stored as uint8 windows (brain, subdural, bone)."""

    def __init__(self, seed: int, n: int, progress: bool = True) -> None:
        from tqdm import tqdm

        chans, labels, areas, vol, self.study_labels, self.starts = [], [], [], [], [], []
        self.subtypes, self.sizes = [], []
        start = 0
        for i in tqdm(range(n), desc=f"CT phantoms seed {seed}", disable=not progress, unit="vol"):
            case = draw_case("ich", seed, i)
            windows, slice_labels, lesion_areas = ct_case_item(case)   # the same as the stream
            chans.append(windows)
            labels.append(slice_labels)
            areas.append(lesion_areas)
            vol.append(np.full(len(windows), i))
            self.starts.append((start, start + len(windows)))
            start += len(windows)
            self.study_labels.append(case.ich)
            self.subtypes.append(case.subtype)
            self.sizes.append(case.size_mm)
        self.chans = np.concatenate(chans)
        self.labels = np.concatenate(labels)
        self.areas = np.concatenate(areas)
        self.vol = np.concatenate(vol)

    def batch(self, idx: np.ndarray, flip: bool = False) -> np.ndarray:
        return ct_batch(self.chans, self.vol, idx, flip)


def ct_batch(chans: np.ndarray, vol: np.ndarray, idx: np.ndarray, flip: bool = False) -> np.ndarray:
    """The model's input for slices ``idx``: five channels (brain window of the slice and its
    neighbours, subdural, bone), flipped left-right if asked, folded to the model grid."""
    prev = np.where((idx > 0) & (vol[np.maximum(idx - 1, 0)] == vol[idx]), idx - 1, idx)
    nxt_i = np.minimum(idx + 1, len(vol) - 1)
    nxt = np.where(vol[nxt_i] == vol[idx], nxt_i, idx)
    x = np.stack([chans[prev, 0], chans[idx, 0], chans[nxt, 0], chans[idx, 1], chans[idx, 2]], axis=1)
    if flip:
        x = x[..., ::-1]
    return space_to_depth(x.astype(np.float32) / 255.0, chans.shape[-1] // CT_SIZE)


def ct_case_item(case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CT phantom as the model sees it: (slices, 3, 256, 256) uint8 windows (brain, subdural,
    bone) before ``space_to_depth``; the training labels of its slices (1, 0, or -1: left out);
    and the blood area in mm2 of each cell of a 32 x 32 grid over the model's crop, (slices, 32,
    32) float16, the dense targets of the network's maps (``map_targets``)."""
    x, geom = ct_inputs(case.hu, case.thickness_mm, CT_SIZE * CT_DETAIL)
    cell_mm = geom.box[2] * case.pixel_mm / AREA_GRID
    areas = ct_mask_to_model(case.lesion, geom, AREA_GRID) * cell_mm ** 2
    return (np.round(x[:, [1, 3, 4]] * 255).astype(np.uint8), case.training_labels(MIN_AREA_MM2),
            areas.astype(np.float16))


def map_targets(areas: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Blood areas (N, 32, 32) in mm2 -> targets of the (N, h, w) maps: 1 where a cell holds at
    least MIN_AREA_MM2 of blood, -1 (left out) where it holds less but some, 0 where none."""
    h, w = shape
    if AREA_GRID % h or AREA_GRID % w:
        raise ValueError(f"map size {shape} does not divide the {AREA_GRID}-cell area grid")
    pooled = areas.astype(np.float32).reshape(len(areas), h, AREA_GRID // h, w, AREA_GRID // w).sum(axis=(2, 4))
    return np.where(pooled >= MIN_AREA_MM2, 1.0, np.where(pooled > 0.05, -1.0, 0.0)).astype(np.float32)


class NegativeMemory:
    """The last probability the network gave each negative training slice, to draw the hard ones
    (the study score is the maximum over its slices, so a negative study is only as good as its
    worst slice). Slices not scored yet, or whose pool slot now holds another volume, count 0.5."""

    def __init__(self, n: int) -> None:
        self.prob = np.full(n, 0.5, np.float32)
        self.vol = np.full(n, -2, np.int64)

    def update(self, idx: np.ndarray, vol: np.ndarray, prob: np.ndarray) -> None:
        self.prob[idx], self.vol[idx] = prob, vol[idx]

    def draw(self, rng: np.random.Generator, neg_idx: np.ndarray, vol: np.ndarray, n: int) -> np.ndarray:
        """``n`` negatives, each drawn with probability proportional to its last score."""
        if n <= 0:
            return np.zeros(0, np.int64)
        p = np.where(self.vol[neg_idx] == vol[neg_idx], self.prob[neg_idx], 0.5) + 1e-3
        return rng.choice(neg_idx, n, p=p / p.sum())


def per_volume_weights(vol: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Drawing probabilities for the slices ``idx`` that give every volume the same share:
    a small lesion seen on one slice is drawn as often as a large one seen on eight."""
    _, inverse, counts = np.unique(vol[idx], return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w / w.sum()


def ct_volume_item(seed: int, index: int, real_fraction: float = TRAIN_REAL_FRACTION,
                   small_share: float = SMALL_SHARE) -> tuple[np.ndarray, ...]:
    """Phantom ``index`` of ``seed`` as the model sees it (``ct_case_item``)."""
    return ct_case_item(draw_case("ich", seed, index, real_fraction=real_fraction, small_share=small_share))


def _ct_generator(seed: int, start: int, stride: int, out, stop, real_fraction: float = TRAIN_REAL_FRACTION,
                  small_share: float = SMALL_SHARE) -> None:
    """A generator process: fresh training phantoms, one after another, into ``out``."""
    import queue

    i = start
    while not stop.is_set():
        item = ct_volume_item(seed, i, real_fraction, small_share)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.5)
                break
            except queue.Full:
                continue
        i += stride


class CTStream:
    """Training slices from a stream of fresh phantom volumes (no volume is drawn twice).

    ``workers`` processes generate volumes of the training seed while the trainer runs; the
    newest ``slots`` volumes form the pool that batches are drawn from. With one generator and
    one training thread, the two cores of the budget are both busy and the network sees several
    thousand different heads instead of overfitting a few hundred."""

    def __init__(self, seed: int, slots: int = 600, workers: int = 1, n_slices: int = 32,
                 real_fraction: float = TRAIN_REAL_FRACTION, small_share: float = SMALL_SHARE) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.n, self.slots, self.added = n_slices, slots, 0
        side = CT_SIZE * CT_DETAIL
        self.chans = np.zeros((slots * n_slices, 3, side, side), np.uint8)
        self.labels = np.zeros(slots * n_slices, np.float32)
        self.areas = np.zeros((slots * n_slices, AREA_GRID, AREA_GRID), np.float16)
        self.vol = np.full(slots * n_slices, -1, np.int64)
        self.queue = ctx.Queue(maxsize=64)
        self.stop = ctx.Event()
        self.procs = [ctx.Process(target=_ct_generator, daemon=True,
                                  args=(seed, w, workers, self.queue, self.stop, real_fraction, small_share))
                      for w in range(workers)]
        for p in self.procs:
            p.start()

    def ingest(self, wait_for: int = 0) -> int:
        """Move the generated volumes into the pool (oldest out); block until ``wait_for`` are in."""
        import queue

        got = 0
        ready = self.queue.qsize()   # items put, not yet got: some may still be in the pipe
        while True:
            try:   # a volume is 6 MB: get_nowait() would find the pipe mid-transfer and stop early
                chans, labels, areas = (self.queue.get(timeout=1.0) if self.added < wait_for or got < ready
                                        else self.queue.get_nowait())
            except queue.Empty:
                if self.added < wait_for:
                    continue
                break
            slot = self.added % self.slots
            a, n = slot * self.n, min(len(chans), self.n)
            self.vol[a:a + self.n] = -1
            self.labels[a:a + self.n] = 0
            self.areas[a:a + self.n] = 0
            self.chans[a:a + n], self.labels[a:a + n], self.vol[a:a + n] = chans[:n], labels[:n], self.added
            self.areas[a:a + n] = areas[:n]
            self.added += 1
            got += 1
        valid = self.vol >= 0
        self.pos_idx = np.nonzero(valid & (self.labels > 0))[0]
        self.neg_idx = np.nonzero(valid & (self.labels == 0))[0]
        return got

    def batch(self, idx: np.ndarray, flip: bool = False) -> np.ndarray:
        return ct_batch(self.chans, self.vol, idx, flip)

    def close(self) -> float:
        """Stop the generators; returns their CPU minutes."""
        import queue
        import resource

        self.stop.set()
        while True:   # unblock a generator waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join()
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (ru.ru_utime + ru.ru_stime) / 60


class CXRSet:
    def __init__(self, seed: int, n: int, progress: bool = True) -> None:
        from tqdm import tqdm

        imgs, labels = [], []
        self.subtypes, self.sizes = [], []
        for i in tqdm(range(n), desc=f"CXR phantoms seed {seed}", disable=not progress, unit="img"):
            case = draw_case("cxr", seed, i, size=CXR_SIZE)   # rendered at the model size: 4x cheaper
            imgs.append(cxr_input(case.image).astype(np.float16))
            labels.append([case.labels[f] for f in TASK_FINDINGS["cxr"]])
            self.subtypes.append(case.subtype)
            self.sizes.append(case.size_mm)
        self.images = np.stack(imgs)
        self.labels = np.array(labels, np.float32)

    def batch(self, idx: np.ndarray, flip: bool = False) -> np.ndarray:
        x = self.images[idx].astype(np.float32)
        return x[..., ::-1].copy() if flip else x


CACHE_DIR = Path("var/models/cache")


def load_set(task: str, seed: int, n: int, progress: bool = True):
    """The phantom set (generated, or read back from var/models/cache/ if made before)."""
    import pickle

    size = CT_SIZE * CT_DETAIL if task == "ich" else CXR_SIZE
    path = CACHE_DIR / f"{task}-{seed}-{n}-{size}-v3-g{GENERATOR_VERSION}.pkl"   # v3: slivers -1, blood areas
    if path.exists():
        with path.open("rb") as fh:
            return pickle.load(fh)
    data = (CTSet if task == "ich" else CXRSet)(seed, n, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return data


# ----------------------------------------------------------------------------- scoring


def predict_slices(model, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits, _ = model(torch.from_numpy(x[i:i + batch]).contiguous(memory_format=torch.channels_last))
            out.append(torch.sigmoid(logits).numpy())
    return np.concatenate(out)


def aggregate_ct(slice_probs: np.ndarray) -> float:
    """Study probability from slice probabilities: the maximum."""
    return float(slice_probs.max()) if len(slice_probs) else 0.0


def score_ct(model, data: CTSet) -> np.ndarray:
    probs = np.concatenate([predict_slices(model, data.batch(np.arange(a, min(a + 512, len(data.vol)))))[:, 0]
                            for a in range(0, len(data.vol), 512)])   # in chunks: 1.3 MB per slice
    return np.array([aggregate_ct(probs[a:b]) for a, b in data.starts])


def score_cxr(model, data: CXRSet) -> np.ndarray:
    return predict_slices(model, data.images.astype(np.float32))


# ----------------------------------------------------------------------------- training


def train(task: str, *, seed: int, val_seed: int, n_train: int, n_val: int, minutes: float, batch: int,
          lr: float, threads: int, out_dir: Path, target_sensitivity: float, progress: bool = True,
          cpu_minutes: float = 30.0, resume: bool = False, stream_workers: int = 0, arch: dict | None = None,
          val_every: int = 0, map_weight: float = 0.0, balance: str = "slice",
          real_fraction: float = TRAIN_REAL_FRACTION, hard_negatives: float = 0.0, ema: float = 0.0,
          small_share: float = SMALL_SHARE, precision: str = "fp32") -> dict:
    import torch
    from tqdm import tqdm

    from models.export import export_onnx
    from models.networks import ARCHS, build

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    name = MODEL_NAMES[task]
    folder = out_dir / name
    prior_cpu, prior_wall, prior_history = 0.0, 0.0, []
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    low = precision == "bf16"
    model = build(task, arch).to(memory_format=torch.channels_last)   # the layout oneDNN's convolutions prefer
    if resume:   # continue from the shipped checkpoint; its CPU time counts against the budget
        old = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))["training"]
        prior_cpu, prior_wall = float(old["cpu_minutes"]), float(old["minutes"])
        prior_history = old.get("history", [])
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    stream = (CTStream(seed, workers=stream_workers, real_fraction=real_fraction, small_share=small_share)
              if task == "ich" and stream_workers > 0 else None)
    val_set = load_set(task, val_seed, n_val, progress)
    if stream is not None:
        stream.ingest(wait_for=min(64, n_train))
        train_set = stream
        pos_idx, neg_idx = stream.pos_idx, stream.neg_idx
    else:
        train_set = load_set(task, seed, n_train, progress)
        y = train_set.labels if task == "ich" else train_set.labels.max(axis=1)
        pos_idx, neg_idx = np.nonzero(y > 0)[0], np.nonzero(y == 0)[0]
    balanced = balance == "volume" and task == "ich"
    pos_p = per_volume_weights(train_set.vol, pos_idx) if balanced else None
    t_data = time.perf_counter() - t0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    budget_s = minutes * 60 - t_data
    cpu_budget_s = (cpu_minutes - prior_cpu) * 60

    def out_of_time() -> bool:
        return (time.perf_counter() - t_train > budget_s * 0.9
                or time.process_time() - c0 > cpu_budget_s - 60)   # a minute left for the last validation
    loss_fn = torch.nn.BCEWithLogitsLoss()
    memory = NegativeMemory(len(train_set.vol)) if hard_negatives > 0 and task == "ich" else None
    # An exponential moving average of the weights (and BatchNorm statistics) is what is validated
    # and shipped when ``ema`` > 0: one noisy step's weights are a worse pick than their average.
    averaged = (torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema), use_buffers=True) if ema > 0 else None)
    best = {"auroc": -1.0}
    history = []
    step = 0
    epoch_steps = val_every or (400 if stream is not None else max(50, len(train_set.labels) // batch // 2))
    bar = tqdm(total=None, desc=f"train {task}", disable=not progress, unit="step")
    t_train = time.perf_counter()
    while step == 0 or not out_of_time():   # at least one step and one validation
        model.train()
        losses = []
        for _ in range(epoch_steps):
            if stream is not None and step % 10 == 0:      # fresh volumes in, the oldest out
                stream.ingest()
                pos_idx, neg_idx = stream.pos_idx, stream.neg_idx
                pos_p = per_volume_weights(stream.vol, pos_idx) if balanced else None
            if stream is not None:                         # cosine decay over the wall budget
                frac = min(1.0, (time.perf_counter() - t_train) / max(budget_s * 0.9, 1.0))
                for group in opt.param_groups:
                    group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            n_pos = batch * 2 // 5                          # 40 % positives in a batch
            n_hard = round((batch - n_pos) * hard_negatives) if memory is not None else 0
            idx = np.r_[rng.choice(pos_idx, n_pos, p=pos_p), rng.choice(neg_idx, batch - n_pos - n_hard)]
            if n_hard:
                idx = np.r_[idx, memory.draw(rng, neg_idx, train_set.vol, n_hard)]
            flip = rng.random() < 0.5                       # left-right flip
            x = train_set.batch(idx, flip)
            x = x * rng.uniform(0.9, 1.1) + rng.uniform(-0.04, 0.04)
            target = train_set.labels[idx].reshape(len(idx), -1)
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).contiguous(
                memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=low):   # the forward pass only
                logits, maps = model(x)
            logits, maps = logits.float(), maps.float()
            loss = loss_fn(logits, torch.from_numpy(target))
            if memory is not None:
                memory.update(idx, train_set.vol, torch.sigmoid(logits.detach())[:, 0].numpy())
            if map_weight > 0:   # dense targets: every cell of every slice says where blood is, or none
                areas = train_set.areas[idx][..., ::-1] if flip else train_set.areas[idx]
                cells = torch.from_numpy(map_targets(areas, tuple(maps.shape[-2:])))
                keep = (cells >= 0).float()
                cell_loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    maps[:, 0], cells.clamp(min=0), weight=keep, reduction="sum") / keep.sum().clamp(min=1)
                loss = loss + map_weight * cell_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if averaged is not None:
                averaged.update_parameters(model)
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if out_of_time():
                break
        judged = averaged.module if averaged is not None else model
        scores, labels, aurocs = validate(judged, task, val_set)
        mean_auc = float(np.mean(aurocs))
        history.append({"step": step + (prior_history[-1]["step"] if prior_history else 0),
                        "loss": round(float(np.mean(losses)), 4), "val_auroc": [round(a, 4) for a in aurocs],
                        "minutes": round((time.perf_counter() - t0) / 60, 2)})
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", val_auroc=f"{mean_auc:.3f}")
        log.info("step %d loss %.4f val AUROC %s", step, np.mean(losses), aurocs)
        if mean_auc > best["auroc"]:
            best = {"auroc": mean_auc, "state": {k: v.clone() for k, v in judged.state_dict().items()},
                    "scores": scores, "labels": labels, "step": step}
    bar.close()
    generator_cpu = stream.close() if stream is not None else 0.0
    volumes_seen = stream.added if stream is not None else n_train
    train_minutes = prior_wall + (time.perf_counter() - t0) / 60
    cpu_used = prior_cpu + (time.process_time() - c0) / 60 + generator_cpu
    history = prior_history + history
    model = model.to(memory_format=torch.contiguous_format)
    model.load_state_dict(best["state"])
    model.eval()
    findings = TASK_FINDINGS[task]
    thresholds, val_metrics = {}, {}
    for k, f in enumerate(findings):
        thresholds[f] = choose_threshold(best["labels"][:, k], best["scores"][:, k], target_sensitivity)
        val_metrics[f] = {"auroc": round(auroc(best["labels"][:, k], best["scores"][:, k]), 4),
                          **operating_point(best["labels"][:, k], best["scores"][:, k], thresholds[f])}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "model.pt")
    size = CT_SIZE if task == "ich" else CXR_SIZE
    diff = export_onnx(model, folder / "model.onnx", (1, ARCHS[task]["in_channels"], size, size))
    card = model_card(task, name, thresholds, val_metrics, history, train_minutes, volumes_seen, n_val, seed,
                      val_seed, threads, diff, best["step"], arch=model_arch(task, arch), streamed=stream is not None,
                      real_fraction=real_fraction)
    card["training"]["cpu_minutes"] = round(cpu_used, 1)
    describe_training(card, task=task, low=low, resume=resume, balance=balance, small_share=small_share,
                      streamed=stream is not None, ema=ema, hard_negatives=hard_negatives, map_weight=map_weight)
    (folder / "metadata.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def validate(model, task: str, val_set) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Score the validation set: (scores (studies, findings), labels (studies, findings), AUROC per finding)."""
    model.eval()
    scores = score_ct(model, val_set) if task == "ich" else score_cxr(model, val_set)
    labels = np.array(val_set.study_labels)[:, None] if task == "ich" else val_set.labels
    scores = scores.reshape(len(labels), -1)
    return scores, labels, [auroc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]


def describe_training(card: dict, *, task: str, low: bool, resume: bool, balance: str, small_share: float,
                      streamed: bool, ema: float, hard_negatives: float, map_weight: float) -> None:
    """Write the training options that were used into the model card (in place)."""
    card["training"]["precision"] = (("bfloat16 autocast for the training forward pass (weights, optimizer, "
                                      "loss, validation and export in float32)" if low else "float32")
                                     + "; channels-last layout")
    card["training"]["resumed"] = resume
    if balance == "volume" and task == "ich":
        card["training"]["positive_sampling"] = ("per volume: each positive volume has the same share of the "
                                                 "positive slices drawn, whatever the lesion's extent")
    if small_share != SMALL_SHARE and streamed:
        card["training_data"]["small_share"] = (
            f"{small_share:.0%} of the training bleeds drawn 3-5 mm (the validation and held-out sets: "
            f"{SMALL_SHARE:.0%})")
    if ema > 0:
        card["training"]["weights"] = ("exponential moving average of the weights and BatchNorm statistics "
                                       f"(decay {ema:g})")
    if hard_negatives > 0:
        card["training"]["hard_negatives"] = (
            f"{hard_negatives:.0%} of each batch's negatives drawn in proportion to the probability the network "
            "last gave them (NegativeMemory); the rest uniformly")
    if map_weight > 0:
        card["training"]["map_targets"] = (
            f"loss = slice BCE + {map_weight:g} x cell BCE on the maps: a cell is 1 where it holds >= "
            f"{MIN_AREA_MM2:g} mm2 of blood, 0 where none; cells with less are left out")


def choose_threshold(labels: np.ndarray, scores: np.ndarray, target: float) -> float:
    """The operating threshold on validation: the highest one reaching ``target`` sensitivity,
    then lowered to halfway between the next negative below it and the lowest positive above
    that negative (the same specificity on validation, more sensitivity and a margin)."""
    thr = threshold_for_sensitivity(labels, scores, target)
    if thr is None:
        return 0.5
    y = np.asarray(labels) == 1
    below = scores[~y & (scores < thr)]
    if len(below):   # the same negatives above it, but every positive above that negative
        top_neg = float(below.max())
        thr = (top_neg + float(scores[y & (scores > top_neg)].min())) / 2
    return math.floor(thr * 1e4) / 1e4                 # rounded down: never above a positive


def rethreshold(task: str, out_dir: Path, target: float, val_seed: int, n_val: int) -> dict:
    """Score the validation set with the shipped model again; rewrite thresholds and metrics."""
    import torch

    from models.networks import build

    folder = out_dir / MODEL_NAMES[task]
    card = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    model = build(task, card.get("architecture"))
    model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
    model.eval()
    data = load_set(task, val_seed, n_val, progress=False)
    scores = score_ct(model, data) if task == "ich" else score_cxr(model, data)
    labels = np.array(data.study_labels)[:, None] if task == "ich" else data.labels
    scores = scores.reshape(len(labels), -1)
    for k, f in enumerate(TASK_FINDINGS[task]):
        thr = choose_threshold(labels[:, k], scores[:, k], target)
        card["thresholds"][f] = thr
        card["metrics"]["validation"][f] = {"auroc": round(auroc(labels[:, k], scores[:, k]), 4),
                                            **operating_point(labels[:, k], scores[:, k], thr)}
    (folder / "metadata.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def model_arch(task: str, arch: dict | None = None) -> dict:
    from models.networks import ARCHS

    return {**ARCHS[task], **(arch or {})}


def model_card(task, name, thresholds, val_metrics, history, train_minutes, n_train, n_val, seed, val_seed,
               threads, diff, best_step, arch: dict | None = None, streamed: bool = False,
               real_fraction: float = TRAIN_REAL_FRACTION) -> dict:
    arch = arch or model_arch(task)
    if task == "ich":
        modalities = ["CT"]
        inp = {"kind": "ct-2.5d", "shape": ["slices", arch["in_channels"], CT_SIZE, CT_SIZE],
               "channels": ["brain window (40/80) slice k-1", "brain window slice k", "brain window slice k+1",
                            "subdural window (75/215)", "bone window (600/2800)"],
               **({"detail": CT_DETAIL, "detail_note": (
                   f"each channel at {CT_SIZE * CT_DETAIL} x {CT_SIZE * CT_DETAIL}, folded into {CT_DETAIL ** 2} "
                   f"channels of {CT_SIZE} x {CT_SIZE} (pixel_unshuffle order: channel c's pixel (i, j) "
                   f"of each block -> c * {CT_DETAIL ** 2} + i * {CT_DETAIL} + j)")}
                  if arch["in_channels"] == 5 * CT_DETAIL ** 2 else {}),
               "slice_thickness_mm": 5.0, "crop": "square around the head (HU > -300)",
               "aggregation": "study probability = max over slices"}
    else:
        modalities = ["CR", "DX"]
        inp = {"kind": "cxr-2d", "shape": [1, 1, CXR_SIZE, CXR_SIZE],
               "channels": ["radiograph, MONOCHROME1 inverted, 1..99 percentile scaled to 0..1"]}
    return {
        "name": name, "version": MODEL_VERSIONS[task], "task": task, "modalities": modalities,
        "intended_use": INTENDED_USE, "status": "UNVERIFIED",
        "findings": list(TASK_FINDINGS[task]),
        "thresholds": thresholds,
        "input": inp,
        "output": {"logits": "(N, findings): sigmoid gives the probability",
                   "maps": "(N, findings, h, w) class-activation logit maps: sigmoid gives the heatmap"},
        "architecture": {"network": "MONAI DenseNet features + 1x1 conv CAM head + log-sum-exp pooling"
                                    + ("; stem: 3x3 stride-2 convolution without max-pool (maps at 1/4 of the input)"
                                       if arch.get("stem") == "fine" else ""), **{
            k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}},
        "training_data": {"generator": f"models/phantoms/ version {GENERATOR_VERSION} (synthetic; "
                                       f"{round(100 * real_fraction) if streamed else 10} % of the volumes on "
                                       f"pydicom-data {'693' if task == 'ich' else 'RG1'}, with lesions or none)",
                          "train_seed": seed, "n_train": n_train, "val_seed": val_seed, "n_val": n_val,
                          **({"streamed": "fresh volumes generated during training by a second process; each "
                                          "volume enters a pool of the 600 newest and is never redrawn; n_train "
                                          "counts them"} if streamed else {}),
                          **({"slice_labels": "positive where >= 3 mm2 of pixels hold visible blood (at least "
                                              "30 % blood, >= 45 HU and >= 10 HU above the tissue it replaces); "
                                              "slices with only a partial-volume sliver are left out of "
                                              "training; study labels are the ground truth"}
                             if streamed else {}),
                          "held_out_seeds": "9000 and above (bench/triage.py); never used in training"},
        "training": {"minutes": round(train_minutes, 1), "threads": threads, "best_step": best_step,
                     "budget": ("at most 30 minutes on 2 cores: one trains (one torch thread), one generates "
                                "fresh phantoms" if streamed else
                                "at most 30 CPU-minutes (single-threaded: at most 30 min on an idle 2-core "
                                "machine); wall minutes are longer on a shared machine"),
                     "history": history},
        "onnx_vs_torch_max_abs_diff": diff,
        "metrics": {"validation": val_metrics},
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="readingroom train", description="Train a triage model on phantoms (CPU).")
    p.add_argument("--task", choices=["ich", "cxr"], required=True)
    p.add_argument("--seed", type=int, default=1, help="training phantom seed")
    p.add_argument("--val-seed", type=int, default=2, help="validation phantom seed (must differ)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-time cap, data generation included (ich: 30, cxr: 90)")
    p.add_argument("--cpu-minutes", type=float, default=None,
                   help="CPU-time budget, earlier runs included (ich: 60, two busy cores for 30 min; cxr: 30)")
    p.add_argument("--stream-workers", type=int, default=None,
                   help="ich: processes generating fresh training volumes during training (default 1; 0 trains "
                        "on a fixed set of --n-train volumes)")
    p.add_argument("--stem", choices=["monai", "fine"], default=None,
                   help="ich network stem (default: the shipped architecture's)")
    p.add_argument("--val-every", type=int, default=0, help="steps between validations (default: per task)")
    p.add_argument("--map-weight", type=float, default=0.0,
                   help="ich: weight of a dense loss on the maps' cells (default 0: slice labels only)")
    p.add_argument("--balance", choices=["volume", "slice"], default="volume",
                   help="ich: draw positive slices so that every positive volume has the same share (volume, "
                        "the default) or every positive slice (slice)")
    p.add_argument("--real-fraction", type=float, default=TRAIN_REAL_FRACTION,
                   help="ich, streamed: share of training volumes made on the real head CT slice (default "
                        f"{TRAIN_REAL_FRACTION}, as in the validation and held-out sets; 0.3 was measured)")
    p.add_argument("--hard-negatives", type=float, default=0.0,
                   help="share of a batch's negatives drawn by the score the network last gave them (default 0)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="validate and ship an exponential moving average of the weights with this decay "
                        "(default 0: off; 0.998 was measured)")
    p.add_argument("--small-share", type=float, default=SMALL_SHARE,
                   help="ich, streamed: share of the training bleeds drawn small (3-5 mm); default "
                        f"{SMALL_SHARE}, as in the validation and held-out sets")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="arithmetic of the training forward pass: bf16 (default for ich) or fp32 (default for "
                        "cxr, as cxr-chest 0.1.0 was trained)")
    p.add_argument("--resume", action="store_true", help="continue from the shipped model.pt and its card")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: 1 while a generator process streams volumes, else 2)")
    p.add_argument("--target-sensitivity", type=float, default=0.95)
    p.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="weights folder")
    p.add_argument("--rethreshold", action="store_true",
                   help="only choose the thresholds again on the validation set (no training)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(list(argv) if argv is not None else None)
    from readingroom.errors import ReadingRoomError

    if args.seed == args.val_seed or args.seed >= 9000 or args.val_seed >= 9000:
        raise ReadingRoomError("training and validation seeds must differ and stay below 9000 (held-out seeds)")
    for flag, share in (("--small-share", args.small_share), ("--real-fraction", args.real_fraction),
                        ("--hard-negatives", args.hard_negatives)):
        if not 0.0 <= share <= 1.0:
            raise ReadingRoomError(f"{flag} is a share of the training data: give a number from 0 to 1, not {share}")
    defaults = {"ich": (320, 200, 32), "cxr": (1000, 250, 32)}[args.task]
    workers = (1 if args.stream_workers is None else args.stream_workers) if args.task == "ich" else 0
    minutes = args.minutes or (30.0 if args.task == "ich" else 90.0)
    cpu_minutes = args.cpu_minutes or (2 * minutes if workers else 30.0)
    if args.rethreshold:
        card = rethreshold(args.task, args.out, args.target_sensitivity, args.val_seed, args.n_val or defaults[1])
        print(json.dumps({"model": card["name"], "thresholds": card["thresholds"],
                          "validation": card["metrics"]["validation"]}, indent=2))
        return 0
    card = train(args.task, seed=args.seed, val_seed=args.val_seed, n_train=args.n_train or defaults[0],
                 n_val=args.n_val or defaults[1], minutes=minutes, batch=args.batch or defaults[2], lr=args.lr,
                 threads=args.threads or (1 if workers else 2), out_dir=args.out,
                 target_sensitivity=args.target_sensitivity,
                 progress=not args.quiet, cpu_minutes=cpu_minutes, resume=args.resume, stream_workers=workers,
                 arch={"stem": args.stem} if args.stem else None, val_every=args.val_every,
                 map_weight=args.map_weight if args.task == "ich" else 0.0, balance=args.balance,
                 real_fraction=args.real_fraction, hard_negatives=args.hard_negatives,
                 ema=args.ema, small_share=args.small_share,
                 precision=args.precision or ("bf16" if args.task == "ich" else "fp32"))
    print(json.dumps({"model": card["name"], "minutes": card["training"]["minutes"],
                      "cpu_minutes": card["training"]["cpu_minutes"],
                      "validation": card["metrics"]["validation"]}, indent=2))
    return 0
