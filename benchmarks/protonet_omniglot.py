"""ProtoNet (Conv4, 28×28) through the `fewshot` CLI with default settings, in the two Omniglot
settings of the spine issue, evaluated on the project's held-out background alphabets.

    python benchmarks/protonet_omniglot.py [--episodes 3000] [--tasks 1000] [--out runs/bench-protonet]

* minimal:  trained on images_background_small1 only (published ProtoNet, Lake runs: 30.1% error)
* original: trained on images_background minus the held-out alphabets (published: 13.7% error)

Only way/shot/episodes are given to `fewshot train` (plus where the data is): the defaults
(rotations ×4, query 5, Adam 1e-3, cosine schedule, 10% validation classes) do the rest.
Writes a markdown table to benchmarks/results/protonet_omniglot.md. Finished trainings and evaluations
are cached in the run folder (train_seconds.json, eval-*.json), so a rerun only redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FEWSHOT = [sys.executable, "-m", "fewshot"]
SETTINGS = {"minimal": ["--split", "background_small1"],
            "original": ["--split", "background", "--exclude-alphabets", "heldout"]}
EVALS = [(5, 1, False), (5, 5, False), (20, 1, False), (20, 5, False), (5, 1, True), (5, 5, True), (20, 1, True), (20, 5, True)]


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=3000)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--out", default="runs/bench-protonet")
    ap.add_argument("--settings", default="minimal,original")
    args = ap.parse_args()
    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    rows = []
    for name in args.settings.split(","):
        out = Path(args.out) / name
        timing = out / "train_seconds.json"  # a finished run is reused; its measured time is kept beside it
        if not (out / "last.json").exists():
            t0 = time.perf_counter()
            run(FEWSHOT + ["train", "--method", "protonet", "--dataset", "omniglot", *SETTINGS[name], "--data-dir", data_dir,
                           "--way", "20", "--shot", "1", "--episodes", str(args.episodes), "--seed", "0", "--out", str(out), "--quiet"])
            timing.write_text(json.dumps({"train_seconds": time.perf_counter() - t0, "load_average": os.getloadavg()}))
        train_s = json.loads(timing.read_text())["train_seconds"] if timing.exists() else float("nan")
        for way, shot, within in EVALS:
            cmd = FEWSHOT + ["eval", str(out), "--dataset", "omniglot", "--split", "background", "--alphabets", "heldout",
                             "--data-dir", data_dir, "--way", str(way), "--shot", str(shot), "--query", "5",
                             "--tasks", str(args.tasks), "--seed", "0", "--json"] + (["--within", "alphabet"] if within else [])
            cache = out / f"eval-{way}w{shot}s{'-within' if within else ''}-{args.tasks}.json"
            if not cache.exists():
                t1 = time.perf_counter()
                res = json.loads(run(cmd))
                res["eval_seconds"] = time.perf_counter() - t1
                cache.write_text(json.dumps(res))
            res = json.loads(cache.read_text())
            rows.append((name, train_s, way, shot, within, res["accuracy"], res["ci95"], res["tasks"], res["eval_seconds"]))
            print(rows[-1], flush=True)
    lines = [f"# ProtoNet, Conv4 28×28, `fewshot train` defaults, {args.episodes} episodes of 20-way 1-shot 5-query",
             "", "Held-out alphabets: " + ", ".join(__import__("fewshot.data", fromlist=["x"]).HELDOUT_ALPHABETS), "",
             "| setting | train time (s) | task | episodes from | accuracy % | ± 95% CI | tasks | eval time (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, ts, way, shot, within, acc, ci, n, es in rows:
        lines.append(f"| {name} | {ts:.0f} | {way}-way {shot}-shot | {'one alphabet' if within else 'all held-out alphabets'} | "
                     f"{100 * acc:.2f} | {100 * ci:.2f} | {n} | {es:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "protonet_omniglot.md").write_text(text)


if __name__ == "__main__":
    main()
