"""Lake's minimal setting, development analogue: which training recipe lowers the error?

    python benchmarks/lake_minimal.py --configs defaults,augment,within,within+augment --seeds 0
    python benchmarks/lake_minimal.py --setting original --configs defaults,within+augment --seeds 0
    python benchmarks/lake_minimal.py --ensemble augment --seeds 0,1,2 --support-copies 1,5
    python benchmarks/lake_minimal.py --ensemble wide-within+augment-6000-noval --seeds 0,1,2 --tta characters
    python benchmarks/lake_minimal.py --report-only

Lake et al.'s *minimal* setting trains on ``background_small1`` only (5 alphabets, 136 characters)
and tests 20-way 1-shot within one alphabet (their 20 runs, kept out of this repository for
held-out evaluation). The analogue here: train ProtoNet with ``fewshot train`` on
``background_small1`` (the CLI's defaults plus each config's flags), then evaluate 20-way 1-shot
*within one alphabet* on the project's six held-out background alphabets (none of them is in
small1), 1000 fixed tasks (seed 0), from the run's best checkpoint (validation on 10% of the
training classes). Target in issue #13: ≤ 15% error.

``--ensemble CONFIG`` evaluates the trained seeds of one config together on the same tasks
(:class:`~fewshot.methods.ensemble.ScoreEnsemble`: the sum of their log-softmax scores, as
``fewshot eval RUN RUN ...``), and each alone, with the support set enlarged by the
``characters`` augmentation preset (``--support-copies``: 1 = the original support only), or with
test-time augmentation (``--tta characters``: every image embedded as the mean over fixed views, as
``fewshot eval RUN --tta characters``).

``--setting original`` trains on the background set minus the six held-out alphabets instead
(24 alphabets, 741 characters): Lake's *original* setting, to check that a recipe chosen in the
minimal setting does not cost the full one anything.

Every run is a pair of CLI commands (printed in the table's JSON cache); CPU time is the children's
process CPU (user + system, all threads) from ``resource.getrusage``. Runs are cached in
``--out/<config>-s<seed>/`` (checkpoints); each run's record (numbers and commands) is also written to
``benchmarks/results/lake_minimal/<config>-s<seed>.json`` (committed), and the table,
``benchmarks/results/lake_minimal.md``, is built from those records. A run with a record is not trained
again when its cache is gone (another machine): delete its record to rerun it; ``--ensemble`` needs
the runs' checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: the committed records the table is built from: one JSON file per run, named like its cache folder
RECORDS = RESULTS / "lake_minimal"

#: name -> extra `fewshot train` flags on top of the minimal setting's
CONFIGS: dict[str, list[str]] = {
    "defaults": [],
    "augment": ["--augment", "characters"],
    "within": ["--within", "alphabet"],
    "within+augment": ["--within", "alphabet", "--augment", "characters"],
    "augment-6000": ["--augment", "characters", "--episodes", "6000"],
    "within+augment-6000": ["--within", "alphabet", "--augment", "characters", "--episodes", "6000"],
    "augment-56px": ["--augment", "characters", "--image-size", "56"],
    # no validation split: all 136 characters train, the last checkpoint is evaluated (14 validation
    # classes drawn within one alphabet give a 7-way task at ~96%: too easy to pick a checkpoint by)
    "within+augment-6000-noval": ["--within", "alphabet", "--augment", "characters", "--episodes", "6000", "--val-fraction", "0"],
    "wide-within+augment-noval": ["--within", "alphabet", "--augment", "characters", "--width", "128", "--val-fraction", "0"],
    "wide-within+augment-6000-noval": ["--within", "alphabet", "--augment", "characters", "--width", "128", "--episodes", "6000", "--val-fraction", "0"],
}
#: the evaluation (Lake's runs: 20-way 1-shot within one alphabet)
EVAL_TASKS = [("20w1s within alphabet", ["--way", "20", "--shot", "1", "--within", "alphabet"]),
              ("20w1s", ["--way", "20", "--shot", "1"]),
              ("5w1s", ["--way", "5", "--shot", "1"])]


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(cmd: list[str]) -> tuple[str, float, float]:
    c0, w0 = _cpu_children(), time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return p.stdout, _cpu_children() - c0, time.time() - w0


def image_size_of(flags: list[str]) -> list[str]:
    return ["--image-size", flags[flags.index("--image-size") + 1]] if "--image-size" in flags else []


#: setting -> training data flags
SETTINGS = {"minimal": ["--split", "background_small1"],
            "original": ["--split", "background", "--exclude-alphabets", "heldout"]}


def run_dir(out: str, setting: str, config: str, seed: int) -> Path:
    return Path(out) / (f"{config}-s{seed}" if setting == "minimal" else f"{setting}-{config}-s{seed}")


def run_one(config: str, seed: int, args) -> dict:
    out = run_dir(args.out, args.setting, config, seed)
    result, record = out / "lake_minimal.json", RECORDS / f"{out.name}.json"
    for done in (result, record):  # cached here, or recorded by a run whose cache is gone
        if done.exists():
            return json.loads(done.read_text())
    if out.exists():
        shutil.rmtree(out)  # an unfinished run of this script (the cache file is written last)
    flags = CONFIGS[config]
    data = ["--dataset", "omniglot", "--data-dir", args.data_dir]
    train = [args.fewshot, "train", "--method", "protonet", *data, *SETTINGS[args.setting],
             "--seed", str(seed), "--threads", str(args.threads), "--quiet", "--no-plots", "--json", "--out", str(out), *flags]
    load0 = os.getloadavg()
    _, train_cpu, train_wall = _run(train)
    rec = {"setting": args.setting, "config": config, "seed": seed, "train_cmd": " ".join(train), "train_cpu_s": train_cpu, "train_wall_s": train_wall,
           "threads": args.threads, "eval": {}}
    for name, task in EVAL_TASKS:
        ev = [args.fewshot, "eval", str(out), *data, "--split", "background", "--alphabets", "heldout", *image_size_of(flags),
              *task, "--tasks", str(args.tasks), "--seed", "0", "--threads", str(args.threads), "--json"]
        stdout, cpu, _ = _run(ev)
        r = json.loads(stdout)
        rec["eval"][name] = {"acc": r["accuracy"], "ci95": r["ci95"], "cpu_s": cpu, "cmd": " ".join(ev)}
    rec["load"] = [load0, os.getloadavg()]
    rec["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result.write_text(json.dumps(rec, indent=1))
    record_runs(Path(args.out))
    return rec


def ensemble_one(config: str, seeds: list[int], copies: int, args) -> dict:
    """The seeds' runs of ``config`` alone and as an ensemble, on the 20w1s within-alphabet tasks,
    each support set enlarged to ``copies`` shots by the characters preset, each image embedded over
    the test-time views ``args.tta`` (``None``: as it is)."""
    import torch

    from fewshot.data import load_omniglot
    from fewshot.data.augment import Augmenter, tta_views
    from fewshot.engine.checkpoint import load_checkpoint
    from fewshot.engine.evaluate import evaluate
    from fewshot.methods.augmented import AugmentedSupport, TestTimeAugmentation
    from fewshot.methods.ensemble import ScoreEnsemble
    from fewshot.tasks.episodes import TaskSet

    for seed in seeds:
        if not (run_dir(args.out, args.setting, config, seed) / "lake_minimal.json").exists():
            sys.exit(f"no finished run of {config} seed {seed} in {args.out}: train it first (--configs {config} --seeds {seed}; "
                     f"if its record is in {RECORDS}, delete it: the record has no checkpoint)")
    torch.set_num_threads(args.threads)
    flags = CONFIGS[config]
    size = int(image_size_of(flags)[1]) if "--image-size" in flags else 28
    data = load_omniglot("background", data_dir=args.data_dir, image_size=size, alphabets=["heldout"])
    taskset = TaskSet.generate(data, 20, 1, 5, args.tasks, within="group", seed=0)
    methods = []
    for seed in seeds:
        method, _ = load_checkpoint(run_dir(args.out, args.setting, config, seed), "best")
        if args.tta:
            method = TestTimeAugmentation(method, tta_views(args.tta))
        methods.append(AugmentedSupport(method, Augmenter.characters(), copies=copies, seed=seed) if copies > 1 else method)
    load0, c0 = os.getloadavg(), time.process_time()
    # each seed alone, then all of them as one ScoreEnsemble (the sum of their log-softmax scores)
    results = [evaluate(m, taskset.episodes(data), "cpu") for m in [*methods, ScoreEnsemble(methods)]]
    err = 100 * (1 - np.array([r.per_task for r in results]))
    ci = 1.96 * err.std(1, ddof=1) / np.sqrt(len(taskset))
    rec = {"config": config, "seeds": seeds, "copies": copies, "tta": args.tta, "tasks": len(taskset), "cpu_s": time.process_time() - c0,
           "threads": args.threads, "load": [load0, os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "single_error": err[:-1].mean(1).tolist(), "single_ci95": ci[:-1].tolist(),
           "ensemble_error": float(err[-1].mean()), "ensemble_ci95": float(ci[-1])}
    rec["setting"] = args.setting
    path = Path(args.out) / f"ensemble-{'' if args.setting == 'minimal' else args.setting + '-'}{config}-{'_'.join(map(str, seeds))}-copies{copies}{'-tta' + args.tta if args.tta else ''}.json"
    path.write_text(json.dumps(rec, indent=1))
    record_runs(Path(args.out))
    return rec


def record_runs(out: Path) -> None:
    """Copy the finished runs of the cache ``out`` (``*/lake_minimal.json``, ``ensemble-*.json``) to
    :data:`RECORDS`, where the record is missing or differs (the cache is the run's own)."""
    for path in [*out.glob("*/lake_minimal.json"), *out.glob("ensemble-*.json")]:
        record = RECORDS / (f"{path.parent.name}.json" if path.name == "lake_minimal.json" else path.name)
        if not record.exists() or record.read_text() != path.read_text():
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(path.read_text())


def setting_of(record: dict) -> str:
    """The training setting of a run or ensemble record (those from before ``--setting`` are minimal)."""
    return record.get("setting", "minimal")


def report(records: Path) -> str:
    """The table of the runs recorded in ``records`` (``<run>.json`` and ``ensemble-*.json``), then the notes."""
    recs = [json.loads(p.read_text()) for p in sorted(records.glob("*.json")) if not p.name.startswith("ensemble-")]
    order = {c: i for i, c in enumerate(CONFIGS)}
    settings = list(SETTINGS)
    recs.sort(key=lambda r: (settings.index(setting_of(r)), order.get(r["config"], 99), r["seed"]))
    lines = ["# Lake's minimal setting, development analogue (issue #13)", "",
             "ProtoNet trained with `fewshot train` in Lake's minimal setting (`background_small1` only: 5 alphabets, "
             "136 characters) or the original one (the background set minus the held-out alphabets: 24 alphabets, 741 "
             "characters), x4 rotations, with the CLI's defaults (20-way 1-shot 5-query episodes, 3000 episodes, Adam 1e-3, cosine) plus "
             "each config's flags; evaluated from the best checkpoint on the six held-out background alphabets, "
             "1000 fixed tasks (seed 0), 5 queries per class. Lake's runs are 20-way 1-shot within one alphabet: "
             "that column is the analogue (target: error ≤ 15%). Generated by `benchmarks/lake_minimal.py`.", "",
             "| setting | config | seed | train flags | train CPU s | threads | load (start → end) | 20w1s within alphabet: error % | 20w1s % | 5w1s % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in recs:
        e = r["eval"]
        w = e["20w1s within alphabet"]
        lines.append(f"| {setting_of(r)} | {r['config']} | {r['seed']} | `{' '.join(CONFIGS.get(r['config'], [])) or '-'}` | {r['train_cpu_s']:.0f} | "
                     f"{r['threads']} | {r['load'][0][0]:.1f} → {r['load'][1][0]:.1f} | {100 - w['acc'] * 100:.2f} ± {w['ci95'] * 100:.2f} | "
                     f"{e['20w1s']['acc'] * 100:.2f} | {e['5w1s']['acc'] * 100:.2f} |")
    by: dict[str, list[float]] = {}
    for r in recs:
        by.setdefault(f"{setting_of(r)}: {r['config']}", []).append(100 - r["eval"]["20w1s within alphabet"]["acc"] * 100)
    lines += ["", "Mean over seeds (20w1s within one alphabet, error %):", "",
              "| config | seeds | mean error % | min | max |", "|---|---|---|---|---|"]
    for c, errs in by.items():
        lines.append(f"| {c} | {len(errs)} | {np.mean(errs):.2f} | {min(errs):.2f} | {max(errs):.2f} |")
    ens = [json.loads(p.read_text()) for p in sorted(records.glob("ensemble-*.json"))]
    ens.sort(key=lambda r: settings.index(setting_of(r)))  # stable: by file name within a setting
    if ens:
        lines += ["", "## Ensembles of seeds and support augmentation (`--ensemble`)", "",
                  "Same 20w1s within-alphabet tasks; each model's log-softmax scores summed. Support copies: the support "
                  "image plus copies - 1 augmented ones (characters preset: affine + elastic). Test-time views: every "
                  "support and query image embedded as the mean over the preset's fixed views (`--tta`).", "",
                  "| setting | config | seeds | support copies | test-time views | each seed: error % | ensemble: error % | eval CPU s | threads | load |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ens:
            each = ", ".join(f"{e:.2f}" for e in r["single_error"])
            lines.append(f"| {setting_of(r)} | {r['config']} | {','.join(map(str, r['seeds']))} | {r['copies']} | {r.get('tta') or '-'} | {each} | "
                         f"{r['ensemble_error']:.2f} ± {r['ensemble_ci95']:.2f} | {r['cpu_s']:.0f} | {r['threads']} | "
                         f"{r['load'][0][0]:.1f} → {r['load'][1][0]:.1f} |")
    notes = RESULTS / "lake_minimal_notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="defaults,augment,within,within+augment",
                    help=f"comma list from {', '.join(CONFIGS)}")
    ap.add_argument("--seeds", default="0", help="comma list of training seeds")
    ap.add_argument("--setting", default="minimal", choices=list(SETTINGS), help="Lake's minimal or original training set")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "omniglot"))
    ap.add_argument("--out", default="runs/lake_minimal")
    ap.add_argument("--fewshot", default=str(Path(sys.executable).with_name("fewshot")))
    ap.add_argument("--ensemble", metavar="CONFIG", help="evaluate the --seeds runs of CONFIG together (trained first)")
    ap.add_argument("--support-copies", default="1", help="with --ensemble: comma list of support sizes per shot")
    ap.add_argument("--tta", choices=["characters"], default=None, help="with --ensemble: test-time views of every image")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    if args.ensemble:
        seeds = [int(s) for s in args.seeds.split(",")]
        for copies in [int(c) for c in args.support_copies.split(",")]:
            r = ensemble_one(args.ensemble, seeds, copies, args)
            print(f"{args.ensemble} seeds {seeds} copies {copies} tta {args.tta}: each {[round(e, 2) for e in r['single_error']]}, "
                  f"ensemble {r['ensemble_error']:.2f} ± {r['ensemble_ci95']:.2f}% error", flush=True)
    elif not args.report_only:
        for config in args.configs.split(","):
            if config not in CONFIGS:
                sys.exit(f"unknown config {config!r}; choose from {', '.join(CONFIGS)}")
            for seed in [int(s) for s in args.seeds.split(",")]:
                rec = run_one(config, seed, args)
                w = rec["eval"]["20w1s within alphabet"]
                print(f"{config} seed {seed}: train {rec['train_cpu_s']:.0f} CPU-s, 20w1s within alphabet error "
                      f"{100 - w['acc'] * 100:.2f} ± {w['ci95'] * 100:.2f}%", flush=True)
    RESULTS.mkdir(exist_ok=True)
    record_runs(Path(args.out))  # runs cached before their records were written
    (RESULTS / "lake_minimal.md").write_text(report(RECORDS))


if __name__ == "__main__":
    main()
