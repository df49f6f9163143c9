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
* ``omniglot``: the 6 held-out Omniglot alphabets, frozen features, on protonet_omniglot.md's tasks.
* ``finetune`` / ``metatrain`` / ``omniglot_metatrain``: adaptation of the network itself (see their
  docstrings); ``omniglot_metatrain`` meta-trains on Omniglot's other 24 background alphabets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from fewshot.data import LabeledDataset  # noqa: E402
from fewshot.data.images import IMAGE_SUFFIXES  # noqa: E402
from fewshot.engine.features import ImageEmbedder, image_embedder  # noqa: E402
from fewshot.methods.frozen import centroid_scores, logistic_scores, power_transform, soft_kmeans_scores  # noqa: E402
from fewshot.nn.efficientnet import EfficientNetLite, fold_batchnorm  # noqa: E402
from fewshot.tasks.episodes import TaskSet  # noqa: E402

DATA = Path(os.environ.get("FEWSHOT_DATA") or HERE.parent.parent / "shared" / "data")
RUNS = Path("runs/bench-photos")
#: MPEG-7 classes never used to choose a setting (preprocessing, C, steps...): chosen before any run.
HELDOUT_MPEG7 = ("apple", "bat", "beetle", "camel", "device0", "fork", "hammer", "octopus", "spoon", "turtle")


from fewshot.utils import process_cpu_seconds as cpu  # noqa: E402


def folder_files(root: Path, exclude: tuple[str, ...] = ()) -> tuple[list[Path], torch.Tensor, list[str]]:
    classes = sorted(d for d in root.iterdir() if d.is_dir() and d.name not in exclude)
    paths, labels = [], []
    for c, d in enumerate(classes):
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [c] * len(files)
    return paths, torch.tensor(labels), [d.name for d in classes]


def as_dataset(labels: torch.Tensor, names: list[str], groups: torch.Tensor | None = None) -> LabeledDataset:
    return LabeledDataset(torch.arange(len(labels))[:, None], labels, names, groups,
                          None if groups is None else [str(g) for g in range(int(groups.max()) + 1)])


def record(row: dict) -> None:
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(), **row}
    print(json.dumps(row), flush=True)
    RUNS.mkdir(parents=True, exist_ok=True)
    with open(RUNS / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def evaluate_heads(feats: torch.Tensor, labels: torch.Tensor, names: list[str], heads: dict, way: int, shot: int,
                   query: int, tasks: int, seed: int = 0, groups: torch.Tensor | None = None,
                   within: str | None = None) -> dict:
    """Mean accuracy and 95% CI of each head over fixed tasks; CPU seconds per task."""
    ds = as_dataset(labels, names, groups)
    taskset = TaskSet.generate(ds, way, shot, query, tasks, within=within, seed=seed)
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
    "power transform + L2N": lambda s, sy, q, m: centroid_scores(power_transform(s), sy, power_transform(q)),
    "power transform + transductive soft k-means": lambda s, sy, q, m: soft_kmeans_scores(s, sy, q),
}
#: ``--heads`` names (the table keeps the long ones).
HEAD_KEYS = dict(zip(("l2n", "cl2n", "task-cl2n", "logistic", "pt-l2n", "pt-softkmeans"), HEADS))


def chosen_heads(arg: str) -> dict:
    keys = [k.strip() for k in arg.split(",") if k.strip()] if arg != "all" else list(HEAD_KEYS)
    unknown = [k for k in keys if k not in HEAD_KEYS]
    if unknown:
        raise SystemExit(f"unknown --heads {unknown}; choose from {', '.join(HEAD_KEYS)} or all")
    return {HEAD_KEYS[k]: HEADS[HEAD_KEYS[k]] for k in keys}


