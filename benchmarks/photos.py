"""Few-shot on photos with pretrained EfficientNet-Lite: MPEG-7 silhouettes (cross-domain), Omniglot.

    flock /work/bench.lock python benchmarks/photos.py --stage STAGE [--tasks 1000]

Stages (each prints a JSON line and appends it to runs/bench-photos/results.jsonl; the markdown
table in benchmarks/results/photos.md is written from that file by ``--stage report``):

* ``throughput``: feature extraction images/s at 224 px (decode + preprocess + network, and the
  network alone), on the current torch thread count.
* ``preprocess``: frozen centroid accuracy for normalisation (tf / imagenet) x crop (1.0 / 0.875),
  on the TUNING classes only (MPEG-7 minus ``HELDOUT_MPEG7``): how the defaults were chosen.
* ``heads``: all 70 classes, fixed tasks, 5w1s and 20w1s: frozen centroid, SimpleShot centring
  (mean of the classes not in the task), transductive centring, logistic head; CPU s per task.
* ``openset``: known-vs-unknown AUROC of distance-to-prototype rejection.
* ``finetune`` / ``metatrain``: adaptation of the network itself (see their docstrings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fewshot.data import LabeledDataset  # noqa: E402
from fewshot.data.images import IMAGE_SUFFIXES  # noqa: E402
from fewshot.engine.features import ImageEmbedder  # noqa: E402
from fewshot.methods.simpleshot import centroid_scores, logistic_scores  # noqa: E402
from fewshot.tasks.episodes import TaskSet  # noqa: E402

DATA = Path(os.environ.get("FEWSHOT_DATA") or HERE.parent.parent / "shared" / "data")
RUNS = Path("runs/bench-photos")
#: MPEG-7 classes never used to choose a setting (preprocessing, C, steps...): chosen before any run.
HELDOUT_MPEG7 = ("apple", "bat", "beetle", "camel", "device0", "fork", "hammer", "octopus", "spoon", "turtle")


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def folder_files(root: Path, exclude: tuple[str, ...] = ()) -> tuple[list[Path], torch.Tensor, list[str]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and d.name not in exclude)
    paths, labels = [], []
    for c, d in enumerate(classes):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [c] * len(files)
    return paths, torch.tensor(labels), [d.name for d in classes]


def as_dataset(labels: torch.Tensor, names: list[str]) -> LabeledDataset:
    return LabeledDataset(torch.arange(len(labels))[:, None], labels, names)


def record(row: dict) -> None:
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(), **row}
    print(json.dumps(row), flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    with open(RUNS / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def evaluate_heads(feats: torch.Tensor, labels: torch.Tensor, names: list[str], heads: dict, way: int, shot: int,
                   query: int, tasks: int, seed: int = 0) -> dict:
    """Mean accuracy and 95% CI of each head over fixed tasks; CPU seconds per task."""
    ds = as_dataset(labels, names)
    taskset = TaskSet.generate(ds, way, shot, query, tasks, seed=seed)
    class_sum = torch.zeros(len(names), feats.shape[1]).index_add_(0, labels, feats)
    class_n = torch.bincount(labels, minlength=len(names)).float()
    out = {}
    for head_name, head in heads.items():
        accs, c0 = [], cpu()
        for t in taskset:
            s_idx = torch.tensor(t.support).reshape(-1)
            q_idx = torch.tensor(t.query).reshape(-1)
            s_y = torch.arange(way).repeat_interleave(shot)
            q_y = torch.arange(way).repeat_interleave(query)
            classes = torch.tensor(t.classes)
            # SimpleShot's base statistics: the mean feature of every class NOT in this task.
            base_mean = (class_sum.sum(0) - class_sum[classes].sum(0)) / (class_n.sum() - class_n[classes].sum())
            scores = head(feats[s_idx], s_y, feats[q_idx], base_mean)
            accs.append((scores.argmax(1) == q_y).float().mean().item())
        a = np.array(accs)
        out[head_name] = {"acc": float(a.mean()), "ci95": float(1.96 * a.std(ddof=1) / np.sqrt(len(a))),
                          "cpu_s_per_task": (cpu() - c0) / len(a)}
    return out


HEADS = {
    "frozen centroid (L2N)": lambda s, sy, q, m: centroid_scores(s, sy, q),
    "SimpleShot CL2N (base-class mean)": lambda s, sy, q, m: centroid_scores(s, sy, q, mean=m),
    "transductive CL2N (task mean)": lambda s, sy, q, m: centroid_scores(s, sy, q, mean=torch.cat([s, q]).mean(0)),
    "logistic head on CL2N": lambda s, sy, q, m: logistic_scores(s, sy, q, mean=m),
}


def stage_throughput(args) -> None:
    paths, _, _ = folder_files(DATA / "images" / "mpeg7")
    paths = paths[: args.images]
    emb = ImageEmbedder("efficientnet_lite0", cache=False, batch_size=32, progress=False)
    x = torch.randint(0, 256, (64, 3, 224, 224), dtype=torch.uint8)
    emb.embed_tensor(x[:32])  # warm-up
    t0, c0 = time.perf_counter(), cpu()
    emb.embed_tensor(x)
    net = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "images": 64}
    t0, c0 = time.perf_counter(), cpu()
    emb.embed_files(paths)
    full = {"wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0, "images": len(paths)}
    cache_dir = RUNS / "cache-throughput"
    cached = ImageEmbedder("efficientnet_lite0", cache_dir=cache_dir, progress=False)
    cached.embed_files(paths)
    t0 = time.perf_counter()
    cached.embed_files(paths)
    second = time.perf_counter() - t0
    record({"stage": "throughput", "network_img_s": 64 / net["wall_s"], "end_to_end_img_s": len(paths) / full["wall_s"],
            "second_run_s": second, "net": net, "full": full, "load": os.getloadavg()})


def embed_all(norm: str, crop: float, exclude: tuple[str, ...] = (), backbone: str = "efficientnet_lite0"):
    paths, labels, names = folder_files(DATA / "images" / "mpeg7", exclude)
    emb = ImageEmbedder(backbone, normalization=norm, crop=crop, cache_dir=RUNS / "cache", progress=False)
    c0 = cpu()
    feats = emb.embed_files(paths)
    return feats, labels, names, cpu() - c0


def stage_preprocess(args) -> None:
    load0 = os.getloadavg()
    for norm in ("tf", "imagenet"):
        for crop in (1.0, 0.875):
            feats, labels, names, secs = embed_all(norm, crop, exclude=HELDOUT_MPEG7)
            res = {}
            for way in (5, 20):
                res[f"{way}w1s"] = evaluate_heads(feats, labels, names, {"centroid": HEADS["frozen centroid (L2N)"]},
                                                  way, 1, 15, args.tasks)["centroid"]
            record({"stage": "preprocess", "norm": norm, "crop": crop, "classes": len(names), "embed_cpu_s": secs,
                    "tasks": args.tasks, **res, "load": [load0, os.getloadavg()]})


def stage_heads(args) -> None:
    load0 = os.getloadavg()
    feats, labels, names, secs = embed_all(args.norm, args.crop, backbone=args.backbone)
    for way in (5, 20):
        res = evaluate_heads(feats, labels, names, HEADS, way, 1, 15, args.tasks)
        record({"stage": "heads", "backbone": args.backbone, "norm": args.norm, "crop": args.crop, "way": way, "shot": 1,
                "query": 15, "tasks": args.tasks, "classes": len(names), "embed_cpu_s": secs, "heads": res,
                "load": [load0, os.getloadavg()]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--norm", default="tf")
    ap.add_argument("--crop", type=float, default=1.0)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    globals()[f"stage_{args.stage}"](args)


if __name__ == "__main__":
    main()
