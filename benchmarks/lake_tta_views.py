"""Which test-time views? Candidate view sets for ``fewshot eval --tta`` on one trained Lake-minimal run.

    python benchmarks/lake_tta_views.py --run runs/lake_minimal/wide-within+augment-6000-noval-s2

Each candidate embeds every support and query image as the mean over its views
(:class:`~fewshot.methods.augmented.TestTimeAugmentation`) and is scored on 20-way 1-shot tasks
within one alphabet, 5 queries per class, on two sets of alphabets:

* **validation**: the 19 background alphabets that are neither in ``background_small1`` (the
  minimal setting's training set) nor held out: the preset is chosen here;
* **test**: the six held-out alphabets, 1000 tasks (seed 0): the tasks of ``lake_minimal.md``.

``--report-only`` rebuilds the page from ``benchmarks/results/lake_tta_views.json``.

The result (``benchmarks/results/lake_tta_views.md``) states the CPU time, threads and load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

import torch

from fewshot.data import load_omniglot
from fewshot.data.augment import affine, tta_views
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.engine.evaluate import evaluate
from fewshot.methods.augmented import TestTimeAugmentation
from fewshot.tasks.episodes import TaskSet

RESULTS = Path(__file__).resolve().parent / "results"
SMALL1 = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]  # images_background_small1's alphabets
PX = 1 / 28  # one pixel, as a fraction of the image size


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


PRESET = "shift 1 px (9)"
#: name -> views (the library's ``characters`` preset, :data:`PRESET`, chosen by its validation error)
CANDIDATES = {
    "none": [_identity],
    PRESET: tta_views("characters"),
    "rotate ±10° (3)": [partial(affine, rotation=a) for a in (-10.0, 0.0, 10.0)],
    "rotate ±6°, ±12° (5)": [partial(affine, rotation=a) for a in (-12.0, -6.0, 0.0, 6.0, 12.0)],
    "scale 0.9, 1.1 (3)": [partial(affine, scale=s) for s in (0.9, 1.0, 1.1)],
    "rotate ±8° x shift x (9)": [partial(affine, rotation=a, translate=(dx * PX, 0.0)) for a in (-8.0, 0.0, 8.0) for dx in (-1, 0, 1)],
    "rotate ±8°, scale 0.9, 1.1 (5)": [_identity, partial(affine, rotation=-8.0), partial(affine, rotation=8.0),
                                       partial(affine, scale=0.9), partial(affine, scale=1.1)],
}


def score(method, data, tasks: int, seed: int) -> tuple[float, float]:
    """Error % and its 95% CI on ``tasks`` 20-way 1-shot within-alphabet tasks of ``data``."""
    res = evaluate(method, TaskSet.generate(data, 20, 1, 5, tasks, within="group", seed=seed).episodes(data), "cpu")
    return 100 * (1 - res.accuracy), 100 * res.ci95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="a run directory of benchmarks/lake_minimal.py")
    ap.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--val-tasks", type=int, default=500)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if not args.report_only:
        if not args.run:
            ap.error("--run RUN_DIR is needed to measure (or --report-only)")
        measure(args)
    text = report(json.loads((RESULTS / "lake_tta_views.json").read_text()))
    (RESULTS / "lake_tta_views.md").write_text(text)
    print(text)


def measure(args) -> None:
    torch.set_num_threads(args.threads)
    method, _ = load_checkpoint(args.run, "best")
    val = load_omniglot("background", data_dir=args.data_dir, image_size=28, exclude_alphabets=["heldout", *SMALL1])
    test = load_omniglot("background", data_dir=args.data_dir, image_size=28, alphabets=["heldout"])
    load0, c0 = os.getloadavg(), time.process_time()
    rows = []
    for name, views in CANDIDATES.items():
        tta = TestTimeAugmentation(method, views)
        rows.append({"views": name, "validation": score(tta, val, args.val_tasks, 0), "test": score(tta, test, args.tasks, 0)})
        print(rows[-1], flush=True)
    rec = {"run": args.run, "rows": rows, "val_tasks": args.val_tasks, "tasks": args.tasks, "cpu_s": time.process_time() - c0,
           "threads": args.threads, "load": [load0, os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (RESULTS / "lake_tta_views.json").write_text(json.dumps(rec, indent=1))


def report(rec: dict) -> str:
    lines = ["# Test-time views on one Lake-minimal network", "",
             f"Run `{Path(rec['run']).name}` (ProtoNet, trained by `benchmarks/lake_minimal.py`), its best checkpoint. 20-way 1-shot "
             "within one alphabet, 5 queries per class, error % ± 95% CI. Validation: the 19 background alphabets in neither "
             f"small1 nor the held-out six ({rec['val_tasks']} tasks, seed 0); test: the six held-out alphabets ({rec['tasks']} tasks, "
             f"seed 0, the tasks of `lake_minimal.md`). Generated by `benchmarks/lake_tta_views.py` ({rec['date']}); "
             f"{rec['cpu_s']:.0f} CPU-s in all, {rec['threads']} thread(s), load {rec['load'][0][0]:.1f} → {rec['load'][1][0]:.1f}. "
             "The preset of `fewshot eval --tta characters` was chosen as the row with the lowest validation error.", "",
             "| views | validation error % | test error % |", "|---|---|---|"]
    for r in rec["rows"]:
        (v, vc), (t, tc) = r["validation"], r["test"]
        mark = " (the preset)" if r["views"] == PRESET else ""
        lines.append(f"| {r['views']}{mark} | {v:.2f} ± {vc:.2f} | {t:.2f} ± {tc:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
