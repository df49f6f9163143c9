"""Simplified BPL (fewshot.bpl) on 20-way 1-shot within-alphabet tasks of background_small2,
the model learned from the strokes of background_small1 only; ProtoNet (Conv4, trained on
background_small1 images) on the same tasks.

    python benchmarks/bpl.py fit                       # model -> runs/bench-bpl/model.json
    python benchmarks/bpl.py run --variant full --tasks 10
    python benchmarks/bpl.py run --variant no_affine --tasks 5
    python benchmarks/bpl.py run --variant no_relations --tasks 5
    python benchmarks/bpl.py protonet --run runs/proto-small1 --tasks 10
    python benchmarks/bpl.py figures                   # stroke data, drawers, new types, new tokens (PNG)
    python benchmarks/bpl.py report                    # -> benchmarks/results/bpl.md

Tasks: ``TaskSet.generate(background_small2, way=20, shot=1, query=1, within="group", seed=0)``
(Lake-style: one query per class), saved as runs/bench-bpl/tasks.json; ProtoNet is scored on
the same item indices with `fewshot eval --task-file`. Every `run` records its process CPU time
(this process + its worker processes), the torch threads and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
DATA = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
VARIANTS = {"full": {}, "no_affine": {"affine": False}, "no_relations": {"relations": False}}


def cpu_seconds() -> float:
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def tasks_and_images(out: Path, n: int):
    from fewshot.data.omniglot import load_omniglot
    from fewshot.tasks.episodes import TaskSet

    ds = load_omniglot("background_small2", DATA, image_size=105)
    path = out / "tasks.json"
    ts = TaskSet.generate(ds, 20, 1, 1, max(n, 20), within="group", seed=0)
    if not path.exists():
        ts.save(path)
    ts = TaskSet.load(path)
    return ds, TaskSet(ts.tasks[:n], ts.meta)


def cmd_fit(args) -> None:
    from fewshot.bpl.model import BPLModel
    from fewshot.data.strokes import load_strokes

    t0 = cpu_seconds()
    drawings = load_strokes("background_small1", DATA, images=True)
    model = BPLModel.fit(drawings, primitives=args.primitives, seed=0)
    model.fit_ink(drawings[:: max(1, len(drawings) // 150)])
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.json")
    print(json.dumps({"cpu_s": cpu_seconds() - t0, "drawings": len(drawings), "ink_sd": model.ink_sd,
                      "ink_gain": model.ink_gain, "noise": model.noise}))


def cmd_run(args) -> None:
    from fewshot.bpl.classify import BPLClassifier, FitOptions
    from fewshot.bpl.model import BPLModel

    torch.set_num_threads(1)
    model = BPLModel.load(args.out / "model.json")
    ds, ts = tasks_and_images(args.out, args.tasks)
    opts = FitOptions(**VARIANTS[args.variant])
    clf = BPLClassifier(model, opts, workers=args.workers)
    load0, t0, w0 = os.getloadavg(), cpu_seconds(), time.perf_counter()
    rows = []
    for i, ep in enumerate(ts.episodes(ds)):
        c0, s0 = cpu_seconds(), time.perf_counter()
        fits = clf.pair_fits(ep.support_x[:, 0].numpy() > 0.5, ep.query_x[:, 0].numpy() > 0.5)
        y = ep.query_y.numpy()
        row = {"task": i, "cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - s0}
        for name, kw in (("two_way_K", {}), ("two_way_1", {"k": 1}), ("one_way_K", {"one_way": True})):
            row[name] = int((fits.two_way(**kw).argmax(1) != y).sum())
        rows.append(row)
        print(json.dumps(row), flush=True)
        # written after every task, so a run stopped early still leaves its finished tasks
        rec = {"variant": args.variant, "options": opts.__dict__, "tasks": len(rows), "queries_per_task": 20,
               "rows": rows, "cpu_s": cpu_seconds() - t0, "wall_s": time.perf_counter() - w0, "workers": args.workers,
               "torch_threads": torch.get_num_threads(), "load_start": load0, "load_end": os.getloadavg()}
        (args.out / f"bpl-{args.variant}.json").write_text(json.dumps(rec, indent=1))


def cmd_protonet(args) -> None:
    ds, ts = tasks_and_images(args.out, args.tasks)
    task_file = args.out / f"tasks-{args.tasks}.json"
    ts.save(task_file)
    load0, t0 = os.getloadavg(), time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "fewshot", "eval", args.run, "--dataset", "omniglot", "--split",
                          "background_small2", "--data-dir", DATA, "--way", "20", "--shot", "1", "--query", "1",
                          "--task-file", str(task_file), "--device", "cpu", "--json"],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    (args.out / f"protonet-{args.tasks}.json").write_text(json.dumps(
        {"result": res, "cpu_s": ch.ru_utime + ch.ru_stime, "wall_s": time.perf_counter() - t0, "run": args.run,
         "load_start": load0, "load_end": os.getloadavg()}, indent=1))
    print(out)


def cmd_figures(args) -> None:
    """Stroke data of one character, its 20 drawers, new types and new tokens -> benchmarks/results/."""
    from fewshot.bpl.model import BPLModel
    from fewshot.bpl.parse import parse_image
    from fewshot.bpl.plots import plot_drawers, plot_drawing, plot_grid, sample_token_images, sample_type_images
    from fewshot.data.strokes import load_strokes

    model = BPLModel.load(args.out / "model.json")
    res = HERE / "results"
    drawings = load_strokes("background_small2", DATA, images=True)  # held out from the model
    char = [d for d in drawings if d.label == "Japanese_(katakana)/character37"]
    plot_drawing(char[0], res / "bpl_stroke_data.png")
    plot_drawers(char, res / "bpl_drawers.png")
    plot_grid(sample_type_images(model, 36, seed=0), res / "bpl_new_types.png", cols=9,
              title="new character types sampled from the model learned on strokes_background_small1")
    images, labels = [], []
    for label in ("Greek/character21", "Latin/character10", "Sanskrit/character04"):
        d = [x for x in drawings if x.label == label][0]
        best = parse_image(d.image, model, k=1, seed=0)[0]
        images += [d.image.astype(float)] + sample_token_images(model, best.ctype, 8, seed=0)
        labels += [f"{label} (given)"] + [f"token {i + 1}" for i in range(8)]
    plot_grid(images, res / "bpl_new_tokens.png", cols=9, labels=labels,
              title="new exemplars: each row parses the given image (background_small2) and samples tokens")


def _err(errors: list[int], q: int = 20) -> tuple[float, float]:
    """Error % and a 95% CI half-width over tasks (normal approximation of the task means)."""
    e = np.asarray(errors, dtype=float) / q * 100
    return float(e.mean()), float(1.96 * e.std(ddof=1) / np.sqrt(len(e))) if len(e) > 1 else float("nan")


def cmd_report(args) -> None:
    lines = ["# Simplified BPL vs ProtoNet: 20-way 1-shot within-alphabet tasks on background_small2", "",
             "BPL learned from the pen strokes of `strokes_background_small1` only (its primitives, relations,",
             "start positions and ink), ProtoNet (Conv4 28×28, `fewshot train` defaults, 3000 episodes of 20-way",
             "1-shot) from the images of `images_background_small1`. Tasks: `TaskSet.generate(background_small2,",
             "20, 1, 1, within='group', seed=0)`, one query per class (20 per task, as in Lake's runs); the first",
             "N tasks of that list. Error % ± 95% CI over tasks (normal approximation; few tasks: wide).", "",
             "| method | variant | tasks | error % | ± CI | CPU s / task | wall s / task | load avg start → end |",
             "|---|---|---|---|---|---|---|---|"]
    recs = sorted(args.out.glob("bpl-*.json"))
    full_first = {}
    for path in recs:
        r = json.loads(path.read_text())
        n = r["tasks"]
        k = r["options"]["k"]
        for key, label in (("two_way_K", f"two-way, K={k} parses"), ("two_way_1", "two-way, K=1 parse"), ("one_way_K", f"one-way, K={k} parses")):
            m, ci = _err([row[key] for row in r["rows"]])
            cpu = np.mean([row["cpu_s"] for row in r["rows"]])
            wall = np.mean([row["wall_s"] for row in r["rows"]])
            lines.append(f"| BPL ({r['workers']} workers, torch threads {r['torch_threads']}) | {r['variant']}: {label} | {n} | {m:.1f} | {ci:.1f} | {cpu:.1f} | "
                         f"{wall:.1f} | {r['load_start'][0]:.1f} → {r['load_end'][0]:.1f} |")
        if r["variant"] == "full":
            full_first = r
    for path in sorted(args.out.glob("protonet-*.json")):
        p = json.loads(path.read_text())
        res = p["result"]
        acc = res.get("accuracy")
        ci = res.get("ci95")
        n = res.get("tasks", "?")
        lines.append(f"| ProtoNet | Conv4, small1 images | {n} | {100 - 100 * acc:.1f} | {100 * ci:.1f} | "
                     f"{p['cpu_s'] / max(1, int(n)):.2f} | {p['wall_s'] / max(1, int(n)):.2f} | {p['load_start'][0]:.1f} → {p['load_end'][0]:.1f} |")
    if full_first:
        lines += ["", "Ablations on the same first tasks as the full model (errors out of 20 queries per task):", ""]
        for path in recs:
            r = json.loads(path.read_text())
            if r["variant"] == "full":
                continue
            n = r["tasks"]
            base = sum(row["two_way_K"] for row in full_first["rows"][:n])
            abl = sum(row["two_way_K"] for row in r["rows"])
            lines.append(f"- {r['variant']}: {abl}/{20 * n} errors vs full {base}/{20 * n} on tasks 0..{n - 1}")
    text = "\n".join(lines) + "\n"
    extra = HERE / "results" / "bpl_notes.md"
    if extra.exists():
        text += "\n" + extra.read_text()
    (HERE / "results" / "bpl.md").write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["fit", "run", "protonet", "report", "figures"])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-bpl"))
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="full")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--primitives", type=int, default=40)
    ap.add_argument("--run", default="runs/proto-small1")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"fit": cmd_fit, "run": cmd_run, "protonet": cmd_protonet, "report": cmd_report, "figures": cmd_figures}[args.command](args)


if __name__ == "__main__":
    main()