def stage_throughput(args) -> None:
    """Images/s and images per CPU-second: the network alone for each extraction variant (BatchNorm
    unfolded / folded, float32 / bfloat16 autocast), decoding + resizing alone, and end to end."""
    from fewshot.data.photos import load_photo, to_network_input

    load0 = os.getloadavg()
    paths, _, _ = folder_files(DATA / "images" / "mpeg7")
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]  # every class, not the first ten
    x = torch.randint(0, 256, (64, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def timed(fn) -> dict:
        t0, c0 = time.perf_counter(), cpu()
        fn()
        wall, secs = time.perf_counter() - t0, cpu() - c0
        return {"wall_s": wall, "cpu_s": secs}

    rows = {}
    f32 = ImageEmbedder("efficientnet_lite0", cache=False, precision="float32", progress=False)
    bf16 = ImageEmbedder("efficientnet_lite0", cache=False, precision="bfloat16", progress=False)

    def unfolded():
        with torch.inference_mode():
            for i in range(0, len(x), f32.batch_size):
                f32.model.features(f32.normalize(x[i:i + f32.batch_size]))

    for name, fn in (("network, BatchNorm unfolded, float32", unfolded),
                     ("network, BatchNorm folded, float32", lambda: f32.embed_tensor(x)),
                     ("network, BatchNorm folded, bfloat16 autocast", lambda: bf16.embed_tensor(x))):
        fn()  # warm-up
        rows[name] = {**timed(fn), "images": len(x)}
    rows["decode + resize (MPEG-7 GIFs), no network"] = {
        **timed(lambda: [to_network_input(load_photo(p), 224) for p in paths]), "images": len(paths)}
    for label, emb in (("float32", f32), ("bfloat16", bf16)):
        rows[f"decode + resize + network, {label}"] = {**timed(lambda emb=emb: emb.embed_files(paths)), "images": len(paths)}
    default = ImageEmbedder("efficientnet_lite0", cache=False, progress=False).precision
    cached = ImageEmbedder("efficientnet_lite0", cache_dir=RUNS / "cache-throughput", progress=False)
    cached.embed_files(paths)
    rows["second run over the same files (feature cache)"] = {**timed(lambda: cached.embed_files(paths)), "images": len(paths)}
    record({"stage": "throughput", "batch_size": f32.batch_size, "default_precision": default, "rows": rows,
            "load": [load0, os.getloadavg()]})


def embed_all(norm: str, crop: float, exclude: tuple[str, ...] = (), backbone: str = "efficientnet_lite0",
              precision: str = "float32"):
    paths, labels, names = folder_files(DATA / "images" / "mpeg7", exclude)
    emb = image_embedder(backbone, normalization=norm, crop=crop, precision=precision, cache_dir=RUNS / "cache",
                         progress=False)
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
    feats, labels, names, secs = embed_all(args.norm, args.crop, backbone=args.backbone, precision=args.precision)
    for way in (5, 20):
        res = evaluate_heads(feats, labels, names, chosen_heads(args.heads), way, 1, 15, args.tasks)
        record({"stage": "heads", "backbone": args.backbone, "precision": args.precision, "norm": args.norm,
                "crop": args.crop, "way": way, "shot": 1,
                "query": 15, "tasks": args.tasks, "classes": len(names), "embed_cpu_s": secs, "heads": res,
                "load": [load0, os.getloadavg()]})


#: The heads of the Omniglot stages (``omniglot``, ``omniglot_metatrain``).
OMNIGLOT_HEADS = {k: HEADS[k] for k in ("frozen centroid (L2N)", "SimpleShot CL2N (base-class mean)",
                                        "transductive CL2N (task mean)")}
#: The Omniglot tasks (protonet_omniglot.md's protocol): (within, way, shot); 5 queries, seed 0.
OMNIGLOT_TASKS = [(within, way, shot) for within in (None, "alphabet") for way, shot in ((5, 1), (5, 5), (20, 1), (20, 5))]


def omniglot_photos(x: torch.Tensor) -> list:
    """Omniglot images ``uint8 [B, 1, H, W]`` (stored ink = 255) as the page was drawn: black ink on
    white, as PIL images (what the photo path sees)."""
    from PIL import Image

    return [Image.fromarray(255 - a[0].numpy()) for a in x]


def cached_safetensors(path: Path, compute: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], float | None]:
    """``compute()`` once and save it at ``path`` (safetensors); later calls load it. Returns the
    tensors and the CPU seconds ``compute`` took (``None``: loaded from ``path``)."""
    from safetensors.torch import load_file, save_file

    if path.exists():
        return load_file(str(path)), None
    c0 = cpu()
    t = {k: v.contiguous() for k, v in compute().items()}
    secs = cpu() - c0
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path))
    return t, secs


def stage_omniglot(args) -> None:
    """The held-out Omniglot alphabets through the pretrained path, on the protocol of
    protonet_omniglot.md (1000 tasks, 5 queries, seed 0, all held-out alphabets or one alphabet)."""
    from fewshot.data import load_omniglot

    load0 = os.getloadavg()
    ds = load_omniglot("background", data_dir=str(DATA), image_size=105, alphabets=["heldout"], cache=False)

    def embed() -> dict[str, torch.Tensor]:
        emb = ImageEmbedder("efficientnet_lite0", normalization=args.norm, crop=args.crop, cache=False, progress=False)
        return {"features": torch.cat([emb.embed_images(omniglot_photos(ds.x[i:i + 64])) for i in range(0, len(ds), 64)])}

    t, secs = cached_safetensors(RUNS / f"omniglot-heldout-{args.norm}-{args.crop}.safetensors", embed)
    for within, way, shot in OMNIGLOT_TASKS:
        res = evaluate_heads(t["features"], ds.y, ds.class_names, OMNIGLOT_HEADS, way, shot, 5, args.tasks,
                             groups=ds.groups, within=within)
        record({"stage": "omniglot", "way": way, "shot": shot, "within": within, "tasks": args.tasks, "images": len(ds),
                "embed_cpu_s": float("nan") if secs is None else secs, "heads": res, "load": [load0, os.getloadavg()]})


# ---------------------------------------------------------------------------- adaptation of the network
def trunk_activations(model: EfficientNetLite, normalize: Callable[[torch.Tensor], torch.Tensor],
                      batches: Iterable[torch.Tensor], starts: Sequence[int], precision: str = "float32") -> dict[str, torch.Tensor]:
    """The frozen trunk's activations and features of ``uint8 [B, 3, R, R]`` image batches.

    Returns ``trunk{s}``: ``model.trunk(x, s)`` ``[N, C, h, w]`` for each block ``s`` of ``starts``
    (ascending), and ``features``: ``model.tail(trunk, starts[-1])`` ``[N, dim]``, float32. The
    trunk never trains, so it runs BatchNorm-folded (the same activations to float rounding;
    ``precision="bfloat16"``: under bf16 autocast, cast back to float32); the features come from
    ``model`` itself, the function that meta-training and fine-tuning adapt.
    """
    if list(starts) != sorted(set(starts)) or not starts:
        raise ValueError(f"starts must be ascending distinct block indices; got {list(starts)}")
    net = fold_batchnorm(model)
    out: dict[str, list[torch.Tensor]] = {**{f"trunk{s}": [] for s in starts}, "features": []}
    with torch.inference_mode():
        for x in batches:
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
                h = net.trunk(normalize(x), starts[0])
                hs = [h]
                for a, b in zip(starts, starts[1:]):
                    for blk in net.blocks[a:b]:
                        h = blk(h)
                    hs.append(h)
            for s, h in zip(starts, hs):
                out[f"trunk{s}"].append(h.float().contiguous())
            out["features"].append(model.tail(hs[-1].float(), starts[-1]))
    return {k: torch.cat(v) for k, v in out.items()}


