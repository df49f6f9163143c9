"""Test-time inner-loop options of a MAML-family checkpoint on fixed tasks, side by side.

Behind reproduce_180min_notes.md (fomaml's 3-CPU-hour checkpoint). ``--tasks-from train`` draws
the tasks from the training alphabets (unrotated), where a default may be chosen; ``heldout``
draws reproduce.py's fixed evaluation tasks (the first ``--tasks`` of its 1000), which locate a
defect but choose nothing. Each ``--option`` is one evaluation (comma-separated overrides).

    FEWSHOT_DATA=../shared/data python benchmarks/test_step.py RUN --tasks-from train \\
        --option scale_test_lr=false --option scale_test_lr=true
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reproduce  # noqa: E402
from fewshot.data import load_omniglot  # noqa: E402
from fewshot.engine.checkpoint import load_checkpoint  # noqa: E402
from fewshot.engine.evaluate import evaluate  # noqa: E402
from fewshot.tasks.episodes import TaskSet  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--tasks-from", choices=("train", "heldout"), default="train")
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--settings", default="5w1s,5w5s,20w1s")
    ap.add_argument("--option", action="append", default=[], help="overrides, e.g. test_inner_lr=0.05,scale_test_lr=false")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = os.environ.get("FEWSHOT_DATA")
    if args.tasks_from == "train":
        data, seed, total = load_omniglot("background", data_dir, exclude_alphabets=["heldout"]), 1, args.tasks
    else:
        data, seed, total = reproduce._test_data(data_dir), 0, 1000  # reproduce.py's tasks, the first --tasks
    print(f"{args.run}: {args.tasks} tasks per setting from the {args.tasks_from} alphabets, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}", flush=True)
    for setting in args.settings.split(","):
        way, shot = (int(v) for v in setting.rstrip("s").split("w"))
        episodes = list(TaskSet.generate(data, way, shot, 5, total, seed=seed).episodes(data))[: args.tasks]
        for option in args.option or [""]:
            overrides = dict(kv.split("=", 1) for kv in option.split(",") if kv)
            method, _ = load_checkpoint(args.run, "last", overrides=overrides)
            c0 = time.process_time()
            r = evaluate(method, episodes, "cpu")
            print(f"{setting} {option or 'defaults'}: {100 * r.accuracy:.1f} ± {100 * r.ci95:.1f}  "
                  f"({time.process_time() - c0:.0f} CPU s)", flush=True)


if __name__ == "__main__":
    main()