def pixels_and_trunks(norm: str, crop: float, starts=(12, 15)):
    """Preprocessed MPEG-7 ``uint8 [N, 3, 224, 224]``, trunk activations at each ``start`` and the
    frozen features, cached in the run folder (safetensors)."""
    from fewshot.data.photos import load_photo, to_network_input

    paths, labels, names = folder_files(DATA / "images" / "mpeg7")
    emb = ImageEmbedder("efficientnet_lite0", normalization=norm, crop=crop, cache=False)
    pix = torch.stack([to_network_input(load_photo(p), 224, crop) for p in paths])
    batches = (pix[i:i + emb.batch_size] for i in range(0, len(pix), emb.batch_size))
    t, secs = cached_safetensors(RUNS / f"trunks-{norm}-{crop}.safetensors",
                                 lambda: trunk_activations(emb.model, emb.normalize, batches, starts))
    if secs is not None:
        record({"stage": "trunks", "cpu_s": secs, "images": len(pix)})
    return emb, pix, t, labels, names


def split_base_novel(names: list[str], seed: int = 0) -> tuple[list[int], list[int]]:
    """Novel = the held-out classes plus others drawn by ``seed``, half the classes in all (35 of
    MPEG-7's 70); base = the rest."""
    held = [i for i, n in enumerate(names) if n in HELDOUT_MPEG7]
    rest = [i for i in range(len(names)) if i not in held]
    rng = np.random.default_rng(seed)
    novel = sorted(held + rng.choice(rest, len(names) // 2 - len(held), replace=False).tolist())
    return [i for i in range(len(names)) if i not in novel], novel


def stage_finetune(args) -> None:
    """Per-task fine-tuning of the last blocks on the augmented support (P>M>F's "F"), on the first
    ``--tasks`` of the fixed 5w1s tasks (all 70 classes). The trunk activations of every image are
    computed once (``pixels_and_trunks``) and shared by all tasks; ``--augment features`` makes the
    pseudo-queries from them (:func:`feature_map_augment`), ``pixels`` runs the trunk on
    ``--copies`` augmented photos per support image in every task."""
    from fewshot.methods.pmf import finetune_on_activations, finetune_on_support

    load0 = os.getloadavg()
    emb, pix, t, labels, names = pixels_and_trunks(args.norm, args.crop)
    start = args.start
    h_all = t[f"trunk{start}"]
    ds = as_dataset(labels, names)
    for way in [int(w) for w in args.ways.split(",")]:
        taskset = TaskSet.generate(ds, way, 1, 15, args.tasks, seed=0)
        accs, c0 = {"L2N": [], "transductive CL2N": [], "power transform + transductive soft k-means": []}, cpu()
        for t_ in taskset:
            s_idx = torch.tensor(t_.support).reshape(-1)
            q_idx = torch.tensor(t_.query).reshape(-1)
            s_y, q_y = torch.arange(way), torch.arange(way).repeat_interleave(15)
            if args.augment == "features":
                model = finetune_on_activations(emb.model, h_all[s_idx], s_y, start=start, steps=args.steps, lr=args.lr,
                                                copies=args.copies)
            else:
                model = finetune_on_support(emb.model, pix[s_idx], s_y, emb.normalize, start=start, steps=args.steps,
                                            lr=args.lr, copies=args.copies, augment="pixels")
            with torch.inference_mode():
                fs = model.tail(h_all[s_idx], start)
                fq = model.tail(h_all[q_idx], start)
            for name, scores in (("L2N", centroid_scores(fs, s_y, fq)),
                                 ("transductive CL2N", centroid_scores(fs, s_y, fq, mean=torch.cat([fs, fq]).mean(0))),
                                 ("power transform + transductive soft k-means", soft_kmeans_scores(fs, s_y, fq))):
                accs[name].append((scores.argmax(1) == q_y).float().mean().item())
        n = len(taskset)
        res = {name: {"acc": float(np.mean(a)), "ci95": float(1.96 * np.std(a, ddof=1) / np.sqrt(n))}
               for name, a in accs.items()}
        record({"stage": "finetune", "way": way, "shot": 1, "tasks": n, "start": start, "steps": args.steps, "lr": args.lr,
                "copies": args.copies, "augment": args.augment, "cpu_s_per_task": (cpu() - c0) / n, **res,
                "load": [load0, os.getloadavg()]})


def stage_metatrain(args) -> None:
    """Episodic ProtoNet training of the last blocks on 35 base classes (P>M>F's "M"); the frozen
    and meta-trained networks are compared on the same fixed tasks from the 35 novel classes."""
    from fewshot.methods.pmf import meta_train

    load0 = os.getloadavg()
    emb, pix, t, labels, names = pixels_and_trunks(args.norm, args.crop)
    start, train_way = args.start, args.train_way or 5
    base, novel = split_base_novel(names)
    is_base = torch.isin(labels, torch.tensor(base))
    base_idx, novel_idx = torch.nonzero(is_base).squeeze(1), torch.nonzero(~is_base).squeeze(1)
    remap = torch.full((len(names),), -1, dtype=torch.long)
    remap[torch.tensor(base)] = torch.arange(len(base))
    c0 = cpu()
    model = meta_train(emb.model, t[f"trunk{start}"][base_idx], remap[labels[base_idx]], start=start, way=train_way,
                       shot=1, query=args.query, episodes=args.episodes, lr=args.lr)
    train_cpu = cpu() - c0
    with torch.inference_mode():
        meta_feats = torch.cat([model.tail(t[f"trunk{start}"][i:i + 64], start) for i in range(0, len(labels), 64)])
    frozen = t["features"]
    nremap = torch.full((len(names),), -1, dtype=torch.long)
    nremap[torch.tensor(novel)] = torch.arange(len(novel))
    for way in (5, 20):
        rows = {}
        for label, feats in (("frozen", frozen), ("meta-trained", meta_feats)):
            base_mean = feats[base_idx].mean(0)
            heads = {f"{label} L2N": lambda s, sy, q, m: centroid_scores(s, sy, q),
                     f"{label} CL2N (base mean)": lambda s, sy, q, m, bm=base_mean: centroid_scores(s, sy, q, mean=bm)}
            rows.update(evaluate_heads(feats[novel_idx], nremap[labels[novel_idx]], [names[i] for i in novel], heads,
                                       way, 1, 15, args.tasks))
        record({"stage": "metatrain", "way": way, "shot": 1, "tasks": args.tasks, "start": start, "episodes": args.episodes,
                "train_way": train_way, "lr": args.lr, "train_cpu_s": train_cpu, "novel_classes": len(novel),
                "heads": rows, "load": [load0, os.getloadavg()]})
    from safetensors.torch import save_file

    save_file({"features": meta_feats.contiguous()}, str(RUNS / f"meta-features-{start}-{args.episodes}.safetensors"))


def spread_classes(num_classes: int, k: int) -> list[int]:
    """``k`` class ids evenly spaced over ``0..num_classes - 1`` (classes sorted by alphabet: every
    alphabet keeps some); ``k = 0``: all of them."""
    if not 0 <= k <= num_classes:
        raise SystemExit(f"--base-classes must be in 0..{num_classes} (0: all); got {k}")
    return list(range(num_classes)) if k == 0 else np.linspace(0, num_classes - 1, k).round().astype(int).tolist()


def omniglot_trunks(emb: ImageEmbedder, ds: LabeledDataset, split: str, start: int, precision: str):
    """Trunk activations at block ``start`` and frozen features of an Omniglot set (black on white,
    like stage ``omniglot``), cached as ``RUNS/omniglot-trunks-SPLIT-NORM-CROP-START[-PRECISION]``.
    Returns the tensors and the CPU seconds of their extraction (``None``: cached)."""
    from fewshot.data.photos import to_rgb

    suffix = "" if precision == "float32" else f"-{precision}"
    path = RUNS / f"omniglot-trunks-{split}-{emb.normalization}-{emb.crop}-{start}{suffix}.safetensors"
    batches = (emb.preprocess([to_rgb(im) for im in omniglot_photos(ds.x[i:i + emb.batch_size])])
               for i in range(0, len(ds), emb.batch_size))
    t, secs = cached_safetensors(path, lambda: trunk_activations(emb.model, emb.normalize, batches, [start], precision))
    if len(t["features"]) != len(ds):
        raise SystemExit(f"{path} holds {len(t['features'])} images, the {split} set {len(ds)}: delete it to recompute")
    return t, secs


def stage_omniglot_metatrain(args) -> None:
    """P>M>F's "M" on Omniglot: episodic ProtoNet training of ``blocks[--start:]`` + head on the
    background alphabets minus the 6 held-out ones (the base classes the Conv4 ProtoNet of
    protonet_omniglot.md trains on; ``--base-classes K``: K of them, evenly spaced), then the frozen
    and meta-trained networks on stage ``omniglot``'s tasks and heads. Trunk activations of both
    sets are computed once (cached; ``--precision bfloat16`` extracts them under bf16 autocast)."""
    from safetensors.torch import save_file

    from fewshot.data import load_omniglot
    from fewshot.methods.pmf import meta_train

    load0 = os.getloadavg()
    start, train_way = args.start, args.train_way or 20
    full = load_omniglot("background", data_dir=str(DATA), image_size=105, exclude_alphabets=["heldout"], cache=False)
    base = full.subset_classes(spread_classes(full.num_classes, args.base_classes))
    held = load_omniglot("background", data_dir=str(DATA), image_size=105, alphabets=["heldout"], cache=False)
    split = "base" if args.base_classes == 0 else f"base{args.base_classes}"
    emb = ImageEmbedder("efficientnet_lite0", normalization=args.norm, crop=args.crop, cache=False, progress=False)
    tb, base_secs = omniglot_trunks(emb, base, split, start, args.precision)
    th, held_secs = omniglot_trunks(emb, held, "heldout", start, args.precision)
    c0 = cpu()
    model = meta_train(emb.model, tb[f"trunk{start}"], base.y, start=start, way=train_way, shot=1, query=args.query,
                       episodes=args.episodes, lr=args.lr)
    train_cpu = cpu() - c0
    with torch.inference_mode():
        h = th[f"trunk{start}"]
        meta = torch.cat([model.tail(h[i:i + 64], start) for i in range(0, len(h), 64)])
    save_file({"features": meta.contiguous()}, str(RUNS / f"omniglot-meta-features-{split}-{start}-{args.episodes}.safetensors"))
    for within, way, shot in OMNIGLOT_TASKS:
        rows = {label: evaluate_heads(feats, held.y, held.class_names, OMNIGLOT_HEADS, way, shot, 5, args.tasks,
                                      groups=held.groups, within=within)
                for label, feats in (("frozen", th["features"]), ("meta-trained", meta))}
        record({"stage": "omniglot_metatrain", "way": way, "shot": shot, "within": within, "tasks": args.tasks,
                "start": start, "episodes": args.episodes, "train_way": train_way, "train_shot": 1, "query": args.query,
                "lr": args.lr, "precision": args.precision, "base_classes": base.num_classes, "base_images": len(base),
                "heldout_images": len(held), "extract_cpu_s": {"base": base_secs, "heldout": held_secs},
                "train_cpu_s": train_cpu, "heads": rows, "load": [load0, os.getloadavg()]})


def stage_openset(args) -> None:
    """Known-vs-unknown by distance to the nearest prototype: threshold calibrated on tasks from
    the 35 base classes (95% of known queries accepted), applied to tasks from the 35 novel ones."""
    from fewshot.methods.frozen import auroc, calibrate_threshold, unknown_score

    feats, labels, names, _ = embed_all(args.norm, args.crop)
    base, novel = split_base_novel(names)
    out = {}
    for label, classes in (("calibration (base)", base), ("test (novel)", novel)):
        sub = torch.isin(labels, torch.tensor(classes))
        idx = torch.nonzero(sub).squeeze(1)
        remap = torch.full((len(names),), -1, dtype=torch.long)
        remap[torch.tensor(classes)] = torch.arange(len(classes))
        y = remap[labels[idx]]
        f = feats[idx]
        ds = as_dataset(y, [names[c] for c in classes])
        # 5 known classes (1 shot, 15 queries each) + 5 unknown classes (15 queries each, no support)
        taskset = TaskSet.generate(ds, 10, 1, 15, args.tasks, seed=1)
        known, unknown, aucs, corrects = [], [], [], []
        for t in taskset:
            s_idx = torch.tensor(t.support[:5]).reshape(-1)
            qk = torch.tensor(t.query[:5]).reshape(-1)
            qu = torch.tensor(t.query[5:]).reshape(-1)
            m = f[~torch.isin(y, torch.tensor(t.classes))].mean(0)  # base statistics: no class of the task, known or unknown
            sk = centroid_scores(f[s_idx], torch.arange(5), f[qk], mean=m)
            su = centroid_scores(f[s_idx], torch.arange(5), f[qu], mean=m)
            known.append(unknown_score(sk).numpy())
            unknown.append(unknown_score(su).numpy())
            corrects.append((sk.argmax(1) == torch.arange(5).repeat_interleave(15)).numpy())
            aucs.append(auroc(known[-1], unknown[-1]))
        k, u = np.concatenate(known), np.concatenate(unknown)
        out[label] = {"auroc_per_task": float(np.mean(aucs)), "auroc_pooled": auroc(k, u), "known": k, "unknown": u,
                      "closed_acc": float(np.concatenate(corrects).mean())}
    thr = calibrate_threshold(out["calibration (base)"]["known"], 0.95)
    test = out["test (novel)"]
    record({"stage": "openset", "tasks": args.tasks, "threshold": thr,
            "calibration_auroc_per_task": out["calibration (base)"]["auroc_per_task"],
            "test_auroc_per_task": test["auroc_per_task"], "test_auroc_pooled": test["auroc_pooled"],
            "test_known_accepted": float((test["known"] <= thr).mean()),
            "test_unknown_rejected": float((test["unknown"] > thr).mean()), "test_closed_acc": test["closed_acc"]})


# ---------------------------------------------------------------------------- report
def pct(r: dict) -> str:
    return f"{100 * r['acc']:.2f} ± {100 * r['ci95']:.2f}"


def conv4_reference() -> dict[tuple[str, str, str], str]:
    """Conv4 ProtoNet accuracies from protonet_omniglot.md: (setting, task, from) -> accuracy %."""
    ref = {}
    proto = HERE / "results" / "protonet_omniglot.md"
    if proto.exists():
        for line in proto.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) >= 6 and cells[0] in ("minimal", "original"):
                ref[(cells[0], cells[2], cells[3])] = cells[4]
    return ref


def stage_report(args) -> None:
    """benchmarks/results/photos.md from the latest row of each measurement in results.jsonl."""
    rows = [json.loads(line) for line in open(RUNS / "results.jsonl")]

    def latest(**match):
        hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        return hits[-1] if hits else None

    out = ["# Few-shot on photos: pretrained EfficientNet-Lite (MPEG-7 silhouettes, Omniglot)", "",
           "`benchmarks/photos.py` (stages named below; every run under `flock /work/bench.lock`). CPU: the",
           "shared 2-core machine, torch threads as listed; load averages (1/5/15 min) at start and end of each",
           "stage are in `runs/bench-photos/results.jsonl`. Accuracy: mean over fixed tasks ± 95% CI, 15",
           "queries per class (Omniglot: 5, as in protonet_omniglot.md). CPU s per task: process CPU time",
           "(user + system) of the classification step, features already extracted.", ""]
    t = latest(stage="throughput")
    if t and "rows" in t:
        out += ["## Feature extraction (stage `throughput`)", "",
                f"EfficientNet-Lite0 at 224 px, batch {t['batch_size']}, channels-last, inference mode, {t['threads']} "
                f"thread(s); load {t['load'][0][0]:.1f} at start, {t['load'][1][0]:.1f} at end. The extractor's default "
                f"precision on this CPU: {t['default_precision']} (bfloat16 where the CPU has native bf16 instructions).", "",
                "| what | images/s (wall) | images per CPU-second | wall s | CPU s | images |", "|---|---|---|---|---|---|"]
        for k, r in t["rows"].items():
            out.append(f"| {k} | {r['images'] / r['wall_s']:.1f} | {r['images'] / max(r['cpu_s'], 1e-9):.1f} | "
                       f"{r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['images']} |")
        out.append("")
    pre = [r for r in rows if r.get("stage") == "preprocess"]
    if pre:
        out += ["## Preprocessing (stage `preprocess`; tuning classes only)", "",
                f"Frozen L2-normalised centroid on the {pre[-1]['classes']} MPEG-7 classes outside `HELDOUT_MPEG7`, "
                f"{pre[-1]['tasks']} tasks each. `tf` = pixels to [-1, 1] (what the weights were trained with), "
                "`imagenet` = ImageNet mean/std; crop = fraction of the shorter side kept.", "",
                "| normalisation | crop | 5w1s % | 20w1s % | embedding CPU s |", "|---|---|---|---|---|"]
        seen = {}
        for r in pre:
            seen[(r["norm"], r["crop"])] = r
        for (n, c), r in seen.items():
            out.append(f"| {n} | {c} | {pct(r['5w1s'])} | {pct(r['20w1s'])} | {r['embed_cpu_s']:.0f} |")
        out.append("")
    def heads_of(way: int, backbone: str, precision: str = "float32"):
        """The latest result of each head (heads may come from separate ``--heads`` runs) over the
        1400 MPEG-7 images with this backbone and precision (rows before ``precision`` existed: float32)."""
        hits = [r for r in rows if r.get("stage") == "heads" and r["way"] == way and r.get("backbone") == backbone
                and r.get("precision", "float32") == precision]
        if not hits:
            return None, {}
        merged = {}
        for r in hits:
            if r["tasks"] == hits[-1]["tasks"]:
                merged.update(r["heads"])
        return hits[-1], merged

    (h5, hs5), (h20, hs20) = heads_of(5, "efficientnet_lite0"), heads_of(20, "efficientnet_lite0")
    if h5 and h20:
        out += ["## MPEG-7, all 70 classes, training-free (stage `heads`)", "",
                f"EfficientNet-Lite0 features ({h5['norm']}, crop {h5['crop']}, float32), {h5['tasks']} fixed tasks per "
                "setting (seed 0); extracting the 1400 images' features is a one-off cost (0 on a rerun: cache). "
                "SimpleShot's base statistics: the mean feature of all classes not in the task. Transductive heads "
                "also use the task's unlabelled queries. Power transform (Hu et al. 2021, PT-MAP): x ** 0.5 of the "
                "ReLU6-pooled features, then L2; soft k-means (Ren et al. 2018): prototypes refined 10 times with "
                "softmax(10 cos) query weights on power-transformed, task-centred, L2-normalised features. The power "
                "transform and soft k-means settings were chosen on the 35 base classes of `split_base_novel` "
                "(none of `HELDOUT_MPEG7`) and confirmed on the other 35 before this all-class run.", "",
                "| head | 5w1s % | CPU s/task | 20w1s % | CPU s/task |", "|---|---|---|---|---|"]
        for k in HEADS:
            if k in hs5 and k in hs20:
                a, b = hs5[k], hs20[k]
                out.append(f"| {k} | {pct(a)} | {a['cpu_s_per_task']:.4f} | {pct(b)} | {b['cpu_s_per_task']:.4f} |")
        out.append("")
    (g5, gs5), (g20, gs20) = heads_of(5, "efficientnet_lite0", "bfloat16"), heads_of(20, "efficientnet_lite0", "bfloat16")
    if g5 and g20 and hs5 and hs20:
        out += ["## bfloat16 features: the same accuracy? (stage `heads --precision bfloat16`)", "",
                f"The same {g5['tasks']} fixed tasks, EfficientNet-Lite0 features extracted under CPU bf16 autocast "
                f"(BatchNorm folded; extraction {g5['embed_cpu_s']:.0f} CPU s for the 1400 images, "
                f"{g5['threads']} threads) against float32.", "",
                "| head | float32 5w1s % | bfloat16 5w1s % | float32 20w1s % | bfloat16 20w1s % |", "|---|---|---|---|---|"]
        for k in HEADS:
            if all(k in d for d in (hs5, gs5, hs20, gs20)):
                out.append(f"| {k} | {pct(hs5[k])} | {pct(gs5[k])} | {pct(hs20[k])} | {pct(gs20[k])} |")
        out.append("")
    cols = ("frozen centroid (L2N)", "SimpleShot CL2N (base-class mean)", "power transform + transductive soft k-means")
    backbones = dict.fromkeys(["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
                              + [r["backbone"] for r in rows if r.get("stage") == "heads"])  # ensembles (A+B) too
    bb = [(b, heads_of(5, b, p), heads_of(20, b, p)) for b in backbones for p in ("float32", "bfloat16")]
    if sum(1 for _, x, y in bb if x[0] and y[0]) > 1:
        out += ["## Which shipped network (stage `heads --backbone`)", "",
                "| backbone | precision | tasks | " + " | ".join(f"{c} 5w1s %" for c in cols) + " | "
                + " | ".join(f"{c} 20w1s %" for c in cols) + " | embedding CPU s |",
                "|---|---|---|" + "---|" * (2 * len(cols) + 1)]
        for b, (a, ha), (_, hb) in bb:
            if a and hb:
                cells = [pct(ha[c]) if c in ha else "-" for c in cols] + [pct(hb[c]) if c in hb else "-" for c in cols]
                out.append(f"| {b} | {a.get('precision', 'float32')} | {a['tasks']} | " + " | ".join(cells)
                           + f" | {a['embed_cpu_s']:.0f} |")
        out.append("")
    m5, m20 = latest(stage="metatrain", way=5), latest(stage="metatrain", way=20)
    if m5 and m20:
        out += ["## What each step buys: frozen -> centred -> meta-trained (stage `metatrain`)", "",
                f"Base = 35 MPEG-7 classes, novel = the other 35 (the 10 held-out classes among them); tasks from "
                f"the novel classes only ({m5['tasks']} per setting). Meta-training: episodic ProtoNet (cosine, "
                f"{m5['train_way']}-way 1-shot) of blocks {m5['start']}-15 + head, {m5['episodes']} episodes, Adam "
                f"{m5['lr']}, trunk activations cached: {m5['train_cpu_s']:.0f} CPU s.", "",
                "| step | 5w1s % | 20w1s % |", "|---|---|---|"]
        for k in m5["heads"]:
            out.append(f"| {k} | {pct(m5['heads'][k])} | {pct(m20['heads'][k])} |")
        out.append("")
    ft = [r for r in rows if r.get("stage") == "finetune"]
    if ft:
        out += ["## Fine-tuning the last blocks on each support set (stage `finetune`)", "",
                "All 70 classes, the first tasks of the same fixed 5w1s task set as above; augmented copies of the "
                "support as pseudo-queries, cosine ProtoNet loss, Adam. `pixels`: the copies are augmented photos "
                "(affine, flip, brightness/contrast) run through the trunk in every task; `features`: flips and "
                "one-cell shifts of the support's cached trunk activations (`feature_map_augment`; every image's "
                "trunk activations computed once for all tasks).", "",
                "| blocks tuned | augment | steps | lr | copies | tasks | L2N % | transductive CL2N % | soft k-means % "
                "| CPU s/task |", "|---|---|---|---|---|---|---|---|---|---|"]
        skm = "power transform + transductive soft k-means"
        for r in ft:
            out.append(f"| {r['start']}-15 + head | {r.get('augment', 'pixels')} | {r['steps']} | {r['lr']} | {r['copies']} | "
                       f"{r['tasks']} | {pct(r['L2N'])} | {pct(r['transductive CL2N'])} | "
                       f"{pct(r[skm]) if skm in r else '-'} | {r['cpu_s_per_task']:.2f} |")
        out.append("")
    o = latest(stage="openset")
    if o:
        out += ["## Open set: is the query one of the task's classes? (stage `openset`)", "",
                f"5 known classes (1 shot) and 5 unknown ones per task, 15 queries per class, {o['tasks']} tasks; score = 1 − "
                "cosine to the nearest SimpleShot prototype. Threshold set on tasks from the 35 base classes to accept "
                "95% of known queries; measured on tasks from the 35 novel classes.", "",
                "| AUROC (calibration classes) | AUROC (test classes, per task) | AUROC (test, pooled) | known accepted | unknown rejected | closed-set accuracy |",
                "|---|---|---|---|---|---|",
                f"| {o['calibration_auroc_per_task']:.3f} | {o['test_auroc_per_task']:.3f} | {o['test_auroc_pooled']:.3f} | "
                f"{100 * o['test_known_accepted']:.1f}% | {100 * o['test_unknown_rejected']:.1f}% | {100 * o['test_closed_acc']:.1f}% |", ""]
    om = [r for r in rows if r.get("stage") == "omniglot"]
    if om:
        out += ["## Omniglot held-out alphabets through the pretrained path (stage `omniglot`)", "",
                "Same protocol as protonet_omniglot.md (1000 tasks, 5 queries, seed 0); images 105 px, black ink on white, "
                "resized to 224. Conv4 ProtoNet numbers copied from protonet_omniglot.md (trained on Omniglot).", "",
                "| task | from | frozen L2N % | SimpleShot CL2N % | transductive CL2N % | Conv4 ProtoNet, minimal % | Conv4 ProtoNet, original % |",
                "|---|---|---|---|---|---|---|"]
        ref = conv4_reference()
        last = {}
        for r in om:
            last[(r["way"], r["shot"], r["within"])] = r
        for (w, k, within), r in last.items():
            task, frm = f"{w}-way {k}-shot", "one alphabet" if within else "all held-out alphabets"
            hs = r["heads"]
            out.append(f"| {task} | {frm} | {pct(hs['frozen centroid (L2N)'])} | {pct(hs['SimpleShot CL2N (base-class mean)'])} | "
                       f"{pct(hs['transductive CL2N (task mean)'])} | {ref.get(('minimal', task, frm), '-')} | {ref.get(('original', task, frm), '-')} |")
        out.append("")
    omm = [r for r in rows if r.get("stage") == "omniglot_metatrain"]
    if omm:
        m = omm[-1]
        cfg = {k: m[k] for k in ("start", "episodes", "train_way", "query", "lr", "base_classes", "precision", "tasks")}
        last = {}
        for r in omm:
            if {k: r[k] for k in cfg} == cfg:  # the latest run's rows only
                last[(r["way"], r["shot"], r["within"])] = r
        # Extraction runs once (the trunks are cached): its cost is in the first run with these trunks.
        same = [r for r in omm if all(r[k] == m[k] for k in ("start", "precision", "base_classes"))]
        extract = {k: next((r["extract_cpu_s"][k] for r in reversed(same) if r["extract_cpu_s"][k] is not None), None)
                   for k in ("base", "heldout")}
        extract = ", ".join(f"{k} {v:.0f}" for k, v in extract.items() if v is not None) or "not recorded"
        tuned = f"blocks {m['start']}-15" if m["start"] < 15 else "block 15"
        loads = [r["load"] for r in last.values()]
        ref, short = conv4_reference(), ("L2N", "SimpleShot CL2N", "transductive CL2N")  # OMNIGLOT_HEADS, in order
        out += ["## Omniglot after episodic meta-training of the pretrained network (stage `omniglot_metatrain`)", "",
                f"P>M>F's \"M\": EfficientNet-Lite0 {tuned} + head trained by episodic ProtoNet (cosine, "
                f"{m['train_way']}-way 1-shot {m['query']}-query, {m['episodes']} episodes, Adam {m['lr']}) on "
                f"{m['base_classes']} background classes ({m['base_images']} images) of the 24 alphabets that are not held "
                f"out: the base classes of the Conv4 ProtoNet. Trunk activations at block {m['start']} ({m['precision']}) "
                f"are computed once per set and cached (extraction CPU s: {extract}); training "
                f"{m['train_cpu_s']:.0f} CPU s; {m['threads']} torch thread(s), load average {loads[0][0][0]:.1f} at start, "
                f"{loads[-1][1][0]:.1f} at end. "
                f"Then the same {m['tasks']} tasks and heads as the table above, on the frozen and the meta-trained "
                "features (frozen here: the same cached trunk activations through the untrained tail, the "
                "meta-trained network's starting point). Last column: "
                "the best meta-trained head minus the Conv4 ProtoNet (original), in points.", "",
                "| task | from | " + " | ".join(f"{step} {h} %" for step in ("frozen", "meta-trained") for h in short)
                + " | Conv4 ProtoNet, minimal % | Conv4 ProtoNet, original % | best meta-trained − Conv4 original |",
                "|---|---|" + "---|" * (2 * len(short) + 3)]
        for (w, k, within), r in last.items():
            task, frm = f"{w}-way {k}-shot", "one alphabet" if within else "all held-out alphabets"
            cells = [r["heads"][step][h] for step in ("frozen", "meta-trained") for h in OMNIGLOT_HEADS]
            orig = ref.get(("original", task, frm))
            best = max(r["heads"]["meta-trained"][h]["acc"] for h in OMNIGLOT_HEADS)
            gap = f"{100 * best - float(orig):+.2f}" if orig else "-"
            out.append(f"| {task} | {frm} | " + " | ".join(pct(x) for x in cells)
                       + f" | {ref.get(('minimal', task, frm), '-')} | {orig or '-'} | {gap} |")
        out.append("")
    (HERE / "results" / "photos.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", required=True)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--norm", default="tf")
    ap.add_argument("--crop", type=float, default=1.0)
    ap.add_argument("--backbone", default="efficientnet_lite0",
                    help="stage heads: a pretrained network or an ensemble A+B (features concatenated, see docs/photos.md)")
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"),
                    help="stages heads, omniglot_metatrain: the feature (trunk) extractor's precision (cached per precision)")
    ap.add_argument("--heads", default="all", help=f"stage heads: comma-separated, from {', '.join(HEAD_KEYS)} (default all)")
    ap.add_argument("--start", type=int, default=15, help="first block adapted (the ones before stay frozen)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--augment", default="features", choices=("features", "pixels"),
                    help="stage finetune: augment the cached trunk activations or the photos (trunk per copy)")
    ap.add_argument("--ways", default="5")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--train-way", type=int, default=None,
                    help="meta-training episodes' way (default: 5 for metatrain, 20 for omniglot_metatrain)")
    ap.add_argument("--base-classes", type=int, default=0,
                    help="stage omniglot_metatrain: train on K base classes, evenly spaced (0: all 741)")
    ap.add_argument("--query", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    globals()[f"stage_{args.stage}"](args)


if __name__ == "__main__":
    main()
